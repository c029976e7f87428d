"""S3 (AutoFormerV2): the subnet config and the search space.

S3 (Chen et al., "Searching the Search Space of Vision Transformer", NeurIPS 2021, arXiv:2111.14725,
https://github.com/microsoft/Cream/tree/main/AutoFormerV2) searches a four-stage Swin-like network: per stage the
embedding width and the depth, per block the window size, the head count and the MLP ratio. The released code
(``AutoFormerV2/model/SSS.py``) fixes the head width at 32 channels (``head_dim = 32``) and needs
``embed_dim == 32 * num_heads``, so the Q-K-V width equals the embedding width and the head count follows from
it; this module keeps that rule (the space's ``head_dim``) and does not add a separate Q-K-V dimension.

The paper's initial and final spaces were only published as a figure; the presets below are our own, built
around the published S3-T / S3-S / S3-B (their widths, depths, windows and MLP ratio are among the choices).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Iterator, Mapping, Sequence

import torch

from .base import (
    ArchConfig,
    IncompatibleError,
    PresetSpace,
    as_generator,
    check_choice,
    rand_choice,
    rand_float,
    to_tuple,
)

__all__ = ["S3Subnet", "S3Space", "S3_PRESETS", "HEAD_DIM", "DIMENSIONS", "effective_window"]

#: Width of one attention head in the released code: ``head_dim = 32`` in ``WindowAttention.__init__`` of
#: microsoft/Cream AutoFormerV2/model/SSS.py (commit 4a13c409); heads = embed dim / 32.
HEAD_DIM = 32

#: The per-stage search dimensions of a space, in the order the space evolution visits them.
DIMENSIONS = ("depth", "embed_dim", "window_size", "mlp_ratio")

_ORIGINAL_KEYS = ("EMBED_DIM", "DEPTHS", "NUM_HEADS", "MLP_RATIO", "WINDOW_SIZE")


def _as_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{field} must be an int, got {value!r}")
    return int(value)


def _as_ratio(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{field} must be a positive number, got {value!r}")
    return float(value)


def _positive_int(field: str, value: Any) -> int:
    v = _as_int(field, value)
    if v <= 0:
        raise ValueError(f"{field} must be positive, got {v}")
    return v


def effective_window(grid: int, window: int) -> int:
    """The window a block really uses on a ``grid x grid`` token map (the original's rule).

    ``SwinTransformerBlock.__init__`` in SSS.py: when ``min(input_resolution) <= window_size`` the block attends
    over the whole map (window = grid side, no shift); otherwise it uses the requested window.
    """
    return grid if grid <= window else window


@dataclasses.dataclass(frozen=True)
class S3Subnet(ArchConfig):
    """One S3 architecture.

    Args:
        embed_dim: embedding width per stage (the Q-K-V width of every block of the stage equals it).
        depth: number of blocks per stage.
        num_heads: heads per block, nested by stage (``num_heads[i][j]`` for block j of stage i); each must divide
            the stage's width (a head is ``embed_dim[i] // num_heads[i][j]`` channels wide).
        window_size: requested window side per block, nested by stage. A window at least as large as the stage's
            token grid means global attention without shift (see :func:`effective_window`).
        mlp_ratio: MLP ratio per block, nested by stage; the hidden width is ``int(embed_dim[i] * ratio)``.
    """

    family: ClassVar[str] = "s3"
    registry_arg: ClassVar[str] = "subnet"

    embed_dim: tuple[int, ...]
    depth: tuple[int, ...]
    num_heads: tuple[tuple[int, ...], ...]
    window_size: tuple[tuple[int, ...], ...]
    mlp_ratio: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        embed, depth = to_tuple(self.embed_dim), to_tuple(self.depth)
        if not isinstance(embed, tuple) or not isinstance(depth, tuple) or not embed:
            raise ValueError("embed_dim and depth must be non-empty lists with one value per stage, "
                             f"got embed_dim={self.embed_dim!r}, depth={self.depth!r}")
        if len(embed) != len(depth):
            raise ValueError(f"embed_dim has {len(embed)} stages but depth has {len(depth)}; give one value per stage")
        embed = tuple(_positive_int(f"embed_dim[{i}]", e) for i, e in enumerate(embed))
        depth = tuple(_positive_int(f"depth[{i}]", d) for i, d in enumerate(depth))
        nested = {}
        for field in ("num_heads", "window_size", "mlp_ratio"):
            value = to_tuple(getattr(self, field))
            if not isinstance(value, tuple) or len(value) != len(depth):
                raise ValueError(f"{field} must hold one list per stage ({len(depth)} stages), "
                                 f"got {getattr(self, field)!r}")
            stages = []
            for i, per_block in enumerate(value):
                if not isinstance(per_block, tuple) or len(per_block) != depth[i]:
                    raise ValueError(f"{field}[{i}] must hold one value per block of stage {i} "
                                     f"(depth[{i}]={depth[i]}), got {per_block!r}")
                if field == "mlp_ratio":
                    stages.append(tuple(_as_ratio(f"{field}[{i}][{j}]", v) for j, v in enumerate(per_block)))
                else:
                    stages.append(tuple(_positive_int(f"{field}[{i}][{j}]", v) for j, v in enumerate(per_block)))
            nested[field] = tuple(stages)
        for i, heads in enumerate(nested["num_heads"]):
            for j, h in enumerate(heads):
                if embed[i] % h:
                    raise ValueError(f"num_heads[{i}][{j}]={h} does not divide embed_dim[{i}]={embed[i]}; the Q-K-V "
                                     "width equals the embed dim, so choose a head count that divides it")
        set_("embed_dim", embed)
        set_("depth", depth)
        for field, value in nested.items():
            set_(field, value)

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def num_stages(self) -> int:
        return len(self.depth)

    def mlp_hidden(self, stage: int, block: int) -> int:
        """Hidden width of a block's MLP: ``int(E * r)``, the original's rounding."""
        return int(self.embed_dim[stage] * self.mlp_ratio[stage][block])

    def blocks(self) -> Iterator[tuple[int, int]]:
        """``(stage, block)`` pairs in forward order."""
        for i, d in enumerate(self.depth):
            for j in range(d):
                yield i, j

    # ------------------------------------------------------------------------------------------ formats
    @classmethod
    def from_original(cls, d: Mapping[str, Any]) -> "S3Subnet":
        """Read the original's config (the ``AutoFormerV2/configs/S3-*.yaml`` keys ``EMBED_DIM``, ``DEPTHS``,
        ``NUM_HEADS``, ``MLP_RATIO``, ``WINDOW_SIZE``).

        Per-block lists may be longer than the stage's depth (the released S3-T YAML lists 8 stage-3 windows,
        heads and MLP ratios for its 6 blocks); the original only reads the first ``DEPTHS[i]`` entries
        (``window_size[i]`` in ``BasicLayer``), and so does this reader. A single number instead of a per-block
        list is repeated for every block of the stage.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"from_original expects a dict, got {type(d).__name__}")
        missing = [k for k in _ORIGINAL_KEYS if k not in d]
        if missing:
            raise ValueError(f"original S3 config is missing keys {missing}; expected {list(_ORIGINAL_KEYS)}, "
                             f"got {sorted(d)}")
        extra = sorted(set(d) - set(_ORIGINAL_KEYS))
        if extra:
            raise ValueError(f"unknown keys {extra} in an original S3 config; expected {list(_ORIGINAL_KEYS)}")
        depth = tuple(_positive_int(f"DEPTHS[{i}]", v) for i, v in enumerate(d["DEPTHS"]))

        def per_block(key: str) -> tuple:
            stages = d[key]
            if not isinstance(stages, (list, tuple)) or len(stages) != len(depth):
                raise ValueError(f"{key} must hold one entry per stage ({len(depth)} stages), got {stages!r}")
            out = []
            for i, v in enumerate(stages):
                if not isinstance(v, (list, tuple)):
                    out.append((v,) * depth[i])
                elif len(v) < depth[i]:
                    raise ValueError(f"{key}[{i}] lists {len(v)} values but stage {i} has {depth[i]} blocks")
                else:
                    out.append(tuple(v[:depth[i]]))
            return tuple(out)

        return cls(embed_dim=tuple(d["EMBED_DIM"]), depth=depth, num_heads=per_block("NUM_HEADS"),
                   window_size=per_block("WINDOW_SIZE"), mlp_ratio=per_block("MLP_RATIO"))

    @classmethod
    def from_original_dict(cls, data: Mapping[str, Any]) -> "S3Subnet":
        return cls.from_original(data)

    def to_original(self) -> dict[str, Any]:
        """The original's YAML dict (``EMBED_DIM``, ``DEPTHS``, nested ``NUM_HEADS``, ``MLP_RATIO``,
        ``WINDOW_SIZE``)."""
        return {
            "EMBED_DIM": list(self.embed_dim),
            "DEPTHS": list(self.depth),
            "NUM_HEADS": [list(v) for v in self.num_heads],
            "MLP_RATIO": [list(v) for v in self.mlp_ratio],
            "WINDOW_SIZE": [list(v) for v in self.window_size],
        }


