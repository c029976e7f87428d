"""DARTS bilevel search and export of the derived genotype network (training a genotype network from scratch with
the original recipe is :mod:`timm_nas.training.darts`; its names are importable from here too).

Reference: quark0/darts ``cnn/architect.py`` and ``cnn/train_search.py`` (search), ``cnn/train.py`` /
``cnn/train_imagenet.py`` (training a genotype network from scratch), commit
``f276dd346a09ae3160f8e3aca5c7b193fda1da37``.

Per training step the original first updates the architecture weights (alphas) with Adam on a validation batch,
then the network weights with SGD on the training batch:

* first order: ``dL_val(w, alpha) / d alpha``;
* second order: ``dL_val(w', alpha) / d alpha - eta * (dL_train(w+, alpha)/d alpha - dL_train(w-, alpha)/d alpha)
  / (2 R)`` with the unrolled weights ``w' = w - eta * (momentum * buf + dL_train/dw + wd * w)``, ``v =
  dL_val(w', alpha)/dw'``, ``R = r / ||v||`` and ``w+- = w +- R v``.

:func:`architecture_gradient` computes exactly that, but only the gradients each piece needs (alpha-only backward
passes where the original also fills every weight gradient, and the unrolled model evaluated functionally instead of
being rebuilt), which is where the speed-up over the original comes from (``bench/bench_darts.py``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ..spaces.base import generator_for
from ..spaces.darts import PRIMITIVES, Genotype
from ._rng import seeded, seeded_loader
from ..training.darts import Cutout, DartsTrainConfig, train_genotype_network  # noqa: F401 (public names here too)
from ..training.data import dataset_num_classes
from .distributed import Dist
from .log import RunFolder

__all__ = [
    "architecture_gradient",
    "momentum_buffers",
    "DartsSearchConfig",
    "DartsSearchResult",
    "search",
    "search_transforms",
    "dataset_num_classes",
    "split_indices",
    "export_genotype",
    "DartsTrainConfig",
    "train_genotype_network",
    "Cutout",
]

_logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]
Reduce = Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]

#: Finite-difference scale of the Hessian-vector product, ``R = r / ||v||`` (cnn/architect.py
#: ``_hessian_vector_product(..., r=1e-2)``).
HESSIAN_R = 0.01


# --------------------------------------------------------------------------------- architecture gradient
def momentum_buffers(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """The SGD momentum buffer of each of ``params`` in ``optimizer`` (``None`` where there is none yet)."""
    return [optimizer.state.get(p, {}).get("momentum_buffer") for p in params]


def _identity(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return list(tensors)


def _loss(model: nn.Module, batch: Batch, params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    x, y = batch
    logits = model(x) if params is None else functional_call(model, dict(params), (x,))
    return F.cross_entropy(logits, y)


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _grad(loss: torch.Tensor, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``torch.autograd.grad`` with zeros for inputs the loss does not use (e.g. ``alphas_normal`` of a search
    network with fewer than 3 cells, which has no normal cell)."""
    grads = torch.autograd.grad(loss, list(inputs), allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]


def architecture_gradient(
        model: nn.Module,
        train_batch: Batch,
        valid_batch: Batch,
        *,
        eta: float,
        weight_decay: float,
        network_momentum: float,
        momentum_buffers: Sequence[torch.Tensor | None] | None = None,
        order: int = 1,
        r: float = HESSIAN_R,
) -> tuple[torch.Tensor, ...]:
    """The gradient of the validation loss with respect to the architecture weights, as the original architect.

    The model runs in train mode (BatchNorm batch statistics); BatchNorm running statistics are updated as in the
    original: by the validation forward (first order), or by the training forward and the two finite-difference
    forwards (second order), never by the forward at the unrolled weights. ``.grad`` fields are left untouched.

    Args:
        model: a search network with ``arch_parameters()`` and ``weight_parameters()`` (``darts_search``).
        train_batch: ``(input, target)`` of the training split (used by the second order only).
        valid_batch: ``(input, target)`` of the validation split.
        eta: the network's current learning rate (the unrolled step's size).
        weight_decay: the network optimiser's weight decay (added to every weight gradient of the unrolled step).
        network_momentum: the network optimiser's momentum.
        momentum_buffers: the network optimiser's momentum buffers, aligned with ``model.weight_parameters()``
            (see :func:`momentum_buffers`); ``None`` or any missing buffer means a momentum term of zero, as in the
            original.
        order: 1 (``unrolled=False``, the original's default) or 2 (``--unrolled``).
        r: finite-difference scale, ``R = r / ||v||``.

    Returns:
        One gradient per architecture parameter (``alphas_normal``, ``alphas_reduce``), in the alphas' dtype; zeros
        for one that no cell uses (fewer than 3 cells: no normal cell).
    """
    return _architecture_gradient(model, train_batch, valid_batch, eta=eta, weight_decay=weight_decay,
                                  network_momentum=network_momentum, momentum_buffers=momentum_buffers,
                                  order=order, r=r, reduce=_identity)


