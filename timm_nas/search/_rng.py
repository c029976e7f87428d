"""Per-draw generators: every random decision of a search is drawn from a generator seeded by
``(seed, draw)``, where ``draw`` encodes (kind, generation, attempt).

No generator lives across draws, so the random state at any point of a search is a pure function of the seed and
the position; a resumed or distributed run reconstructs it without saving RNG state.
"""
from __future__ import annotations

import torch

from ..spaces.base import generator_for

__all__ = ["RANDOM", "MUTATION", "CROSSOVER", "draw_generator"]

RANDOM, MUTATION, CROSSOVER = 0, 1, 2
_KIND_STRIDE = 1 << 48
_GENERATION_STRIDE = 1 << 32


def draw_generator(seed: int, kind: int, generation: int, attempt: int) -> torch.Generator:
    """The generator of one draw: ``generator_for(seed, step)`` with ``step`` packing the three indices."""
    return generator_for(seed, kind * _KIND_STRIDE + generation * _GENERATION_STRIDE + attempt)