def _choices(field: str, values: Any, kind: type) -> tuple:
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"space field {field} must be a non-empty list of choices, got {values!r}")
    out = [_positive_int(field, v) if kind is int else _as_ratio(field, v) for v in values]
    return tuple(sorted(set(out)))


def _per_stage(field: str, values: Any, kind: type, num_stages: int | None, broadcast: bool) -> tuple:
    values = to_tuple(values)
    if not isinstance(values, tuple) or not values:
        raise ValueError(f"space field {field} must be a non-empty list (one choice list per stage), got {values!r}")
    if broadcast and not any(isinstance(v, tuple) for v in values):
        if num_stages is None:
            raise ValueError(f"space field {field} needs the number of stages to broadcast a flat choice list")
        values = (values,) * num_stages
    if not all(isinstance(v, tuple) for v in values):
        raise ValueError(f"space field {field} must hold one choice list per stage, got {values!r}")
    if num_stages is not None and len(values) != num_stages:
        raise ValueError(f"space field {field} has {len(values)} stages but embed_dim has {num_stages}")
    return tuple(_choices(f"{field}[{i}]", v, kind) for i, v in enumerate(values))


@dataclasses.dataclass(frozen=True)
class S3Space(PresetSpace):
    """An S3 search space; its supernet holds the largest choice of every dimension.

    Args:
        embed_dim: per stage, the choices of the stage's width (multiples of ``head_dim``).
        depth: per stage, the choices of the number of blocks.
        window_size: per stage, the choices of each block's window side.
        mlp_ratio: the choices of each block's MLP ratio: one list for every stage, or one list per stage.
        head_dim: width of one head; a block of width E has ``E // head_dim`` heads (default 32, the original's).
    """

    family: ClassVar[str] = "s3"
    config_cls: ClassVar[type] = S3Subnet
    label: ClassVar[str] = "S3"

    embed_dim: tuple[tuple[int, ...], ...]
    depth: tuple[tuple[int, ...], ...]
    window_size: tuple[tuple[int, ...], ...]
    mlp_ratio: tuple[tuple[float, ...], ...]
    head_dim: int = HEAD_DIM

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        embed = _per_stage("embed_dim", self.embed_dim, int, None, broadcast=False)
        n = len(embed)
        set_("embed_dim", embed)
        set_("depth", _per_stage("depth", self.depth, int, n, broadcast=False))
        set_("window_size", _per_stage("window_size", self.window_size, int, n, broadcast=False))
        set_("mlp_ratio", _per_stage("mlp_ratio", self.mlp_ratio, float, n, broadcast=True))
        set_("head_dim", _positive_int("head_dim", self.head_dim))
        for i, choices in enumerate(self.embed_dim):
            for e in choices:
                if e % self.head_dim:
                    raise ValueError(f"embed_dim choice {e} of stage {i} is not a multiple of head_dim={self.head_dim} "
                                     "(heads = embed_dim / head_dim must be whole)")

    # ----------------------------------------------------------------------------------------- construction
    @property
    def num_stages(self) -> int:
        return len(self.embed_dim)

    def heads(self, embed_dim: int) -> int:
        """Head count of a block of width ``embed_dim``."""
        return embed_dim // self.head_dim

    def _build(self, embed: Sequence[int], depth: Sequence[int], window: Sequence[Sequence[int]],
               ratio: Sequence[Sequence[float]]) -> S3Subnet:
        heads = tuple((self.heads(e),) * d for e, d in zip(embed, depth))
        return S3Subnet(tuple(embed), tuple(depth), heads, tuple(map(tuple, window)), tuple(map(tuple, ratio)))

    def _uniform(self, pick: Any) -> S3Subnet:
        depth = [pick(c) for c in self.depth]
        return self._build([pick(c) for c in self.embed_dim], depth,
                           [(pick(self.window_size[i]),) * d for i, d in enumerate(depth)],
                           [(pick(self.mlp_ratio[i]),) * d for i, d in enumerate(depth)])

    def full(self) -> S3Subnet:
        """The subnet using the supernet's whole weight shape (the default active subnet); equals
        :meth:`largest` because the supernet holds the largest choice of every dimension."""
        return self.largest()

    def largest(self) -> S3Subnet:
        return self._uniform(max)

    def smallest(self) -> S3Subnet:
        return self._uniform(min)

    # ------------------------------------------------------------------------------------------- dimensions
    def choices(self, dim: str, stage: int) -> tuple:
        """The choices of one (dimension, stage) subspace."""
        if dim not in DIMENSIONS:
            raise ValueError(f"unknown S3 dimension {dim!r}; choose from {list(DIMENSIONS)}")
        if not 0 <= stage < self.num_stages:
            raise ValueError(f"stage {stage} out of range; the space has {self.num_stages} stages")
        return getattr(self, dim)[stage]

    def with_choices(self, dim: str, stage: int, values: Sequence[Any]) -> "S3Space":
        """A copy of the space with the choices of one (dimension, stage) subspace replaced."""
        self.choices(dim, stage)  # checks dim and stage
        per_stage = list(getattr(self, dim))
        per_stage[stage] = tuple(values)
        return S3Space.from_dict(dict(self.to_dict(), **{dim: [list(v) for v in per_stage]}))

    def num_architectures(self) -> int:
        """The number of distinct subnets in the space (per block, a window and an MLP ratio are chosen)."""
        total = 1
        for i in range(self.num_stages):
            per_block = len(self.window_size[i]) * len(self.mlp_ratio[i])
            total *= len(self.embed_dim[i]) * sum(per_block ** d for d in self.depth[i])
        return total

    # ------------------------------------------------------------------------------------------- checking
    def _check_stages(self, cfg: S3Subnet) -> None:
        if cfg.num_stages != self.num_stages:
            raise ValueError(f"the config has {cfg.num_stages} stages but the space has {self.num_stages}")

    def validate(self, cfg: S3Subnet | Mapping[str, Any]) -> S3Subnet:
        """Return ``cfg`` as an ``S3Subnet`` if every value is one of the space's choices, else raise
        ``ValueError`` naming the field, the value and the allowed values."""
        cfg = S3Subnet.from_dict(cfg)
        self._check_stages(cfg)
        for i in range(self.num_stages):
            check_choice(f"depth[{i}]", cfg.depth[i], self.depth[i])
            check_choice(f"embed_dim[{i}]", cfg.embed_dim[i], self.embed_dim[i])
            for j in range(cfg.depth[i]):
                check_choice(f"num_heads[{i}][{j}]", cfg.num_heads[i][j], (self.heads(cfg.embed_dim[i]),))
                check_choice(f"window_size[{i}][{j}]", cfg.window_size[i][j], self.window_size[i])
                check_choice(f"mlp_ratio[{i}][{j}]", cfg.mlp_ratio[i][j], self.mlp_ratio[i])
        return cfg

    def contains(self, cfg: S3Subnet | Mapping[str, Any]) -> bool:
        try:
            self.validate(cfg)
        except ValueError:
            return False
        return True

    def check_fits(self, cfg: S3Subnet | Mapping[str, Any], grid: int | None = None) -> S3Subnet:
        """Return ``cfg`` if the supernet's weights can run it, else raise ``ValueError`` saying which value exceeds
        which weight shape.

        Args:
            cfg: the subnet.
            grid: the patch grid side of the first stage (``img_size // patch_size``). With it, windows are compared
                after clamping to each stage's grid (a window 14 on a 7x7 map is the same as 7); without it, each
                window must be at most the stage's largest window choice.
        """
        cfg = S3Subnet.from_dict(cfg)
        self._check_stages(cfg)
        for i in range(self.num_stages):
            big_e, big_d = max(self.embed_dim[i]), max(self.depth[i])
            big_w, big_r = max(self.window_size[i]), max(self.mlp_ratio[i])
            if cfg.depth[i] > big_d:
                raise ValueError(f"depth[{i}]={cfg.depth[i]} exceeds the supernet's {big_d} blocks in stage {i}")
            if cfg.embed_dim[i] > big_e:
                raise ValueError(f"embed_dim[{i}]={cfg.embed_dim[i]} exceeds the supernet's width {big_e} in stage {i}")
            res = None if grid is None else max(grid // 2 ** i, 1)
            for j in range(cfg.depth[i]):
                h = cfg.num_heads[i][j]
                if h > self.heads(big_e):
                    raise ValueError(f"num_heads[{i}][{j}]={h} exceeds the supernet's {self.heads(big_e)} heads "
                                     f"(relative-position table columns) in stage {i}")
                if cfg.mlp_hidden(i, j) > int(big_e * big_r):
                    raise ValueError(f"mlp_ratio[{i}][{j}]={cfg.mlp_ratio[i][j]} gives {cfg.mlp_hidden(i, j)} hidden "
                                     f"units but the supernet holds {int(big_e * big_r)} in stage {i}")
                w = cfg.window_size[i][j]
                if res is None:
                    if w > big_w:
                        raise ValueError(f"window_size[{i}][{j}]={w} exceeds the supernet's largest window {big_w} "
                                         f"in stage {i}")
                elif effective_window(res, w) > effective_window(res, big_w):
                    raise ValueError(f"window_size[{i}][{j}]={w} needs a {effective_window(res, w)}-window table on "
                                     f"the {res}x{res} grid of stage {i}, but the supernet's largest is "
                                     f"{effective_window(res, big_w)}")
        return cfg

    def fits(self, cfg: S3Subnet | Mapping[str, Any], grid: int | None = None) -> bool:
        try:
            self.check_fits(cfg, grid)
        except ValueError:
            return False
        return True

    # ------------------------------------------------------------------------------------------- sampling
    def sample(self, generator: torch.Generator | int | None = None) -> S3Subnet:
        """Uniform sample: stage by stage, the depth, then the width, then each block's window and MLP ratio."""
        g = as_generator(generator)
        embed, depth, window, ratio = [], [], [], []
        for i in range(self.num_stages):
            d = rand_choice(self.depth[i], g)
            depth.append(d)
            embed.append(rand_choice(self.embed_dim[i], g))
            w, r = [], []
            for _ in range(d):
                w.append(rand_choice(self.window_size[i], g))
                r.append(rand_choice(self.mlp_ratio[i], g))
            window.append(w)
            ratio.append(r)
        return self._build(embed, depth, window, ratio)

    def mutate(self, cfg: S3Subnet | Mapping[str, Any], generator: torch.Generator | int | None = None, *,
               m_prob: float = 0.2, s_prob: float = 0.4) -> S3Subnet:
        """AutoFormer's evolution mutation (microsoft/Cream AutoFormer/evolution.py), applied per stage.

        For each stage: with probability ``s_prob`` redraw the depth (truncating, or appending random blocks), and
        with probability ``s_prob`` redraw the width (heads follow); then redraw each block's window and MLP ratio
        with probability ``m_prob``.
        """
        g = as_generator(generator)
        cfg = S3Subnet.from_dict(cfg)
        self._check_stages(cfg)
        embed, depth = list(cfg.embed_dim), list(cfg.depth)
        window, ratio = [list(v) for v in cfg.window_size], [list(v) for v in cfg.mlp_ratio]
        for i in range(self.num_stages):
            if rand_float(g) < s_prob:
                new = rand_choice(self.depth[i], g)
                for _ in range(depth[i], new):
                    window[i].append(rand_choice(self.window_size[i], g))
                    ratio[i].append(rand_choice(self.mlp_ratio[i], g))
                window[i], ratio[i], depth[i] = window[i][:new], ratio[i][:new], new
            if rand_float(g) < s_prob:
                embed[i] = rand_choice(self.embed_dim[i], g)
            for j in range(depth[i]):
                if rand_float(g) < m_prob:
                    window[i][j] = rand_choice(self.window_size[i], g)
                if rand_float(g) < m_prob:
                    ratio[i][j] = rand_choice(self.mlp_ratio[i], g)
        return self._build(embed, depth, window, ratio)

    def crossover(self, a: S3Subnet | Mapping[str, Any], b: S3Subnet | Mapping[str, Any],
                  generator: torch.Generator | int | None = None) -> S3Subnet:
        """Gene-wise uniform crossover of two parents with equal depths (AutoFormer's rule): each stage's width
        and each block's window and MLP ratio come from either parent with probability 1/2.

        Raises:
            IncompatibleError: if the parents' depths differ in any stage.
        """
        g = as_generator(generator)
        a, b = S3Subnet.from_dict(a), S3Subnet.from_dict(b)
        if a.depth != b.depth:
            raise IncompatibleError(f"crossover needs parents of equal depths, got {list(a.depth)} and {list(b.depth)}")
        pick = lambda x, y: x if rand_float(g) < 0.5 else y  # noqa: E731
        embed, window, ratio = [], [], []
        for i in range(a.num_stages):
            embed.append(pick(a.embed_dim[i], b.embed_dim[i]))
            window.append([pick(x, y) for x, y in zip(a.window_size[i], b.window_size[i])])
            ratio.append([pick(x, y) for x, y in zip(a.mlp_ratio[i], b.mlp_ratio[i])])
        return self._build(embed, a.depth, window, ratio)

    def compatible(self, a: S3Subnet | Mapping[str, Any], b: S3Subnet | Mapping[str, Any]) -> bool:
        """Whether :meth:`crossover` accepts the pair."""
        return S3Subnet.from_dict(a).depth == S3Subnet.from_dict(b).depth


#: Our presets (the paper's spaces exist only as a figure). Each is centred on one published model (S3-T/S/B,
#: microsoft/Cream AutoFormerV2/configs/S3-{T,S,B}.yaml): that model's widths 96/192/384/768 are the largest width
#: choices (so its weights are the supernet's full width), its depths 2/2/{6,18,30}/2 sit inside the depth
#: choices, and its windows 7 and 14 and MLP ratio 4 are among the window and ratio choices. Widths step by one
#: head (32 channels) or more; window choices {7, 14} both divide the 56/28 grids at 224 and clamp to global
#: attention on the 14/7 grids, as in the published models.
S3_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(embed_dim=[[64, 96], [128, 160, 192], [256, 320, 384], [512, 640, 768]],
                 depth=[[1, 2], [1, 2], [5, 6, 7], [1, 2]],
                 window_size=[[7, 14], [7, 14], [7, 14], [7, 14]],
                 mlp_ratio=[3.0, 3.5, 4.0]),
    "small": dict(embed_dim=[[64, 96], [128, 160, 192], [256, 320, 384], [512, 640, 768]],
                  depth=[[1, 2], [1, 2], [17, 18, 19], [1, 2]],
                  window_size=[[7, 14], [7, 14], [7, 14], [7, 14]],
                  mlp_ratio=[3.0, 3.5, 4.0]),
    "base": dict(embed_dim=[[64, 96], [128, 160, 192], [256, 320, 384], [512, 640, 768]],
                 depth=[[1, 2], [1, 2], [29, 30, 31], [1, 2]],
                 window_size=[[7, 14], [7, 14], [7, 14], [7, 14]],
                 mlp_ratio=[3.0, 3.5, 4.0]),
}
S3Space.presets = S3_PRESETS
