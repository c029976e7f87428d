"""S3's search of the search space: the E-T error of a space and the evolution of its choices.

Chen et al., "Searching the Search Space of Vision Transformer", NeurIPS 2021 (arXiv:2111.14725), Section 3. The
authors released no code for it (https://github.com/microsoft/Cream/issues/128); this module follows the paper's
procedure as the paper describes it and turns every detail the text leaves open into a documented parameter of
:class:`SpaceEvolution`:

**E-T error** of a space A under a resource constraint ``g(a) <= c``: ``Q_e(A)``, the mean top-1 error (inherited
supernet weights, no retraining) of ``N`` random architectures that meet the constraint, ``Q_t(A)``, the mean error
of the best ``top_k`` (50) of them, and ``Q(A) = (Q_e + Q_t) / 2`` (:func:`et_error`).

**One evolution step**: split A by *stage x dimension* (depth, width, window, MLP ratio of each stage); for every
choice ``v_l`` of a subspace compute the E-T error of the sampled architectures that use it, fit a line
``Q ~ w * x + b`` over the choices (least squares), and move the whole choice set against the slope by
``k = round(w / tau)`` lattice steps, at most ``max_steps``, keeping the number of choices (:func:`evolve_choices`).

Our choices where the paper is silent (each a parameter):

* ``x`` is the choice's position on its dimension's lattice of legal values: depth in steps of 1 block, width in
  steps of one head (``head_dim`` channels), MLP ratio in steps of 0.5, windows along the sorted windows that tile
  the stage's grid (a window at least the grid side is the global window). So ``w`` is "E-T error change per
  step" and ``tau`` a threshold in error points per step, the paper's ``v - round(w / tau) * gamma`` with ``gamma``
  the lattice step.
* Window and MLP ratio are chosen per block: an architecture counts for the choice nearest the mean lattice position
  of its stage's blocks (``block_value='mean'``), or for every choice any of its blocks uses (``'any'``).
* ``Q_t`` of a choice subset is the mean of its best ``min(top_k, subset size)`` errors.
* A shift that would leave the lattice (depth below 1, a window that does not tile the grid, an optional ``limits``
  bound) is shortened until it is legal.
* After an update the supernet is rebuilt at the new largest choices and inherits every weight it shares with the
  previous one (first-k, q/k/v blocks, merging quarters, table centres: :func:`inherit_weights`), then is trained
  for ``finetune`` steps; the first space is trained for ``train`` steps (the paper trains it to convergence).

The architecture search inside the final space is :class:`timm_nas.search.EvolutionSearch` (AutoFormer's), scored
by :class:`timm_nas.search.AccuracyScorer`; ``timm-nas search s3-space`` chains the two.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from ..models.s3 import paste_overlap
from ..spaces.base import generator_for
from ..spaces.s3 import DIMENSIONS, S3Space, S3Subnet, effective_window
from ..training.supernet import train_supernet  # noqa: F401 (a public name here too)
from ._rng import seeded
from .constraints import Constraints

__all__ = [
    "TOP_K",
    "ETError",
    "et_error",
    "DimensionFit",
    "SpaceEvolution",
    "SpaceEvolutionResult",
    "sample_subnets",
    "lattice",
    "fit_dimensions",
    "evolve_choices",
    "inherit_weights",
    "train_supernet",
    "evaluate_errors",
    "evolve_space",
    "plot_space_evolution",
]

_logger = logging.getLogger(__name__)

#: ``Q_t`` averages the best 50 architectures (the paper's "top-50").
TOP_K = 50
#: N random architectures per E-T error: the paper's EDF ablation uses 1000 samples.
NUM_SAMPLES = 1000
#: Lattice step of the MLP ratio ([choice]: the AutoFormer and S3 ratios are multiples of 0.5).
MLP_RATIO_STEP = 0.5
#: Log file names inside the output folder.
LOG_NAME, PLOT_NAME = "space_evolution.jsonl", "space_evolution.png"


# --------------------------------------------------------------------------------------------------- E-T error
@dataclasses.dataclass(frozen=True)
class ETError:
    """E-T error of a set of architecture errors (top-1 error in %)."""

    q: float  #: (q_e + q_t) / 2
    q_e: float  #: mean error (expected error)
    q_t: float  #: mean error of the best ``top_k``
    n: int  #: number of architectures
    top_k: int  #: how many were averaged for q_t (``min(top_k, n)``)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def et_error(errors: Sequence[float], top_k: int = TOP_K) -> ETError:
    """``Q = (mean(errors) + mean(best top_k errors)) / 2``; with fewer than ``top_k`` errors all are averaged.

    Raises:
        ValueError: for no errors or a ``top_k`` below 1.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    errs = [float(e) for e in errors]
    if not errs:
        raise ValueError("the E-T error needs at least one evaluated architecture")
    k = min(top_k, len(errs))
    q_e = math.fsum(errs) / len(errs)
    q_t = math.fsum(sorted(errs)[:k]) / k
    return ETError(q=(q_e + q_t) / 2, q_e=q_e, q_t=q_t, n=len(errs), top_k=k)


