"""DSS throughput on AutoFormer's tiny space at 224 px, against the floor measured in the same run.

The floor is one forward + backward of the *extracted* static subnet at batch 1 (the least work any gradient-based
score of that subnet can do). The released TF-TAS code takes about 12-16x the floor per candidate (a deep copy of
the model, a full garbage collection, and relative-position index tables rebuilt on every forward); the target
here is a ratio floor / DSS >= 0.8, so that TF-TAS's 8000 candidates take well under 30 minutes on 2 cores.

Usage::

    python bench/bench_dss.py                     # 20 candidates, 2 threads, 224 px
    python bench/bench_dss.py --candidates 50 --threads 4 --mode paper

Prints, per run: DSS candidates/s, the mean floor and DSS times, their ratio, and the projected time of 8000
candidates. Times are medians of interleaved repetitions (robust to other load on the machine).
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions per candidate (median)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2: a 2-core CPU)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--space", default="tiny")
    p.add_argument("--mode", default="reference", choices=("reference", "paper"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    import timm

    import timm_nas  # noqa: F401
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

    floors, scores = [], []
    dss(supernet, cfgs[0], mode=args.mode)  # first call: layer discovery, index tables
    t_all = time.perf_counter()
    for cfg in cfgs:
        static = supernet.extract(cfg).eval()
        floor_step(static)  # warm-up
        f, d = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            floor_step(static)
            t1 = time.perf_counter()
            dss(supernet, cfg, mode=args.mode)
            t2 = time.perf_counter()
            f.append(t1 - t0)
            d.append(t2 - t1)
        floors.append(statistics.median(f))
        scores.append(statistics.median(d))
        del static
    wall = time.perf_counter() - t_all

    floor, score = statistics.mean(floors), statistics.mean(scores)
    print(f"bench_dss: AutoFormer space {args.space!r}, {args.img_size} px, DSS mode {args.mode!r}, "
          f"{args.candidates} candidates x {args.repeats} repeats, torch {torch.__version__}, "
          f"{args.threads} threads, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
          f"{wall:.1f} s")
    print(f"  floor (extracted subnet fwd+bwd, batch 1): {floor * 1e3:8.1f} ms")
    print(f"  DSS (supernet, subnet config):             {score * 1e3:8.1f} ms  = {1 / score:.2f} candidates/s")
    print(f"  ratio floor / DSS: {floor / score:.2f} (target >= 0.80)")
    print(f"  8000 candidates (TF-TAS default): {8000 * score / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
