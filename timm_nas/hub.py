"""Export a model to a Hub-ready folder, push it, and load it back.

Three verbs, as in ``huggingface_hub``:

* :func:`export` writes ``config.json`` (through timm's own writer: ``architecture``, ``model_args`` with the
  architecture config under its argument name, ``pretrained_cfg``, ``num_classes``, plus a ``timm_nas`` marker
  block), ``model.safetensors`` and a ``README.md`` model card rendered from ``hub_cards/<family>.md``. The
  folder appears atomically: it is written beside the destination and renamed into place.
* :func:`push` uploads such a folder with ``huggingface_hub`` (``create_repo(exist_ok=True)`` then
  ``upload_folder``).
* :func:`load` rebuilds the model with ``timm.create_model('local-dir:...' | 'hf-hub:...')`` after importing
  timm-nas, turning timm's terse failures into errors that say what to do.

:func:`convert_checkpoint` turns an authors' released checkpoint into such a folder through the family's
``checkpoint_filter_fn``; the families it knows are the rows of :data:`FAMILIES`.

The exporter never guesses constructor arguments: the architecture must be recorded in ``model._model_args``
(``timm.create_model`` does it; ``extract()`` and other builders call ``timm.models._input.update_model_args``),
and before anything is written the recorded arguments are checked to rebuild a model with exactly the
exported weights' names and shapes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import logging
import math
import os
import platform
import re
import shutil
import string
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from .version import __version__

__all__ = [
    "export",
    "push",
    "load",
    "read_config",
    "render_card",
    "convert_checkpoint",
    "state_dict_mismatch",
    "HubFamily",
    "FAMILIES",
    "family_of",
    "CARD_KEYS",
    "MARKER_KEY",
    "REPO_ID_PLACEHOLDER",
    "WEIGHTS_NAME",
]

_logger = logging.getLogger(__name__)

#: Top-level ``config.json`` key of the block saying the folder needs timm-nas (timm ignores unknown keys).
MARKER_KEY = "timm_nas"
#: The weights file :func:`export` writes (timm's preferred name, loaded first by ``local-dir:``/``hf-hub:``).
WEIGHTS_NAME = "model.safetensors"
#: Stands for the repo id in a card's example until :func:`push` (or ``card['repo_id']``) fills it in.
REPO_ID_PLACEHOLDER = "YOUR-NAMESPACE/YOUR-MODEL"
#: Keys accepted in :func:`export`'s ``card`` mapping.
CARD_KEYS = ("name", "description", "provenance", "metrics", "datasets", "license", "notes", "repo_id")

_CONFIG_NAME = "config.json"
_README_NAME = "README.md"
_PIP_NAME = "timm-nas"
# Arguments timm's writer leaves out of ``model_args`` (training knobs, not architecture).
_DROP_ARGS = ("drop_rate", "drop_path_rate", "drop_block_rate")
# Arguments timm's writer derives from the model's current state (``get_model_args``); never override them.
_TRAIT_ARGS = ("in_chans", "num_classes", "global_pool", "img_size")
_MAX_LISTED = 12


# ------------------------------------------------------------------------------------------------ families
@dataclasses.dataclass(frozen=True)
class HubFamily:
    """How the Hub tooling treats one model family. Adding a family is adding a row to :data:`FAMILIES`.

    Args:
        name: the family (``'autoformer'``); also its card template ``hub_cards/<name>.md`` and a card tag.
        module: the Python module whose ``@register_model`` entrypoints make the family's models.
        arch_args: generic entrypoint -> the argument that holds its architecture config. Exporting a model of
            such an entrypoint requires that argument in ``model._model_args``. Named published models
            (``autoformer_tiny``) are fixed by their name and need no argument.
        config_types: argument name -> ``'module:Class'`` of the config dataclass it holds (resolved lazily, so a
            family still under construction does not break the others).
        convert_models: the models :func:`convert_checkpoint` tries, in order, when no model is named; the one
            whose weights the filtered checkpoint fits exactly is used. An entry is a timm name or a pair
            ``(timm name, model_args)`` for a generic entrypoint (``("s3_subnet", {"subnet": "s3_tiny"})``).
        filter_fn: name of the pure function in ``module`` mapping an authors' checkpoint to our layout,
            called as ``filter_fn(state_dict, model)``.
        datasets: datasets of the authors' released weights (written into a converted checkpoint's card).
    """

    name: str
    module: str
    arch_args: Mapping[str, str] = dataclasses.field(default_factory=dict)
    config_types: Mapping[str, str] = dataclasses.field(default_factory=dict)
    convert_models: tuple[str | tuple[str, Mapping[str, Any]], ...] = ()
    filter_fn: str = "checkpoint_filter_fn"
    datasets: tuple[str, ...] = ()

    def config_type(self, arg: str) -> type | None:
        """The config dataclass held by argument ``arg``, or ``None`` when the family has none (yet)."""
        spec = self.config_types.get(arg)
        if not spec:
            return None
        module, _, attr = spec.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr, None)
        except ImportError:
            return None
        return cls if isinstance(cls, type) and hasattr(cls, "from_dict") else None

    def checkpoint_filter(self) -> Callable[..., Mapping[str, torch.Tensor]]:
        """The family's ``checkpoint_filter_fn``.

        Raises:
            ValueError: if the family's model module does not provide it yet.
        """
        try:
            fn = getattr(importlib.import_module(self.module), self.filter_fn, None)
        except ImportError as e:
            raise ValueError(f"cannot import {self.module} for the {self.name} family: {e}") from e
        if not callable(fn):
            raise ValueError(f"the {self.name} family has no {self.module}.{self.filter_fn} yet, so its checkpoints "
                             "cannot be converted with this version of timm-nas")
        return fn


#: The families the Hub tooling knows, by name. Entrypoint and argument names follow DESIGN.md.
FAMILIES: dict[str, HubFamily] = {
    "autoformer": HubFamily(
        name="autoformer",
        module="timm_nas.models.autoformer",
        arch_args={"autoformer_subnet": "subnet", "autoformer_supernet": "space"},
        config_types={"subnet": "timm_nas.spaces.autoformer:AutoFormerSubnet",
                      "space": "timm_nas.spaces.autoformer:AutoFormerSpace"},
        convert_models=("autoformer_supernet_tiny", "autoformer_supernet_small", "autoformer_supernet_base"),
        datasets=("imagenet-1k",),
    ),
    "s3": HubFamily(
        name="s3",
        module="timm_nas.models.s3",
        arch_args={"s3_subnet": "subnet", "s3_supernet": "space"},
        config_types={"subnet": "timm_nas.spaces.s3:S3Subnet", "space": "timm_nas.spaces.s3:S3Space"},
        # the released supernets, then the released searched (static) S3-T/S/B
        convert_models=("s3_supernet_tiny", "s3_supernet_small", "s3_supernet_base",
                        ("s3_subnet", {"subnet": "s3_tiny"}), ("s3_subnet", {"subnet": "s3_small"}),
                        ("s3_subnet", {"subnet": "s3_base"})),
        datasets=("imagenet-1k",),
    ),
    "darts": HubFamily(
        name="darts",
        module="timm_nas.models.darts",
        arch_args={"darts_cifar": "genotype", "darts_imagenet": "genotype"},
        config_types={"genotype": "timm_nas.spaces.darts:Genotype", "space": "timm_nas.spaces.darts:DartsSpace"},
    ),
    "spvit": HubFamily(
        name="spvit",
        module="timm_nas.models.spvit",
        arch_args={"spvit_deit": "arch"},
        config_types={"arch": "timm_nas.spaces.spvit:SPViTArch"},
        convert_models=("spvit_deit_tiny", "spvit_deit_small", "spvit_deit_base"),
        datasets=("imagenet-1k",),
    ),
}


def family_of(architecture: str) -> HubFamily | None:
    """The family whose module registers ``architecture`` (``None`` for models from elsewhere, e.g. timm's)."""
    from timm.models import is_model, model_entrypoint

    if not is_model(architecture):
        return None
    module = getattr(model_entrypoint(architecture), "__module__", "")
    for family in FAMILIES.values():
        if family.module == module:
            return family
    return None


def _get_family(name: str) -> HubFamily:
    try:
        return FAMILIES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known families: {sorted(FAMILIES)}") from None


# --------------------------------------------------------------------------------------------- small helpers
def _unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _json_native(value: Any) -> Any:
    """``value`` as JSON-native data: configs via ``to_dict()``, tuples as lists, numeric scalars as numbers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and hasattr(value, "to_dict"):
        return _json_native(value.to_dict())
    if isinstance(value, Mapping):
        return {str(k): _json_native(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_native(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value  # left for timm's writer, which names the argument that is not serialisable


def _is_drop_arg(key: str) -> bool:
    return key in _DROP_ARGS or key.endswith("_drop_rate")


def _listed(items: Sequence[str], limit: int = _MAX_LISTED) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _shapes(state: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


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
        parts.append(f"missing keys ({len(missing)}): {_listed(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_listed(unexpected)}")
    if wrong:
        parts.append(f"shape mismatches ({len(wrong)}): {_listed(wrong)}")
    return "; ".join(parts)


def _versions() -> dict[str, str]:
    import timm

    out = {"timm-nas": __version__, "timm": timm.__version__, "torch": torch.__version__.split("+")[0]}
    for dist in ("safetensors", "huggingface_hub"):
        try:
            out[dist] = importlib.import_module(dist).__version__
        except (ImportError, AttributeError):
            pass
    out["python"] = platform.python_version()
    return out


# ------------------------------------------------------------------------------------------------ card input
def _check_card(card: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate :func:`export`'s ``card`` mapping and return a normalised copy."""
    if card is None:
        return {}
    if not isinstance(card, Mapping):
        raise ValueError(f"card must be a dict with keys {list(CARD_KEYS)}, got {type(card).__name__}")
    unknown = sorted(set(card) - set(CARD_KEYS))
    if unknown:
        raise ValueError(f"unknown card keys {unknown}; allowed keys: {list(CARD_KEYS)}")
    out: dict[str, Any] = {}
    for key in ("name", "description", "license", "notes", "repo_id"):
        if card.get(key) is not None:
            if not isinstance(card[key], str) or not card[key].strip():
                raise ValueError(f"card[{key!r}] must be a non-empty string, got {card[key]!r}")
            out[key] = card[key].strip()
    if "repo_id" in out and not re.fullmatch(r"[\w.-]+/[\w.-]+", out["repo_id"]):
        raise ValueError(f"card['repo_id'] must look like 'namespace/name', got {out['repo_id']!r}")
    if card.get("datasets") is not None:
        ds = card["datasets"]
        ds = [ds] if isinstance(ds, str) else ds
        if not isinstance(ds, (list, tuple)) or not all(isinstance(d, str) and d for d in ds):
            raise ValueError(f"card['datasets'] must be a list of dataset names, got {card['datasets']!r}")
        out["datasets"] = list(ds)
    if card.get("provenance") is not None:
        if not isinstance(card["provenance"], Mapping):
            raise ValueError("card['provenance'] must be a dict (method, space, constraints, seed, score, ...)")
        prov = _json_native(dict(card["provenance"]))
        try:
            json.dumps(prov)
        except (TypeError, ValueError) as e:
            raise ValueError(f"card['provenance'] must hold JSON-native values: {e}") from e
        out["provenance"] = prov
    if card.get("metrics") is not None:
        metrics = card["metrics"]
        if not isinstance(metrics, Mapping):
            raise ValueError("card['metrics'] must be a dict of metric name -> value, with an optional 'dataset'")
        values: dict[str, float] = {}
        dataset = metrics.get("dataset")
        if dataset is not None and (not isinstance(dataset, str) or not dataset):
            raise ValueError(f"card['metrics']['dataset'] must be a dataset name, got {dataset!r}")
        for name, value in metrics.items():
            if name == "dataset":
                continue
            value = _json_native(value)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"card['metrics'][{name!r}] must be a finite number, got {value!r}")
            values[str(name)] = value
        if not values:
            raise ValueError("card['metrics'] holds no metric values")
        out["metrics"] = values
        out["metrics_dataset"] = dataset or (out.get("datasets") or [None])[0]
        if out["metrics_dataset"] is None:
            raise ValueError("card['metrics'] needs the dataset they were measured on: add 'dataset' to the metrics "
                             "or card['datasets']")
    return out


