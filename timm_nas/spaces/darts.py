"""DARTS: the genotype config and the cell search space.

DARTS (Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019,
https://github.com/quark0/darts, ``cnn/genotypes.py`` and ``cnn/model_search.py`` at commit
``f276dd346a09ae3160f8e3aca5c7b193fda1da37``) searches two cells, a *normal* cell and a *reduction* cell. A cell
has two inputs (the outputs of the two previous cells) and ``steps`` intermediate nodes; every node sums two
operations applied to two earlier states. A searched cell is written down as a ``Genotype``:

* ``normal`` / ``reduce``: the ``(operation, input index)`` pairs, two per node in node order. Input 0 is the
  output of cell k-2, input 1 the output of cell k-1, input ``j >= 2`` intermediate node ``j - 2``.
* ``normal_concat`` / ``reduce_concat``: the states concatenated (along channels) into the cell output.

``Genotype`` is JSON-native data (``to_dict`` / ``from_dict``), reads the original repository's
``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6), ...)`` text with a small parser (the text
is never evaluated), and writes it back with :meth:`Genotype.to_text`.

``DartsSpace(primitives, steps, multiplier)`` is the set of genotypes the search network of that shape can
derive; it implements the :class:`~timm_nas.spaces.base.Space` protocol so random and evolutionary search also
run over genotypes, and :meth:`DartsSpace.derive` is the original's rule turning architecture weights into a
genotype.
"""
from __future__ import annotations

import dataclasses
import json
import re
import warnings
from typing import Any, ClassVar, Mapping

import torch

from .base import ArchConfig, IncompatibleError, as_generator, check_choice, rand_choice, rand_float, rand_int

__all__ = ["Genotype", "DartsSpace", "PRIMITIVES", "OPERATIONS", "parse_genotype_text"]

#: The DARTS search primitives in the original's order, which is also the column order of the architecture
#: weights (quark0/darts cnn/genotypes.py, ``PRIMITIVES``).
PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

#: Every operation the evaluation cell can build (quark0/darts cnn/operations.py, ``OPS``): the primitives plus
#: ``sep_conv_7x7`` and ``conv_7x1_1x7``, used only by the NASNet / AmoebaNet genotypes.
OPERATIONS: tuple[str, ...] = PRIMITIVES + ("sep_conv_7x7", "conv_7x1_1x7")

#: The two inputs of every cell (outputs of cells k-2 and k-1) come before the intermediate nodes.
NUM_CELL_INPUTS = 2


def _as_index(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} must be an int, got {value!r}")
    return value


def _check_pairs(field: str, pairs: Any) -> tuple[tuple[str, int], ...]:
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, (list, tuple)):
        raise ValueError(f"{field} must be a list of [operation, input_index] pairs, got {pairs!r}")
    if len(pairs) < 2 or len(pairs) % 2:
        raise ValueError(
            f"{field} has {len(pairs)} (operation, input) pairs; a DARTS cell needs exactly two per intermediate "
            "node, i.e. an even number of at least 2")
    out = []
    for k, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, (list, tuple)) or len(pair) != 2:
            hint = (" (FairDARTS-style (op, node, input) triples need a cell with variable in-degree, which the DARTS "
                    "cell does not build)" if isinstance(pair, (list, tuple)) and len(pair) == 3 else "")
            raise ValueError(f"{field}[{k}] must be an [operation, input_index] pair, got {pair!r}{hint}")
        op, index = pair
        check_choice(f"{field}[{k}] operation", op, OPERATIONS)
        index = _as_index(f"{field}[{k}] input index", index)
        node = k // 2
        allowed = list(range(node + NUM_CELL_INPUTS))
        if index not in allowed:
            raise ValueError(f"{field}[{k}] input index {index} is out of range for intermediate node {node}; "
                             f"allowed values: {allowed}")
        out.append((str(op), index))
    return tuple(out)


