"""Layers shared by several families (a family's own blocks live in its model file, as in timm)."""
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
from .elastic_linear import ElasticLinear, slice_linear
from .elastic_mlp import ElasticMlp
from .elastic_norm import ElasticLayerNorm
from .elastic_patch_embed import ElasticPatchEmbed
from .interleaved_qkv import InterleavedQKV, slice_interleaved_qkv
from .rel_pos_attention import ElasticRelPosAttention, RelPosAttention, reference_rel_pos, rel_pos_attention
from .relative_position import (
    MAX_RELATIVE_POSITION,
    RelativePosition2D,
    clear_relative_position_cache,
    relative_position_embeddings,
    relative_position_index_2d,
    relative_position_pair_index_2d,
    relative_position_row_col_2d,
    relative_position_row_col_index_2d,
    relative_position_row_col_onehot_2d,
)
from .s3_elastic import S3ElasticAttention, S3ElasticBlock, S3ElasticPatchEmbed, S3ElasticPatchMerging
from .s3_slicing import crop_rel_pos_table, merged_channels, paste_overlap, qkv_rows
from .s3_window import shifted_window_mask, window_and_shift, window_attention
from .spvit_attention import SPVIT_ALPHA, BConv, SkipAttention, UnifiedAttention, bconv_weights, head_assignment
from .spvit_gates import (
    deterministic_ste,
    eval_gate,
    logistic_noise,
    mix_ops,
    ordered_op_gates,
    straight_through_bernoulli,
)
from .spvit_mlp import UnifiedMlp
