"""timm's model API for our class-token ViTs (AutoFormer supernet and subnet, the SPViT search network).

timm's ``VisionTransformer`` implements these methods itself; our ViTs are separate ``nn.Module`` classes (elastic
layers, gates), so they share this one implementation instead. A class using the mixin provides ``blocks``,
``head``, ``embed_dim``, ``num_classes``, ``global_pool``, ``grad_checkpointing``, ``cost_args`` and ``_new_head``.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
from timm.layers import get_device_dtype
from timm.models._input import update_model_args

#: Pooling choices of our ViTs: the class token (DeiT), the mean of the patch tokens (AutoFormer's ``gp``), or none.
GLOBAL_POOLS = ("", "avg", "token")


def check_global_pool(global_pool: str) -> str:
    """``global_pool`` if it is one of :data:`GLOBAL_POOLS`, else a ``ValueError`` naming the choices."""
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool={global_pool!r} is not supported; choose one of {list(GLOBAL_POOLS)}")
    return global_pool


class ViTApiMixin:
    """``no_weight_decay``, ``group_matcher``, ``set_grad_checkpointing``, ``get_classifier`` and
    ``reset_classifier`` as timm's ``VisionTransformer`` has them (stem = class token, position embedding and
    patch embedding; one group per block; the final norm last).

    No class annotations here: TorchScript would read them as the scripted model's attribute types."""

    def _new_head(self, num_classes: int, **dd: Any) -> nn.Module:
        """The classifier for ``num_classes > 0`` (a subclass may return an elastic layer)."""
        return nn.Linear(self.embed_dim, num_classes, **dd)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The class token and the position embedding are not decayed (as in DeiT)."""
        return {"pos_embed", "cls_token"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^cls_token|pos_embed|patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0``: none) and optionally the pooling (``None`` keeps it); a new
        pooling is recorded in the model's ``model_args`` so an export rebuilds it; ``cost_args`` follows
        (``global_pool`` where the family's cost formulas take it)."""
        dd = get_device_dtype(self)  # type: ignore[arg-type]
        if global_pool is not None:
            self.global_pool = check_global_pool(global_pool)
            update_model_args(self, global_pool=global_pool)  # type: ignore[arg-type]
            if "global_pool" in self.cost_args:  # type: ignore[attr-defined]
                self.cost_args["global_pool"] = global_pool  # type: ignore[attr-defined]
        self.num_classes = num_classes
        self.cost_args["num_classes"] = num_classes  # type: ignore[attr-defined]
        self.head = self._new_head(num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.head.train(self.training)
