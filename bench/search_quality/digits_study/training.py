"""The study's training budget and a small, deterministic training loop over in-memory tensors.

Every architecture a study compares is trained by :func:`train_model` with the same :class:`TrainBudget`, from
the same seed: the same batch order and the same augmentation draws (both from an explicit generator), so that
differences in accuracy come from the architectures, not from the run. Model initialisation goes through
:func:`seeded`, which forks PyTorch's global RNG, seeds the fork and restores the caller's state afterwards
(timm initialises parameters from the global RNG; the caller's random stream is left untouched).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["TrainBudget", "TrainResult", "Timer", "derive_seed", "seeded", "train_model", "evaluate",
           "OPTIMIZERS"]

#: Optimisers a budget may name.
OPTIMIZERS = ("adamw", "sgd")


def derive_seed(seed: int, *keys: Any) -> int:
    """A seed for one purpose, derived from the study seed and JSON-native ``keys`` (e.g. ``('train', 3)``).

    Stable across processes and Python versions (SHA-256 of the JSON of ``[seed, *keys]``), in ``[0, 2**31)``.
    """
    blob = json.dumps([int(seed), *keys], sort_keys=True).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little") & 0x7FFF_FFFF


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with PyTorch's CPU RNG forked and seeded with ``seed``; the caller's RNG state is restored
    on exit (use it around ``timm.create_model`` so that initial weights depend on ``seed`` only)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


class Timer:
    """Wall-clock and process CPU time of a block (``with Timer() as t: ...; t.wall, t.cpu``).

    CPU time counts every thread of this process: on a machine shared with other jobs it is a better guide than
    wall time to how long the same work takes on an idle machine.
    """

    def __enter__(self) -> "Timer":
        self._w, self._c = time.perf_counter(), time.process_time()
        self.wall = self.cpu = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c

    def to_dict(self) -> dict[str, float]:
        return {"wall_s": round(self.wall, 3), "cpu_s": round(self.cpu, 3)}


@dataclasses.dataclass(frozen=True)
class TrainBudget:
    """How every architecture of a comparison is trained.

    Args:
        epochs: passes over the training split.
        batch_size: images per step (the last, smaller batch of an epoch is kept).
        opt: ``'adamw'`` or ``'sgd'`` (momentum, no Nesterov).
        lr: peak learning rate.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay on every parameter.
        momentum: SGD momentum.
        warmup_epochs: linear warm-up from ``lr / 10`` to ``lr``, then cosine decay to ``lr * min_lr_ratio``,
            updated every step.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        label_smoothing: of the cross-entropy.
        shift: random translation of each training image by up to ``shift`` pixels in x and y (0: none), the
            uncovered border filled with the background colour.
        grad_clip: gradient-norm clip (0: none).
    """

    epochs: int = 15
    batch_size: int = 64
    opt: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.1
    shift: int = 4
    grad_clip: float = 5.0

    def __post_init__(self) -> None:
        if self.opt not in OPTIMIZERS:
            raise ValueError(f"opt={self.opt!r} is not allowed; allowed values: {list(OPTIMIZERS)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be at least 1, got {self.epochs} and {self.batch_size}")
        if self.lr <= 0 or self.shift < 0 or self.warmup_epochs < 0:
            raise ValueError("lr must be positive, shift and warmup_epochs non-negative")

    def lr_at(self, step: int, total: int, steps_per_epoch: int) -> float:
        """Learning rate of step ``step`` (0-based) of ``total``."""
        warm = int(round(self.warmup_epochs * steps_per_epoch))
        if step < warm:
            return self.lr * (0.1 + 0.9 * step / warm)
        t = (step - warm) / max(1, total - warm)
        lo = self.lr * self.min_lr_ratio
        return lo + (self.lr - lo) * 0.5 * (1.0 + math.cos(math.pi * t))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainBudget":
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown TrainBudget keys {unknown}; allowed keys: {names}")
        return cls(**dict(d))


@dataclasses.dataclass
class TrainResult:
    """What :func:`train_model` returns.

    Attributes:
        accuracy: eval-set name -> top-1 accuracy (%) after the last epoch (no early stopping, no selection).
        loss: mean training loss of each epoch.
        steps: optimiser steps.
        wall_s, cpu_s: training time (evaluation included).
    """

    accuracy: dict[str, float]
    loss: list[float]
    steps: int
    wall_s: float
    cpu_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": {k: round(v, 4) for k, v in self.accuracy.items()},
                "loss": [round(v, 5) for v in self.loss], "steps": self.steps,
                "wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3)}


def _optimizer(model: nn.Module, budget: TrainBudget) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if budget.opt == "adamw":
        return torch.optim.AdamW(params, lr=budget.lr, weight_decay=budget.weight_decay)
    return torch.optim.SGD(params, lr=budget.lr, momentum=budget.momentum, weight_decay=budget.weight_decay)


def _shift_batch(x: torch.Tensor, shift: int, fill: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Translate each image of ``x`` ``(B, C, H, W)`` by its own random offset in ``[-shift, shift]^2``."""
    b, c, h, w = x.shape
    canvas = fill.view(1, c, 1, 1).to(x.dtype).expand(b, c, h + 2 * shift, w + 2 * shift).clone()
    canvas[:, :, shift:shift + h, shift:shift + w] = x  # (B, C, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * shift + 1, (b, 2), generator=g).tolist()
    return torch.stack([canvas[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy (%) of ``model`` in eval mode on ``(x, y)``; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for lo in range(0, len(y), batch_size):
            logits = model(x[lo:lo + batch_size])
            correct += int((logits.argmax(-1) == y[lo:lo + batch_size]).sum())
    finally:
        model.train(was_training)
    if len(y) == 0:
        raise ValueError("the evaluation set is empty")
    return 100.0 * correct / len(y)


def train_model(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], budget: TrainBudget, seed: int, *,
                fill: torch.Tensor | None = None,
                eval_sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
                on_epoch: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train ``model`` in place on ``train`` with ``budget``, then evaluate it on ``eval_sets``.

    Args:
        model: any classifier (a supernet samples a subnet per training forward, as it does under timm's train.py).
        train: ``(images, labels)``, images already normalised.
        budget: the training recipe.
        seed: seed of the batch order and the augmentation (an explicit generator; the global RNG is not used,
            and the models trained here have no dropout).
        fill: per-channel value of a background pixel (the normalised black) for the ``shift`` augmentation
            (default 0).
        eval_sets: name -> ``(images, labels)`` evaluated once after training.
        on_epoch: called with ``(epoch, mean loss)`` after every epoch.
    """
    x, y = train
    n = len(y)
    if n == 0:
        raise ValueError("the training set is empty")
    g = torch.Generator().manual_seed(int(seed))
    fill = torch.zeros(x.shape[1]) if fill is None else fill
    steps_per_epoch = math.ceil(n / budget.batch_size)
    total = steps_per_epoch * budget.epochs
    optimizer = _optimizer(model, budget)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    losses: list[float] = []
    step = 0
    with Timer() as timer:
        model.train()
        for epoch in range(budget.epochs):
            perm = torch.randperm(n, generator=g)
            loss_sum = 0.0
            for lo in range(0, n, budget.batch_size):
                idx = perm[lo:lo + budget.batch_size]
                xb, yb = x[idx], y[idx]
                if budget.shift > 0:
                    xb = _shift_batch(xb, budget.shift, fill, g)
                lr = budget.lr_at(step, total, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss = F.cross_entropy(model(xb), yb, label_smoothing=budget.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if budget.grad_clip > 0:
                    nn.utils.clip_grad_norm_(params, budget.grad_clip)
                optimizer.step()
                loss_sum += float(loss.detach()) * len(yb)
                step += 1
            losses.append(loss_sum / n)
            if on_epoch is not None:
                on_epoch(epoch, losses[-1])
        accuracy = {name: evaluate(model, ex, ey) for name, (ex, ey) in (eval_sets or {}).items()}
    return TrainResult(accuracy, losses, step, timer.wall, timer.cpu)