# ------------------------------------------------------------------------------------------------------ export
def _architecture(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None)
    arch = cfg.get("architecture") if isinstance(cfg, Mapping) else None
    if not isinstance(arch, str) or not arch:
        raise ValueError(
            f"{type(model).__name__} has no timm pretrained_cfg['architecture'], so config.json could not name a "
            "model to rebuild; build it with timm.create_model / timm_nas.create_model (or timm's "
            "build_model_with_cfg) instead of calling the class directly")
    from timm.models import is_model

    if not is_model(arch):
        raise ValueError(f"architecture {arch!r} is not registered with timm, so config.json could not be loaded; "
                         "register it with @register_model (importing its package) before exporting")
    return arch


def _export_args(model: nn.Module, arch: str, family: HubFamily | None) -> dict[str, Any]:
    """The explicit ``model_args`` replacements handed to timm's writer (configs as JSON-native dicts)."""
    recorded = dict(getattr(model, "_model_args", None) or {})
    if family is not None and arch in family.arch_args:
        arg = family.arch_args[arch]
        if arg not in recorded:
            raise ValueError(
                f"{arch} takes its architecture as the {arg!r} argument, but this model has no recorded {arg!r} "
                f"(recorded arguments: {sorted(recorded) or 'none'}), so config.json could not rebuild it. Build it "
                f"with timm_nas.create_model({arch!r}, {arg}=...) or, where it is made outside create_model (e.g. "
                f"extract()), record it with timm.models._input.update_model_args(model, {arg}=...)")
    return {k: _json_native(v) for k, v in recorded.items() if k not in _TRAIT_ARGS and not _is_drop_arg(k)}


