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
normalisation, activations, softmax, additions and pooling are not counted.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

__all__ = [
    "register_cost",
    "count_params",
    "count_macs",
    "real_params",
    "measure_macs",
    "flop_counter_macs",
    "sdpa_macs_handle",
]

_ANALYTIC: dict[type, tuple[Callable[..., int], Callable[..., int]]] = {}


def register_cost(config_cls: type, params_fn: Callable[..., int], macs_fn: Callable[..., int]) -> None:
    """Register the analytic ``params_fn(cfg, **kw)`` and ``macs_fn(cfg, **kw)`` of a config type."""
    _ANALYTIC[config_cls] = (params_fn, macs_fn)


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


def measure_macs(model: nn.Module, inputs: torch.Tensor | tuple, *, extra_handles: dict[str, Callable] | None = None,
                 ignore: Iterable[str] = ()) -> int:
    """Measured MACs of one forward pass with fvcore, counting ``scaled_dot_product_attention``.

    Args:
        model: the model (put in eval mode by the caller if it matters).
        inputs: a tensor or a tuple of forward arguments.
        extra_handles: additional fvcore op handles (op name -> fn(inputs, outputs) -> MACs).
        ignore: op names to mark as deliberately uncounted (silences fvcore's warning for them).
    """
    from fvcore.nn import FlopCountAnalysis

    args = inputs if isinstance(inputs, tuple) else (inputs,)
    with torch.no_grad():
        analysis = FlopCountAnalysis(model, args)
        analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_macs_handle)
        for name, fn in (extra_handles or {}).items():
            analysis.set_op_handle(name, fn)
        for name in ignore:
            analysis.set_op_handle(name, None)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        return int(analysis.total())


def flop_counter_macs(model: nn.Module, inputs: torch.Tensor | tuple) -> int:
    """MACs from torch's ``FlopCounterMode`` (which reports FLOPs = 2 x MACs), as an independent check."""
    from torch.utils.flop_counter import FlopCounterMode

    args = inputs if isinstance(inputs, tuple) else (inputs,)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*args)
    return int(counter.get_total_flops()) // 2
