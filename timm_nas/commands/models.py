"""`timm-nas demo`: the README demo, a training-free search that ends with a Hub-ready model.

It runs TF-TAS (DSS, the released code's rules) on AutoFormer's tiny space with a randomly initialised
supernet (no data needed), exports the best subnet, and rebuilds it with
``timm.create_model('local-dir:<out>/export', pretrained=True)``, checking that the rebuilt model gives the
searched subnet's logits. A few hundred candidates take a few minutes on two CPU cores; running it again on the
same ``--out`` reuses the scored candidates.
"""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run_demo", "DEMO_CANDIDATES"]

#: Candidates the demo scores (TF-TAS itself scores 8000).
DEMO_CANDIDATES = 300


def register(sub: argparse._SubParsersAction, search: argparse._SubParsersAction) -> None:
    """Add ``timm-nas demo``."""
    p = sub.add_parser("demo", help="run the README demo: a TF-TAS search on the tiny space, exported and reloaded",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--candidates", type=int, default=DEMO_CANDIDATES,
                   help=f"candidates to score (default {DEMO_CANDIDATES})")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_demo)


def _search_args(args: argparse.Namespace, overwrite: bool) -> argparse.Namespace:
    from ..cli import build_parser

    argv = ["search", "tf-tas", "--space", "tiny", "--candidates", str(args.candidates), "--seed", str(args.seed),
            "--out", str(args.out), "--top", "5"]
    if overwrite:
        argv.append("--overwrite")
    if args.no_progress:
        argv.append("--no-progress")
    return build_parser().parse_args(argv)


def run_demo(args: argparse.Namespace) -> int:
    """The handler of ``timm-nas demo``."""
    import timm
    import torch

    from ..search.log import RUN_FILE
    from .search import search_from_args

    out = Path(args.out)
    print(f"timm-nas demo: TF-TAS (DSS) over AutoFormer's tiny space, {args.candidates} candidates, "
          f"no data needed -> {out}")
    try:
        result, supernet, folder = search_from_args(_search_args(args, overwrite=False))
    except ValueError as e:
        if not (out / RUN_FILE).is_file() or "different arguments" not in str(e):
            raise
        print(f"{out} holds an earlier demo with other settings: starting afresh")
        result, supernet, folder = search_from_args(_search_args(args, overwrite=True))

    best = result.best
    print(f"\nreloading the export: timm.create_model('local-dir:{folder}', pretrained=True)")
    device = next(supernet.parameters()).device
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval().to(device)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(args.seed)).to(device)
    with torch.no_grad(), supernet.use_subnet(best.config):
        expected = supernet.eval()(x)
        got = model(x)
    diff = float((got - expected).abs().max())
    ok = torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
    print(f"check: {type(model).__name__} with {sum(p.numel() for p in model.parameters()):,} parameters; logits "
          f"equal the supernet's subnet {'(OK' if ok else '(MISMATCH'}, max |diff| = {diff:.2e})")
    return 0 if ok else 1
