"""The study's Markdown report and PNG plots, rendered from ``results.json`` alone.

:func:`write_report` needs nothing but the results dict, so a report can be re-rendered from a saved
``results.json`` (``study.py --report-only --out DIR``) without rerunning anything.

Plots (matplotlib's object API, no pyplot state and no display needed):

* ``proxy_scatter.png``: test accuracy against each proxy, one panel per proxy, Kendall tau in the title;
* ``proxy_tau.png``: Kendall tau of every proxy with its bootstrap interval;
* ``search_curves.png``: best inherited validation accuracy found so far against the number of evaluated
  candidates, evolution vs random, mean and range over the search seeds;
* ``darts.png``: test accuracy against parameters of the derived DARTS genotype and the random ones.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from .stats import pooled_seed_std

__all__ = ["write_report", "render_markdown", "PLOTS", "fmt"]

#: The plot files, in report order.
PLOTS = ("proxy_scatter.png", "proxy_tau.png", "search_curves.png", "darts.png")

_LABELS = {
    "dss_reference": "DSS (reference)",
    "dss_paper": "DSS (paper)",
    "synflow": "synflow",
    "snip": "snip",
    "grad_norm": "grad_norm",
    "jacov": "jacov",
    "nwot": "nwot",
    "params": "params",
    "macs": "MACs",
    "supernet_inherited": "supernet (inherited val acc)",
}


def fmt(value: Any, digits: int = 3) -> str:
    """A number for the report (``'n/a'`` for missing or non-finite values)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _ci(ci: Sequence[float] | None, digits: int = 3) -> str:
    if ci is None:
        return ""
    return f"[{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def _pm(s: dict[str, Any], digits: int = 2) -> str:
    if not s or s.get("n", 0) == 0:
        return "n/a"
    return f"{fmt(s['mean'], digits)} ± {fmt(s['std'], digits)}"


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


# ----------------------------------------------------------------------------------------------- markdown
def _header(r: dict[str, Any]) -> list[str]:
    env, t = r["environment"], r["timing"]
    v = env["versions"]
    smoke = r["preset"] == "smoke"
    lines = [
        "# timm-nas search-quality study" + (" (SMOKE RUN: pipeline check, not results)" if smoke else ""),
        "",
        f"Preset **{r['preset']}**, seed **{r['seed']}**, started {r['started_utc']}. "
        f"Total wall time **{_duration(t['total']['wall_s'])}** (process CPU time {_duration(t['total']['cpu_s'])}).",
        "",
        f"Regenerate everything (this report, `results.json`, the plots, the search logs): `{r['command']}`",
        "",
        "**Machine**: " + f"{env['cpu']}; {env['usable_cpus']} usable CPUs of {env['cpu_count']}; "
        f"torch threads {env['torch_threads']}; load average at start {env['load_average']}, "
        f"at end {env.get('load_average_end')}; {env['platform']}.",
        "",
        "**Versions**: " + ", ".join(f"{k} {val}" for k, val in v.items()) + f", Python {env['python']}.",
        "",
    ]
    if smoke:
        lines += ["> This is the smoke preset: a handful of architectures trained for one epoch. Its numbers only "
                  "show that every step of the pipeline runs; they say nothing about the methods.", ""]
    return lines


def _data_section(r: dict[str, Any]) -> list[str]:
    d = r["data"]
    c = d["counts"]
    return [
        "## Data",
        "",
        f"scikit-learn's bundled handwritten digits ({d['images']} images of 8x8 pixels, {d['classes']} classes, no "
        f"download), split once, stratified by class (`random_state={d['split_seed']}`): train {c['train']}, "
        f"val {c['val']}, test {c['test']} images. Upsampled bilinearly to {d['img_size']}x{d['img_size']}, "
        "3 channels, 8 bits, normalised with the training split's mean and std. Searches select on **val**; every "
        "reported accuracy that decides nothing is on **test**. The split is also written as an ImageFolder tree "
        "(`digits/{train,val,test}/<digit>/*.png`) that timm's loaders and `timm-nas search ... --data-dir` read.",
        "",
    ]


def _times(k: int) -> str:
    return {1: "once", 2: "twice"}.get(k, f"{k} times")


