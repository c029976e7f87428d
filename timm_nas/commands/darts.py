"""`timm-nas` sub-commands of DARTS: ``timm-nas search darts`` (the bilevel search) and ``timm-nas train-darts``
(training a genotype network from scratch with the original recipe)."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ._argtypes import add_renamed, add_run_folder_options, device_arg, positive_int


def register(sub: argparse._SubParsersAction, search: argparse._SubParsersAction) -> None:
    """Add ``search darts`` and ``train-darts``."""
    p = search.add_parser(
        "darts", help="DARTS: differentiable search of a normal and a reduction cell",
        description="Run the DARTS search (quark0/darts train_search.py; defaults are the original's), log the "
                    "genotype every epoch, checkpoint and resume, and export the derived genotype network as a Hub "
                    "folder. Runs data-parallel under torchrun (alphas stay identical on all ranks). The same "
                    "command and --seed give the same run with any --workers; another number of torchrun processes "
                    "is another run (per-process batches and BatchNorm statistics, as in the original). Some CUDA "
                    "kernels are not deterministic: on GPUs runs agree up to float rounding.",
        epilog="""Example (CIFAR-10 as torchvision stores it under --data-dir; the original's settings):
  timm-nas search darts --data-dir /path/to/cifar10 --out runs/darts""",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="dataset root (an image folder, or a timm dataset root)")
    p.add_argument("--dataset", default="torch/cifar10",
                   help="timm dataset name, e.g. torch/cifar10 (default); '' for an image folder")
    p.add_argument("--train-split", default="train", help="split searched on (half trains the weights, half the "
                                                          "alphas)")
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset")
    add_renamed(p, "--out", "--output", required=True,
                help="run folder (search_log.jsonl, checkpoint.pth, genotype.json)")
    p.add_argument("--space", choices=("darts", "nb201"), default="darts",
                   help="cell space: DARTS's (darts_search; default) or NAS-Bench-201's (nb201_search, the "
                        "benchmark's DARTS baseline; the export is nb201_cifar of the searched cell)")
    p.add_argument("--cells-per-stage", type=positive_int, default=None, help="NAS-Bench-201 cells per stage (5)")
    p.add_argument("--order", type=int, choices=(1, 2), default=None, help="1: first order (default), 2: second")
    p.add_argument("--unrolled", action="store_true", help="same as --order 2 (the original's flag)")
    for flag, kind, what in (
            ("--epochs", int, "50"), ("--batch-size", int, "64"), ("--lr", float, "0.025"), ("--lr-min", float, "0.001"),
            ("--momentum", float, "0.9"), ("--weight-decay", float, "3e-4"), ("--grad-clip", float, "5"),
            ("--arch-lr", float, "3e-4"), ("--arch-weight-decay", float, "1e-3"), ("--train-portion", float, "0.5"),
            ("--init-channels", int, "16"), ("--layers", int, "8"), ("--seed", int, "2"), ("--img-size", int, "32"),
            ("--workers", int, "2")):
        p.add_argument(flag, type=kind, default=None, help=f"default {what}")
    p.add_argument("--device", type=device_arg, default=None,
                   help="default: cuda when available (LOCAL_RANK under torchrun)")
    add_run_folder_options(p)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-export", action="store_true", help="do not export the genotype network")
    p.add_argument("--export-model", choices=("darts_cifar", "darts_imagenet"), default="darts_cifar",
                   help="network built from the genotype for the export (default darts_cifar: C=36, 20 cells)")
    p.add_argument("--export-num-classes", type=positive_int, default=None, help="classes of the exported network "
                                                                         "(default: the searched dataset's)")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="push the export to this Hub repo")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=_run_search)

    t = sub.add_parser(
        "train-darts", help="train a DARTS genotype network from scratch (the original evaluation recipe)",
        description="Train darts_cifar / darts_imagenet from a genotype with the original recipe (CIFAR: 600 "
                    "epochs, batch 96, cosine SGD 0.025, auxiliary 0.4, drop path 0.2 ramp, cutout 16; ImageNet: "
                    "250 epochs, batch 128, SGD 0.1 x0.97/epoch, label smoothing 0.1, auxiliary 0.4), built from "
                    "timm's optimizer, scheduler, EMA and checkpoint saver. For plain timm training use "
                    "train.py --device-modules timm_nas --model darts_cifar --model-kwargs genotype=...")
    t.add_argument("--genotype", default="darts_v2",
                   help="registry name (darts_v2, pc_darts, ...), genotype JSON / original text, or a file holding "
                        "either (e.g. a search's genotype.json)")
    t.add_argument("--recipe", choices=("cifar", "imagenet"), default="cifar")
    t.add_argument("--data-dir", required=True)
    t.add_argument("--dataset", default=None, help="timm dataset name (default: torch/cifar10 for the cifar recipe, "
                                                   "an image folder for imagenet); '' for an image folder")
    t.add_argument("--train-split", default="train")
    t.add_argument("--val-split", default="validation")
    t.add_argument("--download", action="store_true")
    add_renamed(t, "--out", "--output", required=True,
                help="run folder (last.pth.tar, model_best.pth.tar, history.jsonl)")
    for flag, kind in (("--epochs", int), ("--batch-size", int), ("--lr", float), ("--weight-decay", float),
                       ("--C", int), ("--layers", int), ("--auxiliary-weight", float), ("--drop-path", float),
                       ("--cutout", int), ("--ema-decay", float), ("--img-size", int), ("--seed", int),
                       ("--workers", int)):
        t.add_argument(flag, type=kind, default=None, help="default: the recipe's")
    t.add_argument("--device", type=device_arg, default=None,
                   help="default: cuda when available")
    t.add_argument("--no-resume", action="store_true")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_run_train)


def _device(arg: str | None) -> str:
    import torch

    if arg:
        return arg
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"


def _run_search(args: argparse.Namespace) -> int:
    from ..cli import UsageError
    from ..search.darts import DartsSearchConfig, search, search_transforms
    from ..training.data import dataset_num_classes, open_dataset

    names = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "lr_min": "lr_min", "momentum": "momentum",
             "weight_decay": "weight_decay", "grad_clip": "grad_clip", "arch_lr": "arch_lr",
             "arch_weight_decay": "arch_weight_decay", "train_portion": "train_portion", "init_channels": "C",
             "layers": "layers", "seed": "seed", "img_size": "img_size", "workers": "workers",
             "cells_per_stage": "cells_per_stage"}
    overrides: dict[str, Any] = {dst: getattr(args, src) for src, dst in names.items() if getattr(args, src) is not None}
    overrides["space"] = args.space
    if args.space == "darts" and args.cells_per_stage is not None:
        raise UsageError("--cells-per-stage is a NAS-Bench-201 setting: use it with --space nb201")
    if args.unrolled and args.order == 1:
        raise UsageError("--unrolled means --order 2; do not combine it with --order 1")
    overrides["order"] = 2 if args.unrolled else (args.order or 1)
    cfg = DartsSearchConfig(**overrides)
    device = _device(args.device)
    from ..search.distributed import Dist

    Dist.from_env("nccl" if str(device).startswith("cuda") else "gloo")  # joins torchrun's group, if any
    dataset = open_dataset(args.dataset, args.data_dir, args.train_split, is_training=True, download=args.download)
    dataset.transform = search_transforms(cfg.img_size)
    export = None
    if not args.no_export:
        num_classes = args.export_num_classes or dataset_num_classes(dataset)
        export = dict(model_name=args.export_model, model_kwargs={"num_classes": num_classes}, onnx=args.onnx,
                      push_to=args.push_to_hub, private=args.private)
    result = search(dataset, args.out, cfg, resume=not args.overwrite, device=device,
                    progress=not args.no_progress, export=export, replace_changed_export=args.overwrite_export)
    print(json.dumps({"genotype": result.genotype.to_dict(), "genotype_text": result.genotype.to_text(),
                      "valid_acc": result.history[-1]["valid_acc"] if result.history else None,
                      "export": str(result.export_dir) if result.export_dir else None}, indent=1))
    return 0


def _read_genotype(value: str) -> Any:
    from ..spaces.darts import Genotype

    path = Path(value)
    if path.is_file():
        value = path.read_text(encoding="utf-8").strip()
    return Genotype.resolve(value)


def _run_train(args: argparse.Namespace) -> int:
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
    from torchvision import transforms

    from ..models.darts import CIFAR_MEAN, CIFAR_STD
    from ..search.darts import search_transforms
    from ..training.darts import Cutout, DartsTrainConfig, train_genotype_network
    from ..training.data import open_dataset

    names = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay", "C": "C",
             "layers": "layers", "auxiliary_weight": "auxiliary_weight", "drop_path": "drop_path_prob",
             "cutout": "cutout", "ema_decay": "ema_decay", "img_size": "img_size", "seed": "seed",
             "workers": "workers"}
    overrides: dict[str, Any] = {dst: getattr(args, src) for src, dst in names.items() if getattr(args, src) is not None}
    overrides["genotype"] = _read_genotype(args.genotype)
    cfg = DartsTrainConfig.imagenet(**overrides) if args.recipe == "imagenet" else DartsTrainConfig(**overrides)
    dataset = args.dataset if args.dataset is not None else ("torch/cifar10" if args.recipe == "cifar" else "")
    train = open_dataset(dataset, args.data_dir, args.train_split, is_training=True, download=args.download)
    val = open_dataset(dataset, args.data_dir, args.val_split, download=args.download)
    if args.recipe == "cifar":
        train_tf = [search_transforms(cfg.img_size)] + ([Cutout(cfg.cutout)] if cfg.cutout > 0 else [])
        train.transform = transforms.Compose(train_tf)
        val.transform = transforms.Compose([transforms.Resize(cfg.img_size), transforms.CenterCrop(cfg.img_size),
                                            transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    else:
        # The original: RandomResizedCrop + flip + ColorJitter(0.4, 0.4, 0.4, 0.2); eval Resize(256) CenterCrop(224).
        train.transform = create_transform(cfg.img_size, is_training=True, color_jitter=(0.4, 0.4, 0.4, 0.2),
                                           interpolation="bilinear", mean=IMAGENET_DEFAULT_MEAN,
                                           std=IMAGENET_DEFAULT_STD)
        val.transform = create_transform(cfg.img_size, is_training=False, crop_pct=0.875, interpolation="bilinear",
                                         mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
    result = train_genotype_network(train, val, args.out, cfg, device=_device(args.device),
                                    resume=not args.no_resume, progress=not args.no_progress)
    print(json.dumps({"best_top1": result["best_top1"], "epochs": len(result["history"]),
                      "checkpoint": str(Path(args.out) / "model_best.pth.tar")}, indent=1))
    return 0
