"""Reading the checkpoints timm's train.py writes, and rebuilding the model they belong to.

timm's ``CheckpointSaver`` writes ``{'epoch', 'arch', 'args', 'state_dict', 'state_dict_ema', 'optimizer', ...}``
where ``args`` is the run's ``argparse.Namespace``: its ``model``, ``model_kwargs``, ``num_classes``, ``in_chans``,
``gp`` and data options are everything needed to rebuild the same supernet (same space, image and patch size) and
to preprocess images as training did. The file is read with ``weights_only=True`` and the allow-list of
:mod:`timm_nas._checkpoint`.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from .._checkpoint import load_checkpoint_file, unwrap_state_dict

__all__ = ["TrainCheckpoint", "read_train_checkpoint", "create_model_from_checkpoint", "DATA_ARG_KEYS"]

_logger = logging.getLogger(__name__)

#: train.py arguments that ``timm.data.resolve_data_config`` reads (image size and preprocessing).
DATA_ARG_KEYS = ("img_size", "input_size", "crop_pct", "crop_mode", "mean", "std", "interpolation")


@dataclasses.dataclass(frozen=True)
class TrainCheckpoint:
    """What a checkpoint holds that is needed to rebuild and evaluate its model.

    Attributes:
        path: the file.
        state_dict: the model weights (the EMA weights if requested and present).
        ema: whether ``state_dict`` holds the EMA weights.
        model: the timm model name train.py trained (``None`` if the file does not record it).
        create_kwargs: the architecture arguments train.py passed to ``create_model`` (``num_classes``,
            ``in_chans``, ``global_pool`` when set, and ``--model-kwargs``); empty if unrecorded.
        data_args: train.py's data options for ``resolve_data_config`` (image size, crop, mean, std, interpolation).
        epoch: the epoch the checkpoint was written after, if recorded.
    """

    path: Path
    state_dict: dict[str, torch.Tensor]
    ema: bool
    model: str | None
    create_kwargs: dict[str, Any]
    data_args: dict[str, Any]
    epoch: int | None


def _train_args(checkpoint: Any) -> argparse.Namespace | None:
    """train.py's ``args`` (an ``argparse.Namespace`` with ``model`` and ``model_kwargs``), else ``None``.

    The authors' AutoFormer releases also hold a Namespace, but of their own script (no ``model_kwargs``).
    """
    args = checkpoint.get("args") if isinstance(checkpoint, Mapping) else None
    if isinstance(args, argparse.Namespace) and hasattr(args, "model_kwargs") and getattr(args, "model", None):
        return args
    return None


def read_train_checkpoint(path: str | os.PathLike, use_ema: bool = False) -> TrainCheckpoint:
    """Read a train.py checkpoint (or any file :func:`timm_nas._checkpoint.unwrap_state_dict` accepts).

    Args:
        path: ``checkpoint-*.pth.tar``, ``last.pth.tar``, ``model_best.pth.tar``, a bare state dict, an authors'
            release ``.pth`` or a ``.safetensors`` file.
        use_ema: take the EMA weights (``state_dict_ema`` / ``model_ema``); an error if the file has none.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file cannot be read safely, holds no state dict, or has no EMA weights when asked.
    """
    path = Path(path).expanduser()
    raw = load_checkpoint_file(path)
    if use_ema:
        if not (isinstance(raw, Mapping) and any(isinstance(raw.get(k), Mapping) for k in ("state_dict_ema",
                                                                                              "model_ema"))):
            raise ValueError(f"{path} holds no EMA weights ('state_dict_ema' / 'model_ema'); pass use_ema=False "
                             "(drop --use-ema), or train with train.py's --model-ema")
        state = unwrap_state_dict(raw, keys=("state_dict_ema", "model_ema"))
    else:
        state = unwrap_state_dict(raw, keys=("state_dict", "model"))
    args = _train_args(raw)
    model, create_kwargs, data_args = None, {}, {}
    if args is not None:
        model = args.model
        in_chans = args.in_chans if getattr(args, "in_chans", None) is not None else (
            args.input_size[0] if getattr(args, "input_size", None) else 3)
        create_kwargs = dict(num_classes=args.num_classes, in_chans=in_chans)
        if getattr(args, "gp", None) is not None:
            create_kwargs["global_pool"] = args.gp
        create_kwargs.update(dict(args.model_kwargs))
        data_args = {k: getattr(args, k) for k in DATA_ARG_KEYS if getattr(args, k, None) is not None}
    epoch = raw.get("epoch") if isinstance(raw, Mapping) else None
    return TrainCheckpoint(path=path, state_dict=dict(state), ema=use_ema, model=model, create_kwargs=create_kwargs,
                           data_args=data_args, epoch=epoch if isinstance(epoch, int) else None)


def _family_filter_fn(model: nn.Module) -> Any:
    """The ``checkpoint_filter_fn`` next to the model's class (converts original key layouts), if any."""
    module = sys.modules.get(type(model).__module__)
    return getattr(module, "checkpoint_filter_fn", None)


def create_model_from_checkpoint(
        checkpoint: TrainCheckpoint | str | os.PathLike,
        model: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        use_ema: bool = False,
) -> tuple[nn.Module, TrainCheckpoint]:
    """Rebuild the model a checkpoint belongs to and load its weights strictly.

    The model name and architecture arguments come from the checkpoint's train.py ``args``; ``model`` and
    ``model_kwargs`` override them (and are required for files that do not record them). Weights pass through the
    family's ``checkpoint_filter_fn`` (so the authors' original key layout loads too) and are loaded with
    ``strict=True``; a supernet refuses weights of another space with
    :class:`~timm_nas.models._supernet.SupernetStateDictError`.

    Args:
        checkpoint: a :class:`TrainCheckpoint` or a path.
        model: timm model name (default: the one train.py recorded).
        model_kwargs: ``create_model`` arguments overriding the recorded ones (like train.py's ``--model-kwargs``).
        use_ema: with a path, read the EMA weights.

    Returns:
        The model in eval mode and the checkpoint.

    Raises:
        ValueError: if the model is unknown or unrecorded, its arguments are invalid, or the weights do not fit.
    """
    from .._factory import create_model

    ckpt = checkpoint if isinstance(checkpoint, TrainCheckpoint) else read_train_checkpoint(checkpoint, use_ema)
    name = model or ckpt.model
    if not name:
        raise ValueError(f"{ckpt.path} does not record which model it belongs to (no train.py 'args'): pass the "
                         "model name and its arguments, model= and model_kwargs= (--model, --model-kwargs; e.g. "
                         "model='autoformer_supernet_tiny')")
    kwargs = dict(ckpt.create_kwargs, **(model_kwargs or {}))
    try:
        net = create_model(name, pretrained=False, **kwargs)
    except TypeError as e:  # an unknown or wrongly typed argument
        raise ValueError(f"{name} cannot be built with {kwargs}: {e}") from e
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ValueError(f"unknown model {name!r}: {e}") from e
        raise
    state = ckpt.state_dict
    filter_fn = _family_filter_fn(net)
    if filter_fn is not None:
        state = filter_fn(state, net)
    net.load_state_dict(state, strict=True)
    _logger.info("loaded %s%s into %s", ckpt.path, " (EMA)" if ckpt.ema else "", name)
    return net.eval(), ckpt
