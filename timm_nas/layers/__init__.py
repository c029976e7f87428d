"""Layers several families share; a family's own blocks live in its model module, as in timm.

* :mod:`.elastic`: the elastic layers of the weight-sharing supernets (AutoFormer and S3) and their protocol
  (``forward`` with sizes, ``slice_state``, ``static_twin``);
* :mod:`.darts_ops`: the DARTS cell operations (DARTS and NAS-Bench-201 networks);
* attention kernels as functions of their weights: :mod:`.rel_pos_attention` / :mod:`.relative_position` (2-D
  relative position, AutoFormer) and :mod:`.window_attention` (shifted windows, S3).

Names that moved to their family's module in this release still import from here (and from their old submodules)
with a ``DeprecationWarning``.
"""
import importlib
import sys
import types
import warnings
from typing import Any

from .darts_ops import (
    DilConv,
    FactorizedReduce,
    MixedOp,
    ReLUConvBN,
    SepConv,
    Zero,
    create_darts_op,
    darts_drop_path,
)
from .elastic import ElasticLayerNorm, ElasticLinear, ElasticMlp, slice_linear
from .rel_pos_attention import reference_rel_pos, rel_pos_attention
from .relative_position import (
    MAX_RELATIVE_POSITION,
    clear_relative_position_cache,
    relative_position_embeddings,
    relative_position_index_2d,
    relative_position_pair_index_2d,
    relative_position_row_col_2d,
    relative_position_row_col_index_2d,
    relative_position_row_col_onehot_2d,
)
from .window_attention import shifted_window_mask, window_and_shift, window_attention

# ------------------------------------------------------------------------------------- moved (deprecated here)
#: name -> the module that holds it now.
_MOVED = {
    **dict.fromkeys(("ElasticPatchEmbed", "InterleavedQKV", "slice_interleaved_qkv", "QKV_INTERLEAVE",
                     "RelativePosition2D", "RelPosAttention", "ElasticRelPosAttention"), "timm_nas.models.autoformer"),
    **dict.fromkeys(("S3ElasticAttention", "S3ElasticBlock", "S3ElasticPatchEmbed", "S3ElasticPatchMerging",
                     "crop_rel_pos_table", "merged_channels", "paste_overlap", "qkv_rows", "table_window"),
                    "timm_nas.models.s3"),
    **dict.fromkeys(("SPVIT_ALPHA", "KERNEL_POSITIONS", "CENTER_POSITION", "BConv", "SkipAttention",
                     "UnifiedAttention", "UnifiedMlp", "bconv_weights", "head_assignment", "GATE_TEMPERATURE",
                     "clamp_probs", "deterministic_ste", "eval_gate", "logistic_noise", "mix_ops", "ordered_op_gates",
                     "straight_through_bernoulli"), "timm_nas.models.spvit"),
}
#: old submodule -> where its names live now.
_OLD_MODULES = {
    "elastic_linear": "timm_nas.layers.elastic",
    "elastic_mlp": "timm_nas.layers.elastic",
    "elastic_norm": "timm_nas.layers.elastic",
    "elastic_patch_embed": "timm_nas.models.autoformer",
    "interleaved_qkv": "timm_nas.models.autoformer",
    "s3_elastic": "timm_nas.models.s3",
    "s3_slicing": "timm_nas.models.s3",
    "s3_window": "timm_nas.layers.window_attention",
    "spvit_attention": "timm_nas.models.spvit",
    "spvit_gates": "timm_nas.models.spvit",
    "spvit_mlp": "timm_nas.models.spvit",
}


def _moved(name: str, old: str, new_module: str) -> Any:
    warnings.warn(f"{old}.{name} moved to {new_module}.{name}; the old spelling will be removed in the next release",
                  DeprecationWarning, stacklevel=3)
    return getattr(importlib.import_module(new_module), name)


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return _moved(name, __name__, _MOVED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _OldSubmodule(types.ModuleType):
    """An old ``timm_nas.layers.<name>`` path: each attribute is looked up where it lives now, with a warning."""

    def __init__(self, name: str, target: str) -> None:
        super().__init__(name)
        self._target = target

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _moved(attr, self.__name__, self._target)


for _old, _target in _OLD_MODULES.items():
    sys.modules.setdefault(f"{__name__}.{_old}", _OldSubmodule(f"{__name__}.{_old}", _target))
del _old, _target
