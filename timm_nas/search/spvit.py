"""The SPViT search: train a pretrained DeiT's gates against a FLOPs target, then export the pruned model.

Reference: ziplab/SPViT ``SPViT_DeiT/main_pruning.py``, ``engine.py`` (``train_one_epoch_pruning``),
``utils.py`` (``create_2optimizers``, ``create_scheduler``, ``save_ffn_indicators``) and ``params.py`` at commit
ae19b0d. Per training step the original computes

    loss = criterion(model(x), y) + loss_lambda * (target_flops - flops / 1e9) ** 2

(criterion: soft-target cross-entropy on Mixup/CutMix targets), then steps two AdamW optimisers on the one
backward pass: one for the weights (``head_probs`` included; weight decay 0.05 except 1-D tensors, biases,
``pos_embed`` and ``cls_token``; lr ``5e-5 x batch x world / 512``) and one for the gate thresholds (every
parameter named ``*thresholds*``; no weight decay; lr ``arc_lr``). Both learning rates follow an epoch-wise
cosine over ``epochs`` (300) towards ``min_lr`` (1e-4 in the search configs, so the released runs' weight lr of
1e-4 is constant, and the gate lr stays near ``arc_lr``), stepped with ``scheduler.step(epoch)`` after each
epoch. The search stops after epoch index 20 (21 epochs); the FFN masks are saved every 10 epochs.

What this module adds: explicit seeds for the gate samples (``generator_for(seed + rank, step)``, the step kept in
the model), for the data order and for every draw of the global generators (augmentation seeded per item,
Mixup and drop-path per epoch: :mod:`timm_nas.search._rng`), so a run is a function of its seed for any number of
data workers and after any resume; a progress bar with the current FLOPs against the target; a run folder
(:mod:`timm_nas.search.log`) with a resumable ``last_checkpoint.pth`` in the original's format, a JSONL log, the
derived architecture in our and the original's formats, and the export of the pruned model as a Hub folder
(:func:`timm_nas.hub.export`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn

from ..spaces.spvit import SPViTArch
from ..training.data import dataset_num_classes
from ._rng import seeded, seeded_loader
from .distributed import Dist
from .log import RunFolder

__all__ = [
    "SPViTSearchConfig",
    "SPViTSearchResult",
    "search",
    "search_transforms",
    "weight_param_groups",
    "export_pruned",
    "SPVIT_LR_BATCH",
]

_logger = logging.getLogger(__name__)

#: Linear lr scaling divisor of DeiT and SPViT (``args.lr * args.batch_size * world_size / 512.0``).
SPVIT_LR_BATCH = 512
#: The original's evaluation resize ratio (DeiT ``datasets.build_transform``: resize to ``256/224`` of the crop).
EVAL_CROP_PCT = 224 / 256
#: Default gate learning rate when the model is not one of the released variants (the DeiT-S / Swin configs).
DEFAULT_ARC_LR = 5e-4
#: Repeats of each image per epoch under repeated augmentation (DeiT ``samplers.RASampler``, on by default in
#: SPViT's ``params.py``: ``parser.set_defaults(repeated_aug=True)``).
REPEATED_AUG_REPEATS = 3

CHECKPOINT_NAME = "last_checkpoint.pth"
LOG_NAME = "log.jsonl"
ARCH_NAME = "arch.json"
#: What an SPViT run folder holds besides the common files (timm_nas.search.log).
OUTPUTS = (CHECKPOINT_NAME, LOG_NAME, ARCH_NAME, "search_*epoch.pth")


@dataclasses.dataclass
class SPViTSearchConfig:
    """Settings of an SPViT search. Defaults are the original's (``params.py`` and ``*_search.json``).

    Args:
        model: the search network (``spvit_search_deit_{tiny,small,base}`` or ``spvit_search_deit``).
        model_kwargs: further JSON-native arguments of the model (``embed_dim``, ``depth``, ... for
            ``spvit_search_deit``).
        pretrained: start from timm's DeiT weights (the original starts from the official DeiT checkpoints).
        pretrained_file: a local DeiT checkpoint to start from instead of downloading (timm or facebook layout).
        target_flops: FLOPs target in GFLOPs (default: the model's, i.e. the released search's).
        target_latency: latency target in milliseconds, in place of the FLOPs target, on the device ``latency_table``
            was measured on (:meth:`~timm_nas.models.spvit.SPViTSearchDeiT.latency_loss`).
        latency_table: a latency table of the search network (``timm-nas latency build --model
            spvit_search_deit_*``); without a target it only records the predicted latency.
        loss_lambda: complexity-loss weight (default: the model's).
        theta: initial gate threshold (default: the model's, 1.5).
        arc_lr: gate learning rate (default: the released search's for the variant, else 5e-4).
        batch_size: per-process batch size.
        lr: base weight learning rate, scaled by ``batch_size * world_size / 512``.
        min_lr: the cosine floor of the weight schedule.
        arc_min_lr: the cosine floor of the gate schedule. ``None`` (default) reproduces the original, whose
            ``create_scheduler(args, optimizer2, epochs, 0, args.arc_lr)`` ignores its ``min_lr`` argument and uses
            ``args.min_lr``; set it to ``arc_lr`` for the constant gate lr the original's comment intends.
        weight_decay: AdamW weight decay of the weight optimiser.
        opt_eps: AdamW epsilon of both optimisers.
        epochs: length of the cosine schedules.
        stop_epoch: the last epoch index that runs (the original returns after epoch 20).
        warmup_epochs: warm-up epochs of the weight schedule (0 in the search configs).
        warmup_lr: warm-up start lr.
        ffn_save_every: save the search checkpoint with its FFN masks every this many epochs.
        drop_path: stochastic depth rate.
        mixup, cutmix, mixup_prob, mixup_switch_prob, mixup_mode, smoothing: timm ``Mixup`` settings.
        repeated_aug: repeated augmentation (timm's ``RepeatAugSampler``, DeiT's ``RASampler``: each image 3 times
            per epoch, the epoch trimmed back to the dataset size), the original's default.
        aa, color_jitter, reprob, remode, recount, train_interpolation: timm training transform settings.
        input_size: image size.
        seed: seed of the gate samples (``seed + rank``) and the data order.
        workers: data-loading processes.
        amp: mixed precision (default: on CUDA).
    """

    model: str = "spvit_search_deit_small"
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    pretrained: bool = True
    pretrained_file: str | None = None
    target_flops: float | None = None
    target_latency: float | None = None
    latency_table: str | None = None
    loss_lambda: float | None = None
    theta: float | None = None
    arc_lr: float | None = None
    batch_size: int = 128
    lr: float = 5e-5
    min_lr: float = 1e-4
    arc_min_lr: float | None = None
    weight_decay: float = 0.05
    opt_eps: float = 1e-8
    epochs: int = 300
    stop_epoch: int = 20
    warmup_epochs: int = 0
    warmup_lr: float = 1e-6
    ffn_save_every: int = 10
    drop_path: float = 0.1
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    smoothing: float = 0.1
    repeated_aug: bool = True
    aa: str | None = "rand-m9-mstd0.5-inc1"
    color_jitter: float = 0.4
    reprob: float = 0.25
    remode: str = "pixel"
    recount: int = 1
    train_interpolation: str = "bicubic"
    input_size: int = 224
    seed: int = 0
    workers: int = 10
    amp: bool | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "epochs", "ffn_save_every", "input_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.stop_epoch < 0:
            raise ValueError(f"stop_epoch must be >= 0, got {self.stop_epoch}")
        if self.target_flops is not None and self.target_flops <= 0:
            raise ValueError(f"target_flops must be a positive number of GFLOPs, got {self.target_flops}")
        if self.target_latency is not None:
            if not self.target_latency > 0:
                raise ValueError(f"target_latency must be a positive number of milliseconds, got "
                                 f"{self.target_latency}")
            if self.latency_table is None:
                raise ValueError("target_latency needs latency_table (a table of this network measured on the "
                                 "target device: timm-nas latency build --model spvit_search_deit_...)")
            if self.target_flops is not None:
                raise ValueError(f"give target_flops ({self.target_flops}) or target_latency "
                                 f"({self.target_latency}), not both")
        if self.latency_table is not None:
            self.latency_table = str(self.latency_table)
        if self.loss_lambda is not None and self.loss_lambda < 0:
            raise ValueError(f"loss_lambda must be >= 0, got {self.loss_lambda}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolved_arc_lr(self) -> float:
        """``arc_lr``, or the released search's for the model's variant, or 5e-4."""
        if self.arc_lr is not None:
            return self.arc_lr
        from ..models.spvit import SEARCH_SETTINGS

        variant = self.model.rsplit("_", 1)[-1]
        return SEARCH_SETTINGS[variant]["arc_lr"] if self.model.startswith("spvit_search_deit_") and \
            variant in SEARCH_SETTINGS else DEFAULT_ARC_LR


@dataclasses.dataclass
class SPViTSearchResult:
    """What :func:`search` returns: the derived arch, the search network, the per-epoch log and the export."""

    arch: SPViTArch
    model: nn.Module
    history: list[dict[str, Any]]
    output_dir: Path
    export_path: Path | None = None
    export_status: str | None = None  # 'written' | 'replaced' | 'unchanged'


def _posterize(img: Any, bits_to_keep: int, **_: Any) -> Any:
    """timm's posterize with the behaviour of the Pillow the original ran on: keeping 0 bits gives a black image
    (Pillow 13 raises for 0 bits). timm's ``rand-m9-mstd0.5-inc1`` draws 0 bits when the noisy magnitude reaches
    10 (``PosterizeIncreasing``: ``4 - int(m / 10 * 4)``)."""
    from PIL import ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits_to_keep)


def keep_zero_bit_posterize(transform: Any) -> Any:
    """Give every posterize op of timm's auto-augment inside ``transform`` the 0-bit behaviour of
    :func:`_posterize` (on these op instances only: timm's module is left as it is)."""
    stack = [transform]
    while stack:
        t = stack.pop()
        if getattr(t, "name", "").startswith("Posterize") and hasattr(t, "aug_fn"):
            t.aug_fn = _posterize
        stack.extend(getattr(t, "transforms", None) or [])
        stack.extend(getattr(t, "ops", None) or [])
    return transform


def search_transforms(config: SPViTSearchConfig, is_training: bool) -> Any:
    """The original's (DeiT's) transforms: RandAugment, colour jitter and random erasing for training; resize to
    ``256/224`` of the crop (bicubic) and centre crop for evaluation."""
    from timm.data import create_transform

    if is_training:
        transform = create_transform(config.input_size, is_training=True, color_jitter=config.color_jitter,
                                     auto_augment=config.aa, interpolation=config.train_interpolation,
                                     re_prob=config.reprob, re_mode=config.remode, re_count=config.recount)
        return keep_zero_bit_posterize(transform)
    return create_transform(config.input_size, is_training=False, interpolation="bicubic", crop_pct=EVAL_CROP_PCT)


def weight_param_groups(model: nn.Module, weight_decay: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The original's ``add_weight_decay_2ops``: (weight groups: no decay for 1-D tensors, biases and
    ``no_weight_decay()``; decay otherwise) and (gate group: every ``*thresholds*`` parameter, no decay)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay, gates = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "thresholds" in name:
            gates.append(p)
        elif p.ndim == 1 or name.endswith(".bias") or name in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return ([{"params": no_decay, "weight_decay": 0.}, {"params": decay, "weight_decay": weight_decay}],
            [{"params": gates, "weight_decay": 0.}])


def _loader(dataset: Any, batch_size: int, *, train: bool, workers: int, seed: int, epoch: int, rank: int,
            world: int, drop_last: bool, repeated_aug: bool = False) -> torch.utils.data.DataLoader:
    """A loader whose batches depend only on (seed, epoch, rank): for training timm's ``RepeatAugSampler`` (DeiT's
    ``RASampler``, shuffled by epoch) or a ``DistributedSampler`` (as the original uses for every run, even on one
    process); sequential for evaluation. Every item's augmentation is seeded by its place in the epoch
    (:func:`timm_nas.search._rng.seeded_loader`), so the batches do not depend on ``workers``."""
    if train:
        if repeated_aug:
            from timm.data.distributed_sampler import RepeatAugSampler

            sampler: Any = RepeatAugSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                            num_repeats=REPEATED_AUG_REPEATS)
        else:
            sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                                          seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
    else:
        sampler = torch.utils.data.SequentialSampler(dataset)
    batches = torch.utils.data.BatchSampler(sampler, batch_size, drop_last)
    stream = 2 * (epoch * world + rank) + (0 if train else 1)
    return seeded_loader(dataset, batches, seed=seed, stream=stream, workers=workers,
                         pin_memory=torch.cuda.is_available())


@torch.no_grad()
def _evaluate(model: nn.Module, dataset: Any, batch_size: int, device: torch.device, workers: int,
              amp: bool) -> dict[str, float]:
    from ..training.evaluate import evaluate_batches

    model.eval()
    loader = _loader(dataset, batch_size, train=False, workers=workers, seed=0, epoch=0, rank=0, world=1,
                     drop_last=False)
    totals = evaluate_batches(model, loader, device, amp_dtype=torch.get_autocast_dtype(device.type) if amp else None)
    if totals.count == 0:
        return {"acc1": 0.0, "acc5": 0.0, "loss": 0.0}
    return {"acc1": totals.top1, "acc5": totals.top5, "loss": totals.loss}


def _arch_summary(model: Any, table: Any = None) -> dict[str, Any]:
    arch = model.derive_arch()
    with torch.no_grad():
        gflops = float(model.complexity()["flops"]) / 1e9
        latency = {} if table is None else {"latency_ms": float(model.latency(table))}
    return {"gflops": gflops, **latency, "ops": list(arch.ops), "ffn_hidden": list(arch.ffn_hidden)}


def _latency_table(cfg: SPViTSearchConfig, raw: Any) -> Any:
    """The search's latency table, checked against the network; a target below the cheapest arch's predicted
    latency is refused (no arch meets it)."""
    if cfg.latency_table is None:
        return None
    from ..cost.latency import LatencyTable

    table = LatencyTable.load(cfg.latency_table)
    table.check_model(raw, "this search")
    if cfg.target_latency is not None:
        floor = table.predict(raw.arch_space.smallest())
        if cfg.target_latency < floor:
            raise ValueError(f"target_latency {cfg.target_latency} ms is below the predicted latency of the "
                             f"cheapest arch ({floor:.3f} ms: every attention skipped, every FFN unit pruned) on "
                             f"{table.setting['device_name']}: no arch meets it")
    return table


@dataclasses.dataclass
class _State:
    """What an SPViT search step changes: the search network (and its DDP wrapper), both optimisers, their
    schedules, the AMP scaler and the log so far; :meth:`checkpoint` is the original's checkpoint layout."""

    raw: nn.Module
    model: nn.Module
    optimizer1: torch.optim.Optimizer
    optimizer2: torch.optim.Optimizer
    scheduler1: Any
    scheduler2: Any
    scaler: Any
    history: list[dict[str, Any]]
    latency_table: Any = None

    def checkpoint(self, cfg: SPViTSearchConfig) -> dict[str, Any]:
        return {"model": self.raw.state_dict(), "optimizer1": self.optimizer1.state_dict(),
                "lr_scheduler1": self.scheduler1.state_dict(), "optimizer2": self.optimizer2.state_dict(),
                "lr_scheduler2": self.scheduler2.state_dict(), "epoch": len(self.history) - 1,
                "scaler": self.scaler.state_dict(), "args": cfg.to_dict()}


def _build(cfg: SPViTSearchConfig, num_classes: int, device: torch.device, amp: bool, dist: Dist) -> _State:
    import timm
    from timm.scheduler import CosineLRScheduler

    model_kwargs: dict[str, Any] = dict(cfg.model_kwargs, num_classes=num_classes, drop_path_rate=cfg.drop_path,
                                        img_size=cfg.input_size, gate_seed=cfg.seed + dist.rank)
    for key in ("target_flops", "loss_lambda", "theta"):
        if getattr(cfg, key) is not None:
            model_kwargs[key] = getattr(cfg, key)
    overlay = dict(file=str(cfg.pretrained_file)) if cfg.pretrained_file else None
    with torch.random.fork_rng(devices=[]):  # the heads' initialisation: a function of the seed
        torch.manual_seed(cfg.seed)
        raw = timm.create_model(cfg.model, pretrained=cfg.pretrained, pretrained_cfg_overlay=overlay, **model_kwargs)
    if not hasattr(raw, "complexity_loss"):
        raise ValueError(f"{cfg.model} is not an SPViT search network; use spvit_search_deit[_tiny|_small|_base]")
    if (raw.target_flops is None and cfg.target_latency is None) or raw.loss_lambda is None:
        raise ValueError(f"{cfg.model} has no FLOPs target / loss weight: set target_flops and loss_lambda")
    table = _latency_table(cfg, raw)
    raw.to(device)
    model = raw
    if dist.world_size > 1:
        model = nn.parallel.DistributedDataParallel(raw, device_ids=[device.index] if device.type == "cuda" else None)
    lr = cfg.lr * cfg.batch_size * dist.world_size / SPVIT_LR_BATCH
    weight_groups, gate_groups = weight_param_groups(raw, cfg.weight_decay)
    optimizer1 = torch.optim.AdamW(weight_groups, lr=lr, eps=cfg.opt_eps, weight_decay=0.)
    optimizer2 = torch.optim.AdamW(gate_groups, lr=cfg.resolved_arc_lr(), eps=cfg.opt_eps, weight_decay=0.)
    scheduler1 = CosineLRScheduler(optimizer1, t_initial=cfg.epochs, lr_min=cfg.min_lr, warmup_t=cfg.warmup_epochs,
                                   warmup_lr_init=cfg.warmup_lr, t_in_epochs=True)
    # the original passes min_lr=arc_lr here, but its create_scheduler uses args.min_lr for every schedule
    arc_min_lr = cfg.min_lr if cfg.arc_min_lr is None else cfg.arc_min_lr
    scheduler2 = CosineLRScheduler(optimizer2, t_initial=cfg.epochs, lr_min=arc_min_lr, warmup_t=0,
                                   warmup_lr_init=cfg.warmup_lr, t_in_epochs=True)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    return _State(raw, model, optimizer1, optimizer2, scheduler1, scheduler2, scaler, [], table)


def _criterion(cfg: SPViTSearchConfig, num_classes: int) -> tuple[Any, nn.Module]:
    """The original's Mixup / CutMix and loss: soft-target cross-entropy with Mixup, else label smoothing."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                      switch_prob=cfg.mixup_switch_prob, mode=cfg.mixup_mode, label_smoothing=cfg.smoothing,
                      num_classes=num_classes)
        return mixup, SoftTargetCrossEntropy()
    if cfg.smoothing:
        return None, LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
    return None, nn.CrossEntropyLoss()


def _resume(state: _State, folder: RunFolder, records: list[dict[str, Any]], cfg: SPViTSearchConfig) -> None:
    """Load the folder's checkpoint into ``state`` and keep the log records it covers."""
    from .._checkpoint import load_checkpoint_file

    path = folder.path / CHECKPOINT_NAME
    if folder.overwrite or not path.is_file():
        return
    ckpt = load_checkpoint_file(path)
    saved = ckpt.get("args") or {}
    for key in ("model", "model_kwargs", "target_flops", "target_latency", "loss_lambda", "epochs", "seed",
                "batch_size"):
        if key in saved and saved[key] != getattr(cfg, key):
            raise ValueError(f"{path} was written with {key}={saved[key]!r}, not {getattr(cfg, key)!r}; "
                             "use another output folder or overwrite=True (--overwrite)")
    state.raw.load_state_dict(ckpt["model"], strict=True)
    state.optimizer1.load_state_dict(ckpt["optimizer1"])
    state.optimizer2.load_state_dict(ckpt["optimizer2"])
    state.scheduler1.load_state_dict(ckpt["lr_scheduler1"])
    state.scheduler2.load_state_dict(ckpt["lr_scheduler2"])
    if ckpt.get("scaler"):
        state.scaler.load_state_dict(ckpt["scaler"])
    done = int(ckpt["epoch"]) + 1
    state.history = folder.records_until(records, done)
    _logger.info("resuming %s from epoch %d", folder.path, done)


def search(
        train_dataset: Any,
        output_dir: str | os.PathLike,
        config: SPViTSearchConfig | None = None,
        *,
        val_dataset: Any | None = None,
        num_classes: int | None = None,
        resume: bool = True,
        device: str | torch.device = "cpu",
        progress: bool = True,
        export: Mapping[str, Any] | None = None,
        max_steps_per_epoch: int | None = None,
        replace_changed_export: bool = False,
) -> SPViTSearchResult:
    """Run the SPViT search (the original ``main_pruning.py`` search loop) and derive the pruned architecture.

    ``output_dir`` is a run folder (:mod:`timm_nas.search.log`; rank 0 writes): ``run.json``, ``log.jsonl`` (one
    line per epoch: losses, learning rates, GFLOPs against the target, ops, FFN widths, validation accuracy),
    ``last_checkpoint.pth`` after every epoch (the original's keys: ``model``, ``optimizer1``, ``lr_scheduler1``,
    ``optimizer2``, ``lr_scheduler2``, ``epoch``, ``scaler``, ``args`` as a plain dict),
    ``search_{epoch}epoch.pth`` every ``ffn_save_every`` epochs (the original's FFN mask file: the whole search
    state dict under ``model``), and at the end ``arch.json`` (our :class:`SPViTArch` dict, plus the original's
    ``assigned_indicators``), ``best.json`` and ``export/``. The same call again continues after the last finished
    epoch (the gate sampling continues too: its step is in the checkpoint) and ends where an uninterrupted run
    ends; on a finished run it changes nothing. The run is a function of ``config.seed`` for any number of data
    workers; another number of processes is another run (the learning rate scales with it, and each process
    samples its own gates), as in the original.

    Args:
        train_dataset: map-style dataset of ``(image, class)`` with its transform (see :func:`search_transforms`).
        output_dir: the run folder.
        config: settings (default: the original's for DeiT-S).
        val_dataset: optional evaluation dataset (accuracy of the search network after every epoch).
        num_classes: classes (default: read from ``train_dataset``).
        resume: continue the run in ``output_dir``; ``False`` discards it (its outputs only) and starts afresh.
        device: where to run.
        progress: show a progress bar with the loss and the current GFLOPs against the target (rank 0).
        export: when given, keyword arguments of :func:`export_pruned` (``skip_mode``, ``push_to``, ...;
            ``folder`` defaults to ``output_dir/export``) to export the derived pruned model at the end.
        max_steps_per_epoch: cap on training steps per epoch (smoke tests); ``None`` for full epochs.
        replace_changed_export: replace ``export/`` even when it holds files the search did not write.
    """
    cfg = config or SPViTSearchConfig()
    device = torch.device(device)
    dist = Dist.from_group()
    num_classes = dataset_num_classes(train_dataset) if num_classes is None else num_classes
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    amp = device.type == "cuda" if cfg.amp is None else cfg.amp
    identity = {"config": {k: v for k, v in cfg.to_dict().items() if k != "workers"}, "num_classes": num_classes,
                "train_size": len(train_dataset), "val_size": None if val_dataset is None else len(val_dataset),
                "max_steps_per_epoch": max_steps_per_epoch, "world_size": dist.world_size, "amp": amp}
    # stop_epoch may grow: the schedules span `epochs`, so the first epochs of a longer run are those of a shorter one
    folder = RunFolder(output_dir, identity, kind="spvit", log_name=LOG_NAME, overwrite=not resume, outputs=OUTPUTS,
                       legacy=(CHECKPOINT_NAME, LOG_NAME), extendable=("config.stop_epoch",),
                       replace_changed_export=replace_changed_export)
    records = dist.check(folder.check)
    state = _build(cfg, num_classes, device, amp, dist)
    mixup, criterion = _criterion(cfg, num_classes)
    dist.check(lambda: _resume(state, folder, records, cfg))
    if dist.is_main:
        folder.start(keep=len(state.history))
    if dist.world_size > 1:  # every rank continues from rank 0's checkpoint
        state.history = dist.broadcast(state.history)
        dist.broadcast_tensors(list(state.raw.parameters()) + list(state.raw.buffers()))
    for epoch in range(len(state.history), cfg.stop_epoch + 1):
        with seeded(cfg.seed, 2 * (epoch * dist.world_size + dist.rank)):  # Mixup, drop-path
            record = _epoch(state, epoch, train_dataset, cfg, mixup, criterion, device, amp, dist, progress,
                            max_steps_per_epoch)
        if dist.is_main:
            if val_dataset is not None:
                record.update({f"val_{k}": v for k, v in _evaluate(state.raw, val_dataset, int(1.5 * cfg.batch_size),
                                                                   device, cfg.workers, amp).items()})
            folder.append(record)  # log first: a kill before the checkpoint redoes the epoch, logged once
            state.history.append(record)
            folder.save_checkpoint(CHECKPOINT_NAME, state.checkpoint(cfg))
            if (epoch + 1) % cfg.ffn_save_every == 0 and epoch > 0:
                folder.save_checkpoint(f"search_{epoch}epoch.pth", {"model": state.raw.state_dict()})
            if cfg.target_latency is not None:
                _logger.info("epoch %d: loss %.4f, %.3f ms predicted (target %.3f), ops %s", epoch, record["loss"],
                             record["latency_ms"], cfg.target_latency, record["ops"])
            else:
                _logger.info("epoch %d: loss %.4f, %.3f GFLOPs (target %.3f), ops %s", epoch, record["loss"],
                             record["gflops"], record["target_gflops"], record["ops"])
        else:
            state.history.append(record)
        dist.barrier()

    raw = state.raw
    arch = raw.derive_arch()
    result = SPViTSearchResult(arch=arch, model=raw, history=state.history, output_dir=folder.path)
    if dist.is_main:
        _save_results(folder, state, arch, cfg, export, result)
    folder.close()
    raw.eval()
    return result


def _epoch(state: _State, epoch: int, dataset: Any, cfg: SPViTSearchConfig, mixup: Any, criterion: nn.Module,
           device: torch.device, amp: bool, dist: Dist, progress: bool, max_steps: int | None) -> dict[str, Any]:
    """One epoch of the original's ``train_one_epoch_pruning``; returns its log record (without validation)."""
    from tqdm.auto import tqdm

    raw, model = state.raw, state.model
    model.train()
    loader = _loader(dataset, cfg.batch_size, train=True, workers=cfg.workers, seed=cfg.seed, epoch=epoch,
                     rank=dist.rank, world=dist.world_size, drop_last=True, repeated_aug=cfg.repeated_aug)
    total = len(loader) if max_steps is None else min(len(loader), max_steps)
    if total == 0:
        raise ValueError(f"the training set gives no full batch of {cfg.batch_size}: lower batch_size")
    table, target_ms = state.latency_table, cfg.target_latency
    target = raw.target_flops
    bar = tqdm(loader, total=total, disable=not progress or not dist.is_main, desc=f"spvit epoch {epoch}",
               leave=False)
    sums = {"loss": 0.0, "loss_cls": 0.0, "loss_bop": 0.0}
    steps = 0
    for x, y in bar:
        if steps >= total:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if mixup is not None:
            x, y = mixup(x, y)
        with torch.autocast(device.type, enabled=amp):
            logits = model(x)
            loss_cls = criterion(logits, y)
            loss_bop = raw.complexity_loss() if target_ms is None else raw.latency_loss(table, target_ms)
            loss = loss_cls + loss_bop
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch} step {steps}; stopping")
        state.optimizer1.zero_grad()
        state.optimizer2.zero_grad()
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer1)
        state.scaler.step(state.optimizer2)
        state.scaler.update()
        steps += 1
        for k, v in (("loss", loss), ("loss_cls", loss_cls), ("loss_bop", loss_bop)):
            sums[k] += float(v.detach())
        with torch.no_grad():
            if target_ms is None:
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}",
                                gflops=f"{float(raw.complexity()['flops']) / 1e9:.3f}/{target:.3f}")
            else:
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", ms=f"{float(raw.latency(table)):.2f}/{target_ms}")
    bar.close()
    lrs = {"lr": state.optimizer1.param_groups[0]["lr"], "arc_lr": state.optimizer2.param_groups[0]["lr"]}
    state.scheduler1.step(epoch)  # the original steps with the finished epoch's index (the lr lags one epoch)
    state.scheduler2.step(epoch)
    targets = {"target_gflops": target} if target_ms is None else {"target_latency_ms": target_ms}
    return {"epoch": epoch, **{k: v / steps for k, v in sums.items()}, **lrs, **targets,
            **_arch_summary(raw, table), "gate_step": raw.step}


