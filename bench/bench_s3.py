"""Benchmark the S3 family against baselines measured in the same run.

1. Supernet overhead: forward time of the preset's supernet under ``use_subnet(cfg)`` / ``supernet.extract(cfg)``,
   for the published model of the preset (full width) and for a few random subnets (sliced weights: the q/k/v rows,
   merging quarters and cropped tables are copied each forward). Target <= 1.10.
2. ``s3_subnet`` / timm's ``swin_s3_*_224`` on the published configs (the same computation: target ~1.0).
3. Analytic cost model throughput: configs per second for params + MACs.

Timings are medians of interleaved runs (A, B, A, B, ...), so load from elsewhere hits both sides of a ratio alike::

    python bench/bench_s3.py                       # tiny; batch 1
    python bench/bench_s3.py --presets tiny small --batch 8 --repeats 10 --threads 1
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import timm
import torch

import timm_nas  # noqa: F401  (registers the models)
from _timing import interleaved_median_ms
from timm_nas import cost
from timm_nas.models.s3 import resolve_subnet
from timm_nas.registry import load_registry

#: The supernet may cost at most 10% more than the static model of the same subnet.
MAX_SUPERNET_OVERHEAD = 1.10



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny"], choices=["tiny", "small", "base"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--random-subnets", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    published = {e["space"]: (k, e["timm_model"]) for k, e in load_registry("s3").items()}
    x = torch.randn(args.batch, 3, 224, 224)
    rows, ok = [], True
    with torch.no_grad():
        for preset in args.presets:
            key, timm_name = published[preset]
            supernet = timm.create_model(f"s3_supernet_{preset}", weight_init="skip").eval()
            cfgs = [(key, resolve_subnet(key))]
            cfgs += [(f"random{s}", supernet.space.sample(s)) for s in range(args.random_subnets)]
            for name, cfg in cfgs:
                sub = supernet.extract(cfg).eval()

                def run_super(cfg=cfg) -> None:
                    with supernet.use_subnet(cfg):
                        supernet(x)

                fns = [run_super, lambda sub=sub: sub(x)]
                if name == key:
                    ref = timm.create_model(timm_name, weight_init="skip").eval()
                    fns.append(lambda: ref(x))
                ms = interleaved_median_ms(fns, args.repeats, args.warmup)
                row = {"preset": preset, "subnet": name, "supernet_ms": round(ms[0], 2), "extract_ms": round(ms[1], 2),
                       "supernet/extract": round(ms[0] / ms[1], 3)}
                if len(ms) > 2:
                    row.update(timm_ms=round(ms[2], 2), **{"extract/timm": round(ms[1] / ms[2], 3)})
                ok &= row["supernet/extract"] <= MAX_SUPERNET_OVERHEAD
                rows.append(row)
                print(json.dumps(row))
            space = supernet.space
            configs = [space.sample(s) for s in range(2000)]
            t = time.perf_counter()
            for c in configs:
                cost.count_params(c)
                cost.count_macs(c)
            rate = len(configs) / (time.perf_counter() - t)
            print(json.dumps({"preset": preset, "analytic_configs_per_s": round(rate)}))
    if not ok:
        print(f"supernet overhead above {MAX_SUPERNET_OVERHEAD}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
