"""Measured parameter and MAC counts: run the real model once and count.

:func:`measure_macs` traces the model with fvcore, with an explicit handle for ``aten::scaled_dot_product_attention``
(which fvcore otherwise skips silently); :func:`flop_counter_macs` uses torch's ``FlopCounterMode`` (FLOPs = 2 x
MACs) as an independent check. Both follow the counting convention of :mod:`timm_nas.cost`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

__all__ = ["real_params", "measure_macs", "flop_counter_macs", "sdpa_macs_handle", "NORM_OPS", "NON_MAC_OPS"]

#: fvcore ops that normalise (fvcore counts them by default); not multiply-accumulates in our convention.
NORM_OPS = ("aten::batch_norm", "aten::group_norm", "aten::layer_norm", "aten::instance_norm")
#: Other ops fvcore counts by default that are not multiply-accumulates in our convention (pooling and
#: resampling are element-wise work): always left out of :func:`measure_macs`, as ``FlopCounterMode`` leaves them.
NON_MAC_OPS = ("aten::adaptive_avg_pool2d", "aten::upsample_nearest2d", "aten::upsample_bilinear2d",
               "aten::grid_sampler")


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

    # Through the package at call time: replacing timm_nas.cost._attention_formulas takes effect here.
    from . import _attention_formulas

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