def _architecture_gradient(
        model: nn.Module, train_batch: Batch, valid_batch: Batch, *, eta: float, weight_decay: float,
        network_momentum: float, momentum_buffers: Sequence[torch.Tensor | None] | None, order: int, r: float,
        reduce: Reduce,
) -> tuple[torch.Tensor, ...]:
    """:func:`architecture_gradient` with a ``reduce`` hook averaging every gradient over data-parallel ranks, so
    all ranks compute the gradient of the global batch and keep identical alphas."""
    if order not in (1, 2):
        raise ValueError(f"order={order!r} is not allowed; allowed values: [1, 2]")
    for name in ("arch_parameters", "weight_parameters"):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"{type(model).__name__} has no {name}(); architecture_gradient needs a DARTS search "
                            "network such as timm.create_model('darts_search')")
    alphas = list(model.arch_parameters())
    was_training = model.training
    model.train()
    try:
        if order == 1:
            # The original calls .backward() and so also fills every weight gradient; only the alphas' are needed.
            loss = _loss(model, valid_batch)
            return tuple(reduce(_grad(loss, alphas)))
        return tuple(_second_order(model, alphas, train_batch, valid_batch, eta, weight_decay, network_momentum,
                                   momentum_buffers, r, reduce))
    finally:
        model.train(was_training)


def _second_order(model: nn.Module, alphas: list[torch.Tensor], train_batch: Batch, valid_batch: Batch, eta: float,
                  weight_decay: float, network_momentum: float,
                  buffers: Sequence[torch.Tensor | None] | None, r: float, reduce: Reduce) -> list[torch.Tensor]:
    alpha_ids = {id(a) for a in alphas}
    named_weights = [(n, p) for n, p in model.named_parameters() if id(p) not in alpha_ids]
    weights = [p for _, p in named_weights]
    if buffers is not None and len(buffers) != len(weights):
        raise ValueError(f"momentum_buffers has {len(buffers)} entries but the model has {len(weights)} weight "
                         "parameters; pass momentum_buffers(optimizer, model.weight_parameters())")

    # 1. The unrolled weights w' = w - eta * (momentum * buf + dL_train/dw + wd * w): one SGD step without clipping.
    loss = _loss(model, train_batch)
    grads = reduce(_grad(loss, weights))
    with torch.no_grad():
        theta = _flat(weights)
        if buffers is None or any(b is None for b in buffers):
            moment = torch.zeros_like(theta)  # the original's bare `except`: no buffer yet -> no momentum term
        else:
            moment = _flat(buffers).mul_(network_momentum)
        dtheta = _flat(grads) + weight_decay * theta
        unrolled_flat = theta.sub(moment + dtheta, alpha=eta)

    # 2. dL_val(w', alpha) / d(alpha, w'), with w' substituted functionally. The BatchNorm buffers are copies, so this
    #    forward leaves the model's running statistics alone (the original runs it on a throw-away model copy).
    params: dict[str, torch.Tensor] = {n: b.clone() for n, b in model.named_buffers()}
    leaves, offset = [], 0
    for name, p in named_weights:
        # One leaf per weight: gradients of views into one flat tensor would each be materialised at full size.
        leaf = unrolled_flat[offset:offset + p.numel()].view_as(p).clone().requires_grad_(True)
        params[name] = leaf
        leaves.append(leaf)
        offset += p.numel()
    del unrolled_flat, theta, moment, dtheta, grads, loss  # free the unrolling's flat copies and graph first
    unrolled_loss = _loss(model, valid_batch, params)
    grads = _grad(unrolled_loss, alphas + leaves)
    dalpha = reduce(grads[:len(alphas)])
    vector = reduce(grads[len(alphas):])
    v_flat = _flat(vector)

    # 3. Finite-difference Hessian-vector product around w (not w'), in the original's in-place order, so the
    #    weights afterwards equal the original's bit for bit (w + Rv - 2Rv + Rv, not exactly w).
    R = r / v_flat.norm().item()
    with torch.no_grad():
        for p, v in zip(weights, vector):
            p.add_(v, alpha=R)
    grads_p = _grad(_loss(model, train_batch), alphas)
    with torch.no_grad():
        for p, v in zip(weights, vector):
            p.sub_(v, alpha=2 * R)
    grads_n = _grad(_loss(model, train_batch), alphas)
    with torch.no_grad():
        for p, v in zip(weights, vector):
            p.add_(v, alpha=R)
    implicit = reduce([(x - y).div_(2 * R) for x, y in zip(grads_p, grads_n)])
    return [g.sub(ig, alpha=eta) for g, ig in zip(dalpha, implicit)]


