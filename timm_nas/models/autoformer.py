"""AutoFormer: a weight-entangled ViT supernet, its static subnets, and the published AutoFormer / TF-TAS models.

Paper: Chen et al., "AutoFormer: Searching Transformers for Visual Recognition", ICCV 2021 (arXiv:2107.00651).
Original code: https://github.com/microsoft/Cream/tree/main/AutoFormer (commit 4a13c40), ``model/supernet_transformer.py``
and ``model/module/*``. TF-TAS (Zhou et al., CVPR 2022, https://github.com/decemberzhou/TF_TAS) searched the
same spaces training-free; its published architectures are registered here as well (no weights were released).

Official configuration, reproduced exactly: pre-norm blocks, qkv bias, head dim fixed at 64 (qk width = heads x
64), AutoFormer's row-interleaved q/k/v weight with a contiguous qkv bias, 2-D relative position on keys and
values (max distance 14, class token at index 0), absolute position embedding, exact-erf GELU, LayerNorm eps
1e-5, final norm then the mean of the patch tokens (class token excluded) into the head. Every searched tensor is
used through its leading slice (weight entanglement).

Models:

* :class:`AutoFormerSupernet` (``autoformer_supernet``, ``autoformer_supernet_{tiny,small,base}``): holds the
  largest weights of a space; runs any subnet that fits them (``use_subnet``), samples one per training forward
  (``sampling=``), and hands back a static model (``extract``).
* :class:`AutoFormer` (``autoformer_subnet``, ``autoformer_{tiny,small,base}``, ``tf_tas_{tiny,small,base}``): a
  plain ViT with relative position built from one :class:`~timm_nas.spaces.AutoFormerSubnet`; it knows nothing
  about search.

Weight entanglement lives in the elastic layers (:mod:`timm_nas.layers.elastic`'s protocol): each one runs its
slice in ``forward``, states its slicing rule once (``slice_state``) and hands back its static twin
(``static_twin``). ``extract`` loads the static model layer by layer from them; :func:`slice_subnet_state_dict`
applies the same per-layer rules to a state dict (checkpoint files, gradients).
"""
import logging
import re
import warnings
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, PatchEmbed, resample_abs_pos_embed, to_2tuple, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._input import update_model_args
from timm.models._manipulate import adapt_input_conv, checkpoint

from ._build import build_model
from .._checkpoint import load_checkpoint_file, unwrap_state_dict
from ..family import Family, register_family
from ..layers import MAX_RELATIVE_POSITION, rel_pos_attention, relative_position_embeddings
from ..layers.elastic import (
    ElasticLayerNorm,
    ElasticLinear,
    ElasticMlp,
    KeptSlices,
    Tensors,
    leading,
    load_twin,
    own_tensors,
    require,
    reuse_slices,
    take,
    with_prefix,
)
from ..layers.relative_position import REL_POS_INIT_STD
from ..registry import get_entry
from ..spaces.autoformer import HEAD_DIM, AutoFormerSpace, AutoFormerSubnet
from ._supernet import SupernetMixin
from ._vit_api import ViTApiMixin, check_global_pool

__all__ = [
    "AutoFormer",
    "ElasticPatchEmbed",
    "InterleavedQKV",
    "slice_interleaved_qkv",
    "RelativePosition2D",
    "RelPosAttention",
    "ElasticRelPosAttention",
    "AutoFormerSupernet",
    "AutoFormerBlock",
    "ElasticAutoFormerBlock",
    "slice_subnet_state_dict",
    "convert_original_state_dict",
    "checkpoint_filter_fn",
    "load_original_checkpoint",
]

_logger = logging.getLogger(__name__)

#: Truncated-normal std of linear weights, class token and position embedding at init (microsoft/Cream
#: AutoFormer/model/supernet_transformer.py, ``_init_weights`` and ``trunc_normal_(..., std=.02)``).
INIT_STD = 0.02

#: Tokens in front of the patch tokens (the class token).
NUM_PREFIX_TOKENS = 1

SubnetLike = Union[AutoFormerSubnet, Mapping[str, Any]]
SpaceLike = Union[str, AutoFormerSpace, Mapping[str, Any]]


def _init_weights(module: nn.Module) -> None:
    """The original's init: linear weights trunc-normal(0.02) with zero bias, LayerNorm 1 / 0, relative tables
    trunc-normal(0.02); convolutions keep PyTorch's default."""
    if isinstance(module, RelativePosition2D):
        module.reset_parameters()
    elif isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _json_size(size: Tuple[int, int]) -> Union[int, List[int]]:
    return size[0] if size[0] == size[1] else [size[0], size[1]]


def _cost_args(patch_embed: nn.Module, in_chans: int, num_classes: int, global_pool: str, qkv_bias: bool,
               head_dim: int, max_relative_position: int) -> Dict[str, Any]:
    """``cost_args`` of a static AutoFormer model: the keywords of :mod:`timm_nas.cost.autoformer`, JSON-native."""
    return dict(img_size=_json_size(patch_embed.img_size), patch_size=patch_embed.patch_size[0], in_chans=in_chans,
                num_classes=num_classes, global_pool=global_pool, qkv_bias=qkv_bias, head_dim=head_dim,
                max_relative_position=max_relative_position)


# ------------------------------------------------------------------------------------------------------ layers
# AutoFormer's own layers. The elastic ones follow timm_nas.layers.elastic's protocol: forward(x, <sizes>) runs a
# slice, slice_state(tensors, <sizes>) is the slicing rule, static_twin(<sizes>) hands back the static layer.
class ElasticPatchEmbed(nn.Module):
    """Image to patch tokens ``(B, N, E)`` with an elastic embedding width ``E``.

    Args:
        img_size: input image size (int or (H, W)); inputs must have exactly this size.
        patch_size: patch side (kernel = stride).
        in_chans: input channels.
        embed_dim: the largest embedding width (the weight's output channels).
    """

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: Union[int, Tuple[int, int]] = 16,
            in_chans: int = 3,
            embed_dim: int = 768,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size,
                              device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, embed_dim: Optional[int] = None) -> torch.Tensor:
        _, _, H, W = x.shape
        if (H, W) != self.img_size:
            raise ValueError(f"input image size ({H}x{W}) does not match the model ({self.img_size[0]}x"
                             f"{self.img_size[1]}); create the model with img_size=({H}, {W})")
        e = self.proj.out_channels if embed_dim is None else embed_dim
        bias = None if self.proj.bias is None else self.proj.bias[:e]
        x = F.conv2d(x, self.proj.weight[:e], bias, stride=self.patch_size)  # (B, E, gh, gw)
        return x.flatten(2).transpose(1, 2)  # (B, N, E)

    @staticmethod
    def slice_state(tensors: Tensors, embed_dim: int) -> Dict[str, torch.Tensor]:
        """Rule: the first ``embed_dim`` filters of ``proj`` (weight and bias)."""
        require(tensors, ("proj.weight",), "")
        return {k: leading(v, embed_dim, name=f"patch_embed.{k}") for k, v in tensors.items()}

    def static_state(self, embed_dim: int) -> Dict[str, torch.Tensor]:
        return self.slice_state(own_tensors(self), embed_dim)

    def static_twin(self, embed_dim: int) -> PatchEmbed:
        """timm's ``PatchEmbed`` of width ``embed_dim`` with the sliced filters."""
        twin = PatchEmbed(self.img_size, self.patch_size, self.proj.in_channels, embed_dim,
                          bias=self.proj.bias is not None, device="meta", dtype=self.proj.weight.dtype)
        return load_twin(twin, self.static_state(embed_dim))


# AutoFormer's entangled qkv projection. AutoFormer's entangled qkv projection: row-interleaved q/k/v weight, contiguous bias.
# 
# The original (microsoft/Cream ``AutoFormer/model/module/qkv_super.py``) holds one ``Linear(E_super, 3 E_super)``
# and, for a subnet of input width ``E`` and qk width ``qk`` (heads x head dim), takes input columns ``[:E]`` and
# output rows ``0, 3, 6, ...`` as q, ``1, 4, 7, ...`` as k and ``2, 5, 8, ...`` as v (each up to ``3 qk``),
# concatenated ``[q; k; v]``. The bias is NOT interleaved: it is the contiguous ``bias[:3 qk]``. That mismatch is
# what the released weights were trained with, so it is reproduced exactly.
#: q, k and v rows alternate with this period in the supernet weight (microsoft/Cream qkv_super.sample_weight).
QKV_INTERLEAVE = 3


