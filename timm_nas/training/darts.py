"""Training a DARTS genotype network from scratch with the original evaluation recipe (quark0/darts ``cnn/train.py``
and ``cnn/train_imagenet.py``, commit ``f276dd346a09ae3160f8e3aca5c7b193fda1da37``), built from timm's components.

The run is a function of its seed for any number of data workers (augmentation seeded per item, drop-path per
epoch: :mod:`timm_nas.search._rng`); a resumed run continues after its last finished epoch with its history kept
to the checkpoint (no epoch logged twice).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..spaces.base import generator_for
from ..spaces.darts import Genotype
from .data import dataset_num_classes

__all__ = ["Cutout", "DartsTrainConfig", "train_genotype_network"]


class Cutout:
    """Zero one ``length x length`` square (clipped at the border) at a uniformly random centre of a CHW tensor
    (cnn/utils.py ``Cutout``; drawn from torch's RNG instead of numpy's)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        y = int(torch.randint(h, (1,)).item())
        x = int(torch.randint(w, (1,)).item())
        half = self.length // 2
        img = img.clone()
        img[..., max(0, y - half):min(h, y + half), max(0, x - half):min(w, x + half)] = 0.
        return img


@dataclasses.dataclass
class DartsTrainConfig:
    """Training a genotype network from scratch; defaults are the original CIFAR-10 recipe (``cnn/train.py`` with
    ``--auxiliary --cutout``). :meth:`imagenet` gives ``cnn/train_imagenet.py``'s.

    Args:
        model_name: ``darts_cifar`` or ``darts_imagenet``.
        genotype: registry name, dict or text.
        C: initial channels.
        layers: cells.
        epochs: training epochs.
        batch_size: batch size per process.
        lr: SGD learning rate.
        momentum: SGD momentum (no Nesterov).
        weight_decay: SGD weight decay on every parameter.
        schedule: ``'cosine'`` (to 0 over ``epochs``) or ``'step'`` (x ``decay_rate`` per epoch).
        decay_rate: per-epoch factor of the ``'step'`` schedule.
        auxiliary_weight: weight of the auxiliary loss (0 disables the auxiliary head).
        drop_path_prob: final drop-path probability, ramped linearly as ``p * epoch / epochs``.
        cutout: cutout length (0 disables it; CIFAR recipe only).
        label_smoothing: label smoothing of the training loss.
        grad_clip: gradient-norm clip.
        ema_decay: decay of a timm ``ModelEmaV3`` of the weights (0: none, as the original).
        img_size: input size.
        seed: seed of the model initialisation and the data order.
        workers: data-loader workers.
    """

    model_name: str = "darts_cifar"
    genotype: Any = "darts_v2"
    C: int = 36
    layers: int = 20
    epochs: int = 600
    batch_size: int = 96
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 3e-4
    schedule: str = "cosine"
    decay_rate: float = 0.97
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.2
    cutout: int = 16
    label_smoothing: float = 0.
    grad_clip: float = 5.0
    ema_decay: float = 0.
    img_size: int = 32
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        if self.model_name not in ("darts_cifar", "darts_imagenet"):
            raise ValueError(f"model_name={self.model_name!r} is not allowed; allowed values: "
                             "['darts_cifar', 'darts_imagenet']")
        if self.schedule not in ("cosine", "step"):
            raise ValueError(f"schedule={self.schedule!r} is not allowed; allowed values: ['cosine', 'step']")

    @classmethod
    def imagenet(cls, **overrides: Any) -> "DartsTrainConfig":
        """The original ImageNet recipe (``cnn/train_imagenet.py``): C=48, 14 cells, batch 128, SGD 0.1, weight
        decay 3e-5, x0.97 per epoch, 250 epochs, label smoothing 0.1, auxiliary 0.4, no drop path, no cutout."""
        base = dict(model_name="darts_imagenet", C=48, layers=14, epochs=250, batch_size=128, lr=0.1,
                    weight_decay=3e-5, schedule="step", decay_rate=0.97, drop_path_prob=0., cutout=0,
                    label_smoothing=0.1, img_size=224)
        return cls(**dict(base, **overrides))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if isinstance(self.genotype, Genotype):
            d["genotype"] = self.genotype.to_dict()
        return d