# ----------------------------------------------------------------------------------------- search config
#: The cell spaces the DARTS search runs on, and their search networks.
SEARCH_SPACES = {"darts": "darts_search", "nb201": "nb201_search"}
#: Fields added after the first release of the config: a checkpoint that lacks one was written with this value.
_LATER_FIELDS = {"space": "darts", "cells_per_stage": 5}


@dataclasses.dataclass
class DartsSearchConfig:
    """Search settings; the defaults are the original's ``train_search.py`` defaults.

    Args:
        C: search network initial channels.
        layers: search network cells.
        steps: intermediate nodes per cell.
        multiplier: states concatenated into a cell's output.
        stem_multiplier: stem width factor.
        primitives: candidate operations (column order of the alphas).
        epochs: search epochs.
        batch_size: batch size per process, for both the training and the validation batches.
        lr: initial network learning rate (SGD), cosine-annealed per epoch to ``lr_min`` over ``epochs``.
        lr_min: final network learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay (on every weight, BatchNorm and biases included).
        grad_clip: gradient-norm clip of the network weights (alphas are never clipped).
        arch_lr: Adam learning rate of the alphas.
        arch_betas: Adam betas of the alphas.
        arch_weight_decay: Adam (L2) weight decay of the alphas.
        train_portion: fraction of the training set used for the weights; the rest is the validation split.
        order: 1 (first order, the original's default) or 2 (second order, ``--unrolled``).
        r: finite-difference scale of the second order.
        seed: seed of the model initialisation, the data order and the validation batches.
        img_size: training crop size (32 for CIFAR).
        workers: data-loader worker processes (the run does not depend on them: every augmentation draw is seeded
            by its place in the data stream).
        space: ``'darts'`` (the DARTS cell space, ``darts_search``) or ``'nb201'`` (the NAS-Bench-201 cell space,
            ``nb201_search``, the benchmark's DARTS baseline: ``C`` channels, ``cells_per_stage`` cells per stage;
            ``layers``, ``steps``, ``multiplier``, ``stem_multiplier`` and ``primitives`` are the DARTS space's).
        cells_per_stage: search cells per stage of the NAS-Bench-201 network (5).
    """

    C: int = 16
    layers: int = 8
    steps: int = 4
    multiplier: int = 4
    stem_multiplier: int = 3
    primitives: tuple[str, ...] = PRIMITIVES
    epochs: int = 50
    batch_size: int = 64
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    train_portion: float = 0.5
    order: int = 1
    r: float = HESSIAN_R
    seed: int = 2
    img_size: int = 32
    workers: int = 2
    space: str = "darts"
    cells_per_stage: int = 5

    def __post_init__(self) -> None:
        if self.space not in SEARCH_SPACES:
            raise ValueError(f"space={self.space!r} is not allowed; allowed values: {sorted(SEARCH_SPACES)}")
        if self.order not in (1, 2):
            raise ValueError(f"order={self.order!r} is not allowed; allowed values: [1, 2]")
        if not 0. < self.train_portion < 1.:
            raise ValueError(f"train_portion must be in (0, 1), got {self.train_portion}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {self.epochs} and {self.batch_size}")
        self.primitives = tuple(self.primitives)
        self.arch_betas = tuple(self.arch_betas)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def model_name(self) -> str:
        """The search network: ``darts_search`` or ``nb201_search``."""
        return SEARCH_SPACES[self.space]

    def model_args(self) -> dict[str, Any]:
        if self.space == "nb201":
            return dict(C=self.C, N=self.cells_per_stage)
        return dict(C=self.C, layers=self.layers, steps=self.steps, multiplier=self.multiplier,
                    stem_multiplier=self.stem_multiplier, primitives=list(self.primitives))

    def lr_at(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (0-based): ``lr_min + (lr - lr_min) (1 + cos(pi e / epochs)) / 2``,
        the closed form of the original's ``CosineAnnealingLR`` stepped at the start of each epoch under
        PyTorch 0.3 (first epoch at ``lr``)."""
        return self.lr_min + (self.lr - self.lr_min) * (1 + math.cos(math.pi * epoch / self.epochs)) / 2


@dataclasses.dataclass
class DartsSearchResult:
    """What a search returns: the final genotype, the per-epoch history and where the files are."""

    genotype: Any  # a Genotype (DARTS space) or an NB201Cell
    history: list[dict[str, Any]]
    output_dir: Path
    export_dir: Path | None = None
    export_status: str | None = None  # 'written' | 'replaced' | 'unchanged'


# ------------------------------------------------------------------------------------------------ data
def search_transforms(img_size: int = 32, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None) -> Any:
    """The original search / CIFAR training transform: random crop with 4-pixel padding, horizontal flip,
    normalisation with the CIFAR-10 statistics (a resize to ``img_size`` first, a no-op on CIFAR)."""
    from torchvision import transforms

    from ..models.darts import CIFAR_MEAN, CIFAR_STD

    return transforms.Compose([
        transforms.Resize(img_size),
        transforms.RandomCrop(img_size, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean or CIFAR_MEAN, std or CIFAR_STD),
    ])


def split_indices(n: int, train_portion: float) -> tuple[list[int], list[int]]:
    """The original's split: the first ``floor(portion * n)`` indices train the weights, the rest the alphas."""
    split = int(math.floor(train_portion * n))
    if split < 1 or split >= n:
        raise ValueError(f"train_portion={train_portion} of {n} samples leaves an empty split")
    return list(range(split)), list(range(split, n))


class _EpochBatches(torch.utils.data.Sampler):
    """Training batches of one epoch: a seeded permutation of the training split, sharded over ranks (the
    original's ``SubsetRandomSampler``)."""

    def __init__(self, indices: list[int], batch_size: int, seed: int, epoch: int, rank: int, world: int) -> None:
        g = generator_for(seed, epoch)
        perm = torch.randperm(len(indices), generator=g).tolist()
        usable = len(perm) - len(perm) % world
        mine = [indices[i] for i in perm[rank:usable:world]]
        self.batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _RandomBatches(torch.utils.data.Sampler):
    """Validation batches as the original draws them: every step takes the first ``batch_size`` items of a fresh
    random permutation of the validation split (``next(iter(valid_queue))``), here from a seeded generator and
    without respawning loader workers."""

    def __init__(self, indices: list[int], batch_size: int, num_batches: int, generator: torch.Generator) -> None:
        self.indices, self.batch_size, self.num_batches, self.generator = indices, batch_size, num_batches, generator

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.num_batches):
            perm = torch.randperm(len(self.indices), generator=self.generator)[:self.batch_size].tolist()
            yield [self.indices[i] for i in perm]

    def __len__(self) -> int:
        return self.num_batches


