"""Benchmark the ONNX export on onnxruntime against eager PyTorch on the CPU, measured in the same run.

Models: AutoFormer-T (``autoformer_tiny``, 224 px) and DARTS_V2-CIFAR (``darts_cifar``, C=36, 20 cells, 32 px), each
exported with :func:`timm_nas.deploy.export_onnx` (one file, dynamic batch, checked against eager). Both runtimes run
in interleaved rounds (eager, onnxruntime, eager, ...) at each batch size; the reported ratio is the median of the
per-round ratios onnxruntime / eager (below 1: onnxruntime is faster). Threads: torch's and onnxruntime's intra-op
threads are set to the same number. Run::

    python bench/bench_deploy.py                          # batch 1 and 8, 1 thread
    python bench/bench_deploy.py --threads 2 --repeats 30
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import timm
import torch

import timm_nas  # noqa: F401  (registers the models)
from _timing import interleaved_times_ms
from timm_nas.deploy import example_input, export_onnx

MODELS = {
    "AutoFormer-T": lambda: timm.create_model("autoformer_tiny"),
    "DARTS_V2-CIFAR": lambda: timm.create_model("darts_cifar", genotype="darts_v2"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds per batch size")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both runtimes")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)

    import onnxruntime

    torch.set_num_threads(args.threads)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = MODELS[name]().eval()
            path = export_onnx(model, Path(tmp) / f"{name}.onnx")
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feed_name = session.get_inputs()[0].name
            for batch in args.batch_sizes:
                x = example_input(model, batch)
                feed = {feed_name: x.numpy()}

                def eager(model=model, x=x) -> None:
                    with torch.inference_mode():
                        model(x)

                def ort(session=session, feed=feed) -> None:
                    session.run(None, feed)

                eager_ms, ort_ms = interleaved_times_ms([eager, ort], args.repeats, args.warmup)
                ratios = [o / e for e, o in zip(eager_ms, ort_ms)]
                rows.append({"model": name, "batch": batch, "threads": args.threads,
                             "eager_ms": statistics.median(eager_ms), "onnxruntime_ms": statistics.median(ort_ms),
                             "ratio": statistics.median(ratios)})
    if args.json:
        print(json.dumps({"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "rows": rows}, indent=1))
        return 0
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} thread(s), "
          f"{args.repeats} interleaved rounds")
    print(f"{'model':16s} {'batch':>5s} {'eager ms':>9s} {'ort ms':>9s} {'ort/eager':>9s}")
    for r in rows:
        print(f"{r['model']:16s} {r['batch']:5d} {r['eager_ms']:9.2f} {r['onnxruntime_ms']:9.2f} {r['ratio']:9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
