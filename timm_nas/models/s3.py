"""S3 (AutoFormerV2): the weight-sharing supernet and the static subnet as timm models.

Paper: Chen et al., "Searching the Search Space of Vision Transformer", NeurIPS 2021 (arXiv:2111.14725).
Original code: https://github.com/microsoft/Cream/tree/main/AutoFormerV2 (``model/SSS.py``, commit 4a13c409), which
contains only the static network ``SSSTransformer`` and the three searched configs; timm ships those networks as
``swin_s3_{tiny,small,base}_224``. The supernet, its weight slicing and the search are ours: the slicing rules are
AutoFormer's first-k weight entanglement in the Swin layout (the "weight entanglement" section below), the contract
of the golden fixtures.

* ``S3Transformer`` (``s3_subnet``): the static network of one :class:`~timm_nas.spaces.S3Subnet`, built from timm's
  Swin blocks with a window, head count and MLP ratio per block and a free width per stage. Its state dict has
  timm's Swin layout, so timm's ``swin_s3_*`` weights load unchanged and the original's load through
  :func:`checkpoint_filter_fn`.
* ``S3Supernet`` (``s3_supernet``): holds the largest weights of an :class:`~timm_nas.spaces.S3Space` and runs any
  subnet of it (``use_subnet``, per-step sampling in training, ``extract``).
* The supernet's elastic layers (``S3Elastic*``, :mod:`timm_nas.layers.elastic`'s protocol) run their slice in
  ``forward``, state their rule once (``slice_state``) and hand back timm's static layer (``static_twin``);
  ``extract`` loads the static model layer by layer from them, and :func:`slice_s3_state_dict` applies the same
  rules to a state dict (loading a supernet checkpoint into a subnet).
"""

import contextlib
import math
import re
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (
    ClassifierHead,
    DropPath,
    PatchEmbed,
    calculate_drop_path_rates,
    get_device_dtype,
    to_2tuple,
    trunc_normal_,
    use_fused_attn,
)
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._input import update_model_args
from timm.models._manipulate import checkpoint, checkpoint_seq, named_apply
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock, WindowAttention
from timm.models.vision_transformer import get_init_weights_vit

from ._build import build_model
from .._checkpoint import load_checkpoint_file, unwrap_state_dict
from ..cost.s3 import _square_grid, _stage_grids
from ..family import Family, register_family
from ..layers.elastic import (
    ElasticLayerNorm,
    ElasticLinear,
    ElasticMlp,
    Tensors,
    leading,
    load_twin,
    own_tensors,
    require,
    slice_linear,
    take,
    with_prefix,
)
from ..layers.window_attention import check_window, window_and_shift, window_attention
from ..spaces.s3 import S3Space, S3Subnet, effective_window
from ._supernet import STEP_BUFFER, SupernetMixin

__all__ = ["S3Transformer", "S3Supernet", "slice_s3_state_dict", "checkpoint_filter_fn", "to_timm_layout",
           "resolve_subnet"]

#: The registry entry ``s3_subnet`` builds when no subnet is given: S3-T, the smallest published architecture.
DEFAULT_SUBNET = "s3_tiny"

#: Eval crop of the original pipeline: resize to ``int(256 / 224 * size)`` then centre-crop ``size``
#: (microsoft/Cream AutoFormerV2/lib/datasets.py ``build_transform``), i.e. crop_pct = 224 / 256.
EVAL_CROP_PCT = 224 / 256


def resolve_subnet(subnet: Union[str, Mapping[str, Any], S3Subnet, None]) -> S3Subnet:
    """:meth:`S3Subnet.resolve` (a registry name such as ``'s3_tiny'``, ``'S3-S'`` or ``'swin_s3_base_224'``, a
    config dict, ours or the original's ``EMBED_DIM``/``DEPTHS``/... form, or an :class:`S3Subnet`); ``None``
    gives S3-T."""
    return S3Subnet.resolve(DEFAULT_SUBNET if subnet is None else subnet)


def _check_fmt(output_fmt: str) -> None:
    if output_fmt not in ("NCHW", "NHWC"):
        raise ValueError(f"output_fmt={output_fmt!r} is not supported; choose 'NCHW' or 'NHWC' (timm's Swin layout)")


def _check_subnet_windows(cfg: S3Subnet, grids: Sequence[int]) -> None:
    for i, j in cfg.blocks():
        check_window(grids[i], cfg.window_size[i][j], f"window_size[{i}][{j}]")


def _cost_args(img_size: Union[int, Sequence[int]], patch_size: int, in_chans: int, num_classes: int,
               qkv_bias: bool) -> Dict[str, Any]:
    """``cost_args`` of a static S3 model: the keywords of :mod:`timm_nas.cost.s3`, JSON-native (the input is
    square)."""
    return dict(num_classes=num_classes, img_size=int(to_2tuple(img_size)[0]), patch_size=int(patch_size),
                in_chans=in_chans, qkv_bias=qkv_bias)


# ------------------------------------------------------------------------------------------------------ blocks
# ------------------------------------------------------------------------------------ weight entanglement
# S3 weight entanglement: how a smaller subnet takes its weights from the supernet's (pure functions).
#
# The rules follow AutoFormer's "first-k" weight entanglement (same authors) in the Swin tensor layout that
# ``AutoFormerV2/model/SSS.py`` and timm's ``swin_transformer.py`` use; they are the contract of the golden fixtures
# (``shared/fixtures/s3/cases.json``, ``weight_extraction_rules`` R1-R6):
#
# * R2 width: every tensor on a stage's residual stream keeps its first ``e`` channels.
# * R3 Q-K-V: the qkv rows are laid out ``[q | k | v]``, ``E`` rows each; a subnet keeps the first ``e`` rows of each.
# * R4 MLP: the first ``hidden`` units of ``fc1`` (rows) and ``fc2`` (columns).
# * R5 window: the centred ``(2w-1)^2`` crop of the ``(2W-1)^2`` relative-position table (the same relative offset
#   shares one bias), then the first ``num_heads`` columns.
# * R6 patch merging: the input is 4 quarter-grids of ``E`` channels each; keep the first ``e`` of each quarter.
#
# The supernet's sizes are read from the tensors' shapes, so these functions need only the subnet's sizes. Each
# ``slice_*`` function takes the parameters of one module (names relative to it, as in its ``state_dict``) and
# returns the subnet's, and is used unchanged by the supernet's forward pass, by ``extract`` and by checkpoint
# loading (:func:`timm_nas.models.s3.slice_s3_state_dict`). Slicing is differentiable; nothing is copied when a size
# is already full.
def _check(name: str, size: int, available: int) -> None:
    if size > available:
        raise ValueError(f"{name}: the subnet needs {size} but the supernet weight holds only {available}; "
                         "choose a subnet that fits the supernet (S3Space.check_fits says which value is too large)")
    if size <= 0:
        raise ValueError(f"{name}: size must be positive, got {size}")


