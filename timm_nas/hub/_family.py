"""The families the Hub tooling knows: the declarations of :mod:`timm_nas.family`, nothing else.

The rest of :mod:`timm_nas.hub` reads them only through :func:`family_of`, :func:`get_family` and the fields of
:class:`timm_nas.family.Family` (``name``, ``module``, ``arch_args``, ``config_type``, ``checkpoint_filter``,
``convert_models``, ``datasets``).
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from .. import family as _family
from ..family import Family, get_family

__all__ = ["HubFamily", "FAMILIES", "family_of", "get_family"]

#: Former name of :class:`timm_nas.family.Family` (the Hub's family table is now the families' own declaration).
HubFamily = Family

#: Every declared family by name: a read-only live view of :func:`timm_nas.family.families`.
FAMILIES: Mapping[str, Family] = MappingProxyType(_family._FAMILIES)


def family_of(architecture: str) -> Family | None:
    """The family whose module registers ``architecture`` (``None`` for models from elsewhere, e.g. timm's)."""
    return _family.family_of(architecture)