def _check_rebuild(model: nn.Module, arch: str, model_args: Mapping[str, Any]) -> None:
    """Raise unless ``timm.create_model(arch, **model_args)`` has exactly ``model``'s weight names and shapes."""
    import timm

    try:
        try:
            rebuilt = timm.create_model(arch, pretrained=False, device="meta", **model_args)
        except (NotImplementedError, RuntimeError):  # a model that cannot be built on meta: build it for real
            rebuilt = timm.create_model(arch, pretrained=False, **model_args)
    except Exception as e:
        raise ValueError(f"the model's recorded arguments do not rebuild it: timm.create_model({arch!r}, "
                         f"**{json.dumps(dict(model_args))}) failed with {type(e).__name__}: {e}") from e
    diff = state_dict_mismatch(rebuilt.state_dict(), model.state_dict())
    if diff:
        raise ValueError(
            f"config.json would not rebuild this model: timm.create_model({arch!r}, **model_args) with the recorded "
            f"arguments {sorted(model_args)} gives different weights than the model has ({diff}). The exporter "
            "never guesses arguments: build the model with timm_nas.create_model, or record its constructor "
            "arguments with timm.models._input.update_model_args(model, ...) where it is made (e.g. extract())")


@dataclasses.dataclass(frozen=True)
class _Arch:
    """The architecture config shown on the card: its argument name, JSON dict, typed config and source."""

    arg: str
    config: dict[str, Any]
    obj: Any
    source: str