def _noise_sentence(noise: dict[str, Any]) -> str:
    if noise.get("seed_std") is None:
        return "Each architecture was trained once, so the seed-to-seed noise is not measured."
    sv = noise["seed_vs_seed"]
    return (f"Training noise: one run's test accuracy scatters by {fmt(noise['seed_std'], 2)} points (pooled std "
            f"around each architecture's mean), the mean of {noise['seeds']} runs by about "
            f"{fmt(noise['target_std'], 2)}. Ranking the architectures by one seed's test accuracy against another's "
            f"gives Kendall tau {fmt(sv['tau'])} {_ci(sv['tau_ci'])}: a single training run is itself a noisy "
            f"ranking. The target below, the mean of {noise['seeds']} runs, is less noisy, but its noise still caps "
            "how well any score can correlate with it.")


def _proxy_section(r: dict[str, Any]) -> list[str]:
    cfg, p = r["config"], r["proxy_study"]
    pc, b = cfg["proxy"], cfg["proxy"]["budget"]
    space = cfg["space"]
    noise = p["noise"]
    across = noise["across_subnets"]
    lines = [
        "## 1. Training-free proxies vs trained accuracy",
        "",
        f"**Setup.** {len(p['subnets'])} distinct architectures drawn uniformly from a tiny AutoFormer space "
        f"(embed dim {space['embed_dim']}, depth {space['depth']}, heads {space['num_heads']} per layer, MLP ratio "
        f"{space['mlp_ratio']} per layer, head dim {space['head_dim']}; {cfg['img_size']} px input, patch "
        f"{cfg['patch_size']}). Each is trained from scratch {_times(cfg['train_seeds'])} with the same budget and "
        f"the same seeds ({b['epochs']} epochs, batch {b['batch_size']}, {b['opt']} lr {b['lr']}, weight decay "
        f"{b['weight_decay']}, label smoothing {b['label_smoothing']}, cosine schedule) and tested after the last "
        "epoch; its accuracy is the mean over the runs. Proxies are scored on the subnet of a freshly initialised "
        "supernet, as `timm-nas search tf-tas` scores them; the data-dependent ones on "
        f"{p['proxy_batch']['images']} real training images. DSS reference follows TF-TAS's released rules, which "
        "score the 10-class head as an MLP layer.",
        "",
        f"Test accuracy over the architectures: mean {fmt(across['mean'], 2)}%, std {fmt(across['std'], 2)}, range "
        f"{fmt(across['min'], 2)}-{fmt(across['max'], 2)}%. " + _noise_sentence(noise),
        "",
        "Kendall tau (tau-b) with test accuracy, 95% percentile bootstrap interval over architectures "
        f"({pc['bootstrap']} resamples); the difference to `params` is bootstrapped on the same resamples:",
        "",
    ]
    rows = []
    for row in p["correlations"]:
        beats = row["beats_baseline"]
        rows.append([_LABELS.get(row["name"], row["name"]), fmt(row["tau"]), _ci(row["tau_ci"]), fmt(row["rho"]),
                     "baseline" if beats is None else fmt(row["delta_vs_baseline"]),
                     "" if beats is None else _ci(row["delta_ci"]),
                     "" if beats is None else beats])
    lines += _table(["proxy", "Kendall tau", "95% CI", "Spearman rho", "tau - tau(params)", "95% CI",
                     "beats params?"], rows)
    better = [_LABELS.get(x["name"], x["name"]) for x in p["correlations"] if x["beats_baseline"] == "yes"]
    worse = [_LABELS.get(x["name"], x["name"]) for x in p["correlations"] if x["beats_baseline"] == "no"]
    lines += ["", "**Verdict.** " + (
        f"Ranks better than the parameter count (whole interval of the difference above 0): {', '.join(better)}. "
        if better else "No proxy ranks these architectures better than the parameter count does "
                       "(no interval of the difference lies above 0). ")
        + (f"Ranks worse than the parameter count: {', '.join(worse)}. " if worse else "")
        + "The others cannot be told apart from it at this sample size.", "",
        "![proxy vs test accuracy](proxy_scatter.png)", "", "![Kendall tau per proxy](proxy_tau.png)", ""]
    return lines