def qkv_rows(t: torch.Tensor, dim: int) -> torch.Tensor:
    """R3: keep the first ``dim`` rows of each of q, k and v of a ``[q | k | v]`` weight ``(3E, ...)`` or bias."""
    big = t.shape[0] // 3
    _check("attn.qkv rows", dim, big)
    if dim == big:
        return t
    rows = t.reshape(3, big, *t.shape[1:])[:, :dim]  # (3, dim, ...)
    return rows.reshape(3 * dim, *t.shape[1:])


def merged_channels(t: torch.Tensor, dim: int) -> torch.Tensor:
    """R6: of a last axis made of 4 quarters of ``E`` channels (patch merging), keep the first ``dim`` of each."""
    big = t.shape[-1] // 4
    _check("downsample input channels", dim, big)
    if dim == big:
        return t
    return t.reshape(*t.shape[:-1], 4, big)[..., :dim].reshape(*t.shape[:-1], 4 * dim)


def table_window(table: torch.Tensor) -> int:
    """The window side ``W`` of a ``((2W-1)^2, heads)`` relative-position bias table."""
    side = math.isqrt(table.shape[0])
    if side * side != table.shape[0] or side % 2 == 0:
        raise ValueError(f"a relative-position table has (2W-1)^2 rows; got {table.shape[0]}")
    return (side + 1) // 2


def crop_rel_pos_table(table: torch.Tensor, window: int, num_heads: int) -> torch.Tensor:
    """R5: the table of an effective ``window`` (centred crop) for the first ``num_heads`` heads."""
    big = table_window(table)
    _check("relative-position window", window, big)
    _check("relative-position heads", num_heads, table.shape[1])
    if window == big:
        return table[:, :num_heads]
    side = 2 * big - 1
    lo, hi = big - window, big + window - 1  # offsets -(w-1)..(w-1) around the centre W-1
    return table.reshape(side, side, -1)[lo:hi, lo:hi, :num_heads].reshape((2 * window - 1) ** 2, num_heads)


def _first(t: torch.Tensor, *sizes: int) -> torch.Tensor:
    for axis, size in enumerate(sizes):
        _check(f"axis {axis} of a {tuple(t.shape)} weight", size, t.shape[axis])
    if all(size == t.shape[axis] for axis, size in enumerate(sizes)):
        return t
    return t[tuple(slice(0, s) for s in sizes)]


def paste_overlap(dst: torch.Tensor, src: torch.Tensor, key: str) -> torch.Tensor:
    """A copy of ``dst`` whose region shared with ``src`` (under the same rules) holds ``src``'s values.

    The inverse direction of slicing, for growing or shrinking a supernet (the space evolution rebuilds the supernet
    at the new largest choices and keeps the weights both share): first-k on every axis, q/k/v blocks separately for
    ``attn.qkv``, quarters separately for patch merging, and the common centre of relative-position tables.

    Args:
        dst: the new tensor (its values stay outside the overlap).
        src: the old tensor.
        key: the state-dict key (selects the rule).
    """
    out = dst.detach().clone()
    src = src.detach().to(dtype=out.dtype, device=out.device)
    if out.dim() == 0:
        return src.clone() if src.dim() == 0 else out
    if key.endswith("relative_position_bias_table"):
        big, old = table_window(out), table_window(src)
        w, h = min(big, old), min(out.shape[1], src.shape[1])
        o = out.view(2 * big - 1, 2 * big - 1, -1)
        s = src.reshape(2 * old - 1, 2 * old - 1, -1)
        o[big - w:big + w - 1, big - w:big + w - 1, :h] = s[old - w:old + w - 1, old - w:old + w - 1, :h]
        return out
    if key.endswith("attn.qkv.weight") or key.endswith("attn.qkv.bias"):
        o, s = out.view(3, out.shape[0] // 3, *out.shape[1:]), src.reshape(3, src.shape[0] // 3, *src.shape[1:])
    else:
        o, s = out, src
    if ".downsample." in key and (key.endswith("norm.weight") or key.endswith("norm.bias")
                                  or key.endswith("reduction.weight")):
        o = o.view(*o.shape[:-1], 4, o.shape[-1] // 4)
        s = s.reshape(*s.shape[:-1], 4, s.shape[-1] // 4)
    region = tuple(slice(0, min(a, b)) for a, b in zip(o.shape, s.shape))
    o[region] = s[region]
    return out


# --------------------------------------------------------------------------------------------- layers
# The supernet's elastic layers (timm_nas.layers.elastic's protocol): ``forward(x, <sizes>)`` runs the slice,
# ``slice_state(tensors, <sizes>)`` is the rule (R2-R6 above) and ``static_twin(<sizes>)`` hands back timm's static
# layer. Parameter names are those of timm's Swin layout, so a supernet at full size has exactly the state dict of
# the static model of its largest subnet.
class S3ElasticPatchEmbed(nn.Module):
    """Patch embedding (conv + LayerNorm, NHWC output) whose output width is chosen per forward."""

    def __init__(self, img_size: Union[int, Tuple[int, int]], patch_size: int, in_chans: int, embed_dim: int,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        self.grid_size = tuple(s // p for s, p in zip(self.img_size, self.patch_size))
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, **dd)
        self.norm = ElasticLayerNorm(embed_dim, **dd)

    def forward(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """``(B, C, H, W)`` image -> ``(B, H/p, W/p, dim)`` tokens."""
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"input size {tuple(x.shape[-2:])} does not match the model's img_size {self.img_size}; "
                             "build the model with img_size= the input size")
        bias = None if self.proj.bias is None else self.proj.bias[:dim]
        x = F.conv2d(x, self.proj.weight[:dim], bias, stride=self.patch_size).permute(0, 2, 3, 1)  # (B, H, W, dim)
        return self.norm(x)

    @staticmethod
    def slice_state(tensors: Tensors, dim: int) -> Dict[str, torch.Tensor]:
        """R2: ``proj`` and ``norm`` keep their first ``dim`` channels."""
        require(tensors, ("proj.weight", "norm.weight"), "")
        return {k: leading(v, dim, name=f"patch_embed.{k}") for k, v in tensors.items()}

    def static_state(self, dim: int) -> Dict[str, torch.Tensor]:
        return self.slice_state(own_tensors(self), dim)

    def static_twin(self, dim: int) -> PatchEmbed:
        """timm's ``PatchEmbed`` (LayerNorm, NHWC output) of width ``dim``."""
        twin = PatchEmbed(img_size=self.img_size, patch_size=self.patch_size, in_chans=self.proj.in_channels,
                          embed_dim=dim, norm_layer=nn.LayerNorm, strict_img_size=True, output_fmt="NHWC",
                          **get_device_dtype(self))
        return load_twin(twin, self.static_state(dim))


class S3ElasticPatchMerging(nn.Module):
    """Patch merging (2x2 neighbours -> LayerNorm(4C) -> bias-free Linear) with elastic input and output widths."""

    def __init__(self, dim: int, out_dim: int, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm = nn.LayerNorm(4 * dim, **dd)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False, **dd)

    def forward(self, x: torch.Tensor, out_dim: int) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, H/2, W/2, out_dim)``."""
        B, H, W, C = x.shape
        if H % 2 or W % 2:
            raise ValueError(f"patch merging needs an even token grid, got {H}x{W}; use an img_size whose patch grid "
                             "stays even until the last stage")
        # quarters in the order (even row, even col), (odd, even), (even, odd), (odd, odd), as SSS.py's x0..x3
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)  # (B, H/2, W/2, 4C)
        x = F.layer_norm(x, (4 * C,), merged_channels(self.norm.weight, C), merged_channels(self.norm.bias, C),
                         self.norm.eps)
        return F.linear(x, merged_channels(_first(self.reduction.weight, out_dim), C))

    @staticmethod
    def slice_state(tensors: Tensors, in_dim: int, out_dim: int) -> Dict[str, torch.Tensor]:
        """R6: ``norm.*`` (4 quarters) and ``reduction.weight`` (rows ``[:out_dim]``, quarters)."""
        out = {}
        for k, v in tensors.items():
            if k.startswith("norm."):
                out[k] = merged_channels(v, in_dim)
            elif k == "reduction.weight":
                out[k] = merged_channels(_first(v, out_dim), in_dim)
            else:
                raise KeyError(f"unexpected patch-merging parameter {k!r}")
        return out

    def static_state(self, in_dim: int, out_dim: int) -> Dict[str, torch.Tensor]:
        return self.slice_state(own_tensors(self), in_dim, out_dim)

    def static_twin(self, in_dim: int, out_dim: int) -> PatchMerging:
        """timm's ``PatchMerging(in_dim, out_dim)``."""
        twin = PatchMerging(in_dim, out_dim, **get_device_dtype(self))
        return load_twin(twin, self.static_state(in_dim, out_dim))


class S3ElasticAttention(nn.Module):
    """Window attention at its largest size (qkv, proj, relative-position table), run with any width, head count
    and effective window."""

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.fused_attn = use_fused_attn(experimental=True)  # as timm's WindowAttention
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * window_size - 1) ** 2, num_heads, **dd))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, **dd)
        self.attn_drop = attn_drop
        self.proj = ElasticLinear(dim, dim, **dd)
        self.proj_drop = proj_drop
        self.reset_parameters()

    def reset_parameters(self) -> None:
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, num_heads: int, window: int, shift: int) -> torch.Tensor:
        """``(B, H, W, e)`` tokens (``e`` read from ``x``) -> attention output of the same shape (no dropout after
        the projection: the block applies it)."""
        C = x.shape[-1]
        qkv_w = qkv_rows(_first(self.qkv.weight, self.qkv.weight.shape[0], C), C)
        qkv_b = None if self.qkv.bias is None else qkv_rows(self.qkv.bias, C)
        proj_w, proj_b = slice_linear(self.proj.weight, self.proj.bias, C, C)
        table = crop_rel_pos_table(self.relative_position_bias_table, window, num_heads)
        return window_attention(x, qkv_w, qkv_b, proj_w, proj_b, table, num_heads, window, shift,
                                attn_drop=self.attn_drop if self.training else 0.0, fused=self.fused_attn)

    @staticmethod
    def slice_state(tensors: Tensors, dim: int, num_heads: int, window: int) -> Dict[str, torch.Tensor]:
        """R2, R3, R5: the table's centred crop for ``window`` and first ``num_heads`` columns, the first ``dim``
        rows of each of q, k, v, ``proj[:dim, :dim]``."""
        require(tensors, ("relative_position_bias_table", "qkv.weight", "proj.weight"), "")
        out = {}
        for k, v in tensors.items():
            if k == "relative_position_bias_table":
                out[k] = crop_rel_pos_table(v, window, num_heads)
            elif k == "qkv.weight":
                out[k] = qkv_rows(_first(v, v.shape[0], dim), dim)
            elif k == "qkv.bias":
                out[k] = qkv_rows(v, dim)
            elif k == "proj.weight":
                out[k] = _first(v, dim, dim)
            elif k == "proj.bias":
                out[k] = _first(v, dim)
            else:
                raise KeyError(f"unexpected window-attention parameter {k!r}")
        return out

    def static_state(self, dim: int, num_heads: int, window: int) -> Dict[str, torch.Tensor]:
        return self.slice_state(own_tensors(self), dim, num_heads, window)

    def static_twin(self, dim: int, num_heads: int, window: int) -> WindowAttention:
        """timm's ``WindowAttention`` of width ``dim``, ``num_heads`` heads and ``window``."""
        twin = WindowAttention(dim, num_heads, window_size=window, qkv_bias=self.qkv.bias is not None,
                               attn_drop=self.attn_drop, proj_drop=self.proj_drop, **get_device_dtype(self))
        return load_twin(twin, self.static_state(dim, num_heads, window))