def _check_concat(field: str, concat: Any, steps: int) -> tuple[int, ...]:
    if isinstance(concat, range):
        concat = tuple(concat)
    if isinstance(concat, (str, bytes)) or not isinstance(concat, (list, tuple)) or not concat:
        raise ValueError(f"{field} must be a non-empty list of state indices, got {concat!r}")
    allowed = list(range(steps + NUM_CELL_INPUTS))
    out = []
    for k, i in enumerate(concat):
        i = _as_index(f"{field}[{k}]", i)
        if i not in allowed:
            raise ValueError(f"{field}[{k}]={i} is not a state of a cell with {steps} nodes; allowed values: {allowed}")
        if i in out:
            raise ValueError(f"{field} lists state {i} twice: {list(concat)}")
        out.append(i)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Genotype(ArchConfig):
    """One DARTS architecture: a normal cell and a reduction cell.

    Args:
        normal: ``(operation, input_index)`` pairs of the normal cell, two per intermediate node, in node order.
            Operations are names from :data:`OPERATIONS`; input 0 / 1 are the cell's inputs, ``j >= 2`` is node
            ``j - 2``. The pair order inside a node is kept (it fixes which module holds which weights).
        normal_concat: indices of the states concatenated into the normal cell's output.
        reduce: the reduction cell's pairs (operations reading input 0 or 1 run with stride 2).
        reduce_concat: the reduction cell's output states.
    """

    family: ClassVar[str] = "darts"
    registry_arg: ClassVar[str] = "genotype"

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        normal = _check_pairs("normal", self.normal)
        reduce = _check_pairs("reduce", self.reduce)
        object.__setattr__(self, "normal", normal)
        object.__setattr__(self, "reduce", reduce)
        object.__setattr__(self, "normal_concat", _check_concat("normal_concat", self.normal_concat, len(normal) // 2))
        object.__setattr__(self, "reduce_concat", _check_concat("reduce_concat", self.reduce_concat, len(reduce) // 2))

    @property
    def normal_steps(self) -> int:
        """Number of intermediate nodes of the normal cell."""
        return len(self.normal) // 2

    @property
    def reduce_steps(self) -> int:
        """Number of intermediate nodes of the reduction cell."""
        return len(self.reduce) // 2

    def cell(self, reduction: bool) -> tuple[tuple[tuple[str, int], ...], tuple[int, ...]]:
        """``(pairs, concat)`` of the reduction cell (``reduction=True``) or of the normal cell."""
        return (self.reduce, self.reduce_concat) if reduction else (self.normal, self.normal_concat)

    # ------------------------------------------------------------------------------------ original text form
    @classmethod
    def from_text(cls, text: str) -> "Genotype":
        """Parse the original repositories' ``Genotype(normal=[...], normal_concat=range(2, 6), ...)`` text.

        The text is tokenised and parsed as literal data (strings, ints, lists, tuples, ``range(...)``), never
        evaluated. GDAS's form with one ``((op, i), (op, i))`` tuple per node is flattened; its extra
        ``connectN`` / ``connects`` fields are accepted when they are ``None``.
        """
        return cls.from_dict(parse_genotype_text(text))

    def to_original(self) -> str:
        """The original's format: its ``Genotype(normal=[...], ...)`` text (:meth:`to_text`)."""
        return self.to_text()

    def to_text(self) -> str:
        """The original's ``str(Genotype(...))`` text (a contiguous concat is written as ``range(a, b)``, as the
        original's derivation produces it)."""

        def concat(c: tuple[int, ...]) -> str:
            if len(c) > 1 and list(c) == list(range(c[0], c[-1] + 1)):
                return f"range({c[0]}, {c[-1] + 1})"
            return "[" + ", ".join(str(i) for i in c) + "]"

        def pairs(p: tuple[tuple[str, int], ...]) -> str:
            return "[" + ", ".join(f"({op!r}, {i})" for op, i in p) + "]"

        return (f"Genotype(normal={pairs(self.normal)}, normal_concat={concat(self.normal_concat)}, "
                f"reduce={pairs(self.reduce)}, reduce_concat={concat(self.reduce_concat)})")

    # ------------------------------------------------------------------------------------------ resolving
    @classmethod
    def resolve(cls, genotype: "Genotype | Mapping[str, Any] | str") -> "Genotype":
        """Accept a ``Genotype``, its dict form, a registry name or alias (``'darts_v2'``, ``'DARTS_V2'``), the
        original ``Genotype(...)`` text, or the dict form as JSON text (:meth:`ArchConfig.resolve` plus the
        original's text)."""
        if isinstance(genotype, str) and "(" in genotype and not genotype.lstrip().startswith("{"):
            return cls.from_text(genotype.strip())
        try:
            return super().resolve(genotype)
        except TypeError:
            raise TypeError(f"genotype must be a Genotype, a dict, a registry name or genotype text, "
                            f"not {type(genotype).__name__}") from None

    @classmethod
    def from_original_dict(cls, data: Mapping[str, Any]) -> "Genotype":
        raise ValueError("the original's genotype format is its 'Genotype(normal=[...], ...)' text, not a dict")


# ------------------------------------------------------------------------------------------ text parser
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
  | (?P<int>[-+]?\d+)
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<punct>[()\[\],=])
""", re.VERBOSE)

_GENOTYPE_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")
_GDAS_FIELDS = ("connectN", "connects")


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"genotype text: unexpected character {text[pos]!r} at position {pos}: "
                             f"...{text[max(0, pos - 20):pos + 20]!r}...")
        if m.lastgroup != "ws":
            tokens.append((m.lastgroup, m.group(), pos))
        pos = m.end()
    return tokens


class _Parser:
    """Recursive-descent parser for literal genotype data (no evaluation)."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None, kind: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise ValueError(f"genotype text ends early; expected {value or kind}")
        if (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            raise ValueError(f"genotype text: expected {value or kind} at position {tok[2]}, found {tok[1]!r}")
        self.i += 1
        return tok

    def value(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise ValueError("genotype text ends early; expected a value")
        kind, text, pos = tok
        if kind == "str":
            self.i += 1
            body = text[1:-1]
            if "\\" in body:
                raise ValueError(f"genotype text: escape sequences are not supported in {text} at position {pos}")
            return body
        if kind == "int":
            self.i += 1
            return int(text)
        if text in ("[", "("):
            close = "]" if text == "[" else ")"
            self.i += 1
            items = []
            while self.peek() is not None and self.peek()[1] != close:
                items.append(self.value())
                if self.peek() is not None and self.peek()[1] == ",":
                    self.i += 1
                elif self.peek() is not None and self.peek()[1] != close:
                    raise ValueError(f"genotype text: expected ',' or {close!r} at position {self.peek()[2]}")
            self.take(close)
            return list(items) if text == "[" else tuple(items)
        if kind == "name":
            self.i += 1
            if text == "None":
                return None
            if text == "range":
                self.take("(")
                args = [self.take(kind="int")]
                while self.peek() is not None and self.peek()[1] == ",":
                    self.i += 1
                    if self.peek() is not None and self.peek()[1] == ")":
                        break
                    args.append(self.take(kind="int"))
                self.take(")")
                nums = [int(a[1]) for a in args]
                if not 1 <= len(nums) <= 3:
                    raise ValueError(f"genotype text: range() takes 1 to 3 ints, got {len(nums)} at position {pos}")
                return list(range(*nums))
            raise ValueError(f"genotype text: name {text!r} at position {pos} is not a literal; only strings, ints, "
                             "lists, tuples, None and range(...) are allowed")
        raise ValueError(f"genotype text: unexpected {text!r} at position {pos}")


def _flatten_node_pairs(value: Any) -> Any:
    # GDAS writes one ((op, i), (op, i)) tuple per node; DARTS writes the flat list of pairs.
    if isinstance(value, list) and value and all(
            isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(p, (list, tuple)) for p in v)
            for v in value):
        return [p for node in value for p in node]
    return value


def parse_genotype_text(text: str) -> dict[str, Any]:
    """Parse the original ``Genotype(...)`` text into the genotype dict form (without evaluating it).

    Raises:
        ValueError: naming the position of a syntax error, an unknown field, or a non-literal expression.
    """
    if not isinstance(text, str):
        raise TypeError(f"genotype text must be a str, not {type(text).__name__}")
    p = _Parser(text)
    tok = p.peek()
    if tok is not None and tok[0] == "name":
        if tok[1] != "Genotype":
            raise ValueError(f"genotype text must start with 'Genotype(', found {tok[1]!r}")
        p.i += 1
    p.take("(")
    fields: dict[str, Any] = {}
    positional = 0
    keyword_seen = False
    while p.peek() is not None and p.peek()[1] != ")":
        tok = p.peek()
        nxt = p.tokens[p.i + 1] if p.i + 1 < len(p.tokens) else None
        if tok[0] == "name" and nxt is not None and nxt[1] == "=":
            name = tok[1]
            p.i += 2
            keyword_seen = True
            if name not in _GENOTYPE_FIELDS + _GDAS_FIELDS:
                raise ValueError(f"genotype text: unknown field {name!r}; allowed fields: {list(_GENOTYPE_FIELDS)}")
            if name in fields:
                raise ValueError(f"genotype text: field {name!r} given twice")
            fields[name] = p.value()
        else:
            if keyword_seen:
                raise ValueError(f"genotype text: positional value after keyword fields at position {tok[2]}")
            if positional >= len(_GENOTYPE_FIELDS):
                raise ValueError(f"genotype text: too many positional values at position {tok[2]}")
            fields[_GENOTYPE_FIELDS[positional]] = p.value()
            positional += 1
        if p.peek() is not None and p.peek()[1] == ",":
            p.i += 1
    p.take(")")
    if p.peek() is not None:
        raise ValueError(f"genotype text: unexpected trailing text at position {p.peek()[2]}")
    for name in _GDAS_FIELDS:
        if name in fields:
            if fields.pop(name) is not None:
                raise ValueError(f"genotype text: GDAS field {name!r} is only accepted when None")
    missing = [f for f in _GENOTYPE_FIELDS if f not in fields]
    if missing:
        raise ValueError(f"genotype text is missing fields {missing}")
    return {f: _flatten_node_pairs(fields[f]) if f in ("normal", "reduce") else fields[f] for f in _GENOTYPE_FIELDS}


# --------------------------------------------------------------------------------------------------- space
#: Parameters of one operation with C channels at stride 2 (quark0/darts cnn/operations.py), used only to
#: order the primitives from cheapest to most expensive for ``largest()`` / ``smallest()``.
def _op_cost_key(name: str, C: int = 16) -> tuple[int, int]:
    from ..cost.darts import op_params

    return op_params(name, C, stride=2, affine=True), op_params(name, C, stride=1, affine=True)


@dataclasses.dataclass(frozen=True)
class DartsSpace(ArchConfig):
    """The genotypes a DARTS search network with this shape can derive.

    Args:
        primitives: candidate operations in the column order of the architecture weights (default: the original's
            :data:`PRIMITIVES`). ``'none'`` takes part in the softmax but is never chosen.
        steps: intermediate nodes per cell (default 4).
        multiplier: how many of the last states form the cell output (default 4): the genotype's concat is
            ``range(2 + steps - multiplier, steps + 2)``.

    Membership (:meth:`contains` / :meth:`validate`) means: ``steps`` nodes per cell, each with two different
    inputs, operations from the primitives other than ``'none'``, and the space's concat: exactly what
    :meth:`derive` can return. :meth:`fits` is looser: the search network has an edge and an operation for every
    pair (same node count and primitives; the concat may differ).

    Sampling and variation (documented choices, DARTS itself has none):
        * :meth:`sample`: per node, two different inputs drawn uniformly without replacement and an operation
          drawn uniformly from the non-``none`` primitives for each.
        * :meth:`mutate`: each pair's operation is redrawn (to a different one) with probability ``op_prob``, and
          each pair's input (to one not used by the node) with probability ``edge_prob``.
        * :meth:`crossover`: node-wise uniform: each node of each cell comes with both its pairs from one parent.
        * :meth:`largest` / :meth:`smallest`: every node reads inputs 0 and 1 through the primitive with the most /
          fewest parameters (counted at stride 2 then stride 1; ties keep the primitives' order), so the two are the
          extremes of the parameter count over the space.
    """

    family: ClassVar[str] = "darts"
    config_cls: ClassVar[type] = Genotype

    primitives: tuple[str, ...] = PRIMITIVES
    steps: int = 4
    multiplier: int = 4

    def __post_init__(self) -> None:
        prims = self.primitives
        if isinstance(prims, (str, bytes)) or not isinstance(prims, (list, tuple)) or not prims:
            raise ValueError(f"primitives must be a non-empty list of operation names, got {prims!r}")
        prims = tuple(prims)
        for k, p in enumerate(prims):
            check_choice(f"primitives[{k}]", p, OPERATIONS)
        if len(set(prims)) != len(prims):
            raise ValueError(f"primitives lists an operation twice: {list(prims)}")
        if not [p for p in prims if p != "none"]:
            raise ValueError("primitives must hold at least one operation other than 'none'")
        steps = _as_index("steps", self.steps)
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        multiplier = _as_index("multiplier", self.multiplier)
        if not 1 <= multiplier <= steps + NUM_CELL_INPUTS:
            raise ValueError(f"multiplier={multiplier} must be between 1 and steps + 2 = {steps + NUM_CELL_INPUTS}")
        object.__setattr__(self, "primitives", prims)
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "multiplier", multiplier)

    # --------------------------------------------------------------------------------------------- shape
    @property
    def num_edges(self) -> int:
        """Edges (rows of the architecture weights) per cell: node i has ``i + 2`` incoming edges."""
        return sum(i + NUM_CELL_INPUTS for i in range(self.steps))

    @property
    def concat(self) -> tuple[int, ...]:
        """The genotype concat of this space (the original's ``range(2 + steps - multiplier, steps + 2)``)."""
        return tuple(range(NUM_CELL_INPUTS + self.steps - self.multiplier, self.steps + NUM_CELL_INPUTS))

    @property
    def operations(self) -> tuple[str, ...]:
        """The primitives a genotype may use (all but ``'none'``)."""
        return tuple(p for p in self.primitives if p != "none")

    # ------------------------------------------------------------------------------------------ derivation
    def derive(self, weights_normal: Any, weights_reduce: Any) -> Genotype:
        """The original's genotype derivation (quark0/darts cnn/model_search.py ``Network.genotype``).

        Args:
            weights_normal: softmax of the normal cell's architecture weights, ``(num_edges, len(primitives))``
                (a tensor or nested lists); the softmax must include ``'none'``.
            weights_reduce: the same for the reduction cell.

        For node i (rows ``start .. start + i + 1``) the two incoming edges with the largest best non-``none``
        weight are kept (stable sort: on a tie the lower input wins), strongest first, each with its best
        non-``none`` operation (first maximum on ties).
        """
        return Genotype(self._derive_cell(weights_normal, "weights_normal"), self.concat,
                        self._derive_cell(weights_reduce, "weights_reduce"), self.concat)

    def _derive_cell(self, weights: Any, name: str) -> tuple[tuple[str, int], ...]:
        if isinstance(weights, torch.Tensor):
            weights = weights.detach().cpu().tolist()
        rows = [list(map(float, r)) for r in weights]
        if len(rows) != self.num_edges or any(len(r) != len(self.primitives) for r in rows):
            raise ValueError(f"{name} must have shape ({self.num_edges}, {len(self.primitives)}) for steps="
                             f"{self.steps} and {len(self.primitives)} primitives")
        none = self.primitives.index("none") if "none" in self.primitives else -1
        gene: list[tuple[str, int]] = []
        start, n = 0, NUM_CELL_INPUTS
        for _ in range(self.steps):
            W = rows[start:start + n]
            edges = sorted(range(n), key=lambda x: -max(W[x][k] for k in range(len(W[x])) if k != none))[:2]
            for j in edges:
                k_best = None
                for k in range(len(W[j])):
                    if k != none and (k_best is None or W[j][k] > W[j][k_best]):
                        k_best = k
                gene.append((self.primitives[k_best], j))
            start += n
            n += 1
        return tuple(gene)

    # ------------------------------------------------------------------------------------------- checking
    def validate(self, cfg: Genotype | Mapping[str, Any]) -> Genotype:
        """Return ``cfg`` as a ``Genotype`` if the space's search can derive it, else raise ``ValueError``
        naming the field, the value and the allowed values."""
        cfg = Genotype.resolve(cfg)
        self._check(cfg, check_concat=True)
        return cfg

    def _check(self, cfg: Genotype, check_concat: bool) -> None:
        ops = self.operations if check_concat else self.primitives
        for field in ("normal", "reduce"):
            pairs = getattr(cfg, field)
            check_choice(f"{field} node count", len(pairs) // 2, [self.steps])
            for k, (op, _) in enumerate(pairs):
                check_choice(f"{field}[{k}] operation", op, ops)
            for node in range(self.steps):
                a, b = pairs[2 * node][1], pairs[2 * node + 1][1]
                if a == b:
                    raise ValueError(f"{field}[{2 * node}] and {field}[{2 * node + 1}] both read input {a}; the search "
                                     "network has one edge per input, so a node's two inputs must differ")
            if check_concat:
                concat = getattr(cfg, f"{field}_concat")
                if concat != self.concat:
                    raise ValueError(f"{field}_concat={list(concat)} is not allowed; allowed values: "
                                     f"[{list(self.concat)}]")

    def contains(self, cfg: Genotype | Mapping[str, Any]) -> bool:
        try:
            self.validate(cfg)
        except (ValueError, TypeError):
            return False
        return True

    def check_fits(self, cfg: Genotype | Mapping[str, Any]) -> Genotype:
        """Return ``cfg`` if the search network of this space has an edge and an operation for each of its pairs,
        else raise ``ValueError`` saying which pair does not fit."""
        cfg = Genotype.resolve(cfg)
        self._check(cfg, check_concat=False)
        return cfg

    def fits(self, cfg: Genotype | Mapping[str, Any]) -> bool:
        try:
            self.check_fits(cfg)
        except (ValueError, TypeError):
            return False
        return True

    # ------------------------------------------------------------------------------------------- sampling
    def _sample_cell(self, g: torch.Generator) -> tuple[tuple[str, int], ...]:
        pairs: list[tuple[str, int]] = []
        for node in range(self.steps):
            inputs = list(range(node + NUM_CELL_INPUTS))
            first = inputs.pop(rand_int(len(inputs), g))
            second = rand_choice(inputs, g)
            pairs += [(rand_choice(self.operations, g), first), (rand_choice(self.operations, g), second)]
        return tuple(pairs)

    def sample(self, generator: torch.Generator | int | None = None) -> Genotype:
        """A uniformly random genotype of the space (normal cell first, then the reduction cell)."""
        g = as_generator(generator)
        normal = self._sample_cell(g)
        reduce = self._sample_cell(g)
        return Genotype(normal, self.concat, reduce, self.concat)

    def mutate(self, cfg: Genotype | Mapping[str, Any], generator: torch.Generator | int | None = None, *,
               m_prob: float = 0.1, s_prob: float = 0.1, op_prob: float | None = None,
               edge_prob: float | None = None) -> Genotype:
        """Redraw each pair's operation with probability ``m_prob`` (always to a different operation) and each
        pair's input edge, the cell's structure, with probability ``s_prob`` (to an input its node does not use
        yet). The names are those of every space's ``mutate`` (per-choice and structural probabilities).

        ``op_prob`` / ``edge_prob`` are the former names of ``m_prob`` / ``s_prob`` (deprecated).
        """
        if op_prob is not None or edge_prob is not None:
            warnings.warn("DartsSpace.mutate(op_prob=, edge_prob=) are deprecated; use m_prob= (operations) and "
                          "s_prob= (input edges), the names every space's mutate takes", DeprecationWarning,
                          stacklevel=2)
            m_prob = m_prob if op_prob is None else op_prob
            s_prob = s_prob if edge_prob is None else edge_prob
        op_prob, edge_prob = m_prob, s_prob
        g = as_generator(generator)
        cfg = self.validate(cfg)
        cells = []
        for pairs in (cfg.normal, cfg.reduce):
            out = [list(p) for p in pairs]
            for k, pair in enumerate(out):
                if rand_float(g) < op_prob and len(self.operations) > 1:
                    pair[0] = rand_choice([o for o in self.operations if o != pair[0]], g)
                if rand_float(g) < edge_prob:
                    node = k // 2
                    used = {out[2 * node][1], out[2 * node + 1][1]}
                    free = [i for i in range(node + NUM_CELL_INPUTS) if i not in used]
                    if free:
                        pair[1] = rand_choice(free, g)
            cells.append(tuple((op, i) for op, i in out))
        return Genotype(cells[0], self.concat, cells[1], self.concat)

    def crossover(self, a: Genotype | Mapping[str, Any], b: Genotype | Mapping[str, Any],
                  generator: torch.Generator | int | None = None) -> Genotype:
        """Node-wise uniform crossover: every node of each cell takes both its pairs from one parent.

        Raises:
            IncompatibleError: if a parent is not in this space (e.g. a different node count).
        """
        g = as_generator(generator)
        try:
            a, b = self.validate(a), self.validate(b)
        except ValueError as e:
            raise IncompatibleError(f"crossover needs two genotypes of this space: {e}") from e
        cells = []
        for pa, pb in ((a.normal, b.normal), (a.reduce, b.reduce)):
            pairs: list[tuple[str, int]] = []
            for node in range(self.steps):
                src = pa if rand_float(g) < 0.5 else pb
                pairs += [src[2 * node], src[2 * node + 1]]
            cells.append(tuple(pairs))
        return Genotype(cells[0], self.concat, cells[1], self.concat)

    def _extreme(self, most: bool) -> Genotype:
        ranked = sorted(self.operations, key=_op_cost_key)  # stable: ties keep the primitives' order
        op = ranked[-1] if most else ranked[0]
        if most:  # first of the most expensive ties, like the cheapest end
            op = next(o for o in ranked if _op_cost_key(o) == _op_cost_key(ranked[-1]))
        cell = tuple(p for _ in range(self.steps) for p in ((op, 0), (op, 1)))
        return Genotype(cell, self.concat, cell, self.concat)

    def largest(self) -> Genotype:
        return self._extreme(most=True)

    def smallest(self) -> Genotype:
        return self._extreme(most=False)
