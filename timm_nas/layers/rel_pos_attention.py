"""Multi-head self-attention with AutoFormer's 2-D relative position terms on keys and values.

Source: ``AttentionSuper.forward`` in microsoft/Cream ``AutoFormer/model/module/multihead_super.py`` (official
setting ``change_qkv``: head dim fixed, qk width = heads x head dim, scale = head_dim ** -0.5). With relative
embeddings ``R_k, R_v`` of shape ``(N, N, d)``::

    attn = softmax(q k^T * scale + (q . R_k[i, j]) * scale)
    out_i = sum_j attn_ij v_j + sum_j attn_ij R_v[i, j]

Both relative terms are batched matmuls over the query index, as in the original (so their multiply-accumulate
count is ``N^2 d`` each per head, the count the original's measured FLOPs include). Attention probabilities are
needed for the value term, so the attention is computed explicitly (no fused SDPA kernel).

:class:`RelPosAttention` is the static layer (timm's ``[q; k; v]`` qkv layout); :class:`ElasticRelPosAttention`
is the supernet layer (AutoFormer's interleaved qkv weight, heads chosen per forward).
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .elastic_linear import ElasticLinear
from .interleaved_qkv import InterleavedQKV
from .relative_position import MAX_RELATIVE_POSITION, RelativePosition2D

__all__ = ["rel_pos_attention", "RelPosAttention", "ElasticRelPosAttention"]


def rel_pos_attention(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rel_k: torch.Tensor,
        rel_v: torch.Tensor,
        scale: float,
        attn_drop: float = 0.0,
        training: bool = False,
) -> torch.Tensor:
    """Attention with relative position terms.

    Args:
        q, k, v: ``(B, h, N, d)``.
        rel_k, rel_v: ``(N, N, d)`` relative embeddings of keys and values.
        scale: logit scale.
        attn_drop: dropout probability on the attention weights (training only).
        training: whether dropout is active.

    Returns:
        ``(B, N, h * d)``, heads concatenated.
    """
    B, H, N, D = q.shape
    attn = (q @ k.transpose(-2, -1)) * scale  # (B, h, N, N)
    q_by_query = q.permute(2, 0, 1, 3).reshape(N, B * H, D)  # (N, B*h, d)
    attn = attn + (q_by_query @ rel_k.transpose(1, 2)).transpose(0, 1).reshape(B, H, N, N) * scale
    attn = attn.softmax(dim=-1)
    attn = F.dropout(attn, attn_drop, training)
    out = attn @ v  # (B, h, N, d)
    attn_by_query = attn.permute(2, 0, 1, 3).reshape(N, B * H, N)  # (N, B*h, N)
    out = out + (attn_by_query @ rel_v).transpose(0, 1).reshape(B, H, N, D)
    return out.transpose(1, 2).reshape(B, N, H * D)


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
        self.rel_pos_k = RelativePosition2D(head_dim, max_relative_position, grid_size, **dd)
        self.rel_pos_v = RelativePosition2D(head_dim, max_relative_position, grid_size, **dd)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(qk, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, h, N, d) each
        x = rel_pos_attention(q, k, v, self.rel_pos_k(), self.rel_pos_v(), self.scale, self.attn_drop, self.training)
        return self.proj_drop(self.proj(x))


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
        rel_k = self.rel_pos_k(self.head_dim)
        rel_v = self.rel_pos_v(self.head_dim)
        x = rel_pos_attention(q, k, v, rel_k, rel_v, self.scale, self.attn_drop, self.training)
        return self.proj_drop(self.proj(x, E))