def slice_interleaved_qkv(
        weight: torch.Tensor,
        bias: Optional[torch.Tensor],
        in_features: int,
        qk_dim: int,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """A subnet's ``[q; k; v]`` weight ``(3 qk, in)`` and its contiguous bias ``(3 qk,)``.

    Args:
        weight: the supernet weight ``(3 E_super, E_super)`` in the interleaved row layout.
        bias: the supernet bias or ``None``.
        in_features: the subnet's input width ``E``.
        qk_dim: the subnet's qk width (heads x head dim).
    """
    rows = QKV_INTERLEAVE * qk_dim
    w = weight[:rows, :in_features].unflatten(0, (qk_dim, QKV_INTERLEAVE))  # (qk, 3, E): [j, t] = row 3j + t
    w = w.transpose(0, 1).reshape(rows, in_features)  # (3 qk, E) = [q; k; v]
    return w, None if bias is None else bias[:rows]


class InterleavedQKV(KeptSlices, nn.Linear):
    """``nn.Linear(E_super, 3 E_super)`` whose forward runs :func:`slice_interleaved_qkv` for a given qk width.

    The output is ``(..., 3 qk)`` laid out ``[q; k; v]``, like a timm ``Attention.qkv`` of that width. Reordering
    the rows copies the weight slice; without autograd (evaluating a subnet, batch after batch) the last copy is
    kept and reused while the weights, the width and the qk width stay the same
    (:class:`~timm_nas.layers.elastic.KeptSlices`).
    """

    def forward(self, x: torch.Tensor, qk_dim: Optional[int] = None) -> torch.Tensor:
        qk = self.out_features // QKV_INTERLEAVE if qk_dim is None else qk_dim
        E = x.shape[-1]
        if reuse_slices(x):
            weight, bias = self.kept((E, qk), lambda: slice_interleaved_qkv(self.weight, self.bias, E, qk))
        else:
            weight, bias = slice_interleaved_qkv(self.weight, self.bias, E, qk)
        return F.linear(x, weight, bias)

    @staticmethod
    def slice_state(tensors: Tensors, in_features: int, qk_dim: int) -> Dict[str, torch.Tensor]:
        """Rule: :func:`slice_interleaved_qkv` (interleaved weight rows, contiguous bias)."""
        require(tensors, ("weight",), "")
        leading(tensors["weight"], QKV_INTERLEAVE * qk_dim, in_features, name="attn.qkv.weight")  # fits?
        w, b = slice_interleaved_qkv(tensors["weight"], tensors.get("bias"), in_features, qk_dim)
        return {"weight": w} if b is None else {"weight": w, "bias": b}

    def static_state(self, in_features: int, qk_dim: int) -> Dict[str, torch.Tensor]:
        return self.slice_state(own_tensors(self), in_features, qk_dim)

    def static_twin(self, in_features: int, qk_dim: int) -> nn.Linear:
        """``nn.Linear(in_features, 3 qk_dim)`` in the ``[q; k; v]`` layout."""
        twin = nn.Linear(in_features, QKV_INTERLEAVE * qk_dim, bias=self.bias is not None, device="meta",
                         dtype=self.weight.dtype)
        return load_twin(twin, self.static_state(in_features, qk_dim))


class RelativePosition2D(nn.Module):
    """The two learned tables of one relative position embedding (for keys or for values).

    Args:
        width: table width (the head dim in a static model; ``E_super // heads_super`` in a supernet).
        max_distance: clip distance ``m``; the tables have ``2 m + 2`` rows.
        grid_size: the patch grid ``(H, W)`` the embeddings are built for.
    """

    def __init__(
            self,
            width: int,
            max_distance: int = MAX_RELATIVE_POSITION,
            grid_size: Tuple[int, int] = (14, 14),
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.width = width
        self.max_distance = max_distance
        self.grid_size: Tuple[int, int] = (int(grid_size[0]), int(grid_size[1]))
        rows = 2 * max_distance + 2
        self.table_v = nn.Parameter(torch.empty(rows, width, device=device, dtype=dtype))
        self.table_h = nn.Parameter(torch.empty(rows, width, device=device, dtype=dtype))
        if not self.table_v.is_meta:  # nothing to initialise on the meta device
            self.reset_parameters()

    def reset_parameters(self) -> None:
        trunc_normal_(self.table_v, std=REL_POS_INIT_STD)
        trunc_normal_(self.table_h, std=REL_POS_INIT_STD)

    def tables(self, width: Optional[int] = None) -> torch.Tensor:
        """``(2 (2m+2), width)``: ``[table_v; table_h]`` stacked, their first ``width`` columns (default: all)."""
        tables = torch.cat([self.table_v, self.table_h])
        return tables if width is None else tables[:, :width]

    def forward(self, width: Optional[int] = None) -> torch.Tensor:
        """``(N+1, N+1, width)`` embeddings from the first ``width`` table columns (default: all)."""
        table_v, table_h = self.table_v, self.table_h
        if width is not None:
            table_v, table_h = table_v[:, :width], table_h[:, :width]
        return relative_position_embeddings(table_v, table_h, self.grid_size, self.max_distance)

    def extra_repr(self) -> str:
        return f"width={self.width}, max_distance={self.max_distance}, grid_size={self.grid_size}"

    @staticmethod
    def slice_state(tensors: Tensors, width: int) -> Dict[str, torch.Tensor]:
        """Rule: the first ``width`` columns of both tables."""
        require(tensors, ("table_v", "table_h"), "")
        return {k: leading(v, v.shape[0], width, name=f"relative table {k}") for k, v in tensors.items()}

    def static_state(self, width: int) -> Dict[str, torch.Tensor]:
        return self.slice_state(own_tensors(self), width)

    def static_twin(self, width: int) -> "RelativePosition2D":
        """The tables' first ``width`` columns as a new :class:`RelativePosition2D`."""
        twin = RelativePosition2D(width, self.max_distance, self.grid_size, device="meta", dtype=self.table_v.dtype)
        return load_twin(twin, self.static_state(width))


class RelPosAttention(nn.Module):
    """Static attention of an AutoFormer subnet: ``qkv`` (``[q; k; v]`` layout), relative tables, ``proj``.

    Args:
        dim: embedding width ``E``.
        num_heads: heads ``h``; the qkv width is ``h * head_dim`` (may differ from ``E``).
        head_dim: width of one head.
        grid_size: patch grid of the input.
        max_relative_position: clip distance of the relative tables.
        qkv_bias: whether qkv has a bias.
        attn_drop: dropout on attention weights.
        proj_drop: dropout after the output projection.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            head_dim: int = 64,
            grid_size: Tuple[int, int] = (14, 14),
            max_relative_position: int = MAX_RELATIVE_POSITION,
            qkv_bias: bool = True,
            attn_drop: float = 0.0,
            proj_drop: float = 0.0,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5
        qk = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * qk, bias=qkv_bias, **dd)
        self.grid_size: Tuple[int, int] = (int(grid_size[0]), int(grid_size[1]))
        self.max_relative_position = max_relative_position
        self.rel_pos_k = RelativePosition2D(head_dim, max_relative_position, grid_size, **dd)
        self.rel_pos_v = RelativePosition2D(head_dim, max_relative_position, grid_size, **dd)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(qk, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, grid_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """``x`` ``(B, 1 + H W, E)``; ``grid_size`` ``(H, W)`` of this input (default: the built grid)."""
        B, N, _ = x.shape
        grid = self.grid_size if grid_size is None else grid_size
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, h, N, d) each
        x = rel_pos_attention(q, k, v, self.rel_pos_k.tables(), self.rel_pos_v.tables(), grid,
                              self.max_relative_position, self.scale, self.attn_drop, self.training)
        return self.proj_drop(self.proj(x))

    def set_grid_size(self, grid_size: Tuple[int, int]) -> None:
        """Build for another patch grid (the relative-position index follows it; the tables are unchanged)."""
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.rel_pos_k.grid_size = self.rel_pos_v.grid_size = self.grid_size


class ElasticRelPosAttention(nn.Module):
    """Supernet attention: the largest weights, run for any head count and input width.

    Holds AutoFormer's ``qkv`` (``Linear(E_super, 3 E_super)``, interleaved rows), relative tables of width
    ``E_super // heads_super`` and ``proj`` (``Linear(E_super, E_super)``). ``forward(x, num_heads)`` runs
    ``num_heads`` heads of ``head_dim`` on an input of width ``x.shape[-1]``; the output has the input's width.

    Args:
        dim: the largest embedding width ``E_super``.
        num_heads: the supernet's head count (fixes the relative tables' width ``E_super // num_heads``).
        head_dim: width of one head in every subnet.
        grid_size, max_relative_position, qkv_bias, attn_drop, proj_drop: as :class:`RelPosAttention`.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            head_dim: int = 64,
            grid_size: Tuple[int, int] = (14, 14),
            max_relative_position: int = MAX_RELATIVE_POSITION,
            qkv_bias: bool = True,
            attn_drop: float = 0.0,
            proj_drop: float = 0.0,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5
        self.qkv = InterleavedQKV(dim, 3 * dim, bias=qkv_bias, **dd)
        self.grid_size: Tuple[int, int] = (int(grid_size[0]), int(grid_size[1]))
        self.max_relative_position = max_relative_position
        self.rel_pos_k = RelativePosition2D(dim // num_heads, max_relative_position, grid_size, **dd)
        self.rel_pos_v = RelativePosition2D(dim // num_heads, max_relative_position, grid_size, **dd)
        self.attn_drop = attn_drop
        self.proj = ElasticLinear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, num_heads: int) -> torch.Tensor:
        B, N, E = x.shape
        qk = num_heads * self.head_dim
        qkv = self.qkv(x, qk).reshape(B, N, 3, num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, h, N, d) each
        # the tables' first head_dim columns, whatever the head count
        x = rel_pos_attention(q, k, v, self.rel_pos_k.tables(self.head_dim), self.rel_pos_v.tables(self.head_dim),
                              self.grid_size, self.max_relative_position, self.scale, self.attn_drop, self.training)
        return self.proj_drop(self.proj(x, E))

    @staticmethod
    def slice_state(tensors: Tensors, dim: int, num_heads: int, head_dim: int) -> Dict[str, torch.Tensor]:
        """Rule: ``qkv`` (:class:`InterleavedQKV`, qk width ``num_heads * head_dim``), both relative embeddings
        (first ``head_dim`` columns) and ``proj`` (``(dim, qk)``), in :class:`RelPosAttention`'s layout."""
        qk = num_heads * head_dim
        return {**with_prefix("qkv.", InterleavedQKV.slice_state(take(tensors, "qkv."), dim, qk)),
                **with_prefix("rel_pos_k.", RelativePosition2D.slice_state(take(tensors, "rel_pos_k."), head_dim)),
                **with_prefix("rel_pos_v.", RelativePosition2D.slice_state(take(tensors, "rel_pos_v."), head_dim)),
                **with_prefix("proj.", ElasticLinear.slice_state(take(tensors, "proj."), qk, dim))}

    def static_state(self, dim: int, num_heads: int) -> Dict[str, torch.Tensor]:
        return self.slice_state(own_tensors(self), dim, num_heads, self.head_dim)

    def static_twin(self, dim: int, num_heads: int) -> RelPosAttention:
        """The :class:`RelPosAttention` of width ``dim`` with ``num_heads`` heads, weights sliced."""
        twin = RelPosAttention(dim, num_heads, self.head_dim, self.grid_size, self.max_relative_position,
                               self.qkv.bias is not None, attn_drop=self.attn_drop, proj_drop=self.proj_drop.p,
                               device="meta", dtype=self.qkv.weight.dtype)
        return load_twin(twin, self.static_state(dim, num_heads))


# ------------------------------------------------------------------------------------------------------- blocks
class AutoFormerBlock(nn.Module):
    """Static pre-norm block: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``.

    Dropout sits where the original puts it: ``attn_drop`` on the attention weights and again on the attention
    branch's output, ``proj_drop`` after the projection and inside the MLP (after GELU and after ``fc2``).

    Args:
        dim: embedding width.
        num_heads: heads (qkv width ``num_heads * head_dim``).
        mlp_hidden: MLP hidden width.
        head_dim: width of one head.
        grid_size: patch grid.
        max_relative_position: clip distance of the relative tables.
        qkv_bias: qkv bias.
        proj_drop: dropout after the projection and in the MLP.
        attn_drop: dropout on attention weights and on the attention branch.
        drop_path: stochastic depth rate.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            mlp_hidden: int,
            head_dim: int = HEAD_DIM,
            grid_size: Tuple[int, int] = (14, 14),
            max_relative_position: int = MAX_RELATIVE_POSITION,
            qkv_bias: bool = True,
            proj_drop: float = 0.0,
            attn_drop: float = 0.0,
            drop_path: float = 0.0,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm1 = nn.LayerNorm(dim, **dd)
        self.attn = RelPosAttention(dim, num_heads, head_dim, grid_size, max_relative_position, qkv_bias,
                                    attn_drop=attn_drop, proj_drop=proj_drop, **dd)
        self.attn_out_drop = nn.Dropout(attn_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, **dd)
        self.mlp = Mlp(dim, mlp_hidden, act_layer=nn.GELU, drop=proj_drop, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, grid_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        x = x + self.drop_path1(self.attn_out_drop(self.attn(self.norm1(x), grid_size)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class ElasticAutoFormerBlock(nn.Module):
    """Supernet block with the largest weights; ``forward(x, num_heads, mlp_hidden, width_ratio)`` runs one
    subnet layer on an input of any width ``E <= dim``.

    Dropout follows the original (microsoft/Cream ``TransformerEncoderLayer``): the attention weights use
    ``attn_drop`` and the projection ``proj_drop`` unscaled; the attention branch and the MLP use the rates
    scaled by ``width_ratio = E / E_super`` (``calc_dropout``).
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            mlp_hidden: int,
            head_dim: int = HEAD_DIM,
            grid_size: Tuple[int, int] = (14, 14),
            max_relative_position: int = MAX_RELATIVE_POSITION,
            qkv_bias: bool = True,
            proj_drop: float = 0.0,
            attn_drop: float = 0.0,
            drop_path: float = 0.0,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.proj_drop = proj_drop
        self.attn_drop = attn_drop
        self.norm1 = ElasticLayerNorm(dim, **dd)
        self.attn = ElasticRelPosAttention(dim, num_heads, head_dim, grid_size, max_relative_position, qkv_bias,
                                           attn_drop=attn_drop, proj_drop=proj_drop, **dd)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = ElasticLayerNorm(dim, **dd)
        self.mlp = ElasticMlp(dim, mlp_hidden, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, num_heads: int, mlp_hidden: int, width_ratio: float = 1.0) -> torch.Tensor:
        y = F.dropout(self.attn(self.norm1(x), num_heads), self.attn_drop * width_ratio, self.training)
        x = x + self.drop_path1(y)
        return x + self.drop_path2(self.mlp(self.norm2(x), mlp_hidden, self.proj_drop * width_ratio))

    @staticmethod
    def slice_state(tensors: Tensors, dim: int, num_heads: int, mlp_hidden: int,
                    head_dim: int = HEAD_DIM) -> Dict[str, torch.Tensor]:
        """Rule: the block of width ``dim``, ``num_heads`` heads and ``mlp_hidden`` MLP units in
        :class:`AutoFormerBlock`'s layout (each sub-layer's own rule)."""
        require(tensors, [k for k in BLOCK_KEYS if k != "attn.qkv.bias"], "")
        return {**with_prefix("norm1.", ElasticLayerNorm.slice_state(take(tensors, "norm1."), dim)),
                **with_prefix("attn.", ElasticRelPosAttention.slice_state(take(tensors, "attn."), dim, num_heads,
                                                                          head_dim)),
                **with_prefix("norm2.", ElasticLayerNorm.slice_state(take(tensors, "norm2."), dim)),
                **with_prefix("mlp.", ElasticMlp.slice_state(take(tensors, "mlp."), dim, mlp_hidden))}

    def static_state(self, dim: int, num_heads: int, mlp_hidden: int) -> Dict[str, torch.Tensor]:
        return self.slice_state(own_tensors(self), dim, num_heads, mlp_hidden, self.attn.head_dim)

    def static_twin(self, dim: int, num_heads: int, mlp_hidden: int, drop_path: float = 0.0) -> AutoFormerBlock:
        """The static :class:`AutoFormerBlock` (same dropout rates, unscaled) with the sliced weights."""
        attn = self.attn
        twin = AutoFormerBlock(dim, num_heads, mlp_hidden, attn.head_dim, attn.grid_size, attn.max_relative_position,
                               attn.qkv.bias is not None, proj_drop=self.proj_drop, attn_drop=self.attn_drop,
                               drop_path=drop_path, device="meta", dtype=attn.qkv.weight.dtype)
        return load_twin(twin, self.static_state(dim, num_heads, mlp_hidden))


# ------------------------------------------------------------------------------------------------------ models
class AutoFormerSupernet(SupernetMixin, ViTApiMixin, nn.Module):
    """The AutoFormer supernet as a timm model.

    By default the active subnet is the full weight shape (``space.full()``), so the supernet behaves as an
    ordinary ViT; ``num_features`` / ``head_hidden_size`` follow the active subnet. In training mode each forward
    runs a subnet picked by ``sampling`` (see :mod:`timm_nas.models._supernet`); parameters of blocks the sampled
    subnet skips get a zero gradient (``unused_grad='zero'``, a documented deviation from the original's ``None``).

    Args:
        space: a preset name (``'tiny'``, ``'small'``, ``'base'``), a space dict or an :class:`AutoFormerSpace`.
        img_size: input image size (fixed: the absolute position embedding has one entry per patch).
        patch_size: patch side.
        in_chans: input channels.
        num_classes: classifier outputs (0: no classifier).
        global_pool: ``'avg'`` (mean of patch tokens, the official setting), ``'token'`` or ``''``.
        qkv_bias: qkv bias (official: True).
        max_relative_position: clip distance of the relative tables (official: 14).
        drop_rate: the original's ``--drop`` (embeddings, projections, MLP; scaled by E / E_super where the
            original scales it).
        attn_drop_rate: the original's attention dropout.
        drop_path_rate: stochastic depth, linear over the supernet's depth (the original trained with 0.1).
        sampling: training-mode policy ``'uniform'`` (default), ``'sandwich'`` or ``'fixed'``.
        seed: seed of the per-step sampling generators (default 0).
        unused_grad: ``'zero'`` (default) or ``'none'`` (the original's missing gradients).
        subnet: the initial active subnet (default: the full weight shape); with ``sampling='fixed'`` it is the one
            trained, as the original's ``--mode retrain --cfg subnet.yaml``. It must fit the weights.
    """

    def __init__(
            self,
            space: SpaceLike = "tiny",
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: int = 16,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            qkv_bias: bool = True,
            max_relative_position: int = MAX_RELATIVE_POSITION,
            drop_rate: float = 0.0,
            attn_drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            sampling: Optional[str] = None,
            seed: Optional[int] = None,
            unused_grad: Optional[str] = None,
            subnet: Optional[SubnetLike] = None,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        space = AutoFormerSpace.resolve(space)
        E = space.super_embed_dim
        self.num_classes = num_classes
        self.global_pool = check_global_pool(global_pool)
        self.in_chans = in_chans
        self.embed_dim = E
        self.head_dim = space.head_dim
        self.num_prefix_tokens = NUM_PREFIX_TOKENS
        self.qkv_bias = qkv_bias
        self.max_relative_position = max_relative_position
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.patch_embed = ElasticPatchEmbed(img_size, patch_size, in_chans, E, **dd)
        # The cost formulas' shape arguments: those of the static subnets (timm_nas.cost.model_cost).
        self.cost_args = _cost_args(self.patch_embed, in_chans, num_classes, self.global_pool, qkv_bias,
                                    space.head_dim, max_relative_position)
        grid = self.patch_embed.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, E, **dd))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + NUM_PREFIX_TOKENS, E, **dd))
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, space.super_depth, device="cpu")]
        mlp_hidden = int(E * space.super_mlp_ratio)
        self.blocks = nn.ModuleList([
            ElasticAutoFormerBlock(E, space.super_num_heads, mlp_hidden, space.head_dim, grid, max_relative_position,
                                   qkv_bias, proj_drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i], **dd)
            for i in range(space.super_depth)])
        self.norm = ElasticLayerNorm(E, **dd)
        self.head = ElasticLinear(E, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.init_supernet(space, sampling=sampling, seed=seed, unused_grad=unused_grad, subnet=subnet, device=device)
        if not self.cls_token.is_meta:  # nothing to initialise on the meta device (and init ops are slow there)
            self.init_weights()

    def init_weights(self) -> None:
        """(Re-)initialise every parameter as the original does."""
        trunc_normal_(self.pos_embed, std=INIT_STD)
        trunc_normal_(self.cls_token, std=INIT_STD)
        self.apply(_init_weights)

    # -------------------------------------------------------------------------------------- timm interface
    @property
    def num_features(self) -> int:
        """Width of the features of the active subnet."""
        return self.active_subnet.embed_dim

    @property
    def head_hidden_size(self) -> int:
        """Width of the pre-logits of the active subnet."""
        return self.active_subnet.embed_dim

    # timm API (no_weight_decay, group_matcher, ...): ViTApiMixin. The original's no-decay list also named
    # 'rel_pos_embed', which matched no parameter, so the relative-position tables are decayed, as here.
    def _new_head(self, num_classes: int, **dd: Any) -> nn.Module:
        return ElasticLinear(self.embed_dim, num_classes, **dd)

    # ------------------------------------------------------------------------------------------- subnets
    def unused_parameters(self, cfg: AutoFormerSubnet) -> List[nn.Parameter]:
        """Parameters of the blocks ``cfg`` skips (every other tensor is used through a leading slice)."""
        return [p for block in self.blocks[cfg.depth:] for p in block.parameters()]

    def subnet_state_dict(self, cfg: Optional[SubnetLike] = None, *, grads: bool = False) -> Dict[str, torch.Tensor]:
        """The tensors subnet ``cfg`` (default: the active one) uses, in the static model's layout.

        Args:
            cfg: the subnet.
            grads: slice each parameter's ``.grad`` instead of the parameter (e.g. for gradient-based proxies).

        Returns:
            Views of (or, for the interleaved qkv weight, copies of) the supernet's tensors, detached.

        Raises:
            ValueError: if ``cfg`` does not fit, or ``grads=True`` and a used parameter has no gradient.
        """
        cfg = self.check_subnet(self.active_subnet if cfg is None else cfg)
        if grads:
            source = {n: p.grad for n, p in self.named_parameters() if p.grad is not None}
        else:
            source = {n: t.detach() for n, t in self.state_dict(keep_vars=True).items()}
        try:
            return slice_subnet_state_dict(source, cfg, head_dim=self.head_dim)
        except KeyError as e:
            if grads:
                raise ValueError(f"no gradient for {e.args[0]}; run a backward pass through this subnet first") from e
            raise

    def subnet_model_args(self, cfg: Optional[SubnetLike] = None) -> Dict[str, Any]:
        """Deprecated spelling of :meth:`static_model_args`."""
        warnings.warn("AutoFormerSupernet.subnet_model_args() is deprecated; use static_model_args() (one name "
                      "across families)", DeprecationWarning, stacklevel=2)
        return self.static_model_args(cfg)

    def static_model_args(self, cfg: Optional[SubnetLike] = None) -> Dict[str, Any]:
        """JSON-native constructor arguments of the static ``autoformer_subnet`` model of ``cfg`` (default: the
        active subnet)."""
        cfg = self.check_subnet(self.active_subnet if cfg is None else cfg)
        return dict(
            subnet=cfg.to_dict(),
            img_size=_json_size(self.patch_embed.img_size),
            patch_size=self.patch_embed.patch_size[0],
            in_chans=self.in_chans,
            num_classes=self.num_classes,
            global_pool=self.global_pool,
            qkv_bias=self.qkv_bias,
            head_dim=self.head_dim,
            max_relative_position=self.max_relative_position,
        )

    def extract(self, cfg: Optional[SubnetLike] = None, **kwargs: Any) -> "AutoFormer":
        """A new static ``autoformer_subnet`` model of ``cfg`` (default: the active subnet) with copied weights.

        The weights are loaded strictly; the model gives the same outputs as this supernet running ``cfg`` and
        records its constructor arguments (``update_model_args``), so an exported ``config.json`` rebuilds it.

        Args:
            cfg: the subnet (a config or its dict); it must fit the supernet's weights (``space.fits``).
            **kwargs: extra ``autoformer_subnet`` arguments (e.g. ``drop_path_rate`` for fine-tuning).

        Raises:
            ValueError: if ``cfg`` does not fit the supernet's weights.
        """
        from timm import create_model

        cfg = self.check_subnet(self.active_subnet if cfg is None else cfg)
        args = dict(self.static_model_args(cfg), **kwargs)
        ref = self.cls_token
        model = create_model("autoformer_subnet", device="meta", dtype=ref.dtype, **args)
        # layer by layer: each static layer takes its elastic twin's slice (timm_nas.layers.elastic)
        E = cfg.embed_dim
        load_twin(model.patch_embed, self.patch_embed.static_state(E))
        model.cls_token = nn.Parameter(self.cls_token.detach()[..., :E].clone())
        model.pos_embed = nn.Parameter(self.pos_embed.detach()[..., :E].clone())
        for i in range(cfg.depth):
            load_twin(model.blocks[i], self.blocks[i].static_state(E, cfg.num_heads[i], cfg.mlp_hidden(i)))
        load_twin(model.norm, self.norm.static_state(E))
        if self.num_classes > 0:
            load_twin(model.head, self.head.static_state(E, self.num_classes))
        update_model_args(model, **args)
        model.train(self.training)
        return model

    # ------------------------------------------------------------------------------------------- forward
    def forward_subnet_features(self, x: torch.Tensor, cfg: AutoFormerSubnet) -> torch.Tensor:
        """Unpooled features ``(B, N+1, E)`` of subnet ``cfg`` (no policy, no step: ``cfg`` as given)."""
        E = cfg.embed_dim
        ratio = E / self.embed_dim
        x = self.patch_embed(x, E)  # (B, N, E)
        x = torch.cat((self.cls_token[..., :E].expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed[..., :E]
        x = F.dropout(x, self.drop_rate * ratio, self.training)
        x = self.tie_unused(x, cfg)
        for i in range(cfg.depth):
            block = self.blocks[i]
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, cfg.num_heads[i], cfg.mlp_hidden(i), ratio)
            else:
                x = block(x, cfg.num_heads[i], cfg.mlp_hidden(i), ratio)
        return self.norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled features ``(B, N+1, E)`` of this forward's subnet (active in eval, sampled in training)."""
        return self.forward_subnet_features(x, self.select_subnet())

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool and classify; the width is read from ``x`` (the head uses its leading columns)."""
        if self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        elif self.global_pool == "token":
            x = x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def load_pretrained(self, checkpoint_path: str) -> None:
        """Load an original AutoFormer ``.pth`` (timm's ``custom_load`` hook): see :func:`load_original_checkpoint`."""
        load_original_checkpoint(self, checkpoint_path)


class AutoFormer(ViTApiMixin, nn.Module):
    """A static AutoFormer subnet: a ViT with 2-D relative position, built from one :class:`AutoFormerSubnet`.

    Args:
        subnet: the architecture (an :class:`AutoFormerSubnet` or its dict).
        img_size: input image size (fixed).
        patch_size: patch side.
        in_chans: input channels.
        num_classes: classifier outputs (0: no classifier).
        global_pool: ``'avg'`` (mean of patch tokens), ``'token'`` or ``''``.
        qkv_bias: qkv bias.
        head_dim: width of one head (the space's ``head_dim``; official 64).
        max_relative_position: clip distance of the relative tables.
        drop_rate: dropout on the embeddings, after projections and in the MLP.
        attn_drop_rate: dropout on attention weights and on the attention branch.
        drop_path_rate: stochastic depth, linear over this model's depth.
        dynamic_img_size: accept any input size (as timm's ViT): the position embedding is resampled to the
            input's patch grid and the relative-position index follows it (distances beyond
            ``max_relative_position`` are clipped, as for the built size).
        dynamic_img_pad: pad inputs to a multiple of the patch size (with ``dynamic_img_size``).
    """

    def __init__(
            self,
            subnet: SubnetLike,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: int = 16,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            qkv_bias: bool = True,
            head_dim: int = HEAD_DIM,
            max_relative_position: int = MAX_RELATIVE_POSITION,
            drop_rate: float = 0.0,
            attn_drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            dynamic_img_size: bool = False,
            dynamic_img_pad: bool = False,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        cfg = AutoFormerSubnet.resolve(subnet)
        E = cfg.embed_dim
        self.subnet = cfg
        self.dynamic_img_size = dynamic_img_size
        self.num_classes = num_classes
        self.global_pool = check_global_pool(global_pool)
        self.in_chans = in_chans
        self.embed_dim = E
        self.num_features = E
        self.head_hidden_size = E
        self.head_dim = head_dim
        self.num_prefix_tokens = NUM_PREFIX_TOKENS
        self.grad_checkpointing = False

        embed_args: Dict[str, Any] = dict(strict_img_size=False, output_fmt="NHWC", flatten=False) \
            if dynamic_img_size else {}
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, E, dynamic_img_pad=dynamic_img_pad,
                                      **embed_args, **dd)
        # The cost formulas' shape arguments (timm_nas.cost.model_cost).
        self.cost_args = _cost_args(self.patch_embed, in_chans, num_classes, self.global_pool, qkv_bias, head_dim,
                                    max_relative_position)
        grid = self.patch_embed.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, E, **dd))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + NUM_PREFIX_TOKENS, E, **dd))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, cfg.depth, device="cpu")]
        self.blocks = nn.Sequential(*[
            AutoFormerBlock(E, cfg.num_heads[i], cfg.mlp_hidden(i), head_dim, grid, max_relative_position, qkv_bias,
                            proj_drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i], **dd)
            for i in range(cfg.depth)])
        reduction = self.patch_embed.patch_size[0]
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=E, reduction=reduction) for i in range(cfg.depth)]
        self.norm = nn.LayerNorm(E, **dd)
        self.head = nn.Linear(E, num_classes, **dd) if num_classes > 0 else nn.Identity()
        if not self.cls_token.is_meta:  # nothing to initialise on the meta device (and init ops are slow there)
            self.init_weights()

    def init_weights(self) -> None:
        """(Re-)initialise every parameter as the original does."""
        trunc_normal_(self.pos_embed, std=INIT_STD)
        trunc_normal_(self.cls_token, std=INIT_STD)
        self.apply(_init_weights)

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[Tuple[int, int]]]:
        """Tokens ``(B, 1 + H W, E)`` with the class token and position embedding, and the patch grid of this
        input (``None``: the built grid)."""
        x = self.patch_embed(x)
        grid: Optional[Tuple[int, int]] = None
        pos_embed = self.pos_embed
        if self.dynamic_img_size:
            B, H, W, C = x.shape
            grid = (H, W)
            pos_embed = resample_abs_pos_embed(self.pos_embed, [H, W], num_prefix_tokens=self.num_prefix_tokens)
            x = x.reshape(B, H * W, C)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return self.pos_drop(x + pos_embed), grid

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled features ``(B, N+1, E)`` after the final norm."""
        x, grid = self._embed(x)
        for block in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x, grid)
            else:
                x = block(x, grid)
        return self.norm(x)

    @torch.jit.ignore
    def set_input_size(self, img_size: Optional[Union[int, Tuple[int, int]]] = None,
                       patch_size: Optional[Union[int, Tuple[int, int]]] = None) -> None:
        """Rebuild for another input size (and patch size), as timm's ViT: the patch embedding (its kernel
        resampled for a new patch size) and the position embedding follow, and so does every block's
        relative-position index. The new sizes are recorded for :func:`timm_nas.hub.export`, so the export
        reloads as the resized model."""
        from timm.models._input import update_model_input_size

        prev = self.patch_embed.grid_size
        self.patch_embed.set_input_size(img_size=img_size, patch_size=patch_size)
        grid = self.patch_embed.grid_size
        if tuple(grid) != tuple(prev):
            self.pos_embed = nn.Parameter(resample_abs_pos_embed(
                self.pos_embed.detach(), list(grid), old_size=list(prev), num_prefix_tokens=self.num_prefix_tokens),
                requires_grad=self.pos_embed.requires_grad)
        for block in self.blocks:
            block.attn.set_grid_size(grid)
        self.cost_args.update(img_size=_json_size(self.patch_embed.img_size),
                              patch_size=self.patch_embed.patch_size[0])
        update_model_input_size(self, self.patch_embed.img_size,
                                patch_size=self.patch_embed.patch_size[0] if patch_size is not None else None)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        elif self.global_pool == "token":
            x = x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            return_prefix_tokens: bool = False,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[Any], Tuple[torch.Tensor, List[Any]]]:
        """Block outputs as timm's ``VisionTransformer.forward_intermediates`` returns them.

        Args:
            x: images ``(B, C, H, W)`` at the model's ``img_size`` (any size with ``dynamic_img_size``).
            indices: the last ``n`` blocks (int), the given block indices (list; negative counts from the end),
                or every block (``None``).
            return_prefix_tokens: pair each intermediate with its class token ``(B, 1, E)``.
            norm: apply the final norm to every intermediate.
            stop_early: run only up to the last requested block.
            output_fmt: ``'NCHW'`` (``(B, E, h, w)`` maps) or ``'NLC'`` (``(B, h * w, E)`` tokens).
            intermediates_only: return only the intermediates.

        Returns:
            ``(final normed features (B, N+1, E), intermediates)``, or the intermediates alone.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        B = x.shape[0]
        x, grid = self._embed(x)
        blocks = self.blocks if torch.jit.is_scripting() or not stop_early else self.blocks[:max_index + 1]
        intermediates: List[torch.Tensor] = []
        for i, block in enumerate(blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x, grid)
            else:
                x = block(x, grid)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        prefix = [y[:, :self.num_prefix_tokens] for y in intermediates]
        spatial = [y[:, self.num_prefix_tokens:] for y in intermediates]
        if output_fmt == "NCHW":
            h, w = self.patch_embed.grid_size if grid is None else grid
            spatial = [y.reshape(B, h, w, -1).permute(0, 3, 1, 2).contiguous() for y in spatial]
        out: List[Any] = list(zip(spatial, prefix)) if return_prefix_tokens else spatial
        if intermediates_only:
            return out
        return self.norm(x), out

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the blocks after the last of ``indices`` (and the final norm / the classifier when asked); returns
        the kept indices, as timm's ViT does (``features_only=True`` uses it)."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        self.feature_info = self.feature_info[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    @torch.jit.ignore
    def load_pretrained(self, checkpoint_path: str) -> None:
        """Load an original AutoFormer supernet ``.pth`` sliced to this subnet (timm's ``custom_load`` hook)."""
        load_original_checkpoint(self, checkpoint_path)


