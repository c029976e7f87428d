"""Regularized evolution: tournament selection with aging (Real, Aggarwal, Huang, Le, "Regularized Evolution for
Image Classifier Architecture Search", AAAI 2019, arXiv:1802.01548, Algorithm 1).

A population of ``population`` architectures is drawn at random and scored. Then, for every further candidate: draw
``sample_size`` members of the population uniformly (with replacement, as the paper's ``random sample``), mutate the
best of them, score the child, append it to the population and remove the *oldest* member (aging, not the worst).
NAS-Bench-201 runs it with population 10 and sample size 3 in its REA baseline (Dong and Yang 2020, section 5).

Choices of this implementation (the paper's loop otherwise):

* A child equal to an earlier candidate, or outside the cost constraints, is redrawn (a fresh mutation of the same
  parent) and never scored, so the search scores ``num_candidates`` distinct architectures, and the candidate log
  resumes an interrupted run.
* ``prefilter``: an optional cheap score ``config -> float`` (a training-free proxy, say). Each step then draws
  ``prefilter_pool`` distinct children (one tournament each) and scores only the one the prefilter ranks best:
  the proxy spends its budget before the expensive scorer is queried.
* Every random decision uses a generator seeded by ``(seed, step, attempt)`` (:mod:`timm_nas.search._rng`), so the
  search is a pure function of its seed and its scorer.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, ClassVar, Sequence

import torch

from ._rng import MUTATION, draw_generator
from .constraints import Constraints
from .engine import Candidate, Proposal, rank_key
from .log import config_key
from .random_search import MAX_CONSECUTIVE_REJECTIONS, best_by_prefilter, describe_prefilter, draw_random

__all__ = ["RegularizedEvolution"]


@dataclasses.dataclass
class RegularizedEvolution:
    """Tournament selection with aging.

    Args:
        space: any space of the :class:`timm_nas.spaces.base.Space` protocol.
        num_candidates: distinct candidates to score in all (the population's included).
        population: population size (NAS-Bench-201's REA: 10).
        sample_size: tournament size (NAS-Bench-201's REA: 3).
        constraints: cost windows; children outside them are never scored.
        seed: the seed of every draw.
        m_prob, s_prob: passed to ``space.mutate``.
        prefilter: optional ``config -> float`` (higher is better) choosing among ``prefilter_pool`` children.
        prefilter_pool: children drawn per step when ``prefilter`` is given.
    """

    name: ClassVar[str] = "regularized_evolution"
    #: Arguments a finished run can be extended by (the units already scored are kept: the draws of a longer
    #: run begin with those of a shorter one).
    extendable: ClassVar[tuple[str, ...]] = ("num_candidates",)

    space: Any
    num_candidates: int = 100
    population: int = 10
    sample_size: int = 3
    constraints: Constraints = dataclasses.field(default_factory=Constraints)
    seed: int = 0
    m_prob: float = 0.0
    s_prob: float = 0.0
    prefilter: Callable[[Any], float] | None = None
    prefilter_pool: int = 10

    def __post_init__(self) -> None:
        if self.population < 1 or self.sample_size < 1:
            raise ValueError(f"population and sample_size must be at least 1, got {self.population}, {self.sample_size}")
        if self.num_candidates < self.population:
            raise ValueError(f"num_candidates={self.num_candidates} must be at least population={self.population}")
        if self.prefilter_pool < 1:
            raise ValueError(f"prefilter_pool must be at least 1, got {self.prefilter_pool}")
        if self.m_prob == 0 and self.s_prob == 0:
            # NAS-Bench-201's REA mutates one edge: spaces whose mutate always changes something do that with zero
            # probabilities; for the others every child would equal its parent.
            probe = self.space.sample(draw_generator(self.seed, MUTATION, 0, 0))
            if all(self.space.mutate(probe, draw_generator(self.seed, MUTATION, 0, k), m_prob=0.0, s_prob=0.0)
                   == probe for k in range(8)):
                raise ValueError(f"m_prob=0 and s_prob=0 leave every child of this space "
                                 f"({type(self.space).__name__}) equal to its parent; give m_prob / s_prob > 0 "
                                 "(--m-prob / --s-prob on the command line; AutoFormer's evolution uses 0.2 / 0.4)")

    def describe(self) -> dict[str, Any]:
        pre = self.prefilter
        return {"space": self.space.to_dict(), "family": getattr(self.space, "family", ""),
                "num_candidates": self.num_candidates, "population": self.population,
                "sample_size": self.sample_size, "constraints": self.constraints.to_dict(), "seed": self.seed,
                "m_prob": self.m_prob, "s_prob": self.s_prob,
                "prefilter": None if pre is None else describe_prefilter(pre),
                "prefilter_pool": self.prefilter_pool if pre is not None else None}

    def expected_candidates(self) -> int:
        return self.num_candidates

    def _child(self, population: Sequence[Candidate], step: int, seen: set[str], attempt0: int) -> tuple[Proposal, int]:
        attempt = attempt0
        for _ in range(MAX_CONSECUTIVE_REJECTIONS):
            g = draw_generator(self.seed, MUTATION, step, attempt)
            attempt += 1
            picks = [population[i] for i in torch.randint(len(population), (self.sample_size,), generator=g).tolist()]
            parent = sorted(picks, key=rank_key)[0]
            child = self.space.mutate(parent.config, g, m_prob=self.m_prob, s_prob=self.s_prob)
            key = config_key(child)
            if key in seen:
                continue
            cost = self.constraints.cost(child)
            if not self.constraints.admits(cost):
                continue
            return Proposal(child, cost, "mutation", step), attempt
        raise ValueError(f"{MAX_CONSECUTIVE_REJECTIONS} mutations in a row were outside the constraints "
                         f"{self.constraints.to_dict()} or already scored; widen the window")

    def run(self, evaluate: Callable[[Sequence[Proposal]], list[Candidate]]) -> None:
        seen: set[str] = set()
        population = collections.deque(evaluate(draw_random(self.space, self.constraints, self.seed, 0,
                                                            self.population, seen)))
        scored = len(population)
        step = 1
        while scored < self.num_candidates:
            pool_size = self.prefilter_pool if self.prefilter is not None else 1
            pool: list[Proposal] = []
            attempt = 0
            pool_keys: set[str] = set()
            while len(pool) < pool_size:
                proposal, attempt = self._child(list(population), step, seen | pool_keys, attempt)
                pool_keys.add(config_key(proposal.config))
                pool.append(proposal)
            if self.prefilter is not None:
                pool = [pool[best_by_prefilter(self.prefilter, pool)]]
            seen.add(config_key(pool[0].config))
            population.extend(evaluate(pool))
            population.popleft()  # aging: the oldest member dies, whatever its score
            scored += 1
            step += 1
