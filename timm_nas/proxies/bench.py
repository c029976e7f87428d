"""Proxy bench: how well do training-free proxies rank the architectures of a space, against a table of accuracies?

:func:`proxy_bench` scores architectures of a space (every architecture of a user-supplied accuracy table, or a
seeded sample of them) with chosen proxies of the registry (:mod:`timm_nas.proxies`), and compares each score with
the accuracies by Kendall's tau-b (ties are common, e.g. in parameter counts) and Spearman's rho, each with a
bootstrap 95% interval. The parameter and MAC counts of the analytic cost model are always reported beside the
proxies as baselines (a proxy that does not beat ``params`` adds little), and so is a rank-aggregation ensemble of
the chosen proxies: AZ-NAS's non-linear ranking aggregation, the sum of ``log(rank / n)`` with the best architecture
ranked ``n`` (Lee and Ham, "AZ-NAS: Assembling Zero-Cost Proxies for Network Architecture Search", CVPR 2024,
section 3.5), or the plain mean rank.

Run folder (``out``):

* ``run.json``: the run's identity (space, proxies, seed, batch size, model arguments, the table's digest); a
  resume must match it.
* ``scores.rank<r>.jsonl``: one line per scored architecture, appended as it is scored (constant memory; an
  interrupted run resumes with the same call and skips every architecture already in any ``scores*.jsonl``).
  Under ``torchrun`` each rank scores its shard of the remaining architectures into its own file.
* ``correlations.json``, ``report.md`` and ``proxy_bench.png`` (rank scatter plots and the tau intervals), written by
  rank 0 at the end.

Every model is initialised from the same seed (``torch.manual_seed(seed)`` inside a forked RNG, so the caller's
global RNG stream is untouched); every proxy sees the same seeded input batch and labels.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from ._registry import default_inputs, default_targets, get_proxy

__all__ = ["load_table", "arch_key", "proxy_bench", "correlations", "rank_ensemble", "BenchResult", "ENSEMBLES",
           "BASELINES"]

#: Rank aggregations offered for the ensemble.
ENSEMBLES = ("log_rank", "mean_rank")
#: Baselines always reported beside the proxies (analytic cost model).
BASELINES = ("params", "macs")
_ENSEMBLE_NAME = "ensemble"


# --------------------------------------------------------------------------------------------- the table
def arch_key(cfg: Any) -> str:
    """A stable text key of an architecture config: its original text form when it is a string (the NAS-Bench-201
    architecture string), else its dict as sorted JSON."""
    original = cfg.to_original() if hasattr(cfg, "to_original") else None
    if isinstance(original, str):
        return original
    return json.dumps(cfg.to_dict(), sort_keys=True)


def _parse_arch(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def load_table(path: str | os.PathLike, config_cls: type) -> dict[str, tuple[Any, float]]:
    """Read a table of accuracies: ``{arch_key: (config, accuracy)}``.

    Formats:
        * CSV with a header: an architecture column (``arch``, ``arch_str``, ``architecture``, ``genotype`` or
          ``index``) and an accuracy column (``accuracy``, ``acc``, ``test_acc`` or ``top1``);
        * JSON: an object ``{architecture: accuracy}`` or a list of objects with the same column names.

    An architecture is anything ``config_cls.resolve`` accepts (for NAS-Bench-201: the architecture string or the
    benchmark index).

    Raises:
        ValueError: naming the file and the row that does not read (a missing column, an unknown architecture, a
            non-numeric accuracy, an architecture listed twice).
    """
    path = Path(path)
    arch_cols = ("arch", "arch_str", "architecture", "genotype", "index")
    acc_cols = ("accuracy", "acc", "test_acc", "top1")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = [{"arch": k, "accuracy": v} for k, v in data.items()] if isinstance(data, Mapping) else list(data)
    else:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    table: dict[str, tuple[Any, float]] = {}
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise ValueError(f"{path}: row {n} is not an object")
        arch_col = next((c for c in arch_cols if c in row), None)
        acc_col = next((c for c in acc_cols if c in row), None)
        if arch_col is None or acc_col is None:
            raise ValueError(f"{path}: row {n} needs an architecture column (one of {list(arch_cols)}) and an "
                             f"accuracy column (one of {list(acc_cols)}); found {sorted(row)}")
        try:
            cfg = config_cls.resolve(_parse_arch(row[arch_col]))
            acc = float(row[acc_col])
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: row {n}: {e}") from None
        key = arch_key(cfg)
        if key in table:
            raise ValueError(f"{path}: row {n}: architecture {key} is listed twice")
        table[key] = (cfg, acc)
    if not table:
        raise ValueError(f"{path}: the table is empty")
    return table


def _table_digest(table: Mapping[str, tuple[Any, float]]) -> str:
    text = "\n".join(f"{k}\t{v[1]!r}" for k, v in sorted(table.items()))
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------------------- statistics
def _finite(values: Sequence[float]) -> list[float]:
    # A proxy that fails on an architecture (nan) or overflows ranks it last, as the worst possible score.
    return [v if isinstance(v, (int, float)) and not math.isnan(v) else -math.inf for v in values]


def rank_ensemble(scores: Mapping[str, Sequence[float]], how: str = "log_rank") -> list[float]:
    """Aggregate several proxies' scores (higher is better) into one by their ranks.

    ``'log_rank'``: ``sum_p log(rank_p / n)`` with ranks ``1..n`` ascending (the best gets ``n``; ties get their
    average rank), AZ-NAS's non-linear aggregation, which punishes an architecture that one proxy ranks low.
    ``'mean_rank'``: the mean of the ranks.
    """
    from scipy.stats import rankdata

    if how not in ENSEMBLES:
        raise ValueError(f"ensemble={how!r} is not allowed; allowed values: {list(ENSEMBLES)}")
    columns = [rankdata(_finite(v)) for v in scores.values()]
    if not columns:
        raise ValueError("the ensemble needs at least one proxy")
    n = len(columns[0])
    if how == "mean_rank":
        return [float(sum(c[i] for c in columns) / len(columns)) for i in range(n)]
    return [float(sum(math.log(c[i] / n) for c in columns)) for i in range(n)]


def correlations(score: Sequence[float], accuracy: Sequence[float], *, bootstrap: int = 1000, seed: int = 0,
                 ) -> dict[str, Any]:
    """Kendall's tau-b and Spearman's rho of ``score`` against ``accuracy``, with bootstrap 95% percentile intervals
    (``bootstrap`` resamples of the architectures with replacement, from a numpy generator seeded with ``seed``)."""
    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    values = _finite(score)
    finite = [v for v in values if math.isfinite(v)]
    low, high = (min(finite) - 1.0, max(finite) + 1.0) if finite else (0.0, 0.0)
    # -inf (a failed or underflowing score) ranks last, +inf first; both as finite values for scipy
    s = np.asarray([v if math.isfinite(v) else (high if v > 0 else low) for v in values], dtype=float)
    a = np.asarray(accuracy, dtype=float)

    def stats(idx: Any) -> tuple[float, float]:
        x, y = s[idx], a[idx]
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            return math.nan, math.nan
        return float(kendalltau(x, y).statistic), float(spearmanr(x, y).statistic)

    tau, rho = stats(np.arange(len(a)))
    out: dict[str, Any] = {"n": int(len(a)), "kendall_tau_b": tau, "spearman_rho": rho}
    if bootstrap > 0 and len(a) > 2:
        rng = np.random.default_rng(seed)
        draws = [stats(rng.integers(0, len(a), len(a))) for _ in range(bootstrap)]
        taus = [d[0] for d in draws if not math.isnan(d[0])]
        rhos = [d[1] for d in draws if not math.isnan(d[1])]
        out["kendall_tau_b_ci95"] = [float(np.percentile(taus, 2.5)), float(np.percentile(taus, 97.5))] if taus else None
        out["spearman_rho_ci95"] = [float(np.percentile(rhos, 2.5)), float(np.percentile(rhos, 97.5))] if rhos else None
        out["bootstrap"] = bootstrap
    return out


# ------------------------------------------------------------------------------------------------ scoring
@dataclasses.dataclass
class BenchResult:
    """What :func:`proxy_bench` measured.

    Attributes:
        out: the run folder.
        num_architectures: architectures compared.
        correlations: name (each proxy, ``params``, ``macs``, ``ensemble``) -> Kendall / Spearman with intervals.
        seconds_per_arch: proxy -> mean seconds to score one architecture (model construction not included).
        report: the Markdown report's path (``None`` on ranks other than 0).
    """

    out: Path
    num_architectures: int
    correlations: dict[str, dict[str, Any]]
    seconds_per_arch: dict[str, float]
    report: Path | None


def _records(out: Path) -> Iterable[dict[str, Any]]:
    for path in sorted(out.glob("scores*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by an interruption: its architecture is scored again


def _drop_partial_line(path: Path) -> None:
    """Cut a last line left without its newline by an interruption (its architecture is scored again)."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _default_builder(space: Any, model_args: Mapping[str, Any]) -> Callable[[Any], nn.Module]:
    import timm

    from ..family import get_family

    fam = get_family(getattr(space, "family", "") or space.config_cls.family)

    def build(cfg: Any) -> nn.Module:
        return timm.create_model(fam.static_entrypoint, **{fam.arch_arg: cfg.to_dict(), **model_args})

    return build


