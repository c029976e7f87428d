"""The one way every family builds a model: timm's ``build_model_with_cfg`` after the checks all families share."""
from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg

__all__ = ["build_model", "check_num_classes"]


def check_num_classes(num_classes: Any) -> None:
    """Refuse a classifier width timm would accept silently: ``num_classes`` must be a non-negative integer (0: no
    classifier, the pooled features)."""
    if num_classes is None:
        return
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be a non-negative integer (0: no classifier), got {num_classes!r}")


def build_model(model_cls: type, variant: str, pretrained: bool, **kwargs: Any) -> Any:
    """``timm.models.build_model_with_cfg(model_cls, variant, pretrained, **kwargs)`` after
    :func:`check_num_classes`."""
    check_num_classes(kwargs.get("num_classes"))
    return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
