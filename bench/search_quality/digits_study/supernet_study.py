"""Supernet study: does AutoFormer's evolution find better architectures than random search?

1. Train the study's tiny ``autoformer_supernet`` on the training split with uniform sampling (one random subnet
   per step, the AutoFormer recipe; timm's ``train.py`` would do the same with ``--model autoformer_supernet``).
2. For each of several search seeds run :class:`timm_nas.search.EvolutionSearch` and
   :class:`timm_nas.search.RandomSearch` with the same number of evaluated candidates inside the same parameter
   window, scoring each candidate by its validation accuracy with inherited weights
   (:class:`timm_nas.search.AccuracyScorer`). Every search writes its own ``candidates.jsonl`` / ``best.json``.
3. Retrain each search's pick from scratch with the proxy study's budget and seeds (``train_seeds`` runs, mean
   test accuracy); the same architecture always gets the same number, so two strategies that pick it tie.

Also: the supernet's inherited validation accuracy of the proxy study's architectures, a one-shot "proxy" that
goes into the proxy study's correlation table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from timm_nas.search import AccuracyScorer, Constraints, Dist, EvolutionSearch, RandomSearch, config_key, run_search
from timm_nas.spaces import AutoFormerSpace, AutoFormerSubnet
from ._common import Log, StudyTensors, build_supernet, default_log, train_subnet
from .config import StudyConfig
from .stats import summary
from .training import Timer, derive_seed, train_model

__all__ = ["STRATEGIES", "run_supernet_study", "best_so_far"]

#: The compared strategies, in report order.
STRATEGIES = ("evolution", "random")


def best_so_far(scores: Sequence[float]) -> list[float]:
    """Running maximum of ``scores`` (the best found after each evaluation)."""
    out: list[float] = []
    for s in scores:
        out.append(s if not out else max(out[-1], s))
    return out


def _strategy(name: str, space: AutoFormerSpace, constraints: Constraints, seed: int, cfg: StudyConfig) -> Any:
    sc = cfg.supernet
    if name == "random":
        return RandomSearch(space, num_candidates=sc.evaluations, constraints=constraints, seed=seed)
    return EvolutionSearch(space, constraints=constraints, seed=seed, population=sc.population, topk=sc.topk,
                           generations=sc.generations, mutations=sc.mutations, crossovers=sc.crossovers)


def run_supernet_study(cfg: StudyConfig, tensors: StudyTensors, seed: int, out_dir: str | Path, *,
                       ranking_configs: Sequence[Any] = (), log: Log = default_log) -> dict[str, Any]:
    """Run the supernet study.

    Args:
        cfg: the study settings (``cfg.supernet``).
        tensors: the data.
        seed: the study seed.
        out_dir: folder for the search logs (``<strategy>_seed<k>/``); existing searches there are replaced.
        ranking_configs: architectures to score with inherited weights for the proxy study's table.
        log: progress lines.

    Returns:
        JSON-native results: supernet training, one record per (strategy, seed) with the best-so-far curve, the
        pick, its inherited and retrained accuracies, per-strategy summaries, the ranking scores and timing.
    """
    sc = cfg.supernet
    out_dir = Path(out_dir)
    space = AutoFormerSpace.from_dict(cfg.space)
    cost_kwargs = dict(cfg.model_args, head_dim=space.head_dim)
    constraints = Constraints(params_min=sc.params_min, params_max=sc.params_max, cost_kwargs=cost_kwargs)
    constraints.check_space(space)

    log(f"supernet study: training the supernet for {sc.budget.epochs} epochs (uniform sampling)")
    with Timer() as t_train:
        supernet = build_supernet(cfg, derive_seed(seed, "supernet-init"), sampling="uniform",
                                  seed=derive_seed(seed, "supernet-sampling"))
        trained = train_model(supernet, tensors.train, sc.budget, derive_seed(seed, "supernet-data"),
                              fill=tensors.fill)
        supernet.eval()
    log(f"supernet study: supernet trained in {t_train.wall:.1f}s (final loss {trained.loss[-1]:.3f})")

    val_scorer = AccuracyScorer(supernet, tensors.batches("val"),
                                describe={"data": "digits", "split": "val", "images": int(len(tensors.val[1]))})
    test_scorer = AccuracyScorer(supernet, tensors.batches("test"))

    runs: list[dict[str, Any]] = []
    with Timer() as t_search:
        for k in range(sc.seeds):
            search_seed = derive_seed(seed, "search", k)
            for name in STRATEGIES:
                strategy = _strategy(name, space, constraints, search_seed, cfg)
                with Timer() as t:
                    result = run_search(strategy, val_scorer, out=out_dir / f"{name}_seed{k}", overwrite=True,
                                        dist=Dist(), plot=False,
                                        arguments={"study": "search-quality", "supernet_seed": seed})
                best = result.best
                scores = [c.score for c in result.candidates]
                runs.append({
                    "strategy": name, "seed_index": k, "search_seed": search_seed,
                    "evaluations": len(result.candidates), "curve": best_so_far(scores),
                    "scores": scores, "params": [c.params for c in result.candidates],
                    "pick": {"config": best.config.to_dict(), "params": best.params, "macs": best.macs,
                             "index": best.index, "val_acc_inherited": best.score,
                             "test_acc_inherited": test_scorer(best.config)},
                    "wall_s": round(t.wall, 3), "cpu_s": round(t.cpu, 3),
                })
                log(f"  {name} seed {k}: best inherited val {best.score:.2f}% after {len(scores)} evaluations "
                    f"({best.params / 1e3:.0f}k params, {t.wall:.1f}s)")

    log("supernet study: retraining the picks from scratch")
    with Timer() as t_retrain:
        retrained: dict[str, dict[str, Any]] = {}
        for run in runs:
            key = config_key(run["pick"]["config"])
            if key not in retrained:
                retrained[key] = train_subnet(cfg, run["pick"]["config"], tensors, sc.retrain, seed)
            run["pick"]["retrained"] = retrained[key]
            run["pick"]["test_acc_retrained"] = retrained[key]["test_acc"]

    per_strategy = {}
    for name in STRATEGIES:
        mine = [r for r in runs if r["strategy"] == name]
        per_strategy[name] = {
            "best_val_inherited": summary([r["pick"]["val_acc_inherited"] for r in mine]),
            "test_inherited": summary([r["pick"]["test_acc_inherited"] for r in mine]),
            "test_retrained": summary([r["pick"]["test_acc_retrained"] for r in mine]),
            "pick_params": summary([r["pick"]["params"] for r in mine]),
        }

    with Timer() as t_rank:
        ranking = [val_scorer(AutoFormerSubnet.from_dict(c)) for c in ranking_configs]

    return {
        "constraints": constraints.to_dict(),
        "evaluations": sc.evaluations,
        "supernet": {"train": trained.to_dict(), "sampling": "uniform"},
        "runs": runs,
        "per_strategy": per_strategy,
        "retrained_unique": len(retrained),
        "ranking_scores": ranking,
        "timing": {"supernet_training": t_train.to_dict(), "search": t_search.to_dict(),
                   "retraining": t_retrain.to_dict(), "ranking": t_rank.to_dict(),
                   "supernet_epochs": sc.budget.epochs, "evaluations": len(runs) * sc.evaluations,
                   "retrain_epochs": len(retrained) * cfg.train_seeds * sc.retrain.epochs},
    }
