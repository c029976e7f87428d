"""Parameter and MAC counts.

Two kinds of count, cross-checked in the tests:

* **analytic** (:func:`count_params`, :func:`count_macs`): closed-form counts for any architecture config, fast
  enough to run inside a search (tens of thousands of configs per second). Each family registers its formula for
  its config type with :func:`register_cost`.
* **measured** (:func:`measure_macs`): run the real model once and count. fvcore traces the model with an
  explicit handle for ``aten::scaled_dot_product_attention`` (which fvcore otherwise skips silently);
  :func:`flop_counter_macs` uses torch's ``FlopCounterMode`` (FLOPs = 2 x MACs) as an independent check.

Counting convention (the one papers use when they write "FLOPs"): **multiply-accumulates** of convolutions,
linear layers, matrix products (attention included) and any model-specific products registered by a family;
normalisation, activations, softmax, additions, pooling and resampling are not counted. This is what torch's
``FlopCounterMode`` total / 2 gives (with our formula for the fused attention kernels, which some torch releases do
not count), and what :func:`measure_macs` counts (fvcore's default norm, pooling and resampling handles are
switched off to match).

Families register their formulas here or in their model module. AutoFormer's (:func:`autoformer_params`,
:func:`autoformer_macs`) live in this module.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from .spaces.autoformer import HEAD_DIM, AutoFormerSpace, AutoFormerSubnet

__all__ = [
    "register_cost",
    "count_params",
    "count_macs",
    "analytic_fns",
    "real_params",
    "measure_macs",
    "flop_counter_macs",
    "sdpa_macs_handle",
    "NORM_OPS",
    "NON_MAC_OPS",
    "autoformer_params",
    "autoformer_macs",
]

#: fvcore ops that normalise (fvcore counts them by default); not multiply-accumulates in our convention.
NORM_OPS = ("aten::batch_norm", "aten::group_norm", "aten::layer_norm", "aten::instance_norm")
#: Other ops fvcore counts by default that are not multiply-accumulates in our convention (pooling and
#: resampling are element-wise work): always left out of :func:`measure_macs`, as ``FlopCounterMode`` leaves them.
NON_MAC_OPS = ("aten::adaptive_avg_pool2d", "aten::upsample_nearest2d", "aten::upsample_bilinear2d",
               "aten::grid_sampler")

_ANALYTIC: dict[type, tuple[Callable[..., int], Callable[..., int]]] = {}


def register_cost(config_cls: type, params_fn: Callable[..., int], macs_fn: Callable[..., int]) -> None:
    """Register the analytic ``params_fn(cfg, **kw)`` and ``macs_fn(cfg, **kw)`` of a config type."""
    _ANALYTIC[config_cls] = (params_fn, macs_fn)


def analytic_fns(cfg: Any) -> tuple[Callable[..., int], Callable[..., int]]:
    """The registered ``(params_fn, macs_fn)`` of ``cfg``'s config type (for callers that need to know which keyword
    arguments a family's formulas accept).

    Raises:
        TypeError: if no analytic cost model is registered for the config type.
    """
    return _lookup(cfg)


def _lookup(cfg: Any) -> tuple[Callable[..., int], Callable[..., int]]:
    for cls in type(cfg).__mro__:
        if cls in _ANALYTIC:
            return _ANALYTIC[cls]
    known = sorted(c.__name__ for c in _ANALYTIC)
    raise TypeError(f"no analytic cost model for {type(cfg).__name__}; known config types: {known}")


def count_params(cfg: Any, **kwargs: Any) -> int:
    """Analytic parameter count of an architecture config (keyword arguments depend on the family, e.g.
    ``num_classes``, ``img_size``)."""
    return int(_lookup(cfg)[0](cfg, **kwargs))


def count_macs(cfg: Any, **kwargs: Any) -> int:
    """Analytic multiply-accumulate count of one image through an architecture config."""
    return int(_lookup(cfg)[1](cfg, **kwargs))


def real_params(model: nn.Module) -> int:
    """Number of parameter elements of a model (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def sdpa_macs_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``: ``B*H*Nq*Nk*(Dqk + Dv)`` MACs (q@k^T and
    attn@v)."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    *batch, nq, dqk = q
    nk, dv = k[-2], v[-1]
    b = 1
    for d in batch:
        b *= d
    return int(b * nq * nk * (dqk + dv))


def _uncounted(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle of an op that is deliberately not counted."""
    return 0


def measure_macs(model: nn.Module, inputs: torch.Tensor | tuple, *, extra_handles: dict[str, Callable] | None = None,
                 ignore: Iterable[str] = (), count_norms: bool = False) -> int:
    """Measured MACs of one forward pass with fvcore, counting ``scaled_dot_product_attention``.

    fvcore's own handles count ``linear`` / ``addmm``, convolutions and ``matmul`` / ``bmm`` / ``einsum`` (so
    explicit attention products, such as AutoFormer's relative-position terms, which are batched matmuls, are
    counted without an extra handle); the SDPA handle adds fused attention.

    Args:
        model: the model (put in eval mode by the caller if it matters).
        inputs: a tensor or a tuple of forward arguments.
        extra_handles: additional fvcore op handles (op name -> fn(inputs, outputs) -> MACs).
        ignore: op names to mark as deliberately uncounted (silences fvcore's warning for them).
        count_norms: also count normalisation layers as fvcore does by default (off: the module's convention).
    """
    from fvcore.nn import FlopCountAnalysis

    args = inputs if isinstance(inputs, tuple) else (inputs,)
    with torch.no_grad():
        analysis = FlopCountAnalysis(model, args)
        analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_macs_handle)
        # A None handle only silences fvcore's warning and leaves a default handle counting; a zero handle
        # really removes the op from the count.
        for name in NON_MAC_OPS + (() if count_norms else NORM_OPS):
            analysis.set_op_handle(name, _uncounted)
        for name, fn in (extra_handles or {}).items():
            analysis.set_op_handle(name, fn)
        for name in ignore:
            analysis.set_op_handle(name, _uncounted)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        return int(analysis.total())


def _attention_macs(query_shape: Sequence[int], key_shape: Sequence[int], value_shape: Sequence[int],
                    *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """``FlopCounterMode`` formula (FLOPs = 2 x MACs) of one fused attention call: ``q k^T`` and ``attn v``, i.e.
    ``2 * B*H*Nq*Nk*(Dqk + Dv)``. Query heads may be a multiple of key heads (grouped-query attention)."""
    *batch, nq, dqk = query_shape
    nk, dv = key_shape[-2], value_shape[-1]
    b = 1
    for d in batch:
        b *= int(d)
    return 2 * b * int(nq) * int(nk) * (int(dqk) + int(dv))


#: Forward fused-attention ops whose count we supply to ``FlopCounterMode``: torch's own table lacks some of them
#: in some releases (torch 2.14's has no ``_scaled_dot_product_flash_attention_for_cpu``, so CPU attention counted
#: 0), and the formula is the same for all of them. Ops missing from the installed torch are skipped.
_ATTENTION_OPS = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
)


def _attention_formulas() -> dict[Any, Callable[..., int]]:
    aten = torch.ops.aten
    return {getattr(aten, name): _attention_macs for name in _ATTENTION_OPS if hasattr(aten, name)}


class _UncountedAttentionCheck:
    """A dispatch mode entered *outside* ``FlopCounterMode``: it sees only the ops the counter actually ran (after
    the counter's own decompositions) and records every attention op the counter had no formula for."""

    def __init__(self, registry: Mapping[Any, Any]) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        missing: set[str] = set()

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
                packet = func._overloadpacket
                if "attention" in packet.__name__ and packet not in registry:
                    missing.add(str(packet))
                return func(*args, **(kwargs or {}))

        self.mode = _Mode()
        self.missing = missing


def flop_counter_macs(model: nn.Module, inputs: torch.Tensor | tuple) -> int:
    """MACs from torch's ``FlopCounterMode`` (which reports FLOPs = 2 x MACs), as an independent check.

    The fused attention kernels are counted with our formula (``q k^T`` + ``attn v``, passed through
    ``FlopCounterMode(custom_mapping=...)``; no global state changes), so the number does not depend on which
    attention formulas the installed torch happens to ship.

    Raises:
        RuntimeError: if the forward ran an attention op that neither torch nor this module can count (rather than
            silently under-counting).
    """
    from torch.utils.flop_counter import FlopCounterMode

    args = inputs if isinstance(inputs, tuple) else (inputs,)
    counter = FlopCounterMode(display=False, custom_mapping=_attention_formulas())
    check = _UncountedAttentionCheck(counter.flop_registry)
    with torch.no_grad(), check.mode, counter:
        model(*args)
    if check.missing:
        raise RuntimeError(
            f"FlopCounterMode of torch {torch.__version__} has no formula for {sorted(check.missing)}, and "
            f"timm_nas.cost does not know it either: the count would leave that attention out. Count with "
            f"measure_macs(model, inputs) instead, or run the model with another attention backend.")
    return int(counter.get_total_flops()) // 2


# ---------------------------------------------------------------------------------------------------- AutoFormer
def _grid(img_size: int | Sequence[int], patch_size: int | Sequence[int]) -> int:
    """Number of patches of an image (int side or (H, W)) cut into patches (int side or (h, w))."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    return (int(h) // int(ph)) * (int(w) // int(pw))


def _head_dim(head_dim: int | None, space: Any) -> int:
    if head_dim is not None:
        return int(head_dim)
    if space is None:
        return HEAD_DIM
    if isinstance(space, AutoFormerSpace):
        return space.head_dim
    if isinstance(space, str):
        return AutoFormerSpace.preset(space).head_dim
    if isinstance(space, Mapping):
        return int(space.get("head_dim", HEAD_DIM))
    raise TypeError(f"space must be a preset name, a space dict or an AutoFormerSpace, got {type(space).__name__}")


def autoformer_params(
        cfg: AutoFormerSubnet | Mapping[str, Any],
        *,
        num_classes: int = 1000,
        img_size: int | Sequence[int] = 224,
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        head_dim: int | None = None,
        space: Any = None,
        max_relative_position: int = 14,
        qkv_bias: bool = True,
) -> int:
    """Exact parameter count of the static AutoFormer model of ``cfg`` (``autoformer_subnet``).

    Equals the original's ``get_sampled_params_numel`` (microsoft/Cream ``supernet_transformer.py``): patch
    conv, class token and position embedding, per block two LayerNorms, qkv (``3 qk x E`` + bias, ``qk = heads x
    head_dim``), four relative tables ``(2 m + 2) x head_dim``, proj, fc1, fc2; final norm and head.

    Args:
        cfg: the subnet.
        num_classes: classifier outputs (0: no head).
        img_size: image side or (H, W).
        patch_size: patch side.
        in_chans: input channels.
        head_dim: width of one head (default: the space's, else 64).
        space: the space (preset name, dict or object) whose ``head_dim`` applies.
        max_relative_position: clip distance ``m`` of the relative tables.
        qkv_bias: whether qkv has a bias.
    """
    cfg = AutoFormerSubnet.from_dict(cfg)
    d = _head_dim(head_dim, space)
    e = cfg.embed_dim
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    n = _grid(img_size, patch_size)
    total = e * in_chans * ph * pw + e  # patch conv
    total += e + (n + 1) * e  # class token, position embedding
    rel_tables = 4 * (2 * max_relative_position + 2) * d
    for heads, ratio in zip(cfg.num_heads, cfg.mlp_ratio):
        qk = heads * d
        hidden = int(e * ratio)
        total += 4 * e  # two LayerNorms
        total += 3 * qk * e + (3 * qk if qkv_bias else 0) + rel_tables + qk * e + e  # attention
        total += e * hidden + hidden + hidden * e + e  # MLP
    total += 2 * e  # final norm
    if num_classes > 0:
        total += e * num_classes + num_classes
    return total


def autoformer_macs(
        cfg: AutoFormerSubnet | Mapping[str, Any],
        *,
        num_classes: int = 1000,
        img_size: int | Sequence[int] = 224,
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        head_dim: int | None = None,
        space: Any = None,
        global_pool: str = "avg",
) -> int:
    """Multiply-accumulates of one image through the AutoFormer model of ``cfg``.

    Convention (module docstring): convolutions, linear layers and matrix products. With ``T = N + 1`` tokens,
    per block: qkv ``T E 3qk``, ``q k^T`` and ``attn v`` ``T^2 qk`` each, the two relative-position products
    ``T^2 qk`` each (they are full batched matmuls, as in the original), proj ``T qk E``, MLP ``2 T E H``; plus
    the patch convolution and the head on the pooled vector. LayerNorms, softmax, GELU, the relative-table
    gathers and the pooling are not counted. Equals :func:`measure_macs` and ``FlopCounterMode`` / 2 on the
    model. For AutoFormer-T/S/B at 224 it gives 1,481,938,432 / 5,161,400,832 / 11,691,179,008, the original
    code's ``FlopCounterMode`` / 2 count (1.482G / 5.161G / 11.691G; its own ``get_complexity`` undercounts).
    """
    cfg = AutoFormerSubnet.from_dict(cfg)
    d = _head_dim(head_dim, space)
    e = cfg.embed_dim
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    n = _grid(img_size, patch_size)
    t = n + 1
    total = n * e * in_chans * ph * pw  # patch conv
    for heads, ratio in zip(cfg.num_heads, cfg.mlp_ratio):
        qk = heads * d
        hidden = int(e * ratio)
        total += t * e * 3 * qk + 4 * t * t * qk + t * qk * e + 2 * t * e * hidden
    if num_classes > 0:
        total += (t if global_pool == "" else 1) * e * num_classes
    return total


register_cost(AutoFormerSubnet, autoformer_params, autoformer_macs)
