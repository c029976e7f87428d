"""Latency on the user's own device: a per-family lookup table measured once, and a predictor fast enough for a
search.

A subnet's latency is predicted as the sum of the measured latencies of the parts its cost decomposes into, with an
affine calibration fitted on a few subnets measured end to end (the parts run back to back in the real model, so
the sum misses the glue between them: module calls, reshapes, cache effects):

* **AutoFormer**: every block of a subnet has the subnet's embed dim, so one entry per ``(embed_dim, heads, MLP
  hidden width)`` block on the ``(B, N + 1, E)`` tokens (timed as a stack of the space's largest depth of such
  blocks, divided by the depth: one block timed alone keeps its weights in the caches and reads faster than it runs
  inside a network), plus one per embed dim for everything outside the blocks (patch embedding, class token,
  position embedding, final norm, pooling, head).
* **S3**: one entry per stage and ``(embed_dim, heads, effective window, shift, MLP hidden width)`` block on the
  stage's ``(B, H, W, E)`` grid, one per ``(stage, in width, out width)`` patch merging, the patch embedding per
  first-stage width and the final norm + head per last-stage width.
* **DARTS** genotype networks (the evaluation network a search network's ``extract`` builds, e.g. C=36 with 20
  cells on CIFAR): one entry per operation and ``(channels, input size, stride)`` that a cell's operation can run
  at; a genotype's parts are the operations of its normal and reduction cells in every cell of the network. What
  every genotype shares (stem, the cells' input preprocessing, sums and concatenations, head) is the calibration's
  intercept.
* **SPViT** pruned models (what a search network ``spvit_search_deit_*`` extracts): every layer has the same width
  and tokens, so one entry per attention op (the residual half ``x + attn(norm1(x))``; nothing for a skip in
  ``skip_mode='zero'``) and one per FFN width on a grid of 17 from none to all (``x + mlp(norm2(x))``; a width
  between two is interpolated linearly), each timed as a stack of the network's depth, plus the rest.

Parts and calibration subnets are timed interleaved in rounds (:func:`time_interleaved`), so that the sum and the
end-to-end latencies it is calibrated against are read in the same state of a machine whose speed drifts; and each
visit alternates its calls with a reference subnet (the space's smallest) and keeps the ratio to it
(:func:`time_paired`, :func:`paired_ms`), so that the speed of the moment, which on a shared machine changes by more
than neighbouring subnets differ, cancels.

The idea of predicting a network's latency from a table of per-layer latencies measured on the target device is
ProxylessNAS's (Cai et al., ICLR 2019, arXiv:1812.00332, Sec. 3.3) and FBNet's (Wu et al., CVPR 2019,
arXiv:1812.03443, Sec. 3.2); ``timm-nas latency check`` measures how well it predicts real extracted subnets.

A :class:`LatencyTable` records the setting it was measured in (device and its name, torch and timm-nas versions,
threads, dtype, batch and input size, the model and its shape arguments) and refuses another one
(:meth:`LatencyTable.check`, one ``ValueError`` naming the field). :func:`predict_latency` takes a table or its path.
Building and measuring (:func:`build_table`, :func:`measure_subnets`) need the family's models, which are created by
name through timm when called (this package never imports the model modules).
"""
from __future__ import annotations

import bisect
import contextlib
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn as nn

from .._io import atomic_write_text
from ..spaces.autoformer import AutoFormerSubnet
from ..spaces.darts import Genotype
from ..spaces.s3 import S3Subnet
from ..spaces.spvit import SPVIT_OPS, SPViTArch
from .s3 import _square_grid, _stage_grids

__all__ = ["LatencyTable", "predict_latency", "build_table", "measure_subnets", "measure_rounds", "time_callable",
           "time_paired", "time_interleaved", "paired_ms", "steady_heap", "heap_mode", "device_name",
           "supernet_setting", "LATENCY_FAMILIES"]

#: Version of the table file format.
TABLE_FORMAT = 1

#: Setting fields that must match for a table to be used (in the order an error reports them).
SETTING_FIELDS = ("family", "model_args", "device", "device_name", "dtype", "batch_size", "img_size", "threads",
                  "torch", "timm_nas")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# --------------------------------------------------------------------------------------------------- setting
