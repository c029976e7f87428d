"""timm-nas: Neural Architecture Search for vision models as ordinary timm models.

``import timm_nas`` registers every model (AutoFormer, S3, DARTS, SPViT) with timm, so ``timm.create_model``
knows them; :func:`timm_nas.create_model` is the same call with that import guaranteed. The sub-packages
:mod:`~timm_nas.hub`, :mod:`~timm_nas.cost`, :mod:`~timm_nas.search`, :mod:`~timm_nas.proxies` and
:mod:`~timm_nas.spaces` are attributes of the package, imported on first use (``timm_nas.hub.export(...)``).
"""
import importlib
from typing import Any

from .version import __version__
from . import models  # noqa: F401  (registers the models with timm)
from ._factory import create_model, list_models
from .spaces import (
    ArchConfig,
    AutoFormerSpace,
    AutoFormerSubnet,
    DartsSpace,
    Genotype,
    NB201Cell,
    NB201Space,
    S3Space,
    S3Subnet,
    SPViTArch,
    Space,
)

__all__ = [
    "__version__",
    "create_model",
    "list_models",
    "ArchConfig",
    "Space",
    "AutoFormerSpace",
    "AutoFormerSubnet",
    "DartsSpace",
    "Genotype",
    "NB201Cell",
    "NB201Space",
    "S3Space",
    "S3Subnet",
    "SPViTArch",
]

#: Sub-packages available as attributes of ``timm_nas`` without an import of their own; loaded on first access so
#: ``import timm_nas`` stays as cheap as registering the models.
_LAZY_SUBMODULES = ("hub", "cost", "search", "proxies", "spaces")


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")  # the import also sets it as a package attribute
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
