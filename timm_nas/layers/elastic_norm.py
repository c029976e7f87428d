"""Elastic LayerNorm: the largest affine parameters, normalising the leading ``x.shape[-1]`` of them.

As AutoFormer's ``LayerNormSuper`` (microsoft/Cream ``AutoFormer/model/module/layernorm_super.py``): a subnet of
width ``E`` uses ``weight[:E]``, ``bias[:E]`` and the module's ``eps`` (PyTorch's default 1e-5).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ElasticLayerNorm"]


class ElasticLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the largest width; normalises the input's own (smaller or equal) width."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1]
        weight = None if self.weight is None else self.weight[:width]
        bias = None if self.bias is None else self.bias[:width]
        return F.layer_norm(x, (width,), weight, bias, self.eps)
