"""Random search: score architectures drawn uniformly from a space inside cost constraints.

With a training-free proxy this is TF-TAS's search (Zhou et al., CVPR 2022; decemberzhou/TF_TAS
``search_autoformer.py``: ``Searcher.search()`` only calls ``get_random(population_num)``): draw candidates
uniformly, keep those inside the parameter window, score each, report the best. See
:func:`timm_nas.search.zero_shot.tf_tas` for its defaults.

Draw ``j`` uses the generator seeded by ``(seed, j)``; a draw outside the constraints or equal to an earlier
candidate is skipped (never scored), so the search scores ``num_candidates`` distinct architectures. (The
original does not de-duplicate; on the AutoFormer spaces repeats are rare, and re-scoring one would only cost
time.)

With a ``prefilter`` (a cheap ``config -> float``, e.g. a training-free proxy in front of a table of accuracies or
a trained supernet), candidate ``j`` is instead the prefilter's best of ``prefilter_pool`` admissible unseen draws
of generation ``j``: the expensive scorer is asked only about the architectures the proxy prefers.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar, Sequence

from ._rng import RANDOM, draw_generator
from .constraints import Constraints
from .engine import Candidate, Proposal
from .log import config_key

__all__ = ["RandomSearch", "draw_random", "best_by_prefilter", "MAX_CONSECUTIVE_REJECTIONS"]

#: A search gives up (with an error naming the constraints) after this many draws in a row are rejected.
MAX_CONSECUTIVE_REJECTIONS = 10_000


def draw_random(space: Any, constraints: Constraints, seed: int, generation: int, count: int, seen: set[str],
                origin: str = "random") -> list[Proposal]:
    """``count`` new proposals sampled from ``space`` inside ``constraints`` and not in ``seen`` (updated).

    Draw ``j`` of ``generation`` uses ``draw_generator(seed, RANDOM, generation, j)``.

    Raises:
        ValueError: after :data:`MAX_CONSECUTIVE_REJECTIONS` rejected draws in a row.
    """
    out: list[Proposal] = []
    j = rejected = 0
    while len(out) < count:
        cfg = space.sample(draw_generator(seed, RANDOM, generation, j))
        j += 1
        key = config_key(cfg)
        cost = constraints.cost(cfg) if key not in seen else None
        if cost is None or not constraints.admits(cost):
            rejected += 1
            if rejected >= MAX_CONSECUTIVE_REJECTIONS:
                raise ValueError(f"{rejected} random draws in a row were outside the constraints "
                                 f"{constraints.to_dict()} or already scored; widen the window")
            continue
        rejected = 0
        seen.add(key)
        out.append(Proposal(cfg, cost, origin, None))
    return out


@dataclasses.dataclass
class RandomSearch:
    """Uniform random search.

    Args:
        space: any space of the :class:`timm_nas.spaces.base.Space` protocol.
        num_candidates: number of distinct candidates to score.
        constraints: cost windows; draws outside them are never scored.
        seed: the seed of every draw.
        prefilter: optional ``config -> float`` (higher is better); each candidate is then the best of
            ``prefilter_pool`` draws by this score (``nan`` ranks last).
        prefilter_pool: draws per candidate when ``prefilter`` is given.
    """

    name: ClassVar[str] = "random"
    #: Arguments a finished run can be extended by (the units already scored are kept: the draws of a longer
    #: run begin with those of a shorter one).
    extendable: ClassVar[tuple[str, ...]] = ("num_candidates",)

    space: Any
    num_candidates: int = 100
    constraints: Constraints = dataclasses.field(default_factory=Constraints)
    seed: int = 0
    prefilter: Callable[[Any], float] | None = None
    prefilter_pool: int = 10

    def __post_init__(self) -> None:
        if self.num_candidates < 1:
            raise ValueError(f"num_candidates must be at least 1, got {self.num_candidates}")
        if self.prefilter_pool < 1:
            raise ValueError(f"prefilter_pool must be at least 1, got {self.prefilter_pool}")

    def describe(self) -> dict[str, Any]:
        d = {"space": self.space.to_dict(), "family": getattr(self.space, "family", ""),
             "num_candidates": self.num_candidates, "constraints": self.constraints.to_dict(), "seed": self.seed}
        if self.prefilter is not None:  # (absent otherwise: folders of earlier versions still resume)
            d.update(prefilter=describe_prefilter(self.prefilter), prefilter_pool=self.prefilter_pool)
        return d

    def expected_candidates(self) -> int:
        return self.num_candidates

    def run(self, evaluate: Callable[[Sequence[Proposal]], list[Candidate]]) -> None:
        if self.prefilter is None:
            evaluate(draw_random(self.space, self.constraints, self.seed, 0, self.num_candidates, set()))
            return
        seen: set[str] = set()
        for j in range(self.num_candidates):
            pool = draw_random(self.space, self.constraints, self.seed, j, self.prefilter_pool, set(seen))
            best = pool[best_by_prefilter(self.prefilter, pool)]
            seen.add(config_key(best.config))
            evaluate([best])


def best_by_prefilter(prefilter: Callable[[Any], float], pool: Sequence[Proposal]) -> int:
    """The index of the proposal ``prefilter`` scores highest (the first of equals; ``nan`` ranks last)."""
    values = [float(prefilter(p.config)) for p in pool]
    return max(range(len(pool)), key=lambda i: (-math.inf if math.isnan(values[i]) else values[i], -i))


def describe_prefilter(prefilter: Callable[[Any], float]) -> Any:
    """The prefilter's JSON-native identity for ``run.json`` (its ``describe()``, else its ``repr``)."""
    return prefilter.describe() if hasattr(prefilter, "describe") else repr(prefilter)
