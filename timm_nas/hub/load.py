"""Read an exported folder's ``config.json`` and rebuild its model with ``timm.create_model('local-dir:...' |
'hf-hub:...')`` after importing timm-nas, turning timm's terse failures into errors that say what to do."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch.nn as nn

from ..version import __version__
from ._common import CONFIG_NAME, MARKER_KEY, PIP_NAME, WEIGHTS_NAME, state_dict_mismatch

__all__ = ["load", "read_config"]


def _parse_source(source: str | os.PathLike) -> tuple[str, str, Path | None]:
    """``(timm model name, human-readable location, local folder or None)`` of a load source."""
    text = os.fspath(source)
    if text.startswith("hf-hub:") or text.startswith("hf_hub:"):
        repo = text.split(":", 1)[1]
        if not repo:
            raise ValueError(f"{text!r} names no repository; use 'hf-hub:namespace/name'")
        return f"hf-hub:{repo}", f"hf-hub:{repo}", None
    path = Path(text[len("local-dir:"):] if text.startswith("local-dir:") else text).expanduser()
    if not path.is_dir():
        hint = "" if text.startswith("local-dir:") or "/" not in text else \
            f"; for a Hub repository write 'hf-hub:{text}'"
        raise FileNotFoundError(f"model folder not found: {path}{hint}")
    path = path.resolve()
    return f"local-dir:{path}", str(path), path


def _hub_config_file(repo: str, cache_dir: str | os.PathLike | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from timm.models._hub import hf_split

    repo_id, revision = hf_split(repo)
    try:
        return Path(hf_hub_download(repo_id, CONFIG_NAME, revision=revision, cache_dir=cache_dir))
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(
            f"hf-hub:{repo} is not in the local Hugging Face cache and the Hub cannot be used (HF_HUB_OFFLINE is set "
            "or the Hub is unreachable): download it once while online, or unset HF_HUB_OFFLINE") from e
    except RepositoryNotFoundError as e:
        raise FileNotFoundError(f"Hub repository {repo_id!r} not found (or private): check the name, and log in "
                                "(hf auth login / HF_TOKEN) if it is private") from e
    except RevisionNotFoundError as e:
        raise FileNotFoundError(f"revision {revision!r} not found in Hub repository {repo_id!r}") from e
    except EntryNotFoundError as e:
        raise FileNotFoundError(f"Hub repository {repo_id!r} has no {CONFIG_NAME}: it is not a timm model "
                                "repository") from e


def _validate_config(cfg: Any, where: str) -> dict[str, Any]:
    if not isinstance(cfg, dict):
        raise ValueError(f"{where} must hold a JSON object, got {type(cfg).__name__}")
    arch = cfg.get("architecture")
    if not isinstance(arch, str) or not arch:
        raise ValueError(f"{where} has no 'architecture' (a timm model name); it was not written by "
                         "timm_nas.hub.export or timm's save_for_hf: re-export the model")
    for key in ("model_args", "pretrained_cfg", MARKER_KEY):
        if key in cfg and not isinstance(cfg[key], dict):
            raise ValueError(f"{where}: {key!r} must be a JSON object, got {type(cfg[key]).__name__}; re-export "
                             "the model")
    if "num_classes" in cfg and (isinstance(cfg["num_classes"], bool) or not isinstance(cfg["num_classes"], int)):
        raise ValueError(f"{where}: 'num_classes' must be an integer, got {cfg['num_classes']!r}")
    return cfg


def read_config(source: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read and check the ``config.json`` of a folder (``'local-dir:...'`` or a path) or a Hub repo
    (``'hf-hub:...'``, through the Hugging Face cache).

    Raises:
        FileNotFoundError: no folder, no repo, no ``config.json``, or (offline) nothing in the cache.
        ValueError: ``config.json`` is not valid JSON or lacks what timm needs (says what is wrong).
    """
    _, where, local = _parse_source(source)
    path = local / CONFIG_NAME if local is not None else _hub_config_file(where[len("hf-hub:"):], cache_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {where}: it is not an exported model folder "
                                "(timm_nas.hub.export writes one)")
    label = f"{CONFIG_NAME} of {where}"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{label} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); re-export the "
                         "model with timm_nas.hub.export") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{label} is not UTF-8 text; re-export the model with timm_nas.hub.export") from e
    return _validate_config(cfg, label)


def _newer(a: str, b: str) -> bool:
    """Whether version ``a`` is newer than ``b`` (PEP 440; an unreadable version counts as newer)."""
    try:
        from packaging.version import Version

        return Version(a) > Version(b)
    except Exception:
        return a != b


def _unknown_architecture(arch: str, cfg: Mapping[str, Any], where: str) -> str:
    marker = cfg.get(MARKER_KEY)
    if isinstance(marker, Mapping):
        import difflib

        import timm

        family = f" ({marker['family']} family)" if marker.get("family") else ""
        wanted = str(marker.get("version") or __version__)
        if _newer(wanted, __version__):
            return (f"{where} holds architecture {arch!r}{family}, exported with timm-nas {wanted}, but the installed "
                    f"timm-nas {__version__} does not register it; install a version that does: "
                    f"{marker.get('install') or f'pip install -U {PIP_NAME}'} (then import timm_nas)")
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        return (f"{where} holds architecture {arch!r}{family}, which timm-nas {__version__} does not register "
                f"although the folder was exported with timm-nas {wanted}: its config.json was edited, or comes from "
                "a development version" + (f"; registered names close to it: {close}" if close else ""))
    return (f"{where} holds architecture {arch!r}, which no imported package registers with timm; install and import "
            f"the package that provides it (timm-nas's models appear after `import timm_nas`)")


