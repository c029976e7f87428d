"""Shifted-window attention as a function of its (sliced) weights (used by the S3 supernet).

The static S3 model uses timm's ``SwinTransformerBlock``; the supernet runs the same computation on weights
sliced for the active subnet, so it needs a functional form whose window, shift and head count are arguments.
Conventions are the original's (``AutoFormerV2/model/SSS.py``) and timm's, which agree:

* the shift of block ``j`` is ``window // 2`` on odd ``j`` (computed from the *requested* window), and a window at
  least as large as the token grid becomes global attention without shift;
* cyclic shift by ``-shift`` before attention and ``+shift`` after; windows are batch-major, then window row, then
  window column, tokens row-major inside a window;
* logits ``(q * head_dim**-0.5) @ k^T + relative-position bias + mask``, the mask being ``-100`` between tokens
  of different shifted regions (:data:`MASK_VALUE`).
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import get_relative_position_index, window_partition, window_reverse

__all__ = ["MASK_VALUE", "window_and_shift", "check_window", "relative_position_index", "shifted_window_mask",
           "window_attention"]

#: Logit offset between tokens of different regions of a shifted window: ``masked_fill(attn_mask != 0, -100.0)``
#: in SSS.py ``SwinTransformerBlock.__init__`` (and timm's ``get_attn_mask``).
MASK_VALUE = -100.0


def window_and_shift(grid: int, window: int, block_index: int) -> tuple[int, int]:
    """The effective ``(window, shift)`` of block ``block_index`` of a stage on a ``grid x grid`` token map."""
    shift = 0 if block_index % 2 == 0 else window // 2
    if grid <= window:
        return grid, 0
    return window, shift


def check_window(grid: int, window: int, where: str) -> None:
    """Raise ``ValueError`` unless the effective window tiles the grid (the original has no padding)."""
    eff, _ = window_and_shift(grid, window, 0)
    if grid % eff:
        raise ValueError(f"{where}: window {window} does not divide the {grid}x{grid} token grid; choose a window "
                         f"that divides {grid}, or one >= {grid} for global attention")


@lru_cache(maxsize=64)
def relative_position_index(window: int, device: torch.device) -> torch.Tensor:
    """``(w*w, w*w)`` index into a ``((2w-1)^2, heads)`` table: ``(dy + w - 1) * (2w - 1) + (dx + w - 1)``."""
    return get_relative_position_index(window, window, device=device)


@lru_cache(maxsize=64)
def shifted_window_mask(height: int, width: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """``(num_windows, w*w, w*w)`` float32 mask of a ``height x width`` map: 0 within a region of the shifted map,
    :data:`MASK_VALUE` across regions."""
    labels = torch.zeros((1, height, width, 1), device=device)
    spans = ((0, -window), (-window, -shift), (-shift, None))
    region = 0
    for h0, h1 in spans:
        for w0, w1 in spans:
            labels[:, h0:h1, w0:w1, :] = region
            region += 1
    windows = window_partition(labels, (window, window)).reshape(-1, window * window)  # (nW, n)
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, MASK_VALUE)


def window_attention(
        x: torch.Tensor,
        qkv_weight: torch.Tensor,
        qkv_bias: torch.Tensor | None,
        proj_weight: torch.Tensor,
        proj_bias: torch.Tensor | None,
        table: torch.Tensor,
        num_heads: int,
        window: int,
        shift: int,
        attn_drop: float = 0.0,
        fused: bool = False,
) -> torch.Tensor:
    """(Shifted) window multi-head self-attention of a ``(B, H, W, C)`` map, ``C`` = the Q-K-V width.

    Args:
        x: normalised input tokens ``(B, H, W, C)``.
        qkv_weight: ``(3C, C)`` in the ``[q | k | v]`` layout; ``qkv_bias`` its ``(3C,)`` bias or ``None``.
        proj_weight: ``(C, C)`` output projection; ``proj_bias`` its bias or ``None``.
        table: ``((2w-1)^2, num_heads)`` relative-position bias of the effective window ``w``.
        num_heads: head count (a head is ``C // num_heads`` wide).
        window: effective window side (divides ``H`` and ``W``).
        shift: cyclic shift (0 for none).
        attn_drop: dropout on the attention probabilities (pass 0 in eval).
        fused: use ``scaled_dot_product_attention`` (timm's ``use_fused_attn``); same numbers up to rounding.
    """
    B, H, W, C = x.shape
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    n = window * window
    xw = window_partition(x, (window, window)).reshape(-1, n, C)  # (B*nW, n, C)
    qkv = F.linear(xw, qkv_weight, qkv_bias).reshape(xw.shape[0], n, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B*nW, heads, n, head_dim)
    index = relative_position_index(window, x.device)
    bias = table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # (1, heads, n, n)
    mask = shifted_window_mask(H, W, window, shift, x.device).to(x.dtype) if shift else None
    num_win = (H // window) * (W // window)
    if fused:
        attn_mask = bias
        if mask is not None:
            attn_mask = (bias.unsqueeze(1) + mask.unsqueeze(1).unsqueeze(0)).expand(B, -1, -1, -1, -1)
            attn_mask = attn_mask.reshape(-1, num_heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=attn_drop)
    else:
        q = q * q.shape[-1] ** -0.5
        attn = q @ k.transpose(-2, -1) + bias
        if mask is not None:
            attn = attn.view(-1, num_win, num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, num_heads, n, n)
        attn = attn.softmax(dim=-1)
        if attn_drop:
            attn = F.dropout(attn, attn_drop, training=True)
        out = attn @ v
    out = out.transpose(1, 2).reshape(-1, n, C)
    out = F.linear(out, proj_weight, proj_bias)
    out = window_reverse(out.reshape(-1, window, window, C), (window, window), H, W)  # (B, H, W, C)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    return out