# ------------------------------------------------------------------------------------------------------ slicing
#: Per-block tensor names (our layout), the same in the supernet and the static model.
BLOCK_KEYS = (
    "norm1.weight", "norm1.bias",
    "attn.qkv.weight", "attn.qkv.bias",
    "attn.rel_pos_k.table_v", "attn.rel_pos_k.table_h", "attn.rel_pos_v.table_v", "attn.rel_pos_v.table_h",
    "attn.proj.weight", "attn.proj.bias",
    "norm2.weight", "norm2.bias",
    "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
)
#: Model-level tensor names; the head is absent without a classifier, the qkv bias without ``qkv_bias``.
GLOBAL_KEYS = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
               "norm.bias")
HEAD_KEYS = ("head.weight", "head.bias")
#: The supernet's step buffer (no static counterpart).
STEP_KEY = "subnet_step"

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def slice_subnet_state_dict(
        state_dict: Mapping[str, torch.Tensor],
        subnet: SubnetLike,
        *,
        head_dim: int = HEAD_DIM,
) -> "OrderedDict[str, torch.Tensor]":
    """Supernet tensors (our key layout) -> the tensors of the static subnet model (its key layout).

    For checkpoint files (no module needed): each layer's own rule (``slice_state`` of the elastic layer that holds
    those tensors: leading slices everywhere, AutoFormer's interleaved qkv rows with a contiguous bias, relative
    tables' first ``head_dim`` columns) applied to its prefix, and the first ``depth`` blocks. The class token and
    position embedding keep their first ``E`` channels. A pure function: tensors are returned as views (the qkv
    weight as a new tensor) and nothing is modified.

    Args:
        state_dict: the supernet's tensors (parameters, or e.g. their gradients). Blocks beyond the subnet's
            depth and the step buffer may be present and are dropped; anything else unknown is an error.
        subnet: the subnet.
        head_dim: width of one head (the space's ``head_dim``).

    Raises:
        KeyError: naming a tensor the subnet needs that is missing.
        ValueError: on unknown keys or when the subnet does not fit the tensors' shapes.
    """
    cfg = AutoFormerSubnet.from_dict(subnet)
    sd = state_dict
    unknown = []
    for key in sd:
        m = _BLOCK_RE.match(key)
        if not (key in GLOBAL_KEYS or key in HEAD_KEYS or key == STEP_KEY or (m and m.group(2) in BLOCK_KEYS)):
            unknown.append(key)
    if unknown:
        raise ValueError(f"unexpected keys in an AutoFormer supernet state dict: {sorted(unknown)[:20]}; expected "
                         f"{list(GLOBAL_KEYS + HEAD_KEYS)}, '{STEP_KEY}' and blocks.<i>.{{{', '.join(BLOCK_KEYS)}}}")
    for key in GLOBAL_KEYS:
        if key not in sd and key != "patch_embed.proj.bias":
            raise KeyError(key)
    num_blocks = len({int(m.group(1)) for m in map(_BLOCK_RE.match, sd) if m})
    E_super = sd["cls_token"].shape[-1]
    E = cfg.embed_dim
    if E > E_super:
        raise ValueError(f"embed_dim={E} exceeds the supernet's width {E_super}")
    if cfg.depth > num_blocks:
        raise ValueError(f"depth={cfg.depth} exceeds the {num_blocks} blocks of the supernet state dict")

    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    out["cls_token"] = sd["cls_token"][..., :E]
    out["pos_embed"] = sd["pos_embed"][..., :E]
    out.update(with_prefix("patch_embed.", ElasticPatchEmbed.slice_state(take(sd, "patch_embed."), E)))
    for i in range(cfg.depth):
        p = f"blocks.{i}."

        def get(name: str) -> torch.Tensor:
            if p + name not in sd:
                raise KeyError(p + name)
            return sd[p + name]

        # the config's fit, named by its fields (the layers' rules would name only the tensor)
        qk = cfg.num_heads[i] * head_dim
        hidden = cfg.mlp_hidden(i)
        if 3 * qk > get("attn.qkv.weight").shape[0] or qk > get("attn.proj.weight").shape[1]:
            raise ValueError(f"num_heads[{i}]={cfg.num_heads[i]} needs a qkv width of {qk} but the supernet holds "
                             f"{get('attn.proj.weight').shape[1]}")
        if hidden > get("mlp.fc1.weight").shape[0]:
            raise ValueError(f"mlp_ratio[{i}]={cfg.mlp_ratio[i]} gives {hidden} hidden units but the supernet holds "
                             f"{get('mlp.fc1.weight').shape[0]}")
        if head_dim > get("attn.rel_pos_k.table_v").shape[1]:
            raise ValueError(f"head_dim={head_dim} exceeds the relative tables' width "
                             f"{get('attn.rel_pos_k.table_v').shape[1]}")
        try:
            block = ElasticAutoFormerBlock.slice_state(take(sd, p), E, cfg.num_heads[i], hidden, head_dim)
        except KeyError as e:
            raise KeyError(p + str(e.args[0])) from None
        out.update(with_prefix(p, block))
    out.update(with_prefix("norm.", ElasticLayerNorm.slice_state(take(sd, "norm."), E)))
    if "head.weight" in sd:
        out.update(with_prefix("head.", ElasticLinear.slice_state(take(sd, "head."), E, sd["head.weight"].shape[0])))
    return out


