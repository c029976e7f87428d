"""DSS throughput on AutoFormer's tiny space at 224 px, against the floor and the explicit formulation, all
measured in the same run.

The floor is one forward + backward of the *extracted* static subnet at batch 1 (the least work any gradient-based
score of that subnet can do). Each candidate is scored twice, interleaved with its floor step: with the library's
relative-position attention (row/column slots in one fused attention call) and inside ``reference_rel_pos()``,
the original's explicit formulation (``(N, N, d)`` embeddings, explicit attention), which is what this library ran
before. Targets: ratio floor / DSS >= 0.8, and DSS candidates per second >= 2x the explicit formulation's.

Usage::

    python bench/bench_dss.py                     # 20 candidates, 1 and 2 threads, 224 px
    python bench/bench_dss.py --candidates 50 --threads 4 --mode paper

Prints, per thread count: DSS candidates/s in both formulations and their ratio, the mean floor and DSS times, the
ratio floor / DSS, and the projected time of 8000 candidates (TF-TAS's default). Times are medians of interleaved
repetitions (robust to other load on the machine).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


MIN_FLOOR_OVER_DSS = 0.8
MIN_SPEEDUP_OVER_EXPLICIT = 2.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions per candidate (median)")
    p.add_argument("--threads", default="1,2", help="comma-separated torch intra-op thread counts")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--space", default="tiny")
    p.add_argument("--mode", default="reference", choices=("reference", "paper"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import timm

    import timm_nas  # noqa: F401
    from timm_nas.layers import reference_rel_pos
    from timm_nas.proxies import dss
    from timm_nas.search._rng import RANDOM, draw_generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        supernet = timm.create_model("autoformer_supernet", space=args.space, img_size=args.img_size).eval()
    cfgs = [supernet.space.sample(draw_generator(args.seed, RANDOM, 0, j)) for j in range(args.candidates)]
    x = torch.ones(1, 3, args.img_size, args.img_size)

    def floor_step(model: torch.nn.Module) -> None:
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    def dss_explicit(cfg) -> object:
        with reference_rel_pos():
            return dss(supernet, cfg, mode=args.mode)

    ok = True
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        first = dss(supernet, cfgs[0], mode=args.mode)  # first call: layer discovery, index tables
        explicit_first = dss_explicit(cfgs[0])
        assert abs(float(first) - float(explicit_first)) <= 1e-4 * abs(float(explicit_first)), \
            (float(first), float(explicit_first))
        floors, scores, explicit = [], [], []
        t_all = time.perf_counter()
        for cfg in cfgs:
            static = supernet.extract(cfg).eval()
            floor_step(static)  # warm-up
            f, d, e = [], [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                floor_step(static)
                t1 = time.perf_counter()
                dss(supernet, cfg, mode=args.mode)
                t2 = time.perf_counter()
                dss_explicit(cfg)
                t3 = time.perf_counter()
                f.append(t1 - t0)
                d.append(t2 - t1)
                e.append(t3 - t2)
            floors.append(statistics.median(f))
            scores.append(statistics.median(d))
            explicit.append(statistics.median(e))
            del static
        wall = time.perf_counter() - t_all

        floor, score, score_explicit = (statistics.mean(v) for v in (floors, scores, explicit))
        speedup = score_explicit / score
        ok = ok and floor / score >= MIN_FLOOR_OVER_DSS and speedup >= MIN_SPEEDUP_OVER_EXPLICIT
        print(f"bench_dss: AutoFormer space {args.space!r}, {args.img_size} px, DSS mode {args.mode!r}, "
              f"{args.candidates} candidates x {args.repeats} repeats, torch {torch.__version__}, "
              f"{threads} threads, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
              f"{wall:.1f} s")
        print(f"  floor (extracted subnet fwd+bwd, batch 1):      {floor * 1e3:8.1f} ms")
        print(f"  DSS (supernet, subnet config):                  {score * 1e3:8.1f} ms  = {1 / score:.2f} "
              f"candidates/s")
        print(f"  DSS, explicit formulation (reference_rel_pos):  {score_explicit * 1e3:8.1f} ms  = "
              f"{1 / score_explicit:.2f} candidates/s")
        print(f"  candidates/s, row/column over explicit: {speedup:.2f}x (target >= {MIN_SPEEDUP_OVER_EXPLICIT})")
        print(f"  ratio floor / DSS: {floor / score:.2f} (target >= {MIN_FLOOR_OVER_DSS}); explicit: "
              f"{floor / score_explicit:.2f}")
        print(f"  8000 candidates (TF-TAS default): {8000 * score / 60:.1f} min (explicit: "
              f"{8000 * score_explicit / 60:.1f} min)", flush=True)
    print(f"targets: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
