"""SPViT unified FFN: an MLP whose hidden units are gated one by one.

SPViT (He et al., TPAMI 2024; ``SPViT_DeiT/models_pruning.py`` ``UnifiedMlp`` at ziplab/SPViT commit ae19b0d):
``fc2(drop(mask * act(fc1(x))))`` with one learnable threshold per hidden unit (``ffn_thresholds``). The mask
(computed by the model from the thresholds: a straight-through sample in training, ``1[p > 0.5]`` at eval) is
shared by all tokens and images of a batch.

As in the original, every forward also writes the eval decision into the persistent buffer
``assigned_indicator_index``, so a saved search checkpoint carries the FFN masks the original's fine-tune
conversion reads.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .spvit_gates import eval_gate

__all__ = ["UnifiedMlp"]


class UnifiedMlp(nn.Module):
    """The search FFN with per-hidden-unit gates (original parameter names: ``fc1``, ``fc2``,
    ``ffn_thresholds``, buffer ``assigned_indicator_index``).

    Args:
        in_features: token width.
        hidden_features: hidden width of the unpruned FFN.
        act_layer: activation.
        drop: dropout after the activation and after ``fc2``.
        theta: initial threshold of every hidden unit.
    """

    def __init__(
            self,
            in_features: int,
            hidden_features: int,
            act_layer: type[nn.Module] = nn.GELU,
            drop: float = 0.,
            theta: float = 0.,
            device: torch.device | str | None = None,
            dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.ffn_thresholds = nn.Parameter(torch.full((hidden_features,), float(theta), **dd))
        self.register_buffer("assigned_indicator_index", torch.zeros(hidden_features, **dd), persistent=True)
        self.fc1 = nn.Linear(in_features, hidden_features, **dd)
        self.act = act_layer()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features, **dd)

    def ffn_probs(self) -> torch.Tensor:
        """Keep probability of every hidden unit, ``sigmoid(ffn_thresholds)``."""
        return torch.sigmoid(self.ffn_thresholds)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Apply the FFN with hidden-unit ``mask`` ``(hidden,)`` (0/1 values, possibly straight-through)."""
        with torch.no_grad():
            self.assigned_indicator_index.copy_(eval_gate(self.ffn_probs()))
        x = self.act(self.fc1(x))
        x = self.drop(mask * x)
        return self.drop(self.fc2(x))
