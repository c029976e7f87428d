"""timm-nas: Neural Architecture Search for vision models as ordinary timm models.

``import timm_nas`` registers every model (AutoFormer, S3, DARTS, SPViT) with timm, so ``timm.create_model``
knows them; :func:`timm_nas.create_model` is the same call with that import guaranteed.
"""
from .version import __version__
from . import models  # noqa: F401  (registers the models with timm)
from ._factory import create_model, list_models
from .spaces import (
    ArchConfig,
    AutoFormerSpace,
    AutoFormerSubnet,
    DartsSpace,
    Genotype,
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
    "S3Space",
    "S3Subnet",
    "SPViTArch",
]