def _accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    return (logits.argmax(dim=-1) == target).float().sum().item()


# ---------------------------------------------------------------------------------------------- search
CHECKPOINT_NAME = "checkpoint.pth"
LOG_NAME = "search_log.jsonl"
#: What a DARTS run folder holds besides the common files (timm_nas.search.log).
OUTPUTS = (CHECKPOINT_NAME, LOG_NAME, "genotype.json", "genotype.txt")


@dataclasses.dataclass
class _State:
    """Everything a DARTS search step changes, and what a checkpoint holds."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    arch_optimizer: torch.optim.Optimizer
    history: list[dict[str, Any]]

    def checkpoint(self, cfg: DartsSearchConfig) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "arch_optimizer": self.arch_optimizer.state_dict(), "epoch": len(self.history) - 1,
                "config": cfg.to_dict()}


def _build(cfg: DartsSearchConfig, num_classes: int, device: torch.device) -> _State:
    import timm

    # Model initialisation is seeded without disturbing the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = timm.create_model(cfg.model_name, num_classes=num_classes, **cfg.model_args())
    model.to(device)
    optimizer = torch.optim.SGD(model.weight_parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    arch_optimizer = torch.optim.Adam(model.arch_parameters(), lr=cfg.arch_lr, betas=cfg.arch_betas,
                                      weight_decay=cfg.arch_weight_decay)
    return _State(model, optimizer, arch_optimizer, [])


def _resume(state: _State, folder: RunFolder, records: list[dict[str, Any]], cfg: DartsSearchConfig) -> None:
    """Load the folder's checkpoint into ``state`` and keep the log records it covers."""
    from .._checkpoint import load_checkpoint_file

    path = folder.path / CHECKPOINT_NAME
    if folder.overwrite or not path.is_file():
        return
    ckpt = load_checkpoint_file(path)
    saved = ckpt.get("config", {})
    current = cfg.to_dict()
    if saved and any(saved.get(k, _LATER_FIELDS.get(k)) != current.get(k) for k in set(saved) | set(current)
                     if k != "workers"):
        raise ValueError(f"{path} was written with different search settings; use another output folder or "
                         "overwrite=True (--overwrite). Saved: " + json.dumps(saved))
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.arch_optimizer.load_state_dict(ckpt["arch_optimizer"])
    done = int(ckpt["epoch"]) + 1
    state.history = folder.records_until(records, done)
    _logger.info("resuming DARTS search at epoch %d from %s", done, path)