def _save_results(folder: RunFolder, state: _State, arch: SPViTArch, cfg: SPViTSearchConfig,
                  export: Mapping[str, Any] | None, result: SPViTSearchResult) -> None:
    """``arch.json``, ``best.json`` and the export (rank 0); unchanged files are left alone."""
    raw, history, table = state.raw, state.history, state.latency_table
    summary = _arch_summary(raw, table)
    folder.write_json(ARCH_NAME, {"arch": arch.to_dict(), "assigned_indicators": arch.indicators(),
                                  "gflops": summary["gflops"], "model": cfg.model})
    last = history[-1] if history else {}
    target = {"target_gflops": raw.target_flops} if cfg.target_latency is None else \
        {"target_latency_ms": cfg.target_latency}
    latency = {} if table is None else {"latency_ms": summary["latency_ms"],
                                        "latency_device": table.setting["device_name"]}
    folder.write_json("best.json", {"arch": arch.to_dict(), "gflops": summary["gflops"], **target, **latency,
                                    "epochs": len(history),
                                    **{k: last[k] for k in ("val_acc1", "val_acc5", "val_loss") if k in last}})
    if export is None:
        return
    metrics = {k[4:]: last[k] for k in ("val_acc1", "val_acc5") if k in last}
    options = dict(export, arch=arch, provenance=_provenance(cfg, raw, history, latency), metrics=metrics or None)
    result.export_path, result.export_status = folder.export_with(options,
                                                                  lambda f, **kw: export_pruned(raw, f, **kw))


