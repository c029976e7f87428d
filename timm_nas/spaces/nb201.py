"""NAS-Bench-201: the cell config and the 15,625-cell search space.

NAS-Bench-201 (Dong and Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search",
ICLR 2020, arXiv:2001.00326; code: https://github.com/D-X-Y/NAS-Bench-201 and the ``xautodl`` package) fixes one
cell: a DAG of four nodes, node 0 the cell input and node 3 its output, with one edge ``j -> i`` for every
``j < i`` (six edges). Each edge carries one of five operations (:data:`NB201_OPS`), so the space holds
``5 ** 6 = 15,625`` cells.

A cell is written in the benchmark's architecture string, node by node, each node listing ``op~input`` for inputs
``0 .. i-1``::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

:class:`NB201Cell` holds the six operations in that order (edges ``1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2``); the
string is parsed, never evaluated.

Index order (:meth:`NB201Space.index` / :meth:`NB201Space.cell_at`) is the benchmark's own: the authors enumerate
every cell with the first edge as the most significant digit and the operations in :data:`NB201_OPS` order, then
shuffle that list once with Python's ``random.seed(88); random.shuffle(archs)`` (NAS-Bench-201's
``exps/NAS-Bench-201/main.py``, ``generate_meta_info``; the same in NATS-Bench's topology space). The benchmark's
own checks hold here: index 0 is
``|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|``, index 9 is
``|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|`` and index 123 is
``|avg_pool_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|``
(tests/test_nb201.py; checked against xautodl by tests/reference_scripts/nb201_reference.py).
"""
from __future__ import annotations

import dataclasses
import random
from functools import lru_cache
from typing import Any, ClassVar, Iterator, Mapping

import torch

from .base import ArchConfig, IncompatibleError, as_generator, check_choice, rand_choice, rand_float, rand_int

__all__ = ["NB201Cell", "NB201Space", "NB201_OPS", "NB201_EDGES", "NUM_NODES"]

#: The benchmark's operations in its own order (xautodl ``get_search_spaces('cell', 'nas-bench-201')``): the order
#: of the enumeration digits and of the search network's architecture-weight columns.
NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

#: Nodes per cell: the input, two intermediate nodes, the output.
NUM_NODES = 4

#: The six edges as ``(to, from)`` in the order of the architecture string.
NB201_EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(1, NUM_NODES) for j in range(i))

#: Seed of the benchmark's one shuffle of the enumeration (NAS-Bench-201 ``generate_meta_info``: ``random.seed(88)``).
_BENCHMARK_SHUFFLE_SEED = 88


