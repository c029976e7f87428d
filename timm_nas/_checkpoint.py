"""Reading the authors' released checkpoints safely.

The original ``.pth`` files hold training state next to the weights (an ``argparse.Namespace`` of the run's
arguments, optimizer and scheduler state). They are read with ``torch.load(weights_only=True)`` and an explicit
allow-list of the extra types, never with unrestricted unpickling.
"""
from __future__ import annotations

import argparse
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

__all__ = ["SAFE_GLOBALS", "load_checkpoint_file", "unwrap_state_dict"]

#: Types allowed when unpickling an original checkpoint (besides what ``weights_only`` already allows).
SAFE_GLOBALS: list[Any] = [argparse.Namespace]


def load_checkpoint_file(path: str | os.PathLike, extra_safe_globals: Iterable[Any] = ()) -> Any:
    """Load a ``.pth`` / ``.pt`` / ``.bin`` (restricted unpickling) or ``.safetensors`` file on the CPU.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file cannot be read with the restricted unpickler (the message names the type that
            was refused; add it to ``extra_safe_globals`` only if you trust the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    with torch.serialization.safe_globals(SAFE_GLOBALS + list(extra_safe_globals)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises UnpicklingError / RuntimeError with the refused global's name
            raise ValueError(f"cannot read {path} with weights_only=True and the allow-list {SAFE_GLOBALS}: {e}") from e


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