def device_name(device: str | torch.device) -> str:
    """What the table is measured on: the CPU model name (``/proc/cpuinfo``, else ``platform.processor()``) or the
    CUDA device name."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine() or "unknown cpu"
    return device.type


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def latency_space(supernet: nn.Module) -> Any:
    """The space of the architectures ``supernet.extract`` takes: its search space, or for a search network that
    trains gates instead (SPViT) its ``arch_space``."""
    space = getattr(supernet, "space", None)
    if space is None:
        space = getattr(supernet, "arch_space", None)
    if space is None or not hasattr(supernet, "extract"):
        raise ValueError(f"{type(supernet).__name__} has no space of architectures to extract; latency tables are "
                         f"built from the supernets (or search networks) of {sorted(LATENCY_FAMILIES)}")
    return space


def model_shape_args(supernet: nn.Module) -> dict[str, Any]:
    """The shape arguments of a supernet's subnets (its static models' constructor arguments but the subnet), which
    decide what each table entry measures. The space is left out: an entry holds whatever the space needs of it,
    and a missing one is reported when predicted."""
    from ..family import family_of

    args = dict(supernet.static_model_args(latency_space(supernet).smallest()))
    family = family_of(supernet)
    args.pop(family.arch_arg if family is not None else "subnet", None)
    return _jsonable(args)


def _img_size(supernet: nn.Module) -> Any:
    """The input size the latency is measured at: the subnets' ``img_size`` argument, else the one the family's cost
    model assumes (``cost_args``: the DARTS CIFAR network takes any size and is measured at 32), else 224."""
    size = model_shape_args(supernet).get("img_size")
    if size is None:
        size = getattr(supernet, "cost_args", {}).get("img_size", 224)
    return _jsonable(size)


def supernet_setting(supernet: nn.Module, *, model: str, create_args: Mapping[str, Any], device: str | torch.device,
                     batch_size: int, threads: int, dtype: str = "float32") -> dict[str, Any]:
    """The setting a table measured for ``supernet`` records (:data:`SETTING_FIELDS` plus what rebuilds the model)."""
    from ..family import family_of
    from ..version import __version__

    family = family_of(supernet)
    if family is None or family.name not in LATENCY_FAMILIES:
        raise ValueError(f"no latency decomposition for {type(supernet).__name__}; latency tables cover the "
                         f"supernets of {sorted(LATENCY_FAMILIES)}")
    shape = model_shape_args(supernet)
    device = torch.device(device)
    setting = {
        "family": family.name, "model": model, "create_args": _jsonable(dict(create_args)),
        "space": _jsonable(latency_space(supernet).to_dict()), "model_args": shape,
        "device": device.type, "device_name": device_name(device), "dtype": dtype, "batch_size": int(batch_size),
        "img_size": _img_size(supernet), "threads": int(threads), "torch": torch.__version__.split("+")[0],
        "timm_nas": __version__,
    }
    cost_args = getattr(supernet, "cost_args", None)
    if isinstance(cost_args, Mapping):  # the subnets' shape as the cost model sees it (checks static models)
        setting["cost_args"] = _jsonable(dict(cost_args))
    if family.name == "darts":
        setting["cells"] = _darts_cells(supernet)
    if family.name == "spvit":
        setting["ffn_grid"] = _spvit_grid(latency_space(supernet).hidden)
    return setting


# ----------------------------------------------------------------------------------------------- decompositions
def _autoformer_parts(cfg: AutoFormerSubnet, setting: Mapping[str, Any]) -> list[str]:
    e = cfg.embed_dim
    return [f"rest|{e}"] + [f"block|{e}|{h}|{int(e * r)}" for h, r in zip(cfg.num_heads, cfg.mlp_ratio)]


def _s3_grids(setting: Mapping[str, Any], num_stages: int) -> list[int]:
    args = setting["model_args"]
    return _stage_grids(_square_grid(args.get("img_size", 224), args.get("patch_size", 4)), num_stages)


def _s3_window(grid: int, window: int, j: int) -> tuple[int, int]:
    # the effective (window, shift) of block j: timm_nas.layers.window_attention.window_and_shift (the model's rule)
    if grid <= window:
        return grid, 0
    return window, (0 if j % 2 == 0 else window // 2)


def _s3_block_key(i: int, e: int, heads: int, grid: int, window: int, j: int, hidden: int) -> str:
    w, shift = _s3_window(grid, window, j)
    return f"block|{i}|{e}|{heads}|{w}|{shift}|{hidden}"


def _s3_parts(cfg: S3Subnet, setting: Mapping[str, Any]) -> list[str]:
    grids = _s3_grids(setting, cfg.num_stages)
    e = cfg.embed_dim
    parts = [f"embed|{e[0]}", f"head|{e[-1]}"]
    parts += [f"merge|{i}|{e[i - 1]}|{e[i]}" for i in range(1, cfg.num_stages)]
    for i, j in cfg.blocks():
        parts.append(_s3_block_key(i, e[i], cfg.num_heads[i][j], grids[i], cfg.window_size[i][j], j,
                                   int(e[i] * cfg.mlp_ratio[i][j])))
    return parts


def _darts_cells(supernet: nn.Module) -> list[list[Any]]:
    """``[C, H, W, reduction]`` of every cell of the network ``supernet.extract`` builds (the channels its operations
    run at, and the size of the cell's inputs), read from one forward of that network at batch 1 on the CPU."""
    model = supernet.extract(latency_space(supernet).smallest()).eval()
    cells: list[list[Any]] = []

    def hook(cell: nn.Module, args: tuple, output: torch.Tensor) -> None:
        h, w = args[1].shape[-2:]
        cells.append([int(output.shape[1]) // cell.multiplier, int(h), int(w), bool(cell.reduction)])

    handles = [cell.register_forward_hook(hook) for cell in model.cells]
    try:
        args = model.cost_args
        size = args.get("img_size", 32)
        ih, iw = (size, size) if isinstance(size, int) else size
        with torch.no_grad():
            model(torch.zeros(1, args.get("in_chans", 3), ih, iw))
    finally:
        for h in handles:
            h.remove()
    return cells


def _darts_op_key(op: str, C: int, h: int, w: int, stride: int) -> str:
    return f"op|{op}|{C}|{h}x{w}|{stride}"


def _darts_op_sites(C: int, h: int, w: int, reduction: bool, index: int) -> tuple[int, int, int]:
    """``(h, w, stride)`` of an operation reading state ``index`` of a cell (inputs ``h x w``): in a reduction cell the
    operations on the inputs run with stride 2 and the rest on the halved maps."""
    if not reduction:
        return h, w, 1
    if index < 2:
        return h, w, 2
    return (h + 1) // 2, (w + 1) // 2, 1


def _darts_parts(cfg: Genotype, setting: Mapping[str, Any]) -> list[str]:
    parts = []
    for C, h, w, reduction in setting["cells"]:
        pairs, _ = cfg.cell(bool(reduction))
        for op, index in pairs:
            parts.append(_darts_op_key(op, C, *_darts_op_sites(C, h, w, reduction, index)))
    return parts


#: FFN widths an SPViT table measures: 17 evenly spaced from none to all (a width between two is interpolated).
SPVIT_FFN_STEPS = 16


def _spvit_grid(hidden: int) -> list[int]:
    return sorted({round(hidden * k / SPVIT_FFN_STEPS) for k in range(SPVIT_FFN_STEPS + 1)})


def _spvit_ffn(width: float, grid: Sequence[int]) -> list[tuple[str, float]]:
    """The FFN of ``width`` kept units as table keys with weights: the measured width itself, or the linear
    interpolation between the two measured widths around it."""
    j = bisect.bisect_left(grid, width)
    if j < len(grid) and grid[j] == width:
        return [(f"ffn|{grid[j]}", 1.0)]
    if j == 0 or j == len(grid):
        raise ValueError(f"FFN width {width} is outside the measured widths {grid[0]}..{grid[-1]}")
    lo, hi = grid[j - 1], grid[j]
    t = (width - lo) / (hi - lo)
    return [(f"ffn|{lo}", 1.0 - t), (f"ffn|{hi}", t)]


def _spvit_parts(cfg: SPViTArch, setting: Mapping[str, Any]) -> list[Any]:
    grid = setting["ffn_grid"]
    parts: list[Any] = ["rest"]
    for op, width in zip(cfg.ops, cfg.ffn_hidden):
        parts.append(f"attn|{op}")
        parts += _spvit_ffn(width, grid)
    return parts


#: family -> (config type, parts(cfg, setting) -> the table keys whose sum predicts the latency; a part may be a
#: ``(key, weight)`` pair, e.g. an interpolation between two measured widths).
LATENCY_FAMILIES: dict[str, tuple[type, Callable[[Any, Mapping[str, Any]], list[str]]]] = {
    "autoformer": (AutoFormerSubnet, _autoformer_parts),
    "s3": (S3Subnet, _s3_parts),
    "darts": (Genotype, _darts_parts),
    "spvit": (SPViTArch, _spvit_parts),
}


# ------------------------------------------------------------------------------------------------------ table
class LatencyTable:
    """Measured latencies (milliseconds) of the parts a family's subnets decompose into, in one setting.

    Attributes:
        setting: what was measured and where (:data:`SETTING_FIELDS`, plus ``model`` / ``create_args`` that rebuild
            the supernet and the measurement options).
        entries: part key -> milliseconds.
        calibration: subnets measured end to end (``points``: ``{"config", "parts_ms", "measured_ms"}``) and the
            fitted ``scale`` / ``intercept`` of ``latency = scale * sum(parts) + intercept``.
    """

    def __init__(self, setting: Mapping[str, Any], entries: Mapping[str, float] | None = None,
                 calibration: Mapping[str, Any] | None = None, path: str | os.PathLike | None = None) -> None:
        self.setting = dict(setting)
        self.entries: dict[str, float] = dict(entries or {})
        self.calibration: dict[str, Any] = dict(calibration or {"points": []})
        self.calibration.setdefault("points", [])
        self.path = None if path is None else Path(path)
        #: per entry, the value of every measured round: milliseconds, or with a reference (``setting["measure"]
        #: ["reference"]``, the config of the subnet every visit alternated with) the ratio to it; ``entries`` holds
        #: :meth:`measured` of them.
        self.samples: dict[str, list[float]] = {}
        #: with a reference, its milliseconds in every measured round.
        self.reference_ms: list[float] = []
        #: rounds measured so far (``None`` for a table written before interleaved rounds: finished as it is).
        self.rounds_done: int | None = None
        family = self.setting.get("family")
        if family not in LATENCY_FAMILIES:
            raise ValueError(f"latency table{self._where()} is for family {family!r}; known: {sorted(LATENCY_FAMILIES)}")
        self._config_cls, self._parts = LATENCY_FAMILIES[family]

    def _where(self) -> str:
        return f" {self.path}" if self.path is not None else ""

    # ------------------------------------------------------------------------------------------ persistence
    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyTable":
        """Read a table file.

        Raises:
            FileNotFoundError: for a missing file.
            ValueError: for a file that is not a latency table (one line saying so).
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"latency table not found: {path} (make one with: timm-nas latency build ...)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != TABLE_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {TABLE_FORMAT}")
            table = cls(data["setting"], {str(k): float(v) for k, v in data["entries"].items()},
                        data.get("calibration"), path=path)
            table.samples = {str(k): [float(x) for x in v] for k, v in data.get("samples", {}).items()}
            table.reference_ms = [float(x) for x in data.get("reference_ms", [])]
            rounds = data.get("rounds_done")
            table.rounds_done = None if rounds is None else int(rounds)
            for field in SETTING_FIELDS:
                table.setting[field]  # noqa: B018 (a missing field is a corrupt table)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"{path} is not a readable latency table ({type(e).__name__}: {e}); rebuild it with "
                             "timm-nas latency build") from None
        return table

    def to_dict(self) -> dict[str, Any]:
        data = {"format": TABLE_FORMAT, "setting": self.setting, "calibration": self.calibration,
                "entries": dict(sorted(self.entries.items()))}
        if self.rounds_done is not None:
            data.update(rounds_done=self.rounds_done, samples=dict(sorted(self.samples.items())))
            if self.paired:
                data["reference_ms"] = self.reference_ms
        return data

    @property
    def paired(self) -> bool:
        """Whether the rounds were measured against a reference subnet (values are ratios to it)."""
        return bool(self.setting.get("measure", {}).get("reference"))

    @property
    def point_rounds(self) -> str:
        """The calibration points' field with their per-round values: ``rounds_ratio`` (to the reference) or
        ``rounds_ms``."""
        return "rounds_ratio" if self.paired else "rounds_ms"

    def measured(self, rounds: Sequence[float]) -> float:
        """Milliseconds from one entry's (or calibration subnet's) per-round values: :func:`paired_ms` with the
        reference's rounds, or without a reference the measurement's ``stat`` (min or median) of the rounds."""
        if self.paired:
            return paired_ms(rounds, self.reference_ms)
        return _stat(rounds, self.setting.get("measure", {}).get("stat", "min"))

    @property
    def complete(self) -> bool:
        """Whether every round the build asked for was measured (an interrupted build leaves fewer)."""
        wanted = self.setting.get("measure", {}).get("rounds")
        return self.rounds_done is None or wanted is None or self.rounds_done >= wanted

    def check_complete(self) -> None:
        """Raise one ``ValueError`` for a table whose build was interrupted (its entries rest on fewer rounds)."""
        if not self.complete:
            raise ValueError(f"latency table{self._where()} is unfinished ({self.rounds_done} of "
                             f"{self.setting['measure']['rounds']} rounds measured): finish it by running the same "
                             "timm-nas latency build command again")

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the table (atomically: an interrupted build leaves the previous complete file)."""
        path = Path(path).expanduser() if path is not None else self.path
        if path is None:
            raise ValueError("no path to save the latency table to")
        self.path = path
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    # --------------------------------------------------------------------------------------------- checking
    def check(self, what: str = "this run", **expected: Any) -> None:
        """Raise one ``ValueError`` naming the first setting field that differs from ``expected``.

        ``model_args`` is compared key by key (the key that differs is named).
        """
        for field in SETTING_FIELDS:
            if field not in expected:
                continue
            have, want = self.setting.get(field), _jsonable(expected[field])
            if field == "model_args":
                for k in sorted(set(have or {}) | set(want or {})):
                    if (have or {}).get(k) != (want or {}).get(k):
                        raise ValueError(f"latency table{self._where()} was measured with model_args.{k}="
                                         f"{(have or {}).get(k)!r}, {what} has {(want or {}).get(k)!r}; build a "
                                         "table for this model (timm-nas latency build)")
            elif have != want:
                raise ValueError(f"latency table{self._where()} was measured with {field}={have!r}, {what} has "
                                 f"{want!r}; build a table for this setting (timm-nas latency build)")

    def check_model(self, supernet: nn.Module, what: str = "this search") -> None:
        """Raise one ``ValueError`` unless the table was measured for ``supernet``'s family and shape arguments, on
        a device of this machine (the same CPU model, or a CUDA device of the same name).

        ``supernet`` may also be a static model of the family (a search over a family's own networks, e.g.
        ``--space darts``): its ``cost_args`` are then compared with those the table recorded."""
        from ..family import family_of

        family = family_of(supernet)
        kind = self.setting["device"]
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"latency table{self._where()} was measured on {self.setting['device_name']} (cuda); "
                             f"{what} runs on a machine without CUDA; build a table here (timm-nas latency build)")
        here = device_name(kind)
        name = family.name if family is not None else type(supernet).__name__
        if (hasattr(supernet, "space") or hasattr(supernet, "arch_space")) and hasattr(supernet, "static_model_args"):
            self.check(what, family=name, model_args=model_shape_args(supernet), device_name=here)
            self.check_complete()
            return
        self.check(what, family=name, device_name=here)
        self.check_complete()
        have, want = self.setting.get("cost_args"), _jsonable(dict(getattr(supernet, "cost_args", {}) or {}))
        if have is None:
            raise ValueError(f"latency table{self._where()} records no cost_args to compare a static model with; "
                             "rebuild it with this version (timm-nas latency build)")
        for k in sorted(set(have) | set(want)):
            if have.get(k) != want.get(k):
                raise ValueError(f"latency table{self._where()} was measured with {k}={have.get(k)!r}, {what} has "
                                 f"{want.get(k)!r}; build a table for this model (timm-nas latency build)")

    def describe(self) -> dict[str, Any]:
        """JSON-native identity (search records, model cards): the device and the setting, and the calibration."""
        s = self.setting
        return {"device": s["device"], "device_name": s["device_name"], "batch_size": s["batch_size"],
                "img_size": s["img_size"], "threads": s["threads"], "dtype": s["dtype"], "torch": s["torch"],
                "model": s.get("model"), "entries": len(self.entries),
                "scale": self.calibration.get("scale"), "intercept": self.calibration.get("intercept")}

    # ------------------------------------------------------------------------------------------- predicting
    def parts(self, cfg: Any) -> list[Any]:
        """The table keys whose latencies add up to ``cfg``'s (before calibration); a ``(key, weight)`` pair counts
        the entry times the weight."""
        if not isinstance(cfg, self._config_cls):
            cfg = self._config_cls.from_dict(cfg)
        return self._parts(cfg, self.setting)

    def parts_ms(self, cfg: Any) -> float:
        """Sum of the measured parts of ``cfg``, milliseconds (no calibration)."""
        entries = self.entries
        try:
            return math.fsum(entries[k] if k.__class__ is str else entries[k[0]] * k[1] for k in self.parts(cfg))
        except KeyError as e:
            raise ValueError(f"latency table{self._where()} has no entry {e.args[0]!r} (the architecture is outside "
                             f"the space the table was built for); rebuild it for this space") from None

    def predict(self, cfg: Any) -> float:
        """Predicted latency of ``cfg``, milliseconds: ``scale * parts_ms(cfg) + intercept``."""
        c = self.calibration
        return c.get("scale", 1.0) * self.parts_ms(cfg) + c.get("intercept", 0.0)

    def spvit_terms(self) -> dict[str, Any]:
        """What an SPViT search network needs to predict, differentiably, the latency of the arch its gates choose
        (:meth:`timm_nas.models.spvit.SPViTSearchDeiT.latency`): the ``rest``, each attention op's entry
        (``attn``), the measured FFN widths (``ffn_grid``) and their entries (``ffn_ms``), and the calibration's
        ``scale`` / ``intercept``."""
        if self.setting["family"] != "spvit":
            raise ValueError(f"latency table{self._where()} is for family {self.setting['family']!r}, not spvit")
        e, c = self.entries, self.calibration
        grid = list(self.setting["ffn_grid"])
        try:
            return {"rest": e["rest"], "attn": {op: e[f"attn|{op}"] for op in SPVIT_OPS}, "ffn_grid": grid,
                    "ffn_ms": [e[f"ffn|{w}"] for w in grid], "scale": c.get("scale", 1.0),
                    "intercept": c.get("intercept", 0.0)}
        except KeyError as err:
            raise ValueError(f"latency table{self._where()} has no entry {err.args[0]!r}; rebuild it") from None

    def bounds(self, space: Any) -> tuple[float, float] | None:
        """Lower and upper bounds of the predicted latency over ``space``, where its smallest and largest
        architectures do not give them: for DARTS (the cheapest operations by MACs, pooling, are not the fastest),
        each operation slot of each cell at its fastest and its slowest choice. ``None`` for the other families,
        whose latency grows with every dimension as their costs do."""
        if self.setting["family"] != "darts":
            return None
        lo = hi = 0.0
        try:
            for C, h, w, reduction in self.setting["cells"]:
                for node in range(space.steps):
                    values = [self.entries[_darts_op_key(op, C, *_darts_op_sites(C, h, w, reduction, index))]
                              for op in space.operations for index in range(node + 2)]
                    lo += 2 * min(values)
                    hi += 2 * max(values)
        except KeyError as e:
            raise ValueError(f"latency table{self._where()} has no entry {e.args[0]!r} (the space is not the one the "
                             "table was built for); rebuild it for this space") from None
        c = self.calibration
        scale, intercept = c.get("scale", 1.0), c.get("intercept", 0.0)
        return scale * lo + intercept, scale * hi + intercept

    def update_calibration(self) -> None:
        """Recompute every calibration point's sum of parts (from the current entries) and measured latency (the
        :meth:`measured` of its rounds), then :meth:`fit_calibration`."""
        for point in self.calibration["points"]:
            point["parts_ms"] = self.parts_ms(point["config"])
            rounds = point.get(self.point_rounds)
            if rounds:
                point["measured_ms"] = self.measured(rounds)
        self.fit_calibration()

    def fit_calibration(self) -> None:
        """Least-squares ``scale`` and ``intercept`` of measured against summed latency over the calibration
        subnets. A fit whose scale is not positive or whose intercept is negative (few or noisy points: it would
        predict zero or negative latencies for small subnets) falls back to a scale through the origin; with no
        subnet the calibration is the identity."""
        pts = self.calibration["points"]
        x = [p["parts_ms"] for p in pts]
        y = [p["measured_ms"] for p in pts]
        scale, intercept = 1.0, 0.0
        if len(pts) >= 2 and max(x) > min(x):
            mx, my = sum(x) / len(x), sum(y) / len(y)
            scale = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)
            intercept = my - scale * mx
        if pts and (scale <= 0 or intercept < 0):
            scale, intercept = sum(a * b for a, b in zip(x, y)) / sum(a * a for a in x), 0.0
        self.calibration.update(scale=scale, intercept=intercept)


