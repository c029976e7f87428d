"""The analytic cost registry: each family's closed-form ``params`` / ``macs`` formulas, keyed by config type, and
:func:`model_cost`, which applies them to a model through the one input they take.

A family's two formulas have the signature ``fn(cfg, **shape_args) -> int`` and accept the same keyword arguments:
the shape arguments of the family's static model (image and patch size, classes, widths, ...). Every model a
formula applies to records them at construction as ``model.cost_args`` (JSON-native; kept current by
``reset_classifier``), so ``count_params(cfg, **model.cost_args)`` needs nothing read back off the model.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch.nn as nn

__all__ = ["register_cost", "analytic_fns", "count_params", "count_macs", "arch_config", "model_cost"]

_ANALYTIC: dict[type, tuple[Callable[..., int], Callable[..., int]]] = {}


def register_cost(config_cls: type, params_fn: Callable[..., int], macs_fn: Callable[..., int]) -> None:
    """Register the analytic ``params_fn(cfg, **kw)`` and ``macs_fn(cfg, **kw)`` of a config type."""
    _ANALYTIC[config_cls] = (params_fn, macs_fn)


def analytic_fns(cfg: Any) -> tuple[Callable[..., int], Callable[..., int]]:
    """The registered ``(params_fn, macs_fn)`` of ``cfg``'s config type (for callers that need to know which keyword
    arguments a family's formulas accept).

    Raises:
        TypeError: if no analytic cost model is registered for the config type.
    """
    return _lookup(cfg)


def _find(cfg: Any) -> tuple[Callable[..., int], Callable[..., int]] | None:
    for cls in type(cfg).__mro__:
        if cls in _ANALYTIC:
            return _ANALYTIC[cls]
    return None


def _lookup(cfg: Any) -> tuple[Callable[..., int], Callable[..., int]]:
    fns = _find(cfg)
    if fns is not None:
        return fns
    known = sorted(c.__name__ for c in _ANALYTIC)
    raise TypeError(f"no analytic cost model for {type(cfg).__name__}; known config types: {known}")


def count_params(cfg: Any, **kwargs: Any) -> int:
    """Analytic parameter count of an architecture config (keyword arguments depend on the family, e.g.
    ``num_classes``, ``img_size``)."""
    return int(_lookup(cfg)[0](cfg, **kwargs))


def count_macs(cfg: Any, **kwargs: Any) -> int:
    """Analytic multiply-accumulate count of one image through an architecture config."""
    return int(_lookup(cfg)[1](cfg, **kwargs))


def arch_config(model: nn.Module) -> Any:
    """The architecture config a model's cost describes by default, by this rule:

    * a supernet (AutoFormer, S3): its active subnet, ``model.active_subnet``;
    * a search network (DARTS, SPViT): the architecture it derives now, ``model.derive_arch()``;
    * a static model: its architecture argument as a config, ``model.subnet`` (AutoFormer, S3), ``model.genotype``
      (DARTS) or ``model.arch`` (SPViT).

    Raises:
        TypeError: if the model exposes none of them.
    """
    active = getattr(model, "active_subnet", None)
    if active is not None:
        return active
    derive = getattr(model, "derive_arch", None)
    if callable(derive):
        return derive()
    for name in ("subnet", "genotype", "arch"):
        value = getattr(model, name, None)
        if value is not None and _find(value) is not None:
            return value
    raise TypeError(f"{type(model).__name__} exposes no architecture config (active_subnet, derive_arch(), subnet, "
                    f"genotype or arch); pass config= explicitly")


def model_cost(model: nn.Module, config: Any = None) -> tuple[int, int]:
    """Analytic ``(params, macs)`` of ``config`` as ``model`` would build it: the family's formulas applied to
    ``config`` and ``model.cost_args`` (the shape arguments the model recorded at construction; for a supernet or
    search network, those of its static models).

    Args:
        model: a timm-nas model with ``cost_args`` (every AutoFormer, S3, DARTS and SPViT model).
        config: the architecture (a config, its dict, or whatever the config type's ``resolve`` accepts, such as
            a registry name); default :func:`arch_config` of the model: for a static model its own
            architecture, for a supernet its active subnet, for a search network its derived architecture.

    Returns:
        ``(params, macs)``; they equal ``real_params`` / ``measure_macs`` of the static model (at the
        ``img_size`` in ``cost_args``).

    Raises:
        TypeError: if the model records no ``cost_args`` or no formula is registered for the config type.
    """
    args = getattr(model, "cost_args", None)
    if not isinstance(args, Mapping):
        raise TypeError(f"{type(model).__name__} records no cost_args, so the analytic cost model cannot describe it; "
                        f"count it with real_params(model) and measure_macs(model, x)")
    cfg = arch_config(model) if config is None else config
    if _find(cfg) is None:  # a dict, a registry name, the original's format: the model's config type reads it
        cfg = type(arch_config(model)).resolve(cfg)
    params_fn, macs_fn = _lookup(cfg)
    return int(params_fn(cfg, **args)), int(macs_fn(cfg, **args))
