"""Parameter and MAC counts.

Two kinds of count, cross-checked in the tests:

* **analytic** (:func:`count_params`, :func:`count_macs`, :func:`model_cost`): closed-form counts for any
  architecture config, fast enough to run inside a search (tens of thousands of configs per second). Each family's
  formulas live in this package, one module per family (:mod:`.autoformer`, :mod:`.s3`, :mod:`.darts`,
  :mod:`.spvit`), and register themselves for the family's config type with :func:`register_cost`. Their one input
  besides the config is the shape arguments a model records at construction, ``model.cost_args``:
  ``count_params(cfg, **model.cost_args) == real_params(model)``; :func:`model_cost` does exactly that.
* **latency** (:mod:`.latency`): :func:`predict_latency` from a :class:`LatencyTable` measured on the user's
  device (``timm-nas latency build``), as fast as the analytic counts.
* **measured** (:mod:`.measure`): run the real model once and count. :func:`measure_macs` traces the model with
  fvcore and an explicit handle for ``aten::scaled_dot_product_attention`` (which fvcore otherwise skips silently);
  :func:`flop_counter_macs` uses torch's ``FlopCounterMode`` (FLOPs = 2 x MACs) as an independent check.

Counting convention (the one papers use when they write "FLOPs"): **multiply-accumulates** of convolutions,
linear layers, matrix products (attention included) and any model-specific products registered by a family;
normalisation, activations, softmax, additions, pooling and resampling are not counted. This is what torch's
``FlopCounterMode`` total / 2 gives (with our formula for the fused attention kernels, which some torch releases do
not count), and what :func:`measure_macs` counts (fvcore's default norm, pooling and resampling handles are
switched off to match).

The formulas import only configs from :mod:`timm_nas.spaces` (and torch / timm): models import this package, never
the reverse.
"""
# _ANALYTIC and _attention_formulas are reachable here on purpose: the registry is patched as
# timm_nas.cost._ANALYTIC, and flop_counter_macs looks _attention_formulas up through this package per call.
from .analytic import (
    _ANALYTIC,  # noqa: F401
    analytic_fns,
    arch_config,
    count_macs,
    count_params,
    model_cost,
    register_cost,
)
from .measure import (
    NON_MAC_OPS,
    NORM_OPS,
    _attention_formulas,  # noqa: F401
    flop_counter_macs,
    measure_macs,
    real_params,
    sdpa_macs_handle,
)
from .autoformer import autoformer_macs, autoformer_params
from .latency import LatencyTable, predict_latency
from .darts import darts_macs, darts_params
from .nb201 import nb201_macs, nb201_params
from .s3 import s3_macs, s3_params
from .spvit import spvit_macs, spvit_params

__all__ = [
    "register_cost",
    "count_params",
    "count_macs",
    "analytic_fns",
    "arch_config",
    "model_cost",
    "real_params",
    "measure_macs",
    "flop_counter_macs",
    "sdpa_macs_handle",
    "NORM_OPS",
    "NON_MAC_OPS",
    "autoformer_params",
    "autoformer_macs",
    "s3_params",
    "s3_macs",
    "darts_params",
    "darts_macs",
    "nb201_params",
    "nb201_macs",
    "spvit_params",
    "spvit_macs",
    "LatencyTable",
    "predict_latency",
]