def _supernet_section(r: dict[str, Any]) -> list[str]:
    cfg, s = r["config"]["supernet"], r["supernet_study"]
    b = cfg["budget"]
    c = s["constraints"]
    window = f"{fmt(c.get('params_min'), 0) if c.get('params_min') is not None else '-'} to " \
             f"{fmt(c.get('params_max'), 0) if c.get('params_max') is not None else '-'} parameters"
    lines = [
        "## 2. Evolution vs random search on a weight-sharing supernet",
        "",
        f"**Setup.** The supernet of the same space is trained with uniform sampling (one random subnet per step; "
        f"{b['epochs']} epochs, {b['opt']} lr {b['lr']}; final training loss "
        f"{fmt(s['supernet']['train']['loss'][-1])}). For each of {cfg['seeds']} search seeds, AutoFormer's evolution "
        f"(population {cfg['population']}, top-k {cfg['topk']}, {cfg['generations']} generations of "
        f"{cfg['mutations']} mutations + {cfg['crossovers']} crossovers + random refill) and random search each "
        f"evaluate **{s['evaluations']} candidates** within {window}, scored by validation accuracy with inherited "
        f"weights. Each search's best candidate is then retrained from scratch with the proxy study's budget and "
        f"seeds ({_times(r['config']['train_seeds'])}, mean test accuracy; {s['retrained_unique']} distinct picks).",
        "",
    ]
    rows = []
    for name, st in s["per_strategy"].items():
        rows.append([name, _pm(st["best_val_inherited"]), _pm(st["test_inherited"]), _pm(st["test_retrained"]),
                     _pm(st["pick_params"], 0)])
    lines += _table(["strategy", "best val acc, inherited (%)", "pick's test acc, inherited (%)",
                     "pick's test acc, retrained (%)", "pick's params"], rows)
    lines += ["", "Mean ± std over the search seeds. Per seed:", ""]
    rows = [[run["strategy"], run["seed_index"], run["evaluations"], fmt(run["pick"]["val_acc_inherited"], 2),
             fmt(run["pick"]["test_acc_inherited"], 2), fmt(run["pick"]["test_acc_retrained"], 2),
             run["pick"]["params"], run["pick"]["index"] + 1] for run in s["runs"]]
    lines += _table(["strategy", "seed", "evaluations", "best val (inh.)", "test (inh.)", "test (retrained)",
                     "params", "found at evaluation"], rows)
    checkpoints = sorted({max(1, round(s["evaluations"] * f)) for f in (0.1, 0.25, 0.5, 1.0)})
    rows = []
    for name in s["per_strategy"]:
        curves = [run["curve"] for run in s["runs"] if run["strategy"] == name]
        rows.append([name] + [fmt(sum(c[k - 1] for c in curves) / len(curves), 2) for k in checkpoints])
    lines += ["", "Best inherited validation accuracy found so far (%), mean over seeds, after a given number of "
                  "evaluations:", ""]
    lines += _table(["strategy"] + [f"after {k}" for k in checkpoints], rows)
    ev, rn = s["per_strategy"].get("evolution"), s["per_strategy"].get("random")
    if ev and rn:
        dv = ev["best_val_inherited"]["mean"] - rn["best_val_inherited"]["mean"]
        dt = ev["test_retrained"]["mean"] - rn["test_retrained"]["mean"]
        lines += ["", f"With the same seed, evolution's first generation is exactly random search's first "
                      f"{cfg['population']} candidates (both draw from the same generators), so the curves coincide "
                      "until evolution's first offspring: the comparison is paired.",
                  "", f"**Verdict.** At {s['evaluations']} evaluations, evolution's best inherited validation "
                      f"accuracy is {fmt(abs(dv), 2)} points {'above' if dv >= 0 else 'below'} random search's (mean "
                      f"over seeds); after retraining, its picks test {fmt(abs(dt), 2)} points "
                      f"{'above' if dt >= 0 else 'below'} random search's. Compare with the training noise of a "
                      f"retrained architecture (about {fmt(r['proxy_study']['noise']['target_std'], 2)} points for a "
                      f"mean of {r['config']['train_seeds']} runs) before reading a winner into it."]
    lines += ["", "![best so far vs evaluations](search_curves.png)", "",
              "The supernet's inherited validation accuracy is also scored on the proxy study's architectures: see "
              "the `supernet (inherited val acc)` row of the proxy table.", ""]
    return lines


