"""A search under a latency limit, then the exported subnet measured end to end on this device.

    timm-nas latency build --model autoformer_supernet_tiny --batch-size 1 --out lat_t_b1.json
    python bench/bench_latency_limit.py --table lat_t_b1.json --limit 40 --candidates 200 --out runs/lat_limit

Runs ``timm-nas search tf-tas --latency-table TABLE --latency-max LIMIT`` (random candidates inside the limit,
ranked by DSS) on the table's supernet, then loads the exported subnet back (``local-dir:``) and measures it as the
table was measured (its device, threads, dtype, batch, warm-up and repeats; with the table's reference subnet
alternated in every visit and the median ratio times the reference's fastest round, or for a table without one the
minimum over ``--rounds`` rounds of the table's statistic of its repeats), next to the predicted latency recorded in
``best.json``. The limit holds when the measured latency is within the limit plus the predictor's error (``timm-nas
latency check`` reports its MAPE).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", required=True, help="latency table (timm-nas latency build)")
    p.add_argument("--limit", type=float, required=True, help="--latency-max of the search, ms")
    p.add_argument("--candidates", type=int, default=200, help="tf-tas candidates (default 200)")
    p.add_argument("--rounds", type=int, default=6, help="measurement rounds of the export (default 6)")
    p.add_argument("--out", required=True, help="run folder of the search")
    args = p.parse_args(argv)

    import timm
    import torch

    import timm_nas  # noqa: F401
    from timm_nas import cli
    from timm_nas.commands.latency import _create_supernet
    from timm_nas.cost.latency import _DTYPES, LatencyTable, latency_space, paired_ms, time_interleaved

    table = LatencyTable.load(args.table)
    s = table.setting
    space = s.get("create_args", {}).get("space", s["model"].rsplit("_", 1)[-1])
    argv_search = ["search", "tf-tas", "--model", "autoformer_supernet", "--space",
                   space if isinstance(space, str) else json.dumps(space), "--candidates", str(args.candidates),
                   "--latency-table", args.table, "--latency-max", str(args.limit), "--params-min", "0",
                   "--params-max", "1000", "--no-progress", "--out", args.out]
    if s["family"] != "autoformer":
        raise SystemExit("this example searches AutoFormer spaces (tf-tas); build the table from an AutoFormer "
                         "supernet")
    rc = cli.main(argv_search)
    if rc:
        return rc
    best = json.loads((Path(args.out) / "best.json").read_text())
    model = timm.create_model(f"local-dir:{Path(args.out) / 'export'}", pretrained=True)
    measure = s.get("measure", {})
    dtype = _DTYPES[s["dtype"]]
    model = model.to(device=s["device"], dtype=dtype).eval()
    size = s["img_size"]
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(s["batch_size"], 3, h, w, device=s["device"], dtype=dtype)
    previous = torch.get_num_threads()
    torch.set_num_threads(s["threads"])
    reference = None
    if table.paired:
        supernet = _create_supernet(s["model"], dict(s["create_args"]))
        ref_model = supernet.extract(latency_space(supernet).smallest()).to(device=s["device"], dtype=dtype).eval()
        reference = lambda: (lambda: ref_model(x))  # noqa: E731
    try:
        out = time_interleaved([lambda: (lambda: model(x))], s["device"], rounds=args.rounds,
                               warmup=measure.get("warmup", 1), repeats=measure.get("repeats", 4),
                               stat=measure.get("stat", "min"), reference=reference)
    finally:
        torch.set_num_threads(previous)
    if reference is None:
        rounds = out[0]
        measured = min(rounds)
    else:
        rounds = [r * min(out[1]) for r in out[0]]
        measured = paired_ms(out[0], out[1])
    print()
    print(f"| limit (ms) | predicted (ms) | measured (ms) | measured / limit | params (M) | device |")
    print("|---:|---:|---:|---:|---:|---|")
    print(f"| {args.limit:.2f} | {best['latency_ms']:.2f} | {measured:.2f} | {measured / args.limit:.3f} | "
          f"{best['params'] / 1e6:.2f} | {best['latency_device']} |")
    print(f"(measurement rounds: {', '.join(f'{r:.2f}' for r in rounds)} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
