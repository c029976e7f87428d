"""Scoring candidates, logging them, resuming, and running a strategy end to end.

A strategy (:mod:`.random`, :mod:`.evolution`) proposes architectures and hands lists of :class:`Proposal` to an
``evaluate`` callable, which returns :class:`Candidate` records with scores. :class:`Evaluator` is that callable:
it takes scores from the log of an interrupted run when it has them, shards the rest across distributed ranks,
appends each new record to ``candidates.jsonl`` as soon as it is scored, and reports progress.
:func:`run_search` wires a strategy, a scorer and an output folder together.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from .constraints import Cost
from .distributed import Dist
from .log import OVERWRITE_HINT, SearchFolder, config_key

__all__ = ["Proposal", "Candidate", "Evaluator", "SearchResult", "Strategy", "Scorer", "run_search", "rank_key"]

_logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Proposal:
    """An architecture a strategy wants scored: its config, analytic cost, and where it came from."""

    config: Any
    cost: Cost
    origin: str = "random"  # 'random' | 'mutation' | 'crossover'
    generation: int | None = None


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A scored architecture (one line of ``candidates.jsonl``).

    Attributes:
        index: position in the order of scoring (the same for any number of processes).
        config: the architecture config.
        score: the scorer's value (higher is better; ``nan`` ranks last).
        params, macs: analytic cost.
        origin: ``'random'``, ``'mutation'`` or ``'crossover'``.
        generation: the evolution generation that proposed it (``None`` for random / zero-shot search).
        seconds: time spent scoring it.
        latency_ms: the latency a table predicts (``None`` in a search without a latency table).
    """

    index: int
    config: Any
    score: float
    params: int
    macs: int
    origin: str = "random"
    generation: int | None = None
    seconds: float | None = None
    latency_ms: float | None = None

    def to_record(self) -> dict[str, Any]:
        rec = {"index": self.index, "config": self.config.to_dict(), "score": self.score, "params": self.params,
               "macs": self.macs, "origin": self.origin, "generation": self.generation, "seconds": self.seconds}
        if self.latency_ms is not None:
            rec["latency_ms"] = self.latency_ms
        return rec

    @classmethod
    def from_record(cls, rec: Mapping[str, Any], config_cls: type) -> "Candidate":
        return cls(index=int(rec["index"]), config=config_cls.from_dict(rec["config"]), score=float(rec["score"]),
                   params=int(rec["params"]), macs=int(rec["macs"]), origin=str(rec.get("origin", "random")),
                   generation=rec.get("generation"), seconds=rec.get("seconds"), latency_ms=rec.get("latency_ms"))


def rank_key(c: Candidate) -> float:
    """Sort key for "best first" (``sorted(..., key=rank_key)``, stable): descending score, NaN last."""
    return math.inf if math.isnan(c.score) else -c.score


class Scorer(Protocol):
    """``scorer(config) -> float`` (higher is better), plus ``describe()``: its JSON-native identity."""

    def __call__(self, config: Any) -> float: ...

    def describe(self) -> dict[str, Any]: ...


class Strategy(Protocol):
    """A search strategy over a :class:`timm_nas.spaces.base.Space`."""

    name: str
    space: Any

    def run(self, evaluate: Callable[[Sequence[Proposal]], list[Candidate]]) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    def expected_candidates(self) -> int: ...


class _ScoringError(RuntimeError):
    pass


class Evaluator:
    """Scores proposals, reusing logged scores, sharding across ranks, logging every new candidate.

    Args:
        scorer: ``config -> float``.
        config_cls: the config type (to read logged records back).
        logged: records of an interrupted run, keyed by :func:`config_key`.
        folder: where to append new records (rank 0 only; ``None``: no log).
        dist: the process group (default: single process).
        callback: called with ``(candidate, reused)`` for every candidate, in index order.
    """

    def __init__(self, scorer: Callable[[Any], float], *, config_cls: type,
                 logged: Mapping[str, Mapping[str, Any]] | None = None, folder: SearchFolder | None = None,
                 dist: Dist | None = None, callback: Callable[[Candidate, bool], None] | None = None) -> None:
        self.scorer = scorer
        self.config_cls = config_cls
        self.logged = dict(logged or {})
        self.folder = folder
        self.dist = dist or Dist()
        self.callback = callback
        self.candidates: list[Candidate] = []
        self.scored = 0
        self.reused = 0

    def _emit(self, cand: Candidate, reused: bool) -> None:
        self.candidates.append(cand)
        if reused:
            self.reused += 1
        else:
            self.scored += 1
            if self.folder is not None and self.dist.is_main:
                self.folder.append(cand.to_record())
        if self.callback is not None:
            self.callback(cand, reused)

    def _score(self, proposal: Proposal | None) -> tuple[str, Any, float]:
        if proposal is None:
            return ("none", None, 0.0)
        t0 = time.perf_counter()
        try:
            value = float(self.scorer(proposal.config))
        except Exception as e:  # reported on every rank, so no rank waits forever in the next collective
            if self.dist.world_size == 1:
                raise
            return ("error", f"{type(e).__name__}: {e}", 0.0)
        return ("ok", value, time.perf_counter() - t0)

    def _flush(self, pending: list[Proposal]) -> None:
        """Score ``pending`` (``world_size`` at a time, one per rank) and emit them in order."""
        world = self.dist.world_size
        for lo in range(0, len(pending), world):
            chunk = pending[lo:lo + world]
            mine = chunk[self.dist.rank] if self.dist.rank < len(chunk) else None
            results = self.dist.all_gather(self._score(mine))[:len(chunk)]
            for r, (status, value, _) in enumerate(results):
                if status == "error":
                    raise _ScoringError(f"rank {r} failed to score {chunk[r].config}: {value}")
            for p, (_, value, seconds) in zip(chunk, results):
                self._emit(Candidate(len(self.candidates), p.config, value, p.cost.params, p.cost.macs, p.origin,
                                     p.generation, round(seconds, 6), p.cost.latency_ms), reused=False)
        pending.clear()

    def __call__(self, proposals: Sequence[Proposal]) -> list[Candidate]:
        """Score ``proposals`` (in order) and return their candidates."""
        start = len(self.candidates)
        pending: list[Proposal] = []
        for p in proposals:
            rec = self.logged.get(config_key(p.config))
            if rec is None:
                pending.append(p)
                continue
            self._flush(pending)  # keep index order: what comes before this logged candidate goes first
            if int(rec["index"]) != len(self.candidates):
                raise ValueError(f"the candidate log does not match this search: {p.config} is logged as candidate "
                                 f"{rec['index']} but comes {len(self.candidates)}th now; {OVERWRITE_HINT} to start "
                                 "afresh")
            self._emit(Candidate.from_record(rec, self.config_cls), reused=True)
        self._flush(pending)
        return self.candidates[start:]


