"""DARTS search-step cost against a plain weight step of the same network, measured in the same run.

Network: the standard search network (``darts_search``: C=16, 8 cells, 10 classes), batch 16, 32x32 inputs.

Modes (each runs in a fresh subprocess so its peak memory is its own):

* ``plain``: forward, backward, gradient clip (5), SGD step: the baseline.
* ``first`` / ``second``: one DARTS step as timm-nas runs it (``timm_nas.search.darts``): architecture step (first or
  second order, Adam on the alphas) then the weight step.
* ``orig_first`` / ``orig_second``: the same step written the way the original ``cnn/architect.py`` does it (full
  ``.backward()`` filling every weight gradient; the unrolled model rebuilt as a new network loaded with
  ``load_state_dict``), for a same-machine reference of the original's cost.

Time is the median CPU time of the process per step (robust to other processes sharing the cores), wall time is
shown too. Memory is the growth of the peak resident set size from before the first step (model, optimisers and data
already allocated) to the end: the peak working memory of one step. Targets (issue 6): first order <= 1.9x and second order <= 4.7x the plain step (the original code measured
1.97x / 4.93x on a 2-core CPU).

Usage: ``python bench/bench_darts.py [--steps 5] [--threads 1] [--modes plain,first,second,orig_first,orig_second]``
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

#: Targets of issue 6 (ratios to the plain weight step).
TARGETS = {"first": 1.9, "second": 4.7}
MODES = ("plain", "first", "second", "orig_first", "orig_second")


def _setup(seed: int = 0):
    import timm
    import torch

    import timm_nas  # noqa: F401
    from timm_nas.search.darts import DartsSearchConfig

    torch.manual_seed(seed)  # a benchmark script, not library code: seeding the global RNG is fine here
    model = timm.create_model("darts_search", C=16, layers=8, num_classes=10).train()
    g = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(4)]
    cfg = DartsSearchConfig(batch_size=16)
    optimizer = torch.optim.SGD(model.weight_parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    arch_optimizer = torch.optim.Adam(model.arch_parameters(), lr=cfg.arch_lr, betas=cfg.arch_betas,
                                      weight_decay=cfg.arch_weight_decay)
    return model, batches, cfg, optimizer, arch_optimizer


def _plain_step(model, optimizer, batch, cfg):
    import torch.nn as nn
    import torch.nn.functional as F

    optimizer.zero_grad()
    loss = F.cross_entropy(model(batch[0]), batch[1])
    loss.backward()
    nn.utils.clip_grad_norm_(model.weight_parameters(), cfg.grad_clip)
    optimizer.step()


def _original_arch_step(model, optimizer, arch_optimizer, train, valid, cfg, unrolled: bool):
    """cnn/architect.py, transcribed: full backward passes and a rebuilt unrolled network."""
    import timm
    import torch
    import torch.nn.functional as F

    arch_optimizer.zero_grad()
    if not unrolled:
        F.cross_entropy(model(valid[0]), valid[1]).backward()
    else:
        eta = cfg.lr
        weights = model.weight_parameters()
        loss = F.cross_entropy(model(train[0]), train[1])
        theta = torch.cat([w.data.view(-1) for w in weights])
        try:
            moment = torch.cat([optimizer.state[w]["momentum_buffer"].view(-1) for w in weights]).mul_(cfg.momentum)
        except KeyError:
            moment = torch.zeros_like(theta)
        dtheta = torch.cat([g.view(-1) for g in torch.autograd.grad(loss, weights)]) + cfg.weight_decay * theta
        new = timm.create_model("darts_search", C=16, layers=8, num_classes=10).train()  # Network.new()
        state = model.state_dict()
        flat, offset = theta.sub(moment + dtheta, alpha=eta), 0
        for (name, p) in model.named_weight_parameters():
            state[name] = flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        new.load_state_dict(state)
        F.cross_entropy(new(valid[0]), valid[1]).backward()
        dalpha = [a.grad for a in new.arch_parameters()]
        vector = [w.grad.data for w in new.weight_parameters()]
        R = 0.01 / torch.cat([v.view(-1) for v in vector]).norm().item()
        for p, v in zip(weights, vector):
            p.data.add_(v, alpha=R)
        gp = torch.autograd.grad(F.cross_entropy(model(train[0]), train[1]), model.arch_parameters())
        for p, v in zip(weights, vector):
            p.data.sub_(v, alpha=2 * R)
        gn = torch.autograd.grad(F.cross_entropy(model(train[0]), train[1]), model.arch_parameters())
        for p, v in zip(weights, vector):
            p.data.add_(v, alpha=R)
        for a, g, x, y in zip(model.arch_parameters(), dalpha, gp, gn):
            a.grad = g - eta * (x - y).div_(2 * R)
    arch_optimizer.step()


def _run_mode(mode: str, steps: int, warmup: int, threads: int) -> dict:
    import torch

    from timm_nas.search.darts import _search_step

    torch.set_num_threads(threads)
    model, batches, cfg, optimizer, arch_optimizer = _setup()
    cfg.order = 2 if mode.endswith("second") else 1

    def step(i: int) -> None:
        train, valid = batches[i % 2], batches[2 + i % 2]
        if mode == "plain":
            _plain_step(model, optimizer, train, cfg)
        elif mode in ("first", "second"):
            _search_step(model, optimizer, arch_optimizer, train, valid, cfg.lr, cfg)
        else:
            _original_arch_step(model, optimizer, arch_optimizer, train, valid, cfg, unrolled=cfg.order == 2)
            _plain_step(model, optimizer, train, cfg)

    # Peak memory of a step: growth of the peak RSS over the first (warm-up) step and the timed ones, after the
    # model, optimisers and data exist.
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(warmup):
        step(i)
    cpu, wall = [], []
    for i in range(steps):
        c0, w0 = time.process_time(), time.perf_counter()
        step(warmup + i)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall),
            "peak_rss_growth_mb": (rss1 - rss0) / 1024, "peak_rss_mb": rss1 / 1024}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (at least 1: optimiser state)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_run_mode(args.child, args.steps, args.warmup, args.threads)))
        return 0
    results = {}
    for mode in args.modes.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--steps", str(args.steps),
                              "--warmup", str(args.warmup), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  measured {mode}: {results[mode]['cpu_s']:.3f} s CPU/step", file=sys.stderr)
    base = results.get("plain")
    print(f"DARTS search step, darts_search C=16 8 cells, batch 16, 32x32, {args.threads} thread(s), median of "
          f"{args.steps} steps")
    print(f"{'mode':<12} {'cpu s/step':>11} {'wall s/step':>12} {'x plain':>8} {'peak RSS +MB':>13} {'target':>7}")
    ok = True
    for mode, r in results.items():
        ratio = r["cpu_s"] / base["cpu_s"] if base else float("nan")
        target = TARGETS.get(mode)
        mark = "" if target is None else (f"<={target}" + (" ok" if ratio <= target else " MISS"))
        ok &= target is None or ratio <= target
        print(f"{mode:<12} {r['cpu_s']:>11.3f} {r['wall_s']:>12.3f} {ratio:>8.2f} {r['peak_rss_growth_mb']:>13.1f} "
              f"{mark:>7}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