# ----------------------------------------------------------------------------------------- checkpoint filter
#: Original key (microsoft/Cream AutoFormer ``model/supernet_transformer.py``, ``Vision_TransformerSuper``) -> ours,
#: model level.
_ORIGINAL_GLOBAL = {
    "cls_token": "cls_token",
    "pos_embed": "pos_embed",
    "patch_embed_super.proj.weight": "patch_embed.proj.weight",
    "patch_embed_super.proj.bias": "patch_embed.proj.bias",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
    "head.weight": "head.weight",
    "head.bias": "head.bias",
}
#: Original key -> ours, inside ``blocks.<i>.``.
_ORIGINAL_BLOCK = {
    "attn_layer_norm.weight": "norm1.weight",
    "attn_layer_norm.bias": "norm1.bias",
    "attn.qkv.weight": "attn.qkv.weight",
    "attn.qkv.bias": "attn.qkv.bias",
    "attn.rel_pos_embed_k.embeddings_table_v": "attn.rel_pos_k.table_v",
    "attn.rel_pos_embed_k.embeddings_table_h": "attn.rel_pos_k.table_h",
    "attn.rel_pos_embed_v.embeddings_table_v": "attn.rel_pos_v.table_v",
    "attn.rel_pos_embed_v.embeddings_table_h": "attn.rel_pos_v.table_h",
    "attn.proj.weight": "attn.proj.weight",
    "attn.proj.bias": "attn.proj.bias",
    "ffn_layer_norm.weight": "norm2.weight",
    "ffn_layer_norm.bias": "norm2.bias",
    "fc1.weight": "mlp.fc1.weight",
    "fc1.bias": "mlp.fc1.bias",
    "fc2.weight": "mlp.fc2.weight",
    "fc2.bias": "mlp.fc2.bias",
}


