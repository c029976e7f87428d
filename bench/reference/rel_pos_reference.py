"""The original explicit formulation of AutoFormer's relative-position attention, kept as the reference for the
exactness tests (``tests/test_rel_pos_exact.py``) and for speed comparisons.

A direct transcription of microsoft/Cream ``AutoFormer/model/module/multihead_super.py``
(``RelativePosition2D_super`` and ``AttentionSuper.forward`` with ``relative_position=True``): the index maps are
rebuilt here from the original rule (not taken from ``timm_nas``), the ``(N+1, N+1, d)`` embeddings are gathered
from the two tables, and both relative terms are batched matmuls over the query index. Plain functions, no caching,
no tricks: correctness over speed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["relative_index", "relative_embeddings", "rel_pos_attention_reference"]


def relative_index(grid_size: tuple[int, int], max_distance: int, device: torch.device | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N+1, N+1)`` vertical and horizontal table indices: row/column offsets (key minus query) clipped to
    ``[-m, m]`` and shifted by ``m + 1``; every pair involving the class token (row 0 / column 0) uses index 0."""
    h, w = grid_size
    pos = torch.arange(h * w, device=device)
    rows, cols = pos // w, pos % w
    iv = torch.zeros(h * w + 1, h * w + 1, dtype=torch.long, device=device)
    ih = torch.zeros_like(iv)
    iv[1:, 1:] = (rows[None, :] - rows[:, None]).clamp(-max_distance, max_distance) + max_distance + 1
    ih[1:, 1:] = (cols[None, :] - cols[:, None]).clamp(-max_distance, max_distance) + max_distance + 1
    return iv, ih


def relative_embeddings(table_v: torch.Tensor, table_h: torch.Tensor, grid_size: tuple[int, int],
                        max_distance: int) -> torch.Tensor:
    """``(N+1, N+1, d)``: ``table_v[iv] + table_h[ih]`` for every (query, key) pair."""
    iv, ih = relative_index(grid_size, max_distance, table_v.device)
    return table_v[iv] + table_h[ih]


def rel_pos_attention_reference(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        tables_k: tuple[torch.Tensor, torch.Tensor],
        tables_v: tuple[torch.Tensor, torch.Tensor],
        grid_size: tuple[int, int],
        max_distance: int,
        scale: float,
        attn_drop: float = 0.0,
        training: bool = False,
) -> torch.Tensor:
    """The original attention with relative terms.

    Args:
        q, k, v: ``(B, h, N, d)`` with ``N = H W + 1``.
        tables_k, tables_v: ``(table_v, table_h)`` of the key / value embeddings, each ``(2m + 2, d)``.
        grid_size: ``(H, W)``.
        max_distance: clip distance ``m``.
        scale: logit scale (both logit terms).
        attn_drop, training: dropout on the attention weights.

    Returns:
        ``(B, N, h d)``.
    """
    B, H, N, D = q.shape
    rel_k = relative_embeddings(*tables_k, grid_size, max_distance)  # (N, N, d)
    rel_v = relative_embeddings(*tables_v, grid_size, max_distance)
    attn = (q @ k.transpose(-2, -1)) * scale
    q_by_query = q.permute(2, 0, 1, 3).reshape(N, B * H, D)  # (N, B*h, d)
    attn = attn + (q_by_query @ rel_k.transpose(1, 2)).transpose(0, 1).reshape(B, H, N, N) * scale
    attn = attn.softmax(dim=-1)
    attn = F.dropout(attn, attn_drop, training)
    out = attn @ v
    attn_by_query = attn.permute(2, 0, 1, 3).reshape(N, B * H, N)  # (N, B*h, N)
    out = out + (attn_by_query @ rel_v).transpose(0, 1).reshape(B, H, N, D)
    return out.transpose(1, 2).reshape(B, N, H * D)
