"""A small table of real accuracies in the NAS-Bench-201 space: cells trained from scratch on scikit-learn's digits.

    python bench/search_quality/nb201_digits_table.py --cells 200 --out runs/nb201_digits    # ~30 min, 1 core
    timm-nas proxy-bench --space nb201 --table runs/nb201_digits/table.csv --proxies synflow,nwot,zico \
        --model-args '{"C": 8, "N": 1}' --out runs/nb201_digits/proxy_bench
    timm-nas oracle-search --space nb201 --oracle runs/nb201_digits/table.csv --budget 20 --seeds 0,1,2,3,4 \
        --out runs/nb201_digits/oracle

A seeded sample of ``--cells`` distinct cells of the 15,625 (NB201Space order), each built as ``nb201_cifar`` with
``C`` / ``N`` (default 8 / 1: a small version of the benchmark's C=16, N=5 network), trained with one recipe and one
seed (the digits study's DARTS recipe: SGD, cosine schedule, shift augmentation; 8 epochs instead of its 20, which
bring most cells to 99%, where a table cannot rank them) on the study's fixed split at 32 px, and evaluated on its validation and test splits. ``table.csv`` (``arch, accuracy, test_accuracy,
params``) holds validation accuracy as ``accuracy``; ``cells.jsonl`` is the per-cell log, appended as cells finish, so
an interrupted run resumes where it stopped.

This table is ours, small and made on a toy task: it checks that ``proxy-bench`` and ``oracle-search`` run end to end
on real trained accuracies and gives a second, independent look at proxy quality. It is not NAS-Bench-201's table
(CIFAR-10/100 and ImageNet16-120 at 200 epochs, from the benchmark's release), which remains the yardstick to quote.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if not (HERE.parents[1] / "timm_nas").is_dir():  # pragma: no cover - the script lives in the checkout
    raise SystemExit("run this script from a timm-nas checkout")
sys.path.insert(1, str(HERE.parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=int, default=200, help="distinct cells to train (default 200)")
    p.add_argument("--seed", type=int, default=0, help="sample, initialisation and data-order seed (default 0)")
    p.add_argument("--C", type=int, default=8, help="stem channels (default 8; the benchmark's is 16)")
    p.add_argument("--N", type=int, default=1, help="cells per stage (default 1; the benchmark's is 5)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", required=True, help="output folder (resumed)")
    args = p.parse_args(argv)
    if args.cells < 2:
        p.error(f"--cells must be at least 2, got {args.cells}")

    import dataclasses

    import timm
    import torch

    import timm_nas  # noqa: F401  (registers the models)
    from digits_study._common import StudyTensors
    from digits_study.config import DartsStudyConfig
    from digits_study.data import load_digits_data
    from digits_study.training import derive_seed, seeded, train_model
    from timm_nas import cost
    from timm_nas._io import atomic_write_text
    from timm_nas.spaces.nb201 import NB201Space

    torch.set_num_threads(args.threads)
    budget = dataclasses.replace(DartsStudyConfig.budget, epochs=args.epochs)
    space = NB201Space()
    g = torch.Generator().manual_seed(derive_seed(args.seed, "nb201-sample"))
    indices = torch.randperm(len(space), generator=g)[:args.cells].tolist()
    tensors = StudyTensors.from_data(load_digits_data(32))
    identity = {"cells": args.cells, "seed": args.seed, "C": args.C, "N": args.N, "budget": dataclasses.asdict(budget),
                "data": "sklearn digits, digits study split, 32 px"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "run.json"
    if run_file.is_file() and json.loads(run_file.read_text()) != identity:
        raise SystemExit(f"{out} holds a table made with other arguments ({run_file}); choose another --out")
    atomic_write_text(run_file, json.dumps(identity, indent=2) + "\n")
    log = out / "cells.jsonl"
    done = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: redone
                continue
            done[rec["index"]] = rec
    with open(log, "a", encoding="utf-8") as f:
        for k, index in enumerate(indices):
            if index in done:
                continue
            cell = space.cell_at(index)
            start = time.perf_counter()
            with seeded(derive_seed(args.seed, "nb201-init")):
                model = timm.create_model("nb201_cifar", genotype=index, C=args.C, N=args.N, num_classes=10)
            res = train_model(model, tensors.train, budget, derive_seed(args.seed, "nb201-data"), fill=tensors.fill,
                              eval_sets={"val": tensors.val, "test": tensors.test})
            rec = {"index": index, "arch": cell.to_string(), "accuracy": res.accuracy["val"],
                   "test_accuracy": res.accuracy["test"],
                   "params": cost.count_params(cell, C=args.C, N=args.N, num_classes=10),
                   "seconds": round(time.perf_counter() - start, 2)}
            f.write(json.dumps(rec) + "\n")
            f.flush()
            done[index] = rec
            print(f"[{len(done)}/{args.cells}] {rec['arch']}: val {rec['accuracy']:.2f}% test "
                  f"{rec['test_accuracy']:.2f}% ({rec['params']} params, {rec['seconds']:.1f}s)", flush=True)
    rows = [done[i] for i in indices]
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, ["arch", "accuracy", "test_accuracy", "params"], extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "table.csv", text.getvalue())
    print(f"wrote {out / 'table.csv'} ({len(rows)} cells)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