def proxy_bench(
        space: Any,
        table: Mapping[str, tuple[Any, float]],
        proxies: Sequence[str],
        out: str | os.PathLike,
        *,
        sample: int | None = None,
        seed: int = 0,
        batch_size: int = 64,
        model_args: Mapping[str, Any] | None = None,
        build_model: Callable[[Any], nn.Module] | None = None,
        device: str | torch.device = "cpu",
        ensemble: str = "log_rank",
        bootstrap: int = 1000,
        progress: bool = True,
        dist: Any = None,
        plot: bool = True,
) -> BenchResult:
    """Score the table's architectures (or a seeded sample of ``sample`` of them) with ``proxies`` and compare.

    Args:
        space: the search space (architectures outside it are refused).
        table: ``{arch_key: (config, accuracy)}`` (:func:`load_table`).
        proxies: registry names (``timm_nas.proxies.list_proxies()``).
        out: the run folder (see the module docstring); the same call resumes an interrupted run.
        sample: score a seeded sample of this many architectures of the table (default: all).
        seed: seeds the sample, every model's initialisation, the input batch, the labels and the bootstrap.
        batch_size: the input batch of the data-dependent proxies.
        model_args: more arguments of the family's static entrypoint (e.g. ``{'C': 8, 'N': 1}``).
        build_model: ``cfg -> model`` instead of the family's static entrypoint.
        device: where models are scored.
        ensemble: ``'log_rank'`` (AZ-NAS) or ``'mean_rank'``.
        bootstrap: resamples for the 95% intervals (0: none).
        progress: show a tqdm progress bar (rank 0).
        dist: a :class:`timm_nas.search.distributed.Dist` (default: from torchrun's environment).
        plot: write ``proxy_bench.png``.

    Raises:
        ValueError: for an unknown proxy, an architecture outside the space, or a folder of another run.
    """
    from tqdm.auto import tqdm

    from ..search.distributed import Dist

    proxies = list(dict.fromkeys(proxies))
    for name in proxies:
        get_proxy(name)  # an unknown name fails before any work
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble={ensemble!r} is not allowed; allowed values: {list(ENSEMBLES)}")
    dist = dist or Dist.from_env()
    out = Path(out)
    model_args = dict(model_args or {})
    for key, (cfg, _) in table.items():
        if not space.contains(cfg):
            raise ValueError(f"architecture {key} of the table is not in the space {space.to_dict()}")
    keys = sorted(table)
    if sample is not None and sample < len(keys):
        g = torch.Generator().manual_seed(seed)
        keys = sorted(keys[i] for i in torch.randperm(len(keys), generator=g)[:sample].tolist())
    identity = dict(kind="proxy_bench", space=space.to_dict(), proxies=proxies, seed=seed, batch_size=batch_size,
                    model_args=model_args, table_sha256=_table_digest(table), sample=sample)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        run_file = out / "run.json"
        if run_file.exists():
            known = json.loads(run_file.read_text(encoding="utf-8"))
            if known != json.loads(json.dumps(identity)):
                diff = sorted(k for k in set(known) | set(identity) if known.get(k) != json.loads(json.dumps(identity)).get(k))
                raise ValueError(f"{out} holds another proxy-bench run (different {diff}); use a new --out folder")
        else:
            from .._io import atomic_write_text

            atomic_write_text(run_file, json.dumps(identity, indent=2) + "\n")
    dist.barrier()

    done = {r["arch"] for r in _records(out)}
    todo = [k for k in keys if k not in done][dist.rank::dist.world_size]
    build = build_model or _default_builder(space, model_args)
    device = torch.device(device)
    from ..cost import model_cost

    shard = out / f"scores.rank{dist.rank}.jsonl"
    _drop_partial_line(shard)
    with open(shard, "a", encoding="utf-8") as log:
        bar = tqdm(todo, desc="proxy-bench", unit="arch", disable=not (progress and dist.is_main))
        inputs = targets = None
        for key in bar:
            cfg, acc = table[key]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = build(cfg)
            model.to(device).eval()
            if inputs is None:
                inputs = default_inputs(model, batch_size, seed=seed)
                targets = default_targets(model, batch_size, seed=seed) if getattr(model, "num_classes", 0) else None
            params, macs = model_cost(model, cfg)
            record: dict[str, Any] = {"arch": key, "accuracy": acc, "params": params, "macs": macs, "scores": {},
                                      "seconds": {}}
            for name in proxies:
                spec = get_proxy(name)
                start = time.perf_counter()
                try:
                    value = spec(model, inputs if spec.uses_data else None, targets if spec.uses_labels else None,
                                 seed=seed)
                except (RuntimeError, ValueError) as e:  # recorded, ranked last; the message says why
                    value, record.setdefault("errors", {})[name] = math.nan, str(e)[:300]
                record["seconds"][name] = time.perf_counter() - start
                record["scores"][name] = value if math.isfinite(value) else (None if math.isnan(value) else value)
            log.write(json.dumps(record) + "\n")
            log.flush()
            del model
    dist.barrier()
    return _summarise(out, keys, proxies, ensemble, bootstrap, seed, plot, dist.is_main)