def search(
        dataset: Any,
        output_dir: str | os.PathLike,
        config: DartsSearchConfig | None = None,
        *,
        num_classes: int | None = None,
        resume: bool = True,
        device: str | torch.device = "cpu",
        progress: bool = True,
        export: Mapping[str, Any] | None = None,
        replace_changed_export: bool = False,
) -> DartsSearchResult:
    """Run the DARTS search (the original ``train_search.py`` loop) on ``dataset``.

    The first ``train_portion`` of ``dataset`` trains the weights, the rest the alphas (both with the dataset's own
    transform). ``output_dir`` is a run folder (:mod:`timm_nas.search.log`): ``run.json``, ``search_log.jsonl``
    (one line per epoch: learning rate, losses, accuracies, the genotype derived after the epoch as dict and
    original text, the softmaxed alphas), ``checkpoint.pth`` (weights, alphas, both optimisers, epoch), and at the
    end ``genotype.json`` / ``genotype.txt``, ``best.json`` (the final genotype and its accuracy) and ``export/``.
    The same call again continues after the last finished epoch and ends where an uninterrupted run ends; on a
    finished run it changes nothing.

    The run is a function of ``config.seed``: data order, validation batches and every augmentation draw (seeded
    per item, see :func:`timm_nas.search._rng.seeded_loader`) do not depend on ``workers``. Under ``torchrun``
    (``torch.distributed`` initialised) every rank takes its shard of the training batches and its own validation
    batches; weight gradients and every piece of the architecture gradient are averaged over ranks, so weights and
    alphas stay identical on all ranks; BatchNorm statistics are synchronised from rank 0 after every epoch. Only
    rank 0 writes files. Another number of processes is another run (per-rank batches and BatchNorm statistics),
    as in the original.

    Args:
        dataset: a map-style dataset of ``(image_tensor, class_index)`` (e.g. from :func:`search_transforms` with
            ``timm.data.create_dataset``).
        output_dir: the run folder.
        config: search settings (defaults: the original's).
        num_classes: classes of the dataset (default: read from ``dataset.classes`` / ``dataset.targets``).
        resume: continue the run in ``output_dir``; ``False`` discards it (its outputs only) and starts afresh.
        device: where to run.
        progress: show a progress bar.
        export: when given, keyword arguments of :func:`export_genotype` (``model_name``, ``model_kwargs``,
            ``push_to``, ...; ``folder`` defaults to ``output_dir/export``) to export the derived genotype network
            at the end.
        replace_changed_export: replace ``export/`` even when it holds files the search did not write.
    """
    from tqdm.auto import tqdm

    cfg = config or DartsSearchConfig()
    dist = Dist.from_group()
    device = torch.device(device)
    num_classes = num_classes or dataset_num_classes(dataset)
    train_idx, valid_idx = split_indices(len(dataset), cfg.train_portion)
    identity = {"config": {k: v for k, v in cfg.to_dict().items() if k != "workers"}, "num_classes": num_classes,
                "dataset_size": len(dataset), "world_size": dist.world_size}
    folder = RunFolder(output_dir, identity, kind="darts", log_name=LOG_NAME, overwrite=not resume,
                       outputs=OUTPUTS, legacy=(CHECKPOINT_NAME, LOG_NAME),
                       replace_changed_export=replace_changed_export)
    records = dist.check(folder.check)
    state = _build(cfg, num_classes, device)
    dist.check(lambda: _resume(state, folder, records, cfg))  # rank 0 reads; every rank gets rank 0's state below
    if dist.is_main:
        folder.start(keep=len(state.history))
    model = state.model
    dist.broadcast_tensors(list(model.parameters()) + list(model.buffers()))
    for epoch in range(len(state.history), cfg.epochs):
        train_sampler = _EpochBatches(train_idx, cfg.batch_size, cfg.seed, epoch, dist.rank, dist.world_size)
        valid_sampler = _RandomBatches(valid_idx, cfg.batch_size, len(train_sampler),
                                       generator_for(cfg.seed + 1 + dist.rank, epoch))
        streams = 4 * (epoch * dist.world_size + dist.rank)  # one key stream per epoch, rank and split
        train_loader = seeded_loader(dataset, train_sampler, seed=cfg.seed, stream=streams, workers=cfg.workers)
        valid_loader = seeded_loader(dataset, valid_sampler, seed=cfg.seed, stream=streams + 1, workers=cfg.workers)
        bar = tqdm(zip(train_loader, valid_loader), total=len(train_sampler), disable=not progress or not dist.is_main,
                   desc=f"darts search {epoch + 1}/{cfg.epochs}", leave=False)
        with seeded(cfg.seed, streams + 2):
            record = _epoch(state, epoch, bar, dataset, valid_idx, cfg, device, dist)
        state.history.append(record)
        _logger.info("epoch %d lr %.5f train_acc %.4f valid_acc %.4f genotype %s", epoch, record["lr"],
                     record["train_acc"], record["valid_acc"], record["genotype_text"])
        if dist.is_main:  # log first: a kill before the checkpoint is written redoes the epoch, logged once
            folder.append(record)
            folder.save_checkpoint(CHECKPOINT_NAME, state.checkpoint(cfg))
    genotype = model.derive_arch()
    result = DartsSearchResult(genotype, state.history, folder.path)
    if dist.is_main:
        _save_results(folder, genotype, state.history, cfg, num_classes, export, result, model)
    folder.close()
    return result