def _is_original(state_dict: Mapping[str, Any]) -> bool:
    return "patch_embed_super.proj.weight" in state_dict


def convert_original_state_dict(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Rename the original supernet's keys to ours (tensors unchanged: still the supernet layout).

    Raises:
        ValueError: listing every key that is not an original AutoFormer supernet key.
    """
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    unknown = []
    for key, value in state_dict.items():
        m = _BLOCK_RE.match(key)
        if key in _ORIGINAL_GLOBAL:
            out[_ORIGINAL_GLOBAL[key]] = value
        elif m and m.group(2) in _ORIGINAL_BLOCK:
            out[f"blocks.{m.group(1)}.{_ORIGINAL_BLOCK[m.group(2)]}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"keys that are not part of an original AutoFormer supernet: {sorted(unknown)[:20]}; "
                         "this converter reads microsoft/Cream's Vision_TransformerSuper state dicts (official "
                         "flags: relative_position, change_qkv, abs_pos)")
    return out


def _strip_wrappers(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _resample_pos_embed(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> None:
    pos = state_dict.get("pos_embed")
    if pos is None or pos.shape[1] == model.pos_embed.shape[1]:
        return
    grid = model.patch_embed.grid_size
    _logger.info("resampling pos_embed from %d tokens to the %s patch grid", pos.shape[1], grid)
    state_dict["pos_embed"] = resample_abs_pos_embed(pos, new_size=list(grid), num_prefix_tokens=NUM_PREFIX_TOKENS)


def _check_against(state_dict: Mapping[str, torch.Tensor], model: nn.Module, what: str) -> None:
    """Every key and shape must match the model, except the classifier and the input conv's channels, which the
    loader adapts (timm's ``load_pretrained`` / :func:`load_original_checkpoint`)."""
    target = model.state_dict()
    missing = sorted(set(target) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(target))
    mismatched = []
    for key in sorted(set(target) & set(state_dict)):
        got, want = tuple(state_dict[key].shape), tuple(target[key].shape)
        if got == want or key in HEAD_KEYS:
            continue
        if key == "patch_embed.proj.weight" and got[:1] + got[2:] == want[:1] + want[2:]:
            continue
        mismatched.append(f"{key}: {got} vs model {want}")
    if missing or unexpected or mismatched:
        raise ValueError(f"{what} does not match {type(model).__name__}: missing keys {missing}, unexpected keys "
                         f"{unexpected}, shape mismatches {mismatched}. Create the model with the checkpoint's "
                         "space / subnet / img_size / patch_size.")


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Convert a checkpoint for ``model`` (a pure function; timm's ``pretrained_filter_fn``).

    Accepts the original AutoFormer supernet state dict (bare or under ``'model'``, as in the authors' ``.pth``
    files; microsoft/Cream key names), our supernet's state dict, or (for a static model) its own state dict.
    For an :class:`AutoFormerSupernet` the result is its state dict (the original has no step buffer: it starts
    at 0). For a static :class:`AutoFormer` a supernet checkpoint is sliced to the model's subnet with
    :func:`slice_subnet_state_dict`. The absolute position embedding is resampled if the patch grid differs.

    Raises:
        ValueError: listing missing, unexpected and mismatched keys, or when the subnet does not fit.
    """
    sd = _strip_wrappers(unwrap_state_dict(state_dict))
    from_supernet = _is_original(sd) or STEP_KEY in sd
    if _is_original(sd):
        sd = convert_original_state_dict(sd)
    if isinstance(model, AutoFormerSupernet):
        if STEP_KEY not in sd:
            sd[STEP_KEY] = torch.zeros((), dtype=torch.long)
        what = "supernet checkpoint"
    elif isinstance(model, AutoFormer):
        if from_supernet:
            sd = slice_subnet_state_dict(sd, model.subnet, head_dim=model.head_dim)
            what = f"supernet checkpoint sliced to {model.subnet}"
        else:
            what = "checkpoint"
    else:
        raise TypeError(f"checkpoint_filter_fn expects an AutoFormer or AutoFormerSupernet, got {type(model).__name__}")
    sd = OrderedDict(sd)
    if isinstance(model.head, nn.Identity):  # no classifier: the checkpoint's is not needed
        for key in HEAD_KEYS:
            sd.pop(key, None)
    _resample_pos_embed(sd, model)
    _check_against(sd, model, what)
    return sd


def load_original_checkpoint(model: nn.Module, checkpoint_path: str) -> None:
    """Load an authors' ``.pth`` (or any file :func:`checkpoint_filter_fn` accepts) into ``model``, strictly.

    The file is read with ``weights_only=True`` and the allow-list of :mod:`timm_nas._checkpoint` (the released
    files hold an ``argparse.Namespace``). A classifier of a different size keeps the model's own fresh
    initialisation; a different ``in_chans`` adapts the patch convolution as timm does.
    """
    sd = checkpoint_filter_fn(load_checkpoint_file(checkpoint_path), model)
    own = model.state_dict()
    for key in HEAD_KEYS:
        if key in sd and sd[key].shape != own[key].shape:
            _logger.info("classifier %s %s differs from the model's %s: keeping the model's own", key,
                         tuple(sd[key].shape), tuple(own[key].shape))
            sd[key] = own[key]
    conv = sd["patch_embed.proj.weight"]
    if conv.shape[1] != model.in_chans:
        sd["patch_embed.proj.weight"] = adapt_input_conv(model.in_chans, conv, base_chans=conv.shape[1])
    model.load_state_dict(sd, strict=True)


# ------------------------------------------------------------------------------------------------ pretrained cfgs
#: The authors' released supernets (microsoft/Cream AutoFormer/README.md, "Model Zoo").
_RELEASE = "https://github.com/silent-chen/AutoFormer-model-zoo/releases/download/v1.0/"


def _cfg(url: str = "", **kwargs: Any) -> Dict[str, Any]:
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "license": "mit",
        # The released .pth files hold an argparse.Namespace: read them through load_pretrained (allow-listed
        # weights_only unpickling) rather than torch.hub's plain weights_only load, which refuses them.
        "custom_load": bool(url),
        **kwargs,
    }


_AUTOFORMER = dict(paper_ids="arXiv:2107.00651", origin_url="https://github.com/microsoft/Cream/tree/main/AutoFormer")
# decemberzhou/TF_TAS has no licence file: no licence is claimed for its architectures
_TF_TAS = dict(paper_ids="arXiv:2203.12217", origin_url="https://github.com/decemberzhou/TF_TAS", license=None)


def _released(name: str, file: str) -> Dict[str, Dict[str, Any]]:
    """The release file's tags: ``ms_in1k`` (timm's source-prefixed convention, the default) and ``in1k`` (the
    earlier name, kept so that code calling it keeps loading)."""
    return {f"{name}.{tag}": _cfg(_RELEASE + file, **_AUTOFORMER) for tag in ("ms_in1k", "in1k")}


default_cfgs = generate_default_cfgs({
    "autoformer_supernet": _cfg(**_AUTOFORMER),
    **_released("autoformer_supernet_tiny", "supernet-tiny.pth"),
    **_released("autoformer_supernet_small", "supernet-small.pth"),
    **_released("autoformer_supernet_base", "supernet-base.pth"),
    "autoformer_subnet": _cfg(**_AUTOFORMER),
    # the published subnets are sliced from the released supernets (inherited weights, no retraining)
    **_released("autoformer_tiny", "supernet-tiny.pth"),
    **_released("autoformer_small", "supernet-small.pth"),
    **_released("autoformer_base", "supernet-base.pth"),
    "tf_tas_tiny": _cfg(**_TF_TAS),
    "tf_tas_small": _cfg(**_TF_TAS),
    "tf_tas_base": _cfg(**_TF_TAS),
})


# ------------------------------------------------------------------------------------------------------ builders
#: Entrypoints whose architecture comes from an argument (with a default), not from their name.
_GENERIC = ("autoformer_supernet", "autoformer_subnet")


def _create_autoformer_supernet(variant: str, pretrained: bool = False, **kwargs: Any) -> AutoFormerSupernet:
    if kwargs.get("features_only"):
        raise RuntimeError("features_only is not supported by AutoFormer supernets (depth and widths follow the sampled "
                           "subnet): build the subnet with supernet.extract(cfg), or autoformer_subnet, and take its "
                           "features")
    model = build_model(AutoFormerSupernet, variant, pretrained,
                                 pretrained_filter_fn=checkpoint_filter_fn, **kwargs)
    if variant in _GENERIC:
        # Record the architecture argument even when it came from the entrypoint's default (timm only records what
        # the caller passed), so an exported config.json rebuilds this exact model. Named variants are fixed by
        # their timm name.
        update_model_args(model, space=model.space.to_dict())
    return model


def _create_autoformer(variant: str, pretrained: bool = False, **kwargs: Any) -> AutoFormer:
    # features_only: timm's "getter" wrapper over forward_intermediates, as for timm's own ViTs
    feature_cfg = dict(feature_cls="getter", out_indices=kwargs.pop("out_indices", 3))
    model = build_model(AutoFormer, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                 feature_cfg=feature_cfg, **kwargs)
    if variant in _GENERIC and not kwargs.get("features_only"):
        update_model_args(model, subnet=model.subnet.to_dict())  # see _create_autoformer_supernet
    return model


def _registry_args(key: str) -> Dict[str, Any]:
    """The published architecture's ``model_args`` from ``registry/autoformer.json``."""
    return get_entry("autoformer", key)["model_args"]


# --------------------------------------------------------------------------------------------------- entrypoints
@register_model
def autoformer_supernet(pretrained: bool = False, **kwargs: Any) -> AutoFormerSupernet:
    """AutoFormer supernet of any space (``space=``: a preset name or a space dict; default ``'tiny'``)."""
    return _create_autoformer_supernet("autoformer_supernet", pretrained, **kwargs)


@register_model
def autoformer_supernet_tiny(pretrained: bool = False, **kwargs: Any) -> AutoFormerSupernet:
    """AutoFormer supernet-T (embed 256, 14 blocks, 4 heads, MLP 4.0)."""
    model_args = dict(space="tiny")
    return _create_autoformer_supernet("autoformer_supernet_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def autoformer_supernet_small(pretrained: bool = False, **kwargs: Any) -> AutoFormerSupernet:
    """AutoFormer supernet-S (embed 448, 14 blocks, 7 heads, MLP 4.0)."""
    model_args = dict(space="small")
    return _create_autoformer_supernet("autoformer_supernet_small", pretrained, **dict(model_args, **kwargs))


@register_model
def autoformer_supernet_base(pretrained: bool = False, **kwargs: Any) -> AutoFormerSupernet:
    """AutoFormer supernet-B (embed 640, 16 blocks, 10 heads, MLP 4.0)."""
    model_args = dict(space="base")
    return _create_autoformer_supernet("autoformer_supernet_base", pretrained, **dict(model_args, **kwargs))


@register_model
def autoformer_subnet(pretrained: bool = False, **kwargs: Any) -> AutoFormer:
    """A static AutoFormer subnet (``subnet=``: an AutoFormerSubnet dict; default AutoFormer-T)."""
    model_args = dict(subnet=_registry_args("autoformer_tiny")["subnet"])
    return _create_autoformer("autoformer_subnet", pretrained, **dict(model_args, **kwargs))


@register_model
def autoformer_tiny(pretrained: bool = False, **kwargs: Any) -> AutoFormer:
    """AutoFormer-T (5.9M params); weights: sliced from the released supernet-T."""
    return _create_autoformer("autoformer_tiny", pretrained, **dict(_registry_args("autoformer_tiny"), **kwargs))


@register_model
def autoformer_small(pretrained: bool = False, **kwargs: Any) -> AutoFormer:
    """AutoFormer-S (22.9M params); weights: sliced from the released supernet-S."""
    return _create_autoformer("autoformer_small", pretrained, **dict(_registry_args("autoformer_small"), **kwargs))


@register_model
def autoformer_base(pretrained: bool = False, **kwargs: Any) -> AutoFormer:
    """AutoFormer-B (53.7M params); weights: sliced from the released supernet-B."""
    return _create_autoformer("autoformer_base", pretrained, **dict(_registry_args("autoformer_base"), **kwargs))


@register_model
def tf_tas_tiny(pretrained: bool = False, **kwargs: Any) -> AutoFormer:
    """TF-TAS-T (6.2M params), searched training-free in AutoFormer's tiny space; no released weights."""
    return _create_autoformer("tf_tas_tiny", pretrained, **dict(_registry_args("tf_tas_tiny"), **kwargs))


@register_model
def tf_tas_small(pretrained: bool = False, **kwargs: Any) -> AutoFormer:
    """TF-TAS-S (23.9M params), searched training-free in AutoFormer's small space; no released weights."""
    return _create_autoformer("tf_tas_small", pretrained, **dict(_registry_args("tf_tas_small"), **kwargs))


@register_model
def tf_tas_base(pretrained: bool = False, **kwargs: Any) -> AutoFormer:
    """TF-TAS-B (56.5M params), searched training-free in AutoFormer's base space; no released weights."""
    return _create_autoformer("tf_tas_base", pretrained, **dict(_registry_args("tf_tas_base"), **kwargs))


# ------------------------------------------------------------------------------------------ family declaration
FAMILY = register_family(Family(
    name="autoformer",
    config=AutoFormerSubnet,
    space=AutoFormerSpace,
    static_cls=AutoFormer,
    static_entrypoint="autoformer_subnet",
    weight_sharing_cls=AutoFormerSupernet,
    weight_sharing_entrypoint="autoformer_supernet",
    weight_sharing_arg="space",
    checkpoint_filter=checkpoint_filter_fn,
    example_args=dict(space=dict(embed_dim=[32, 48], depth=[1, 2], num_heads=[1, 2], mlp_ratio=[1.0, 2.0],
                                 head_dim=16), img_size=32, patch_size=8, num_classes=10),
    convert_models=("autoformer_supernet_tiny", "autoformer_supernet_small", "autoformer_supernet_base"),
    datasets=("imagenet-1k",),
))
