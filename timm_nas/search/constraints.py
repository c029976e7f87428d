"""Cost constraints of a search: windows on parameters and MACs from the analytic cost model, and on latency
predicted by a table measured on the user's device (:class:`timm_nas.cost.LatencyTable`).

A candidate outside the windows is rejected before it is scored (the original AutoFormer and TF-TAS searches
check the parameter window in ``is_legal`` before evaluating). Costs come from the analytic cost model of
:mod:`timm_nas.cost` (each family's registered ``params`` / ``macs`` functions, given the search's shape
arguments: a supernet's ``cost_args``), fast enough to check every draw.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from ..cost import LatencyTable, count_macs, count_params

__all__ = ["Constraints", "Cost"]


@dataclasses.dataclass(frozen=True)
class Cost:
    """Analytic cost of one architecture, and its predicted latency (milliseconds) where a table is given."""

    params: int
    macs: int
    latency_ms: float | None = None


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
    if name == "latency":
        return f"{value:.3f} ms"
    return str(value)


@dataclasses.dataclass(frozen=True)
class Constraints:
    """Windows on parameters, MACs and predicted latency (absolute counts, milliseconds; ``None`` = unbounded).

    Args:
        params_min, params_max: parameter window.
        macs_min, macs_max: multiply-accumulate window (one image).
        cost_kwargs: keyword arguments of the family's cost formulas for this search (``num_classes``,
            ``img_size``, ``patch_size``, ...: a subset of the ones a supernet records as ``model.cost_args``, see
            :meth:`for_model`); both formulas get all of them, so an unknown keyword is a ``TypeError``.
        latency_min, latency_max: predicted-latency window, milliseconds (needs ``latency_table``).
        latency_table: a :class:`~timm_nas.cost.LatencyTable` or its path; with it every cost carries the predicted
            latency (also without a latency window).

    Raises:
        ValueError: for an empty window (minimum above maximum), a negative bound, or a latency window without a
            table.
    """

    params_min: float | None = None
    params_max: float | None = None
    macs_min: float | None = None
    macs_max: float | None = None
    cost_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    latency_min: float | None = None
    latency_max: float | None = None
    latency_table: Any = None

    def __post_init__(self) -> None:
        _window("params", self.params_min, self.params_max)
        _window("macs", self.macs_min, self.macs_max)
        _window("latency", self.latency_min, self.latency_max)
        object.__setattr__(self, "cost_kwargs", dict(self.cost_kwargs))
        if self.latency_table is not None and not isinstance(self.latency_table, LatencyTable):
            object.__setattr__(self, "latency_table", LatencyTable.load(self.latency_table))
        if self.latency_table is None and (self.latency_min is not None or self.latency_max is not None):
            raise ValueError("a latency window needs a latency table (--latency-table, made by timm-nas latency "
                             "build on the target device)")

    @classmethod
    def for_model(cls, model: Any, *, params_min: float | None = None, params_max: float | None = None,
                  macs_min: float | None = None, macs_max: float | None = None, latency_min: float | None = None,
                  latency_max: float | None = None, latency_table: Any = None) -> "Constraints":
        """Windows for subnets of ``model`` (a supernet): the cost model's keywords are the model's ``cost_args``;
        a latency table must have been measured for this model (:meth:`check_latency_table`)."""
        c = cls(params_min, params_max, macs_min, macs_max, cost_kwargs=model.cost_args, latency_min=latency_min,
                latency_max=latency_max, latency_table=latency_table)
        c.check_latency_table(model)
        return c

    def check_latency_table(self, model: Any) -> None:
        """Raise one ``ValueError`` if the latency table was measured for another family or shape arguments than
        ``model``'s, or on another device than this machine's of the same kind (no-op without a table)."""
        if self.latency_table is not None:
            self.latency_table.check_model(model)

    def cost(self, cfg: Any) -> Cost:
        """Analytic parameters and MACs of ``cfg``."""
        latency = None if self.latency_table is None else self.latency_table.predict(cfg)
        return Cost(count_params(cfg, **self.cost_kwargs), count_macs(cfg, **self.cost_kwargs), latency)

    def admits(self, cost: Cost) -> bool:
        """Whether a cost lies inside every window."""
        return ((self.params_min is None or cost.params >= self.params_min)
                and (self.params_max is None or cost.params <= self.params_max)
                and (self.macs_min is None or cost.macs >= self.macs_min)
                and (self.macs_max is None or cost.macs <= self.macs_max)
                and (self.latency_min is None or (cost.latency_ms is not None and cost.latency_ms >= self.latency_min))
                and (self.latency_max is None or (cost.latency_ms is not None and cost.latency_ms <= self.latency_max)))

    def check_space(self, space: Any) -> None:
        """Raise ``ValueError`` if no architecture of ``space`` can meet the windows.

        The cost of a space's architectures lies between those of ``space.smallest()`` and ``space.largest()``
        (true for the AutoFormer and S3 spaces, whose costs grow with every dimension; for latency, up to the
        measurement noise of the table), so a window that misses that range is empty. A latency table that does not
        cover the space fails here too.
        """
        lo, hi = self.cost(space.smallest()), self.cost(space.largest())
        lat = (lo.latency_ms, hi.latency_ms)
        bounds = None if self.latency_table is None else self.latency_table.bounds(space)
        if bounds is not None:  # (DARTS: the fastest genotype is not the one with the fewest MACs)
            lat = bounds
        for name, a, b, wlo, whi in (("params", lo.params, hi.params, self.params_min, self.params_max),
                                     ("macs", lo.macs, hi.macs, self.macs_min, self.macs_max),
                                     ("latency", lat[0], lat[1], self.latency_min, self.latency_max)):
            if a is None:
                continue
            if (whi is not None and whi < a) or (wlo is not None and wlo > b):
                window = f"[{_fmt(name, wlo) if wlo is not None else '-'}, {_fmt(name, whi) if whi is not None else '-'}]"
                raise ValueError(f"empty constraint window: no architecture of the space has {name} in {window}; "
                                 f"the space spans {_fmt(name, a)} to {_fmt(name, b)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-native form (for the run record and the model card)."""
        d = {k: getattr(self, k) for k in ("params_min", "params_max", "macs_min", "macs_max", "latency_min",
                                           "latency_max")}
        if self.latency_table is not None:
            d["latency_table"] = self.latency_table.describe()
        return {**{k: v for k, v in d.items() if v is not None}, "cost_kwargs": _jsonable(self.cost_kwargs)}

    def latency_record(self, cfg: Any) -> dict[str, Any]:
        """``{"latency_ms", "latency_device"}`` of ``cfg`` for a run record or a model card (``{}`` without a
        table)."""
        if self.latency_table is None:
            return {}
        s = self.latency_table.setting
        return {"latency_ms": self.latency_table.predict(cfg),
                "latency_device": f"{s['device_name']} ({s['device']}, batch {s['batch_size']}, {s['threads']} "
                                  f"thread(s), {s['dtype']})"}


def _jsonable(kw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}