def predict_latency(cfg: Any, table: LatencyTable | str | os.PathLike) -> float:
    """Predicted latency of the architecture ``cfg`` (a config or its dict), in milliseconds, in the setting the
    table was measured in. ``table`` is a :class:`LatencyTable` or the path of one (read on every call: load it once
    with :meth:`LatencyTable.load` inside a loop)."""
    if not isinstance(table, LatencyTable):
        table = LatencyTable.load(table)
    return table.predict(cfg)


# ---------------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(fn: Callable[[], Any], device: torch.device) -> float:
    """Milliseconds of one call of ``fn()``: CUDA events and a synchronisation on CUDA, ``time.perf_counter`` on
    the CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def time_callable(fn: Callable[[], Any], device: str | torch.device = "cpu", *, warmup: int = 3,
                  repeats: int = 10) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``fn()`` after ``warmup`` calls, under ``torch.no_grad``.

    On CUDA each call is timed with CUDA events and synchronised (the work ``fn`` queues is counted, not the time to
    queue it); on the CPU with ``time.perf_counter``.
    """
    device = torch.device(device)
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        _sync(device)
        return [_time_once(fn, device) for _ in range(repeats)]


def time_paired(fn: Callable[[], Any], reference: Callable[[], Any], device: str | torch.device = "cpu", *,
                warmup: int = 1, repeats: int = 4) -> tuple[list[float], list[float]]:
    """Milliseconds of ``repeats`` calls of ``fn()`` and of ``reference()``, alternated (reference, fn, reference,
    fn, ...) after ``warmup`` calls of each, under ``torch.no_grad``: ``(fn's times, reference's times)``.

    On a shared machine the speed changes from one moment to the next by more than a network's latency differs
    from its neighbour's (here: 5-20% between visits a few hundred milliseconds apart, within 2-4% inside one);
    calls alternated within one visit run at the same speed, so their ratio keeps the difference and drops the
    machine's state.
    """
    device = torch.device(device)
    with torch.no_grad():
        for _ in range(warmup):
            reference()
            fn()
        _sync(device)
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(repeats):
            times[1].append(_time_once(reference, device))
            times[0].append(_time_once(fn, device))
    return times


