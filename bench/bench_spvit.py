"""Benchmark the released SPViT-DeiT-S against timm's DeiT-S, measured in the same run.

Latency of ``spvit_deit_small`` (the released architecture: a 1x1 bottleneck convolution with materialised kernels
in layer 0, MSA elsewhere, pruned FFNs) over ``deit_small_patch16_224`` at batch 1 and 32 on the CPU, with the MACs
(``timm_nas.cost.measure_macs``, cross-checked against the analytic ``count_macs``) and parameters of both.

The paper's FLOPs ratio is 3.3G / 4.6G = 0.72; the original fine-tune model (kernels rebuilt from the attention
weights on every forward) runs at 0.75x (batch 1) and 0.78x (batch 32) of timm's DeiT-S on a 2-core CPU.
Target (issue 7): <= 0.75x at both batch sizes.

Both models run in interleaved rounds (A, B, A, B, ...); the reported ratio is the median of the per-round
ratios, so load from other processes that drifts over the run hits both sides alike. On a shared machine prefer
``--threads 1``: a multi-threaded op waits for its slowest thread, which amplifies interference. Run::

    python bench/bench_spvit.py                      # batch 1 and 32
    python bench/bench_spvit.py --threads 1 --repeats 30
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

import timm
import torch

import timm_nas  # noqa: F401  (registers the models)
from _timing import interleaved_times_ms
from timm_nas import cost

#: Target latency ratio from issue 7 (the original fine-tune model reaches 0.75 / 0.78).
MAX_LATENCY_RATIO = 0.75



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default: 120 at batch 1, 10 above)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    spvit = timm.create_model("spvit_deit_small").eval()
    deit = timm.create_model("deit_small_patch16_224").eval()
    one = torch.randn(1, 3, 224, 224)
    macs = {"spvit": cost.measure_macs(spvit, one), "deit": cost.measure_macs(deit, one)}
    analytic = cost.count_macs(spvit.arch, embed_dim=spvit.embed_dim, num_heads=spvit.num_heads)
    if analytic != macs["spvit"]:
        print(f"warning: analytic MACs {analytic} != measured {macs['spvit']}", file=sys.stderr)
    params = {"spvit": cost.real_params(spvit), "deit": cost.real_params(deit)}
    result: dict = {"threads": torch.get_num_threads(), "macs": macs, "macs_analytic_spvit": analytic,
                    "params": params, "macs_ratio": macs["spvit"] / macs["deit"],
                    "params_ratio": params["spvit"] / params["deit"], "latency_ms": {}, "latency_ratio": {}}
    ok = True
    with torch.inference_mode():
        for bs in args.batch_sizes:
            x = torch.randn(bs, 3, 224, 224)
            repeats = args.repeats or (120 if bs == 1 else 10)
            a, b = interleaved_times_ms([lambda: spvit(x), lambda: deit(x)], repeats, args.warmup)
            # the ratio is the median of the per-round ratios: each round times both models back to back, so load
            # from other processes that drifts over the run cancels; the ratio of the fastest runs is reported too
            ratio = statistics.median(ta / tb for ta, tb in zip(a, b))
            result["latency_ms"][bs] = {"spvit_deit_small": statistics.median(a),
                                        "deit_small_patch16_224": statistics.median(b),
                                        "spvit_deit_small_min": min(a), "deit_small_patch16_224_min": min(b)}
            result["latency_ratio"][bs] = ratio
            result.setdefault("latency_ratio_of_min", {})[bs] = min(a) / min(b)
            ok &= ratio <= MAX_LATENCY_RATIO
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"torch threads: {result['threads']}")
        print(f"MACs   spvit_deit_small {macs['spvit'] / 1e9:.3f} G (analytic {analytic / 1e9:.3f} G)  "
              f"deit_small {macs['deit'] / 1e9:.3f} G  ratio {result['macs_ratio']:.3f}")
        print(f"params spvit_deit_small {params['spvit'] / 1e6:.2f} M  deit_small {params['deit'] / 1e6:.2f} M  "
              f"ratio {result['params_ratio']:.3f}")
        for bs in args.batch_sizes:
            lat = result["latency_ms"][bs]
            print(f"batch {bs:3d}: median spvit {lat['spvit_deit_small']:8.2f} ms  deit "
                  f"{lat['deit_small_patch16_224']:8.2f} ms  ratio {result['latency_ratio'][bs]:.3f} "
                  f"(target <= {MAX_LATENCY_RATIO})  |  ratio of fastest runs "
                  f"{result['latency_ratio_of_min'][bs]:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
