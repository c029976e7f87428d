"""`timm-nas` sub-commands around timm's own training scripts: ``run-script``, ``validate`` and ``eval-subnet``.

Supernets train with timm's train.py unchanged (``python train.py --device-modules timm_nas --model
autoformer_supernet_tiny ...``; see docs/training.md). timm's other scripts have no ``--device-modules``, so::

    timm-nas validate ~/pytorch-image-models --model autoformer_supernet_tiny --checkpoint last.pth.tar ...
    timm-nas run-script ~/pytorch-image-models/benchmark.py --model autoformer_supernet_tiny ...

run them with our models registered (:mod:`timm_nas.launch`), and::

    timm-nas eval-subnet --checkpoint last.pth.tar --subnet autoformer_tiny --data-dir /data/imagenet

evaluates any subnet with the supernet's inherited weights on an image folder through timm's data pipeline.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._argtypes import add_renamed, count, device_arg, kv_pairs, model_args

__all__ = ["register"]


def _run_script(args: argparse.Namespace) -> int:
    from ..launch import run_script

    return run_script(args.script, args.script_args)


def _validate(args: argparse.Namespace) -> int:
    from ..launch import run_script

    return run_script(args.timm, args.script_args, default_name="validate.py")


def _is_name(text: str) -> bool:
    """A registry name rather than inline JSON or a file."""
    return not text.strip().startswith("{") and Path(text).suffix.lower() not in (".json", ".yaml", ".yml")


def _eval_subnet(args: argparse.Namespace) -> int:
    import torch
    from timm.data import resolve_data_config

    from ..training import (
        create_eval_loader,
        create_model_from_checkpoint,
        evaluate_subnet,
        parse_subnet,
        read_train_checkpoint,
        subnet_config,
    )

    # cheap checks first: nothing is loaded before the command line is known to be usable
    early = [None if _is_name(text) else parse_subnet(text) for text in args.subnet]
    data_dir = Path(args.data_dir).expanduser()
    if not args.dataset and not data_dir.exists():
        raise FileNotFoundError(f"--data-dir {data_dir} does not exist")
    if args.amp and args.amp_dtype not in ("bfloat16", "float16"):
        raise ValueError(f"--amp-dtype must be bfloat16 or float16, got {args.amp_dtype!r}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.results_file:
        out = Path(args.results_file).expanduser()
        if out.exists() and (out.suffix.lower() not in (".json", ".jsonl") or out.resolve() ==
                             Path(args.checkpoint).expanduser().resolve()):
            raise FileExistsError(f"--results-file {out} exists and is not a .json file; refusing to overwrite it "
                                  "(give a new .json path)")

    ckpt = read_train_checkpoint(args.checkpoint, use_ema=args.use_ema)
    overrides: dict[str, Any] = model_args(args.model_args)
    if args.num_classes is not None:
        overrides["num_classes"] = args.num_classes
    model, ckpt = create_model_from_checkpoint(ckpt, model=args.model, model_kwargs=overrides)
    family = getattr(getattr(getattr(model, "space", None), "config_cls", None), "family", None)
    configs = [subnet_config(model, e if e is not None else parse_subnet(text, family))
               for e, text in zip(early, args.subnet)]
    model.to(device)

    data_args = dict(ckpt.data_args)
    kwargs = dict(ckpt.create_kwargs, **overrides)
    if "img_size" not in data_args and "input_size" not in data_args and isinstance(kwargs.get("img_size"), int):
        data_args["img_size"] = kwargs["img_size"]  # the supernet's fixed input size
    for key in ("img_size", "crop_pct", "interpolation"):
        if getattr(args, key) is not None:
            data_args[key] = getattr(args, key)
    data_config = resolve_data_config(data_args, model=model)
    loader = create_eval_loader(data_dir, data_config, split=args.split, batch_size=args.batch_size,
                                workers=args.workers, device=device, class_map=args.class_map, dataset=args.dataset)
    amp_dtype = getattr(torch, args.amp_dtype) if args.amp else None
    results = []
    for cfg in configs:
        result = dict(checkpoint=str(ckpt.path), model=args.model or ckpt.model, ema=ckpt.ema,
                      **evaluate_subnet(model, cfg, loader, device=device, amp_dtype=amp_dtype))
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.results_file:
        Path(args.results_file).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def register(sub: argparse._SubParsersAction, search: argparse._SubParsersAction) -> None:
    """Add ``run-script``, ``validate`` and ``eval-subnet`` to the top-level sub-commands."""
    p = sub.add_parser(
        "run-script", help="run one of timm's scripts (validate.py, inference.py, benchmark.py, train.py) with "
                           "timm-nas models registered",
        description="Import timm_nas, then run SCRIPT as __main__ with ARGS (like `python SCRIPT ARGS`). timm's "
                    "scripts are not in the timm wheel: use a checkout of pytorch-image-models at your timm "
                    "version's tag. train.py can also import the plugin itself: --device-modules timm_nas.")
    p.add_argument("script", help="path of the timm script")
    p.add_argument("script_args", nargs=argparse.REMAINDER, metavar="ARGS", help="the script's own arguments")
    p.set_defaults(func=_run_script)

    p = sub.add_parser(
        "validate", help="timm's validate.py with timm-nas models registered",
        description="Run timm's validate.py (which has no --device-modules) with timm-nas models registered, e.g. "
                    "`timm-nas validate ~/pytorch-image-models --model autoformer_supernet_tiny --checkpoint "
                    "last.pth.tar --data-dir /data/imagenet`.")
    p.add_argument("timm", help="path of validate.py, or of a pytorch-image-models checkout holding it")
    p.add_argument("script_args", nargs=argparse.REMAINDER, metavar="ARGS", help="validate.py's own arguments")
    p.set_defaults(func=_validate)

    p = sub.add_parser(
        "eval-subnet", help="evaluate subnets with a supernet checkpoint's inherited weights on an image folder",
        description="Rebuild the supernet a checkpoint belongs to (train.py records the model and its --model-kwargs), "
                    "check that each subnet fits its weights, and report top-1 / top-5 / loss on an image folder "
                    "through timm's eval transforms. One JSON line per subnet on stdout.")
    p.add_argument("--checkpoint", required=True,
                   help="a train.py checkpoint (last.pth.tar, model_best.pth.tar, ...), an authors' release .pth, "
                        "a bare state dict or .safetensors")
    p.add_argument("--subnet", required=True, action="append",
                   help="the subnet: a JSON object, a .json/.yaml file (ours or the original's format, e.g. "
                        "AutoFormer-T.yaml) or a registry name such as autoformer_tiny; repeat to evaluate several")
    p.add_argument("--data-dir", required=True, help="image folder: class sub-folders, or a split folder holding them")
    p.add_argument("--split", default="validation", help="split folder inside --data-dir (default: validation)")
    p.add_argument("--dataset", default="", help="timm dataset name (default: an image folder)")
    p.add_argument("--class-map", default="", help="class-map file, as in timm's scripts")
    p.add_argument("--model", help="timm model name (default: the one the checkpoint records)")
    add_renamed(p, "--model-args", "--model-kwargs", default=None, old_kwargs=dict(nargs="*", parse=kv_pairs),
                help="create_model arguments overriding the recorded ones, as a JSON object or .json file, e.g. "
                     "'{\"space\": \"tiny\", \"img_size\": 224}' (the deprecated --model-kwargs took train.py's k=v "
                     "words)")
    p.add_argument("--num-classes", type=count, help="classifier size (default: recorded; 0: no classifier)")
    p.add_argument("--img-size", type=int, help="input image size (default: recorded, else the model's)")
    p.add_argument("--crop-pct", type=float, help="center-crop fraction (default: the model's)")
    p.add_argument("--interpolation", help="resize interpolation (default: the model's)")
    p.add_argument("--use-ema", action="store_true", help="evaluate the EMA weights (train.py --model-ema)")
    p.add_argument("-b", "--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("-j", "--workers", type=int, default=2, help="data loader workers (default 2)")
    p.add_argument("--device", type=device_arg, help="device (default: cuda if available, else cpu)")
    p.add_argument("--amp", action="store_true", help="autocast (bfloat16 by default)")
    p.add_argument("--amp-dtype", default="bfloat16", help="autocast dtype: bfloat16 or float16")
    p.add_argument("--results-file", help="also write the results as a JSON list to this .json file")
    p.set_defaults(func=_eval_subnet)