def _summarise(out: Path, keys: Sequence[str], proxies: Sequence[str], ensemble: str, bootstrap: int, seed: int,
               plot: bool, main: bool) -> BenchResult:
    wanted = set(keys)
    rows: dict[str, dict[str, Any]] = {}
    for r in _records(out):
        if r["arch"] in wanted:
            rows[r["arch"]] = r
    ordered = [rows[k] for k in keys if k in rows]
    acc = [r["accuracy"] for r in ordered]
    columns: dict[str, list[float]] = {}
    for name in proxies:
        columns[name] = [math.nan if r["scores"].get(name) is None else float(r["scores"][name]) for r in ordered]
    for name in BASELINES:
        columns[name] = [float(r[name]) for r in ordered]
    if len(proxies) > 1:
        columns[_ENSEMBLE_NAME] = rank_ensemble({p: columns[p] for p in proxies}, ensemble)
    corr = {name: correlations(col, acc, bootstrap=bootstrap, seed=seed) for name, col in columns.items()}
    seconds = {p: sum(r["seconds"].get(p, 0.0) for r in ordered) / max(len(ordered), 1) for p in proxies}
    report = None
    if main:
        from .._io import atomic_write_text

        summary = dict(num_architectures=len(ordered), ensemble=dict(how=ensemble, proxies=list(proxies)),
                       correlations=corr, seconds_per_arch=seconds)
        atomic_write_text(out / "correlations.json", json.dumps(summary, indent=2) + "\n")
        if plot and ordered:
            _plot(out / "proxy_bench.png", columns, acc, corr)
        report = out / "report.md"
        atomic_write_text(report, _markdown(len(ordered), corr, seconds, ensemble, proxies, plot and bool(ordered)))
    return BenchResult(out, len(ordered), corr, seconds, report)


