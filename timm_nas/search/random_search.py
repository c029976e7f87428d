"""Random search: score architectures drawn uniformly from a space inside cost constraints.

With a training-free proxy this is TF-TAS's search (Zhou et al., CVPR 2022; decemberzhou/TF_TAS
``search_autoformer.py``: ``Searcher.search()`` only calls ``get_random(population_num)``): draw candidates
uniformly, keep those inside the parameter window, score each, report the best. See
:func:`timm_nas.search.zero_shot.tf_tas` for its defaults.

Draw ``j`` uses the generator seeded by ``(seed, j)``; a draw outside the constraints or equal to an earlier
candidate is skipped (never scored), so the search scores ``num_candidates`` distinct architectures. (The
original does not de-duplicate; on the AutoFormer spaces repeats are rare, and re-scoring one would only cost
time.)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Sequence

from ._rng import RANDOM, draw_generator
from .constraints import Constraints
from .engine import Candidate, Proposal
from .log import config_key

__all__ = ["RandomSearch", "draw_random", "MAX_CONSECUTIVE_REJECTIONS"]

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
    """

    name: ClassVar[str] = "random"
    #: Arguments a finished run can be extended by (the units already scored are kept: the draws of a longer
    #: run begin with those of a shorter one).
    extendable: ClassVar[tuple[str, ...]] = ("num_candidates",)

    space: Any
    num_candidates: int = 100
    constraints: Constraints = dataclasses.field(default_factory=Constraints)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_candidates < 1:
            raise ValueError(f"num_candidates must be at least 1, got {self.num_candidates}")

    def describe(self) -> dict[str, Any]:
        return {"space": self.space.to_dict(), "family": getattr(self.space, "family", ""),
                "num_candidates": self.num_candidates, "constraints": self.constraints.to_dict(), "seed": self.seed}

    def expected_candidates(self) -> int:
        return self.num_candidates

    def run(self, evaluate: Callable[[Sequence[Proposal]], list[Candidate]]) -> None:
        evaluate(draw_random(self.space, self.constraints, self.seed, 0, self.num_candidates, set()))
