"""SPViT: the architecture config (which op each attention layer became, which FFN hidden units it kept).

SPViT (He et al., "Pruning Self-attentions into Convolutional Layers in Single Path", TPAMI 2024,
arXiv:2111.11802, https://github.com/ziplab/SPViT) prunes a pretrained ViT. Every attention layer becomes one of
four ops, ordered by cost: a shortcut (``skip``), a 1x1 or 3x3 bottleneck convolution whose kernels are built
from the attention's own value/projection weights (``bconv1x1`` / ``bconv3x3``), or the multi-head self-attention
it was (``msa``); every FFN hidden unit is kept or dropped. :class:`SPViTArch` records one such decision set.

SPViT searches the gate parameters of a search model (:class:`timm_nas.models.spvit.SPViTSearchDeiT`), not a space
of configs, and ``model.derive_arch()`` returns the arch they choose. :class:`SPViTSpace` is the set of every arch
a search network's ``extract`` takes: what latency tables are built over and checked on (random pruned models).

The original stores an architecture in two files, both readable here:

* the fine-tune config's ``assigned_indicators``: one cumulative gate vector ``[g1, g2, g3]`` per layer
  (``[0,0,0]`` skip, ``[1,0,0]`` 1x1, ``[1,1,0]`` 3x3, ``[1,1,1]`` MSA), a JSON file for DeiT
  (``SPViT_DeiT/config/*_ft.json``) and a YAML file nested by stage for Swin (``SPViT_Swin/configs/*_ft.yaml``);
* the FFN mask file, a search checkpoint ``{'model': {'<block>.mlp.assigned_indicator_index': 0/1 tensor}}``
  (``SPViT_*/ffn_indicators/*.pth``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch

from .base import ArchConfig, as_generator, rand_choice, rand_int, to_tuple

__all__ = [
    "SPViTArch",
    "SPViTSpace",
    "SPVIT_OPS",
    "OP_INDICATORS",
    "op_from_indicators",
    "read_original_indicators",
    "read_ffn_masks",
]

#: The candidate ops of one attention layer, cheapest first (the order of the original's cumulative gates,
#: ``UnifiedAttention.search_forward``: gate 1 = 1x1 conv, gate 2 = 3x3 conv, gate 3 = MSA).
SPVIT_OPS: tuple[str, ...] = ("skip", "bconv1x1", "bconv3x3", "msa")

#: The original's cumulative gate vector (``assigned_indicators`` entry) of each op.
OP_INDICATORS: dict[str, tuple[float, float, float]] = {
    "skip": (0.0, 0.0, 0.0),
    "bconv1x1": (1.0, 0.0, 0.0),
    "bconv3x3": (1.0, 1.0, 0.0),
    "msa": (1.0, 1.0, 1.0),
}

_MASK_SUFFIX = ".mlp.assigned_indicator_index"


def op_from_indicators(indicators: Sequence[Any], where: str = "indicators") -> str:
    """The op of one cumulative gate vector ``[g1, g2, g3]``, decided as the original's fine-tune model does
    (``UnifiedAttention.__init__``: the first zero gate decides; ``[1,1,1]`` is MSA).

    Raises:
        ValueError: if ``indicators`` is not three numbers.
    """
    values = list(indicators) if isinstance(indicators, (list, tuple)) else None
    if values is None or len(values) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                                 for v in values):
        raise ValueError(f"{where}={indicators!r} must be three gate values [g1, g2, g3] (0 or 1)")
    if not values[0]:
        return "skip"
    if not values[1]:
        return "bconv1x1"
    if not values[2]:
        return "bconv3x3"
    return "msa"


def _as_index(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{where} must hold integer hidden-unit indices, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class SPViTArch(ArchConfig):
    """One SPViT architecture: an op per attention layer and the kept FFN hidden units per layer.

    Args:
        ops: per layer, one of ``'msa'``, ``'bconv1x1'``, ``'bconv3x3'``, ``'skip'``.
        ffn_kept: per layer, the kept FFN hidden-unit indices (of the unpruned model's hidden layer), sorted
            ascending without duplicates. The pruned FFN's hidden unit ``j`` is the original unit
            ``ffn_kept[i][j]``.
    """

    family: ClassVar[str] = "spvit"
    registry_arg: ClassVar[str] = "arch"

    ops: tuple[str, ...]
    ffn_kept: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        ops = to_tuple(self.ops)
        kept = to_tuple(self.ffn_kept)
        if not isinstance(ops, tuple) or not ops:
            raise ValueError(f"ops must be a non-empty list with one op per layer, got {self.ops!r}")
        for i, op in enumerate(ops):
            if op not in SPVIT_OPS:
                raise ValueError(f"ops[{i}]={op!r} is not allowed; allowed values: {list(SPVIT_OPS)}")
        if not isinstance(kept, tuple) or len(kept) != len(ops):
            n = len(kept) if isinstance(kept, tuple) else kept
            raise ValueError(f"ffn_kept must give one index list per layer: {len(ops)} ops but {n} index lists")
        fixed = []
        for i, layer in enumerate(kept):
            if not isinstance(layer, tuple):
                raise ValueError(f"ffn_kept[{i}] must be a list of hidden-unit indices, got {layer!r}")
            idx = tuple(_as_index(f"ffn_kept[{i}]", v) for v in layer)
            if idx and idx[0] < 0:
                raise ValueError(f"ffn_kept[{i}] holds a negative index {idx[0]}; indices count from 0")
            for a, b in zip(idx, idx[1:]):
                if b <= a:
                    raise ValueError(f"ffn_kept[{i}] must be sorted ascending without duplicates; found {a} then {b}")
            fixed.append(idx)
        object.__setattr__(self, "ops", ops)
        object.__setattr__(self, "ffn_kept", tuple(fixed))

    # ----------------------------------------------------------------------------------------- views
    @property
    def depth(self) -> int:
        """Number of layers."""
        return len(self.ops)

    @property
    def ffn_hidden(self) -> tuple[int, ...]:
        """Number of kept FFN hidden units per layer (the pruned FFN widths)."""
        return tuple(len(k) for k in self.ffn_kept)

    def indicators(self) -> list[list[float]]:
        """The original's ``assigned_indicators`` (one cumulative gate vector per layer)."""
        return [list(OP_INDICATORS[op]) for op in self.ops]

    def ffn_masks(self, hidden: int | Sequence[int]) -> list[torch.Tensor]:
        """0/1 float masks over the unpruned hidden units (the original's ``assigned_indicator_index``).

        Args:
            hidden: the unpruned hidden width, one int for all layers or one per layer.
        """
        widths = self._widths(hidden)
        self.check_fits(self.depth, widths)
        masks = []
        for kept, width in zip(self.ffn_kept, widths):
            m = torch.zeros(width)
            m[list(kept)] = 1.0
            masks.append(m)
        return masks

    def _widths(self, hidden: int | Sequence[int]) -> tuple[int, ...]:
        if isinstance(hidden, int) and not isinstance(hidden, bool):
            return (hidden,) * self.depth
        widths = tuple(hidden)
        if len(widths) != self.depth:
            raise ValueError(f"hidden gives {len(widths)} widths for {self.depth} layers")
        return widths

    def check_fits(self, depth: int, hidden: int | Sequence[int]) -> "SPViTArch":
        """Return ``self`` if a model with ``depth`` blocks and FFN width(s) ``hidden`` can run it.

        Raises:
            ValueError: naming the layer count or the layer whose kept index exceeds the hidden width.
        """
        if self.depth != depth:
            raise ValueError(f"the arch has {self.depth} layers but the model has depth={depth}; "
                             "give one op and one ffn_kept list per block")
        for i, (kept, width) in enumerate(zip(self.ffn_kept, self._widths(hidden))):
            if kept and kept[-1] >= width:
                raise ValueError(f"ffn_kept[{i}] holds index {kept[-1]} but the layer has only {width} hidden "
                                 f"units (indices 0..{width - 1})")
        return self

    # ------------------------------------------------------------------------------------ construction
    @classmethod
    def full(cls, depth: int, hidden: int | Sequence[int]) -> "SPViTArch":
        """The unpruned architecture: MSA everywhere, every FFN unit kept."""
        widths = (hidden,) * depth if isinstance(hidden, int) else tuple(hidden)
        if len(widths) != depth:
            raise ValueError(f"hidden gives {len(widths)} widths for depth={depth}")
        return cls(("msa",) * depth, tuple(tuple(range(w)) for w in widths))

    @classmethod
    def from_original(cls, indicators: Sequence[Sequence[Any]],
                      ffn_masks: Sequence[torch.Tensor | Sequence[float]]) -> "SPViTArch":
        """Build from the original's data: ``assigned_indicators`` and the per-layer FFN masks.

        Args:
            indicators: one cumulative gate vector ``[g1, g2, g3]`` per layer (flattened over Swin stages).
            ffn_masks: one mask per layer over the unpruned hidden units; every nonzero entry is a kept unit
                (the original's ``mask.nonzero()``).
        """
        ops = tuple(op_from_indicators(v, f"indicators[{i}]") for i, v in enumerate(indicators))
        kept = []
        for i, m in enumerate(ffn_masks):
            t = torch.as_tensor(m)
            if t.dim() != 1:
                raise ValueError(f"ffn_masks[{i}] must be a 1-D mask over hidden units, got shape {tuple(t.shape)}")
            kept.append(tuple(int(j) for j in t.nonzero().flatten().tolist()))
        if len(kept) != len(ops):
            raise ValueError(f"{len(ops)} layers of indicators but {len(kept)} FFN masks; they must match")
        return cls(ops, tuple(kept))

    def to_original(self, hidden: int | Sequence[int] | None = None) -> dict[str, Any]:
        """The original's data as one dict: the fine-tune config's ``assigned_indicators`` and, under
        ``ffn_masks``, one 0/1 mask per layer over the hidden units (``hidden`` wide; default: up to the last kept
        unit, enough to read the architecture back)."""
        widths = [max(k, default=-1) + 1 for k in self.ffn_kept] if hidden is None else list(self._widths(hidden))
        masks = [[1.0 if j in set(k) else 0.0 for j in range(w)] for k, w in zip(self.ffn_kept, widths)]
        return {"assigned_indicators": self.indicators(), "ffn_masks": masks}

    @classmethod
    def from_original_dict(cls, data: Mapping[str, Any]) -> "SPViTArch":
        """The original's fine-tune config dict (``assigned_indicators``, or ``EXTRA.assigned_indicators`` for Swin)
        with the per-layer FFN masks beside it under ``ffn_masks`` (the ``ffn_indicators/*.pth`` masks as lists)."""
        if "ffn_masks" not in data:
            raise ValueError("an original SPViT architecture needs 'assigned_indicators' and 'ffn_masks' (one 0/1 "
                             f"mask over the unpruned hidden units per layer), got keys {sorted(data)}")
        config = {k: v for k, v in data.items() if k != "ffn_masks"}
        return cls.from_original(read_original_indicators(config), data["ffn_masks"])

    @classmethod
    def from_original_files(cls, config: str | os.PathLike | Mapping[str, Any],
                            ffn_masks: str | os.PathLike | Mapping[str, Any]) -> "SPViTArch":
        """Read an architecture from the original's fine-tune config (JSON or YAML) and FFN mask file.

        Args:
            config: a ``*_ft.json`` / ``*_ft.yaml`` path or its parsed dict (see :func:`read_original_indicators`).
            ffn_masks: a ``ffn_indicators/*.pth`` path or the loaded checkpoint / state dict
                (see :func:`read_ffn_masks`).
        """
        return cls.from_original(read_original_indicators(config), read_ffn_masks(ffn_masks))


def read_original_indicators(config: str | os.PathLike | Mapping[str, Any]) -> list[list[float]]:
    """The ``assigned_indicators`` of an original fine-tune config, one gate vector per layer.

    Accepts a DeiT JSON config (``{"assigned_indicators": [[1,0,0], ...]}``), a Swin YAML config (under
    ``EXTRA.assigned_indicators``, nested by stage, flattened here in block order) or the parsed dict of either.

    Raises:
        FileNotFoundError: if the path does not exist.
        ValueError: if the config holds no (or empty) ``assigned_indicators`` (a search config, for example).
    """
    if isinstance(config, Mapping):
        data: Any = config
        name = "config"
    else:
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"original SPViT config not found: {path}")
        name = str(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            import yaml  # a timm dependency

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    if not isinstance(data, Mapping):
        raise ValueError(f"{name}: expected a mapping at the top level")
    extra = data.get("EXTRA")
    found = data.get("assigned_indicators")
    if found is None and isinstance(extra, Mapping):
        found = extra.get("assigned_indicators")
    if not found:
        raise ValueError(f"{name} holds no 'assigned_indicators' (nor 'EXTRA.assigned_indicators'); "
                         "pass a fine-tune config (*_ft.json / *_ft.yaml), not a search config")

    def flat(v: Any) -> list[list[float]]:
        if isinstance(v, (list, tuple)) and v and all(isinstance(x, (list, tuple)) for x in v):
            if all(not isinstance(y, (list, tuple)) for x in v for y in x):
                return [list(x) for x in v]
            return [g for x in v for g in flat(x)]
        raise ValueError(f"{name}: assigned_indicators must be a list of [g1, g2, g3] gate vectors "
                         f"(or a list of such lists per stage), got {v!r}")

    out = flat(found)
    for i, v in enumerate(out):
        op_from_indicators(v, f"assigned_indicators[{i}]")  # validates shape and values
    return out


def _block_order(key: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\.(\d+)(?=\.)", "." + key))


def read_ffn_masks(source: str | os.PathLike | Mapping[str, Any]) -> list[torch.Tensor]:
    """The FFN masks of an original search checkpoint / FFN mask file, one per block in block order.

    Reads every ``<block>.mlp.assigned_indicator_index`` entry (``blocks.i...`` for DeiT,
    ``layers.s.blocks.j...`` for Swin) of ``source['model']`` (or of ``source`` itself when it is a bare state
    dict). A file is read with ``torch.load(weights_only=True)`` (see :mod:`timm_nas._checkpoint`).

    Raises:
        ValueError: if no mask entries are found.
    """
    from .._checkpoint import load_checkpoint_file

    data = load_checkpoint_file(source) if not isinstance(source, Mapping) else source
    state = data.get("model", data) if isinstance(data, Mapping) else None
    if not isinstance(state, Mapping):
        raise ValueError("FFN mask source holds no state dict ('model' entry or bare tensors)")
    keys = sorted((k for k in state if k.endswith(_MASK_SUFFIX)), key=_block_order)
    if not keys:
        raise ValueError(f"no '*{_MASK_SUFFIX}' entries found; keys start with {sorted(state)[:5]}")
    return [torch.as_tensor(state[k]).detach().flatten().float() for k in keys]


@dataclasses.dataclass(frozen=True)
class SPViTSpace(ArchConfig):
    """Every SPViT arch of a network with ``depth`` layers of ``hidden`` FFN units: any op per layer, any set of
    kept units per FFN. SPViT's search does not draw from it (it trains gates); latency tables are built over it and
    checked on its random members (``model.arch_space`` of a search network).

    Args:
        depth: layers.
        hidden: FFN hidden units per layer in the unpruned network.
    """

    family: ClassVar[str] = "spvit"
    config_cls: ClassVar[type] = SPViTArch

    depth: int
    hidden: int

    def __post_init__(self) -> None:
        for name in ("depth", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def sample(self, generator: torch.Generator | int | None = None) -> SPViTArch:
        """A random arch: each layer's op uniform over :data:`SPVIT_OPS`, its number of kept FFN units uniform over
        ``0 .. hidden`` and the kept units a uniformly random set of that size."""
        g = as_generator(generator)
        ops, kept = [], []
        for _ in range(self.depth):
            ops.append(rand_choice(SPVIT_OPS, g))
            width = rand_int(self.hidden + 1, g)
            kept.append(tuple(sorted(torch.randperm(self.hidden, generator=g)[:width].tolist())))
        return SPViTArch(tuple(ops), tuple(kept))

    def smallest(self) -> SPViTArch:
        """Every layer a skip with an empty FFN."""
        return SPViTArch(("skip",) * self.depth, ((),) * self.depth)

    def largest(self) -> SPViTArch:
        """The unpruned network (MSA everywhere, every FFN unit kept)."""
        return SPViTArch.full(self.depth, self.hidden)

    def contains(self, cfg: SPViTArch | Mapping[str, Any]) -> bool:
        """Whether a network of this shape runs ``cfg``."""
        cfg = SPViTArch.resolve(cfg)
        return cfg.depth == self.depth and all(not k or k[-1] < self.hidden for k in cfg.ffn_kept)