def sample_subnets(space: S3Space, n: int, constraints: Constraints | None = None, *, seed: int = 0,
                   step: int = 0, max_draws: int | None = None) -> list[S3Subnet]:
    """``n`` distinct random architectures of ``space`` inside ``constraints``, drawn from
    ``generator_for(seed, step)``.

    Args:
        space: the space.
        n: how many.
        constraints: cost windows (``None``: none).
        seed, step: the generator's seed (``step`` = the evolution step, so each step draws afresh).
        max_draws: give up after this many draws (default ``100 * n``); fewer than ``n`` are returned then, with a
            warning (a small space or a tight constraint).

    Raises:
        ValueError: if no draw meets the constraint.
    """
    if n < 1:
        raise ValueError(f"the number of sampled architectures must be at least 1, got {n}")
    g = generator_for(seed, step)
    seen: set[str] = set()
    out: list[S3Subnet] = []
    draws = 0
    limit = max_draws if max_draws is not None else 100 * n
    while len(out) < n and draws < limit:
        draws += 1
        cfg = space.sample(g)
        key = cfg.to_json()
        if key in seen:
            continue
        seen.add(key)
        if constraints is not None and not constraints.admits(constraints.cost(cfg)):
            continue
        out.append(cfg)
    if not out:
        raise ValueError(f"none of {draws} draws from the space meets the constraints {constraints}; relax them")
    if len(out) < n:
        _logger.warning("only %d distinct architectures inside the constraints after %d draws (asked for %d)",
                        len(out), draws, n)
    return out


