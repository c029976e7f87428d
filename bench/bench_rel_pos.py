"""Where AutoFormer's relative-position attention spends its time: the attention core alone, against plain attention,
all measured in the same run.

One attention layer's core (``q, k, v`` as views of a ``qkv`` projection output, as in the models; 197 tokens on a
14x14 grid, head dim 64, max distance 14) is timed five ways, interleaved:

* ``library``: :func:`timm_nas.layers.rel_pos_attention` as the models call it (it picks its path itself);
* ``table`` / ``per-query``: the same function forced onto each of its two ways of computing the small table
  terms (``PER_QUERY_MIN_ROWS``), to show which one the threshold should pick;
* ``explicit``: the original's formulation (``reference_rel_pos()``: ``(N, N, d)`` embeddings, explicit
  attention);
* ``plain``: ``scaled_dot_product_attention`` without relative position, the floor.

Reported per batch, head count and thread count, for the forward in inference mode and for forward + backward
(gradients of ``qkv`` and both tables): medians in ms and the ratio to plain attention. The difference
``library - plain`` is the price of the relative terms per layer; the model benchmarks
(``bench_autoformer.py``) see it once per layer. Each round runs the variants in its own order (none always
follows the explicit one, whose large temporaries it would inherit). Timed with a steady heap (:func:`timm_nas.cost.latency.steady_heap`)
so that every variant reuses its freed activations instead of faulting in fresh pages. Run::

    python bench/bench_rel_pos.py                          # batch 1 and 8, 3 heads, 1 and 2 threads
    python bench/bench_rel_pos.py --batches 1,32 --heads 4 --threads 1 --repeats 400
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import statistics
import sys
from typing import Callable

import torch
import torch.nn.functional as F

from _timing import interleaved_times_ms
from timm_nas.cost.latency import steady_heap
from timm_nas.layers import reference_rel_pos

# the module, not the function of the same name that timm_nas.layers re-exports
rel_pos_module = importlib.import_module("timm_nas.layers.rel_pos_attention")

GRID, MAX_DISTANCE, HEAD_DIM = (14, 14), 14, 64
VARIANTS = ("library", "table", "per-query", "explicit", "plain")


@contextlib.contextmanager
def _min_rows(value: int | None):
    saved = rel_pos_module.PER_QUERY_MIN_ROWS
    if value is not None:
        rel_pos_module.PER_QUERY_MIN_ROWS = value
    try:
        yield
    finally:
        rel_pos_module.PER_QUERY_MIN_ROWS = saved


def _variants(batch: int, heads: int, backward: bool) -> dict[str, Callable[[], object]]:
    g = torch.Generator().manual_seed(0)
    n = GRID[0] * GRID[1] + 1
    rows = 2 * (2 * MAX_DISTANCE + 2)
    qkv = torch.randn(batch, n, 3, heads, HEAD_DIM, generator=g).permute(2, 0, 3, 1, 4).requires_grad_(backward)
    tables_k = (torch.randn(rows, HEAD_DIM, generator=g) * 0.2).requires_grad_(backward)
    tables_v = (torch.randn(rows, HEAD_DIM, generator=g) * 0.2).requires_grad_(backward)
    weight = torch.randn(batch, n, heads * HEAD_DIM, generator=g)
    scale = HEAD_DIM ** -0.5

    def rel(q, k, v):
        return rel_pos_module.rel_pos_attention(q, k, v, tables_k, tables_v, GRID, MAX_DISTANCE, scale)

    def plain(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2).reshape(batch, n, -1)

    def run(core: Callable, context: Callable[[], contextlib.AbstractContextManager]) -> Callable[[], object]:
        def once() -> object:
            with context():
                out = core(*qkv.unbind(0))
                if backward:
                    return torch.autograd.grad((out * weight).sum(), [qkv, tables_k, tables_v], allow_unused=True)
                return out
        return once

    return {
        "library": run(rel, contextlib.nullcontext),
        "table": run(rel, lambda: _min_rows(10 ** 9)),
        "per-query": run(rel, lambda: _min_rows(0)),
        "explicit": run(rel, reference_rel_pos),
        "plain": run(plain, contextlib.nullcontext),
    }


def bench(batch: int, heads: int, backward: bool, repeats: int, warmup: int) -> dict[str, float]:
    fns = _variants(batch, heads, backward)
    context = contextlib.nullcontext() if backward else torch.inference_mode()
    with context:
        outs = {name: fn() for name, fn in fns.items() if name != "plain"}
        first = outs["explicit"] if not backward else outs["explicit"][0]
        for name, out in outs.items():  # every relative-position variant computes the same function
            torch.testing.assert_close(out if not backward else out[0], first, rtol=1e-4, atol=1e-5)
        with steady_heap():
            times = interleaved_times_ms(list(fns.values()), repeats, warmup, shuffle=True)
    return {name: statistics.median(t) for name, t in zip(fns, times)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--heads", type=int, default=3, help="attention heads (AutoFormer-T: 3-4)")
    p.add_argument("--threads", default="1,2", help="comma-separated torch intra-op thread counts")
    p.add_argument("--repeats", type=int, default=200, help="timed interleaved rounds")
    p.add_argument("--warmup", type=int, default=10, help="untimed rounds first")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, CPU float32, {GRID[0]}x{GRID[1]} grid + class token, head dim {HEAD_DIM}, "
          f"{args.heads} heads; medians of {args.repeats} interleaved rounds in ms (ratio to plain attention)")
    print(f"{'pass':<9}{'thr':>4}{'batch':>6}" + "".join(f"{v:>18}" for v in VARIANTS) + f"{'library - plain':>17}")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for backward in (False, True):
            for batch in (int(b) for b in args.batches.split(",")):
                r = bench(batch, args.heads, backward, args.repeats, args.warmup)
                cells = "".join(f"{r[v]:>9.3f} ({r[v] / r['plain']:4.2f}x)" for v in VARIANTS)
                print(f"{'fwd+bwd' if backward else 'forward':<9}{threads:>4}{batch:>6}{cells}"
                      f"{r['library'] - r['plain']:>14.3f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
