"""AutoFormer: the subnet config and the search space.

AutoFormer (Chen et al., "AutoFormer: Searching Transformers for Visual Recognition", ICCV 2021,
https://github.com/microsoft/Cream/tree/main/AutoFormer) searches one embedding dim shared by all layers, the
depth, and per-layer head counts and MLP ratios of a weight-entangled ViT supernet. TF-TAS (Zhou et al., CVPR 2022)
searches the same spaces training-free.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

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

__all__ = ["AutoFormerSubnet", "AutoFormerSpace", "AUTOFORMER_PRESETS", "HEAD_DIM"]

#: Head width of the original's official setting (``change_qkv``: qk width = heads x 64),
#: microsoft/Cream AutoFormer/model/supernet_transformer.py (``sample_q_embed_dim = num_heads * 64``).
HEAD_DIM = 64


def _as_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{field} must be an int, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class AutoFormerSubnet(ArchConfig):
    """One AutoFormer architecture.

    Args:
        embed_dim: embedding width, shared by every layer (as in the original).
        depth: number of transformer blocks.
        num_heads: heads per block (length ``depth``); the qkv width of block i is ``num_heads[i] * head_dim``.
        mlp_ratio: MLP ratio per block (length ``depth``); the hidden width is ``int(embed_dim * mlp_ratio[i])``.
    """

    family: ClassVar[str] = "autoformer"
    registry_arg: ClassVar[str] = "subnet"

    embed_dim: int
    depth: int
    num_heads: tuple[int, ...]
    mlp_ratio: tuple[float, ...]

    def __post_init__(self) -> None:
        embed_dim = _as_int("embed_dim", self.embed_dim)
        depth = _as_int("depth", self.depth)
        if embed_dim <= 0:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        if depth <= 0:
            raise ValueError(f"depth must be positive, got {depth}")
        heads = to_tuple(self.num_heads)
        ratios = to_tuple(self.mlp_ratio)
        if not isinstance(heads, tuple) or not isinstance(ratios, tuple):
            raise ValueError("num_heads and mlp_ratio must be lists with one value per layer")
        if len(heads) != depth:
            raise ValueError(f"num_heads has {len(heads)} values but depth={depth}; give one value per layer")
        if len(ratios) != depth:
            raise ValueError(f"mlp_ratio has {len(ratios)} values but depth={depth}; give one value per layer")
        heads = tuple(_as_int(f"num_heads[{i}]", h) for i, h in enumerate(heads))
        for i, h in enumerate(heads):
            if h <= 0:
                raise ValueError(f"num_heads[{i}] must be positive, got {h}")
        fixed_ratios = []
        for i, r in enumerate(ratios):
            if isinstance(r, bool) or not isinstance(r, (int, float)) or r <= 0:
                raise ValueError(f"mlp_ratio[{i}] must be a positive number, got {r!r}")
            fixed_ratios.append(float(r))
        object.__setattr__(self, "embed_dim", embed_dim)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "num_heads", heads)
        object.__setattr__(self, "mlp_ratio", tuple(fixed_ratios))

    def mlp_hidden(self, i: int) -> int:
        """Hidden width of block ``i``'s MLP (``int(E * r)``, the original's rounding)."""
        return int(self.embed_dim * self.mlp_ratio[i])

    @classmethod
    def from_original(cls, d: Mapping[str, Any]) -> "AutoFormerSubnet":
        """Read the original code's formats.

        Accepts the original's sampled-config dict (``layer_num``, ``embed_dim`` as a per-layer list,
        ``mlp_ratio``, ``num_heads``), a subnet YAML's ``RETRAIN`` block (``EMBED_DIM``, ``DEPTH``,
        ``NUM_HEADS``, ``MLP_RATIO``) or a whole subnet YAML dict holding a ``RETRAIN`` block.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"from_original expects a dict, got {type(d).__name__}")
        if "RETRAIN" in d:
            d = d["RETRAIN"]
        if "layer_num" in d:
            keys, depth_key, embed_key, heads_key, mlp_key = (
                {"layer_num", "embed_dim", "mlp_ratio", "num_heads"}, "layer_num", "embed_dim", "num_heads", "mlp_ratio")
        elif "DEPTH" in d:
            keys, depth_key, embed_key, heads_key, mlp_key = (
                {"DEPTH", "EMBED_DIM", "MLP_RATIO", "NUM_HEADS"}, "DEPTH", "EMBED_DIM", "NUM_HEADS", "MLP_RATIO")
        else:
            raise ValueError(
                "unrecognised AutoFormer config: expected the original sampled config keys "
                "['layer_num', 'embed_dim', 'mlp_ratio', 'num_heads'] or a RETRAIN block "
                f"['DEPTH', 'EMBED_DIM', 'NUM_HEADS', 'MLP_RATIO'], got {sorted(d)}")
        missing = sorted(keys - set(d))
        if missing:
            raise ValueError(f"original AutoFormer config is missing keys {missing}")
        depth = _as_int(depth_key, d[depth_key])
        embed = d[embed_key]
        if isinstance(embed, (list, tuple)):
            if len(set(embed)) != 1:
                raise ValueError(f"{embed_key}={list(embed)}: AutoFormer uses one embed dim for all layers")
            embed = embed[0]

        def per_layer(key: str) -> tuple:
            v = d[key]
            return tuple(v) if isinstance(v, (list, tuple)) else (v,) * depth

        return cls(embed_dim=embed, depth=depth, num_heads=per_layer(heads_key), mlp_ratio=per_layer(mlp_key))

    @classmethod
    def from_original_dict(cls, data: Mapping[str, Any]) -> "AutoFormerSubnet":
        return cls.from_original(data)

    def to_original(self) -> dict[str, Any]:
        """The original code's sampled-config dict (``layer_num``, per-layer ``embed_dim``, ...)."""
        return {
            "layer_num": self.depth,
            "embed_dim": [self.embed_dim] * self.depth,
            "mlp_ratio": list(self.mlp_ratio),
            "num_heads": list(self.num_heads),
        }


