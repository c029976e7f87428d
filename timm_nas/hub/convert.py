"""Turn an authors' released checkpoint into a Hub-ready folder through the family's ``checkpoint_filter_fn``."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .._io import sha256_file
from ..version import __version__
from ._common import check_destination, state_dict_mismatch
from ._family import get_family
from .export import export

__all__ = ["convert_checkpoint"]


def _try_candidate(name: str, model_args: Mapping[str, Any], state: Mapping[str, torch.Tensor],
                   filter_fn: Callable[..., Mapping[str, torch.Tensor]]) -> tuple[str, int]:
    """``('', number of elements)`` when the filtered checkpoint fits model ``name`` exactly, else ``(why not,
    0)`` (the model is built on meta: no memory)."""
    import timm

    try:
        try:
            model = timm.create_model(name, pretrained=False, device="meta", **model_args)
        except RuntimeError as e:
            if "Unknown model" in str(e):
                return "not a registered model", 0
            model = timm.create_model(name, pretrained=False, **model_args)
    except TypeError as e:
        return f"does not take these arguments ({e})", 0
    try:
        filtered = filter_fn(dict(state), model)
    except (ValueError, KeyError, RuntimeError, IndexError, TypeError) as e:
        return f"checkpoint_filter_fn refused it ({type(e).__name__}: {e})", 0
    mismatch = state_dict_mismatch(model.state_dict(), filtered)
    return mismatch, 0 if mismatch else sum(t.numel() for t in model.state_dict().values())


def convert_checkpoint(family: str, checkpoint: str | os.PathLike, out: str | os.PathLike, *,
                       model_name: str | None = None, model_args: Mapping[str, Any] | None = None,
                       overwrite: bool = False, card: Mapping[str, Any] | None = None) -> Path:
    """Turn an authors' released checkpoint into a Hub-ready folder.

    The file is read with ``weights_only=True`` (see :func:`timm_nas._checkpoint.load_checkpoint_file`), mapped
    to our layout by the family's ``checkpoint_filter_fn``, loaded strictly into the family's model and exported
    with :func:`~timm_nas.hub.export`.

    Args:
        family: a declared family (``'autoformer'``, ...; :func:`timm_nas.family.families`).
        checkpoint: the ``.pth`` / ``.safetensors`` file.
        out: the destination folder.
        model_name: the timm model to load into; default: the largest of the family's ``convert_models`` whose
            weights the checkpoint fits (a filter that slices makes every smaller architecture fit too).
        model_args: arguments for the model (e.g. ``{"space": {...}, "img_size": 384}`` for a supernet of a
            space that has no named entrypoint); recorded in ``config.json`` like any ``create_model`` argument.
        overwrite: replace an existing export at ``out``.
        card: extra card information (see :func:`~timm_nas.hub.export`); the source file and its SHA-256 are
            added to the provenance, and the family's datasets when none are given.

    Raises:
        ValueError: unknown family, no fitting model (each candidate's mismatch listed), or a named model the
            checkpoint does not fit (missing / unexpected keys and shape mismatches listed).
        FileNotFoundError: the checkpoint does not exist.
    """
    import timm

    from .._checkpoint import load_checkpoint_file, unwrap_state_dict
    from .. import models  # noqa: F401

    fam = get_family(family)
    checkpoint = Path(checkpoint)
    out = Path(out)
    check_destination(out, overwrite)  # fail before the (possibly slow) read
    filter_fn = fam.checkpoint_filter
    state = unwrap_state_dict(load_checkpoint_file(checkpoint))
    candidates = [(model_name, {})] if model_name else [
        (c, {}) if isinstance(c, str) else (c[0], dict(c[1])) for c in fam.convert_models]
    if not candidates:
        raise ValueError(f"the {fam.name} family has no default model for conversion: name the model to load the "
                         "checkpoint into with model_name=... (and its model_args=...)")
    # Every candidate is tried and the largest that fits wins: filters that slice a bigger checkpoint down (a
    # supernet's weights into a subnet) make every architecture contained in the file "fit", and only the largest
    # of them is the file's own.
    reasons: dict[str, str] = {}
    fitting: list[tuple[int, str, str, dict[str, Any]]] = []
    for name, base_args in candidates:
        args = {**base_args, **dict(model_args or {})}  # the caller's arguments win
        label = f"{name}({json.dumps(base_args, sort_keys=True)})" if base_args else name
        reasons[label], size = _try_candidate(name, args, state, filter_fn)
        if not reasons[label]:
            fitting.append((size, label, name, args))
    if fitting:
        size, label, chosen, chosen_args = max(fitting, key=lambda f: f[0])  # the first of equals
    else:
        if model_name:
            raise ValueError(f"{checkpoint.name} does not fit {model_name} after {fam.module}.{fam.checkpoint_filter.__name__}: "
                             f"{reasons[model_name]}")
        listed = "; ".join(f"{n}: {r}" for n, r in reasons.items())
        raise ValueError(f"{checkpoint.name} fits none of the {fam.name} models {list(reasons)} ({listed}); name "
                         "the right one with model_name=... (and model_args=...)")
    model = timm.create_model(chosen, pretrained=False, **chosen_args)
    model.load_state_dict(filter_fn(dict(state), model), strict=True)
    model.eval()
    info = dict(card or {})
    provenance = {"method": f"converted from the authors' release with timm-nas {__version__}",
                  "checkpoint": checkpoint.name, "sha256": sha256_file(checkpoint),
                  "filter": f"{fam.module}.{fam.checkpoint_filter.__name__}", "model": label}
    provenance.update(info.get("provenance") or {})
    info["provenance"] = provenance
    if not info.get("datasets") and fam.datasets:
        info["datasets"] = list(fam.datasets)
    return export(model, out, card=info, overwrite=overwrite)
