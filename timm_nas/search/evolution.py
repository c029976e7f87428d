"""AutoFormer's evolutionary search, over any space of the Space protocol.

Chen et al., "AutoFormer: Searching Transformers for Visual Recognition", ICCV 2021; microsoft/Cream
``AutoFormer/evolution.py`` (``EvolutionSearcher``), whose defaults are kept: population 50, top-k 10,
20 generations, 25 mutations (``s_prob`` 0.4 for depth and embed dim, ``m_prob`` 0.2 per layer) and 25
crossovers per generation, each operator retried at most 10x its target count, crossover parents re-drawn up
to 50 times until compatible, the population refilled with random candidates, a cost window.

The loop, as in the original::

    population = 50 random candidates inside the constraints, scored
    repeat `generations` times:
        top-k = the k best of (top-k + population)           # across all generations
        mutations  = up to 25 new candidates, each: mutate a random top-k parent
        crossovers = up to 25 new candidates, each: cross two random top-k parents
        population = mutations + crossovers + random candidates up to 50, scored

A new candidate must be unseen and inside the constraints (the original's ``is_legal``); one that is not costs an
attempt. The space supplies the operators: ``sample``, ``mutate(cfg, generator, m_prob=, s_prob=)``,
``crossover(a, b, generator)`` (raising :class:`~timm_nas.spaces.base.IncompatibleError` for parents it cannot
combine) and optionally ``compatible(a, b)``.

Differences from the original, none of which changes what it computes: every draw comes from a generator
seeded by ``(seed, generation, attempt)`` instead of Python's global ``random`` (reproducible, resumable and
identical across ranks); a generation's new candidates are all proposed before any of them is scored (the
original scores each inside ``is_legal`` as it goes, but no score is read before the next top-k update, so the
candidates are the same), which lets them be scored in parallel; the reported best is the best of every scored
candidate, including the last generation's offspring that the original scores but never ranks.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Sequence

from ..spaces.base import IncompatibleError, rand_choice
from ._rng import CROSSOVER, MUTATION, draw_generator
from .constraints import Constraints
from .engine import Candidate, Proposal, rank_key
from .log import config_key
from .random_search import draw_random

__all__ = ["EvolutionSearch"]


@dataclasses.dataclass
class EvolutionSearch:
    """AutoFormer's evolution (defaults from microsoft/Cream ``AutoFormer/evolution.py``).

    Args:
        space: any space of the Space protocol with ``mutate`` / ``crossover``.
        constraints: cost windows (the original's ``--min-param-limits`` / ``--param-limits``: 18M / 23M by
            default there, a window for its S space; the maintainers use 52M / 54M for B, microsoft/Cream #74).
        seed: the seed of every draw.
        population: ``--population-num`` (50).
        topk: ``--select-num``, parents kept across generations (10).
        generations: ``--max-epochs`` (20).
        mutations: ``--mutation-num`` per generation (25).
        crossovers: ``--crossover-num`` per generation (25).
        m_prob: ``--m_prob``, per-layer mutation probability (0.2).
        s_prob: ``--s_prob``, depth / embed-dim mutation probability (0.4).
        retries: each operator makes at most ``retries x`` its target number of attempts (10).
        parent_retries: crossover re-draws of an incompatible parent pair (50).
    """

    name: ClassVar[str] = "evolution"
    #: Arguments a finished run can be extended by (the units already scored are kept: the draws of a longer
    #: run begin with those of a shorter one).
    extendable: ClassVar[tuple[str, ...]] = ("generations",)

    space: Any
    constraints: Constraints = dataclasses.field(default_factory=Constraints)
    seed: int = 0
    population: int = 50
    topk: int = 10
    generations: int = 20
    mutations: int = 25
    crossovers: int = 25
    m_prob: float = 0.2
    s_prob: float = 0.4
    retries: int = 10
    parent_retries: int = 50

    def __post_init__(self) -> None:
        for name in ("population", "topk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("generations", "mutations", "crossovers", "retries", "parent_retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        for name in ("m_prob", "s_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.mutations + self.crossovers > self.population:
            raise ValueError(f"mutations + crossovers ({self.mutations} + {self.crossovers}) exceed the population "
                             f"({self.population})")

    def describe(self) -> dict[str, Any]:
        fields = ("seed", "population", "topk", "generations", "mutations", "crossovers", "m_prob", "s_prob",
                  "retries", "parent_retries")
        return {"space": self.space.to_dict(), "family": getattr(self.space, "family", ""),
                "constraints": self.constraints.to_dict(), **{f: getattr(self, f) for f in fields}}

    def expected_candidates(self) -> int:
        return self.population * (self.generations + 1)

    # -------------------------------------------------------------------------------------------- operators
    def _legal(self, cfg: Any, seen: set[str]) -> Proposal | None:
        key = config_key(cfg)
        if key in seen:
            return None
        cost = self.constraints.cost(cfg)
        if not self.constraints.admits(cost):
            return None
        seen.add(key)
        return Proposal(cfg, cost)

    def _mutations(self, parents: list[Candidate], generation: int, seen: set[str]) -> list[Proposal]:
        out: list[Proposal] = []
        for attempt in range(self.mutations * self.retries):
            if len(out) >= self.mutations:
                break
            g = draw_generator(self.seed, MUTATION, generation, attempt)
            parent = rand_choice(parents, g).config
            child = self.space.mutate(parent, g, m_prob=self.m_prob, s_prob=self.s_prob)
            p = self._legal(child, seen)
            if p is not None:
                out.append(dataclasses.replace(p, origin="mutation", generation=generation))
        return out

    def _crossovers(self, parents: list[Candidate], generation: int, seen: set[str]) -> list[Proposal]:
        compatible = getattr(self.space, "compatible", None)
        out: list[Proposal] = []
        for attempt in range(self.crossovers * self.retries):
            if len(out) >= self.crossovers:
                break
            g = draw_generator(self.seed, CROSSOVER, generation, attempt)
            a, b = rand_choice(parents, g).config, rand_choice(parents, g).config
            tries = self.parent_retries
            while compatible is not None and not compatible(a, b) and tries > 0:
                tries -= 1
                a, b = rand_choice(parents, g).config, rand_choice(parents, g).config
            try:
                child = self.space.crossover(a, b, g)
            except IncompatibleError:
                continue
            p = self._legal(child, seen)
            if p is not None:
                out.append(dataclasses.replace(p, origin="crossover", generation=generation))
        return out

    # ---------------------------------------------------------------------------------------------- search
    def run(self, evaluate: Callable[[Sequence[Proposal]], list[Candidate]]) -> None:
        seen: set[str] = set()
        population = evaluate([dataclasses.replace(p, generation=0) for p in
                               draw_random(self.space, self.constraints, self.seed, 0, self.population, seen)])
        top: list[Candidate] = []
        for generation in range(1, self.generations + 1):
            top = sorted(top + population, key=rank_key)[:self.topk]
            proposals = self._mutations(top, generation, seen) + self._crossovers(top, generation, seen)
            refill = draw_random(self.space, self.constraints, self.seed, generation,
                                 self.population - len(proposals), seen)
            proposals += [dataclasses.replace(p, generation=generation) for p in refill]
            population = evaluate(proposals)