def _choices(field: str, values: Any, kind: type) -> tuple:
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"space field {field} must be a non-empty list of choices, got {values!r}")
    out = []
    for v in values:
        if kind is int:
            out.append(_as_int(field, v))
        else:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"space field {field} must hold numbers, got {v!r}")
            out.append(float(v))
        if out[-1] <= 0:
            raise ValueError(f"space field {field} must hold positive values, got {v!r}")
    return tuple(sorted(set(out)))


@dataclasses.dataclass(frozen=True)
class AutoFormerSpace(PresetSpace):
    """An AutoFormer search space and the weight shape of its supernet.

    Args:
        embed_dim: choices of the shared embedding width.
        depth: choices of the number of blocks.
        num_heads: choices of the per-layer head count.
        mlp_ratio: choices of the per-layer MLP ratio.
        super_embed_dim: supernet weight width (default: the largest choice).
        super_depth: number of blocks the supernet holds (default: the largest choice).
        super_num_heads: supernet head count; fixes the relative-position table width
            ``super_embed_dim // super_num_heads`` (default: the largest choice).
        super_mlp_ratio: supernet MLP ratio (default: the largest choice).
        head_dim: width of one head (default 64, the original's fixed value).
    """

    family: ClassVar[str] = "autoformer"
    config_cls: ClassVar[type] = AutoFormerSubnet
    label: ClassVar[str] = "AutoFormer"

    embed_dim: tuple[int, ...]
    depth: tuple[int, ...]
    num_heads: tuple[int, ...]
    mlp_ratio: tuple[float, ...]
    super_embed_dim: int | None = None
    super_depth: int | None = None
    super_num_heads: int | None = None
    super_mlp_ratio: float | None = None
    head_dim: int = HEAD_DIM

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("embed_dim", _choices("embed_dim", to_tuple(self.embed_dim), int))
        set_("depth", _choices("depth", to_tuple(self.depth), int))
        set_("num_heads", _choices("num_heads", to_tuple(self.num_heads), int))
        set_("mlp_ratio", _choices("mlp_ratio", to_tuple(self.mlp_ratio), float))
        set_("super_embed_dim", _as_int("super_embed_dim", self.super_embed_dim if self.super_embed_dim is not None else max(self.embed_dim)))
        set_("super_depth", _as_int("super_depth", self.super_depth if self.super_depth is not None else max(self.depth)))
        set_("super_num_heads", _as_int("super_num_heads", self.super_num_heads if self.super_num_heads is not None else max(self.num_heads)))
        smr = self.super_mlp_ratio if self.super_mlp_ratio is not None else max(self.mlp_ratio)
        if isinstance(smr, bool) or not isinstance(smr, (int, float)) or smr <= 0:
            raise ValueError(f"super_mlp_ratio must be a positive number, got {smr!r}")
        set_("super_mlp_ratio", float(smr))
        set_("head_dim", _as_int("head_dim", self.head_dim))
        if self.head_dim <= 0:
            raise ValueError(f"head_dim must be positive, got {self.head_dim}")
        for field, sup in (("embed_dim", self.super_embed_dim), ("depth", self.super_depth),
                           ("num_heads", self.super_num_heads), ("mlp_ratio", self.super_mlp_ratio)):
            biggest = max(getattr(self, field))
            if biggest > sup:
                raise ValueError(f"{field} choice {biggest} exceeds the supernet's super_{field}={sup}")
        if self.super_embed_dim < self.head_dim * self.super_num_heads:
            raise ValueError(
                f"super_embed_dim={self.super_embed_dim} must be at least head_dim x super_num_heads = "
                f"{self.head_dim} x {self.super_num_heads} = {self.head_dim * self.super_num_heads} "
                "(the qkv and relative-position weights hold head_dim columns per head)")

    # ----------------------------------------------------------------------------------------- construction
    @classmethod
    def from_original(cls, d: Mapping[str, Any]) -> "AutoFormerSpace":
        """Read an original supernet YAML dict (``SUPERNET`` and ``SEARCH_SPACE`` blocks with keys ``EMBED_DIM``,
        ``DEPTH``, ``NUM_HEADS``, ``MLP_RATIO``), e.g. AutoFormer/experiments/supernet/supernet-T.yaml."""
        if not isinstance(d, Mapping):
            raise TypeError(f"from_original expects a dict, got {type(d).__name__}")
        missing = sorted({"SUPERNET", "SEARCH_SPACE"} - set(d))
        if missing:
            raise ValueError(f"original supernet YAML is missing blocks {missing}; got {sorted(d)}")
        sup, choices = d["SUPERNET"], d["SEARCH_SPACE"]
        keys = ("EMBED_DIM", "DEPTH", "NUM_HEADS", "MLP_RATIO")
        for name, block in (("SUPERNET", sup), ("SEARCH_SPACE", choices)):
            absent = [k for k in keys if k not in block]
            if absent:
                raise ValueError(f"original {name} block is missing keys {absent}; expected {list(keys)}")
        return cls(embed_dim=choices["EMBED_DIM"], depth=choices["DEPTH"], num_heads=choices["NUM_HEADS"],
                   mlp_ratio=choices["MLP_RATIO"], super_embed_dim=sup["EMBED_DIM"], super_depth=sup["DEPTH"],
                   super_num_heads=sup["NUM_HEADS"], super_mlp_ratio=sup["MLP_RATIO"])

    def full(self) -> AutoFormerSubnet:
        """The subnet using the supernet's whole weight shape (the default active subnet; may lie outside the
        choices)."""
        d = self.super_depth
        return AutoFormerSubnet(self.super_embed_dim, d, (self.super_num_heads,) * d, (self.super_mlp_ratio,) * d)

    def largest(self) -> AutoFormerSubnet:
        d = max(self.depth)
        return AutoFormerSubnet(max(self.embed_dim), d, (max(self.num_heads),) * d, (max(self.mlp_ratio),) * d)

    def smallest(self) -> AutoFormerSubnet:
        d = min(self.depth)
        return AutoFormerSubnet(min(self.embed_dim), d, (min(self.num_heads),) * d, (min(self.mlp_ratio),) * d)

    # ------------------------------------------------------------------------------------------- checking
    def validate(self, cfg: AutoFormerSubnet | Mapping[str, Any]) -> AutoFormerSubnet:
        """Return ``cfg`` as an ``AutoFormerSubnet`` if every value is one of the space's choices, else raise
        ``ValueError`` naming the field, the value and the allowed values."""
        cfg = AutoFormerSubnet.from_dict(cfg)
        check_choice("embed_dim", cfg.embed_dim, self.embed_dim)
        check_choice("depth", cfg.depth, self.depth)
        for i, h in enumerate(cfg.num_heads):
            check_choice(f"num_heads[{i}]", h, self.num_heads)
        for i, r in enumerate(cfg.mlp_ratio):
            check_choice(f"mlp_ratio[{i}]", r, self.mlp_ratio)
        return cfg

    def contains(self, cfg: AutoFormerSubnet | Mapping[str, Any]) -> bool:
        try:
            self.validate(cfg)
        except ValueError:
            return False
        return True

    def check_fits(self, cfg: AutoFormerSubnet | Mapping[str, Any]) -> AutoFormerSubnet:
        """Return ``cfg`` if the supernet's weights can run it, else raise ``ValueError`` saying which field
        exceeds which weight shape."""
        cfg = AutoFormerSubnet.from_dict(cfg)
        if cfg.embed_dim > self.super_embed_dim:
            raise ValueError(f"embed_dim={cfg.embed_dim} exceeds the supernet's width super_embed_dim={self.super_embed_dim}")
        if cfg.depth > self.super_depth:
            raise ValueError(f"depth={cfg.depth} exceeds the supernet's super_depth={self.super_depth}")
        max_hidden = int(self.super_embed_dim * self.super_mlp_ratio)
        for i in range(cfg.depth):
            h = cfg.num_heads[i]
            if h * self.head_dim > self.super_embed_dim:
                raise ValueError(
                    f"num_heads[{i}]={h} needs a qkv width of {h * self.head_dim} but the supernet holds "
                    f"{self.super_embed_dim} (at most {self.super_embed_dim // self.head_dim} heads)")
            if cfg.mlp_hidden(i) > max_hidden:
                raise ValueError(
                    f"mlp_ratio[{i}]={cfg.mlp_ratio[i]} gives {cfg.mlp_hidden(i)} hidden units but the supernet holds "
                    f"{max_hidden}")
        return cfg

    def fits(self, cfg: AutoFormerSubnet | Mapping[str, Any]) -> bool:
        try:
            self.check_fits(cfg)
        except ValueError:
            return False
        return True

    # ------------------------------------------------------------------------------------------- sampling
    def sample(self, generator: torch.Generator | int | None = None) -> AutoFormerSubnet:
        """Uniform sample as in the original: depth, then per-layer MLP ratios and heads, then one embed dim."""
        g = as_generator(generator)
        depth = rand_choice(self.depth, g)
        mlp = tuple(rand_choice(self.mlp_ratio, g) for _ in range(depth))
        heads = tuple(rand_choice(self.num_heads, g) for _ in range(depth))
        embed = rand_choice(self.embed_dim, g)
        return AutoFormerSubnet(embed, depth, heads, mlp)

    def mutate(self, cfg: AutoFormerSubnet, generator: torch.Generator | int | None = None, *,
               m_prob: float = 0.2, s_prob: float = 0.4) -> AutoFormerSubnet:
        """The original evolution's mutation (AutoFormer/evolution.py).

        With probability ``s_prob`` redraw the depth (truncating, or appending random layers); then redraw each
        layer's MLP ratio and each layer's head count with probability ``m_prob``; then redraw the embed dim with
        probability ``s_prob``.
        """
        g = as_generator(generator)
        cfg = AutoFormerSubnet.from_dict(cfg)
        depth, mlp, heads, embed = cfg.depth, list(cfg.mlp_ratio), list(cfg.num_heads), cfg.embed_dim
        if rand_float(g) < s_prob:
            new_depth = rand_choice(self.depth, g)
            if new_depth > depth:
                mlp += [rand_choice(self.mlp_ratio, g) for _ in range(new_depth - depth)]
                heads += [rand_choice(self.num_heads, g) for _ in range(new_depth - depth)]
            else:
                mlp, heads = mlp[:new_depth], heads[:new_depth]
            depth = new_depth
        for i in range(depth):
            if rand_float(g) < m_prob:
                mlp[i] = rand_choice(self.mlp_ratio, g)
        for i in range(depth):
            if rand_float(g) < m_prob:
                heads[i] = rand_choice(self.num_heads, g)
        if rand_float(g) < s_prob:
            embed = rand_choice(self.embed_dim, g)
        return AutoFormerSubnet(embed, depth, tuple(heads), tuple(mlp))

    def crossover(self, a: AutoFormerSubnet, b: AutoFormerSubnet,
                  generator: torch.Generator | int | None = None) -> AutoFormerSubnet:
        """Gene-wise uniform crossover of two parents of equal depth (the original's rule).

        Raises:
            IncompatibleError: if the parents' depths differ (the original re-draws parents in that case).
        """
        g = as_generator(generator)
        a, b = AutoFormerSubnet.from_dict(a), AutoFormerSubnet.from_dict(b)
        if a.depth != b.depth:
            raise IncompatibleError(f"crossover needs parents of equal depth, got {a.depth} and {b.depth}")
        pick = lambda x, y: x if rand_float(g) < 0.5 else y  # noqa: E731
        mlp = tuple(pick(x, y) for x, y in zip(a.mlp_ratio, b.mlp_ratio))
        heads = tuple(pick(x, y) for x, y in zip(a.num_heads, b.num_heads))
        embed = pick(a.embed_dim, b.embed_dim)
        return AutoFormerSubnet(embed, a.depth, heads, mlp)

    def compatible(self, a: AutoFormerSubnet, b: AutoFormerSubnet) -> bool:
        """Whether :meth:`crossover` accepts the pair."""
        return AutoFormerSubnet.from_dict(a).depth == AutoFormerSubnet.from_dict(b).depth


#: The original supernet YAMLs (microsoft/Cream AutoFormer/experiments/supernet/supernet-{T,S,B}.yaml).
AUTOFORMER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(embed_dim=[192, 216, 240], depth=[12, 13, 14], num_heads=[3, 4], mlp_ratio=[3.5, 4.0],
                 super_embed_dim=256, super_depth=14, super_num_heads=4, super_mlp_ratio=4.0),
    "small": dict(embed_dim=[320, 384, 448], depth=[12, 13, 14], num_heads=[5, 6, 7], mlp_ratio=[3.0, 3.5, 4.0],
                  super_embed_dim=448, super_depth=14, super_num_heads=7, super_mlp_ratio=4.0),
    "base": dict(embed_dim=[528, 576, 624], depth=[14, 15, 16], num_heads=[9, 10], mlp_ratio=[3.0, 3.5, 4.0],
                 super_embed_dim=640, super_depth=16, super_num_heads=10, super_mlp_ratio=4.0),
}
AutoFormerSpace.presets = AUTOFORMER_PRESETS
