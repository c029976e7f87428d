"""Pareto fronts of score against cost, and their plot.

A candidate is on the front of ``cost`` (``'params'``, ``'macs'`` or ``'latency'``, the latency a table predicts) when
no other candidate has a lower or equal cost and a strictly higher score. The plot (``pareto.png``) shows score
against parameters, MACs and (in a search with a latency table) predicted latency, every candidate in grey, each front as a line, and the best candidate starred; it needs matplotlib (the
``plots`` extra) and is skipped with a warning without it.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence

from .._io import atomic_write
from .engine import Candidate

__all__ = ["pareto_front", "plot_pareto", "COSTS", "costs_of"]

#: Cost axes: attribute, axis label, scale.
COSTS = {"params": ("params", "parameters (M)", 1e6), "macs": ("macs", "MACs (G)", 1e9),
         "latency": ("latency_ms", "predicted latency (ms)", 1.0)}


def costs_of(candidates: Sequence[Candidate]) -> list[str]:
    """The costs every candidate has: params and MACs, and latency in a search with a latency table."""
    return [c for c in COSTS if c != "latency" or (candidates and all(x.latency_ms is not None for x in candidates))]


def pareto_front(candidates: Sequence[Candidate], cost: str = "params") -> list[Candidate]:
    """The non-dominated candidates (maximise score, minimise ``cost``), by increasing cost.

    Raises:
        ValueError: for an unknown cost.
    """
    if cost not in COSTS:
        raise ValueError(f"unknown cost {cost!r}; choose one of {list(COSTS)}")
    attr = COSTS[cost][0]
    valid = [c for c in candidates if not math.isnan(c.score) and getattr(c, attr) is not None]
    ordered = sorted(valid, key=lambda c: (getattr(c, attr), -c.score, c.index))
    front: list[Candidate] = []
    for c in ordered:
        if not front or c.score > front[-1].score:
            front.append(c)
    return front


def plot_pareto(candidates: Sequence[Candidate], path: str | Path, *, best: Candidate | None = None,
                score_label: str = "score") -> bool:
    """Write the score-vs-params and score-vs-MACs plot to ``path``; return ``False`` (with a warning) when
    matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn("matplotlib is not installed, so pareto.png was not written "
                      "(pip install 'timm-nas[plots]'); pareto.json has the same data", stacklevel=2)
        return False
    costs = costs_of(candidates)
    fig = Figure(figsize=(5.5 * len(costs), 4.2), layout="constrained")
    FigureCanvasAgg(fig)  # attaches an Agg canvas to the figure: no pyplot, no global backend change
    for ax, cost in zip(fig.subplots(1, len(costs)), costs):
        attr, label, scale = COSTS[cost]
        ax.scatter([getattr(c, attr) / scale for c in candidates], [c.score for c in candidates], s=8,
                   color="0.7", label=f"candidates ({len(candidates)})")
        front = pareto_front(candidates, cost)
        ax.plot([getattr(c, attr) / scale for c in front], [c.score for c in front], "o-", color="C0", ms=4,
                drawstyle="steps-post", label="Pareto front")
        if best is not None:
            ax.scatter([getattr(best, attr) / scale], [best.score], marker="*", s=180, color="C3", zorder=3,
                       label="best")
        ax.set_xlabel(label)
        ax.set_ylabel(score_label)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(str(tmp), dpi=110, format="png"))
    return True
