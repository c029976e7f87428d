"""Rank correlations with bootstrap intervals, for comparing proxies with measured accuracy.

Kendall's tau is tau-b (ties in either ranking are accounted for: analytic costs and accuracies on a few hundred
images tie often). Intervals are percentile bootstrap intervals over architectures: resample the architectures
with replacement, recompute tau. The difference to a baseline (tau of a proxy minus tau of ``params``) is
bootstrapped on the *same* resamples (paired), so "does this proxy rank better than the parameter count" gets
an interval of its own instead of two overlapping ones.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["kendall_tau", "spearman_rho", "bootstrap_taus", "correlation_table", "summary", "pooled_seed_std"]


def _finite_pairs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"x and y must be 1-D sequences of equal length, got shapes {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of ``x`` and ``y`` (non-finite pairs dropped); ``nan`` when either is constant or fewer
    than two pairs remain."""
    from scipy.stats import kendalltau

    a, b = _finite_pairs(x, y)
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(kendalltau(a, b).statistic)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (non-finite pairs dropped); ``nan`` when either is constant."""
    from scipy.stats import spearmanr

    a, b = _finite_pairs(x, y)
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(spearmanr(a, b).statistic)


def bootstrap_taus(scores: Mapping[str, Sequence[float]], target: Sequence[float], *, resamples: int,
                   seed: int) -> dict[str, np.ndarray]:
    """Kendall tau of every score with ``target`` on ``resamples`` bootstrap resamples of the architectures.

    All scores use the same resamples (drawn from ``numpy.random.default_rng(seed)``), so differences between
    scores are paired.

    Returns:
        name -> array of ``resamples`` taus (``nan`` where a resample is degenerate).
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    y = np.asarray(target, dtype=np.float64)
    n = len(y)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    out = {}
    for name, s in scores.items():
        x = np.asarray(s, dtype=np.float64)
        if len(x) != n:
            raise ValueError(f"score {name!r} has {len(x)} values for {n} architectures")
        out[name] = np.array([kendall_tau(x[idx], y[idx]) for idx in draws])
    return out


def _interval(values: np.ndarray, level: float) -> list[float]:
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return [math.nan, math.nan]
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def correlation_table(scores: Mapping[str, Sequence[float]], target: Sequence[float], *, baseline: str = "params",
                      resamples: int = 1000, seed: int = 0, level: float = 0.95) -> list[dict[str, Any]]:
    """One row per score: Kendall tau (and interval), Spearman rho, and the paired difference to ``baseline``.

    Args:
        scores: name -> one value per architecture (higher should mean better).
        target: the measured quantity (test accuracy), one value per architecture.
        baseline: the score every other is compared with (a row of its own too).
        resamples: bootstrap resamples.
        seed: seed of the resampling.
        level: coverage of the intervals.

    Returns:
        Rows ``{'name', 'n', 'tau', 'tau_ci', 'rho', 'delta_vs_baseline', 'delta_ci', 'beats_baseline'}``;
        ``beats_baseline`` is ``'yes'`` when the whole interval of the difference is above 0, ``'no'`` when it is
        below, ``'unclear'`` otherwise (``None`` for the baseline itself).
    """
    if baseline not in scores:
        raise ValueError(f"baseline {baseline!r} is not among the scores {sorted(scores)}")
    boot = bootstrap_taus(scores, target, resamples=resamples, seed=seed)
    rows = []
    for name, s in scores.items():
        row: dict[str, Any] = {"name": name, "n": int(np.isfinite(np.asarray(s, dtype=np.float64)).sum()),
                               "tau": kendall_tau(s, target), "tau_ci": _interval(boot[name], level),
                               "rho": spearman_rho(s, target)}
        if name == baseline:
            row.update(delta_vs_baseline=None, delta_ci=None, beats_baseline=None)
        else:
            diff = boot[name] - boot[baseline]
            ci = _interval(diff, level)
            row.update(delta_vs_baseline=row["tau"] - kendall_tau(scores[baseline], target), delta_ci=ci,
                       beats_baseline="yes" if ci[0] > 0 else "no" if ci[1] < 0 else "unclear")
        rows.append(row)
    return rows


def summary(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation (n - 1), min and max of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
    return {"n": int(len(v)), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


def pooled_seed_std(runs: Sequence[Sequence[float]]) -> float | None:
    """Pooled standard deviation of repeated measurements around each group's mean (``None`` without repeats)."""
    variances = []
    for accs in runs:
        if len(accs) > 1:
            mean = sum(accs) / len(accs)
            variances.append(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1))
    return math.sqrt(sum(variances) / len(variances)) if variances else None
