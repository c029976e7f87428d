"""`timm-nas latency build | check`: a latency table measured on this device, and how well it predicts.

Examples::

    timm-nas latency build --model autoformer_supernet_tiny --device cpu --batch-size 1 --out lat.json
    timm-nas latency check --table lat.json --samples 50 --out lat_check

``build`` measures every part a family's subnets decompose into (:mod:`timm_nas.cost.latency`) together with a
few subnets end to end for the calibration, interleaved in rounds, saving the table after every round (an
interrupted build resumes with the same command). ``check`` measures random extracted subnets end to end,
interleaved in rounds, and reports the predictor's Kendall tau and mean absolute percentage error next to those of
MACs and parameters and of the measurements against themselves (test-retest: even rounds against odd ones), with
``check.json`` and ``check.png``. Use the table in a search with
``--latency-table lat.json --latency-max MS``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from ._argtypes import count, device_arg, model_args, positive_int, space_arg

__all__ = ["register"]

_BUILD_EXAMPLE = """Example (AutoFormer's tiny space at batch 1 on one CPU thread, a few minutes):
  timm-nas latency build --model autoformer_supernet_tiny --device cpu --batch-size 1 --out lat.json"""
_BUILD_TEXT = ("Measure every part a family's subnets decompose into (AutoFormer: blocks by embed dim, heads and MLP "
               "width, plus the rest per embed dim; S3: blocks per stage, merges, stem and head; DARTS, with "
               "--model darts_search: the evaluation network's operations by channels, size and stride; SPViT, "
               "with --model spvit_search_deit_*: each attention op and 17 FFN widths, interpolated between) on "
               "this device, interleaved in rounds with a few subnets measured end to end to calibrate the sum; the table "
               "is saved after every round (rerun the same command to resume).")
_CHECK_TEXT = ("Measure random extracted subnets end to end, interleaved in rounds, and report the table's Kendall tau "
               "and MAPE against them, the tau of MACs and parameters, and the test-retest tau / MAPE of the "
               "measurements themselves (even rounds against odd ones); writes check.json and check.png.")
_CHECK_EXAMPLE = """Example:
  timm-nas latency check --table lat.json --samples 50 --out lat_check"""


def register(sub: argparse._SubParsersAction, search: argparse._SubParsersAction) -> None:
    """Add ``timm-nas latency build`` and ``timm-nas latency check``."""
    p = sub.add_parser("latency", help="latency tables measured on this device",
                       description="Latency tables measured on this device, for hardware-aware search.")
    lat = p.add_subparsers(dest="latency_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])

    b = lat.add_parser("build", help="measure a family's latency table", description=_BUILD_TEXT,
                       epilog=_BUILD_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--model", required=True,
                   help="supernet name (autoformer_supernet_tiny, s3_supernet_tiny, ...; darts_search for the DARTS "
                        "genotype networks it extracts; spvit_search_deit_tiny/_small/_base for SPViT's pruned "
                        "models)")
    b.add_argument("--space", default=None, help="search space preset, JSON object or .json file (generic supernets)")
    b.add_argument("--img-size", type=positive_int, default=None, help="input image size (default: the model's)")
    b.add_argument("--model-args", default=None, help="more supernet arguments, JSON object or .json file")
    b.add_argument("--out", required=True, help="table file to write (resumed when it holds the same setting)")
    _add_measure(b, defaults=True)
    b.add_argument("--calibration", type=count, default=12,
                   help="subnets measured end to end, interleaved with the parts, to fit the sum-of-parts calibration "
                        "(default 12)")
    b.add_argument("--seed", type=int, default=12345, help="seed of the calibration subnets (default 12345)")
    b.set_defaults(func=_build)

    c = lat.add_parser("check", help="measure random subnets against a table's predictions",
                       description=_CHECK_TEXT, epilog=_CHECK_EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--table", required=True, help="latency table (timm-nas latency build)")
    c.add_argument("--samples", type=positive_int, default=50, help="random subnets to measure (default 50)")
    c.add_argument("--seed", type=int, default=0, help="seed of the random subnets (default 0)")
    c.add_argument("--out", default=None, help="folder for check.json / check.png (default: <table>_check)")
    _add_measure(c, defaults=False)
    c.set_defaults(func=_check)


def _add_measure(p: argparse.ArgumentParser, defaults: bool) -> None:
    note = "" if defaults else " (default: the table's; another value is refused)"
    g = p.add_argument_group("measurement")
    g.add_argument("--device", type=device_arg, default="cpu" if defaults else None,
                   help="cpu, cuda, cuda:1, ..." + (note or
                   " (default cpu)"))
    g.add_argument("--batch-size", type=positive_int, default=1 if defaults else None,
                   help="batch size" + (note or " (default 1)"))
    g.add_argument("--threads", type=positive_int, default=1 if defaults else None,
                   help="torch.set_num_threads" + (note or " (default 1)"))
    g.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32" if defaults else None,
                   help="dtype of weights and input" + (note or " (default float32)"))
    g.add_argument("--rounds", type=positive_int, default=6 if defaults else None,
                   help="interleaved rounds: each visits everything measured once, in alternating order"
                        + (" (default 6)" if defaults else " (default: the table's; at least 2)"))
    g.add_argument("--warmup", type=count, default=1 if defaults else None,
                   help="untimed calls per visit" + (" (default 1)" if defaults else " (default: the table's)"))
    g.add_argument("--repeats", type=positive_int, default=4 if defaults else None,
                   help="timed calls per visit" + (" (default 4)" if defaults else " (default: the table's)"))
    if defaults:
        g.add_argument("--stat", choices=("min", "median"), default="min",
                       help="statistic of the repeats (default min: least disturbed by other processes)")
    g.add_argument("--no-reference", action="store_true",
                   help="time each visit alone; by default its calls alternate with the space's smallest subnet and "
                        "the ratio to it is kept (the machine's speed of the moment cancels), times the smallest "
                        "subnet's fastest round" + ("" if defaults else "; the check's own measurement"))
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _create_supernet(name: str, create_args: dict[str, Any]) -> Any:
    import timm
    import torch

    from .._factory import create_model

    if not timm.is_model(name):
        raise ValueError(f"unknown model {name!r}; supernets: {timm.list_models('*supernet*')}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(name, **create_args)
    if not ((hasattr(model, "space") or hasattr(model, "arch_space")) and hasattr(model, "extract")):
        raise ValueError(f"{name} is not a supernet (no search space / extract); choose a *_supernet model (or "
                         "darts_search, spvit_search_deit_*)")
    return model.eval()


def _device_check(device: str) -> None:
    import torch

    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")


def _build(args: argparse.Namespace) -> int:
    from ..cost.latency import build_table, supernet_setting

    _device_check(args.device)
    create_args = model_args(args.model_args)
    if args.space is not None:
        create_args["space"] = space_arg(args.space)
    if args.img_size is not None:
        create_args["img_size"] = args.img_size
    supernet = _create_supernet(args.model, create_args)
    setting = supernet_setting(supernet, model=args.model, create_args=create_args, device=args.device,
                               batch_size=args.batch_size, threads=args.threads, dtype=args.dtype)
    table = build_table(supernet, setting, args.out, warmup=args.warmup, repeats=args.repeats, rounds=args.rounds,
                        stat=args.stat, calibration=args.calibration, seed=args.seed, reference=not args.no_reference,
                        progress=not args.no_progress)
    c = table.calibration
    print(f"{len(table.entries)} entries measured on {setting['device_name']} ({setting['device']}, "
          f"{setting['threads']} thread(s), batch {setting['batch_size']}, {setting['dtype']}); calibration over "
          f"{len(c['points'])} subnets: latency = {c['scale']:.4f} x sum of parts + {c['intercept']:.3f} ms")
    print(f"wrote {table.path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    import torch

    from ..cost import count_macs, count_params
    from ..cost.latency import (LatencyTable, _DTYPES, _stat, device_name, latency_space, measure_rounds,
                                model_shape_args, paired_ms)
    from ..version import __version__

    table = LatencyTable.load(args.table)
    s = table.setting
    measure = s.get("measure", {})
    device = args.device or s["device"]
    _device_check(device)
    table.check("this check", device=torch.device(device).type, device_name=device_name(device),
                batch_size=args.batch_size or s["batch_size"], threads=args.threads or s["threads"],
                dtype=args.dtype or s["dtype"], torch=torch.__version__.split("+")[0], timm_nas=__version__)
    out = Path(args.out).expanduser() if args.out else Path(str(Path(args.table).expanduser().with_suffix("")) + "_check")
    try:
        from scipy.stats import kendalltau
    except ImportError:
        raise ValueError("timm-nas latency check needs scipy (pip install scipy)") from None
    supernet = _create_supernet(s["model"], dict(s["create_args"]))
    table.check(f"the supernet {s['model']} built now", model_args=model_shape_args(supernet))

    warmup = measure.get("warmup", 1) if args.warmup is None else args.warmup
    repeats = measure.get("repeats", 4) if args.repeats is None else args.repeats
    rounds = max(measure.get("rounds", 2), 2) if args.rounds is None else args.rounds
    if rounds < 2:
        raise ValueError(f"--rounds {rounds}: the check needs at least 2 rounds (the test-retest compares the even "
                         "rounds with the odd ones)")
    table.check_complete()
    stat = measure.get("stat", "min")
    gen = torch.Generator().manual_seed(args.seed)
    cfgs = [latency_space(supernet).sample(gen) for _ in range(args.samples)]
    cost_args = supernet.cost_args
    predicted = [table.predict(c) for c in cfgs]
    summed = [table.parts_ms(c) for c in cfgs]
    macs = [count_macs(c, **cost_args) for c in cfgs]
    params = [count_params(c, **cost_args) for c in cfgs]

    previous = torch.get_num_threads()
    torch.set_num_threads(s["threads"])
    bar = _bar(rounds * len(cfgs), not args.no_progress)
    load_before = os.getloadavg()
    reference = None if args.no_reference else latency_space(supernet).smallest()
    try:
        per_round = measure_rounds(supernet, cfgs, device=device, dtype=_DTYPES[s["dtype"]],
                                   batch_size=s["batch_size"], rounds=rounds, warmup=warmup, repeats=repeats,
                                   stat=stat, reference=reference,
                                   callback=lambda r, k, ms: bar.update(1) if bar is not None and k < len(cfgs)
                                   else None)
    finally:
        torch.set_num_threads(previous)
        if bar is not None:
            bar.close()
    load_after = os.getloadavg()
    if reference is None:
        def ms(values: Sequence[float], sl: slice = slice(None)) -> float:
            return _stat(values[sl], stat)
    else:
        per_round, reference_ms = per_round[:-1], per_round[-1]

        def ms(values: Sequence[float], sl: slice = slice(None)) -> float:
            return paired_ms(values[sl], reference_ms[sl])
    measured = [ms(v) for v in per_round]
    # test-retest: the even rounds against the odd ones (each half spans the whole check, in both orders)
    first = [ms(v, slice(0, None, 2)) for v in per_round]
    second = [ms(v, slice(1, None, 2)) for v in per_round]

    def tau(x: Sequence[float]) -> float:
        return float(kendalltau(x, measured).statistic)

    def mape(pred: Sequence[float], true: Sequence[float]) -> float:
        return 100.0 * sum(abs(p - t) / t for p, t in zip(pred, true)) / len(true)

    result = {
        "table": str(table.path), "setting": table.describe(), "samples": len(cfgs), "seed": args.seed,
        "warmup": warmup, "repeats": repeats, "rounds": rounds, "stat": stat,
        "reference": None if reference is None else {"config": reference.to_dict(), "rounds_ms": reference_ms},
        "load_average": {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in load_after]},
        "predictor": {"kendall_tau": tau(predicted), "mape": mape(predicted, measured),
                      "max_ape": max(100.0 * abs(p - t) / t for p, t in zip(predicted, measured)),
                      "mape_uncalibrated": mape(summed, measured)},
        "macs_kendall_tau": tau(macs), "params_kendall_tau": tau(params),
        "test_retest": {"kendall_tau": float(kendalltau(first, second).statistic), "mape": mape(second, first)},
        "subnets": [{"config": c.to_dict(), "predicted_ms": p, "measured_ms": [a, b],
                     ("rounds_ms" if reference is None else "rounds_ratio"): v, "macs": m, "params": n}
                    for c, p, a, b, v, m, n in zip(cfgs, predicted, first, second, per_round, macs, params)],
    }
    out.mkdir(parents=True, exist_ok=True)
    from .._io import atomic_write_text

    atomic_write_text(out / "check.json", json.dumps(result, indent=1) + "\n")
    plotted = _plot(result, measured, predicted, macs, out / "check.png")
    r, t = result["predictor"], result["test_retest"]
    print(f"{len(cfgs)} subnets of {s['model']} on {s['device_name']} (batch {s['batch_size']}, {s['threads']} "
          f"thread(s)); load average {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print(f"predictor:   Kendall tau {r['kendall_tau']:.3f}, MAPE {r['mape']:.2f}% (max {r['max_ape']:.1f}%; "
          f"uncalibrated sum of parts {r['mape_uncalibrated']:.2f}%)")
    print(f"MACs:        Kendall tau {result['macs_kendall_tau']:.3f};  params: Kendall tau "
          f"{result['params_kendall_tau']:.3f}")
    print(f"test-retest: Kendall tau {t['kendall_tau']:.3f}, MAPE {t['mape']:.2f}% (the measurements' own noise)")
    print(f"wrote {out / 'check.json'}" + (f", {out / 'check.png'}" if plotted else ""))
    return 0


def _bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="latency check", unit="subnet", dynamic_ncols=True, file=sys.stderr)


def _plot(result: dict[str, Any], measured: Sequence[float], predicted: Sequence[float], macs: Sequence[int],
          path: Path) -> bool:
    from .._io import atomic_write

    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: check.png was not written (pip install 'timm-nas[plots]')",
              file=sys.stderr)
        return False
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    FigureCanvasAgg(fig)  # an Agg canvas on this figure only: no pyplot, no global backend
    ax, bx = fig.subplots(1, 2)
    lo, hi = min(min(measured), min(predicted)), max(max(measured), max(predicted))
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, label="predicted = measured")
    ax.scatter(measured, predicted, s=12, color="C0")
    r = result["predictor"]
    ax.set_title(f"table: tau {r['kendall_tau']:.3f}, MAPE {r['mape']:.1f}%", fontsize=10)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.legend(loc="upper left", fontsize=8)
    bx.scatter(measured, [m / 1e9 for m in macs], s=12, color="C1")
    bx.set_title(f"MACs: tau {result['macs_kendall_tau']:.3f}", fontsize=10)
    bx.set_xlabel("measured latency (ms)")
    bx.set_ylabel("MACs (G)")
    for a in (ax, bx):
        a.grid(alpha=0.3)
    atomic_write(path, lambda tmp: fig.savefig(str(tmp), dpi=110, format="png"))
    return True
