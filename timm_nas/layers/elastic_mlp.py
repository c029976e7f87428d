"""Elastic MLP: ``fc1 -> GELU -> fc2`` of the largest hidden width, run with any hidden width.

As AutoFormer's block MLP (microsoft/Cream ``AutoFormer/model/supernet_transformer.py``): a subnet of width ``E``
and hidden width ``H = int(E * ratio)`` uses ``fc1[:H, :E]`` and ``fc2[:E, :H]``; GELU is the exact (erf) one.
Dropout after the activation and after ``fc2`` takes its probability per call (the original scales it with the
sampled width).
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .elastic_linear import ElasticLinear

__all__ = ["ElasticMlp"]


class ElasticMlp(nn.Module):
    """Args:
        in_features: the largest embedding width.
        hidden_features: the largest hidden width.
    """

    def __init__(
            self,
            in_features: int,
            hidden_features: int,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.fc1 = ElasticLinear(in_features, hidden_features, device=device, dtype=dtype)
        self.act = nn.GELU()
        self.fc2 = ElasticLinear(hidden_features, in_features, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, hidden_features: int, drop: float = 0.0) -> torch.Tensor:
        width = x.shape[-1]
        x = F.dropout(self.act(self.fc1(x, hidden_features)), drop, self.training)
        return F.dropout(self.fc2(x, width), drop, self.training)