def _darts_section(r: dict[str, Any]) -> list[str]:
    cfg, d = r["config"]["darts"], r["darts_study"]
    sc, b, sm = d["search_config"], cfg["budget"], d["summary"]
    last = d["search_history"][-1] if d["search_history"] else {}
    lines = [
        "## 3. DARTS: searched cell vs random cells of the same size",
        "",
        f"**Setup.** First-order DARTS on the training split at {cfg['img_size']} px (half trains the weights, half "
        f"the architecture), search network C={sc['C']}, {sc['layers']} cells, {sc['epochs']} epochs, batch "
        f"{sc['batch_size']}, architecture lr {sc['arch_lr']} (original 3e-4; raised for a search this short). "
        f"Final search-network accuracy on its held-out half: {fmt(last.get('valid_acc', math.nan) * 100, 2)}%. "
        f"The derived genotype and {len(d['networks']) - 1} random genotypes of the same space whose network has "
        f"within {d['size_tolerance_used']:.0%} of its parameters are trained as `darts_cifar` (C={cfg['C']}, "
        f"{cfg['layers']} cells, no auxiliary head) {_times(r['config']['train_seeds'])} each with the same budget "
        f"and seeds ({b['epochs']} epochs, {b['opt']} lr {b['lr']}, cosine) and tested (mean over the runs).",
        "",
        f"Derived genotype: `{d['derived']['genotype_text']}`",
        "",
    ]
    rows = [[n["name"], n["params"], fmt(n["val_acc"], 2), fmt(n["test_acc"], 2)] for n in d["networks"]]
    lines += _table(["network", "params", "val acc (%)", "test acc (%)"], rows)
    pooled = pooled_seed_std([n["train"].get("test_accs", [n["test_acc"]]) for n in d["networks"]])
    noise = "" if pooled is None else (
        f" Training noise of these networks: one run scatters by {fmt(pooled, 2)} points (pooled std), the mean of "
        f"{r['config']['train_seeds']} runs by about {fmt(pooled / math.sqrt(r['config']['train_seeds']), 2)}.")
    lines += ["", f"**Verdict.** The derived genotype tests at {fmt(sm['derived_test_acc'], 2)}%, random genotypes "
                  f"of similar size at {_pm(sm['random_test_acc'])}%; it ranks {sm['derived_rank']} of {sm['of']} "
                  f"(beats {sm['random_beaten']}, ties {sm['random_tied']} of {sm['of'] - 1} random cells).{noise}",
              "", "![DARTS derived vs random](darts.png)", ""]
    hist = d["search_history"]
    if hist:
        lines += ["Search log (per epoch):", ""]
        lines += _table(["epoch", "train acc", "held-out acc", "genotype"],
                        [[h["epoch"], fmt(h["train_acc"] * 100, 1), fmt(h["valid_acc"] * 100, 1),
                          f"`{h['genotype_text']}`"] for h in hist])
        lines.append("")
    return lines


def _timing_section(r: dict[str, Any]) -> list[str]:
    t = r["timing"]
    rows = [[k.replace("_", " "), _duration(v["wall_s"]), _duration(v["cpu_s"])] for k, v in t.items()]
    return ["## Time", ""] + _table(["part", "wall", "process CPU"], rows) + [
        "", "Process CPU time counts all of this process's threads; on a machine shared with other jobs it is the "
            "better guide to the time on an idle machine. Writing this report and the plots is not included.", "",
        "## Files", "",
        "`results.json` (every number above and the per-architecture records), `report.md`, "
        + ", ".join(f"`{p}`" for p in PLOTS)
        + ", `searches/<strategy>_seed<k>/` (each search's `candidates.jsonl`, `best.json`, `pareto.json`), "
          "`darts_search/` (`search_log.jsonl`, `genotype.json`), `digits/` (the split as an ImageFolder).", ""]