def _provenance(cfg: SPViTSearchConfig, model: Any, history: list[dict[str, Any]],
                latency: Mapping[str, Any] | None = None) -> dict[str, Any]:
    last = history[-1] if history else {}
    target = {"target_gflops": model.target_flops} if cfg.target_latency is None else \
        {"target_latency_ms": cfg.target_latency}
    return {
        "method": "spvit",
        "space": f"SPViT gates of {cfg.model} (per layer: msa / bconv3x3 / bconv1x1 / skip; per FFN hidden unit)",
        "constraints": {**target, "loss_lambda": model.loss_lambda},
        **(latency or {}),
        "seed": cfg.seed,
        "score": last.get("val_acc1"),
        "score_name": "top-1 of the search network (= the exported pruned model, before fine-tuning), last epoch",
        "gflops": last.get("gflops"),
        "epochs_run": len(history),
        "search_config": cfg.to_dict(),
        "weights": "search-network weights (kernels materialised from the searched head assignment); the original "
                   "fine-tunes the pruned model afterwards",
    }


def export_pruned(
        model: Any,
        folder: str | os.PathLike,
        *,
        arch: SPViTArch | Mapping[str, Any] | None = None,
        skip_mode: str = "zero",
        provenance: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        datasets: Iterable[str] | None = None,
        overwrite: bool = False,
        push_to: str | None = None,
        private: bool = False,
        token: str | None = None,
        onnx: bool = False,
) -> Path:
    """Export the pruned model of a search network (:meth:`SPViTSearchDeiT.extract`) with
    :func:`timm_nas.hub.export`; optionally push it with :func:`timm_nas.hub.push`.

    Args:
        model: the search network.
        folder: destination folder.
        arch: the architecture (default: the one the gates choose).
        skip_mode: ``'zero'`` (reproduces the search network) or ``'original'`` (the released models' skip).
        provenance: the search's provenance for the model card (method, constraints, seed, score, ...).
        metrics: metric name -> value of the exported weights (with an optional ``dataset``).
        datasets: dataset names for the card.
        overwrite: replace a previous export in ``folder``.
        push_to: a Hub repo id to push to.
        private, token: passed to :func:`timm_nas.hub.push`.
        onnx: also write ``model.onnx`` (:func:`timm_nas.deploy.export_onnx`).
    """
    from .. import hub

    pruned = model.extract(arch, skip_mode=skip_mode)
    pruned.eval()
    derived = SPViTArch.from_dict(pruned.arch)
    card: dict[str, Any] = {"provenance": dict(provenance or {}, ops=list(derived.ops),
                                                ffn_hidden=list(derived.ffn_hidden), skip_mode=skip_mode)}
    if metrics:
        card["metrics"] = dict(metrics)
        if "dataset" not in card["metrics"] and not datasets:
            card["metrics"]["dataset"] = "search validation split"
    if datasets:
        card["datasets"] = list(datasets)
    path = Path(hub.export(pruned, folder, card=card, overwrite=overwrite, onnx=onnx))
    if push_to:
        hub.push(path, push_to, private=private, token=token)
    return path