def _config_object(family: HubFamily, arg: str, value: Any) -> Any:
    """``value`` (a dict, a config, or a name such as a preset or registry key) as the family's config type for
    ``arg``; ``None`` when the family has no such type or the value does not parse."""
    cls = family.config_type(arg)
    if cls is None:
        return None
    make = getattr(cls, "resolve", None) or cls.from_dict
    try:
        return make(value)
    except (TypeError, ValueError, KeyError):
        return None


def _arch_arg(model: nn.Module, arch: str, family: HubFamily, model_args: Mapping[str, Any]) -> str | None:
    """The argument that holds the architecture: the family's for a generic entrypoint, else the model class's
    constructor parameter among the family's config arguments, else a recorded one."""
    if arch in family.arch_args:
        return family.arch_args[arch]
    candidates = list(dict.fromkeys(list(family.arch_args.values()) + list(family.config_types)))
    try:
        params = inspect.signature(type(model).__init__).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    for arg in candidates:
        if arg in params:
            return arg
    return next((arg for arg in candidates if arg in model_args), None)


def _resolve_arch(model: nn.Module, arch: str, family: HubFamily | None,
                  model_args: Mapping[str, Any]) -> _Arch | None:
    """The architecture config for the card and the cost: the recorded argument (a name is resolved), else the
    registry entry of ``arch``, else the model's own config attribute of that name (a named model fixes it)."""
    if family is None:
        return None
    arg = _arch_arg(model, arch, family, model_args)
    if arg is None:
        return None
    value = model_args.get(arg)
    if value is not None:
        obj = _config_object(family, arg, value)
        config = _json_native(obj) if obj is not None else value
        if isinstance(config, Mapping):
            named = f" (the name {json.dumps(value)}, resolved)" if isinstance(value, str) else ""
            return _Arch(arg, dict(config), obj, f'`model_args["{arg}"]` in `config.json`{named}')
    from . import registry

    try:
        value = registry.get_entry(family.name, arch)["model_args"][arg]
    except (KeyError, FileNotFoundError, ValueError):
        value = None
    if value is not None:
        obj = _config_object(family, arg, value)
        return _Arch(arg, _json_native(obj) if obj is not None else value, obj,
                     f"the timm-nas registry entry `{arch}` (`registry/{family.name}.json`)")
    attr = getattr(model, arg, None)
    if dataclasses.is_dataclass(attr) and not isinstance(attr, type) and hasattr(attr, "to_dict"):
        return _Arch(arg, _json_native(attr), attr, f"the model's `{arg}`, fixed by the timm name `{arch}`")
    return None


