"""Reading the authors' released checkpoints safely.

The original ``.pth`` files hold training state next to the weights: an ``argparse.Namespace`` of the run's
arguments (AutoFormer, SPViT-DeiT), a yacs ``CfgNode`` (SPViT-Swin, which follows Swin's ``save_checkpoint``),
numpy scalars or arrays (best accuracies, ``np.float64``), optimizer and scheduler state. They are read with
``torch.load(weights_only=True)``, never with unrestricted unpickling:

* :data:`SAFE_GLOBALS` (``argparse.Namespace``) and, with ``allow_numpy`` (the default), the numpy globals that
  rebuild scalars, arrays and dtypes (:func:`numpy_safe_globals`) are allowed through
  ``torch.serialization.safe_globals``, a context manager: the allow-list is scoped to one load, never added to
  torch's process-wide list.
* With ``stub_unknown=True`` (the default), any other *class* the file names is replaced by a
  stand-in registered under the original's name (a ``(stub, "module.Class")`` safe-globals entry) whose objects
  are plain ``OrderedDict`` data holding the items, constructor arguments and pickled attributes: none of the
  original's code runs (the class is never imported).
  torch's unpickler names the refused global (``Unsupported global: GLOBAL yacs.config.CfgNode ...``); the reader
  stubs it and reads again (:func:`opaque_global` tells such an object). Functions (lower-case names) and anything from modules that run code (``os``,
  ``subprocess``, ``builtins``, ...) are never stubbed: such a file is refused with the global's name.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

__all__ = ["SAFE_GLOBALS", "opaque_global", "numpy_safe_globals", "load_checkpoint_file", "unwrap_state_dict"]

_logger = logging.getLogger(__name__)

#: Types allowed when unpickling an original checkpoint (besides what ``weights_only`` already allows).
SAFE_GLOBALS: list[Any] = [argparse.Namespace]

# A refused global, as torch's weights_only unpickler names it.
_REFUSED = re.compile(r"GLOBAL ([\w.]+) was not an allowed global|unsupported GLOBAL ([\w.]+) whose module")
# Class names (CamelCase last component) are stubbed; function names (lower case) never are.
_CLASS_NAME = re.compile(r"^[A-Z]\w*$")
# Modules whose globals are never stubbed: a checkpoint naming them is trying to run code, not to store data.
_NEVER_STUB = ("os", "posix", "nt", "subprocess", "builtins", "__builtin__", "sys", "shutil", "importlib", "runpy",
               "pickle", "marshal", "code", "codeop", "pty", "socket", "ctypes", "types", "functools", "operator",
               "torch", "numpy", "webbrowser")
# At most this many distinct classes are stubbed per file (each costs one more read of the file).
_MAX_STUBS = 32


def _stub(global_name: str) -> type:
    """A stand-in class registered under ``global_name``: building it (``REDUCE`` / ``NEWOBJ``) gives an inert
    ``OrderedDict`` (see :func:`opaque_global`); the original class is never imported."""
    module, _, name = global_name.rpartition(".")

    def __new__(cls: type, *args: Any, **kwargs: Any) -> "OrderedDict[Any, Any]":
        # An OrderedDict because torch's unpickler fills only plain dicts (SETITEMS, for dict subclasses such as
        # yacs' CfgNode) and builds an OrderedDict's pickled __dict__ state as attributes (BUILD).
        out: "OrderedDict[Any, Any]" = OrderedDict()
        out.__dict__.update(opaque_global=global_name, opaque_args=args)
        return out

    return type(name, (), {"__new__": __new__, "__module__": f"opaque:{module}", "global_name": global_name})


def opaque_global(obj: Any) -> str | None:
    """The ``module.Class`` an object read with ``stub_unknown=True`` stands in for (``None`` for real objects).

    Such an object is an ``OrderedDict`` of the items the original held (for dict subclasses), with attributes
    ``opaque_global``, ``opaque_args`` (what it was rebuilt with) and the original's pickled attributes.
    """
    return obj.__dict__.get("opaque_global") if isinstance(obj, OrderedDict) else None


def numpy_safe_globals() -> list[Any]:
    """The numpy globals that rebuild scalars (``np.float64(0.5)``), arrays and dtypes, under both the numpy 1
    (``numpy.core``) and numpy 2 (``numpy._core``) names files carry; ``[]`` when numpy is not installed."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a torch dependency in practice
        return []
    core = getattr(np, "_core", None) or np.core
    out: list[Any] = [np.dtype, np.ndarray]
    for prefix in ("numpy.core", "numpy._core"):
        out += [(core.multiarray.scalar, f"{prefix}.multiarray.scalar"),
                (core.multiarray._reconstruct, f"{prefix}.multiarray._reconstruct")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType") and isinstance(getattr(dtypes, n), type)]
    return out


def _stubbable(global_name: str) -> bool:
    module, _, name = global_name.rpartition(".")
    return bool(module) and bool(_CLASS_NAME.match(name)) and module.split(".")[0] not in _NEVER_STUB


def load_checkpoint_file(path: str | os.PathLike, extra_safe_globals: Iterable[Any] = (), *,
                         allow_numpy: bool = True, stub_unknown: bool = True) -> Any:
    """Load a ``.pth`` / ``.pt`` / ``.bin`` (restricted unpickling) or ``.safetensors`` file on the CPU.

    Args:
        path: the file.
        extra_safe_globals: more globals to allow (``torch.serialization.safe_globals`` entries: a class, or a
            ``(object, "module.name")`` pair), for this load only.
        allow_numpy: allow numpy scalars, arrays and dtypes (:func:`numpy_safe_globals`).
        stub_unknown: read any other class the file names as inert data (:func:`opaque_global`; logged at INFO
            with its name) instead of refusing the file. Functions and classes of modules that run code are
            still refused.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file cannot be read with the restricted unpickler (the message names the global that
            was refused; add it to ``extra_safe_globals`` only if you trust the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    allowed = SAFE_GLOBALS + (numpy_safe_globals() if allow_numpy else []) + list(extra_safe_globals)
    stubs: dict[str, type] = {}
    while True:
        with torch.serialization.safe_globals(allowed + [(cls, name) for name, cls in stubs.items()]):
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # torch raises UnpicklingError / RuntimeError with the refused global's name
                refused = _REFUSED.search(str(e))
                name = (refused.group(1) or refused.group(2)) if refused else None
                if name is None:  # not a global refusal: the file is not a (complete) PyTorch checkpoint
                    raise ValueError(f"cannot read {path}: it is not a PyTorch checkpoint, or it is truncated or "
                                     f"corrupt ({_first_line(e)})") from e
                if (not stub_unknown or name in stubs or not _stubbable(name)
                        or len(stubs) >= _MAX_STUBS):
                    why = "" if not stub_unknown or name in stubs else (
                        f"; {name} is not read as inert data: only classes of data-holding modules are")
                    raise ValueError(f"cannot read {path}: it holds {name}, which is not on the allow-list of "
                                     "restricted unpickling (torch.load with weights_only=True and "
                                     f"{[getattr(g, '__name__', g) for g in SAFE_GLOBALS]}, numpy: {allow_numpy})"
                                     f"{why}. Only if you trust the file, pass it in extra_safe_globals") from e
        _logger.info("%s: %s is not an allowed type; reading it as inert data", path.name, name)
        stubs[name] = _stub(name)


def _first_line(e: BaseException) -> str:
    """The gist of a ``torch.load`` error: its first line, without torch's advice to unpickle without
    restrictions (never the right move for a file one cannot read)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and "weights_only" not in ln
             and "torch.load" not in ln]
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def unwrap_state_dict(checkpoint: Any, keys: Iterable[str] = ("model", "state_dict", "model_ema")) -> dict[str, torch.Tensor]:
    """Return the state dict of a checkpoint that is either a bare state dict or holds it under one of ``keys``."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"expected a state dict or a checkpoint dict, got {type(checkpoint).__name__}")
    for key in keys:
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            return OrderedDict(checkpoint[key])
    if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return OrderedDict(checkpoint)
    raise ValueError(f"checkpoint holds no state dict: top-level keys {sorted(map(str, checkpoint))[:20]}; "
                     f"expected tensors or one of {list(keys)}")


def match_model_keys(state_dict: dict[str, torch.Tensor], model: torch.nn.Module, check: str) -> dict[str, torch.Tensor]:
    """``state_dict`` completed and checked against ``model``'s keys, for a family's ``checkpoint_filter_fn``.

    BatchNorm ``num_batches_tracked`` counters the file lacks are added as zeros (older PyTorch did not save them);
    any other difference raises.

    Args:
        state_dict: the renamed tensors (modified in place and returned).
        model: the target model.
        check: the constructor arguments the user should compare with the run that saved the file (for the
            message, e.g. ``"the genotype, C, layers and auxiliary arguments"``).

    Raises:
        ValueError: listing up to 8 unexpected and 8 missing keys.
    """
    expected = model.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = torch.zeros_like(value, device="cpu")
    unexpected = sorted(set(state_dict) - set(expected))
    missing = sorted(set(expected) - set(state_dict))
    if unexpected or missing:
        raise ValueError(
            f"checkpoint does not match {type(model).__name__}: {len(unexpected)} unexpected keys {unexpected[:8]}, "
            f"{len(missing)} missing keys {missing[:8]}. Check {check} against the run that saved it")
    return state_dict
