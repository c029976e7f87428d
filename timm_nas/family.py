"""The family contract: what each model family declares once, and what everything cross-family derives from it.

Each family's model module (``timm_nas/models/<family>.py``) ends with one :func:`register_family` call holding its
:class:`Family`: the architecture config type and the space type, the static model (and its generic entrypoint,
whose architecture argument is the config's ``registry_arg``), the weight-sharing model (supernet or search
network), the checkpoint filter, and what the Hub tooling needs (the models a released checkpoint may fit, the
datasets of the released weights). The card template is ``hub_cards/<name>.md`` and the published architectures
are ``registry/<name>.json``. The Hub tooling, the model list, the command line's choices and the cross-family
contract tests read these declarations; no other per-family table exists.

One name per operation, across families:

===========================  ==============================================================================
``Config.resolve(value)``    the architecture from a config, its dict, the original's format or a registry name
``space.sample / mutate``    ``mutate(cfg, generator, m_prob=, s_prob=)``: per-choice and structural probabilities
``model.extract(cfg)``       the static model of ``cfg`` from a weight-sharing model (weights copied where the
                             method inherits them; DARTS retrains from scratch)
``model.static_model_args``  the static model's constructor arguments for ``cfg``
``model.derive_arch()``      the architecture a search network's parameters choose (DARTS, SPViT)
``model.last_arch()``        the architecture the most recent forward ran (supernets, SPViT's search network)
``model.arch_parameters()``  architecture parameters; ``weight_parameters()`` the others (``named_...`` pairs)
``checkpoint_filter_fn``     one per family, dispatching on the target model
``model.cost_args``          the shape arguments the family's cost formulas take (:mod:`timm_nas.cost`)
===========================  ==============================================================================
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping

import torch.nn as nn

__all__ = ["Family", "register_family", "families", "get_family", "family_of"]

#: The model modules that declare families (importing them registers the models with timm and the families here).
_MODEL_PACKAGE = "timm_nas.models"

_FAMILIES: dict[str, "Family"] = {}


@dataclasses.dataclass(frozen=True)
class Family:
    """One family's declaration.

    Args:
        name: the family (``'autoformer'``): its registry file ``registry/<name>.json``, its card template
            ``hub_cards/<name>.md``, and the name the command line and the Hub metadata use.
        config: the architecture config type (``AutoFormerSubnet``); its ``registry_arg`` is the architecture
            argument of the static entrypoint (``subnet``, ``genotype``, ``arch``).
        space: the search space type, or ``None`` where the search is over gates, not a space (SPViT).
        static_cls: the static model class.
        static_entrypoint: the generic static timm entrypoint (``'autoformer_subnet'``).
        weight_sharing_cls: the supernet or search network class.
        weight_sharing_entrypoint: its generic timm entrypoint (``'autoformer_supernet'``).
        weight_sharing_arg: the architecture argument of that entrypoint (``'space'`` for supernets), or ``None``
            when it is built from shape arguments only (the DARTS and SPViT search networks).
        checkpoint_filter: the family's one ``checkpoint_filter_fn(state_dict, model)``.
        inherits_weights: whether ``extract`` copies the weight-sharing model's weights (``False`` for DARTS,
            whose derived networks are trained from scratch).
        other_static_entrypoints: more generic static entrypoints taking the same architecture argument
            (``darts_imagenet`` beside ``darts_cifar``).
        example_args: arguments of the weight-sharing entrypoint for a tiny instance (tests, documentation).
        convert_models: what :func:`timm_nas.hub.convert_checkpoint` tries for an authors' release file, in
            order: a timm name or ``(generic entrypoint, model_args)``.
        datasets: datasets of the authors' released weights.
        module: the module whose ``@register_model`` entrypoints make the family's models (default: the static
            class's module).
    """

    name: str
    config: type
    space: type | None
    static_cls: type
    static_entrypoint: str
    weight_sharing_cls: type
    weight_sharing_entrypoint: str
    weight_sharing_arg: str | None
    checkpoint_filter: Callable[..., Mapping[str, Any]]
    inherits_weights: bool = True
    other_static_entrypoints: tuple[str, ...] = ()
    example_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    convert_models: tuple[str | tuple[str, Mapping[str, Any]], ...] = ()
    datasets: tuple[str, ...] = ()
    module: str = ""

    def __post_init__(self) -> None:
        if not self.module:
            object.__setattr__(self, "module", self.static_cls.__module__)

    @property
    def arch_arg(self) -> str:
        """The static entrypoint's architecture argument (the config's ``registry_arg``)."""
        return self.config.registry_arg

    @property
    def arch_args(self) -> dict[str, str]:
        """Generic entrypoint -> the argument holding its architecture config."""
        out = {name: self.arch_arg for name in (self.static_entrypoint, *self.other_static_entrypoints)}
        if self.weight_sharing_arg:
            out[self.weight_sharing_entrypoint] = self.weight_sharing_arg
        return out

    def config_type(self, arg: str) -> type | None:
        """The config type an architecture argument holds (``'subnet'`` -> the config, ``'space'`` -> the space)."""
        if arg == self.arch_arg:
            return self.config
        if arg == self.weight_sharing_arg:
            return self.space
        return None

    def models(self, pretrained: bool = False) -> list[str]:
        """The timm names this family registers (optionally only those with pretrained weights)."""
        import timm
        from timm.models import model_entrypoint

        return [n for n in timm.list_models(pretrained=pretrained)
                if getattr(model_entrypoint(n.split(".")[0]), "__module__", "") == self.module]


def register_family(family: Family) -> Family:
    """Declare a family (called once, at the end of the family's model module)."""
    if not isinstance(family, Family):
        raise TypeError(f"register_family expects a Family, got {type(family).__name__}")
    known = _FAMILIES.get(family.name)
    if known is not None and known.module != family.module:
        raise ValueError(f"family {family.name!r} is already declared by {known.module}")
    _FAMILIES[family.name] = family
    return family


def _load() -> None:
    importlib.import_module(_MODEL_PACKAGE)  # each family's module registers itself


def families() -> dict[str, Family]:
    """Every declared family, by name (in declaration order)."""
    _load()
    return dict(_FAMILIES)


def get_family(name: str) -> Family:
    """A family by name.

    Raises:
        ValueError: naming the known families.
    """
    _load()
    try:
        return _FAMILIES[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known families: {sorted(_FAMILIES)}") from None


def family_of(model: nn.Module | str) -> Family | None:
    """The family of a model or a timm model name (``None`` for models from elsewhere, e.g. timm's own)."""
    _load()
    if isinstance(model, str):
        from timm.models import is_model, model_entrypoint

        name = model.split(".")[0]
        if not is_model(name):
            return None
        module = getattr(model_entrypoint(name), "__module__", "")
        return next((f for f in _FAMILIES.values() if f.module == module), None)
    for f in _FAMILIES.values():
        if isinstance(model, (f.static_cls, f.weight_sharing_cls)):
            return f
    return None