def _accepted_kwargs(fn: Callable[..., Any], available: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``available`` that ``fn`` names as parameters (a cost formula's ``num_classes``, ...)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    named = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in available.items() if k in named}


def _cost(model: nn.Module, cfg: Any, model_args: Mapping[str, Any], input_size: Sequence[int]) -> dict[str, Any]:
    """Params and MACs for the card.

    Parameters are counted on the model. MACs come from the config type's analytic formula in
    :mod:`timm_nas.cost` when there is one and its parameter formula, given the same recorded arguments,
    reproduces the model's parameter count (so an entrypoint default missing from ``model_args`` cannot skew
    the formula); otherwise they are measured on the model; otherwise left out with the reason.
    """
    from . import cost

    params = cost.real_params(model)
    out: dict[str, Any] = {"params": params, "input_size": list(input_size)}
    fns = None
    if cfg is not None:
        try:
            fns = cost.analytic_fns(cfg)
        except TypeError:  # no formula for this config type
            fns = None
    if fns is not None:
        extra = {k: v for k, v in model_args.items() if k != "img_size" or isinstance(v, int)}
        extra.setdefault("img_size", int(input_size[-1]))
        try:
            analytic_params = cost.count_params(cfg, **_accepted_kwargs(fns[0], extra))
            macs = cost.count_macs(cfg, **_accepted_kwargs(fns[1], extra))
        except (TypeError, ValueError, KeyError) as e:
            analytic_params, macs = None, None
            _logger.info("analytic cost of %s failed (%s); measuring instead", type(cfg).__name__, e)
        if analytic_params == params:
            out["macs"] = macs
            out["macs_source"] = f"analytic ({type(cfg).__name__} formula in timm_nas.cost)"
            return out
        if analytic_params is not None:
            _logger.info("analytic params of %s (%d) differ from the model's (%d): measuring MACs instead",
                         type(cfg).__name__, analytic_params, params)
    if any(t.is_meta for t in model.state_dict().values()):
        out["macs_note"] = ("not counted: the model has no weights (meta device) to measure, and no analytic "
                            "formula fits it")
        return out
    was_training = model.training
    try:
        model.eval()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        out["macs"] = cost.measure_macs(model, torch.zeros(1, *input_size, device=device))
        out["macs_source"] = "measured (timm_nas.cost.measure_macs: fvcore with a scaled_dot_product_attention handle)"
    except Exception as e:  # a model fvcore cannot trace: say so rather than fail the export
        _logger.warning("could not measure MACs of %s: %s", type(model).__name__, e)
        out["macs_note"] = f"not counted: measuring failed ({type(e).__name__})"
    finally:
        model.train(was_training)
    return out


def _check_destination(folder: Path, overwrite: bool) -> None:
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise FileExistsError(f"{folder} exists and is not a folder; choose another destination")
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{folder} is not empty; pass overwrite=True (timm-nas ... --overwrite) to replace "
                                  "it, or choose another folder")
        if not (folder / _CONFIG_NAME).is_file():
            raise FileExistsError(f"refusing to replace {folder}: it is not empty and holds no {_CONFIG_NAME}, so it "
                                  "is not an exported model folder; remove it yourself or choose another folder")


def _atomic_folder(folder: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` on a fresh folder beside ``folder``, then rename it to ``folder`` (replacing an
    existing one only once the new one is complete). On any error the partial folder is removed and ``folder``
    is left as it was."""
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{folder.name}.partial-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        write(tmp)
        if folder.exists():
            old = parent / f".{folder.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(folder, old)
            try:
                os.replace(tmp, folder)
            except BaseException:
                os.replace(old, folder)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _save_weights(state: Mapping[str, torch.Tensor], path: Path) -> None:
    import safetensors.torch

    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, t in state.items():
        t = t.detach().to("cpu").contiguous()
        storage = t.untyped_storage().data_ptr()
        if t.numel() and storage in seen:  # safetensors refuses tensors that share memory: store a copy
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        tensors[key] = t
    safetensors.torch.save_file(tensors, str(path), metadata={"format": "pt"})


def export(model: nn.Module, folder: str | os.PathLike, *, card: Mapping[str, Any] | None = None,
           overwrite: bool = False) -> Path:
    """Write a Hub-ready folder: ``config.json``, ``model.safetensors`` (when the model has weights) and
    ``README.md``.

    ``timm.create_model('local-dir:<folder>', pretrained=True)`` (after ``import timm_nas``) rebuilds the same
    model from it, and so does ``hf-hub:<repo>`` after :func:`push`.

    Args:
        model: a model built by ``timm.create_model`` / ``timm_nas.create_model``, or one whose constructor
            arguments were recorded with ``timm.models._input.update_model_args`` (e.g. ``supernet.extract(cfg)``).
            A model on the meta device is exported as an architecture without weights.
        folder: the destination; created with its parents. It must be absent or empty unless ``overwrite``.
        card: optional model-card information, keys from :data:`CARD_KEYS`: ``name`` (the card's title and
            model-index name; default: the folder name), ``description``, ``provenance`` (search method, space,
            constraints, seed, score, ...), ``metrics`` (name -> value, plus ``dataset``), ``datasets``,
            ``license``, ``notes`` and ``repo_id`` (used in the card's example; :func:`push` fills it otherwise).
        overwrite: replace an existing non-empty folder that holds a previous export.

    Returns:
        The folder's path.

    Raises:
        ValueError: the model's recorded arguments are missing or do not rebuild it, or ``card`` is malformed.
        FileExistsError: ``folder`` is not empty and ``overwrite`` is false (nothing is changed).
    """
    from timm.models._hub import save_config_for_hf

    model = _unwrap(model)
    folder = Path(folder)
    info = _check_card(card)
    _check_destination(folder, overwrite)
    arch = _architecture(model)
    family = family_of(arch)
    overrides = _export_args(model, arch, family)

    # timm's writer decides the final model_args (recorded args + current in_chans/num_classes/pool/img_size);
    # it runs once, into the staging folder, and the result is checked to rebuild the model before it is kept.
    state = model.state_dict()
    has_weights = bool(state) and not any(t.is_meta for t in state.values())
    arch_info = _resolve_arch(model, arch, family, overrides)
    marker = {
        "version": __version__,
        "family": family.name if family else None,
        "arch_arg": arch_info.arg if arch_info else None,
        "install": f"pip install '{_PIP_NAME}>={__version__}'",
        "import": "import timm_nas",
        "weights": WEIGHTS_NAME if has_weights else None,
        "versions": _versions(),
    }

    def write(tmp: Path) -> None:
        partial_config = tmp / f".{_CONFIG_NAME}.partial"
        try:
            save_config_for_hf(model, str(partial_config), model_config={MARKER_KEY: marker}, model_args=overrides)
        except ValueError as e:
            raise ValueError(f"cannot write config.json for {arch}: {e}") from e
        config = json.loads(partial_config.read_text(encoding="utf-8"))
        _check_rebuild(model, arch, config.get("model_args", {}))
        input_size = config["pretrained_cfg"].get("input_size") or (3, 224, 224)
        cost = _cost(model, arch_info.obj if arch_info else None, config.get("model_args", {}), input_size)
        readme = render_card(config, dict(card or {}, name=info.get("name") or folder.name), cost=cost,
                             architecture=(arch_info.config, arch_info.source) if arch_info else None)
        if has_weights:  # weights before config.json: a folder cut short never holds a config that loads
            _save_weights(state, tmp / WEIGHTS_NAME)
        (tmp / _README_NAME).write_text(readme, encoding="utf-8")
        os.replace(partial_config, tmp / _CONFIG_NAME)

    _atomic_folder(folder, write)
    _logger.info("exported %s to %s", arch, folder)
    return folder


# -------------------------------------------------------------------------------------------------------- card
def _template(family: str | None) -> tuple[dict[str, Any], string.Template]:
    import yaml

    from ._resources import data_dir

    folder = data_dir("hub_cards")
    path = folder / f"{family}.md" if family else folder / "generic.md"
    if not path.is_file():
        path = folder / "generic.md"
    text = path.read_text(encoding="utf-8")
    m = re.match(r"^---\n(.*?)\n---\n(.*)$", text, flags=re.S)
    if not m:
        raise ValueError(f"card template {path} must start with YAML front matter between '---' lines")
    meta = yaml.safe_load(m.group(1)) or {}
    return meta, string.Template(m.group(2))


def _fmt_count(n: int | float, unit: str = "") -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n:g} {unit}".strip()


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _arch_section(config: Mapping[str, Any], architecture: tuple[Mapping[str, Any], str] | None) -> str:
    marker = config.get(MARKER_KEY) or {}
    arch = config["architecture"]
    model_args = config.get("model_args") or {}
    arg = marker.get("arch_arg")
    cfg: Any = None
    where = ""
    if architecture is not None:
        cfg, where = architecture
    elif arg and isinstance(model_args.get(arg), Mapping):
        cfg, where = model_args[arg], f'`model_args["{arg}"]` in `config.json`'
    other = {k: v for k, v in model_args.items() if k != arg}
    lines = [f"timm architecture: `{arch}`."]
    if other:
        lines += ["", _table(("argument", "value"), sorted(other.items()))]
    if not isinstance(cfg, Mapping):
        lines += ["", "The architecture is fixed by the timm name: it has no separate architecture config."]
        return "\n".join(lines)
    # Lists with one value per layer (their length is the config's int depth) form a per-layer table; every
    # other field is one row (long nested values, e.g. a DARTS cell, are left to the JSON below).
    depth = cfg.get("depth")
    per_layer = [k for k, v in cfg.items() if isinstance(depth, int) and isinstance(v, list) and len(v) == depth
                 and all(not isinstance(x, (list, dict)) for x in v)]
    rows = [(k, v if len(_cell(v)) <= 120 else "(see the JSON below)") for k, v in cfg.items() if k not in per_layer]
    lines += ["", f"The architecture config, {where}:"]
    if rows:
        lines += ["", _table(("field", "value"), rows)]
    if per_layer:
        lines += ["", _table(("layer", *per_layer), ([i, *(cfg[k][i] for k in per_layer)] for i in range(depth)))]
    lines += ["", "```json", json.dumps(cfg, indent=1), "```"]
    return "\n".join(lines)


def _cost_section(cost: Mapping[str, Any] | None) -> str:
    if not cost:
        return "Not counted for this card."
    size = "x".join(str(s) for s in cost.get("input_size", [])[1:])
    lines = [f"- Parameters: {_fmt_count(cost['params'])} ({cost['params']:,}), counted on the model "
             "(`timm_nas.cost.real_params`)."]
    if cost.get("macs") is not None:
        lines.append(f"- MACs: {_fmt_count(cost['macs'])} ({cost['macs']:,}) per {size} image, "
                     f"{cost.get('macs_source', '')}.")
    else:
        lines.append(f"- MACs: {cost.get('macs_note', 'not counted')}.")
    return "\n".join(lines)


def _usage_section(repo_id: str) -> str:
    return "\n".join([
        "```python",
        "import timm_nas  # noqa: F401  registers the timm-nas architectures with timm (pip install timm-nas)",
        "import timm",
        "import torch",
        "",
        f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()',
        "data_config = timm.data.resolve_model_data_config(model)",
        "transform = timm.data.create_transform(**data_config, is_training=False)  # for PIL images",
        "with torch.no_grad():",
        '    logits = model(torch.randn(1, *data_config["input_size"]))',
        "print(logits.shape)",
        "```",
        "",
        "A local copy of this folder loads the same way with `timm.create_model(\"local-dir:/path/to/folder\", "
        "pretrained=True)`, and `timm_nas.create_model(...)` is the same call with the import guaranteed. "
        "Without `import timm_nas`, timm only reports `Unknown model`.",
    ])


