"""The one seed scheme of every search: each random decision draws from a generator seeded by ``(seed, step)``
(:func:`timm_nas.spaces.base.generator_for`).

- Architecture draws: ``draw_generator(seed, kind, generation, attempt)``.
- Code that uses the global generators (dropout, augmentation, Mixup): :func:`seeded` ``(seed, step)`` around
  it, one step per epoch / training step.
- Data pipelines: :func:`seeded_loader` seeds every item by its position in the stream, so the batches do not
  depend on the number of data-loader workers.

No generator lives across steps, so the random state at any point of a search is a pure function of the seed
and the position; a resumed or distributed run reconstructs it without saving RNG state.
"""
from __future__ import annotations

import contextlib
import random
from typing import Any, Iterable, Iterator, Sequence

import torch

from ..spaces.base import generator_for

__all__ = ["RANDOM", "MUTATION", "CROSSOVER", "draw_generator", "derived_seed", "seeded", "SeededItems",
           "SeededBatches", "seeded_loader"]

RANDOM, MUTATION, CROSSOVER = 0, 1, 2
_KIND_STRIDE = 1 << 48
_GENERATION_STRIDE = 1 << 32


def draw_generator(seed: int, kind: int, generation: int, attempt: int) -> torch.Generator:
    """The generator of one draw: ``generator_for(seed, step)`` with ``step`` packing the three indices."""
    return generator_for(seed, kind * _KIND_STRIDE + generation * _GENERATION_STRIDE + attempt)


# ------------------------------------------------------------------------------------ global RNG streams
def derived_seed(seed: int, step: int) -> int:
    """An integer seed derived from ``(seed, step)`` (the same mixing as :func:`generator_for`)."""
    return int(generator_for(seed, step).initial_seed())


@contextlib.contextmanager
def seeded(seed: int, step: int) -> Iterator[None]:
    """Run a block with torch's (CPU and CUDA), Python's and NumPy's global generators seeded from
    ``(seed, step)``, and restore their states afterwards.

    Code that draws from the global generators (dropout, drop-path, timm's Mixup and RandAugment, torchvision's
    random transforms) then draws the same numbers whenever the block runs with the same ``(seed, step)``: after
    a resume, in another process, in a data-loader worker or in the main process.
    """
    import numpy as np

    value = derived_seed(seed, step)
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []):
        torch.manual_seed(value)
        random.seed(value)
        np.random.seed(value % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class SeededItems(torch.utils.data.Dataset):
    """A dataset whose item ``(key, index)`` is ``dataset[index]`` drawn under :func:`seeded` ``(seed, key)``.

    Random transforms then depend on the key alone, not on which process loads the item or on what was loaded
    before it, so a data pipeline gives the same batches with any number of workers (and after a resume). Use
    it with :class:`SeededBatches`, which hands out the keys.
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        key, index = item
        with seeded(self.seed, key):
            return self.dataset[index]


class SeededBatches(torch.utils.data.Sampler):
    """Wrap a batch sampler (or a sampler, batched by ``batch_size``) so each index comes with a key: the
    position of the item in the stream ``stream`` (e.g. one stream per epoch, split and rank).

    The same index drawn twice (repeated augmentation) gets two keys, hence two augmentations.
    """

    _STRIDE = 1 << 32

    def __init__(self, batches: Iterable[Sequence[int]], stream: int) -> None:
        self.batches = batches
        self.stream = stream

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        position = self.stream * self._STRIDE
        for batch in self.batches:
            out = []
            for index in batch:
                out.append((position, int(index)))
                position += 1
            yield out

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]


def seeded_loader(dataset: Any, batches: Iterable[Sequence[int]], *, seed: int, stream: int, workers: int = 0,
                  **kwargs: Any) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over ``batches`` (a batch sampler) whose random transforms draw from
    :func:`seeded` ``(seed, key)`` per item: the same batches for any ``workers`` (see :class:`SeededItems`)."""
    kwargs.setdefault("generator", generator_for(seed, stream))  # the loader's own draw: not the global stream
    return torch.utils.data.DataLoader(SeededItems(dataset, seed), batch_sampler=SeededBatches(batches, stream),
                                       num_workers=workers, persistent_workers=False, **kwargs)
