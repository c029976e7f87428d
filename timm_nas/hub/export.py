"""Export a model to a Hub-ready folder: ``config.json`` through timm's own writer, ``model.safetensors`` and the
model card, after checking that the recorded constructor arguments rebuild the model exactly.

The exporter never guesses constructor arguments: the architecture must be recorded in ``model._model_args``
(``timm.create_model`` does it; a model made another way records it with :func:`timm_nas.hub.record_model_args`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from ..version import __version__
from ._common import (
    CONFIG_NAME,
    MARKER_KEY,
    PIP_NAME,
    README_NAME,
    WEIGHTS_NAME,
    atomic_folder,
    check_destination,
    json_native,
    state_dict_mismatch,
    unwrap,
    versions,
)
from ..family import Family
from ._family import family_of
from .card import check_card, render_card

__all__ = ["export"]

_logger = logging.getLogger(__name__)

# Arguments timm's writer leaves out of ``model_args`` (training knobs, not architecture).
_DROP_ARGS = ("drop_rate", "drop_path_rate", "drop_block_rate")
# Arguments timm's writer derives from the model's current state (``get_model_args``); never override them.
_TRAIT_ARGS = ("in_chans", "num_classes", "global_pool", "img_size")


def _is_drop_arg(key: str) -> bool:
    return key in _DROP_ARGS or key.endswith("_drop_rate")


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


def _export_args(model: nn.Module, arch: str, family: Family | None) -> dict[str, Any]:
    """The explicit ``model_args`` replacements handed to timm's writer (configs as JSON-native dicts)."""
    recorded = dict(getattr(model, "_model_args", None) or {})
    if family is not None and arch in family.arch_args:
        arg = family.arch_args[arch]
        if arg not in recorded:
            raise ValueError(
                f"{arch} takes its architecture as the {arg!r} argument, but this model has no recorded {arg!r} "
                f"(recorded arguments: {sorted(recorded) or 'none'}), so config.json could not rebuild it. Build it "
                f"with timm_nas.create_model({arch!r}, {arg}=...) or, where it is made outside create_model (e.g. "
                f"extract()), record it with timm_nas.hub.record_model_args(model, {arg}=...)")
    return {k: json_native(v) for k, v in recorded.items() if k not in _TRAIT_ARGS and not _is_drop_arg(k)}


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
            "arguments with timm_nas.hub.record_model_args(model, ...) where it is made (e.g. extract())")


# -------------------------------------------------------------------------------------- the card's architecture
@dataclasses.dataclass(frozen=True)
class _Arch:
    """The architecture config shown on the card: its argument name, JSON dict, typed config and source."""

    arg: str
    config: dict[str, Any]
    obj: Any
    source: str


def _config_object(family: Family, arg: str, value: Any) -> Any:
    """``value`` (a dict, a config, or a name such as a preset or registry key) as the family's config type for
    ``arg``; ``None`` when the family declares no such type or the value does not parse."""
    cls = family.config_type(arg)
    if cls is None:
        return None
    make = getattr(cls, "resolve", None) or cls.from_dict
    try:
        return make(value)
    except (TypeError, ValueError, KeyError):
        return None


def _arch_arg(model: nn.Module, arch: str, family: Family, model_args: Mapping[str, Any]) -> str | None:
    """The argument that holds the architecture, from the family's declarations only: the declared argument of a
    generic entrypoint; for a named model (fixed by its timm name), the first declared argument that is recorded,
    else the first whose config the model holds under that name (``model.subnet``, ``model.space``)."""
    if arch in family.arch_args:
        return family.arch_args[arch]
    declared = list(dict.fromkeys([*family.arch_args.values()]))
    for arg in declared:
        if arg in model_args:
            return arg
    for arg in declared:
        cls = family.config_type(arg)
        if cls is not None and isinstance(getattr(model, arg, None), cls):
            return arg
    return None


