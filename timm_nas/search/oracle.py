"""Search with a table as the oracle: a yardstick for search strategies.

With a tabular benchmark (NAS-Bench-201 gives the trained accuracy of all 15,625 cells) a strategy's query costs a
table look-up, so strategies can be compared over many seeds in seconds (Dong and Yang, ICLR 2020, section 5;
Real et al.'s regularized evolution against random search there).

* :class:`OracleScorer` is a scorer (``config -> accuracy``) that looks architectures up in a table
  (:func:`timm_nas.proxies.bench.load_table`) and counts its queries; it works with every strategy and
  :func:`timm_nas.search.run_search`.
* :func:`proxy_prefilter` turns a training-free proxy into a cheap ``config -> score`` that a strategy can use to
  choose what to ask the oracle (the ``prefilter`` of :class:`~timm_nas.search.RandomSearch` and
  :class:`~timm_nas.search.RegularizedEvolution`).
* :func:`compare_strategies` runs strategies for several seeds with the same query budget and returns their
  best-so-far curves (the best accuracy after ``k`` queries), with the table's best for the regret;
  :func:`plot_curves` draws them.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..proxies.bench import _table_digest, arch_key, load_table
from .distributed import Dist
from .engine import run_search
from .evolution import EvolutionSearch
from .random_search import RandomSearch
from .regularized_evolution import RegularizedEvolution

__all__ = ["OracleScorer", "proxy_prefilter", "compare_strategies", "StrategyCurves", "STRATEGIES", "plot_curves"]


class OracleScorer:
    """``scorer(config) -> accuracy`` read from a table.

    Args:
        table: ``{arch_key: (config, accuracy)}`` (:func:`timm_nas.proxies.bench.load_table`), or a path read with
            ``config_cls``.
        config_cls: the config type (needed with a path).
        missing: ``'error'`` (default) raises for an architecture the table lacks; ``'nan'`` scores it ``nan``
            (ranked last by every strategy).

    Attributes:
        queries: look-ups so far (a strategy never asks twice for the same architecture).
    """

    def __init__(self, table: Mapping[str, tuple[Any, float]] | str | os.PathLike, config_cls: type | None = None,
                 *, missing: str = "error") -> None:
        if isinstance(table, (str, os.PathLike)):
            if config_cls is None:
                raise TypeError("OracleScorer(path) needs config_cls= to read the table's architectures")
            table = load_table(table, config_cls)
        if missing not in ("error", "nan"):
            raise ValueError(f"missing={missing!r} is not allowed; allowed values: ['error', 'nan']")
        self.table = dict(table)
        self.missing = missing
        self.queries = 0
        self._digest = _table_digest(self.table)

    @property
    def best(self) -> float:
        """The table's best accuracy (for the regret)."""
        return max(acc for _, acc in self.table.values())

    def __call__(self, config: Any) -> float:
        self.queries += 1
        hit = self.table.get(arch_key(config))
        if hit is None:
            if self.missing == "nan":
                return math.nan
            raise ValueError(f"architecture {arch_key(config)} is not in the oracle's table ({len(self.table)} "
                             "architectures); use OracleScorer(..., missing='nan') to rank it last")
        return float(hit[1])

    def describe(self) -> dict[str, Any]:
        return {"kind": "oracle", "architectures": len(self.table), "table_sha256": self._digest,
                "missing": self.missing}


class _StaticProxy:
    def __init__(self, family: str, proxy: str, model_args: Mapping[str, Any], seed: int, batch_size: int | None,
                 device: torch.device | str | None) -> None:
        from ..family import get_family
        from ..proxies import get_proxy

        self.family, self.proxy, self.model_args = get_family(family), get_proxy(proxy), dict(model_args)
        if self.family.space is None:
            raise ValueError(f"family {self.family.name!r} has no search space of static models to score")
        self.seed, self.batch_size = seed, batch_size
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    def __call__(self, config: Any) -> float:
        import timm

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = timm.create_model(self.family.static_entrypoint,
                                      **{self.family.arch_arg: config.to_dict(), **self.model_args})
        model = model.to(self.device).eval()
        return float(self.proxy(model, seed=self.seed, batch_size=self.batch_size))

    def describe(self) -> dict[str, Any]:
        # (the device is left out: the same scores are expected on any device, up to float rounding)
        return {"kind": "proxy", "proxy": self.proxy.name, "family": self.family.name, "model_args": self.model_args,
                "seed": self.seed, "batch_size": self.batch_size or self.proxy.default_batch_size}


def proxy_prefilter(family: str, proxy: str, *, model_args: Mapping[str, Any] | None = None, seed: int = 0,
                    batch_size: int | None = 64, device: torch.device | str | None = None) -> Callable[[Any], float]:
    """``config -> score``: the training-free ``proxy`` of the family's static model of ``config`` (built with
    ``model_args``, initialised from ``seed``, on ``device``), e.g. ``proxy_prefilter('nb201', 'nwot')``.

    It is a scorer too: the searches score a family without a supernet (``timm-nas search random --space nb201
    --proxy nwot``) with it. ``batch_size=None`` takes the proxy's default input batch.
    """
    return _StaticProxy(family, proxy, model_args or {}, seed, batch_size, device)