def render_card(config: Mapping[str, Any], card: Mapping[str, Any] | None = None, *,
                cost: Mapping[str, Any] | None = None,
                architecture: tuple[Mapping[str, Any], str] | None = None) -> str:
    """Render a folder's ``README.md`` from its ``config.json`` content and card information.

    Args:
        config: the ``config.json`` dict written by :func:`export` (``architecture``, ``model_args``,
            ``pretrained_cfg`` and the ``timm_nas`` marker).
        card: card information as in :func:`export` (validated here too).
        cost: ``params``, ``input_size`` and ``macs`` with ``macs_source`` (or ``macs_note``), as computed by
            :func:`export`; omitted from the card when ``None``.
        architecture: ``(config dict, where it comes from)`` for the architecture table; default: the marker's
            ``arch_arg`` entry of ``model_args``, if any.

    Returns:
        The card: YAML front matter (``library_name: timm``, tags with ``timm-nas`` and the family, license,
        datasets, and a ``model-index`` when metrics are given) and the Markdown body of the family's template.
    """
    import yaml

    info = _check_card(card)
    marker = config.get(MARKER_KEY) or {}
    family = marker.get("family")
    arch = config["architecture"]
    name = info.get("name") or arch
    meta, body = _template(family)

    tags = list(meta.get("tags") or [])
    for tag in ("timm", "timm-nas", family):
        if tag and tag not in tags:
            tags.append(tag)
    meta["tags"] = tags
    meta["library_name"] = "timm"
    # the card's, else the model's own pretrained_cfg's, else the family's default (its original code's license)
    license_ = info.get("license") or (config.get("pretrained_cfg") or {}).get("license") or meta.get("license")
    if license_:
        meta["license"] = license_
    datasets = list(info.get("datasets") or [])
    if info.get("metrics_dataset") and info["metrics_dataset"] not in datasets:
        datasets.append(info["metrics_dataset"])
    if datasets:
        meta["datasets"] = datasets
    if info.get("metrics"):
        ds = info["metrics_dataset"]
        meta["model-index"] = [{
            "name": name,
            "results": [{
                "task": {"type": "image-classification", "name": "Image Classification"},
                "dataset": {"name": ds, "type": ds},
                "metrics": [{"type": k, "value": v, "name": k} for k, v in info["metrics"].items()],
            }],
        }]

    if info.get("metrics"):
        results = _table(("metric", "value", "dataset"),
                         ((k, v, info["metrics_dataset"]) for k, v in info["metrics"].items()))
    else:
        results = "No measured result is recorded for these weights."
    if info.get("provenance"):
        provenance = _table(("key", "value"), info["provenance"].items())
    else:
        provenance = "These weights do not come from a recorded architecture search."
    versions = marker.get("versions") or _versions()
    weights_note = "" if marker.get("weights", WEIGHTS_NAME) else (
        "\n\n**This folder holds the architecture only, without weights**: load it with `pretrained=False`.")
    text = body.substitute(
        title=name,
        summary=(info.get("description") or f"`{arch}`, a timm model made with timm-nas.") + weights_note,
        usage=_usage_section(info.get("repo_id") or REPO_ID_PLACEHOLDER),
        architecture=_arch_section(config, architecture),
        cost=_cost_section(cost),
        results=results,
        provenance=provenance,
        notes=f"## Notes\n\n{info['notes']}\n" if info.get("notes") else "",
        versions=_table(("package", "version"), versions.items()),
        install=f"pip install '{_PIP_NAME}>={marker.get('version', __version__)}'",
    )
    text = re.sub(r"\n{3,}", "\n\n", text)  # an empty optional section leaves no gap
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return f"---\n{front}---\n{text.strip()}\n"