def _resolve_arch(model: nn.Module, arch: str, family: Family | None,
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
        config = json_native(obj) if obj is not None else value
        if isinstance(config, Mapping):
            named = f" (the name {json.dumps(value)}, resolved)" if isinstance(value, str) else ""
            return _Arch(arg, dict(config), obj, f'`model_args["{arg}"]` in `config.json`{named}')
    from .. import registry

    try:
        value = registry.get_entry(family.name, arch)["model_args"][arg]
    except (KeyError, FileNotFoundError, ValueError):
        value = None
    if value is not None:
        obj = _config_object(family, arg, value)
        return _Arch(arg, json_native(obj) if obj is not None else value, obj,
                     f"the timm-nas registry entry `{arch}` (`registry/{family.name}.json`)")
    attr = getattr(model, arg, None)
    if dataclasses.is_dataclass(attr) and not isinstance(attr, type) and hasattr(attr, "to_dict"):
        return _Arch(arg, json_native(attr), attr, f"the model's `{arg}`, fixed by the timm name `{arch}`")
    return None


# ------------------------------------------------------------------------------------------------------ cost
def _cost(model: nn.Module, cfg: Any, model_args: Mapping[str, Any], input_size: Sequence[int]) -> dict[str, Any]:
    """Params and MACs for the card.

    Parameters are counted on the model. MACs come from the family's analytic formula
    (:func:`timm_nas.cost.model_cost`: the config and the shape arguments the model recorded at construction,
    ``model.cost_args``) when the model has them and the parameter formula reproduces the model's count; otherwise
    they are measured on the model; otherwise left out with the reason.
    """
    from .. import cost

    params = cost.real_params(model)
    out: dict[str, Any] = {"params": params, "input_size": list(input_size)}
    if cfg is not None and isinstance(getattr(model, "cost_args", None), Mapping):
        try:
            analytic_params, macs = cost.model_cost(model, cfg)
        except TypeError as e:  # no formula for this config type
            analytic_params, macs = None, None
            _logger.info("no analytic cost for %s (%s); measuring instead", type(cfg).__name__, e)
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


# ---------------------------------------------------------------------------------------------------- export
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
           overwrite: bool = False, onnx: bool = False) -> Path:
    """Write a Hub-ready folder: ``config.json``, ``model.safetensors`` (when the model has weights) and
    ``README.md``.

    ``timm.create_model('local-dir:<folder>', pretrained=True)`` (after ``import timm_nas``) rebuilds the same
    model from it, and so does ``hf-hub:<repo>`` after :func:`~timm_nas.hub.push`. The folder appears atomically:
    it is written beside the destination and renamed into place.

    Args:
        model: a model built by ``timm.create_model`` / ``timm_nas.create_model``, or one whose constructor
            arguments were recorded with :func:`~timm_nas.hub.record_model_args` (``supernet.extract(cfg)`` does
            it). A model on the meta device is exported as an architecture without weights.
        folder: the destination; created with its parents. It must be absent or empty unless ``overwrite``.
        card: optional model-card information, keys from :data:`~timm_nas.hub.CARD_KEYS`: ``name`` (the card's
            title and model-index name; default: the folder name), ``description``, ``provenance`` (search
            method, space, constraints, seed, score, ...), ``metrics`` (name -> value, plus ``dataset``),
            ``datasets``, ``license``, ``notes``, ``repo_id`` (used in the card's example;
            :func:`~timm_nas.hub.push` fills it otherwise) and ``base_model`` (the Hub ids of the models these
            weights come from).
        overwrite: replace an existing non-empty folder that holds a previous export.
        onnx: also write ``model.onnx`` (:func:`timm_nas.deploy.export_onnx`: one file, dynamic batch, checked
            against eager PyTorch with onnxruntime); the card says how to run it. Static models only: a supernet
            or search network is refused before anything is written (extract it first).

    Returns:
        The folder's path.

    Raises:
        ValueError: the model's recorded arguments are missing or do not rebuild it, or ``card`` is malformed.
        FileExistsError: ``folder`` is not empty and ``overwrite`` is false (nothing is changed).
    """
    from timm.models._hub import save_config_for_hf

    model = unwrap(model)
    folder = Path(folder)
    info = check_card(card)
    check_destination(folder, overwrite)
    if onnx:
        from ..deploy import check_static

        check_static(model)
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
        "install": f"pip install '{PIP_NAME}>={__version__}'",
        "import": "import timm_nas",
        "weights": WEIGHTS_NAME if has_weights else None,
        "versions": versions(),
    }

    def write(tmp: Path) -> None:
        partial_config = tmp / f".{CONFIG_NAME}.partial"
        try:
            save_config_for_hf(model, str(partial_config), model_config={MARKER_KEY: marker}, model_args=overrides)
        except ValueError as e:
            raise ValueError(f"cannot write config.json for {arch}: {e}") from e
        config = json.loads(partial_config.read_text(encoding="utf-8"))
        _check_rebuild(model, arch, config.get("model_args", {}))
        input_size = config["pretrained_cfg"].get("input_size") or (3, 224, 224)
        cost = _cost(model, arch_info.obj if arch_info else None, config.get("model_args", {}), input_size)
        readme = render_card(config, dict(card or {}, name=info.get("name") or folder.name), cost=cost,
                             architecture=(arch_info.config, arch_info.source) if arch_info else None, onnx=onnx)
        if has_weights:  # weights before config.json: a folder cut short never holds a config that loads
            _save_weights(state, tmp / WEIGHTS_NAME)
        if onnx:
            from ..deploy import ONNX_NAME, export_onnx

            export_onnx(model, tmp / ONNX_NAME)
        (tmp / README_NAME).write_text(readme, encoding="utf-8")
        os.replace(partial_config, tmp / CONFIG_NAME)

    atomic_folder(folder, write)
    _logger.info("exported %s to %s", arch, folder)
    return folder
