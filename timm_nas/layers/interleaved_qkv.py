"""AutoFormer's entangled qkv projection: row-interleaved q/k/v weight, contiguous bias.

The original (microsoft/Cream ``AutoFormer/model/module/qkv_super.py``) holds one ``Linear(E_super, 3 E_super)``
and, for a subnet of input width ``E`` and qk width ``qk`` (heads x head dim), takes input columns ``[:E]`` and
output rows ``0, 3, 6, ...`` as q, ``1, 4, 7, ...`` as k and ``2, 5, 8, ...`` as v (each up to ``3 qk``),
concatenated ``[q; k; v]``. The bias is NOT interleaved: it is the contiguous ``bias[:3 qk]``. That mismatch is
what the released weights were trained with, so it is reproduced exactly.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["InterleavedQKV", "slice_interleaved_qkv", "QKV_INTERLEAVE"]

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


class InterleavedQKV(nn.Linear):
    """``nn.Linear(E_super, 3 E_super)`` whose forward runs :func:`slice_interleaved_qkv` for a given qk width.

    The output is ``(..., 3 qk)`` laid out ``[q; k; v]``, like a timm ``Attention.qkv`` of that width.
    """

    def forward(self, x: torch.Tensor, qk_dim: Optional[int] = None) -> torch.Tensor:
        qk = self.out_features // QKV_INTERLEAVE if qk_dim is None else qk_dim
        weight, bias = slice_interleaved_qkv(self.weight, self.bias, x.shape[-1], qk)
        return F.linear(x, weight, bias)