def _evolution(space: Any, budget: int, seed: int, prefilter: Callable[[Any], float] | None) -> EvolutionSearch:
    """AutoFormer's evolution scaled to ``budget``: a population of ``min(50, budget)`` (half mutations, half
    crossovers of the best fifth, refilled at random) and as many generations as the budget needs; the curve is cut
    at ``budget`` queries (the last generation may score up to ``population - 1`` more)."""
    if prefilter is not None:
        raise ValueError("evolution has no prefilter; use random or regularized_evolution with a prefilter")
    population = min(50, budget)
    half = population // 2
    generations = -(-(budget - population) // population)
    return EvolutionSearch(space, seed=seed, population=population, topk=max(1, population // 5),
                           generations=generations, mutations=half, crossovers=population - half)


#: Strategies :func:`compare_strategies` knows by name: ``(space, budget, seed, prefilter) -> strategy``
#: (NAS-Bench-201's baselines: random search and regularized evolution with population 10, tournament 3).
STRATEGIES: dict[str, Callable[..., Any]] = {
    "random": lambda space, budget, seed, prefilter: RandomSearch(space, num_candidates=budget, seed=seed,
                                                                  prefilter=prefilter),
    "regularized_evolution": lambda space, budget, seed, prefilter: RegularizedEvolution(
        space, num_candidates=budget, population=min(10, budget), sample_size=3, seed=seed, prefilter=prefilter),
    "evolution": _evolution,
}


@dataclasses.dataclass
class StrategyCurves:
    """Best-so-far curves of one strategy: ``curves[s][k]`` = best accuracy within the first ``k + 1`` queries of
    seed ``seeds[s]``."""

    name: str
    seeds: list[int]
    curves: list[list[float]]

    @property
    def mean(self) -> list[float]:
        return [sum(c[k] for c in self.curves) / len(self.curves) for k in range(len(self.curves[0]))]

    @property
    def std(self) -> list[float]:
        """The sample standard deviation over seeds after each query (0 with one seed)."""
        n = len(self.curves)
        return [math.sqrt(sum((c[k] - m) ** 2 for c in self.curves) / (n - 1)) if n > 1 else 0.0
                for k, m in enumerate(self.mean)]

    @property
    def final(self) -> list[float]:
        return [c[-1] for c in self.curves]


def plot_curves(curves: Mapping[str, StrategyCurves], path: str | os.PathLike, *, best: float | None = None) -> bool:
    """Write the mean best-so-far curve of each strategy (with a band of one standard deviation over seeds, and the
    table's best as a line) to ``path``; ``False`` (with a warning) without matplotlib."""
    import warnings

    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn("matplotlib is not installed, so the curve plot was not written (pip install "
                      "'timm-nas[plots]'); curves.json has the same data", stacklevel=2)
        return False
    from .._io import atomic_write

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, (name, c) in enumerate(curves.items()):
        x = range(1, len(c.mean) + 1)
        ax.plot(x, c.mean, color=f"C{i}", label=f"{name} ({len(c.seeds)} seeds)")
        ax.fill_between(x, [m - s for m, s in zip(c.mean, c.std)], [m + s for m, s in zip(c.mean, c.std)],
                        color=f"C{i}", alpha=0.2, linewidth=0)
    if best is not None:
        ax.axhline(best, color="0.4", linestyle="--", linewidth=1, label="best in the table")
    ax.set_xlabel("oracle queries")
    ax.set_ylabel("best accuracy so far")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    atomic_write(Path(path), lambda tmp: fig.savefig(str(tmp), dpi=110, format="png"))
    return True


def _best_so_far(scores: Sequence[float]) -> list[float]:
    out, best = [], -math.inf
    for s in scores:
        if not math.isnan(s):
            best = max(best, s)
        out.append(best)
    return out


def compare_strategies(space: Any, oracle: OracleScorer, strategies: Sequence[str | tuple[str, Callable[..., Any]]],
                       budget: int, seeds: Sequence[int], *, prefilter: Callable[[Any], float] | None = None,
                       prefilter_pool: int = 10, out: str | os.PathLike | None = None) -> dict[str, StrategyCurves]:
    """Run each strategy once per seed with ``budget`` oracle queries; return its best-so-far curves.

    Args:
        space: the search space (every architecture of it should be in the oracle's table).
        oracle: the table.
        strategies: names from :data:`STRATEGIES`, or ``(name, factory)`` with
            ``factory(space, budget, seed, prefilter) -> strategy``.
        budget: oracle queries per run.
        seeds: one run per seed.
        prefilter: optional cheap score choosing what to query (:func:`proxy_prefilter`): regularized evolution
            picks the best of ``prefilter_pool`` children per step, random search the best of ``prefilter_pool``
            random draws (AutoFormer's evolution takes none).
        out: optional folder; each run then logs to ``out/<strategy>-seed<seed>`` (resumable) with the run-folder
            files of :func:`timm_nas.search.run_search`.
    """
    result: dict[str, StrategyCurves] = {}
    for item in strategies:
        name, factory = (item, None) if isinstance(item, str) else item
        if factory is None:
            if name not in STRATEGIES:
                raise ValueError(f"unknown strategy {name!r}; known strategies: {sorted(STRATEGIES)}")
            factory = STRATEGIES[name]
        curves = []
        for seed in seeds:
            strategy = factory(space, budget, seed, prefilter)
            if hasattr(strategy, "prefilter_pool"):
                strategy.prefilter_pool = prefilter_pool
            run_out = None if out is None else Path(out) / f"{name}-seed{seed}"
            res = run_search(strategy, oracle, out=run_out, dist=Dist(), plot=False)
            curve = _best_so_far([c.score for c in res.candidates])[:budget]
            curves.append(curve + curve[-1:] * (budget - len(curve)))  # a space too small for the budget
        result[name] = StrategyCurves(name, list(seeds), curves)
    return result
