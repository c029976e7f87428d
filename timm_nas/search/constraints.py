"""Cost constraints of a search: windows on parameters and MACs from the analytic cost model.

A candidate outside the windows is rejected before it is scored (the original AutoFormer and TF-TAS searches
check the parameter window in ``is_legal`` before evaluating). Costs come from the analytic cost model of
:mod:`timm_nas.cost` (each family's registered ``params`` / ``macs`` functions), fast enough to check every draw.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from ..proxies.zero_cost import analytic_cost

__all__ = ["Constraints", "Cost"]


@dataclasses.dataclass(frozen=True)
class Cost:
    """Analytic cost of one architecture."""

    params: int
    macs: int


def _window(name: str, lo: float | None, hi: float | None) -> tuple[float | None, float | None]:
    for v, side in ((lo, "minimum"), (hi, "maximum")):
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v) or v < 0):
            raise ValueError(f"the {side} {name} must be a non-negative number, got {v!r}")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"empty {name} window: minimum {_fmt(name, lo)} > maximum {_fmt(name, hi)}")
    return lo, hi


def _fmt(name: str, value: float) -> str:
    if name == "params":
        return f"{value / 1e6:.3f}M"
    if name == "macs":
        return f"{value / 1e9:.3f}G"
    return str(value)


@dataclasses.dataclass(frozen=True)
class Constraints:
    """Windows on parameters and MACs (absolute counts; ``None`` = unbounded).

    Args:
        params_min, params_max: parameter window.
        macs_min, macs_max: multiply-accumulate window (one image).
        cost_kwargs: keyword arguments of the analytic cost model for this search (``num_classes``,
            ``img_size``, ``patch_size``, ...; :func:`timm_nas.proxies.zero_cost.cost_kwargs` reads them off a
            supernet); each cost function gets those it accepts.

    Raises:
        ValueError: for an empty window (minimum above maximum) or a negative bound.
    """

    params_min: float | None = None
    params_max: float | None = None
    macs_min: float | None = None
    macs_max: float | None = None
    cost_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _window("params", self.params_min, self.params_max)
        _window("macs", self.macs_min, self.macs_max)
        object.__setattr__(self, "cost_kwargs", dict(self.cost_kwargs))

    @classmethod
    def for_model(cls, model: Any, *, params_min: float | None = None, params_max: float | None = None,
                  macs_min: float | None = None, macs_max: float | None = None) -> "Constraints":
        """Windows for subnets of ``model`` (a supernet): the cost model's keywords are read off the model."""
        from ..proxies.zero_cost import cost_kwargs

        return cls(params_min, params_max, macs_min, macs_max, cost_kwargs=cost_kwargs(model))

    def cost(self, cfg: Any) -> Cost:
        """Analytic parameters and MACs of ``cfg``."""
        params, macs = analytic_cost(cfg, self.cost_kwargs)
        return Cost(params, macs)

    def admits(self, cost: Cost) -> bool:
        """Whether a cost lies inside every window."""
        return ((self.params_min is None or cost.params >= self.params_min)
                and (self.params_max is None or cost.params <= self.params_max)
                and (self.macs_min is None or cost.macs >= self.macs_min)
                and (self.macs_max is None or cost.macs <= self.macs_max))

    def check_space(self, space: Any) -> None:
        """Raise ``ValueError`` if no architecture of ``space`` can meet the windows.

        The cost of a space's architectures lies between those of ``space.smallest()`` and ``space.largest()``
        (true for the AutoFormer and S3 spaces, whose costs grow with every dimension), so a window that misses
        that range is empty.
        """
        lo, hi = self.cost(space.smallest()), self.cost(space.largest())
        for name, a, b, wlo, whi in (("params", lo.params, hi.params, self.params_min, self.params_max),
                                     ("macs", lo.macs, hi.macs, self.macs_min, self.macs_max)):
            if (whi is not None and whi < a) or (wlo is not None and wlo > b):
                window = f"[{_fmt(name, wlo) if wlo is not None else '-'}, {_fmt(name, whi) if whi is not None else '-'}]"
                raise ValueError(f"empty constraint window: no architecture of the space has {name} in {window}; "
                                 f"the space spans {_fmt(name, a)} to {_fmt(name, b)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-native form (for the run record and the model card)."""
        d = {k: getattr(self, k) for k in ("params_min", "params_max", "macs_min", "macs_max")}
        return {**{k: v for k, v in d.items() if v is not None}, "cost_kwargs": _jsonable(self.cost_kwargs)}


def _jsonable(kw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}
