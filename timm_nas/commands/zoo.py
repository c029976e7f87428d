"""`timm-nas zoo`: the published models and their released weights (see :mod:`timm_nas.hub.zoo`).

Examples::

    timm-nas zoo list                                   # every published model: weights, licence, accuracy, cost
    timm-nas zoo export --out zoo/                      # convert every reachable release into Hub folders
    timm-nas zoo export --out zoo/ --checkpoint-dir downloads/ --models 'darts*'
    timm-nas zoo export --out zoo/ --push-to-hub my-org # ... and publish them
"""
from __future__ import annotations

import argparse

__all__ = ["register"]


def _list(args: argparse.Namespace) -> int:
    from ..hub.zoo import format_table, zoo_entries

    entries = zoo_entries(architectures=not args.weights_only, pattern=args.models)
    if not entries:
        raise ValueError(f"no published model matches {args.models!r}")
    print(format_table(entries))
    return 0


def _export(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..hub.zoo import export_zoo

    results = export_zoo(args.out, checkpoint_dir=args.checkpoint_dir, pattern=args.models,
                         push_to=args.push_to_hub, overwrite=args.overwrite,
                         report=lambda r: tqdm.write(r.line()), progress=not args.no_progress)
    done = sum(r.status == "done" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    unreachable = sum(r.status == "unreachable" for r in results)
    print(f"{done} done, {skipped} skipped, {unreachable} unreachable; folders in {args.out}")
    return 0


def register(sub: argparse._SubParsersAction, search: argparse._SubParsersAction) -> None:
    """Add ``zoo list`` and ``zoo export`` to the top-level sub-commands."""
    zoo = sub.add_parser("zoo", help="the published models and their released weights",
                         description="List the published models, or convert their released weights into Hub "
                                     "folders (and publish them).")
    zsub = zoo.add_subparsers(dest="zoo_command", metavar="ACTION")
    zoo.set_defaults(func=lambda args: (zoo.print_help(), 2)[1])

    p = zsub.add_parser("list", help="every published model: weight source, licence, reported accuracy, params, MACs",
                        description="Read from the registry and the models' default_cfgs; no network.")
    p.add_argument("--models", help="only names matching this pattern (fnmatch, e.g. 's3*')")
    p.add_argument("--weights-only", action="store_true", help="only models with released weights")
    p.set_defaults(func=_list)

    p = zsub.add_parser("export", help="convert every reachable released checkpoint into a Hub folder",
                        description="One folder per released checkpoint (config.json, model.safetensors, card with "
                                    "the paper's accuracy, source, licence and conversion provenance). Release URLs "
                                    "go through timm's download cache; files on Google Drive / Baidu are read from "
                                    "--checkpoint-dir. Finished folders are skipped, so an interrupted run resumes.")
    p.add_argument("--out", required=True, help="folder receiving one sub-folder per model")
    p.add_argument("--checkpoint-dir", help="local copies of the release files, named as in the release "
                                            "(e.g. supernet-tiny.pth, S3-T.pth, cifar10_model.pt)")
    p.add_argument("--models", help="only names matching this pattern (fnmatch, e.g. 'autoformer*')")
    p.add_argument("--push-to-hub", metavar="ORG", help="push each folder to ORG/<name> on the Hugging Face Hub")
    p.add_argument("--overwrite", action="store_true", help="redo finished folders")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_export)