@dataclasses.dataclass(frozen=True)
class NB201Cell(ArchConfig):
    """One NAS-Bench-201 cell.

    Args:
        ops: the six edge operations in the architecture string's order (edges ``1<-0, 2<-0, 2<-1, 3<-0, 3<-1,
            3<-2``), names from :data:`NB201_OPS`.

    ``NB201Cell.from_string(s)`` / ``cell.to_string()`` read and write the benchmark's architecture string, which is
    also the original format (:meth:`to_original`); :meth:`resolve` accepts a cell, its dict, the string, a registry
    name or a benchmark index.
    """

    family: ClassVar[str] = "nb201"
    registry_arg: ClassVar[str] = "genotype"

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        ops = self.ops
        if isinstance(ops, (str, bytes)) or not isinstance(ops, (list, tuple)):
            raise ValueError(f"ops must be a list of {len(NB201_EDGES)} operation names, got {ops!r}")
        if len(ops) != len(NB201_EDGES):
            raise ValueError(f"ops has {len(ops)} operations; a NAS-Bench-201 cell has exactly {len(NB201_EDGES)} "
                             "(edges 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)")
        for k, op in enumerate(ops):
            check_choice(f"ops[{k}] (edge {NB201_EDGES[k][0]}<-{NB201_EDGES[k][1]})", op, NB201_OPS)
        object.__setattr__(self, "ops", tuple(str(o) for o in ops))

    # --------------------------------------------------------------------------------- architecture string
    @classmethod
    def from_string(cls, text: str) -> "NB201Cell":
        """Parse the benchmark's architecture string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.

        Raises:
            ValueError: naming the part that does not parse (wrong node count, input index or operation).
        """
        if not isinstance(text, str):
            raise TypeError(f"an architecture string must be a str, not {type(text).__name__}")
        nodes = text.strip().split("+")
        if len(nodes) != NUM_NODES - 1:
            raise ValueError(f"architecture string {text!r} has {len(nodes)} nodes separated by '+'; NAS-Bench-201 "
                             f"cells have {NUM_NODES - 1}, e.g. '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
                             "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'")
        ops: list[str] = []
        for i, node in enumerate(nodes, start=1):
            if not (node.startswith("|") and node.endswith("|")):
                raise ValueError(f"node {i} of architecture string {text!r} must be written '|op~j|...|', got {node!r}")
            edges = node[1:-1].split("|")
            if len(edges) != i:
                raise ValueError(f"node {i} of architecture string {text!r} has {len(edges)} inputs; it must list "
                                 f"exactly {i} (inputs 0..{i - 1})")
            for j, edge in enumerate(edges):
                op, sep, src = edge.partition("~")
                if not sep or src != str(j):
                    raise ValueError(f"edge {edge!r} of node {i} in {text!r} must be 'op~{j}' (inputs in order 0..{i - 1})")
                check_choice(f"operation of edge {i}<-{j}", op, NB201_OPS)
                ops.append(op)
        return cls(tuple(ops))

    def to_string(self) -> str:
        """The benchmark's architecture string."""
        parts, k = [], 0
        for i in range(1, NUM_NODES):
            parts.append("|" + "|".join(f"{self.ops[k + j]}~{j}" for j in range(i)) + "|")
            k += i
        return "+".join(parts)

    def __str__(self) -> str:
        return self.to_string()

    def to_original(self) -> str:
        """The original format: the architecture string."""
        return self.to_string()

    @classmethod
    def from_original_dict(cls, data: Mapping[str, Any] | str) -> "NB201Cell":
        """The original format, the architecture string (also as ``{'arch_str': s}``, the key of xautodl's model
        configs)."""
        if isinstance(data, str):
            return cls.from_string(data)
        if isinstance(data, Mapping) and set(data) == {"arch_str"}:
            return cls.from_string(data["arch_str"])
        raise ValueError("the original NAS-Bench-201 format is the architecture string (or {'arch_str': string})")

    @property
    def index(self) -> int:
        """The cell's index in the benchmark (see :meth:`NB201Space.index`)."""
        return NB201Space().index(self)

    # ------------------------------------------------------------------------------------------ resolving
    @classmethod
    def resolve(cls, value: Any) -> "NB201Cell":
        """Accept a cell, its dict, the architecture string, a registry name or alias, a benchmark index (an int
        in ``[0, 15625)``), or the dict as JSON text."""
        if isinstance(value, int) and not isinstance(value, bool):
            return NB201Space().cell_at(value)
        if isinstance(value, str) and value.strip().startswith("|"):
            return cls.from_string(value)
        return super().resolve(value)