def _epoch(state: _State, epoch: int, batches: Any, dataset: Any, valid_idx: list[int], cfg: DartsSearchConfig,
           device: torch.device, dist: Dist) -> dict[str, Any]:
    """One search epoch: the steps, the BatchNorm synchronisation, the validation pass; returns its log record."""
    model, lr = state.model, cfg.lr_at(epoch)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    model.train()
    stats = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    t0 = time.perf_counter()
    for (x, y), (xv, yv) in batches:
        x, y, xv, yv = x.to(device), y.to(device), xv.to(device), yv.to(device)
        loss, logits = _search_step(model, state.optimizer, state.arch_optimizer, (x, y), (xv, yv), lr, cfg, dist)
        stats += torch.tensor([loss * y.numel(), _accuracy(logits, y), y.numel()], dtype=torch.float64)
        batches.set_postfix(loss=f"{stats[0] / stats[2]:.3f}")
    dist.broadcast_tensors(model.buffers())
    valid_loss, valid_acc = _evaluate(model, dataset, valid_idx, cfg, device, dist)
    stats = dist.all_reduce_sum(stats)
    genotype = model.derive_arch()
    return {
        "epoch": epoch, "lr": lr,
        "train_loss": float(stats[0] / stats[2]), "train_acc": float(stats[1] / stats[2]),
        "valid_loss": valid_loss, "valid_acc": valid_acc, "seconds": time.perf_counter() - t0,
        "genotype": genotype.to_dict(), "genotype_text": _arch_text(genotype),
        **{name: F.softmax(p.detach(), dim=-1).cpu().tolist() for name, p in model.named_parameters()
           if name.startswith("alphas")},  # alphas_normal / alphas_reduce (DARTS), alphas (NAS-Bench-201)
    }


