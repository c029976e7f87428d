"""`timm-nas` sub-commands for the Hub: ``export``, ``push`` and ``convert`` (see :mod:`timm_nas.hub`).

Examples::

    timm-nas export autoformer_subnet --model-args '{"subnet": {...}}' --checkpoint best.pth --out exports/af
    timm-nas push exports/af my-org/autoformer-searched
    timm-nas convert autoformer --checkpoint supernet-tiny.pth --out exports/supernet-tiny
"""
from __future__ import annotations

import argparse
import sys

from ._argtypes import create_model_checked, json_object, model_args

__all__ = ["register"]


def _export(args: argparse.Namespace) -> int:
    from .. import hub
    from .._checkpoint import load_checkpoint_file, unwrap_state_dict

    margs = model_args(args.model_args)
    card = json_object(args.card, "--card")
    if ":" not in args.model:
        create_model_checked(args.model, device="meta", **margs)  # an unknown name fails first
    if sum(map(bool, (args.pretrained, args.checkpoint, args.random_weights))) > 1:
        raise ValueError("give one of --pretrained, --checkpoint and --random-weights")
    if not (args.pretrained or args.checkpoint or args.random_weights):
        raise ValueError(f"{args.model} would be exported with randomly initialised weights: give --pretrained "
                         "(its released or folder weights), --checkpoint FILE, or --random-weights to export an "
                         "untrained model on purpose")
    model = create_model_checked(args.model, pretrained=args.pretrained, **margs)
    if args.checkpoint:
        state = unwrap_state_dict(load_checkpoint_file(args.checkpoint))
        diff = hub.state_dict_mismatch(model.state_dict(), state)
        if diff:
            raise ValueError(f"{args.checkpoint} does not fit {args.model}: {diff}")
        model.load_state_dict(state, strict=True)
    if args.random_weights:
        note = "The weights are a random initialisation (exported with --random-weights): train the model before use."
        card = dict(card, notes=f"{card['notes']} {note}" if card.get("notes") else note)
    folder = hub.export(model.eval(), args.out, card=card or None, overwrite=args.overwrite, onnx=args.onnx)
    if args.random_weights:
        print(f"warning: exported {args.model} with random weights (--random-weights)", file=sys.stderr)
    print(folder)
    return 0


def _push(args: argparse.Namespace) -> int:
    from .. import hub

    try:
        url = hub.push(args.folder, args.repo, private=args.private, commit_message=args.message)
    except RuntimeError as e:  # the Hub refused or was unreachable: one line, token already masked
        raise ValueError(str(e)) from None
    print(url)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .. import hub

    card = json_object(args.card, "--card")
    margs = model_args(args.model_args)
    folder = hub.convert_checkpoint(args.family, args.checkpoint, args.out, model_name=args.model,
                                    model_args=margs, overwrite=args.overwrite, card=card or None)
    print(folder)
    return 0


def register(sub: argparse._SubParsersAction, search: argparse._SubParsersAction) -> None:
    """Add ``export``, ``push`` and ``convert`` to the top-level sub-commands."""
    from ..family import families
    from ..hub import CARD_KEYS

    card_help = (f"model-card information as a JSON object or a .json file, keys {list(CARD_KEYS)} "
                 "(e.g. provenance, metrics with their dataset)")

    p = sub.add_parser("export", help="write a Hub-ready folder (config.json, model.safetensors, README.md)",
                       description="Build a model and export it to a folder that timm.create_model('local-dir:...') "
                                   "and, once pushed, 'hf-hub:...' load back (after import timm_nas).")
    p.add_argument("model", help="timm model name (e.g. autoformer_subnet), or local-dir:/hf-hub: source")
    p.add_argument("--out", required=True, help="destination folder (must be absent or empty, see --overwrite)")
    p.add_argument("--model-args", help="model arguments as a JSON object or .json file, e.g. "
                                        "'{\"subnet\": {...}}' (the architecture config under its argument name)")
    p.add_argument("--checkpoint", help="weights to load strictly (.pth read with weights_only=True, or .safetensors)")
    p.add_argument("--pretrained", action="store_true", help="load the model's own pretrained weights")
    p.add_argument("--random-weights", action="store_true",
                   help="export the random initialisation (untrained); the card says so")
    p.add_argument("--onnx", action="store_true",
                   help="also write model.onnx (dynamic batch, checked with onnxruntime; pip install "
                        "'timm-nas[deploy]'); static models only")
    p.add_argument("--card", help=card_help)
    p.add_argument("--overwrite", action="store_true", help="replace an existing exported folder")
    p.set_defaults(func=_export)

    p = sub.add_parser("push", help="upload an exported folder to a Hugging Face Hub model repo",
                       description="Create the repo if needed and upload the folder. The token comes from HF_TOKEN or "
                                   "`hf auth login`; it is never printed.")
    p.add_argument("folder", help="a folder written by `timm-nas export` or `timm-nas convert`")
    p.add_argument("repo", help="the repo id, namespace/name")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=_push)

    p = sub.add_parser("convert", help="turn an authors' released checkpoint into a Hub-ready folder",
                       description="Read the checkpoint with weights_only=True, map it with the family's "
                                   "checkpoint_filter_fn, load it strictly and export it.")
    p.add_argument("family", choices=sorted(families()), help="model family")
    p.add_argument("--checkpoint", required=True, help="the authors' .pth (or .safetensors) file")
    p.add_argument("--out", required=True, help="destination folder")
    p.add_argument("--model", help="timm model to load into (default: the family's model whose weight shapes fit)")
    p.add_argument("--model-args", help="arguments of that model as a JSON object or .json file, e.g. "
                                        "'{\"space\": {...}}' for a supernet of a space without a named model")
    p.add_argument("--card", help=card_help)
    p.add_argument("--overwrite", action="store_true", help="replace an existing exported folder")
    p.set_defaults(func=_convert)
