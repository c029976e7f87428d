"""Benchmark the AutoFormer family against baselines measured in the same run.

1. Supernet overhead: forward time of ``supernet`` under ``use_subnet(cfg)`` / ``supernet.extract(cfg)`` for the
   published AutoFormer-T/S/B configs (target <= 1.05).
2. Cost of relative position: ``extract(cfg)`` / timm's ``VisionTransformer`` of the same width, depth, heads and
   MLP width. timm's ViT has one head count for all layers, so this uses a uniform twin of each published subnet
   (heads = E / 64, the MLP ratio averaged), which has exactly the ViT's linear shapes: the ratio is the price of
   the two relative-position terms (targets <= 1.15 at batch 8, <= 1.30 at batch 1). The same twin run in the
   original's explicit formulation (``reference_rel_pos()``: ``(N, N, d)`` embeddings, explicit attention) gives
   the ratio before the row/column formulation.
3. Peak memory of one training step (forward + backward, batch 32) of the extracted AutoFormer-S, its uniform twin
   (also in the explicit formulation) and the twin's timm ViT (target: AutoFormer-S / ViT <= 1.25). Each model
   runs in a fresh subprocess; the number is the rise of the process's peak resident set size
   (``getrusage(RUSAGE_SELF).ru_maxrss``) over its resident size just before the step (model and input already
   in memory, gradients not yet allocated): the step's high point (activations saved for backward, gradients,
   temporaries) as the OS saw it. glibc is told to mmap every block of 128 KiB or more, so freed tensors leave the
   resident set at once and the peak reflects live tensors, not allocator history.
4. Analytic cost model throughput: configs per second for params + MACs (target >= 10,000).

Timings are medians of interleaved runs (A, B, A, B, ...), so drift from other load on the machine hits all sides
of a ratio alike. Run::

    python bench/bench_autoformer.py                                  # tiny, small, base; batch 1, 8; 1, 2 threads
    python bench/bench_autoformer.py --sizes tiny --repeats 20 --threads 1
    python bench/bench_autoformer.py --sizes tiny,small --skip-memory --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import timm
import torch
from timm.models.vision_transformer import VisionTransformer

import timm_nas  # noqa: F401  (registers the models)
from _timing import interleaved_median_ms
from timm_nas import cost
from timm_nas.layers import reference_rel_pos
from timm_nas.registry import get_entry
from timm_nas.spaces.autoformer import HEAD_DIM, AutoFormerSpace, AutoFormerSubnet

MAX_SUPERNET_OVERHEAD = 1.05
MAX_TWIN_OVER_VIT = {1: 1.30, 8: 1.15}  # by batch size
MAX_MEMORY_OVER_VIT = 1.25
MIN_CONFIGS_PER_SECOND = 10_000
MEMORY_BATCH = 32
MEMORY_MODELS = ("autoformer", "twin", "twin_explicit", "vit")
#: glibc: serve every block of 128 KiB or more by mmap and unmap it on free, so the resident size follows the live
#: tensors (by default the threshold adapts upwards and freed activations stay resident, in a pattern that
#: depends on allocation order rather than on how much is live).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def _uniform_twin(cfg: AutoFormerSubnet) -> AutoFormerSubnet:
    """Same width and depth, ``E / 64`` heads in every layer (so qk width = E, as in timm's ViT), mean MLP ratio."""
    heads = cfg.embed_dim // HEAD_DIM
    ratio = sum(cfg.mlp_ratio) / cfg.depth
    return AutoFormerSubnet(cfg.embed_dim, cfg.depth, (heads,) * cfg.depth, (ratio,) * cfg.depth)


def _timm_vit(cfg: AutoFormerSubnet) -> VisionTransformer:
    return VisionTransformer(img_size=224, patch_size=16, embed_dim=cfg.embed_dim, depth=cfg.depth,
                             num_heads=cfg.num_heads[0], mlp_ratio=cfg.mlp_ratio[0], qkv_bias=True,
                             global_pool="avg", class_token=True, num_classes=1000)


def _published(size: str) -> AutoFormerSubnet:
    return AutoFormerSubnet.from_dict(get_entry("autoformer", f"autoformer_{size}")["model_args"]["subnet"])


def bench_forward(size: str, batch: int, repeats: int, warmup: int) -> dict:
    supernet = timm.create_model(f"autoformer_supernet_{size}").eval()
    published = _published(size)
    twin = _uniform_twin(published)
    static = supernet.extract(published).eval()
    static_twin = supernet.extract(twin).eval()
    vit = _timm_vit(twin).eval()
    assert cost.real_params(vit) + 4 * (2 * 14 + 2) * HEAD_DIM * twin.depth == cost.real_params(static_twin)
    x = torch.randn(batch, 3, 224, 224)

    def run_supernet() -> None:
        with supernet.use_subnet(published):
            supernet(x)

    def run_twin_explicit() -> None:
        with reference_rel_pos():
            static_twin(x)

    with torch.inference_mode():
        with supernet.use_subnet(published):
            torch.testing.assert_close(supernet(x), static(x), atol=1e-4, rtol=1e-4)
        with reference_rel_pos():
            explicit = static_twin(x)
        torch.testing.assert_close(static_twin(x), explicit, atol=1e-4, rtol=1e-4)
        t_super, t_static, t_twin, t_vit, t_explicit = interleaved_median_ms(
            [run_supernet, lambda: static(x), lambda: static_twin(x), lambda: vit(x), run_twin_explicit],
            repeats, warmup)
    return dict(size=size, batch=batch, threads=torch.get_num_threads(), supernet_ms=t_super, extract_ms=t_static,
                twin_ms=t_twin, timm_vit_ms=t_vit, twin_explicit_ms=t_explicit,
                supernet_over_extract=t_super / t_static, twin_over_vit=t_twin / t_vit,
                twin_explicit_over_vit=t_explicit / t_vit)


def _rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def memory_child(which: str, size: str, batch: int) -> dict:
    """One training step of one model in this (fresh) process; the peak RSS rise over the RSS before the step."""
    torch.manual_seed(0)
    published = _published(size)
    twin = _uniform_twin(published)
    if which == "vit":
        model = _timm_vit(twin)
    else:
        model = timm.create_model("autoformer_subnet", subnet=(published if which == "autoformer" else twin).to_dict())
    model.train()
    x = torch.randn(batch, 3, 224, 224)
    context = reference_rel_pos() if which == "twin_explicit" else torch.enable_grad()
    before, peak_before = _rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    with context:
        model(x).logsumexp(-1).mean().backward()
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(model=which, peak_rise_mib=peak - before, rss_before_mib=before, peak_before_mib=peak_before,
                step_s=seconds)


def bench_memory(size: str, batch: int, threads: int) -> dict[str, dict]:
    out = {}
    for which in MEMORY_MODELS:
        proc = subprocess.run([sys.executable, __file__, "--memory-child", which, "--sizes", size,
                               "--memory-batch", str(batch), "--threads", str(threads)],
                              capture_output=True, text=True, check=True, env=dict(os.environ, **MALLOC_ENV))
        out[which] = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out[which]["peak_rise_mib"] > out[which]["peak_before_mib"] - out[which]["rss_before_mib"], \
            "the step's peak did not exceed the set-up's: the rise understates it"
    return out


def bench_cost(n: int) -> dict:
    space = AutoFormerSpace.preset("base")
    g = torch.Generator().manual_seed(0)
    cfgs = [space.sample(g) for _ in range(n)]
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for cfg in cfgs:
            cost.count_params(cfg)
            cost.count_macs(cfg)
        best = min(best, time.perf_counter() - t)
    return dict(configs=n, configs_per_s=n / best)


def _mark(ok: bool) -> str:
    return "" if ok else " *"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small,base", help="comma-separated: tiny, small, base")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch intra-op thread counts")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--memory-size", default="small", help="space of the training-memory comparison")
    parser.add_argument("--memory-batch", type=int, default=MEMORY_BATCH)
    parser.add_argument("--skip-memory", action="store_true", help="skip the training-memory comparison")
    parser.add_argument("--skip-forward", action="store_true", help="skip the forward-time comparison")
    parser.add_argument("--cost-configs", type=int, default=10_000, help="configs for the cost throughput")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--memory-child", default=None, choices=MEMORY_MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    if args.memory_child:
        torch.set_num_threads(threads[0])
        print(json.dumps(memory_child(args.memory_child, args.sizes, args.memory_batch)))
        return 0

    print(f"torch {torch.__version__}, timm {timm.__version__}, CPU float32, 224 px; ratios marked * miss their "
          f"target (supernet / extract <= {MAX_SUPERNET_OVERHEAD}, twin / ViT <= {MAX_TWIN_OVER_VIT})")
    rows, ok = [], True
    if not args.skip_forward:
        print(f"{'model':<14}{'thr':>4}{'batch':>6}{'supernet ms':>13}{'extract ms':>12}{'ratio':>8}   "
              f"{'twin ms':>9}{'timm ViT ms':>13}{'ratio':>8}   {'explicit ms':>12}{'ratio':>8}")
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for size in args.sizes.split(","):
                for batch in (int(b) for b in args.batches.split(",")):
                    r = bench_forward(size, batch, args.repeats, args.warmup)
                    rows.append(r)
                    ok_super = r["supernet_over_extract"] <= MAX_SUPERNET_OVERHEAD
                    ok_twin = r["twin_over_vit"] <= MAX_TWIN_OVER_VIT.get(batch, float("inf"))
                    ok = ok and ok_super and ok_twin
                    print(f"{'AutoFormer-' + size[0].upper():<14}{n_threads:>4}{batch:>6}{r['supernet_ms']:>13.1f}"
                          f"{r['extract_ms']:>12.1f}{r['supernet_over_extract']:>8.3f}{_mark(ok_super):2} "
                          f"{r['twin_ms']:>9.1f}{r['timm_vit_ms']:>13.1f}{r['twin_over_vit']:>8.3f}"
                          f"{_mark(ok_twin):2} {r['twin_explicit_ms']:>12.1f}{r['twin_explicit_over_vit']:>8.3f}",
                          flush=True)
    memory = None
    if not args.skip_memory:
        memory = bench_memory(args.memory_size, args.memory_batch, threads[0])
        vit = memory["vit"]["peak_rise_mib"]
        print(f"training step (fwd + bwd) peak memory, AutoFormer-{args.memory_size[0].upper()} shape, batch "
              f"{args.memory_batch}, {threads[0]} thread(s), fresh process each (peak RSS rise over the step):")
        for which in MEMORY_MODELS:
            m = memory[which]
            ratio = m["peak_rise_mib"] / vit
            print(f"  {which:<14}{m['peak_rise_mib']:>9.0f} MiB  x{ratio:.3f} of timm ViT  ({m['step_s']:.1f} s)")
        mem_ok = memory["autoformer"]["peak_rise_mib"] / vit <= MAX_MEMORY_OVER_VIT
        ok = ok and mem_ok
        print(f"  AutoFormer / ViT target <= {MAX_MEMORY_OVER_VIT}: {'met' if mem_ok else 'NOT met'}")
    c = bench_cost(args.cost_configs)
    print(f"analytic cost model: {c['configs_per_s']:,.0f} configs/s (params + MACs, {c['configs']} base-space configs)")
    ok = ok and c["configs_per_s"] >= MIN_CONFIGS_PER_SECOND
    print(f"all targets: {'met' if ok else 'NOT met'}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(dict(forward=rows, memory=memory, cost=c, torch=torch.__version__), f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