def _save_results(folder: RunFolder, genotype: Any, history: list[dict[str, Any]], cfg: DartsSearchConfig,
                  num_classes: int, export: Mapping[str, Any] | None, result: DartsSearchResult,
                  model: nn.Module | None = None) -> None:
    """``genotype.json`` / ``.txt``, ``best.json`` and the export (rank 0); unchanged files are left alone."""
    folder.write_json("genotype.json", genotype.to_dict())
    folder.write_text("genotype.txt", _arch_text(genotype) + "\n")
    last = history[-1] if history else {}
    folder.write_json("best.json", {"genotype": genotype.to_dict(), "genotype_text": _arch_text(genotype),
                                    "valid_acc": last.get("valid_acc"), "epochs": len(history),
                                    "score_name": "search-network accuracy on the held-out split (last epoch)"})
    if export is None:
        return
    options = dict(export, provenance=_provenance(cfg, history, num_classes))
    options.setdefault("seed", cfg.seed)  # the export of a run is a function of the run
    write = (lambda f, **kw: export_genotype(genotype, f, **kw)) if cfg.space == "darts" else \
        (lambda f, **kw: _export_cell(model, genotype, f, cfg, **kw))
    result.export_dir, result.export_status = folder.export_with(options, write)


def _search_step(model: nn.Module, optimizer: torch.optim.Optimizer, arch_optimizer: torch.optim.Optimizer,
                 train_batch: Batch, valid_batch: Batch, lr: float, cfg: DartsSearchConfig,
                 dist: Dist | None = None) -> tuple[float, torch.Tensor]:
    """One step of the original: the architecture step (Adam on the alphas), then the weight step (SGD)."""
    dist = dist or Dist()
    weights, alphas = model.weight_parameters(), model.arch_parameters()
    grads = _architecture_gradient(
        model, train_batch, valid_batch, eta=lr, weight_decay=cfg.weight_decay, network_momentum=cfg.momentum,
        momentum_buffers=momentum_buffers(optimizer, weights), order=cfg.order, r=cfg.r, reduce=dist.all_reduce_mean)
    arch_optimizer.zero_grad(set_to_none=True)
    for a, g, used in zip(alphas, grads, _used_alphas(model)):
        # An alpha no cell uses keeps grad None and is left alone by Adam, as in the original.
        a.grad = g.detach().clone() if used else None
    arch_optimizer.step()

    # Weight step: the alphas are constants here, so their (unused) gradient is not computed.
    optimizer.zero_grad(set_to_none=True)
    for a in alphas:
        a.requires_grad_(False)
    try:
        logits = model(train_batch[0])
        loss = F.cross_entropy(logits, train_batch[1])
        loss.backward()
    finally:
        for a in alphas:
            a.requires_grad_(True)
    if dist.world_size > 1:
        for p, g in zip(weights, dist.all_reduce_mean([p.grad for p in weights])):
            p.grad.copy_(g)
    nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
    optimizer.step()
    return loss.item(), logits.detach()


def _used_alphas(model: nn.Module) -> list[bool]:
    """Whether some cell uses each architecture parameter (DARTS: normal and reduction alphas; a network of fewer
    than 3 cells has no normal cell)."""
    if hasattr(model, "alphas_normal"):
        kinds = {cell.reduction for cell in model.cells}
        return [False in kinds, True in kinds]
    return [True] * len(model.arch_parameters())


def _arch_text(arch: Any) -> str:
    """The architecture in its original text: DARTS's ``Genotype(...)`` or NAS-Bench-201's cell string."""
    return arch.to_text() if hasattr(arch, "to_text") else arch.to_string()