def render_markdown(results: dict[str, Any]) -> str:
    """The report as Markdown."""
    lines = (_header(results) + _data_section(results) + _proxy_section(results) + _supernet_section(results)
             + _darts_section(results) + _timing_section(results))
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- plots
def _plot_proxies(r: dict[str, Any], path: Path, Figure: Any) -> None:
    p = r["proxy_study"]
    acc = [s["test_acc"] for s in p["subnets"]]
    rows = p["correlations"]
    cols = 4
    nrows = math.ceil(len(rows) / cols)
    fig = Figure(figsize=(4 * cols, 3.2 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    sup = r["supernet_study"]["ranking_scores"]
    for ax, row in zip(axes.flat, rows):
        name = row["name"]
        if name in p["subnets"][0]["proxies"]:
            x = [math.nan if s["proxies"][name] is None else s["proxies"][name] for s in p["subnets"]]
        else:
            x = list(sup)
        ax.scatter(x, acc, s=14, alpha=0.8)
        finite = [v for v in x if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 100:
            ax.set_xscale("log")
        ax.set_title(f"{_LABELS.get(name, name)}: tau={fmt(row['tau'], 2)}", fontsize=10)
        ax.set_ylabel("test acc (%)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.suptitle(f"Proxy vs test accuracy ({len(acc)} architectures trained from scratch)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_tau(r: dict[str, Any], path: Path, Figure: Any) -> None:
    rows = r["proxy_study"]["correlations"]
    names = [_LABELS.get(x["name"], x["name"]) for x in rows]
    tau = [x["tau"] if x["tau"] is not None and math.isfinite(x["tau"]) else 0.0 for x in rows]
    lo = [t - (x["tau_ci"][0] if math.isfinite(x["tau_ci"][0]) else t) for t, x in zip(tau, rows)]
    hi = [(x["tau_ci"][1] if math.isfinite(x["tau_ci"][1]) else t) - t for t, x in zip(tau, rows)]
    fig = Figure(figsize=(7, 0.45 * len(rows) + 1.2))
    ax = fig.subplots()
    y = list(range(len(rows)))[::-1]
    colors = ["tab:gray" if x["name"] == "params" else "tab:blue" for x in rows]
    ax.barh(y, tau, xerr=[lo, hi], color=colors, capsize=3)
    ax.set_yticks(y, names)
    ax.axvline(0, color="black", lw=0.8)
    base = next((x["tau"] for x in rows if x["name"] == "params"), None)
    if base is not None and math.isfinite(base):
        ax.axvline(base, color="tab:gray", ls="--", lw=0.8, label="params")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("Kendall tau with test accuracy (95% bootstrap interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_curves(r: dict[str, Any], path: Path, Figure: Any) -> None:
    s = r["supernet_study"]
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for name, color in (("evolution", "tab:red"), ("random", "tab:blue")):
        curves = [run["curve"] for run in s["runs"] if run["strategy"] == name]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        xs = list(range(1, n + 1))
        for c in curves:
            ax.plot(xs, c[:n], color=color, alpha=0.25, lw=0.8)
        mean = [sum(c[i] for c in curves) / len(curves) for i in range(n)]
        ax.fill_between(xs, [min(c[i] for c in curves) for i in range(n)],
                        [max(c[i] for c in curves) for i in range(n)], color=color, alpha=0.12)
        ax.plot(xs, mean, color=color, lw=2, label=f"{name} (mean of {len(curves)} seeds)")
    ax.set_xlabel("evaluated candidates")
    ax.set_ylabel("best val acc so far, inherited weights (%)")
    ax.set_title("Evolution vs random search on the supernet")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_darts(r: dict[str, Any], path: Path, Figure: Any) -> None:
    nets = r["darts_study"]["networks"]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    rnd = [n for n in nets if n["kind"] == "random"]
    der = [n for n in nets if n["kind"] == "derived"]
    ax.scatter([n["params"] for n in rnd], [n["test_acc"] for n in rnd], color="tab:blue", label="random genotypes")
    ax.scatter([n["params"] for n in der], [n["test_acc"] for n in der], color="tab:red", marker="*", s=200,
               label="DARTS genotype")
    ax.set_xlabel("parameters")
    ax.set_ylabel("test acc (%)")
    ax.set_title("DARTS: derived vs random cells, same training budget")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_report(results: dict[str, Any], out: str | Path, *, plots: bool = True) -> Path:
    """Write ``report.md`` and (with ``plots``) the PNG plots into ``out``; return the report's path.

    Raises:
        ImportError: if ``plots`` and matplotlib is missing.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        try:
            from matplotlib.figure import Figure  # the object API: no pyplot state, no display, Agg by default
        except ImportError as e:
            raise ImportError("the study's plots need matplotlib: pip install 'timm-nas[study]'") from e
        for name, fn in zip(PLOTS, (_plot_proxies, _plot_tau, _plot_curves, _plot_darts)):
            fn(results, out / name, Figure)
    path = out / "report.md"
    path.write_text(render_markdown(results), encoding="utf-8")
    return path