#: ``mallopt`` parameters (glibc ``malloc.h``) and the values :func:`steady_heap` sets: blocks up to 32 MiB (glibc's
#: largest mmap threshold on 64-bit) come from the heap, and up to 1 GiB of freed heap top is kept.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_STEADY_MMAP, _STEADY_TRIM, _DEFAULT_TRIM = 32 << 20, 1 << 30, 128 << 10


def _glibc() -> Any:
    try:
        import ctypes
        import ctypes.util

        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        lib.mallopt, lib.malloc_trim  # noqa: B018 (glibc has both; other C libraries may not)
        return lib
    except (OSError, AttributeError):
        return None


def heap_mode() -> str:
    """``"glibc-steady"`` where :func:`steady_heap` can hold the heap steady (glibc), else ``"default"``."""
    lib = _glibc()
    return "glibc-steady" if lib is not None and platform.libc_ver()[0] == "glibc" else "default"


@contextlib.contextmanager
def steady_heap() -> Iterator[bool]:
    """Keep freed memory in the process's heap while timing (yields whether it could).

    glibc serves a large block (from 128 KiB, a threshold it moves as blocks are freed) with a fresh ``mmap`` and
    returns the heap's free top to the system; a forward that allocates its activations then pays page faults,
    a cost that varies with what ran before (here: 10% of a batch-8 AutoFormer-T build's time was spent in the
    kernel, and the ratio of two networks timed in the same visit varied twice as much). A process that runs one
    model again and again settles into reusing its blocks; timing many models interleaved does not, unless told
    to: blocks up to 32 MiB come from the heap and freed memory is kept. On exit the trim threshold is set back
    to glibc's default and the heap trimmed (the mmap threshold stays fixed: glibc cannot return to its moving
    one). A no-op without glibc."""
    lib = _glibc() if heap_mode() == "glibc-steady" else None
    ok = lib is not None and lib.mallopt(_M_MMAP_THRESHOLD, _STEADY_MMAP) == 1 \
        and lib.mallopt(_M_TRIM_THRESHOLD, _STEADY_TRIM) == 1
    try:
        yield ok
    finally:
        if ok:
            lib.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM)
            lib.malloc_trim(0)