@torch.no_grad()
def _evaluate(model: nn.Module, dataset: Any, indices: list[int], cfg: DartsSearchConfig, device: torch.device,
              dist: Dist) -> tuple[float, float]:
    """Loss and accuracy of the search network on the validation split (eval mode), the original's ``infer``."""
    from ..training.evaluate import EvalTotals, evaluate_batches

    mine = indices[dist.rank::dist.world_size]
    batches = [mine[i:i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]
    loader = seeded_loader(dataset, batches, seed=cfg.seed, stream=-1, workers=cfg.workers)
    model.eval()
    totals = EvalTotals.from_tensor(dist.all_reduce_sum(evaluate_batches(model, loader, device).to_tensor()))
    model.train()
    return totals.loss, totals.correct1 / totals.count


def _export_cell(search_net: Any, cell: Any, folder: str | os.PathLike, cfg: DartsSearchConfig, *,
                 model_kwargs: Mapping[str, Any] | None = None, provenance: Mapping[str, Any] | None = None,
                 seed: int | None = None, overwrite: bool = False, onnx: bool = False, **_: Any) -> Path:
    """Export the NAS-Bench-201 network of ``cell`` (the search network's skeleton: the benchmark trains the cell
    there from scratch), freshly initialised from ``seed``."""
    from .. import hub

    kwargs = {k: v for k, v in dict(model_kwargs or {}).items() if k == "num_classes"}
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = search_net.extract(cell, **kwargs)
    card = {"provenance": dict(provenance or {}, genotype=cell.to_dict(), genotype_text=cell.to_string())}
    return Path(hub.export(model, folder, card=card, overwrite=overwrite, onnx=onnx))


def _provenance(cfg: DartsSearchConfig, history: list[dict[str, Any]], num_classes: int) -> dict[str, Any]:
    from ..spaces.darts import DartsSpace
    from ..spaces.nb201 import NB201Space

    last = history[-1] if history else {}
    space = NB201Space() if cfg.space == "nb201" else DartsSpace(cfg.primitives, cfg.steps, cfg.multiplier)
    return {
        "method": "darts" if cfg.order == 1 else "darts (second order)",
        "space": space.to_dict(),
        "constraints": None,
        "seed": cfg.seed,
        "score": last.get("valid_acc"),
        "score_name": "search-network accuracy on the held-out half of the training set (last epoch)",
        "search_config": cfg.to_dict(),
        "search_num_classes": num_classes,
        "epochs_run": len(history),
        "weights": "untrained: a searched genotype is trained from scratch (timm-nas train-darts or timm's train.py)",
    }


# ------------------------------------------------------------------------------------------------ export
def export_genotype(
        genotype: Genotype | Mapping[str, Any] | str,
        folder: str | os.PathLike,
        *,
        model_name: str = "darts_cifar",
        model_kwargs: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        push_to: str | None = None,
        private: bool = False,
        token: str | None = None,
        seed: int | None = None,
        onnx: bool = False,
) -> Path:
    """Build the genotype network (``darts_cifar`` or ``darts_imagenet``) and export it as a Hub folder with
    :func:`timm_nas.hub.export` (``config.json`` holds ``genotype`` under ``model_args``); optionally push it.

    The network's weights are freshly initialised (from ``seed`` when given, without touching the global
    generator's stream): DARTS trains a searched genotype from scratch. ``onnx`` also writes ``model.onnx``.
    """
    import timm
    from timm.models._input import update_model_args

    from .. import hub

    if model_name not in ("darts_cifar", "darts_imagenet"):
        raise ValueError(f"model_name={model_name!r} is not allowed; allowed values: ['darts_cifar', 'darts_imagenet']")
    genotype = Genotype.resolve(genotype)
    kwargs = dict(model_kwargs or {})
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = timm.create_model(model_name, genotype=genotype.to_dict(), **kwargs)
    # Record every architecture argument, not only the ones passed, so config.json and the card's cost count
    # describe this network on their own.
    arch = dict(genotype=genotype.to_dict(), C=model.C, layers=len(model.cells), stem_type=model.stem_type,
                auxiliary=model.auxiliary_head is not None)
    update_model_args(model, **dict(kwargs, **arch))
    card: dict[str, Any] = {"provenance": dict(provenance or {}, genotype=genotype.to_dict(),
                                                genotype_text=genotype.to_text())}
    path = Path(hub.export(model, folder, card=card, overwrite=overwrite, onnx=onnx))
    if push_to:
        hub.push(path, push_to, private=private, token=token)
    return path
