"""Thin wrappers over timm's factory that guarantee our models are registered."""
from __future__ import annotations

from typing import Any

import timm
import torch.nn as nn

__all__ = ["create_model", "list_models", "MODEL_MODULES"]

#: timm module names (the last component of the defining module) that hold timm-nas models. timm keys its module
#: index by that last component only, so another package's ``darts.py`` shares a key: :func:`list_models` uses
#: these names to narrow timm's list, then keeps the names whose entrypoint is defined in ``timm_nas``.
MODEL_MODULES = ("autoformer", "darts", "nb201", "s3", "spvit")  # deprecated: read timm_nas.family.families()


def create_model(model_name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with timm-nas's models registered (also for ``hf-hub:`` / ``local-dir:`` names).

    Args:
        model_name: a registered name (``'autoformer_tiny'``), ``'hf-hub:org/repo'`` or ``'local-dir:/path'``.
        pretrained: load weights (from the pretrained cfg, the Hub repo or the folder).
        **kwargs: passed to ``timm.create_model`` unchanged.
    """
    from . import models  # noqa: F401  (registration side effect; cheap after the first import)

    return timm.create_model(model_name, pretrained=pretrained, **kwargs)


def list_models(filter: str | list[str] = "", pretrained: bool = False) -> list[str]:
    """The timm names of timm-nas's models, and only those.

    Args:
        filter: timm's wildcard pattern(s), e.g. ``'autoformer*'``.
        pretrained: only models with pretrained weights (names carry their pretrained tag, as in timm).
    """
    from . import models  # noqa: F401

    names = timm.list_models(filter=filter, pretrained=pretrained)
    return [n for n in names if _is_ours(n)]


def _is_ours(name: str) -> bool:
    """Whether the entrypoint of the timm model ``name`` is defined in the ``timm_nas`` package."""
    return timm.models.model_entrypoint(name).__module__.startswith(f"{__package__}.")