class S3ElasticBlock(nn.Module):
    """A pre-norm Swin block at its largest size; ``forward`` runs the slice for the active sizes.

    Args:
        dim: largest stage width (also the Q-K-V width).
        num_heads: largest head count (columns of the relative-position table).
        window_size: largest effective window of the block.
        mlp_hidden: largest MLP hidden width.
        qkv_bias: whether qkv has a bias.
        proj_drop: dropout after the attention projection and in the MLP.
        attn_drop: dropout on attention probabilities.
        drop_path: stochastic depth rate of the block.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_hidden: int, qkv_bias: bool = True,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm1 = ElasticLayerNorm(dim, **dd)
        self.attn = S3ElasticAttention(dim, num_heads, window_size, qkv_bias, attn_drop, proj_drop, **dd)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = ElasticLayerNorm(dim, **dd)
        self.mlp = ElasticMlp(dim, mlp_hidden, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, num_heads: int, window: int, shift: int, hidden: int) -> torch.Tensor:
        """Run the block on ``(B, H, W, e)`` tokens with ``num_heads`` heads, an effective ``window`` (and
        ``shift``) and ``hidden`` MLP units; ``e`` is read from ``x``."""
        drop = self.attn.proj_drop if self.training else 0.0
        y = self.attn(self.norm1(x), num_heads, window, shift)
        x = x + self.drop_path1(F.dropout(y, drop, self.training))
        return x + self.drop_path2(self.mlp(self.norm2(x), hidden, drop))

    @staticmethod
    def slice_state(tensors: Tensors, dim: int, num_heads: int, window: int, hidden: int) -> Dict[str, torch.Tensor]:
        """R2-R5 for one Swin block: each sub-layer's rule (``hidden``: the MLP width ``int(e * mlp_ratio)``)."""
        unknown = sorted(k for k in tensors if not k.startswith(("norm1.", "attn.", "norm2.", "mlp.")))
        if unknown:
            raise KeyError(f"unexpected Swin block parameter {unknown[0]!r}")
        return {**with_prefix("norm1.", ElasticLayerNorm.slice_state(take(tensors, "norm1."), dim)),
                **with_prefix("attn.", S3ElasticAttention.slice_state(take(tensors, "attn."), dim, num_heads, window)),
                **with_prefix("norm2.", ElasticLayerNorm.slice_state(take(tensors, "norm2."), dim)),
                **with_prefix("mlp.", ElasticMlp.slice_state(take(tensors, "mlp."), dim, hidden))}

    def static_state(self, dim: int, num_heads: int, window: int, hidden: int) -> Dict[str, torch.Tensor]:
        return self.slice_state(own_tensors(self), dim, num_heads, window, hidden)

    def static_twin(self, dim: int, num_heads: int, window: int, shift: int, hidden: int, grid: int,
                    drop_path: float = 0.0) -> SwinTransformerBlock:
        """timm's ``SwinTransformerBlock`` on a ``grid x grid`` map with the effective ``window`` and ``shift``."""
        ratio = hidden / dim if int(dim * (hidden / dim)) == hidden else (hidden + 0.5) / dim  # int(dim * r) == hidden
        twin = SwinTransformerBlock(dim=dim, input_resolution=(grid, grid), num_heads=num_heads, window_size=window,
                                    shift_size=shift, mlp_ratio=ratio, qkv_bias=self.attn.qkv.bias is not None,
                                    proj_drop=self.attn.proj_drop, attn_drop=self.attn.attn_drop, drop_path=drop_path,
                                    **get_device_dtype(self))
        return load_twin(twin, self.static_state(dim, num_heads, window, hidden))


