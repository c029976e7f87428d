"""Timing helper shared by the benchmarks (imported as ``_timing``: each benchmark runs as ``python bench/x.py``)."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved_times_ms(fns: list[Callable[[], object]], repeats: int, warmup: int) -> list[list[float]]:
    """Wall times (ms) of each function over ``repeats`` interleaved rounds (A, B, A, B, ...), after ``warmup``
    untimed rounds. Interleaving makes load from other processes that drifts over the run hit every side alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            times[i].append((time.perf_counter() - t) * 1e3)
    return times


def interleaved_median_ms(fns: list[Callable[[], object]], repeats: int, warmup: int) -> list[float]:
    """Median wall time (ms) of each function, run in interleaved rounds (see :func:`interleaved_times_ms`)."""
    return [statistics.median(t) for t in interleaved_times_ms(fns, repeats, warmup)]
