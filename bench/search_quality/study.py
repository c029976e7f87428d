"""The search-quality study on scikit-learn's digits: report, JSON and plots (see README.md next to this file).

    python bench/search_quality/study.py --out runs/study            # the full study
    python bench/search_quality/study.py --out runs/study-smoke --smoke

Runs from any working directory. The study's modules are the ``digits_study`` package next to this script; it needs
timm-nas (an install or this checkout) and the ``study`` extra (scikit-learn, matplotlib).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Sequence

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if importlib.util.find_spec("timm_nas") is None:  # a checkout that is not installed: use its timm_nas
    sys.path.insert(1, str(HERE.parents[1]))

#: Default output folders of the full study and of ``--smoke`` (ignored by git, like the other run folders).
DEFAULT_OUT = "runs/study"
DEFAULT_SMOKE_OUT = "runs/study-smoke"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train architectures from scratch on scikit-learn's bundled digits and measure: how well "
                    "training-free proxies rank them, evolution vs random search on a supernet, and DARTS vs random "
                    "cells. Writes report.md, results.json and PNG plots to --out. The full preset is sized for "
                    "well under an hour on 2 CPU cores; --smoke runs every step tiny (well under a minute).")
    p.add_argument("--out", default=None, help=f"output folder (default: {DEFAULT_OUT}, with --smoke "
                                               f"{DEFAULT_SMOKE_OUT}); a previous study's files there are replaced")
    p.add_argument("--smoke", action="store_true", help="tiny preset that checks the pipeline end to end (CI)")
    p.add_argument("--seed", type=int, default=0, help="study seed; every other seed derives from it (default 0)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: the study's models are tiny, and on a 2-core machine "
                        "shared with other jobs two threads ran up to 10x slower; 0: torch's default)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    p.add_argument("--report-only", action="store_true",
                   help="re-render report.md and the plots from --out/results.json without running anything")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from digits_study import RESULTS_FILE, run_study, write_report

    out = Path(args.out if args.out is not None else DEFAULT_SMOKE_OUT if args.smoke else DEFAULT_OUT)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if args.report_only:
        path = out / RESULTS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {RESULTS_FILE} in {out}; run the study with --out {out} first")
        report = write_report(json.loads(path.read_text(encoding="utf-8")), out, plots=not args.no_plots)
        print(f"wrote {report}")
        return 0
    if args.threads < 0:
        raise ValueError(f"--threads must be 0 (torch's default) or positive, got {args.threads}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()

    def log(line: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - start:7.1f}s] {line}", file=sys.stderr, flush=True)

    results = run_study(out, smoke=args.smoke, seed=args.seed, log=log, plots=not args.no_plots)
    _summary(results)
    return 0


def _summary(results: dict) -> None:
    """A few headline lines on stdout."""
    from digits_study.report import fmt

    p, s, d = results["proxy_study"], results["supernet_study"], results["darts_study"]
    print(f"study ({results['preset']}, seed {results['seed']}): {results['timing']['total']['wall_s']:.0f}s wall")
    print("  Kendall tau with test accuracy: " + ", ".join(f"{r['name']} {fmt(r['tau'], 2)}"
                                                          for r in p["correlations"]))
    for name, st in s["per_strategy"].items():
        print(f"  {name}: best inherited val {fmt(st['best_val_inherited']['mean'], 2)}%, pick retrained test "
              f"{fmt(st['test_retrained']['mean'], 2)}%")
    sm = d["summary"]
    print(f"  DARTS genotype test {fmt(sm['derived_test_acc'], 2)}% vs random "
          f"{fmt(sm['random_test_acc']['mean'], 2)}% (rank {sm['derived_rank']} of {sm['of']})")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` and run; a usage error (bad option, missing extra, missing results) is one line, exit 2."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, ImportError) as e:
        if args.debug or (isinstance(e, ImportError) and "timm-nas[study]" not in str(e)):
            raise
        print(f"{parser.prog}: error: {e}", file=sys.stderr)  # e.g. the study extra is missing
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
