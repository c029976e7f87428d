"""Run the whole study and write ``results.json``, ``report.md`` and the plots.

One call, :func:`run_study` (CLI: ``bench/search_quality/study.py``), regenerates everything from the seed: the
data split is fixed, every random draw comes from a generator or a seed derived from the study seed, and model
initialisation runs under a forked, seeded RNG.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from ._common import Log, StudyTensors, default_log
from .config import StudyConfig
from .darts_study import run_darts_study
from .data import load_digits_data, write_image_folder
from .proxy_study import PROXIES, run_proxy_study
from .stats import correlation_table
from .supernet_study import run_supernet_study
from .training import Timer, derive_seed

__all__ = ["run_study", "environment", "correlations", "RESULTS_FILE", "SUPERNET_COLUMN"]

#: Name of the raw results file in the output folder.
RESULTS_FILE = "results.json"
#: Column of the supernet's inherited validation accuracy in the proxy correlation table.
SUPERNET_COLUMN = "supernet_inherited"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - a missing distribution just reads "not installed"
        return "not installed"


def environment() -> dict[str, Any]:
    """Machine, load and library versions (JSON-native), recorded in the report."""
    from timm_nas.version import __version__

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "load_average": load,
        "python": sys.version.split()[0],
        "versions": {"timm_nas": __version__, "torch": torch.__version__, "timm": _version("timm"),
                     "numpy": _version("numpy"), "scipy": _version("scipy"),
                     "scikit-learn": _version("scikit-learn"), "matplotlib": _version("matplotlib")},
    }


def correlations(proxy: dict[str, Any], supernet_scores: list[float] | None, *, resamples: int,
                 seed: int) -> list[dict[str, Any]]:
    """The proxy study's correlation table: every proxy column (and the supernet's inherited accuracy when
    given) against test accuracy, with ``params`` as the baseline."""
    subnets = proxy["subnets"]
    scores: dict[str, list[float]] = {}
    for col, _, _ in PROXIES:
        scores[col] = [math.nan if r["proxies"][col] is None else r["proxies"][col] for r in subnets]
    if supernet_scores is not None:
        scores[SUPERNET_COLUMN] = list(supernet_scores)
    target = [r["test_acc"] for r in subnets]
    return correlation_table(scores, target, baseline="params", resamples=resamples,
                             seed=derive_seed(seed, "bootstrap"))


def run_study(out: str | os.PathLike, *, smoke: bool = False, seed: int = 0, config: StudyConfig | None = None,
              log: Log = default_log, plots: bool = True) -> dict[str, Any]:
    """Run the three parts and write the outputs to ``out``.

    Args:
        out: output folder (created; files of a previous run there are replaced).
        smoke: the tiny preset (:meth:`StudyConfig.smoke`) instead of the full study.
        seed: the study seed; every other seed is derived from it.
        config: explicit settings (overrides ``smoke``).
        log: progress lines.
        plots: write the PNG plots (needs matplotlib).

    Returns:
        The results (also written to ``out/results.json``).

    Outputs: ``results.json`` (raw), ``report.md``, ``*.png``, ``digits/`` (the split as an ImageFolder),
    ``searches/`` (the candidate logs of every search), ``darts_search/`` (the DARTS search log and genotype).
    """
    from .report import write_report

    cfg = config if config is not None else (StudyConfig.smoke() if smoke else StudyConfig.full())
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    env = environment()
    log(f"study ({cfg.preset}, seed {seed}) -> {out}")

    with Timer() as total:
        with Timer() as t_data:
            data = load_digits_data(cfg.img_size)
            tensors = StudyTensors.from_data(data, cfg.train_images)
            write_image_folder(out / "digits", data)
        with Timer() as t_proxy:
            proxy = run_proxy_study(cfg, tensors, seed, log=log)
        with Timer() as t_super:
            sup = run_supernet_study(cfg, tensors, seed, out / "searches",
                                     ranking_configs=[r["config"] for r in proxy["subnets"]], log=log)
        with Timer() as t_darts:
            darts_data = data if cfg.darts.img_size == cfg.img_size else load_digits_data(cfg.darts.img_size)
            darts = run_darts_study(cfg, StudyTensors.from_data(darts_data, cfg.train_images), seed,
                                    out / "darts_search", log=log)
        with Timer() as t_stats:
            proxy["correlations"] = correlations(proxy, sup["ranking_scores"], resamples=cfg.proxy.bootstrap,
                                                 seed=seed)

    env["load_average_end"] = environment()["load_average"]
    results = {
        "study": "timm-nas search-quality study",
        "preset": cfg.preset,
        "seed": seed,
        "started_utc": started,
        "command": f"python bench/search_quality/study.py --out {out}"
                   f"{' --smoke' if cfg.preset == 'smoke' else ''} --seed {seed}",
        "environment": env,
        "config": cfg.to_dict(),
        "data": data.describe(),
        "proxy_study": proxy,
        "supernet_study": sup,
        "darts_study": darts,
        "timing": {"total": total.to_dict(), "data": t_data.to_dict(), "proxy_study": t_proxy.to_dict(),
                   "supernet_study": t_super.to_dict(), "darts_study": t_darts.to_dict(),
                   "statistics": t_stats.to_dict()},
    }
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    write_report(results, out, plots=plots)
    log(f"study done in {total.wall:.1f}s (CPU {total.cpu:.1f}s): {out / 'report.md'}")
    return results
