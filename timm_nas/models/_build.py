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


def _weights_source(pretrained_cfg: Any) -> str | None:
    """The file, Hub repo or URL timm loads the weights from."""
    cfg = pretrained_cfg.to_dict() if hasattr(pretrained_cfg, "to_dict") else dict(pretrained_cfg or {})
    return cfg.get("file") or cfg.get("hf_hub_id") or cfg.get("url") or None


def build_model(model_cls: type, variant: str, pretrained: bool, **kwargs: Any) -> Any:
    """``timm.models.build_model_with_cfg(model_cls, variant, pretrained, **kwargs)`` after
    :func:`check_num_classes`; a weights file that cannot be read (truncated, corrupt) is reported with its name
    (``timm.create_model('local-dir:...', pretrained=True)`` reaches the file through here)."""
    import pickle

    check_num_classes(kwargs.get("num_classes"))
    try:
        return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    except Exception as e:  # safetensors raises its own SafetensorError (an Exception)
        source = _weights_source(kwargs.get("pretrained_cfg")) if pretrained else None
        unreadable = type(e).__name__ == "SafetensorError" or isinstance(e, (EOFError, pickle.UnpicklingError)) or \
            "zip archive" in str(e) or "deserializ" in str(e)
        if source is None or not unreadable:
            raise
        raise ValueError(f"cannot read the weights of {variant} from {source}: {type(e).__name__}: {e} (the file is "
                         "truncated or corrupt: download or export it again)") from e