def time_interleaved(subjects: Sequence[Callable[[], Callable[[], Any]]], device: str | torch.device = "cpu", *,
                     rounds: int = 6, warmup: int = 1, repeats: int = 4, stat: str = "min", start: int = 0,
                     reference: Callable[[], Callable[[], Any]] | None = None,
                     callback: Callable[[int, int, float], None] | None = None,
                     on_round: Callable[[int], None] | None = None) -> list[list[float]]:
    """Time several things interleaved, so that the machine's slow drift falls on all of them alike.

    Each of ``rounds`` rounds visits every subject once, in order in even rounds and in reverse in odd ones; a visit
    calls ``subject()`` for the callable to time (a model kept between visits, or rebuilt when too big to keep) and
    times it with :func:`time_callable` (``warmup`` untimed and ``repeats`` timed calls; a callable with a
    ``copies`` attribute runs that many copies of what is measured, and its time is divided by it). Returns, per
    subject, the ``stat`` of each round's timed calls (rounds ``start`` .. ``rounds - 1``). The heap is held steady
    while timing (:func:`steady_heap`).

    With a ``reference`` (called like a subject), every visit alternates the subject's calls with the reference's
    (:func:`time_paired`) and its value is the ratio of the subject's ``stat`` to the reference's: the speed of the
    moment cancels. The returned list then has one more row, last: the reference's milliseconds in each round (the
    ``stat`` of all its calls in the round); :func:`paired_ms` turns a subject's ratios and that row into
    milliseconds.

    ``callback(round, index, value)`` follows every visit (and, with a reference, the end of each round's visits
    with ``index = len(subjects)`` and the reference's milliseconds), and ``on_round(round)`` every finished round
    (e.g. to save progress).
    """
    out: list[list[float]] = [[] for _ in range(len(subjects) + (reference is not None))]
    with steady_heap():
        for r in range(start, rounds):
            order = range(len(subjects)) if r % 2 == 0 else range(len(subjects) - 1, -1, -1)
            reference_ms: list[float] = []
            for i in order:
                fn = subjects[i]()
                if reference is None:
                    times = time_callable(fn, device, warmup=warmup, repeats=repeats)
                    value = _stat(times, stat) / getattr(fn, "copies", 1)
                else:
                    ref = reference()
                    times, ref_times = time_paired(fn, ref, device, warmup=warmup, repeats=repeats)
                    ref_ms = _stat(ref_times, stat) / getattr(ref, "copies", 1)
                    reference_ms.append(ref_ms)
                    value = _stat(times, stat) / getattr(fn, "copies", 1) / ref_ms
                out[i].append(value)
                if callback is not None:
                    callback(r, i, value)
            if reference is not None:
                out[-1].append(_stat(reference_ms, stat))
                if callback is not None:
                    callback(r, len(subjects), out[-1][-1])
            if on_round is not None:
                on_round(r)
    return out


