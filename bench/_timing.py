"""Timing helper shared by the benchmarks (imported as ``_timing``: each benchmark runs as ``python bench/x.py``)."""
from __future__ import annotations

import random
import statistics
import time
from typing import Callable


def interleaved_times_ms(fns: list[Callable[[], object]], repeats: int, warmup: int,
                         shuffle: bool = False) -> list[list[float]]:
    """Wall times (ms) of each function over ``repeats`` interleaved rounds (A, B, A, B, ...), after ``warmup``
    untimed rounds. Interleaving makes load from other processes that drifts over the run hit every side alike.
    ``shuffle``: run each round in its own order (a shuffle seeded by the round number), so that no function
    always runs right after the same neighbour, whose caches and freed memory it would inherit."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    order = list(range(len(fns)))
    for r in range(repeats):
        if shuffle:
            random.Random(r).shuffle(order)
        for i in order:
            t = time.perf_counter()
            fns[i]()
            times[i].append((time.perf_counter() - t) * 1e3)
    return times


def interleaved_median_ms(fns: list[Callable[[], object]], repeats: int, warmup: int) -> list[float]:
    """Median wall time (ms) of each function, run in interleaved rounds (see :func:`interleaved_times_ms`)."""
    return [statistics.median(t) for t in interleaved_times_ms(fns, repeats, warmup)]
