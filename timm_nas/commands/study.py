"""`timm-nas study`: run the search-quality study, a script of the source tree (``bench/search_quality/study.py``).

The study is research code, not library code: it is not in the wheel. From a source checkout (an editable
install) this command runs the script with the arguments given; from an installed wheel it says where to get it.
"""
from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

__all__ = ["register", "study_script"]

#: The script's path relative to the repository root (the folder holding the ``timm_nas`` package).
SCRIPT = Path("bench") / "search_quality" / "study.py"

HOW_TO_GET = (f"the study is not part of the installed package: get {SCRIPT.parent.as_posix()}/ from the timm-nas "
              f"source distribution (pip download --no-deps --no-binary :all: timm-nas) or a git checkout, then run "
              f"`pip install 'timm-nas[study]' && python {SCRIPT.as_posix()} --out runs/study`")


def study_script() -> Path | None:
    """The study script next to the ``timm_nas`` package (a source checkout), or None (an installed wheel)."""
    path = Path(__file__).resolve().parents[2] / SCRIPT
    return path if path.is_file() else None


def register(sub: argparse._SubParsersAction, search: argparse._SubParsersAction) -> None:
    """Add ``timm-nas study``; its arguments (``--out``, ``--smoke``, ``--seed``, ``--help``, ...) go to the script."""
    p = sub.add_parser(
        "study", add_help=False,
        help="reproducible search-quality study on scikit-learn's digits (runs bench/search_quality/study.py "
             "of a source checkout; `timm-nas study --help` for its options)")
    p.set_defaults(func=_run, forward_unknown_args=True)


def _run(args: argparse.Namespace) -> int:
    script = study_script()
    if script is None:
        print(f"timm-nas study: {HOW_TO_GET}", file=sys.stderr)
        return 2
    study = runpy.run_path(str(script), run_name="timm_nas_study_script")
    return int(study["main"](list(args.unknown_args), prog="timm-nas study"))