# -------------------------------------------------------------------------------------------------- reading
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
        return Path(hf_hub_download(repo_id, _CONFIG_NAME, revision=revision, cache_dir=cache_dir))
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
        raise FileNotFoundError(f"Hub repository {repo_id!r} has no {_CONFIG_NAME}: it is not a timm model "
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
    path = local / _CONFIG_NAME if local is not None else _hub_config_file(where[len("hf-hub:"):], cache_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no {_CONFIG_NAME} in {where}: it is not an exported model folder "
                                "(timm_nas.hub.export writes one)")
    label = f"{_CONFIG_NAME} of {where}"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{label} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); re-export the "
                         "model with timm_nas.hub.export") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{label} is not UTF-8 text; re-export the model with timm_nas.hub.export") from e
    return _validate_config(cfg, label)


def _unknown_architecture(arch: str, cfg: Mapping[str, Any], where: str) -> str:
    marker = cfg.get(MARKER_KEY)
    if isinstance(marker, Mapping):
        family = f" ({marker['family']} family)" if marker.get("family") else ""
        wanted = marker.get("version") or __version__
        return (f"{where} holds architecture {arch!r}{family}, exported with timm-nas {wanted}, but the installed "
                f"timm-nas {__version__} does not register it; install a version that does: "
                f"{marker.get('install') or f'pip install -U {_PIP_NAME}'} (then import timm_nas)")
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

    from . import models  # noqa: F401  (registers timm-nas's models)

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


# ---------------------------------------------------------------------------------------------------- push
# The example line :func:`render_card` writes; push points it at the repo (the placeholder or an earlier repo).
_USAGE_LINE = re.compile(r'(timm\.create_model\("hf-hub:)([^"]+)(", pretrained=True\))')


