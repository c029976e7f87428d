"""`timm-nas` sub-commands of SPViT: ``timm-nas search spvit`` (the gate search) and ``timm-nas spvit-arch``
(read an architecture from the original's files)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._argtypes import add_renamed, add_run_folder_options, device_arg, model_args

def register(sub: argparse._SubParsersAction, search: argparse._SubParsersAction) -> None:
    """Add ``search spvit`` and ``spvit-arch``."""
    p = search.add_parser(
        "spvit", help="SPViT: prune a pretrained DeiT's attention into convolutions against a FLOPs target",
        description="Train SPViT gates on a pretrained DeiT (the original's search recipe), derive the pruned "
                    "architecture and export the pruned model as a Hub folder. Defaults are the original's. The "
                    "same command and --seed give the same run with any --workers; another number of torchrun "
                    "processes is another run (the learning rate scales with it and each process samples its own "
                    "gates, as in the original). Some CUDA kernels are not deterministic: on GPUs runs agree up to "
                    "float rounding.",
        epilog="""Example (DeiT-S weights from a local file, so nothing is downloaded):
  timm-nas search spvit --data-dir /path/to/imagenet --model spvit_search_deit_small \\
      --pretrained-file /path/to/deit_small_patch16_224.pth --out runs/spvit-small""",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="dataset root (an ImageNet-style folder, or a timm dataset root)")
    p.add_argument("--dataset", default="", help="timm dataset name (default: image folder)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="validation", help="evaluation split ('' to skip evaluation)")
    add_renamed(p, "--out", "--output", required=True, help="run folder (checkpoints, log, arch.json, export/)")
    p.add_argument("--model", default="spvit_search_deit_small",
                   help="spvit_search_deit_tiny / _small / _base (released search settings) or spvit_search_deit")
    add_renamed(p, "--model-args", "--model-kwargs", default=None,
                help='further model arguments as a JSON object or .json file, e.g. \'{"embed_dim": 48, "depth": 2}\'')
    p.add_argument("--no-pretrained", action="store_true", help="start from random weights (for testing)")
    p.add_argument("--pretrained-file", default=None, help="local DeiT checkpoint to start from")
    p.add_argument("--target-flops", type=float, default=None, help="FLOPs target in GFLOPs (default: the model's)")
    p.add_argument("--target-latency", type=float, default=None, metavar="MS",
                   help="latency target in milliseconds on the device --latency-table was measured on, in place of "
                        "the FLOPs target")
    p.add_argument("--latency-table", default=None,
                   help="latency table of the search network (timm-nas latency build --model spvit_search_deit_*); "
                        "the log and best.json then record the predicted latency")
    p.add_argument("--loss-lambda", type=float, default=None, help="complexity-loss weight (default: the model's)")
    p.add_argument("--theta", type=float, default=None, help="initial gate threshold (default 1.5)")
    p.add_argument("--arc-lr", type=float, default=None, help="gate learning rate (default: the released search's)")
    p.add_argument("--batch-size", type=int, default=None, help="per-process batch size (default 128)")
    p.add_argument("--lr", type=float, default=None, help="base weight lr, scaled by batch*world/512 (default 5e-5)")
    p.add_argument("--min-lr", type=float, default=None, help="cosine floor (default 1e-4)")
    p.add_argument("--epochs", type=int, default=None, help="schedule length (default 300)")
    p.add_argument("--stop-epoch", type=int, default=None, help="last epoch index to run (default 20)")
    p.add_argument("--input-size", type=int, default=None, help="image size (default 224)")
    p.add_argument("--mixup", type=float, default=None)
    p.add_argument("--cutmix", type=float, default=None)
    p.add_argument("--drop-path", type=float, default=None)
    p.add_argument("--no-repeated-aug", action="store_true", help="plain shuffling instead of repeated augmentation")
    p.add_argument("--aa", default=None, metavar="POLICY",
                   help="auto-augment policy as timm's train.py takes it (default: the original's "
                        "rand-m9-mstd0.5-inc1, whose 0-bit posterize draws give a black image as older Pillow "
                        "did); 'none' turns it off")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", type=device_arg, default=None,
                   help="default: cuda when available (LOCAL_RANK under torchrun)")
    add_run_folder_options(p)
    p.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap steps per epoch (smoke tests)")
    p.add_argument("--no-export", action="store_true", help="do not export the pruned model")
    p.add_argument("--export-skip-mode", choices=("zero", "original"), default="zero",
                   help="skip layers of the exported model: 'zero' reproduces the search network (default)")
    add_renamed(p, "--push-to-hub", "--push-to", default=None, metavar="REPO_ID",
                help="push the export to this Hub repo")
    p.add_argument("--private", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_search)

    a = sub.add_parser(
        "spvit-arch", help="read an SPViT architecture from the original's files and print it as JSON",
        description="Print the SPViTArch dict of an original fine-tune config (*_ft.json / *_ft.yaml) with its FFN "
                    "mask file (ffn_indicators/*.pth), or of an original search checkpoint.")
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="original fine-tune config (assigned_indicators); needs --masks")
    src.add_argument("--search-checkpoint", help="original search checkpoint (gates decide ops and FFN units)")
    a.add_argument("--masks", help="original FFN mask file (ffn_indicators/*.pth)")
    a.add_argument("--out", help="write the JSON here instead of printing it")
    a.set_defaults(func=_run_arch)


def _run_search(args: argparse.Namespace) -> int:
    import os

    import torch
    from ..cli import UsageError
    from ..search.spvit import SPViTSearchConfig, search, search_transforms
    from ..training.data import open_dataset

    overrides = {k: getattr(args, k) for k in (
        "model", "target_flops", "target_latency", "latency_table", "loss_lambda", "theta", "arc_lr", "batch_size", "lr", "min_lr", "epochs",
        "stop_epoch", "input_size", "mixup", "cutmix", "drop_path", "seed", "workers") if getattr(args, k) is not None}
    overrides["pretrained"] = not args.no_pretrained
    overrides["repeated_aug"] = not args.no_repeated_aug
    extra = model_args(args.model_args)
    if extra:
        overrides["model_kwargs"] = extra
    overrides["pretrained_file"] = args.pretrained_file
    if args.aa is not None:
        overrides["aa"] = None if args.aa.lower() in ("", "none") else args.aa
    cfg = SPViTSearchConfig(**overrides)
    device = args.device
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    from ..search.distributed import Dist

    Dist.from_env("nccl" if str(device).startswith("cuda") else "gloo")  # joins torchrun's group, if any
    try:
        transform = search_transforms(cfg, is_training=True)
    except (AssertionError, ValueError, KeyError) as e:  # timm asserts on an unknown policy
        raise UsageError(f"--aa {args.aa!r} is not an auto-augment policy timm knows ({e}); e.g. "
                         "rand-m9-mstd0.5-inc1, augmix-m5, v0, originalr, or 'none'") from e
    train = open_dataset(args.dataset, args.data_dir, args.train_split, is_training=True)
    train.transform = transform
    val = None
    if args.val_split:
        val = open_dataset(args.dataset, args.data_dir, args.val_split)
        val.transform = search_transforms(cfg, is_training=False)
    export = None if args.no_export else dict(skip_mode=args.export_skip_mode, onnx=args.onnx,
                                               push_to=args.push_to_hub, private=args.private)
    result = search(train, args.out, cfg, val_dataset=val, resume=not args.overwrite, device=device,
                    progress=not args.no_progress, export=export, max_steps_per_epoch=args.max_steps_per_epoch,
                    replace_changed_export=args.overwrite_export)
    summary = {"arch_file": str(Path(args.out) / "arch.json"), "ops": list(result.arch.ops),
               "ffn_hidden": list(result.arch.ffn_hidden),
               "gflops": result.history[-1]["gflops"] if result.history else None,
               **({"latency_ms": result.history[-1]["latency_ms"]}
                  if result.history and "latency_ms" in result.history[-1] else {}),
               "export": str(result.export_path) if result.export_path else None}
    print(json.dumps(summary, indent=1))
    return 0


def _run_arch(args: argparse.Namespace) -> int:
    from ..cli import UsageError
    from ..spaces.spvit import SPViTArch

    if args.config:
        if not args.masks:
            raise UsageError("--config needs --masks (the original FFN mask file, ffn_indicators/*.pth)")
        arch = SPViTArch.from_original_files(args.config, args.masks)
    else:
        from .._checkpoint import load_checkpoint_file
        from ..models.spvit import derive_arch_from_state_dict

        arch = derive_arch_from_state_dict(load_checkpoint_file(args.search_checkpoint))
    text = json.dumps(arch.to_dict())
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.out}: ops {list(arch.ops)}, FFN widths {list(arch.ffn_hidden)}", file=sys.stderr)
    else:
        print(text)
    return 0