def paired_ms(ratios: Sequence[float], reference_ms: Sequence[float]) -> float:
    """Milliseconds of a subject measured against a reference (:func:`time_interleaved`): the median of its
    rounds' ratios times the reference's fastest round. The median, since a ratio's noise is symmetric (both sides
    of it were timed at the same speed); the fastest round, since the machine only ever slows a network down."""
    return _stat(ratios, "median") * min(reference_ms)


def _stat(times: Sequence[float], stat: str) -> float:
    if stat == "min":
        return min(times)
    ordered = sorted(times)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _static(supernet: nn.Module, cfg: Any, device: torch.device, dtype: torch.dtype, **override: Any) -> nn.Module:
    """A randomly initialised static model of ``cfg`` with the supernet's shape arguments (latency does not depend on
    the weights' values), ``override`` replacing some (e.g. fewer layers)."""
    import timm

    from ..family import family_of

    family = family_of(supernet)
    args = dict(model_shape_args(supernet), **override, **{family.arch_arg: cfg.to_dict()})
    return timm.create_model(family.static_entrypoint, **args).to(device=device, dtype=dtype).eval()


def _segments(supernet: nn.Module, setting: Mapping[str, Any], device: torch.device,
              dtype: torch.dtype) -> Iterator[tuple[list[str], Callable[[], tuple[list[Callable[[], Any]]]]]]:
    """``(keys, make)`` for every part of the family's decomposition: ``make()`` builds the small model that holds
    them and returns one callable per key."""
    family, space, b = setting["family"], latency_space(supernet), setting["batch_size"]
    img = setting.get("img_size") or setting["model_args"].get("img_size", 224)
    ih, iw = (img, img) if isinstance(img, int) else img
    in_chans = setting["model_args"].get("in_chans", 3)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype)

    if family == "autoformer":
        for e in space.embed_dim:
            for h in space.num_heads:
                for r in space.mlp_ratio:
                    depth = max(space.depth)
                    cfg = AutoFormerSubnet(e, depth, (h,) * depth, (r,) * depth)

                    def make(cfg: AutoFormerSubnet = cfg) -> list[Callable[[], Any]]:
                        model = _static(supernet, cfg, device, dtype)
                        x = rand(b, model.patch_embed.num_patches + 1, cfg.embed_dim)
                        image = rand(b, in_chans, ih, iw)
                        rest = _without_blocks(model)
                        return [_Stack(model.blocks, x), lambda: rest(image)]

                    yield [f"block|{e}|{h}|{int(e * r)}", f"rest|{e}"], make
        return
    if family == "s3":
        n = space.num_stages
        grids = _s3_grids(setting, n)
        small = space.smallest()
        for i in range(n):
            for e in space.embed_dim[i]:
                for w in space.window_size[i]:
                    for r in space.mlp_ratio[i]:
                        heads = space.heads(e)
                        keys = [_s3_block_key(i, e, heads, grids[i], w, j, int(e * r)) for j in (0, 1)]
                        cfg = _s3_config(small, i, e=e, depth=2, window=w, ratio=r, heads=heads)

                        def make(cfg: S3Subnet = cfg, i: int = i, e: int = e) -> list[Callable[[], Any]]:
                            stage = _static(supernet, cfg, device, dtype).layers[i]
                            x = rand(b, grids[i], grids[i], e)
                            return [lambda blk=blk: blk(x) for blk in stage.blocks]

                        yield keys, make
            if i == 0:
                continue
            for e_in in space.embed_dim[i - 1]:
                for e in space.embed_dim[i]:
                    cfg = _s3_config(_s3_config(small, i - 1, e=e_in, heads=space.heads(e_in)), i, e=e, heads=space.heads(e))

                    def make(cfg: S3Subnet = cfg, i: int = i, e_in: int = e_in) -> list[Callable[[], Any]]:
                        merge = _static(supernet, cfg, device, dtype).layers[i].downsample
                        x = rand(b, grids[i - 1], grids[i - 1], e_in)
                        return [lambda: merge(x)]

                    yield [f"merge|{i}|{e_in}|{e}"], make
        for e0 in space.embed_dim[0]:
            for e_last in space.embed_dim[-1]:
                cfg = _s3_config(_s3_config(small, 0, e=e0, heads=space.heads(e0)), n - 1, e=e_last,
                                 heads=space.heads(e_last))

                def make(cfg: S3Subnet = cfg, e_last: int = e_last) -> list[Callable[[], Any]]:
                    model = _static(supernet, cfg, device, dtype)
                    image, x = rand(b, in_chans, ih, iw), rand(b, grids[-1], grids[-1], e_last)
                    return [lambda: model.patch_embed(image), lambda: model.forward_head(model.norm(x))]

                yield [f"embed|{e0}", f"head|{e_last}"], make
        return
    if family == "darts":
        from ..layers.darts_ops import create_darts_op

        sites = sorted({(C, *_darts_op_sites(C, h, w, red, index))
                        for C, h, w, red in setting["cells"] for index in ((0, 2) if red else (0,))})
        for C, h, w, stride in sites:
            for op in space.primitives:
                def make(op: str = op, C: int = C, h: int = h, w: int = w, stride: int = stride) -> list[Callable[[], Any]]:
                    module = create_darts_op(op, C, stride, affine=True).to(device=device, dtype=dtype).eval()
                    x = rand(b, C, h, w)
                    return [lambda: module(x)]

                yield [_darts_op_key(op, C, h, w, stride)], make
        return
    if family == "spvit":
        depth = space.depth
        for op in SPVIT_OPS:
            def make(op: str = op) -> list[Callable[[], Any]]:
                model = _static(supernet, SPViTArch((op,) * depth, ((),) * depth), device, dtype)
                x = rand(b, model.patch_embed.num_patches + 1, model.embed_dim)
                image, rest = rand(b, in_chans, ih, iw), _without_blocks(model)
                if op == "skip" and not hasattr(model.blocks[0], "attn"):
                    attn: Callable[[], Any] = lambda: x  # skip_mode 'zero': the block has no attention half
                else:
                    attn = _Stack([_half(blk, "attn") for blk in model.blocks], x)
                return [attn, lambda: rest(image)]

            yield [f"attn|{op}"] + (["rest"] if op == SPVIT_OPS[0] else []), make
        for width in setting["ffn_grid"]:
            def make(width: int = width) -> list[Callable[[], Any]]:
                model = _static(supernet, SPViTArch(("skip",) * depth, (tuple(range(width)),) * depth), device,
                                dtype)
                x = rand(b, model.patch_embed.num_patches + 1, model.embed_dim)
                return [_Stack([_half(blk, "mlp") for blk in model.blocks], x)]

            yield [f"ffn|{width}"], make
        return
    raise ValueError(f"no latency decomposition for family {family!r}")


