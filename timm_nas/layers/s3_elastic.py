"""Elastic S3 layers: they own the supernet's largest weights and run any smaller subnet's slice of them.

Each module keeps the parameter names of its static counterpart in timm's Swin layout (``patch_embed.proj``,
``blocks.j.attn.qkv``, ``downsample.reduction``, ...), so a supernet at full size has exactly the state dict of the
static model of its largest subnet. The active sizes arrive as ``forward`` arguments, input widths are read from
the tensor, and the weights are cut by the same :mod:`timm_nas.layers.s3_slicing` functions that ``extract`` and
checkpoint loading use.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, to_2tuple, trunc_normal_, use_fused_attn

from .s3_slicing import slice_block, slice_downsample, slice_patch_embed
from .s3_window import window_attention

__all__ = ["S3ElasticPatchEmbed", "S3ElasticPatchMerging", "S3ElasticAttention", "S3ElasticBlock"]


class S3ElasticPatchEmbed(nn.Module):
    """Patch embedding (conv + LayerNorm, NHWC output) whose output width is chosen per forward."""

    def __init__(self, img_size: int | tuple[int, int], patch_size: int, in_chans: int, embed_dim: int,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        self.grid_size = tuple(s // p for s, p in zip(self.img_size, self.patch_size))
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, **dd)
        self.norm = nn.LayerNorm(embed_dim, **dd)

    def forward(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """``(B, C, H, W)`` image -> ``(B, H/p, W/p, dim)`` tokens."""
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"input size {tuple(x.shape[-2:])} does not match the model's img_size {self.img_size}; "
                             "build the model with img_size= the input size")
        p = slice_patch_embed(dict(self.named_parameters()), dim)
        x = F.conv2d(x, p["proj.weight"], p["proj.bias"], stride=self.patch_size).permute(0, 2, 3, 1)  # (B, H, W, dim)
        return F.layer_norm(x, (dim,), p["norm.weight"], p["norm.bias"], self.norm.eps)


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
        p = slice_downsample(dict(self.named_parameters()), C, out_dim)
        # quarters in the order (even row, even col), (odd, even), (even, odd), (odd, odd), as SSS.py's x0..x3
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)  # (B, H/2, W/2, 4C)
        x = F.layer_norm(x, (4 * C,), p["norm.weight"], p["norm.bias"], self.norm.eps)
        return F.linear(x, p["reduction.weight"])


class S3ElasticAttention(nn.Module):
    """The weights of a window attention at its largest size (qkv, proj, relative-position table)."""

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * window_size - 1) ** 2, num_heads, **dd))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, **dd)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = proj_drop
        self.reset_parameters()

    def reset_parameters(self) -> None:
        trunc_normal_(self.relative_position_bias_table, std=0.02)


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
        self.fused_attn = use_fused_attn(experimental=True)  # as timm's WindowAttention
        self.norm1 = nn.LayerNorm(dim, **dd)
        self.attn = S3ElasticAttention(dim, num_heads, window_size, qkv_bias, attn_drop, proj_drop, **dd)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, **dd)
        self.mlp = Mlp(dim, mlp_hidden, drop=proj_drop, **dd)  # fc1 / fc2 hold the weights
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, num_heads: int, window: int, shift: int, hidden: int) -> torch.Tensor:
        """Run the block on ``(B, H, W, e)`` tokens with ``num_heads`` heads, an effective ``window`` (and
        ``shift``) and ``hidden`` MLP units; ``e`` is read from ``x``."""
        C = x.shape[-1]
        p = slice_block(dict(self.named_parameters()), C, num_heads, window, hidden)
        drop = self.attn.proj_drop if self.training else 0.0
        y = F.layer_norm(x, (C,), p["norm1.weight"], p["norm1.bias"], self.norm1.eps)
        y = window_attention(y, p["attn.qkv.weight"], p.get("attn.qkv.bias"), p["attn.proj.weight"],
                             p["attn.proj.bias"], p["attn.relative_position_bias_table"], num_heads, window, shift,
                             attn_drop=self.attn.attn_drop if self.training else 0.0, fused=self.fused_attn)
        x = x + self.drop_path1(F.dropout(y, drop, self.training))
        y = F.layer_norm(x, (C,), p["norm2.weight"], p["norm2.bias"], self.norm2.eps)
        y = F.dropout(self.mlp.act(F.linear(y, p["mlp.fc1.weight"], p["mlp.fc1.bias"])), drop, self.training)
        y = F.dropout(F.linear(y, p["mlp.fc2.weight"], p["mlp.fc2.bias"]), drop, self.training)
        return x + self.drop_path2(y)
