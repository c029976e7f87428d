"""Elastic linear layer: one weight of the largest shape, any leading slice of it at run time.

Weight entanglement as in AutoFormer (microsoft/Cream ``AutoFormer/model/module/Linear_super.py``): a subnet of
input width ``i`` and output width ``o`` uses ``weight[:o, :i]`` and ``bias[:o]``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ElasticLinear", "slice_linear"]


def slice_linear(
        weight: torch.Tensor,
        bias: Optional[torch.Tensor],
        in_features: int,
        out_features: int,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The leading ``(out_features, in_features)`` block of a linear weight and ``bias[:out_features]``."""
    return weight[:out_features, :in_features], None if bias is None else bias[:out_features]


class ElasticLinear(nn.Linear):
    """``nn.Linear`` holding the largest weight; the input width is read from the tensor and the output width
    is a forward argument (default: all outputs)."""

    def forward(self, x: torch.Tensor, out_features: Optional[int] = None) -> torch.Tensor:
        out = self.out_features if out_features is None else out_features
        weight, bias = slice_linear(self.weight, self.bias, x.shape[-1], out)
        return F.linear(x, weight, bias)
