"""Benchmark the AutoFormer family against baselines measured in the same run.

1. Supernet overhead: forward time of ``supernet`` under ``use_subnet(cfg)`` / ``supernet.extract(cfg)`` for the
   published AutoFormer-T/S/B configs (target <= 1.10).
2. Cost of relative position: ``extract(cfg)`` / timm's ``VisionTransformer`` of the same width, depth, heads and
   MLP width. timm's ViT has one head count for all layers, so this uses a uniform twin of each published subnet
   (heads = E / 64, the MLP ratio averaged), which has exactly the ViT's linear shapes: the ratio is the price of
   the two relative-position products and their table gathers (and of the explicit, non-fused attention they
   require).
3. Analytic cost model throughput: configs per second for params + MACs (target >= 10,000).

Timings are medians of interleaved runs (A, B, A, B, ...), so drift from other load on the machine hits both
sides of a ratio alike. Run::

    python bench/bench_autoformer.py                 # tiny, small, base; batch 1 and 8
    python bench/bench_autoformer.py --sizes tiny --repeats 20 --threads 1
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import timm
import torch
from timm.models.vision_transformer import VisionTransformer

import timm_nas  # noqa: F401  (registers the models)
from _timing import interleaved_median_ms
from timm_nas import cost
from timm_nas.registry import get_entry
from timm_nas.spaces.autoformer import HEAD_DIM, AutoFormerSpace, AutoFormerSubnet

#: Targets from issue 2.
MAX_SUPERNET_OVERHEAD = 1.10
MIN_CONFIGS_PER_SECOND = 10_000



def _uniform_twin(cfg: AutoFormerSubnet) -> AutoFormerSubnet:
    """Same width and depth, ``E / 64`` heads in every layer (so qk width = E, as in timm's ViT), mean MLP ratio."""
    heads = cfg.embed_dim // HEAD_DIM
    ratio = sum(cfg.mlp_ratio) / cfg.depth
    return AutoFormerSubnet(cfg.embed_dim, cfg.depth, (heads,) * cfg.depth, (ratio,) * cfg.depth)


def _timm_vit(cfg: AutoFormerSubnet) -> VisionTransformer:
    return VisionTransformer(img_size=224, patch_size=16, embed_dim=cfg.embed_dim, depth=cfg.depth,
                             num_heads=cfg.num_heads[0], mlp_ratio=cfg.mlp_ratio[0], qkv_bias=True,
                             global_pool="avg", class_token=True, num_classes=1000)


def bench_forward(size: str, batch: int, repeats: int, warmup: int) -> dict:
    supernet = timm.create_model(f"autoformer_supernet_{size}").eval()
    published = AutoFormerSubnet.from_dict(get_entry("autoformer", f"autoformer_{size}")["model_args"]["subnet"])
    twin = _uniform_twin(published)
    static = supernet.extract(published).eval()
    static_twin = supernet.extract(twin).eval()
    vit = _timm_vit(twin).eval()
    assert cost.real_params(vit) + 4 * (2 * 14 + 2) * HEAD_DIM * twin.depth == cost.real_params(static_twin)
    x = torch.randn(batch, 3, 224, 224)

    def run_supernet() -> None:
        with supernet.use_subnet(published):
            supernet(x)

    with torch.inference_mode():
        with supernet.use_subnet(published):
            torch.testing.assert_close(supernet(x), static(x), atol=1e-4, rtol=1e-4)
        t_super, t_static, t_twin, t_vit = interleaved_median_ms(
            [run_supernet, lambda: static(x), lambda: static_twin(x), lambda: vit(x)], repeats, warmup)
    return dict(size=size, batch=batch, supernet_ms=t_super, extract_ms=t_static, twin_extract_ms=t_twin,
                timm_vit_ms=t_vit, supernet_over_extract=t_super / t_static, extract_over_timm_vit=t_twin / t_vit)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small,base", help="comma-separated: tiny, small, base")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--cost-configs", type=int, default=10_000, help="configs for the cost throughput")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, timm {timm.__version__}, {torch.get_num_threads()} threads, CPU float32, 224 px")
    rows = []
    print(f"{'model':<14}{'batch':>6}{'supernet ms':>13}{'extract ms':>12}{'ratio':>8}   "
          f"{'twin ms':>9}{'timm ViT ms':>13}{'ratio':>8}")
    for size in args.sizes.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            r = bench_forward(size, batch, args.repeats, args.warmup)
            rows.append(r)
            print(f"{'AutoFormer-' + size[0].upper():<14}{batch:>6}{r['supernet_ms']:>13.1f}{r['extract_ms']:>12.1f}"
                  f"{r['supernet_over_extract']:>8.3f}   {r['twin_extract_ms']:>9.1f}{r['timm_vit_ms']:>13.1f}"
                  f"{r['extract_over_timm_vit']:>8.3f}", flush=True)
    c = bench_cost(args.cost_configs)
    print(f"analytic cost model: {c['configs_per_s']:,.0f} configs/s (params + MACs, {c['configs']} base-space configs)")
    worst = max(r["supernet_over_extract"] for r in rows)
    ok = worst <= MAX_SUPERNET_OVERHEAD and c["configs_per_s"] >= MIN_CONFIGS_PER_SECOND
    print(f"supernet / extract worst {worst:.3f} (target <= {MAX_SUPERNET_OVERHEAD}); cost throughput target >= "
          f"{MIN_CONFIGS_PER_SECOND:,}/s: {'met' if ok else 'NOT met'}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(dict(forward=rows, cost=c, torch=torch.__version__, threads=torch.get_num_threads()), f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
