"""timm's model API for our cell networks (the DARTS and NAS-Bench-201 networks and their search networks).

The counterpart of :mod:`timm_nas.models._vit_api` for convolutional cell networks: pooling + dropout + linear
classifier built by timm's ``create_classifier``, cell-level gradient checkpointing, ``get_classifier`` /
``reset_classifier``. A class using the mixin provides ``num_features``, ``global_pool``, ``head_drop``,
``classifier``, ``cost_args`` and ``forward_features``.
"""

import torch
import torch.nn as nn
from timm.layers import create_classifier, get_device_dtype

__all__ = ["GLOBAL_POOLS", "check_global_pool", "CellNetApiMixin"]

#: Pooling types timm's ``SelectAdaptivePool2d`` builds for a classifier head ('' = none).
GLOBAL_POOLS = ("", "avg", "max", "avgmax", "catavgmax", "fast", "fastavg", "fastmax", "fastavgmax", "fastcatavgmax")


def check_global_pool(global_pool: str) -> str:
    """``global_pool`` if timm's pooling supports it, else a ``ValueError`` naming the choices."""
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool={global_pool!r} is not supported; choose one of {list(GLOBAL_POOLS)}")
    return global_pool


class CellNetApiMixin:
    """``set_grad_checkpointing``, ``get_classifier``, ``reset_classifier``, ``forward_head`` and ``forward``.

    No class annotations here: TorchScript would read them as the scripted network's attribute types."""

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with one for ``num_classes`` (``0``: none); ``global_pool=None`` keeps the
        pooling."""
        self._reset_pool_classifier(num_classes, global_pool)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout, classifier (``pre_logits=True``: the pooled features)."""
        x = self.global_pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def _reset_pool_classifier(self, num_classes: int, global_pool: str | None) -> None:
        dd = get_device_dtype(self)  # type: ignore[arg-type]
        self.num_classes = num_classes
        self.cost_args["num_classes"] = num_classes
        global_pool = self.global_pool.pool_type if global_pool is None else check_global_pool(global_pool)
        self.global_pool, self.classifier = create_classifier(
            self.num_features, num_classes, pool_type=global_pool, **dd)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.global_pool.train(self.training)
        self.classifier.train(self.training)
