"""Locate the data folders shipped with timm-nas (``registry/`` and ``hub_cards/``).

In a source checkout or an editable install they sit at the repository root; in a built wheel they are
packaged as ``timm_nas/_data/<kind>``. This is the one place that knows both layouts.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["data_dir", "data_file"]

_KINDS = ("registry", "hub_cards")


def data_dir(kind: str) -> Path:
    """Return the folder holding the shipped data of ``kind`` (``'registry'`` or ``'hub_cards'``).

    Raises:
        ValueError: for an unknown kind.
        FileNotFoundError: if neither the wheel layout nor the checkout layout has the folder.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {list(_KINDS)}")
    here = Path(__file__).resolve().parent
    for candidate in (here / "_data" / kind, here.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"timm-nas data folder {kind!r} not found next to {here}; the installation is incomplete, reinstall timm-nas"
    )


def data_file(kind: str, name: str) -> Path:
    """Return the path of one shipped data file, with a clear error listing what exists."""
    folder = data_dir(kind)
    path = folder / name
    if not path.is_file():
        known = sorted(p.name for p in folder.iterdir() if p.is_file())
        raise FileNotFoundError(f"no {kind} file {name!r} in {folder}; available: {known}")
    return path
