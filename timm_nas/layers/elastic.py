"""Elastic layers: one module holds the largest weights and runs, or hands back, any smaller slice of them.

Weight entanglement as AutoFormer introduced it (Chen et al., ICCV 2021; microsoft/Cream ``AutoFormer/model/module``)
and as S3 reuses it in the Swin layout: a smaller layer uses the leading slice of every weight. Every elastic layer
of this package, in both supernets (AutoFormer, S3), follows one protocol (once-for-all's habit, mit-han-lab/
once-for-all ``ofa/imagenet_classification/elastic_nn/modules/dynamic_layers.py``, ``get_active_subnet``):

* ``forward(x, <sizes>)`` runs the slice for the given sizes (input widths are read from ``x``);
* ``slice_state(tensors, <sizes>)`` (a static method) is the layer's slicing rule: the layer's own tensors (names
  relative to it, as in its ``state_dict``) in, the static twin's tensors out, as views. It is pure, so checkpoint
  files are sliced by it without building a module;
* ``static_state(<sizes>)`` applies the rule to the layer's own tensors;
* ``static_twin(<sizes>)`` hands back the static module of those sizes (``nn.Linear``, ``nn.LayerNorm``, timm's
  ``Mlp`` ...) holding copies of the sliced weights.

A model's ``extract`` loads each static layer from its elastic layer's ``static_state`` (layer by layer), and its
checkpoint filter applies the same ``slice_state`` rules to a state dict, prefix by prefix.

Without autograd (a subnet evaluated batch after batch) a layer whose slice is not a view of its weights (AutoFormer's
reordered qkv rows) keeps the copy it made and reuses it while nothing changes (:class:`KeptSlices`). A leading
block of a linear weight stays a view: a strided weight runs as fast as a contiguous copy here (measured: within
the noise at batch 1 and 8), so no copy is kept for it.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Set, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp

__all__ = [
    "ElasticLinear",
    "ElasticLayerNorm",
    "ElasticMlp",
    "slice_linear",
    "leading",
    "take",
    "with_prefix",
    "load_twin",
    "own_tensors",
    "require",
    "Tensors",
    "KeptSlices",
    "reuse_slices",
]

Tensors = Mapping[str, torch.Tensor]


# ------------------------------------------------------------------------------------------------ helpers
def leading(t: torch.Tensor, *sizes: int, name: str = "tensor") -> torch.Tensor:
    """The leading ``sizes[i]`` entries of ``t`` along each of its first ``len(sizes)`` axes (a view).

    Raises:
        ValueError: naming ``name`` when a size is not positive or exceeds what ``t`` holds.
    """
    for axis, size in enumerate(sizes):
        if size <= 0 or size > t.shape[axis]:
            raise ValueError(f"{name}: the subnet needs {size} but the supernet weight holds only {t.shape[axis]} "
                             f"(axis {axis} of {tuple(t.shape)}); choose a subnet that fits the supernet's weights")
    if all(size == t.shape[axis] for axis, size in enumerate(sizes)):
        return t
    return t[tuple(slice(0, s) for s in sizes)]


def take(tensors: Tensors, prefix: str, used: Optional[Set[str]] = None) -> Dict[str, torch.Tensor]:
    """The tensors under ``prefix`` with the prefix removed; their full keys are added to ``used``.

    Raises:
        KeyError: naming the prefix when the state dict holds nothing under it.
    """
    out = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not out:
        raise KeyError(f"the state dict has no '{prefix}*' tensors")
    if used is not None:
        used.update(prefix + k for k in out)
    return out


def with_prefix(prefix: str, tensors: Tensors) -> Dict[str, torch.Tensor]:
    """``tensors`` with ``prefix`` in front of every name."""
    return {prefix + k: v for k, v in tensors.items()}


def require(tensors: Tensors, names: Iterable[str], where: str) -> None:
    """Raise ``KeyError`` naming the first of ``names`` missing from ``tensors`` (``where``: the layer)."""
    for n in names:
        if n not in tensors:
            raise KeyError(f"{where}{n}")


def own_tensors(module: nn.Module) -> Dict[str, torch.Tensor]:
    """The module's parameters and persistent buffers by state-dict name (not detached: slicing them stays
    differentiable)."""
    return dict(module.state_dict(keep_vars=True))


def load_twin(twin: nn.Module, tensors: Tensors) -> nn.Module:
    """Load contiguous detached copies of ``tensors`` into ``twin`` strictly and return it.

    A twin built on the meta device receives the copies as its parameters (``assign=True``): nothing is
    initialised twice.
    """
    on_meta = any(t.is_meta for t in twin.state_dict().values())
    copies = {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in tensors.items()}
    twin.load_state_dict(copies, strict=True, assign=on_meta)
    return twin


def _dd(t: torch.Tensor) -> dict:
    return {"device": "meta", "dtype": t.dtype}


@torch.jit.ignore
def reuse_slices(x: torch.Tensor) -> bool:
    """Whether a forward on ``x`` may reuse a kept weight slice (:class:`KeptSlices`): no autograd, and not
    compiling or tracing (which record the slicing itself)."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling() and not torch.jit.is_tracing() \
        and not isinstance(x, torch.fx.Proxy)