def _weights_file(local: Path | None, where: str, cache_dir: str | os.PathLike | None) -> Path | None:
    """The safetensors weights file of a folder or (cached) repo, if there is one; for diagnostics only."""
    if local is not None:
        path = local / WEIGHTS_NAME
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from timm.models._hub import hf_split

    repo_id, revision = hf_split(where[len("hf-hub:"):])
    try:
        return Path(hf_hub_download(repo_id, WEIGHTS_NAME, revision=revision, cache_dir=cache_dir))
    except Exception:  # noqa: BLE001 (diagnostics must never hide the original error)
        return None


def _diagnose_weights(name: str, local: Path | None, where: str, kwargs: Mapping[str, Any]) -> str:
    """The mismatch between the model timm builds and the stored weights ('' if it cannot be worked out)."""
    import timm
    from safetensors import safe_open

    path = _weights_file(local, where, kwargs.get("cache_dir"))
    if path is None:
        return ""
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        expected = timm.create_model(name, pretrained=False, **dict(kwargs, device="meta")).state_dict()
    except Exception:  # noqa: BLE001
        return ""
    return state_dict_mismatch(expected, stored)


def load(source: str | os.PathLike, *, pretrained: bool = True, **kwargs: Any) -> nn.Module:
    """Rebuild an exported model: ``timm.create_model(source, pretrained=pretrained, **kwargs)`` with timm-nas
    imported, and clear errors where timm's would be terse.

    Args:
        source: ``'local-dir:/path'``, ``'hf-hub:namespace/name[@revision]'`` or a folder path.
        pretrained: load the stored weights (``False``: the architecture with fresh weights).
        **kwargs: passed to ``timm.create_model`` (explicit arguments win over ``config.json``'s ``model_args``).

    Raises:
        FileNotFoundError: no such folder / repo / file, no weights when ``pretrained``, or (offline) a cold cache.
        ValueError: ``config.json`` is malformed, names an architecture that is not registered (saying what to
            install when the timm-nas marker is present), its ``model_args`` fail the model's validation, or the
            stored weights do not fit the model (keys and shapes listed).
    """
    import timm
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    from .. import models  # noqa: F401  (registers timm-nas's models)

    name, where, local = _parse_source(source)
    cfg = read_config(source, cache_dir=kwargs.get("cache_dir"))
    arch = cfg["architecture"]
    if not timm.is_model(arch):
        raise ValueError(_unknown_architecture(arch, cfg, where))
    marker = cfg.get(MARKER_KEY) or {}
    if pretrained and ((MARKER_KEY in cfg and not marker.get("weights")) or
                       (local is not None and not any(local.glob("*.safetensors")) and not any(
                           local.glob(p) for p in ("*.bin", "*.pth", "*.pth.tar")))):
        raise FileNotFoundError(f"{where} holds no weights (architecture only); load it with pretrained=False to "
                                "get the architecture with freshly initialised weights")
    # Build the architecture alone first (on meta: no memory, no weights), so an argument error is reported as
    # one and not confused with weights that do not fit.
    try:
        timm.create_model(name, pretrained=False, **dict(kwargs, device="meta"))
    except (ValueError, TypeError, KeyError) as e:
        args = json.dumps(cfg.get("model_args", {}))
        given = f" and the arguments given ({', '.join(sorted(kwargs))})" if kwargs else ""
        raise ValueError(f"{arch} could not be built from the model_args in {where}'s config.json ({args}){given}: "
                         f"{e.args[0] if e.args else e}") from e
    except (NotImplementedError, RuntimeError):  # a model that cannot be built on meta: the real build reports
        pass
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(f"the weights of {where} are not in the local Hugging Face cache and the Hub cannot "
                                "be used (HF_HUB_OFFLINE is set or the Hub is unreachable): download them once while "
                                "online, or unset HF_HUB_OFFLINE") from e
    except EntryNotFoundError as e:
        raise FileNotFoundError(f"{where} has no weights file; load it with pretrained=False") from e
    except (RuntimeError, ValueError) as e:
        # timm's strict load_state_dict raises RuntimeError; a family's pretrained_filter_fn may raise ValueError
        if not pretrained or (isinstance(e, RuntimeError) and "loading state_dict" not in str(e)):
            raise
        detail = _diagnose_weights(name, local, where, kwargs)
        if not detail:
            raise ValueError(f"loading the weights of {where} into {arch} failed: {e}") from e
        raise ValueError(f"the weights in {where} do not fit {arch} as built from its config.json model_args "
                         f"({detail}); the folder was changed after export or the model_args were edited: re-export "
                         "the model") from e

