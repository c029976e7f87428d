"""Shared machinery for architecture configs and search spaces.

Every family defines two frozen dataclasses: a *config* (one architecture, e.g. ``AutoFormerSubnet``) and a
*space* (the set of choices, e.g. ``AutoFormerSpace``). Configs travel unchanged through models, cost counting,
search logs, the registry and ``config.json``; their dict form is JSON-native and their tuple fields come back
as tuples.

Randomness is always explicit: spaces take a ``torch.Generator`` (or an int seed) and never touch global RNG
state, so a search or a training run is reproducible from its seed alone.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, ClassVar, Generic, Mapping, Protocol, Sequence, TypeVar, runtime_checkable

import torch

__all__ = [
    "ArchConfig",
    "IncompatibleError",
    "PresetSpace",
    "Space",
    "GeneratorLike",
    "as_generator",
    "generator_for",
    "rand_choice",
    "rand_float",
    "rand_int",
    "check_choice",
    "to_tuple",
]

GeneratorLike = "torch.Generator | int | None"
T = TypeVar("T")
C = TypeVar("C", bound="ArchConfig")


def as_generator(generator: torch.Generator | int | None = None) -> torch.Generator:
    """Return a CPU ``torch.Generator``: the one given, one seeded with an int, or a fresh one seeded from
    ``torch.initial_seed()`` when ``None`` (never the global generator itself)."""
    if isinstance(generator, torch.Generator):
        return generator
    g = torch.Generator()
    if generator is None:
        g.manual_seed(torch.initial_seed() & 0xFFFF_FFFF_FFFF)
    elif isinstance(generator, (int,)) and not isinstance(generator, bool):
        g.manual_seed(int(generator))
    else:
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, not {type(generator).__name__}")
    return g


def generator_for(seed: int, step: int) -> torch.Generator:
    """A generator seeded deterministically from ``(seed, step)``.

    Every data-parallel rank computing ``generator_for(seed, step)`` draws the same numbers, which is how
    supernets pick the same subnet on every rank without communication.
    """
    # A fixed odd multiplier spreads consecutive steps; the mask keeps the seed in torch's accepted range.
    mixed = (int(seed) * 0x9E3779B97F4A7C15 + int(step) * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & 0x7FFF_FFFF_FFFF_FFFF
    g = torch.Generator()
    g.manual_seed(mixed)
    return g


def rand_int(n: int, generator: torch.Generator) -> int:
    """Uniform integer in ``[0, n)``."""
    if n <= 0:
        raise ValueError(f"cannot draw from an empty range (n={n})")
    return int(torch.randint(n, (1,), generator=generator).item())


def rand_float(generator: torch.Generator) -> float:
    """Uniform float in ``[0, 1)``."""
    return float(torch.rand(1, generator=generator, dtype=torch.float64).item())


def rand_choice(options: Sequence[T], generator: torch.Generator) -> T:
    """Uniformly pick one element of a non-empty sequence."""
    return options[rand_int(len(options), generator)]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return a == b


def check_choice(field: str, value: Any, allowed: Sequence[Any]) -> None:
    """Raise ``ValueError`` naming the field, the value and the allowed values unless ``value`` is allowed."""
    if not any(_same(value, a) for a in allowed):
        raise ValueError(f"{field}={value!r} is not allowed; allowed values: {list(allowed)}")


def to_tuple(value: Any) -> Any:
    """Recursively turn lists into tuples (JSON gives lists; configs hold tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(to_tuple(v) for v in value)
    return value


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_dict()  # type: ignore[union-attr]
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        return _to_json(value.item())
    raise TypeError(f"value {value!r} of type {type(value).__name__} is not JSON-native")


class IncompatibleError(ValueError):
    """Two configs cannot be combined (e.g. crossover of parents with different depths)."""


class ArchConfig:
    """Mixin for frozen dataclass configs: JSON-native ``to_dict`` / strict ``from_dict``.

    Subclasses are ``@dataclasses.dataclass(frozen=True)``; list inputs are normalised to tuples by
    ``from_dict`` (and by each subclass's ``__post_init__``).
    """

    family: ClassVar[str] = ""
    #: The key under which a registry entry's ``model_args`` holds this config (``'subnet'``, ``'genotype'``,
    #: ``'arch'``): also the name of the architecture argument of the family's generic static model.
    registry_arg: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-native data (lists, numbers, strings)."""
        return {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any] | C) -> C:
        """Build a config from its dict form, rejecting unknown keys and listing the allowed ones."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; allowed keys: {names}")
        missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                   if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"missing {cls.__name__} keys {missing}; required keys: {names}")
        return cls(**{k: to_tuple(v) for k, v in data.items()})

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_original_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Read the original project's dict format (families that have one override this)."""
        raise ValueError(f"{cls.__name__} has no original dict format")

    @classmethod
    def resolve(cls: type[C], value: Any) -> C:
        """Every form an architecture argument accepts, in one place for every family.

        Accepts an instance; a registry name or alias of the family (``'autoformer_tiny'``, ``'DARTS_V2'``); the
        config's dict form; the original project's dict format (:meth:`from_original_dict`); or either dict as
        JSON text.

        Raises:
            ValueError: naming the registry's keys or the allowed dict keys when ``value`` is none of these.
            TypeError: for a value of another type.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{cls.__name__} JSON text does not parse: {e}") from None
                return cls.resolve(data)
            return cls.from_registry(text)
        if isinstance(value, Mapping):
            names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
            if set(value) <= names:
                return cls.from_dict(value)
            try:
                return cls.from_original_dict(value)
            except (ValueError, TypeError) as original_error:
                try:
                    return cls.from_dict(value)  # its error names the unknown and the allowed keys
                except ValueError as e:
                    raise ValueError(f"{e} (nor is it the original's format: {original_error})") from None
        raise TypeError(f"a {cls.__name__} must be given as a registry name, a dict or a {cls.__name__}, "
                        f"got {type(value).__name__}")

    @classmethod
    def from_registry(cls: type[C], name: str) -> C:
        """The config of a published architecture (``registry/<family>.json``), by key or alias."""
        from ..registry import get_entry, load_registry

        try:
            entry = get_entry(cls.family, name)
        except KeyError:
            known = sorted(k for k, e in load_registry(cls.family).items()
                           if cls.registry_arg in e.get("model_args", {}))
            raise ValueError(f"{name!r} is not a published {cls.family} architecture; known names: {known}; or "
                             f"pass a {cls.__name__} object or its dict form") from None
        args = entry.get("model_args", {})
        if cls.registry_arg not in args:
            raise ValueError(f"registry entry {name!r} of {cls.family} has no {cls.registry_arg!r} architecture")
        return cls.from_dict(args[cls.registry_arg])


S = TypeVar("S", bound="PresetSpace")


class PresetSpace(ArchConfig):
    """Mixin for space dataclasses with named presets: ``preset(name)`` and ``resolve(name | dict | space)``.

    A subclass sets ``presets`` (name -> space dict) and ``label`` (the family's name in error messages).
    """

    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    label: ClassVar[str] = ""

    @classmethod
    def preset(cls: type[S], name: str) -> S:
        """One of the family's named spaces (``cls.presets``); the name is case-insensitive."""
        key = name.lower()
        if key not in cls.presets:
            raise ValueError(f"unknown {cls.label} space preset {name!r}; choose from {sorted(cls.presets)} "
                             "or pass a space dict")
        return cls.from_dict(cls.presets[key])

    @classmethod
    def resolve(cls: type[S], space: str | Mapping[str, Any] | S) -> S:
        """Accept a preset name, a space dict or a space."""
        if isinstance(space, cls):
            return space
        if isinstance(space, str):
            return cls.preset(space)
        if isinstance(space, Mapping):
            return cls.from_dict(space)
        raise TypeError(f"space must be a preset name {sorted(cls.presets)}, a dict or an {cls.__name__}, "
                        f"got {type(space).__name__}")


@runtime_checkable
class Space(Protocol, Generic[C]):
    """What every search space offers. Strategies in :mod:`timm_nas.search` speak only this protocol.

    ``contains`` / ``validate`` are about the space's *choices*; ``fits`` is about whether the supernet's
    weights can run a config (published subnets may use values outside the choices).
    """

    config_cls: ClassVar[type]

    def sample(self, generator: torch.Generator | int | None = None) -> C: ...

    def mutate(self, cfg: C, generator: torch.Generator | int | None = None, *, m_prob: float = ...,
               s_prob: float = ...) -> C:
        """A mutated copy of ``cfg``: ``m_prob`` is the probability of redrawing each per-layer / per-edge choice,
        ``s_prob`` that of redrawing a structural choice (depth, width, a cell's input edges)."""
        ...

    def crossover(self, a: C, b: C, generator: torch.Generator | int | None = None) -> C: ...

    def largest(self) -> C: ...

    def smallest(self) -> C: ...

    def contains(self, cfg: C) -> bool: ...

    def validate(self, cfg: C) -> C: ...

    def fits(self, cfg: C) -> bool: ...

    def to_dict(self) -> dict[str, Any]: ...