def _fill_repo_id(readme: Path, repo_id: str) -> None:
    if not readme.is_file():
        _logger.warning("%s has no %s: the repo will have no model card", readme.parent, _README_NAME)
        return
    text = readme.read_text(encoding="utf-8")
    filled = _USAGE_LINE.sub(lambda m: m.group(1) + repo_id + m.group(3), text)
    if filled == text:
        return
    tmp = readme.with_name(f".{readme.name}.{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(filled, encoding="utf-8")
        os.replace(tmp, readme)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        _logger.warning("could not write the repo id into %s (%s); the card's example keeps its old repo id",
                        readme, e)


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def _leaks(e: BaseException, token: str) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if token in str(cur) or token in repr(cur.args):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def push(folder: str | os.PathLike, repo_id: str, *, private: bool = False, token: str | None = None,
         commit_message: str | None = None) -> str:
    """Upload an exported folder to a Hub model repository (created if needed).

    The card's example loads ``hf-hub:<repo>``; before the upload that line of the folder's ``README.md`` is
    pointed at ``repo_id`` (replacing :data:`REPO_ID_PLACEHOLDER` or the repo of an earlier push).

    Args:
        folder: a folder written by :func:`export` (checked first: its ``config.json`` must be valid).
        repo_id: ``'namespace/name'``.
        private: create the repository private (an existing repository keeps its visibility).
        token: a Hub token; ``None`` uses ``huggingface_hub``'s usual resolution (``HF_TOKEN``, ``hf auth login``).
            It is never logged, written or shown in errors.
        commit_message: the commit's message (default: "Upload <architecture> with timm-nas <version>").

    Returns:
        The repository's URL.

    Raises:
        FileNotFoundError / ValueError: the folder is not a valid export.
        RuntimeError: the Hub refused or could not be reached (the message has any token masked).
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not isinstance(repo_id, str) or not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise ValueError(f"repo_id must look like 'namespace/name', got {repo_id!r}")
    cfg = read_config(folder)
    if not any(folder.glob("*.safetensors")):
        _logger.warning("%s holds no weights: pushing the architecture only", folder)
    _fill_repo_id(folder / _README_NAME, repo_id)
    message = commit_message or f"Upload {cfg['architecture']} with timm-nas {__version__}"
    try:
        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=message)
    except Exception as e:
        text = _scrub(f"{type(e).__name__}: {e}", token)
        error = RuntimeError(f"push of {folder} to {repo_id} failed: {text}")
        if token and _leaks(e, token):
            raise error from None  # the original exception (and its chain) would show the token
        raise error from e
    _logger.info("pushed %s to %s", folder, url)
    return str(url)


# ------------------------------------------------------------------------------------------------- convert
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    with :func:`export`.

    Args:
        family: a key of :data:`FAMILIES` (``'autoformer'``, ...).
        checkpoint: the ``.pth`` / ``.safetensors`` file.
        out: the destination folder.
        model_name: the timm model to load into; default: the largest of the family's ``convert_models`` whose
            weights the checkpoint fits (a filter that slices makes every smaller architecture fit too).
        model_args: arguments for the model (e.g. ``{"space": {...}, "img_size": 384}`` for a supernet of a
            space that has no named entrypoint); recorded in ``config.json`` like any ``create_model`` argument.
        overwrite: replace an existing export at ``out``.
        card: extra card information (see :func:`export`); the source file and its SHA-256 are added to the
            provenance, and the family's datasets when none are given.

    Raises:
        ValueError: unknown family, no fitting model (each candidate's mismatch listed), or a named model the
            checkpoint does not fit (missing / unexpected keys and shape mismatches listed).
        FileNotFoundError: the checkpoint does not exist.
    """
    import timm

    from ._checkpoint import load_checkpoint_file, unwrap_state_dict
    from . import models  # noqa: F401

    fam = _get_family(family)
    checkpoint = Path(checkpoint)
    out = Path(out)
    _check_destination(out, overwrite)  # fail before the (possibly slow) read
    filter_fn = fam.checkpoint_filter()
    state = unwrap_state_dict(load_checkpoint_file(checkpoint))
    candidates = [(model_name, {})] if model_name else [
        (c, {}) if isinstance(c, str) else (c[0], dict(c[1])) for c in fam.convert_models]
    if not candidates:
        raise ValueError(f"the {fam.name} family has no default model for conversion: name one with --model")
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
            raise ValueError(f"{checkpoint.name} does not fit {model_name} after {fam.module}.{fam.filter_fn}: "
                             f"{reasons[model_name]}")
        listed = "; ".join(f"{n}: {r}" for n, r in reasons.items())
        raise ValueError(f"{checkpoint.name} fits none of the {fam.name} models {list(reasons)} ({listed}); name "
                         "the right one with --model")
    model = timm.create_model(chosen, pretrained=False, **chosen_args)
    model.load_state_dict(filter_fn(dict(state), model), strict=True)
    model.eval()
    info = dict(card or {})
    provenance = {"method": f"converted from the authors' release with timm-nas {__version__}",
                  "checkpoint": checkpoint.name, "sha256": _sha256(checkpoint),
                  "filter": f"{fam.module}.{fam.filter_fn}", "model": label}
    provenance.update(info.get("provenance") or {})
    info["provenance"] = provenance
    if not info.get("datasets") and fam.datasets:
        info["datasets"] = list(fam.datasets)
    return export(model, out, card=info, overwrite=overwrite)
