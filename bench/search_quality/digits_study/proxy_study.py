"""Proxy study: do training-free proxies rank architectures the way training does?

Sample ``num_subnets`` distinct architectures of the study's tiny AutoFormer space (uniformly, with the search
package's own sampler), score each with every proxy, train each from scratch with the same budget and seeds, and
correlate (Kendall tau with a bootstrap interval) each proxy with test accuracy.

Proxies are scored as the search commands score them (:class:`timm_nas.search.ProxyScorer`): on the subnet of a
freshly initialised supernet (TF-TAS's setting), in eval mode:

* ``dss_reference``: TF-TAS's DSS as its released code computes it. With the study's 10-class head the released
  rules score the classifier as an MLP layer (only a 1000-wide head scores 0); see :mod:`timm_nas.proxies.dss`.
* ``dss_paper``: DSS as the paper describes it.
* ``synflow``, ``snip``, ``grad_norm``, ``jacov``, ``nwot``: the zero-cost proxies; the data-dependent ones get
  one fixed batch of real training images with their labels.
* ``params``, ``macs``: the analytic cost model, the trivial baselines every proxy should beat.

Seed noise: every architecture is trained ``train_seeds`` times (same seeds for all) and its test accuracy is the
mean. The spread between the runs of one architecture, and how well one seed's accuracies rank the architectures
like another seed's, say how much of the spread between architectures a perfect proxy could explain at all.
"""
from __future__ import annotations

import math
from typing import Any

from timm_nas.search import Constraints, ProxyScorer
from timm_nas.search.random_search import draw_random
from timm_nas.spaces import AutoFormerSpace, AutoFormerSubnet
from ._common import Log, StudyTensors, build_supernet, default_log, train_subnet
from .config import StudyConfig
from .stats import correlation_table, pooled_seed_std, summary
from .training import Timer, derive_seed

__all__ = ["PROXIES", "run_proxy_study", "sample_subnets", "seed_noise"]

#: ``(column, registry name, options)`` of every proxy the study scores, in report order.
PROXIES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("dss_reference", "dss", {"mode": "reference"}),
    ("dss_paper", "dss", {"mode": "paper"}),
    ("synflow", "synflow", {}),
    ("snip", "snip", {}),
    ("grad_norm", "grad_norm", {}),
    ("jacov", "jacov", {}),
    ("nwot", "nwot", {}),
    ("params", "params", {}),
    ("macs", "macs", {}),
)


def sample_subnets(cfg: StudyConfig, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` distinct architectures drawn uniformly from the study space, with their analytic cost.

    Returns:
        ``[{'index', 'config' (dict), 'params', 'macs'}]``.
    """
    space = AutoFormerSpace.from_dict(cfg.space)
    constraints = Constraints(cost_kwargs=dict(cfg.model_args, head_dim=space.head_dim))
    proposals = draw_random(space, constraints, derive_seed(seed, "proxy-sample"), 0, count, set())
    return [{"index": i, "config": p.config.to_dict(), "params": p.cost.params, "macs": p.cost.macs}
            for i, p in enumerate(proposals)]


def seed_noise(subnets: list[dict[str, Any]], *, resamples: int, seed: int) -> dict[str, Any]:
    """How much of the spread between architectures is training noise.

    Returns:
        ``seed_std``: pooled standard deviation of one training run's test accuracy around its architecture's mean
        (``None`` with one seed); ``target_std``: the same for the mean over the seeds (``seed_std / sqrt(k)``);
        ``across_subnets``: spread of the architectures' mean test accuracy; ``seed_vs_seed``: Kendall tau (and
        bootstrap interval) between the test accuracies of the first two seeds over the architectures: how well
        one training run ranks the architectures like another, a ceiling for any proxy.
    """
    k = min(len(s["train"]["test_accs"]) for s in subnets)
    out: dict[str, Any] = {"seeds": k, "across_subnets": summary([s["test_acc"] for s in subnets]),
                           "seed_std": None, "target_std": None, "seed_vs_seed": None}
    if k < 2:
        return out
    pooled = pooled_seed_std([s["train"]["test_accs"] for s in subnets])
    first, second = [s["train"]["test_accs"][0] for s in subnets], [s["train"]["test_accs"][1] for s in subnets]
    row = correlation_table({"seed 1": first, "seed 2": second}, second, baseline="seed 2", resamples=resamples,
                            seed=seed)[0]
    out.update(seed_std=pooled, target_std=pooled / math.sqrt(k),
               seed_vs_seed={"tau": row["tau"], "tau_ci": row["tau_ci"], "rho": row["rho"]})
    return out


def run_proxy_study(cfg: StudyConfig, tensors: StudyTensors, seed: int, *, log: Log = default_log) -> dict[str, Any]:
    """Run the proxy study.

    Args:
        cfg: the study settings (``cfg.proxy``).
        tensors: the data.
        seed: the study seed.
        log: progress lines.

    Returns:
        JSON-native results: ``subnets`` (config, cost, proxy values and times, training results), ``noise``
        (:func:`seed_noise`) and ``timing``. Correlations are added by the caller
        (:func:`digits_study.runner.correlations`), which can include rankings from other parts (the supernet's
        inherited accuracy).
    """
    pc = cfg.proxy
    subnets = sample_subnets(cfg, pc.num_subnets, seed)
    log(f"proxy study: {len(subnets)} subnets, {len(PROXIES)} proxies, {pc.budget.epochs} epochs each")

    # ---- scoring: one freshly initialised supernet, one fixed batch of real training images
    with Timer() as t_score:
        supernet = build_supernet(cfg, derive_seed(seed, "proxy-supernet"))
        x, y = tensors.train
        xb, yb = x[:pc.proxy_batch_size], y[:pc.proxy_batch_size]
        scorers = {col: ProxyScorer(supernet, name, inputs=xb, targets=yb, **opts) for col, name, opts in PROXIES}
        for rec in subnets:
            rec["proxies"], rec["proxy_cpu_s"] = {}, {}
            config = AutoFormerSubnet.from_dict(rec["config"])
            for col, scorer in scorers.items():
                with Timer() as t:
                    value = float(scorer(config))
                rec["proxies"][col] = value if math.isfinite(value) else None
                rec["proxy_cpu_s"][col] = round(t.cpu, 4)
    log(f"proxy study: scored in {t_score.wall:.1f}s")

    # ---- training from scratch: same budget, same seeds (cfg.train_seeds runs each; the target is their mean)
    with Timer() as t_train:
        for rec in subnets:
            rec["train"] = train_subnet(cfg, rec["config"], tensors, pc.budget, seed)
            rec["test_acc"], rec["val_acc"] = rec["train"]["test_acc"], rec["train"]["val_acc"]
            log(f"  subnet {rec['index'] + 1}/{len(subnets)}: {rec['params'] / 1e3:.0f}k params, "
                f"test {rec['test_acc']:.2f}% (mean of {cfg.train_seeds}; {rec['train']['wall_s']:.1f}s)")
    log(f"proxy study: trained in {t_train.wall:.1f}s")

    return {
        "proxies": [{"column": c, "proxy": n, "options": o} for c, n, o in PROXIES],
        "proxy_batch": {"images": int(len(yb)), "source": "first images of the training split"},
        "subnets": subnets,
        "noise": seed_noise(subnets, resamples=pc.bootstrap, seed=derive_seed(seed, "noise-bootstrap")),
        "timing": {"scoring": t_score.to_dict(), "training": t_train.to_dict(),
                   "subnet_epochs": len(subnets) * cfg.train_seeds * pc.budget.epochs},
    }