class _Stack:
    """Calls ``layers`` one after the other on ``x``: a part timed as it sits in a network, each copy's weights
    evicting the previous ones' from the caches (one block called again and again keeps its weights cached, and
    reads fast). :func:`time_interleaved` divides its time by ``copies``."""

    def __init__(self, layers: Sequence[Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor) -> None:
        self.layers, self.x, self.copies = list(layers), x, len(layers)

    def __call__(self) -> torch.Tensor:
        y = self.x
        for layer in self.layers:
            y = layer(y)
        return y


def _half(block: nn.Module, half: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """One residual half of an SPViT block: ``x + attn(norm1(x))`` or ``x + mlp(norm2(x))``."""
    if half == "attn":
        return lambda x: x + block.drop_path1(block.attn(block.norm1(x)))
    return lambda x: x + block.drop_path2(block.mlp(block.norm2(x)))


def _without_blocks(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The AutoFormer model's forward with no blocks: patch embedding, tokens, norm, pooling and head."""
    def run(x: torch.Tensor) -> torch.Tensor:
        x = model.patch_embed(x)
        x = torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = model.pos_drop(x + model.pos_embed)
        return model.forward_head(model.norm(x))
    return run


def _s3_config(base: S3Subnet, stage: int, *, e: int | None = None, depth: int | None = None,
               window: int | None = None, ratio: float | None = None, heads: int | None = None) -> S3Subnet:
    """``base`` with stage ``stage`` replaced (uniform blocks)."""
    d = base.to_dict()
    e = d["embed_dim"][stage] if e is None else e
    depth = d["depth"][stage] if depth is None else depth
    window = d["window_size"][stage][0] if window is None else window
    ratio = d["mlp_ratio"][stage][0] if ratio is None else ratio
    heads = d["num_heads"][stage][0] if heads is None else heads
    for field, value in (("embed_dim", e), ("depth", depth)):
        d[field][stage] = value
    for field, value in (("num_heads", heads), ("window_size", window), ("mlp_ratio", ratio)):
        d[field][stage] = [value] * depth
    return S3Subnet.from_dict(d)


# ----------------------------------------------------------------------------------------------------- build
def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    import sys

    return tqdm(total=total, desc=desc, unit="entry", dynamic_ncols=True, file=sys.stderr)


def _param_bytes(module: nn.Module, dtype: torch.dtype) -> int:
    return sum(p.numel() for p in module.parameters()) * torch.empty((), dtype=dtype).element_size()


#: The most parameter memory :func:`measure_rounds` keeps between visits (an upper bound: the supernet's size per
#: subnet); beyond it every visit extracts its subnet again, outside the timed calls.
KEEP_BYTES = 4 << 30


def _subnet_subjects(supernet: nn.Module, cfgs: Sequence[Any], device: torch.device, dtype: torch.dtype,
                     batch_size: int) -> list[Callable[[], Callable[[], Any]]]:
    """One subject per config for :func:`time_interleaved`: its extracted subnet (eval) on a random batch."""
    args = model_shape_args(supernet)
    img = _img_size(supernet)
    ih, iw = (img, img) if isinstance(img, int) else img
    x = torch.randn(batch_size, args.get("in_chans", 3), ih, iw, device=device, dtype=dtype)
    keep = len(cfgs) * _param_bytes(supernet, dtype) <= KEEP_BYTES
    kept: dict[int, nn.Module] = {}

    def subject(k: int) -> Callable[[], Callable[[], Any]]:
        def get() -> Callable[[], Any]:
            model = kept.get(k)
            if model is None:
                model = supernet.extract(cfgs[k]).to(device=device, dtype=dtype).eval()
                if keep:
                    kept[k] = model
            return lambda: model(x)
        return get

    return [subject(k) for k in range(len(cfgs))]


def _segment_subjects(segments: Sequence[tuple[list[str], Callable[[], list[Callable[[], Any]]]]]
                      ) -> tuple[list[str], list[Callable[[], Callable[[], Any]]]]:
    """The distinct table keys of ``segments`` and one subject each (a segment's modules are built on the first
    visit of one of its keys and kept)."""
    keys: list[str] = []
    subjects: list[Callable[[], Callable[[], Any]]] = []
    for seg_keys, make in segments:
        built: list[list[Callable[[], Any]]] = []

        def fns(make: Callable[[], list[Callable[[], Any]]] = make,
                built: list[list[Callable[[], Any]]] = built) -> list[Callable[[], Any]]:
            if not built:
                built.append(make())
            return built[0]

        for j, key in enumerate(seg_keys):
            if key not in keys:
                keys.append(key)
                subjects.append(lambda fns=fns, j=j: fns()[j])
    return keys, subjects


def build_table(supernet: nn.Module, setting: Mapping[str, Any], path: str | os.PathLike, *, warmup: int = 1,
                repeats: int = 4, rounds: int = 6, stat: str = "min", calibration: int = 12, seed: int = 12345,
                reference: bool = True, progress: bool = True) -> LatencyTable:
    """Measure every part of ``supernet``'s decomposition in ``setting``, together with ``calibration`` random
    subnets end to end, and write the table to ``path``; then fit the calibration.

    Parts and calibration subnets are timed interleaved (:func:`time_interleaved`: ``rounds`` rounds of ``warmup``
    untimed and ``repeats`` timed calls each), so the sum of parts and the end-to-end latencies it is calibrated
    against are read in the same state of the machine. With ``reference`` (the default), every visit alternates with
    the space's smallest subnet (:func:`time_paired`) and an entry is :func:`paired_ms` of its rounds' ratios;
    without, the ``stat`` (min or median) of its rounds' milliseconds. The table is saved after every round, and a
    table already at ``path`` with the same setting and options resumes at its next round (``rounds`` may grow: more
    rounds refine a finished table).

    Raises:
        ValueError: if ``path`` holds a table of another setting or other measurement options (the first differing
            field is named).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    device, dtype = torch.device(setting["device"]), _DTYPES[setting["dtype"]]
    path = Path(path).expanduser()
    space = latency_space(supernet)
    options = {"warmup": warmup, "repeats": repeats, "stat": stat, "calibration": calibration,
               "calibration_seed": seed, "reference": _jsonable(space.smallest().to_dict()) if reference else None,
               "heap": heap_mode()}
    if path.exists():
        table = LatencyTable.load(path)
        where = f"the table asked for ({path} exists: remove it or choose another --out)"
        table.check(where, **{k: setting[k] for k in SETTING_FIELDS})
        if table.rounds_done is None:  # a table written before interleaved rounds: finished as it is
            return table
        have = table.setting.get("measure", {})
        for k, v in options.items():
            if have.get(k) != _jsonable(v):
                raise ValueError(f"latency table {path} was measured with {k}={have.get(k)!r}, {where} has {v!r}")
    else:
        table = LatencyTable(dict(setting, measure=dict(options, rounds=rounds)), path=path)
        table.rounds_done = 0
    done = table.rounds_done
    table.setting["measure"]["rounds"] = max(rounds, done)
    gen = torch.Generator().manual_seed(seed)
    cfgs = [space.smallest(), space.largest()]
    cfgs += [space.sample(gen) for _ in range(max(calibration - 2, 0))]
    cfgs = cfgs[:calibration]
    if done >= rounds and table.entries:
        table.fit_calibration()
        table.save()
        return table
    previous = torch.get_num_threads()
    torch.set_num_threads(int(setting["threads"]))
    bar = None
    try:
        keys, subjects = _segment_subjects(list(_segments(supernet, table.setting, device, dtype)))
        subjects += _subnet_subjects(supernet, cfgs, device, dtype, setting["batch_size"])
        ref = _subnet_subjects(supernet, [space.smallest()], device, dtype, setting["batch_size"])[0] if reference \
            else None
        field = table.point_rounds
        points = table.calibration["points"] = [
            {"config": cfg.to_dict(), field: list(old.get(field, []))}
            for cfg, old in zip(cfgs, table.calibration["points"] + [{}] * len(cfgs))]
        bar = _progress(len(subjects) * (rounds - done), "latency table", progress)
        current: dict[int, float] = {}

        def visited(r: int, i: int, value: float) -> None:
            current[i] = value
            if bar is not None and i < len(subjects):
                bar.update(1)

        def finished(r: int) -> None:
            if ref is not None:
                table.reference_ms.append(current[len(subjects)])
            for i, key in enumerate(keys):
                table.samples.setdefault(key, []).append(current[i])
                table.entries[key] = table.measured(table.samples[key])
            for i, point in enumerate(points):
                point[field].append(current[len(keys) + i])
            table.rounds_done = r + 1
            table.update_calibration()
            table.save()

        time_interleaved(subjects, device, rounds=rounds, warmup=warmup, repeats=repeats, stat=stat, start=done,
                         reference=ref, callback=visited, on_round=finished)
    finally:
        torch.set_num_threads(previous)
        if bar is not None:
            bar.close()
    return table


def measure_rounds(supernet: nn.Module, cfgs: Sequence[Any], *, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, batch_size: int = 1, rounds: int = 6, warmup: int = 1,
                   repeats: int = 4, stat: str = "min", reference: Any | None = None,
                   callback: Callable[[int, int, float], None] | None = None) -> list[list[float]]:
    """End-to-end latency of each config's extracted subnet (``supernet.extract(cfg)``, eval, ``no_grad``), timed
    interleaved (:func:`time_interleaved`): per config, each round's ``stat`` in milliseconds. With a ``reference``
    config, each visit alternates with its subnet: the values are ratios to it, and one more row, last, holds the
    reference's milliseconds per round (:func:`paired_ms` combines them)."""
    device = torch.device(device)
    ref = None if reference is None else _subnet_subjects(supernet, [reference], device, dtype, batch_size)[0]
    return time_interleaved(_subnet_subjects(supernet, cfgs, device, dtype, batch_size), device, rounds=rounds,
                            warmup=warmup, repeats=repeats, stat=stat, reference=ref, callback=callback)


def measure_subnets(supernet: nn.Module, cfgs: Sequence[Any], *, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32, batch_size: int = 1, warmup: int = 1, repeats: int = 4,
                    rounds: int = 6, stat: str = "min", reference: Any | None = None,
                    callback: Callable[[int, float], None] | None = None) -> list[float]:
    """End-to-end latency (ms) of each config's extracted subnet: the ``stat`` over :func:`measure_rounds`'s
    rounds, or with a ``reference`` config :func:`paired_ms` of its ratios. ``callback(k, value)`` follows every
    visit of config ``k``."""
    per_round = measure_rounds(supernet, cfgs, device=device, dtype=dtype, batch_size=batch_size, rounds=rounds,
                               warmup=warmup, repeats=repeats, stat=stat, reference=reference,
                               callback=None if callback is None else
                               lambda r, k, value: callback(k, value) if k < len(cfgs) else None)
    if reference is None:
        return [_stat(values, stat) for values in per_round]
    return [paired_ms(values, per_round[-1]) for values in per_round[:-1]]
