"""Published architectures as data.

Each family has one JSON file in the repository's ``registry/`` folder (shipped inside the wheel). The file maps
a lower-case key (e.g. ``"autoformer_tiny"``, ``"darts_v2"``) to an entry::

    {
      "model_args": {...},          # exactly the keyword arguments of the family's generic model
      "aliases": ["DARTS_V2"],      # optional: other names accepted for the key (e.g. the original's)
      "source": {"paper": ..., "repo": ..., "file": ..., "commit": ...},
      "reported": {...}             # numbers the authors reported (top-1, params, FLOPs, ...)
    }

Keys starting with ``_`` (e.g. ``"_about"``) are file-level notes, not entries.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from ._resources import data_dir, data_file

__all__ = ["families", "load_registry", "get_entry", "resolve_key"]


def families() -> list[str]:
    """Names of the families that have a registry file."""
    return sorted(p.stem for p in data_dir("registry").glob("*.json"))


@lru_cache(maxsize=None)
def _load(family: str) -> dict[str, Any]:
    path = data_file("registry", f"{family}.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object mapping keys to entries")
    return data


def load_registry(family: str) -> dict[str, dict[str, Any]]:
    """Return the entries of one family's registry (a deep copy; file-level ``_`` keys removed)."""
    data = _load(family)
    return json.loads(json.dumps({k: v for k, v in data.items() if not k.startswith("_")}))


def resolve_key(family: str, name: str) -> str:
    """Map a key or an alias (case-insensitive) to the registry key.

    Raises:
        KeyError: naming the known keys when ``name`` is not in the registry.
    """
    entries = load_registry(family)
    low = name.lower()
    if low in entries:
        return low
    for key, entry in entries.items():
        if any(low == a.lower() for a in entry.get("aliases", ())):
            return key
    raise KeyError(f"{name!r} is not in the {family} registry; known: {sorted(entries)}")


def get_entry(family: str, name: str) -> dict[str, Any]:
    """Return one registry entry by key or alias."""
    return load_registry(family)[resolve_key(family, name)]