class KeptSlices:
    """Mixin for an ``nn.Module`` with ``weight`` / ``bias``: :meth:`kept` returns the last slice made for the same
    sizes while the parameters are unchanged. Any in-place change (an optimizer step, ``load_state_dict``)
    bumps a parameter's version and makes a new slice; moving or casting the module drops the kept one. The slice
    is a plain attribute: never in the state dict."""

    @torch.jit.ignore
    def kept(self, sizes: Tuple[int, ...], make: Callable[[], Any]) -> Any:
        params = tuple((p.data_ptr(), p._version, p.dtype, p.device)
                       for p in (self.weight, self.bias) if p is not None)
        key = (sizes, params)
        kept = self.__dict__.get("_kept")
        if kept is None or kept[0] != key:
            with torch.no_grad():
                kept = (key, make())
            self.__dict__["_kept"] = kept
        return kept[1]

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        self.__dict__.pop("_kept", None)  # .to() / .half() / ...: the parameters move, a kept slice would not
        return super()._apply(fn, recurse)  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------ layers
def slice_linear(
        weight: torch.Tensor,
        bias: Optional[torch.Tensor],
        in_features: int,
        out_features: int,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The leading ``(out_features, in_features)`` block of a linear weight and ``bias[:out_features]``."""
    return weight[:out_features, :in_features], None if bias is None else bias[:out_features]


class ElasticLinear(nn.Linear):
    """``nn.Linear`` holding the largest weight; the input width is read from the tensor and the output width
    is a forward argument (default: all outputs). A slice uses ``weight[:out, :in]`` and ``bias[:out]``
    (microsoft/Cream ``AutoFormer/model/module/Linear_super.py``)."""

    def forward(self, x: torch.Tensor, out_features: Optional[int] = None) -> torch.Tensor:
        out = self.out_features if out_features is None else out_features
        weight, bias = slice_linear(self.weight, self.bias, x.shape[-1], out)
        return F.linear(x, weight, bias)

    @staticmethod
    def slice_state(tensors: Tensors, in_features: int, out_features: int) -> Dict[str, torch.Tensor]:
        """Rule: ``weight[:out_features, :in_features]``, ``bias[:out_features]``."""
        require(tensors, ("weight",), "")
        out = {"weight": leading(tensors["weight"], out_features, in_features, name="linear weight")}
        if "bias" in tensors:
            out["bias"] = leading(tensors["bias"], out_features, name="linear bias")
        return out

    def static_state(self, in_features: int, out_features: int) -> Dict[str, torch.Tensor]:
        return self.slice_state(own_tensors(self), in_features, out_features)

    def static_twin(self, in_features: int, out_features: int) -> nn.Linear:
        """An ``nn.Linear(in_features, out_features)`` with the sliced weights."""
        twin = nn.Linear(in_features, out_features, bias=self.bias is not None, **_dd(self.weight))
        return load_twin(twin, self.static_state(in_features, out_features))


class ElasticLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the largest width; normalises the input's own (smaller or equal) width ``E`` with
    ``weight[:E]``, ``bias[:E]`` and the module's ``eps`` (microsoft/Cream ``AutoFormer/model/module/
    layernorm_super.py``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1]
        weight = None if self.weight is None else self.weight[:width]
        bias = None if self.bias is None else self.bias[:width]
        return F.layer_norm(x, (width,), weight, bias, self.eps)

    @staticmethod
    def slice_state(tensors: Tensors, dim: int) -> Dict[str, torch.Tensor]:
        """Rule: the first ``dim`` entries of ``weight`` and ``bias``."""
        return {k: leading(v, dim, name=f"LayerNorm {k}") for k, v in tensors.items()}

    def static_state(self, dim: int) -> Dict[str, torch.Tensor]:
        return self.slice_state(own_tensors(self), dim)

    def static_twin(self, dim: int) -> nn.LayerNorm:
        """An ``nn.LayerNorm(dim)`` with the same ``eps`` and the sliced affine parameters."""
        ref = self.weight if self.weight is not None else torch.empty(0)
        twin = nn.LayerNorm(dim, eps=self.eps, elementwise_affine=self.elementwise_affine,
                            bias=self.bias is not None, **_dd(ref))
        return load_twin(twin, self.static_state(dim))


class ElasticMlp(nn.Module):
    """``fc1 -> GELU -> fc2`` of the largest hidden width, run with any hidden width.

    A slice of width ``E`` and hidden width ``H`` uses ``fc1[:H, :E]`` and ``fc2[:E, :H]``; GELU is the exact (erf)
    one. Dropout after the activation and after ``fc2`` takes its probability per call (AutoFormer scales it with
    the sampled width, microsoft/Cream ``AutoFormer/model/supernet_transformer.py``). The static twin is timm's
    ``Mlp`` (same parameter names).

    Args:
        in_features: the largest embedding width.
        hidden_features: the largest hidden width.
        bias: whether ``fc1`` / ``fc2`` have biases.
    """

    def __init__(
            self,
            in_features: int,
            hidden_features: int,
            bias: bool = True,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.fc1 = ElasticLinear(in_features, hidden_features, bias=bias, device=device, dtype=dtype)
        self.act = nn.GELU()
        self.fc2 = ElasticLinear(hidden_features, in_features, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, hidden_features: int, drop: float = 0.0) -> torch.Tensor:
        width = x.shape[-1]
        x = F.dropout(self.act(self.fc1(x, hidden_features)), drop, self.training)
        return F.dropout(self.fc2(x, width), drop, self.training)

    @staticmethod
    def slice_state(tensors: Tensors, in_features: int, hidden_features: int) -> Dict[str, torch.Tensor]:
        """Rule: ``fc1`` ``(hidden, in)`` and ``fc2`` ``(in, hidden)``, as :class:`ElasticLinear`."""
        return {**with_prefix("fc1.", ElasticLinear.slice_state(take(tensors, "fc1."), in_features, hidden_features)),
                **with_prefix("fc2.", ElasticLinear.slice_state(take(tensors, "fc2."), hidden_features, in_features))}

    def static_state(self, in_features: int, hidden_features: int) -> Dict[str, torch.Tensor]:
        return self.slice_state(own_tensors(self), in_features, hidden_features)

    def static_twin(self, in_features: int, hidden_features: int, drop: float = 0.0) -> Mlp:
        """timm's ``Mlp(in_features, hidden_features)`` (exact GELU, dropout ``drop``) with the sliced weights."""
        twin = Mlp(in_features, hidden_features, act_layer=nn.GELU, bias=self.fc1.bias is not None, drop=drop,
                   **_dd(self.fc1.weight))
        return load_twin(twin, self.static_state(in_features, hidden_features))