# --------------------------------------------------------------------------------------------------- lattices
def lattice(dim: str, stage: int, space: S3Space, grid: int) -> list[float]:
    """The ordered legal values of one subspace around its choices (positions index this list).

    Depth: 1, 2, ... (up to 4x the largest choice + 8); width: multiples of ``head_dim``; MLP ratio: the smallest
    choice plus multiples of 0.5, down to 0.5; windows: the sides that tile the stage's ``grid``, the last being
    the global window (the grid side).
    """
    choices = space.choices(dim, stage)
    if dim == "window_size":
        return [float(w) for w in range(1, grid + 1) if grid % w == 0]
    top = max(choices)
    if dim == "depth":
        return [float(d) for d in range(1, 4 * int(top) + 9)]
    if dim == "embed_dim":
        h = space.head_dim
        return [float(h * k) for k in range(1, 4 * int(top) // h + 9)]
    # mlp_ratio: keep the choices' own offset on the 0.5 grid
    low = min(choices)
    base = low - MLP_RATIO_STEP * math.floor((low - 1e-9) / MLP_RATIO_STEP)
    count = int(round((4 * top - base) / MLP_RATIO_STEP)) + 9
    return [round(base + MLP_RATIO_STEP * k, 6) for k in range(count)]


def _position(value: float, values: Sequence[float]) -> int:
    return min(range(len(values)), key=lambda i: (abs(values[i] - value), i))


def _choice_positions(dim: str, stage: int, space: S3Space, grid: int) -> tuple[list[float], list[int]]:
    values = lattice(dim, stage, space, grid)
    choices = space.choices(dim, stage)
    if dim == "window_size":
        choices = tuple(effective_window(grid, int(w)) for w in choices)
    return values, [_position(float(c), values) for c in choices]


# --------------------------------------------------------------------------------------------------- fitting
@dataclasses.dataclass(frozen=True)
class DimensionFit:
    """The fit of one (stage, dimension) subspace and the move it implies.

    Attributes:
        stage, dim: the subspace.
        choices: its choices before the step.
        positions: lattice positions of the choices (the x of the fit).
        counts: architectures counted for each choice.
        errors: E-T error ``Q`` of each choice's architectures (``None`` for an empty subset).
        slope, intercept: the least-squares line ``Q ~ slope * position + intercept`` (``None`` without a fit).
        steps: lattice steps the choices move (negative: towards smaller values).
        new_choices: the choices after the step.
        note: why nothing moved, when that is the case.
    """

    stage: int
    dim: str
    choices: tuple
    positions: tuple[int, ...]
    counts: tuple[int, ...]
    errors: tuple[float | None, ...]
    slope: float | None
    intercept: float | None
    steps: int
    new_choices: tuple
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _stage_value(cfg: S3Subnet, dim: str, stage: int, values: Sequence[float], grid: int) -> list[float]:
    if dim == "depth":
        return [float(cfg.depth[stage])]
    if dim == "embed_dim":
        return [float(cfg.embed_dim[stage])]
    if dim == "window_size":
        return [float(effective_window(grid, w)) for w in cfg.window_size[stage]]
    return [float(r) for r in cfg.mlp_ratio[stage]]


def _members(cfg: S3Subnet, dim: str, stage: int, values: Sequence[float], positions: Sequence[int], grid: int,
             block_value: str) -> set[int]:
    """Indices of the choices an architecture counts for."""
    per_block = [_position(v, values) for v in _stage_value(cfg, dim, stage, values, grid)]
    if block_value == "any" or len(per_block) == 1:
        return {i for i, p in enumerate(positions) if p in per_block}
    mean = sum(per_block) / len(per_block)
    return {min(range(len(positions)), key=lambda i: (abs(positions[i] - mean), positions[i]))}


def _line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if n < 2 or sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return slope, my - slope * mx


def evolve_choices(values: Sequence[float], positions: Sequence[int], steps: int,
                   legal: Callable[[float], bool] = lambda v: True) -> tuple[int, list[float]]:
    """Move every choice ``steps`` positions along ``values``, shortening the move until every new value is on the
    lattice and ``legal``. Returns the steps taken and the new values."""
    direction = 1 if steps > 0 else -1
    for k in range(abs(steps), 0, -1):
        moved = [p + direction * k for p in positions]
        if all(0 <= p < len(values) and legal(values[p]) for p in moved):
            return direction * k, [values[p] for p in moved]
    return 0, [values[p] for p in positions]


@dataclasses.dataclass(frozen=True)
class SpaceEvolution:
    """The settings of S3's space evolution (every open detail of the paper is one of them).

    Args:
        num_samples: ``N``, random architectures per E-T error (paper's ablation: 1000).
        top_k: architectures averaged by ``Q_t`` (paper: 50).
        tau: slope threshold, in E-T error points per lattice step: a subspace moves ``round(slope / tau)`` steps.
        max_steps: the most lattice steps one update moves a subspace.
        block_value: ``'mean'`` or ``'any'``: how an architecture's per-block windows / MLP ratios assign it to
            choices (see the module docstring).
        dims: the dimensions that evolve (default all of :data:`~timm_nas.spaces.s3.DIMENSIONS`).
        limits: optional ``{dim: [low, high]}`` bounds on the evolved values (e.g. a largest width the hardware
            affords).
        constraints: the resource constraint ``g(a) <= c`` of the sampled architectures.
        seed: seed of the architecture samples (step t draws from ``generator_for(seed, t)``).
    """

    num_samples: int = NUM_SAMPLES
    top_k: int = TOP_K
    tau: float = 0.5
    max_steps: int = 1
    block_value: str = "mean"
    dims: tuple[str, ...] = DIMENSIONS
    limits: Mapping[str, Sequence[float]] = dataclasses.field(default_factory=dict)
    constraints: Constraints = dataclasses.field(default_factory=Constraints)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.top_k < 1 or self.max_steps < 0:
            raise ValueError(f"num_samples and top_k must be >= 1 and max_steps >= 0, got {self.num_samples}, "
                             f"{self.top_k}, {self.max_steps}")
        if not self.tau > 0:
            raise ValueError(f"tau must be positive, got {self.tau}")
        if self.block_value not in ("mean", "any"):
            raise ValueError(f"block_value must be 'mean' or 'any', got {self.block_value!r}")
        object.__setattr__(self, "dims", tuple(self.dims))
        unknown = [d for d in self.dims if d not in DIMENSIONS] + [d for d in self.limits if d not in DIMENSIONS]
        if unknown:
            raise ValueError(f"unknown S3 dimensions {unknown}; choose from {list(DIMENSIONS)}")
        for d, lim in self.limits.items():
            if len(lim) != 2 or lim[0] > lim[1]:
                raise ValueError(f"limits[{d!r}] must be [low, high] with low <= high, got {lim!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"num_samples": self.num_samples, "top_k": self.top_k, "tau": self.tau, "max_steps": self.max_steps,
                "block_value": self.block_value, "dims": list(self.dims),
                "limits": {k: list(v) for k, v in self.limits.items()}, "constraints": self.constraints.to_dict(),
                "seed": self.seed}

    def _legal(self, dim: str, space: S3Space) -> Callable[[float], bool]:
        low, high = self.limits.get(dim, (-math.inf, math.inf))
        return lambda v: low <= v <= high

    def step(self, space: S3Space, configs: Sequence[S3Subnet], errors: Sequence[float],
             grid: int) -> tuple[S3Space, list[DimensionFit]]:
        """One update of ``space`` from evaluated architectures: fit every subspace, move it, return the new space
        and the fits.

        Args:
            space: the current space.
            configs: the sampled architectures.
            errors: their top-1 errors (%).
            grid: patch grid side of the first stage (windows are compared after clamping to each stage's grid).
        """
        if len(configs) != len(errors):
            raise ValueError(f"{len(configs)} architectures but {len(errors)} errors")
        fits: list[DimensionFit] = []
        new = space
        for stage in range(space.num_stages):
            g = max(grid // 2 ** stage, 1)
            for dim in self.dims:
                fit = self._fit(space, dim, stage, g, configs, errors)
                fits.append(fit)
                if fit.new_choices != fit.choices:
                    new = new.with_choices(dim, stage, fit.new_choices)
        return new, fits

    def _fit(self, space: S3Space, dim: str, stage: int, grid: int, configs: Sequence[S3Subnet],
             errors: Sequence[float]) -> DimensionFit:
        choices = space.choices(dim, stage)
        values, positions = _choice_positions(dim, stage, space, grid)
        groups: list[list[float]] = [[] for _ in choices]
        for cfg, err in zip(configs, errors):
            for i in _members(cfg, dim, stage, values, positions, grid, self.block_value):
                groups[i].append(err)
        q = [et_error(grp, self.top_k).q if grp else None for grp in groups]
        pts = [(p, e) for p, e in zip(positions, q) if e is not None]
        base = dict(stage=stage, dim=dim, choices=tuple(choices), positions=tuple(positions),
                    counts=tuple(len(grp) for grp in groups), errors=tuple(q))
        if len(set(positions)) < len(positions):
            return DimensionFit(**base, slope=None, intercept=None, steps=0, new_choices=tuple(choices),
                                note="choices are equivalent at this resolution")
        line = _line([p for p, _ in pts], [e for _, e in pts]) if len(pts) >= 2 else None
        if line is None:
            return DimensionFit(**base, slope=None, intercept=None, steps=0, new_choices=tuple(choices),
                                note="fewer than two choices with architectures")
        slope, intercept = line
        want = -int(round(slope / self.tau))  # against the slope: error rising with the value -> smaller values
        want = max(-self.max_steps, min(self.max_steps, want))
        if want == 0:
            return DimensionFit(**base, slope=slope, intercept=intercept, steps=0, new_choices=tuple(choices),
                                note="|slope| below tau / 2")
        legal = self._legal(dim, space)
        if dim == "embed_dim":
            heads_ok = legal
            legal = lambda v: heads_ok(v) and v >= space.head_dim  # noqa: E731
        taken, moved = evolve_choices(values, positions, want, legal)
        if dim == "mlp_ratio":
            new_choices = tuple(float(v) for v in moved)
        else:
            new_choices = tuple(int(v) for v in moved)
        return DimensionFit(**base, slope=slope, intercept=intercept, steps=taken,
                            new_choices=new_choices if taken else tuple(choices),
                            note="" if taken else "no legal move (lattice edge or limits)")


def fit_dimensions(space: S3Space, configs: Sequence[S3Subnet], errors: Sequence[float], grid: int,
                   settings: SpaceEvolution | None = None) -> tuple[S3Space, list[DimensionFit]]:
    """Shorthand for ``settings.step(space, configs, errors, grid)`` (default settings)."""
    return (settings or SpaceEvolution()).step(space, configs, errors, grid)


# ---------------------------------------------------------------------------------------- supernet plumbing
def inherit_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy into ``model`` every weight it shares with ``state_dict`` (another supernet of an overlapping space):
    the common first-k block of every tensor, per q/k/v block, per merging quarter, the common centre of each
    relative-position table. Tensors absent from ``state_dict`` (new blocks) keep their values.

    Returns:
        The keys of ``model`` that received no weights.
    """
    own = model.state_dict()
    fresh = [k for k in own if k not in state_dict]
    update = {k: paste_overlap(v, state_dict[k], k) for k, v in own.items() if k in state_dict}
    model.load_state_dict(dict(own, **update), strict=True)
    return fresh


def evaluate_errors(model: nn.Module, configs: Sequence[S3Subnet], loader: Iterable,
                    device: torch.device | str | None = None, *, progress: bool = False) -> list[float]:
    """Top-1 error (%) of each subnet with the supernet's inherited weights (eval mode); ``progress`` shows a bar
    over the subnets."""
    from tqdm.auto import tqdm

    from .scorers import AccuracyScorer

    scorer = AccuracyScorer(model, loader, device=device)
    return [100.0 - scorer(cfg) for cfg in tqdm(configs, disable=not progress, desc="E-T error", unit="arch",
                                                leave=False)]


# --------------------------------------------------------------------------------------------------- the loop
@dataclasses.dataclass
class SpaceEvolutionResult:
    """What :func:`evolve_space` did: the record of each step (as logged) and the final space."""

    steps: list[dict[str, Any]]
    space: S3Space
    state_dict: dict[str, torch.Tensor] | None = None

    @property
    def et_errors(self) -> list[float]:
        return [s["et_error"]["q"] for s in self.steps]


#: What a space-evolution run folder holds besides the common files (timm_nas.search.log).
OUTPUTS = (LOG_NAME, PLOT_NAME, "step_*.jsonl", "supernet_*.safetensors", "final_space.json", "search")


def evolve_space(
        space: S3Space,
        *,
        iterations: int,
        make_supernet: Callable[[S3Space], nn.Module],
        train: Callable[[nn.Module, int], Any],
        evaluate: Callable[[nn.Module, Sequence[S3Subnet]], Sequence[float]],
        settings: SpaceEvolution | None = None,
        out: str | os.PathLike | None = None,
        initial_state: Mapping[str, torch.Tensor] | None = None,
        evaluate_final: bool = True,
        overwrite: bool = False,
        plot: bool = True,
        arguments: Mapping[str, Any] | None = None,
        progress: bool = False,
        dist: Any = None,
) -> SpaceEvolutionResult:
    """Run S3's space evolution: ``iterations`` updates of ``space``, each preceded by training its supernet and
    estimating its E-T error.

    Step ``t``: build the supernet of ``A(t)`` (``make_supernet``), inherit the previous step's weights (or
    ``initial_state``), ``train(model, t)`` (its global-generator draws seeded by ``(settings.seed, t)``), sample
    ``settings.num_samples`` constrained architectures, evaluate their errors (``evaluate``), compute
    ``Q(A(t))``, fit and move every subspace -> ``A(t+1)``. With ``evaluate_final`` the last space is trained and
    evaluated too (its record has no fits).

    With ``out`` (a run folder, :mod:`timm_nas.search.log`), each step writes the step's architectures and errors
    to ``step_<t>.jsonl`` and its supernet weights to ``supernet_<t>.safetensors`` (atomically), then appends one
    line to ``space_evolution.jsonl`` (space, E-T error, fits, next space) and redraws ``space_evolution.png``;
    at the end ``final_space.json`` and ``best.json`` (the final space and its E-T error). The same call again
    resumes after the last completed step; on a finished run it changes nothing.

    Args:
        space: the initial space ``A(0)``.
        iterations: number of updates.
        make_supernet: builds a supernet of a space (same input size and classes every time).
        train: ``train(model, t)`` trains the supernet of step ``t`` in place.
        evaluate: ``evaluate(model, configs)`` -> top-1 errors (%).
        settings: the evolution's parameters.
        out: output folder (``None``: nothing is written, no resume).
        initial_state: weights for the first supernet (e.g. a supernet trained with timm's ``train.py``).
        evaluate_final: also train and evaluate the final space.
        overwrite: discard a previous run in ``out``.
        plot: draw the PNG (skipped with a warning when matplotlib is missing).
        arguments: more JSON-native values that define the run (the data, the training), recorded in
            ``run.json`` and compared on resume.
        progress: show a progress bar over the steps.
        dist: the process group (default: torchrun's, else one process). Every rank trains the same supernet
            (the same seeded batches and draws); the architectures of each E-T error are scored
            ``world_size`` at a time, one per rank, and gathered, so the run equals the one-process run. Only rank
            0 writes.

    Raises:
        ValueError: if ``out`` holds a different run (other space, settings or arguments) and ``overwrite`` is
            false.
    """
    from safetensors.torch import load_file
    from tqdm.auto import tqdm

    from .log import RunFolder

    from .distributed import Dist

    settings = settings or SpaceEvolution()
    if iterations < 0:
        raise ValueError(f"iterations must be non-negative, got {iterations}")
    dist = dist or Dist.from_env()
    folder = None
    main = dist.is_main
    done: list[dict[str, Any]] = []
    state: dict[str, torch.Tensor] | None = dict(initial_state) if initial_state is not None else None
    if out is not None:
        identity = {"space": space.to_dict(), "settings": settings.to_dict(), "iterations": iterations,
                    "evaluate_final": evaluate_final, **dict(arguments or {})}
        folder = RunFolder(out, identity, kind="s3-space", log_name=LOG_NAME, overwrite=overwrite, outputs=OUTPUTS,
                           legacy=(LOG_NAME,))

        run = folder

        def completed() -> tuple[list[dict[str, Any]], dict[str, torch.Tensor] | None]:
            """Rank 0 reads the folder: the completed steps and the last one's weights (sent to every rank)."""
            records = run.check()
            if records and (records[0].get("space") != space.to_dict() or records[0].get("settings") !=
                            settings.to_dict() or records[0].get("iterations") != iterations):
                raise ValueError(f"{run.path} holds a space evolution with another space, settings or number of "
                                 "iterations; pass overwrite=True (--overwrite) or choose another folder")
            kept: list[dict[str, Any]] = []
            for r in records:  # the completed steps: their files are written before their log line
                if r.get("step") != len(kept) or not (run.path / f"supernet_{r['step']}.safetensors").is_file():
                    break
                kept.append(r)
            weights = load_file(str(run.path / f"supernet_{kept[-1]['step']}.safetensors")) if kept else None
            return kept, weights

        done, weights = dist.check(completed)
        if weights is not None:
            state = weights
        if main:
            folder.start(keep=len(done))
    current = space
    if done:
        last_record = done[-1]
        current = S3Space.from_dict(last_record["next_space"] or last_record["space"])
        _logger.info("resuming the space evolution after step %d", last_record["step"])
    records = list(done)
    last = iterations if evaluate_final else iterations - 1
    steps = tqdm(range(len(done), last + 1), total=last + 1, initial=len(done), disable=not progress or not main,
                 desc="space evolution", unit="step")
    for t in steps:
        model = make_supernet(current)
        if state is not None:
            fresh = inherit_weights(model, state)
            if fresh:
                _logger.info("step %d: %d tensors start from their initialisation (new blocks)", t, len(fresh))
        with seeded(settings.seed, t):
            train(model, t)
        configs = sample_subnets(current, settings.num_samples, settings.constraints, seed=settings.seed, step=t)
        errors = _sharded(evaluate, model, configs, dist)
        q = et_error(errors, settings.top_k)
        grid = model.grid if hasattr(model, "grid") else model.patch_embed.grid_size[0]
        if t < iterations:
            next_space, fits = settings.step(current, configs, errors, grid)
        else:
            next_space, fits = None, []
        record = {"step": t, "space": current.to_dict(), "et_error": q.to_dict(),
                  "fits": [f.to_dict() for f in fits], "next_space": next_space.to_dict() if next_space else None,
                  "iterations": iterations, "settings": settings.to_dict()}
        _logger.info("step %d: E-T error %.3f (Q_e %.3f, Q_t %.3f over %d architectures)", t, q.q, q.q_e, q.q_t, q.n)
        steps.set_postfix(et_error=f"{q.q:.3f}")
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        if folder is not None and main:
            lines = []
            for cfg, err in zip(configs, errors):
                cost = settings.constraints.cost(cfg)
                lines.append(json.dumps({"config": cfg.to_dict(), "error": err, "params": cost.params,
                                         "macs": cost.macs}) + "\n")
            folder.write_text(f"step_{t}.jsonl", "".join(lines))
            folder.save_tensors(f"supernet_{t}.safetensors", state)
            folder.append(record)  # last: a logged step has its files
        records.append(record)
        if plot and folder is not None and main:
            plot_space_evolution(records, folder.path / PLOT_NAME)
        if next_space is not None:
            current = next_space
    steps.close()
    if folder is not None and main:
        if plot and records and not (folder.path / PLOT_NAME).is_file():
            plot_space_evolution(records, folder.path / PLOT_NAME)
        folder.write_json("final_space.json", current.to_dict())
        if records:
            final = records[-1]
            folder.write_json("best.json", {"space": current.to_dict(), "step": final["step"],
                                            "et_error": final["et_error"] if final["space"] == current.to_dict()
                                            else None, "steps": len(records)})
        folder.close()
    return SpaceEvolutionResult(records, current, state)


def _sharded(evaluate: Callable[[nn.Module, Sequence[S3Subnet]], Sequence[float]], model: nn.Module,
             configs: Sequence[S3Subnet], dist: Any) -> list[float]:
    """``evaluate(model, configs)`` with the configs dealt out over the ranks (rank ``r`` scores ``configs[r::world]``)
    and the errors gathered back into the configs' order on every rank."""
    if dist.world_size == 1:
        return [float(e) for e in evaluate(model, configs)]
    mine = [float(e) for e in evaluate(model, list(configs[dist.rank::dist.world_size]))]
    shards = dist.all_gather(mine)
    errors: list[float] = [0.0] * len(configs)
    for r, shard in enumerate(shards):
        errors[r::dist.world_size] = shard
    return errors


def plot_space_evolution(records: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path | None:
    """Draw ``Q``, ``Q_e`` and ``Q_t`` per step, and each stage's choice ranges per step (a PNG).

    Returns ``None`` (with a warning) when matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        _logger.warning("matplotlib is not installed: no %s (pip install 'timm-nas[plots]')", path)
        return None
    steps = [r["step"] for r in records]
    fig = Figure(figsize=(4 * (1 + len(DIMENSIONS)), 3.2))
    FigureCanvasAgg(fig)  # an Agg canvas for this figure only: no pyplot, no global backend change
    axes = fig.subplots(1, 1 + len(DIMENSIONS))
    ax = axes[0]
    for key, label in (("q", "E-T error Q"), ("q_e", "Q_e (mean)"), ("q_t", "Q_t (top-k)")):
        ax.plot(steps, [r["et_error"][key] for r in records], marker="o", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("top-1 error (%)")
    ax.legend(fontsize=7)
    for ax, dim in zip(axes[1:], DIMENSIONS):
        spaces = [r["space"][dim] for r in records]
        for stage in range(len(spaces[0])):
            lo = [min(s[stage]) for s in spaces]
            hi = [max(s[stage]) for s in spaces]
            ax.fill_between(steps, lo, hi, alpha=0.25, step="mid")
            ax.plot(steps, hi, marker=".", label=f"stage {stage}")
        ax.set_title(dim)
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    fig.tight_layout()
    from .._io import atomic_write

    return atomic_write(Path(path), lambda tmp: fig.savefig(str(tmp), dpi=100, format="png"))
