"""Small helpers shared by the Hub modules: the folder layout's names, unwrapping, JSON-native conversion, state-dict
comparison, the versions block and the atomic writing of an export folder."""
from __future__ import annotations

import dataclasses
import importlib
import platform
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from .._io import atomic_folder, atomic_write_text  # noqa: F401  (the hub's writers)
from ..version import __version__

__all__ = ["MARKER_KEY", "WEIGHTS_NAME", "REPO_ID_PLACEHOLDER", "record_model_args", "state_dict_mismatch"]

#: Top-level ``config.json`` key of the block saying the folder needs timm-nas (timm ignores unknown keys).
MARKER_KEY = "timm_nas"
#: The weights file :func:`~timm_nas.hub.export` writes (timm's preferred name, loaded first by ``local-dir:`` /
#: ``hf-hub:``).
WEIGHTS_NAME = "model.safetensors"
#: Stands for the repo id in a card's example until :func:`~timm_nas.hub.push` (or ``card['repo_id']``) fills it in.
REPO_ID_PLACEHOLDER = "YOUR-NAMESPACE/YOUR-MODEL"

CONFIG_NAME = "config.json"
README_NAME = "README.md"
PIP_NAME = "timm-nas"
_MAX_LISTED = 12


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def record_model_args(model: nn.Module, **model_args: Any) -> nn.Module:
    """Record constructor arguments of a model made outside ``timm.create_model``, so that
    :func:`~timm_nas.hub.export` can write a ``config.json`` that rebuilds it.

    ``timm.create_model`` records its arguments itself; a model built another way (``supernet.extract(cfg)``, a
    search's winner, a class called directly through ``build_model_with_cfg``) must record at least its
    architecture argument, e.g. ``record_model_args(model, subnet=cfg)``. Arguments recorded earlier are kept
    unless named again. The record is timm's own (``model._model_args``, read by its Hub writer).

    Args:
        model: the model (a DataParallel / DistributedDataParallel / compiled wrapper is unwrapped).
        **model_args: the arguments, as ``timm.create_model(name, **model_args)`` would take them.

    Returns:
        The (unwrapped) model.
    """
    model = unwrap(model)
    model._model_args = dict(getattr(model, "_model_args", None) or {}, **model_args)
    return model


def json_native(value: Any) -> Any:
    """``value`` as JSON-native data: configs via ``to_dict()``, tuples as lists, numeric scalars as numbers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and hasattr(value, "to_dict"):
        return json_native(value.to_dict())
    if isinstance(value, Mapping):
        return {str(k): json_native(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_native(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value  # left for timm's writer, which names the argument that is not serialisable


def listed(items: Sequence[str], limit: int = _MAX_LISTED) -> str:
    """The first ``limit`` items, comma-separated, with a count of the rest."""
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def state_dict_mismatch(expected: Mapping[str, Any], got: Mapping[str, Any]) -> str:
    """Describe how a state dict ``got`` differs from ``expected`` (tensors or shapes); ``''`` if it fits.

    The description lists the missing keys, the unexpected keys and the shape mismatches (the first
    few of each, with counts), e.g. ``"missing keys (2): a, b; unexpected keys (1): c"``.
    """
    exp = {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in expected.items()}
    have = {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in got.items()}
    missing = [k for k in exp if k not in have]
    unexpected = [k for k in have if k not in exp]
    wrong = [f"{k} {list(have[k])} (expected {list(exp[k])})" for k in exp if k in have and have[k] != exp[k]]
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {listed(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {listed(unexpected)}")
    if wrong:
        parts.append(f"shape mismatches ({len(wrong)}): {listed(wrong)}")
    return "; ".join(parts)


def versions() -> dict[str, str]:
    """The versions of timm-nas, timm, torch, safetensors, huggingface_hub and Python (for the card)."""
    import timm

    out = {"timm-nas": __version__, "timm": timm.__version__, "torch": torch.__version__.split("+")[0]}
    for dist in ("safetensors", "huggingface_hub"):
        try:
            out[dist] = importlib.import_module(dist).__version__
        except (ImportError, AttributeError):
            pass
    out["python"] = platform.python_version()
    return out


def check_destination(folder: Path, overwrite: bool) -> None:
    """Raise unless ``folder`` is absent, empty, or (with ``overwrite``) a previous export."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise FileExistsError(f"{folder} exists and is not a folder; choose another destination")
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{folder} is not empty; pass overwrite=True to replace it, or choose another "
                                  "folder")
        if not (folder / CONFIG_NAME).is_file():
            raise FileExistsError(f"refusing to replace {folder}: it is not empty and holds no {CONFIG_NAME}, so it "
                                  "is not an exported model folder; remove it yourself or choose another folder")