def train_genotype_network(train_dataset: Any, valid_dataset: Any, output_dir: str | os.PathLike,
                           config: DartsTrainConfig | None = None, *, num_classes: int | None = None,
                           device: str | torch.device = "cpu", resume: bool = True,
                           progress: bool = True) -> dict[str, Any]:
    """Train a genotype network from scratch with the original recipe, built from timm's components: the model
    from ``timm.create_model``, ``timm.optim.create_optimizer_v2`` (plain momentum SGD, weight decay on every
    parameter), ``timm.scheduler`` (cosine or step, stepped at the start of each epoch like the original),
    ``timm.loss.LabelSmoothingCrossEntropy``, ``timm.utils.ModelEmaV3`` and ``timm.utils.CheckpointSaver``
    (``last.pth.tar`` / ``model_best.pth.tar`` in ``output_dir``).

    Per step: ``loss = CE(logits) + auxiliary_weight * CE(aux_logits)`` from ``model.forward_with_aux``, gradient
    clip, SGD step; ``model.drop_path_prob`` ramps linearly per epoch.

    Returns:
        ``{'best_top1': ..., 'history': [...]}`` (one record per epoch).
    """
    import argparse

    import timm
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler, StepLRScheduler
    from timm.utils import CheckpointSaver, ModelEmaV3
    from tqdm.auto import tqdm

    from .._checkpoint import load_checkpoint_file
    from .._io import atomic_write_text
    from ..search._rng import seeded, seeded_loader

    cfg = config or DartsTrainConfig()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    num_classes = num_classes or dataset_num_classes(train_dataset)
    genotype = Genotype.resolve(cfg.genotype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = timm.create_model(cfg.model_name, genotype=genotype.to_dict(), C=cfg.C, layers=cfg.layers,
                                  num_classes=num_classes, auxiliary=cfg.auxiliary_weight > 0)
    model.to(device)
    optimizer = create_optimizer_v2(model, opt="momentum", lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay, filter_bias_and_bn=False)
    if cfg.schedule == "cosine":
        scheduler = CosineLRScheduler(optimizer, t_initial=cfg.epochs, lr_min=0., t_in_epochs=True)
    else:
        scheduler = StepLRScheduler(optimizer, decay_t=1, decay_rate=cfg.decay_rate, t_in_epochs=True)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema_decay > 0 else None
    criterion = LabelSmoothingCrossEntropy(cfg.label_smoothing) if cfg.label_smoothing > 0 else nn.CrossEntropyLoss()
    args = argparse.Namespace(model=cfg.model_name, **{k: v for k, v in cfg.to_dict().items() if k != "model_name"})
    saver = CheckpointSaver(model, optimizer, args=args, model_ema=ema, checkpoint_dir=str(out),
                            recovery_dir=str(out), decreasing=False, max_history=1)
    start_epoch, history = 0, []
    last = out / "last.pth.tar"
    if resume and last.is_file():
        ckpt = load_checkpoint_file(last)
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None and "state_dict_ema" in ckpt:
            ema.module.load_state_dict(ckpt["state_dict_ema"])
        start_epoch = int(ckpt["epoch"]) + 1
        hist_path = out / "history.jsonl"
        if hist_path.is_file():
            history = [json.loads(x) for x in hist_path.read_text().splitlines() if x.strip()][:start_epoch]
    # the history holds exactly the checkpoint's epochs (a kill between the two is redone, logged once)
    atomic_write_text(out / "history.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    best = max((h["top1"] for h in history), default=0.)

    for epoch in range(start_epoch, cfg.epochs):
        scheduler.step(epoch)
        model.drop_path_prob = cfg.drop_path_prob * epoch / cfg.epochs
        order = torch.randperm(len(train_dataset), generator=generator_for(cfg.seed, epoch)).tolist()
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        loader = seeded_loader(train_dataset, batches, seed=cfg.seed, stream=epoch, workers=cfg.workers)
        model.train()
        seen, loss_sum = 0, 0.
        with seeded(cfg.seed, -1 - epoch):  # drop-path draws
            for x, y in tqdm(loader, disable=not progress, desc=f"train {epoch + 1}/{cfg.epochs}", leave=False):
                x, y = x.to(device), y.to(device)
                optimizer.zero_grad(set_to_none=True)
                logits, aux = model.forward_with_aux(x)
                loss = criterion(logits, y)
                if aux is not None:
                    loss = loss + cfg.auxiliary_weight * criterion(aux, y)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                if ema is not None:
                    ema.update(model)
                seen += y.numel()
                loss_sum += loss.item() * y.numel()
        top1, top5, vloss = _validate(ema.module if ema is not None else model, valid_dataset, cfg, device)
        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "drop_path_prob": model.drop_path_prob,
                  "train_loss": loss_sum / max(seen, 1), "valid_loss": vloss, "top1": top1, "top5": top5}
        history.append(record)
        best = max(best, top1)
        with open(out / "history.jsonl", "a", encoding="utf-8") as f:  # before the checkpoint, see above
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        saver.save_checkpoint(epoch, metric=top1)
    return {"best_top1": best, "history": history}


@torch.no_grad()
def _validate(model: nn.Module, dataset: Any, cfg: DartsTrainConfig, device: torch.device) -> tuple[float, float, float]:
    """Top-1 (%), top-5 (%) and mean loss of the network on ``dataset`` in eval mode."""
    from ..training.evaluate import evaluate_batches

    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers,
                                         generator=generator_for(cfg.seed, -1))  # not the global RNG
    model.eval()
    totals = evaluate_batches(model, loader, device)
    if totals.count == 0:
        return 0.0, 0.0, 0.0
    return totals.top1, totals.top5, totals.loss