@dataclasses.dataclass
class SearchResult:
    """The outcome of a search.

    Attributes:
        strategy: the strategy's name.
        candidates: every scored candidate, in index order.
        scored: candidates scored in this session.
        reused: candidates taken from the log of an earlier run.
        folder: the run folder (``None`` without ``out``); :meth:`SearchFolder.export` writes ``export/``.
    """

    strategy: str
    candidates: list[Candidate]
    scored: int = 0
    reused: int = 0
    folder: SearchFolder | None = None

    @property
    def best(self) -> Candidate:
        """The highest score (the earliest candidate on a tie)."""
        if not self.candidates:
            raise ValueError("the search scored no candidate")
        return sorted(self.candidates, key=rank_key)[0]

    def top(self, k: int) -> list[Candidate]:
        return sorted(self.candidates, key=rank_key)[:k]

    def pareto(self, cost: str = "params") -> list[Candidate]:
        from .pareto import pareto_front

        return pareto_front(self.candidates, cost)


def _describe(obj: Any) -> Any:
    describe = getattr(obj, "describe", None)
    return describe() if callable(describe) else repr(obj)


def run_search(strategy: Strategy, scorer: Callable[[Any], float], *, out: str | Path | None = None,
               arguments: Mapping[str, Any] | None = None, overwrite: bool = False, dist: Dist | None = None,
               callback: Callable[[Candidate, bool], None] | None = None, plot: bool = True,
               replace_changed_export: bool = False) -> SearchResult:
    """Run ``strategy`` with ``scorer``; with ``out``, log to / resume from that folder and write the results.

    Args:
        strategy: e.g. :class:`timm_nas.search.RandomSearch`, :class:`timm_nas.search.EvolutionSearch`.
        scorer: ``config -> float`` (a :class:`timm_nas.search.ProxyScorer`, an :class:`AccuracyScorer`, ...).
        out: output folder (``candidates.jsonl``, ``best.json``, ``pareto.json``, ``pareto.png``).
        arguments: extra JSON-native values that define the run (model, weights, ...); with the strategy's and
            the scorer's descriptions they make up ``run.json``, which a resume must match.
        overwrite: discard a previous search in ``out`` instead of resuming it.
        replace_changed_export: let ``overwrite`` and :meth:`SearchFolder.export` replace an ``export/`` that
            holds files the search did not write (refused otherwise).
        dist: the process group (default: from torchrun's environment, else single process).
        callback: ``(candidate, reused)`` for each candidate (progress bars).
        plot: write ``pareto.png`` (skipped with a warning when matplotlib is missing).
    """
    dist = dist or Dist.from_env()
    folder = None
    logged: dict[str, Any] = {}
    if out is not None:
        args = {"strategy": strategy.name, "search": _describe(strategy), "scorer": _describe(scorer),
                **dict(arguments or {})}
        folder = SearchFolder(out, args, overwrite=overwrite, kind=strategy.name,
                              extendable=[f"search.{k}" for k in getattr(strategy, "extendable", ())],
                              replace_changed_export=replace_changed_export)
        logged = dist.check(folder.check)  # rank 0 reads the folder; an error is raised on every rank
        if dist.is_main:
            folder.start()
        if logged:
            _logger.info("resuming %s: %d candidates in the log", out, len(logged))
    evaluator = Evaluator(scorer, config_cls=strategy.space.config_cls, logged=logged, folder=folder, dist=dist,
                          callback=callback)
    try:
        strategy.run(evaluator)
    finally:
        if folder is not None:
            folder.close()
    result = SearchResult(strategy.name, evaluator.candidates, evaluator.scored, evaluator.reused, folder)
    if folder is not None and dist.is_main and result.candidates:
        write_results(result, folder, plot=plot and (result.scored > 0 or not (folder.path / "pareto.png").is_file()))
    dist.barrier()
    return result


def write_results(result: SearchResult, folder: SearchFolder, *, plot: bool = True) -> None:
    """Write ``best.json``, ``pareto.json`` and (optionally) ``pareto.png``; files whose content is unchanged
    are left untouched."""
    from .pareto import costs_of, plot_pareto

    best = result.best
    folder.write_json("best.json", {**best.to_record(), "strategy": result.strategy,
                                    "candidates": len(result.candidates)})
    fronts = {cost: [c.to_record() for c in result.pareto(cost)] for cost in costs_of(result.candidates)}
    folder.write_json("pareto.json", fronts)
    if plot:
        plot_pareto(result.candidates, folder.path / "pareto.png", best=best)
