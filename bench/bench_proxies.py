"""Training-free proxy throughput on NAS-Bench-201: architectures scored per second, per proxy, on this machine.

    python bench/bench_proxies.py                         # 8 seeded cells, C=16 N=5 at 32 px, batch 64
    python bench/bench_proxies.py --archs 4 --proxies synflow,nwot,zico --threads 1

Each cell of a seeded sample is built as the benchmark's network (``nb201_cifar``, C=16, N=5, 10 classes, 32x32
inputs, as ``timm-nas proxy-bench --space nb201`` scores it), and every proxy scores it through the registry's one
call (``spec(model, seed=0, batch_size=B)``: the seeded random batch included, as in a search). The baseline, timed
in the same interleaved rounds, is one forward pass of the same batch in eval mode under ``torch.no_grad``; each
proxy's cost is printed as a ratio to it. Building the model (done once per architecture, shared by all proxies in
``proxy-bench``) is its own row. Times are medians over ``--repeats`` interleaved rounds per cell, summed over cells:
``arch/s = cells / sum of medians``. A proxy that does not apply to this network says so instead of a time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from _timing import interleaved_times_ms  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", type=int, default=8, help="seeded cells to score (default 8)")
    p.add_argument("--proxies", default=None, help="comma-separated (default: every registered proxy)")
    p.add_argument("--batch-size", type=int, default=64, help="input batch of data-dependent proxies (default 64)")
    p.add_argument("--repeats", type=int, default=3, help="timed interleaved rounds per cell (default 3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's default)")
    p.add_argument("--seed", type=int, default=0, help="cell sample seed (default 0)")
    args = p.parse_args(argv)
    if args.archs < 1 or args.repeats < 1 or args.batch_size < 1:
        p.error("--archs, --repeats and --batch-size must be at least 1")

    import timm
    import torch

    import timm_nas  # noqa: F401  (registers the models)
    from timm_nas.proxies import get_proxy, list_proxies
    from timm_nas.proxies._registry import default_inputs
    from timm_nas.spaces.nb201 import NB201Space

    if args.threads:
        torch.set_num_threads(args.threads)
    names = list_proxies() if args.proxies is None else [n.strip() for n in args.proxies.split(",") if n.strip()]
    specs = [get_proxy(n) for n in names]
    space = NB201Space()
    g = torch.Generator().manual_seed(args.seed)
    cells = [space.sample(g) for _ in range(args.archs)]

    def build(cell):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return timm.create_model("nb201_cifar", genotype=cell.to_dict(), num_classes=10).eval()

    # Which proxies apply (a proxy that does not apply raises, naming why); checked once on the first cell.
    first = build(cells[0])
    applies, reasons = [], {}
    for spec in specs:
        try:
            spec(first, seed=0, batch_size=args.batch_size)
            applies.append(spec)
        except (TypeError, ValueError, RuntimeError, NotImplementedError) as e:
            reasons[spec.name] = " ".join(str(e).split())[:90]

    totals = {name: 0.0 for name in ["build", "forward"] + [s.name for s in applies]}
    for k, cell in enumerate(cells):
        model = build(cell)
        x = default_inputs(model, args.batch_size, seed=0)

        def forward(model=model, x=x):
            with torch.no_grad():
                model(x)

        fns = [lambda cell=cell: build(cell), forward]
        fns += [lambda spec=spec, model=model: spec(model, seed=0, batch_size=args.batch_size) for spec in applies]
        times = interleaved_times_ms(fns, args.repeats, warmup=1)
        for name, t in zip(totals, times):
            totals[name] += statistics.median(t)
        print(f"cell {k + 1}/{len(cells)}: {cell.to_string()}", file=sys.stderr, flush=True)

    base = totals["forward"]
    print(f"NAS-Bench-201 network (C=16, N=5, 10 classes), 32x32 inputs, batch {args.batch_size}, "
          f"{torch.get_num_threads()} thread(s), {len(cells)} seeded cells, median of {args.repeats} interleaved "
          f"rounds each; torch {torch.__version__}")
    print()
    print("| proxy | ms / arch | arch / s | x forward |")
    print("|---|---:|---:|---:|")
    for name, total in sorted(totals.items(), key=lambda kv: kv[1]):
        ms = total / len(cells)
        label = {"build": "(build the model)", "forward": "(baseline: one forward, no grad)"}.get(name, name)
        print(f"| {label} | {ms:.1f} | {1000 / ms:.2f} | {total / base:.2f} |")
    for name, why in reasons.items():
        print(f"| {name} | does not apply: {why} | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