@lru_cache(maxsize=None)
def _benchmark_order(ops: tuple[str, ...]) -> tuple[tuple[int, ...], dict[tuple[int, ...], int]]:
    """``(digits of every cell in benchmark index order, digits -> index)`` for the operations ``ops``."""
    n, k = len(ops), len(NB201_EDGES)
    # Enumeration order: the first edge is the most significant digit (mixed radix, base len(ops)).
    enumeration = [tuple((code // n ** (k - 1 - e)) % n for e in range(k)) for code in range(n ** k)]
    random.Random(_BENCHMARK_SHUFFLE_SEED).shuffle(enumeration)  # the benchmark's one fixed shuffle
    return tuple(enumeration), {digits: i for i, digits in enumerate(enumeration)}  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class NB201Space(ArchConfig):
    """The NAS-Bench-201 search space: every assignment of an operation to each of the six edges.

    Args:
        ops: the candidate operations (default: the benchmark's five, :data:`NB201_OPS`). A subset keeps the
            benchmark's relative order in the enumeration; :meth:`index` is the benchmark's index only for the
            full set.

    Sampling and variation (the space has no structural choices besides the operations, ``'none'`` removing an edge):
        * :meth:`sample`: each edge's operation drawn uniformly.
        * :meth:`mutate`: each edge is redrawn (to a different operation) with probability ``m_prob``; with
          probability ``s_prob`` an edge is switched on or off (to or from ``'none'``). If nothing changed, one edge
          drawn uniformly gets a different operation, so a mutation never returns its parent (the mutation of Real
          et al. 2019's regularized evolution, as the NAS-Bench-201 paper runs it).
        * :meth:`crossover`: edge-wise uniform.
        * :meth:`largest` / :meth:`smallest`: every edge ``nor_conv_3x3`` / ``none`` (the extremes of parameters and
          MACs; ``skip_connect`` and ``avg_pool_3x3`` cost nothing either).
    """

    family: ClassVar[str] = "nb201"
    config_cls: ClassVar[type] = NB201Cell

    ops: tuple[str, ...] = NB201_OPS

    def __post_init__(self) -> None:
        ops = self.ops
        if isinstance(ops, (str, bytes)) or not isinstance(ops, (list, tuple)) or not ops:
            raise ValueError(f"ops must be a non-empty list of operation names, got {ops!r}")
        for k, op in enumerate(ops):
            check_choice(f"ops[{k}]", op, NB201_OPS)
        if len(set(ops)) != len(ops):
            raise ValueError(f"ops lists an operation twice: {list(ops)}")
        # The benchmark's relative order, whatever order the caller wrote.
        object.__setattr__(self, "ops", tuple(o for o in NB201_OPS if o in ops))

    # ------------------------------------------------------------------------------------ enumeration
    def __len__(self) -> int:
        return len(self.ops) ** len(NB201_EDGES)

    def __iter__(self) -> Iterator[NB201Cell]:
        """Every cell, in index order."""
        order, _ = _benchmark_order(self.ops)
        for digits in order:
            yield NB201Cell(tuple(self.ops[d] for d in digits))

    def all(self) -> list[NB201Cell]:
        """Every cell, in index order (15,625 for the full space)."""
        return list(self)

    def index(self, cell: NB201Cell | Mapping[str, Any] | str) -> int:
        """The cell's index: NAS-Bench-201's own ``arch_index`` for the full operation set."""
        cell = self.validate(cell)
        _, lookup = _benchmark_order(self.ops)
        return lookup[tuple(self.ops.index(o) for o in cell.ops)]

    def cell_at(self, index: int) -> NB201Cell:
        """The cell at ``index`` (the inverse of :meth:`index`).

        Raises:
            ValueError: for an index outside ``[0, len(space))``.
        """
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"index must be an int, not {type(index).__name__}")
        if not 0 <= index < len(self):
            raise ValueError(f"index {index} is outside the space; allowed values: 0 .. {len(self) - 1}")
        order, _ = _benchmark_order(self.ops)
        return NB201Cell(tuple(self.ops[d] for d in order[index]))

    # ------------------------------------------------------------------------------------------- checking
    def validate(self, cfg: NB201Cell | Mapping[str, Any] | str) -> NB201Cell:
        """Return ``cfg`` as a cell if every operation is one of the space's, else raise ``ValueError`` naming the
        edge, the value and the allowed values."""
        cfg = NB201Cell.resolve(cfg)
        for k, op in enumerate(cfg.ops):
            check_choice(f"ops[{k}]", op, self.ops)
        return cfg

    def contains(self, cfg: Any) -> bool:
        try:
            self.validate(cfg)
        except (ValueError, TypeError):
            return False
        return True

    def fits(self, cfg: Any) -> bool:
        """Whether the search network of this space has an operation for every edge (the same as :meth:`contains`)."""
        return self.contains(cfg)

    # ------------------------------------------------------------------------------------------- sampling
    def sample(self, generator: torch.Generator | int | None = None) -> NB201Cell:
        """A uniformly random cell of the space."""
        g = as_generator(generator)
        return NB201Cell(tuple(rand_choice(self.ops, g) for _ in NB201_EDGES))

    def mutate(self, cfg: NB201Cell | Mapping[str, Any] | str, generator: torch.Generator | int | None = None, *,
               m_prob: float = 0.1, s_prob: float = 0.0) -> NB201Cell:
        """A mutated copy of ``cfg`` (see the class docstring); never ``cfg`` itself when the space has more than
        one operation."""
        g = as_generator(generator)
        cfg = self.validate(cfg)
        ops = list(cfg.ops)
        for k, op in enumerate(ops):
            if rand_float(g) < m_prob and len(self.ops) > 1:
                ops[k] = rand_choice([o for o in self.ops if o != op], g)
            if rand_float(g) < s_prob and "none" in self.ops and len(self.ops) > 1:
                ops[k] = rand_choice([o for o in self.ops if o != "none"], g) if ops[k] == "none" else "none"
        if tuple(ops) == cfg.ops and len(self.ops) > 1:
            k = rand_int(len(ops), g)
            ops[k] = rand_choice([o for o in self.ops if o != ops[k]], g)
        return NB201Cell(tuple(ops))

    def crossover(self, a: NB201Cell | Mapping[str, Any] | str, b: NB201Cell | Mapping[str, Any] | str,
                  generator: torch.Generator | int | None = None) -> NB201Cell:
        """Edge-wise uniform crossover.

        Raises:
            IncompatibleError: if a parent is not in this space.
        """
        g = as_generator(generator)
        try:
            a, b = self.validate(a), self.validate(b)
        except ValueError as e:
            raise IncompatibleError(f"crossover needs two cells of this space: {e}") from e
        return NB201Cell(tuple(x if rand_float(g) < 0.5 else y for x, y in zip(a.ops, b.ops)))

    def largest(self) -> NB201Cell:
        costly = [o for o in ("nor_conv_3x3", "nor_conv_1x1", "skip_connect", "avg_pool_3x3", "none") if o in self.ops]
        return NB201Cell((costly[0],) * len(NB201_EDGES))

    def smallest(self) -> NB201Cell:
        cheap = [o for o in ("none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3") if o in self.ops]
        return NB201Cell((cheap[0],) * len(NB201_EDGES))
