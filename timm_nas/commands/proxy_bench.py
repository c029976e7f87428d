"""`timm-nas proxy-bench` and `timm-nas oracle-search`: the search-quality yardstick of a table of accuracies.

``proxy-bench``: rank correlation of training-free proxies with the table (:mod:`timm_nas.proxies.bench`).
``oracle-search``: search strategies with the table as the oracle, best-so-far curves over seeds
(:mod:`timm_nas.search.oracle`).
"""
from __future__ import annotations

import argparse
import json
import sys

from ._argtypes import HelpFormatter, count, device_arg, model_args, positive_int

__all__ = ["register"]

EXAMPLE = """example (NAS-Bench-201, a table of architecture strings or indices and accuracies):
  timm-nas proxy-bench --space nb201 --table nb201_cifar10.csv --proxies synflow,nwot,zico --sample 1000 \\
      --out runs/proxy_bench
  torchrun --nproc-per-node 2 -m timm_nas proxy-bench ...   # shards the architectures over processes"""


def register(sub: argparse._SubParsersAction, search: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "proxy-bench", formatter_class=HelpFormatter, epilog=EXAMPLE,
        help="Kendall tau-b / Spearman rho of training-free proxies (and params, MACs, a rank ensemble) against a "
             "table of accuracies")
    p.add_argument("--space", required=True,
                   help="the family whose default search space holds the table's architectures (e.g. nb201)")
    p.add_argument("--table", required=True,
                   help="CSV (columns arch|index, accuracy) or JSON ({arch: accuracy} or a list of rows)")
    p.add_argument("--proxies", required=True, help="comma-separated proxy names (`timm-nas search proxies`)")
    p.add_argument("--out", required=True, help="run folder (the same command resumes an interrupted run)")
    p.add_argument("--sample", type=positive_int, default=None, help="score a seeded sample of the table")
    p.add_argument("--seed", type=int, default=0, help="sample, initialisation, input batch and bootstrap seed")
    p.add_argument("--batch-size", type=positive_int, default=64, help="input batch of data-dependent proxies")
    p.add_argument("--model-args", default=None,
                   help="more arguments of the family's static model, a JSON object or a .json file")
    p.add_argument("--ensemble", choices=("log_rank", "mean_rank"), default="log_rank",
                   help="rank aggregation of the proxies (log_rank: AZ-NAS)")
    p.add_argument("--bootstrap", type=count, default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--device", type=device_arg, default="cpu")
    p.add_argument("--no-plot", action="store_true", help="do not write proxy_bench.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)

    o = sub.add_parser(
        "oracle-search", formatter_class=HelpFormatter, epilog=ORACLE_EXAMPLE,
        help="compare search strategies with a table of accuracies as the oracle (best-so-far curves over seeds)")
    o.add_argument("--space", required=True, help="the family whose default search space the table covers (nb201)")
    o.add_argument("--oracle", required=True, help="the table: CSV (arch|index, accuracy) or JSON")
    o.add_argument("--strategies", default=None,
                   help="comma-separated: random, regularized_evolution, evolution (default: all three; with "
                        "--prefilter random and regularized_evolution, the ones that take one)")
    o.add_argument("--budget", type=positive_int, default=100, help="oracle queries per run")
    o.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds, one run each")
    o.add_argument("--prefilter", default=None,
                   help="a training-free proxy choosing what to query (best of --prefilter-pool candidates)")
    o.add_argument("--prefilter-pool", type=positive_int, default=10)
    o.add_argument("--model-args", default=None, help="more static-model arguments for the prefilter proxy")
    o.add_argument("--out", required=True, help="folder: one resumable run folder per strategy and seed, "
                                                "curves.json")
    o.set_defaults(func=_run_oracle)


ORACLE_EXAMPLE = """example:
  timm-nas oracle-search --space nb201 --oracle nb201_cifar10.csv --budget 100 --seeds 0,1,2,3,4 --out runs/oracle
  timm-nas oracle-search ... --prefilter nwot --prefilter-pool 10    # a proxy picks what the oracle is asked"""


def _run_oracle(args: argparse.Namespace) -> int:
    from .._io import atomic_write_text
    from ..family import get_family
    from ..search.oracle import OracleScorer, compare_strategies, plot_curves, proxy_prefilter

    try:
        fam = get_family(args.space)
        if fam.space is None:
            raise ValueError(f"family {fam.name!r} has no search space")
        oracle = OracleScorer(args.oracle, fam.config, missing="nan")
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        prefilter = (proxy_prefilter(fam.name, args.prefilter, model_args=model_args(args.model_args))
                     if args.prefilter else None)
        if not seeds:
            raise ValueError(f"--seeds {args.seeds!r} names no seed; give e.g. --seeds 0,1,2")
        names = (args.strategies or ("random,regularized_evolution" if prefilter else
                                     "random,regularized_evolution,evolution")).split(",")
        curves = compare_strategies(fam.space(), oracle, [s.strip() for s in names if s.strip()],
                                    args.budget, seeds, prefilter=prefilter, prefilter_pool=args.prefilter_pool,
                                    out=args.out)
    except (ValueError, TypeError, OSError) as e:
        print(f"timm-nas oracle-search: error: {e}", file=sys.stderr)
        return 2
    data = {"oracle_best": oracle.best, "budget": args.budget, "seeds": seeds, "prefilter": args.prefilter,
            "strategies": {n: {"curves": c.curves, "mean": c.mean, "std": c.std} for n, c in curves.items()}}
    atomic_write_text(f"{args.out}/curves.json", json.dumps(data) + "\n")
    plot_curves(curves, f"{args.out}/curves.png", best=oracle.best)
    print(f"| strategy | best after {args.budget} queries (mean ± sd over {len(seeds)} seeds) | mean regret |")
    print("|---|---|---|")
    for name, c in curves.items():
        print(f"| {name} | {c.mean[-1]:.4f} ± {c.std[-1]:.4f} | {oracle.best - c.mean[-1]:.4f} |")
    print(f"curves: {args.out}/curves.json, {args.out}/curves.png")
    return 0


def _run(args: argparse.Namespace) -> int:
    from ..family import get_family
    from ..proxies.bench import load_table, proxy_bench

    try:
        fam = get_family(args.space)
        if fam.space is None:
            raise ValueError(f"family {fam.name!r} has no search space")
        space = fam.space()
        table = load_table(args.table, fam.config)
        result = proxy_bench(space, table, [p.strip() for p in args.proxies.split(",") if p.strip()], args.out,
                             sample=args.sample, seed=args.seed, batch_size=args.batch_size,
                             model_args=model_args(args.model_args), device=args.device, ensemble=args.ensemble,
                             bootstrap=args.bootstrap, progress=not args.no_progress, plot=not args.no_plot)
    except (ValueError, TypeError, OSError) as e:
        print(f"timm-nas proxy-bench: error: {e}", file=sys.stderr)
        return 2
    if result.report is not None:
        print(result.report.read_text(encoding="utf-8"))
        print(json.dumps({"out": str(result.out), "num_architectures": result.num_architectures}))
    return 0