class S3Stage(nn.Module):
    """One stage of the static network: optional patch merging at its start (timm's layout), then Swin blocks with
    a window, head count and MLP ratio each."""

    def __init__(
            self,
            dim: int,
            out_dim: int,
            grid: int,
            num_heads: Sequence[int],
            window_size: Sequence[int],
            mlp_ratio: Sequence[float],
            downsample: bool,
            qkv_bias: bool = True,
            proj_drop: float = 0.0,
            attn_drop: float = 0.0,
            drop_path: Sequence[float] = (),
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.grad_checkpointing = False
        self.downsample = PatchMerging(dim, out_dim, **dd) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinTransformerBlock(
                dim=out_dim,
                input_resolution=(grid, grid),
                num_heads=h,
                window_size=w,
                shift_size=0 if j % 2 == 0 else w // 2,  # from the requested window; the block clamps to the grid
                mlp_ratio=r,
                qkv_bias=qkv_bias,
                proj_drop=proj_drop,
                attn_drop=attn_drop,
                drop_path=drop_path[j] if drop_path else 0.0,
                **dd,
            )
            for j, (h, w, r) in enumerate(zip(num_heads, window_size, mlp_ratio))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class S3SuperStage(nn.Module):
    """One supernet stage at its largest size; ``forward`` runs the active width, depth and per-block sizes."""

    def __init__(
            self,
            dim: int,
            out_dim: int,
            grid: int,
            depth: int,
            num_heads: int,
            window_size: int,
            mlp_hidden: int,
            downsample: bool,
            qkv_bias: bool = True,
            proj_drop: float = 0.0,
            attn_drop: float = 0.0,
            drop_path: Sequence[float] = (),
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.grid = grid
        self.grad_checkpointing = False
        self.downsample = S3ElasticPatchMerging(dim, out_dim, **dd) if downsample else nn.Identity()
        self.blocks = nn.ModuleList([
            S3ElasticBlock(out_dim, num_heads, window_size, mlp_hidden, qkv_bias=qkv_bias, proj_drop=proj_drop,
                           attn_drop=attn_drop, drop_path=drop_path[j] if drop_path else 0.0, **dd)
            for j in range(depth)])

    def forward(self, x: torch.Tensor, cfg: S3Subnet, stage: int) -> torch.Tensor:
        if not isinstance(self.downsample, nn.Identity):
            x = self.downsample(x, cfg.embed_dim[stage])
        for j in range(cfg.depth[stage]):
            window, shift = window_and_shift(self.grid, cfg.window_size[stage][j], j)
            args = (cfg.num_heads[stage][j], window, shift, cfg.mlp_hidden(stage, j))
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(self.blocks[j], x, *args)
            else:
                x = self.blocks[j](x, *args)
        return x


class _S3Common:
    """Methods shared by the static and the supernet model (timm's Swin API)."""

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Relative-position tables get no weight decay (as timm's Swin and the original's
        ``no_weight_decay_keywords``)."""
        params = self.named_parameters()  # type: ignore[attr-defined]
        return {n for n, _ in params if "relative_position_bias_table" in n}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r"^patch_embed",
            blocks=r"^layers\.(\d+)" if coarse else [
                (r"^layers\.(\d+).downsample", (0,)),
                (r"^layers\.(\d+)\.\w+\.(\d+)", None),
                (r"^norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.layers:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def _reset_head(self, num_classes: int, global_pool: Optional[str], in_features: int) -> None:
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        self.cost_args["num_classes"] = num_classes  # type: ignore[attr-defined]
        self.head.reset(num_classes, pool_type=global_pool, in_features=in_features, **dd)
        if global_pool is not None:
            self.global_pool = global_pool


# ------------------------------------------------------------------------------------------------- models
class S3Transformer(_S3Common, nn.Module):
    """The static S3 network of one subnet config (the original's ``SSSTransformer``, in timm's Swin layout).

    Args:
        subnet: the architecture: a registry name, a dict (ours or the original's YAML form) or an
            :class:`S3Subnet` (default: S3-T).
        img_size: input side (square).
        patch_size: patch side.
        in_chans: input channels.
        num_classes: classifier outputs (0 for none).
        global_pool: ``'avg'`` or ``''``.
        qkv_bias: whether qkv has a bias.
        drop_rate: dropout before the classifier.
        proj_drop_rate: dropout after attention projections and in MLPs (the original's ``drop_rate``).
        attn_drop_rate: dropout on attention probabilities.
        drop_path_rate: stochastic depth, linear over all blocks (as the original).
        weight_init: timm's ViT init mode (``''``: trunc-normal 0.02 linears, as the original).
    """

    def __init__(
            self,
            subnet: Union[str, Mapping[str, Any], S3Subnet, None] = None,
            img_size: Union[int, Sequence[int]] = 224,
            patch_size: int = 4,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            qkv_bias: bool = True,
            drop_rate: float = 0.0,
            proj_drop_rate: float = 0.0,
            attn_drop_rate: float = 0.0,
            drop_path_rate: float = 0.1,
            weight_init: str = "",
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        cfg = resolve_subnet(subnet)
        grid = _square_grid(img_size, patch_size)
        grids = _stage_grids(grid, cfg.num_stages)
        _check_subnet_windows(cfg, grids)
        self.subnet = cfg
        self.cost_args = _cost_args(img_size, patch_size, in_chans, num_classes, qkv_bias)  # timm_nas.cost
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.output_fmt = "NHWC"
        self.num_layers = cfg.num_stages
        self.num_features = self.head_hidden_size = cfg.embed_dim[-1]

        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                      embed_dim=cfg.embed_dim[0], norm_layer=nn.LayerNorm, strict_img_size=True,
                                      output_fmt="NHWC", **dd)
        dpr = calculate_drop_path_rates(drop_path_rate, list(cfg.depth), stagewise=True)
        self.feature_info = []
        stages = []
        for i in range(cfg.num_stages):
            stages.append(S3Stage(
                cfg.embed_dim[max(i - 1, 0)], cfg.embed_dim[i], grids[i], cfg.num_heads[i], cfg.window_size[i],
                cfg.mlp_ratio[i], downsample=i > 0, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate, drop_path=dpr[i], **dd))
            self.feature_info.append(
                dict(num_chs=cfg.embed_dim[i], reduction=patch_size * 2 ** i, module=f"layers.{i}"))
        self.layers = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(self.num_features, **dd)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                                   input_fmt=self.output_fmt, **dd)
        if weight_init != "skip":
            named_apply(get_init_weights_vit(weight_init, needs_reset=False), self)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self._reset_head(num_classes, global_pool, self.num_features)
        self.head_hidden_size = self.head.num_features

    @torch.jit.ignore
    def set_input_size(self, img_size: Optional[Union[int, Tuple[int, int]]] = None,
                       patch_size: Optional[Union[int, Tuple[int, int]]] = None,
                       window_size: Any = None, **kwargs: Any) -> None:
        """Rebuild for another (square) input size, as timm's Swin: every block keeps the window the subnet
        searched (clamped to a smaller grid, as at construction; its relative-position table is resampled when the
        effective window changes) and its attention mask follows the new grid. The windows and the patch size are
        part of the searched architecture and stay; the new size is recorded for :func:`timm_nas.hub.export`.

        Raises:
            ValueError: ``patch_size`` / ``window_size`` given, or a window that does not tile the new grid.
        """
        from timm.models._input import update_model_input_size

        if patch_size is not None or window_size is not None or kwargs.get("window_ratio") is not None:
            raise ValueError("an S3 model changes img_size only: its patch size and windows are part of the searched "
                             "architecture (rebuild it with another subnet for other windows)")
        if img_size is None:
            return
        grids = _stage_grids(_square_grid(img_size, self.patch_embed.patch_size[0]), self.num_layers)
        _check_subnet_windows(self.subnet, grids)
        self.patch_embed.set_input_size(img_size=img_size)
        for i, stage in enumerate(self.layers):
            for j, block in enumerate(stage.blocks):
                w = self.subnet.window_size[i][j]
                block.set_input_size(feat_size=(grids[i], grids[i]), window_size=(w, w))
        self.cost_args["img_size"] = int(self.patch_embed.img_size[0])
        update_model_input_size(self, self.patch_embed.img_size)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs (NCHW, or NHWC) and the final features, as timm's Swin.

        Args:
            x: input images.
            indices: last n stages if an int, all if None, else the stage indices to return.
            norm: apply the final norm to the last stage's intermediate.
            stop_early: stop after the last requested stage.
            output_fmt: ``'NCHW'`` or ``'NHWC'`` (the stages' own layout).
            intermediates_only: return only the intermediates.
        """
        _check_fmt(output_fmt)
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        x = self.patch_embed(x)
        stages = self.layers if torch.jit.is_scripting() or not stop_early else self.layers[:max_index + 1]
        last = len(self.layers) - 1
        intermediates = []
        i = 0
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                inter = self.norm(x) if norm and i == last else x
                intermediates.append(inter.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else inter)
        if intermediates_only:
            return intermediates
        if i == last:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages (and norm / head) not needed for the given intermediates."""
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        prune_end = max_index < len(self.layers) - 1
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        self.layers = self.layers[:max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> unpooled normalised features ``(B, h, w, embed_dim[-1])`` (NHWC, as timm's Swin)."""
        x = self.patch_embed(x)
        x = self.layers(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def load_pretrained(self, checkpoint_path: str) -> None:
        """Load an authors' release file (timm's ``custom_load`` hook): see :func:`load_original_checkpoint`."""
        load_original_checkpoint(self, checkpoint_path)


class S3Supernet(SupernetMixin, _S3Common, nn.Module):
    """Weight-sharing S3 supernet: the largest weights of a space, running any subnet that fits them.

    In eval mode a forward runs the active subnet (by default the full weight shape); in training mode the sampling
    policy picks one per forward (see :class:`~timm_nas.models._supernet.SupernetMixin`).

    Args:
        space: a preset name (``'tiny'``, ``'small'``, ``'base'``), a space dict or an :class:`S3Space`.
        img_size: input side (square); every window choice must tile its stage's grid.
        patch_size: patch side.
        in_chans: input channels.
        num_classes: classifier outputs (0 for none).
        global_pool: ``'avg'`` or ``''``.
        qkv_bias: whether qkv has a bias.
        drop_rate: dropout before the classifier.
        proj_drop_rate: dropout after attention projections and in MLPs.
        attn_drop_rate: dropout on attention probabilities.
        drop_path_rate: stochastic depth, linear over the supernet's blocks (a block keeps its rate in every subnet).
        sampling: training-mode policy: ``'uniform'`` (default), ``'sandwich'`` or ``'fixed'``.
        seed: seed of the per-step sampling generators (default 0).
        unused_grad: ``'zero'`` (default) or ``'none'`` for parameters outside the sampled subnet.
        subnet: the initial active subnet (default: the full weight shape); with ``sampling='fixed'`` it is the one
            trained. It must fit the weights.
        weight_init: timm's ViT init mode.
    """

    def __init__(
            self,
            space: Union[str, Mapping[str, Any], S3Space] = "tiny",
            img_size: Union[int, Sequence[int]] = 224,
            patch_size: int = 4,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            qkv_bias: bool = True,
            drop_rate: float = 0.0,
            proj_drop_rate: float = 0.0,
            attn_drop_rate: float = 0.0,
            drop_path_rate: float = 0.1,
            sampling: Optional[str] = None,
            seed: Optional[int] = None,
            unused_grad: Optional[str] = None,
            subnet: Union[str, Mapping[str, Any], S3Subnet, None] = None,
            weight_init: str = "",
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        space = S3Space.resolve(space)
        grid = _square_grid(img_size, patch_size)
        grids = _stage_grids(grid, space.num_stages)
        for i, choices in enumerate(space.window_size):
            for w in choices:
                check_window(grids[i], w, f"window_size choice of stage {i}")
        self._grid = grid
        self._grids = grids
        self.init_supernet(space, sampling=sampling, seed=seed, unused_grad=unused_grad, subnet=subnet, device=device)
        self._build_args = dict(img_size=img_size, patch_size=patch_size, in_chans=in_chans, qkv_bias=qkv_bias,
                                drop_rate=drop_rate, proj_drop_rate=proj_drop_rate, attn_drop_rate=attn_drop_rate,
                                drop_path_rate=drop_path_rate)
        # The cost formulas' shape arguments: those of the static subnets (timm_nas.cost.model_cost).
        self.cost_args = _cost_args(img_size, patch_size, in_chans, num_classes, qkv_bias)
        full = space.full()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.output_fmt = "NHWC"
        self.num_layers = space.num_stages
        self.num_features = self.head_hidden_size = full.embed_dim[-1]

        self.patch_embed = S3ElasticPatchEmbed(img_size, patch_size, in_chans, full.embed_dim[0], **dd)
        dpr = calculate_drop_path_rates(drop_path_rate, list(full.depth), stagewise=True)
        self.feature_info = []
        stages = []
        for i in range(space.num_stages):
            e = full.embed_dim[i]
            stages.append(S3SuperStage(
                full.embed_dim[max(i - 1, 0)], e, grids[i], full.depth[i], space.heads(e),
                effective_window(grids[i], max(space.window_size[i])), int(e * max(space.mlp_ratio[i])),
                downsample=i > 0, qkv_bias=qkv_bias, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[i], **dd))
            self.feature_info.append(dict(num_chs=e, reduction=patch_size * 2 ** i, module=f"layers.{i}"))
        self.layers = nn.Sequential(*stages)
        self.norm = ElasticLayerNorm(self.num_features, **dd)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                                   input_fmt=self.output_fmt, **dd)
        if weight_init != "skip":
            named_apply(get_init_weights_vit(weight_init, needs_reset=False), self)
        self.set_active_subnet(self._active)  # num_features / feature_info follow the active subnet

    # -------------------------------------------------------------------------------------------- subnets
    @property
    def grid(self) -> int:
        """Patch grid side of the first stage."""
        return self._grid

    def check_subnet(self, cfg: Any) -> S3Subnet:
        """Return ``cfg`` as an :class:`S3Subnet` if the weights can run it at this input size, else raise
        ``ValueError`` naming the offending value (windows are compared after clamping to each stage's grid)."""
        cfg = self.space.check_fits(resolve_subnet(cfg), grid=self._grid)
        _check_subnet_windows(cfg, self._grids)
        return cfg

    def set_active_subnet(self, cfg: Any) -> None:
        super().set_active_subnet(cfg)
        self.num_features = self.head_hidden_size = self._active.embed_dim[-1]
        for info, e in zip(self.feature_info, self._active.embed_dim):
            info["num_chs"] = e

    @contextlib.contextmanager
    def use_subnet(self, cfg: Any) -> Iterator[S3Subnet]:  # type: ignore[override]
        """Context manager: run ``cfg`` (a config, dict or registry name) in eval forwards, restoring the previous
        active subnet (and ``num_features``) on exit."""
        previous = self._active
        self.set_active_subnet(cfg)
        try:
            yield self._active
        finally:
            self.set_active_subnet(previous)

    def unused_parameters(self, cfg: S3Subnet) -> List[nn.Parameter]:
        """Parameters of the blocks beyond each stage's depth (every other tensor is at least partly used)."""
        return [p for i, stage in enumerate(self.layers)
                for blk in stage.blocks[cfg.depth[i]:] for p in blk.parameters()]

    def subnet_state_dict(self, cfg: Any = None) -> Dict[str, torch.Tensor]:
        """The (detached) tensors subnet ``cfg`` (default: the active one) uses, in the static model's layout, cut
        by :func:`slice_s3_state_dict`."""
        cfg = self.check_subnet(self._active if cfg is None else cfg)
        return slice_s3_state_dict({k: v.detach() for k, v in self.state_dict().items()}, cfg, self._grid)

    def static_model_args(self, cfg: Any = None) -> Dict[str, Any]:
        """JSON-native constructor arguments of the static ``s3_subnet`` model of ``cfg`` (default: the active
        subnet; a config, its dict or a registry name that fits the weights)."""
        cfg = self.check_subnet(self._active if cfg is None else cfg)
        args = dict(subnet=cfg.to_dict(), num_classes=self.num_classes, global_pool=self.global_pool,
                    **self._build_args)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}

    def extract(self, cfg: Any = None, **kwargs: Any) -> S3Transformer:
        """A static ``s3_subnet`` model of ``cfg`` (default: the active subnet) with the supernet's weights copied
        in (loaded strictly), its constructor arguments recorded for ``config.json``.

        Args:
            cfg: the subnet (a config, its dict or a registry name); it must fit the weights.
            **kwargs: other ``s3_subnet`` arguments (e.g. ``drop_path_rate`` for fine-tuning).
        """
        import timm
        from timm.models._input import update_model_args

        args = dict(self.static_model_args(cfg), **kwargs)
        args = {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}
        dd = get_device_dtype(self)
        model = timm.create_model("s3_subnet", **args, **dd)
        # layer by layer: each static layer takes its elastic twin's slice (timm_nas.layers.elastic)
        cfg = self.check_subnet(self._active if cfg is None else cfg)
        load_twin(model.patch_embed, self.patch_embed.static_state(cfg.embed_dim[0]))
        for i, stage in enumerate(self.layers):
            e = cfg.embed_dim[i]
            if i > 0:
                load_twin(model.layers[i].downsample, stage.downsample.static_state(cfg.embed_dim[i - 1], e))
            for j in range(cfg.depth[i]):
                window, _ = window_and_shift(stage.grid, cfg.window_size[i][j], j)
                load_twin(model.layers[i].blocks[j],
                          stage.blocks[j].static_state(e, cfg.num_heads[i][j], window, cfg.mlp_hidden(i, j)))
        load_twin(model.norm, self.norm.static_state(cfg.embed_dim[-1]))
        if self.num_classes > 0:
            fc = ElasticLinear.slice_state(own_tensors(self.head.fc), cfg.embed_dim[-1], self.num_classes)
            load_twin(model.head.fc, fc)
        update_model_args(model, **args)
        return model.train(self.training)

    # ------------------------------------------------------------------------------------------- forward
    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        # the head keeps the supernet's largest input width; forward_head slices it to the active width
        self._reset_head(num_classes, global_pool, self.head.in_features)

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)  # elastic LayerNorm (or Identity once pruned)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs (NCHW, or NHWC) of the subnet this forward runs, and its final features (see
        :meth:`S3Transformer.forward_intermediates`)."""
        _check_fmt(output_fmt)
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        cfg = self.select_subnet()
        x = self.patch_embed(x, cfg.embed_dim[0])
        last = len(self.layers) - 1
        stop = max_index if stop_early else last
        intermediates = []
        for i in range(stop + 1):
            x = self.layers[i](x, cfg, i)
            if i in take_indices:
                inter = self._final_norm(x) if norm and i == last else x
                intermediates.append(inter.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else inter)
        if intermediates_only:
            if intermediates:
                intermediates[-1] = self.tie_unused(intermediates[-1], cfg)
            return intermediates
        if stop == last:
            x = self._final_norm(x)
        return self.tie_unused(x, cfg), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages (and norm / head) not needed for the given intermediates. A pruned supernet is a feature
        extractor: its later stages are gone, so ``extract`` no longer applies."""
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        prune_end = max_index < len(self.layers) - 1
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        self.layers = self.layers[:max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self._reset_head(0, "", self.num_features)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> unpooled normalised features ``(B, h, w, e)`` of the subnet this forward runs."""
        cfg = self.select_subnet()
        x = self.patch_embed(x, cfg.embed_dim[0])
        for i, stage in enumerate(self.layers):
            x = stage(x, cfg, i)
        return self.tie_unused(self._final_norm(x), cfg)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout, then the classifier's first ``e`` input columns (``e`` read from ``x``)."""
        x = self.head.global_pool(x)
        x = self.head.drop(x)
        if pre_logits or isinstance(self.head.fc, nn.Identity):
            return x
        fc = self.head.fc
        return F.linear(x, *slice_linear(fc.weight, fc.bias, x.shape[-1], fc.out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------- slicing
def _take(src: Mapping[str, torch.Tensor], prefix: str, used: Set[str]) -> Dict[str, torch.Tensor]:
    out = {k[len(prefix):]: v for k, v in src.items() if k.startswith(prefix)}
    if not out:
        raise KeyError(f"the state dict has no '{prefix}*' tensors; it does not hold this subnet "
                       "(too few stages or blocks?)")
    used.update(prefix + k for k in out)
    return out


def slice_s3_state_dict(state_dict: Mapping[str, torch.Tensor], subnet: Union[S3Subnet, Mapping[str, Any]],
                        grid: int) -> Dict[str, torch.Tensor]:
    """Cut the state dict of a subnet out of a (supernet or larger) state dict in timm's Swin layout.

    Rules R1-R6 of the golden fixtures: the first ``depth[i]`` blocks of each stage (R1), the first channels of
    every width (R2), the first ``e`` rows of each of q, k, v (R3), the first MLP units (R4), the centred crop of
    each block's relative-position table for the subnet's effective window (R5) and the first ``e`` channels of
    each quarter in patch merging (R6). The larger sizes are read from the tensors. Pure: the inputs are not
    modified; tensors are sliced views where possible (differentiable).

    Args:
        state_dict: parameters in timm's Swin layout (an ``S3Supernet`` / ``S3Transformer`` state dict, or one made
            by :func:`checkpoint_filter_fn`). The supernet's ``subnet_step`` buffer is dropped.
        subnet: the target architecture.
        grid: patch grid side of the first stage (``img_size // patch_size``), which fixes effective windows.

    Raises:
        KeyError: if a tensor the subnet needs is missing.
        ValueError: if the subnet needs more than a tensor holds, or the state dict has tensors this layout does
            not know (listed).
    """
    cfg = S3Subnet.from_dict(subnet)
    grids = _stage_grids(grid, cfg.num_stages)
    used: Set[str] = {STEP_BUFFER} & set(state_dict)
    out: Dict[str, torch.Tensor] = {}

    def put(prefix: str, tensors: Mapping[str, torch.Tensor]) -> None:
        out.update({prefix + k: v for k, v in tensors.items()})

    put("patch_embed.", S3ElasticPatchEmbed.slice_state(_take(state_dict, "patch_embed.", used), cfg.embed_dim[0]))
    for i in range(cfg.num_stages):
        e = cfg.embed_dim[i]
        if i > 0:
            prefix = f"layers.{i}.downsample."
            put(prefix, S3ElasticPatchMerging.slice_state(_take(state_dict, prefix, used), cfg.embed_dim[i - 1], e))
        for j in range(cfg.depth[i]):
            prefix = f"layers.{i}.blocks.{j}."
            window, _ = window_and_shift(grids[i], cfg.window_size[i][j], j)
            put(prefix, S3ElasticBlock.slice_state(_take(state_dict, prefix, used), e, cfg.num_heads[i][j], window,
                                    cfg.mlp_hidden(i, j)))
        # R1: blocks beyond the subnet's depth are dropped
        deeper = re.compile(rf"^layers\.{i}\.blocks\.(\d+)\.")
        used.update(k for k in state_dict if (m := deeper.match(k)) and int(m.group(1)) >= cfg.depth[i])
    put("norm.", ElasticLayerNorm.slice_state(_take(state_dict, "norm.", used), cfg.embed_dim[-1]))
    if any(k.startswith("head.") for k in state_dict):
        head = _take(state_dict, "head.fc.", used)
        put("head.fc.", ElasticLinear.slice_state(head, cfg.embed_dim[-1], head["weight"].shape[0]))
    unknown = sorted(set(state_dict) - used)
    if unknown:
        raise ValueError(f"{len(unknown)} tensors do not belong to an S3 network of {cfg.num_stages} stages in timm's "
                         f"Swin layout: {unknown[:8]}; convert original checkpoints with checkpoint_filter_fn first")
    return out


# --------------------------------------------------------------------------------------- checkpoint_filter_fn
#: Buffers of the original (``register_buffer`` is persistent in SSS.py); timm recomputes them.
_ORIGINAL_BUFFERS = ("relative_position_index", "attn_mask")


def to_timm_layout(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Original ``SSSTransformer`` keys -> timm's Swin keys (identity for timm / timm-nas state dicts)."""
    # the original merges patches at the END of stages 0..S-2, timm at the START of stages 1..S-1; stage 0 of a
    # timm-layout state dict never has a downsample
    original = any(k.startswith("layers.0.downsample.") for k in state_dict) or "head.weight" in state_dict
    out = {}
    for k, v in state_dict.items():
        if k.rsplit(".", 1)[-1] in _ORIGINAL_BUFFERS:
            continue
        if original:
            k = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", k)
            k = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", k)
        out[k] = v
    return out


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Convert a checkpoint for an S3 model: original S3 (``SSSTransformer``) checkpoints, timm's ``swin_s3_*``
    state dicts and timm-nas S3 supernet / subnet state dicts.

    Original keys are moved to timm's layout (patch merging from the end of stage i to the start of stage i+1,
    ``head.`` -> ``head.fc.``, the recomputed ``relative_position_index`` / ``attn_mask`` buffers dropped); then the
    model's own architecture is cut out with :func:`slice_s3_state_dict`, so a supernet checkpoint loads into any
    subnet (or smaller supernet) it contains. Every other key must belong to the model.
    """
    sd = to_timm_layout(unwrap_state_dict(state_dict))
    if isinstance(model, S3Supernet):
        step = sd.pop(STEP_BUFFER, None)
        out = slice_s3_state_dict(sd, model.space.full(), model.grid)
        out[STEP_BUFFER] = step if step is not None else torch.zeros((), dtype=torch.long)
        return out
    if isinstance(model, S3Transformer):
        return slice_s3_state_dict(sd, model.subnet, model.patch_embed.grid_size[0])
    raise TypeError(f"checkpoint_filter_fn converts checkpoints for S3 models, not {type(model).__name__}")


def load_original_checkpoint(model: nn.Module, checkpoint_path: str) -> None:
    """Load an authors' ``.pth`` (or any file :func:`checkpoint_filter_fn` accepts) into ``model``, strictly.

    The file is read with ``weights_only=True`` (:func:`timm_nas._checkpoint.load_checkpoint_file`: the release
    files carry training state beside the weights). A classifier of a different size keeps the model's own
    initialisation.
    """
    sd = checkpoint_filter_fn(load_checkpoint_file(checkpoint_path), model)
    own = model.state_dict()
    for key in ("head.fc.weight", "head.fc.bias"):
        if key in sd and key in own and sd[key].shape != own[key].shape:
            sd[key] = own[key]
    model.load_state_dict(sd, strict=True)


# ------------------------------------------------------------------------------------------------- cfgs
def _cfg(url: str = "", **kwargs: Any) -> Dict[str, Any]:
    return {
        "url": url, "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": EVAL_CROP_PCT, "interpolation": "bicubic", "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj", "classifier": "head.fc", "license": "mit",
        "paper_ids": "arXiv:2111.14725", "origin_url": "https://github.com/microsoft/Cream/tree/main/AutoFormerV2",
        **kwargs,
    }


#: The authors' released S3-T/S/B (microsoft/Cream AutoFormerV2/README.md, "Model Zoo"; registry/s3.json).
_RELEASE = "https://github.com/silent-chen/AutoFormerV2-model-zoo/releases/download/v1.0.0/"


def _released(size: str, file: str) -> Dict[str, Dict[str, Any]]:
    """The two sources of one released model: timm's Hub copy (default tag) and the authors' file."""
    return {
        # timm's swin_s3_<size>_224 weights: same keys and shapes as ours, loaded through checkpoint_filter_fn
        f"s3_{size}.ms_in1k": _cfg(hf_hub_id=f"timm/swin_s3_{size}_224.ms_in1k"),
        # the authors' file in the original SSSTransformer layout, read by S3Transformer.load_pretrained
        f"s3_{size}.ms_in1k_orig": _cfg(_RELEASE + file, custom_load=True),
    }


default_cfgs = generate_default_cfgs({
    "s3_subnet": _cfg(),
    **_released("tiny", "S3-T.pth"),
    **_released("small", "S3-S.pth"),
    **_released("base", "S3-B.pth"),
    # no supernet weights were released (see the s3_supernet_* docstrings)
    "s3_supernet": _cfg(),
    "s3_supernet_tiny": _cfg(),
    "s3_supernet_small": _cfg(),
    "s3_supernet_base": _cfg(),
})


def _create_s3(variant: str, model_cls: type, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    feature_cfg: Dict[str, Any] = dict(flatten_sequential=True, out_indices=out_indices)
    if model_cls is S3Supernet:
        # supernet stages take the subnet as an argument, so features come from forward_intermediates, in the
        # layout of the static model's (and timm's Swin's) feature maps: NHWC
        feature_cfg.update(feature_cls="getter", output_fmt="NHWC")
    model = build_model(model_cls, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                 feature_cfg=feature_cfg, **kwargs)
    # Record the architecture argument even when it is the entrypoint's default (timm records only what the caller
    # passed), so an exported config.json rebuilds this model. Named supernets are fixed by their timm name.
    # (A features_only wrapper has no architecture attribute; such a model is not exported.)
    if kwargs.get("features_only"):
        return model
    if variant == "s3_subnet":
        update_model_args(model, subnet=model.subnet.to_dict())
    elif variant == "s3_supernet":
        update_model_args(model, space=model.space.to_dict())
    return model


# ------------------------------------------------------------------------------------------- entrypoints
@register_model
def s3_subnet(pretrained: bool = False, **kwargs: Any) -> S3Transformer:
    """A static S3 network from ``subnet=`` (registry name or config dict; default S3-T, = timm's
    ``swin_s3_tiny_224``)."""
    model_args: Dict[str, Any] = dict()
    return _create_s3("s3_subnet", S3Transformer, pretrained, **dict(model_args, **kwargs))


@register_model
def s3_tiny(pretrained: bool = False, **kwargs: Any) -> S3Transformer:
    """S3-T (28.3M params, 82.1 top-1), = timm's ``swin_s3_tiny_224``; weights: timm's Hub copy (``.ms_in1k``) or
    the authors' release file (``.ms_in1k_orig``)."""
    model_args = dict(subnet="s3_tiny")
    return _create_s3("s3_tiny", S3Transformer, pretrained, **dict(model_args, **kwargs))


@register_model
def s3_small(pretrained: bool = False, **kwargs: Any) -> S3Transformer:
    """S3-S (49.7M params, 83.7 top-1), = timm's ``swin_s3_small_224``; weights as :func:`s3_tiny`."""
    model_args = dict(subnet="s3_small")
    return _create_s3("s3_small", S3Transformer, pretrained, **dict(model_args, **kwargs))


@register_model
def s3_base(pretrained: bool = False, **kwargs: Any) -> S3Transformer:
    """S3-B (71.1M params, 84.0 top-1), = timm's ``swin_s3_base_224``; weights as :func:`s3_tiny`."""
    model_args = dict(subnet="s3_base")
    return _create_s3("s3_base", S3Transformer, pretrained, **dict(model_args, **kwargs))


@register_model
def s3_supernet(pretrained: bool = False, **kwargs: Any) -> S3Supernet:
    """An S3 supernet of ``space=`` (preset name or space dict; default ``'tiny'``)."""
    model_args: Dict[str, Any] = dict()
    return _create_s3("s3_supernet", S3Supernet, pretrained, **dict(model_args, **kwargs))


@register_model
def s3_supernet_tiny(pretrained: bool = False, **kwargs: Any) -> S3Supernet:
    """S3 supernet of the ``'tiny'`` preset (around S3-T). No supernet weights were released: initialise it by
    training, or load a checkpoint of this supernet (ours, or any S3 state dict at least as large in every
    dimension; a smaller one such as S3-T's does not fill it), with ``pretrained_cfg_overlay=dict(file=...)``."""
    model_args = dict(space="tiny")
    return _create_s3("s3_supernet_tiny", S3Supernet, pretrained, **dict(model_args, **kwargs))


@register_model
def s3_supernet_small(pretrained: bool = False, **kwargs: Any) -> S3Supernet:
    """S3 supernet of the ``'small'`` preset (around S3-S). No supernet weights were released: initialise it by
    training, or load a checkpoint of this supernet (ours, or any S3 state dict at least as large in every
    dimension; a smaller one such as S3-S's does not fill it), with ``pretrained_cfg_overlay=dict(file=...)``."""
    model_args = dict(space="small")
    return _create_s3("s3_supernet_small", S3Supernet, pretrained, **dict(model_args, **kwargs))


@register_model
def s3_supernet_base(pretrained: bool = False, **kwargs: Any) -> S3Supernet:
    """S3 supernet of the ``'base'`` preset (around S3-B). No supernet weights were released: initialise it by
    training, or load a checkpoint of this supernet (ours, or any S3 state dict at least as large in every
    dimension; a smaller one such as S3-B's does not fill it), with ``pretrained_cfg_overlay=dict(file=...)``."""
    model_args = dict(space="base")
    return _create_s3("s3_supernet_base", S3Supernet, pretrained, **dict(model_args, **kwargs))


# ------------------------------------------------------------------------------------------ family declaration
FAMILY = register_family(Family(
    name="s3",
    config=S3Subnet,
    space=S3Space,
    static_cls=S3Transformer,
    static_entrypoint="s3_subnet",
    weight_sharing_cls=S3Supernet,
    weight_sharing_entrypoint="s3_supernet",
    weight_sharing_arg="space",
    checkpoint_filter=checkpoint_filter_fn,
    example_args=dict(space=dict(embed_dim=[[16], [16, 32], [16, 32], [16, 32]], depth=[[1], [1], [1, 2], [1]],
                                 head_dim=16,
                                 window_size=[[2, 4], [2, 4], [2], [1]], mlp_ratio=[1.0, 2.0]),
                      img_size=64, num_classes=10),
    # the released supernets, then the released searched (static) S3-T/S/B
    convert_models=("s3_supernet_tiny", "s3_supernet_small", "s3_supernet_base",
                    ("s3_subnet", {"subnet": "s3_tiny"}), ("s3_subnet", {"subnet": "s3_small"}),
                    ("s3_subnet", {"subnet": "s3_base"})),
    datasets=("imagenet-1k",),
))