def _fmt(value: Any, ci: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


def _markdown(n: int, corr: Mapping[str, Mapping[str, Any]], seconds: Mapping[str, float], ensemble: str,
              proxies: Sequence[str], plotted: bool) -> str:
    lines = [
        "# Proxy bench", "",
        f"{n} architectures. Kendall's tau-b and Spearman's rho of each score against the table's accuracy, with "
        "bootstrap 95% intervals. `params` and `macs` (analytic) are the baselines a proxy should beat"
        + (f"; `ensemble` aggregates {', '.join(f'`{p}`' for p in proxies)} by {ensemble.replace('_', ' ')}"
           if len(proxies) > 1 else "") + ".", "",
        "| score | Kendall tau-b [95% CI] | Spearman rho [95% CI] | s / arch | arch / s |",
        "|---|---|---|---|---|",
    ]
    for name, c in sorted(corr.items(), key=lambda kv: -(kv[1]["kendall_tau_b"]
                                                         if not math.isnan(kv[1]["kendall_tau_b"]) else -2)):
        t = seconds.get(name)
        speed = f"{t:.4f} | {1 / t:.1f}" if t else "- | -"
        lines.append(f"| `{name}` | {_fmt(c['kendall_tau_b'], c.get('kendall_tau_b_ci95'))} | "
                     f"{_fmt(c['spearman_rho'], c.get('spearman_rho_ci95'))} | {speed} |")
    if plotted:
        lines += ["", "![rank scatter plots and tau intervals](proxy_bench.png)"]
    return "\n".join(lines) + "\n"


def _plot(path: Path, columns: Mapping[str, Sequence[float]], acc: Sequence[float],
          corr: Mapping[str, Mapping[str, Any]]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from scipy.stats import rankdata

    names = list(columns)
    cols = min(4, len(names) + 1)
    rows = math.ceil((len(names) + 1) / cols)
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    acc_rank = rankdata(acc)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.scatter(rankdata(_finite(columns[name])), acc_rank, s=6, alpha=0.6)
        ax.set_title(f"{name} (tau={corr[name]['kendall_tau_b']:+.2f})", fontsize=9)
        ax.set_xlabel("score rank", fontsize=8)
        ax.set_ylabel("accuracy rank", fontsize=8)
    ax = fig.add_subplot(rows, cols, len(names) + 1)
    for i, name in enumerate(names):
        c = corr[name]
        ci = c.get("kendall_tau_b_ci95")
        tau = c["kendall_tau_b"]
        if not math.isnan(tau):
            err = [[tau - ci[0]], [ci[1] - tau]] if ci else None
            ax.errorbar([tau], [i], xerr=err, fmt="o", capsize=3)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("Kendall tau-b, 95% CI", fontsize=8)
    fig.savefig(path, dpi=110)
