"""DARTS study: does a short first-order DARTS search beat random cells of the same size?

1. Run :func:`timm_nas.search.darts.search` (first order) on the training split: its first half trains the
   search network's weights, the second half the architecture weights, as in the original.
2. Draw random genotypes from the same :class:`timm_nas.spaces.DartsSpace` whose genotype network has about
   the same number of parameters as the derived one's (within ``size_tolerance``).
3. Train the derived genotype's network and every random one (``darts_cifar``, same ``C`` / ``layers``) from
   scratch with the same budget and seeds (``train_seeds`` runs each, mean test accuracy), and test them.

A searched cell can only be credited with what random cells of the same size do not also reach; the
comparison at equal size keeps the search from winning (or losing) by parameter count alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from timm_nas.search.darts import DartsSearchConfig, search
from timm_nas.spaces import DartsSpace, Genotype
from ._common import Log, StudyTensors, default_log, mean_over_seeds
from .config import StudyConfig
from .data import NUM_CLASSES
from .stats import summary
from .training import Timer, derive_seed, seeded, train_model

__all__ = ["run_darts_study", "random_genotypes_like", "TensorImageDataset"]

#: Random genotypes drawn at most when looking for ones of the derived genotype's size.
MAX_DRAWS = 20_000


class TensorImageDataset(torch.utils.data.Dataset):
    """``(image, label)`` pairs from two tensors, with the ``classes`` attribute the DARTS search reads."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int = NUM_CLASSES) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.classes = [str(c) for c in range(num_classes)]
        self.targets = [int(t) for t in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def _params(genotype: Genotype, C: int, layers: int) -> int:
    from timm_nas.cost import count_params

    return count_params(genotype, stem_type="cifar", C=C, layers=layers, num_classes=NUM_CLASSES)


def random_genotypes_like(target: Genotype, space: DartsSpace, count: int, *, C: int, layers: int,
                          tolerance: float, seed: int) -> tuple[list[Genotype], float]:
    """``count`` distinct random genotypes of ``space`` (not ``target``) whose network has about ``target``'s
    parameter count.

    Genotypes are drawn uniformly (one generator seeded with ``seed``) and the first ``count`` whose parameter
    count lies within ``tolerance`` (a fraction) of ``target``'s are kept, so they are a uniform sample of the
    similar-size genotypes. If :data:`MAX_DRAWS` distinct draws hold fewer than ``count`` of them (a searched cell
    can be far cheaper than almost any random one), the ``count`` draws closest in size are kept instead.

    Returns:
        The genotypes and the largest relative size difference among them (the tolerance actually used).
    """
    from timm_nas.search import config_key

    if count < 1:
        return [], 0.0
    goal = _params(target, C, layers)
    g = torch.Generator().manual_seed(int(seed))
    seen = {config_key(target)}
    drawn: list[tuple[float, Genotype]] = []
    within: list[tuple[float, Genotype]] = []
    for _ in range(MAX_DRAWS):
        cand = space.sample(g)
        key = config_key(cand)
        if key in seen:
            continue
        seen.add(key)
        rel = abs(_params(cand, C, layers) - goal) / goal
        drawn.append((rel, cand))
        if rel <= tolerance:
            within.append((rel, cand))
            if len(within) == count:
                break
    chosen = within if len(within) >= count else sorted(drawn, key=lambda d: d[0])[:count]
    if len(chosen) < count:
        raise ValueError(f"the space holds only {len(chosen)} genotypes other than the derived one; "
                         f"lower random_genotypes to at most {len(chosen)}")
    return [c for _, c in chosen], max(rel for rel, _ in chosen)


def run_darts_study(cfg: StudyConfig, tensors: StudyTensors, seed: int, out_dir: str | Path, *,
                    log: Log = default_log) -> dict[str, Any]:
    """Run the DARTS study.

    Args:
        cfg: the study settings (``cfg.darts``).
        tensors: the digits at ``cfg.darts.img_size``.
        seed: the study seed.
        out_dir: folder of the search (``search_log.jsonl``, ``genotype.json``, checkpoint).
        log: progress lines.

    Returns:
        JSON-native results: the search history, the derived genotype, every trained network and a summary.
    """
    dc = cfg.darts
    size = tensors.train[0].shape[-1]
    if size != dc.img_size:
        raise ValueError(f"the DARTS study runs at {dc.img_size} px but the data is {size} px")
    x_train, y_train = tensors.train
    val, test, fill = tensors.val, tensors.test, tensors.fill
    search_cfg = DartsSearchConfig(**dict(dc.search, seed=derive_seed(seed, "darts-search"), img_size=dc.img_size))
    space = DartsSpace(search_cfg.primitives, search_cfg.steps, search_cfg.multiplier)

    log(f"DARTS study: first-order search, {search_cfg.epochs} epochs, C={search_cfg.C}, "
        f"{search_cfg.layers} cells, {dc.img_size} px")
    with Timer() as t_search:
        result = search(TensorImageDataset(x_train, y_train), Path(out_dir), search_cfg, num_classes=NUM_CLASSES,
                        resume=False, progress=False)
    derived = result.genotype
    log(f"DARTS study: searched in {t_search.wall:.1f}s: {derived.to_text()}")

    randoms, tol = random_genotypes_like(derived, space, dc.random_genotypes, C=dc.C, layers=dc.layers,
                                         tolerance=dc.size_tolerance, seed=derive_seed(seed, "darts-random"))
    networks = [("derived", derived)] + [(f"random_{i}", g) for i, g in enumerate(randoms)]
    trained = []
    with Timer() as t_train:
        import timm

        for name, genotype in networks:
            runs = []
            for r in range(cfg.train_seeds):
                with seeded(derive_seed(seed, "darts-init", r)):
                    model = timm.create_model("darts_cifar", genotype=genotype.to_dict(), C=dc.C, layers=dc.layers,
                                              num_classes=NUM_CLASSES, auxiliary=False)
                res = train_model(model, (x_train, y_train), dc.budget, derive_seed(seed, "darts-data", r),
                                  fill=fill, eval_sets={"val": val, "test": test})
                runs.append(dict(res.to_dict(), val_acc=res.accuracy["val"], test_acc=res.accuracy["test"], repeat=r))
            result_mean = mean_over_seeds(runs)
            rec = {"name": name, "kind": "derived" if name == "derived" else "random", "genotype": genotype.to_dict(),
                   "genotype_text": genotype.to_text(), "params": _params(genotype, dc.C, dc.layers),
                   "train": result_mean, "val_acc": result_mean["val_acc"], "test_acc": result_mean["test_acc"]}
            trained.append(rec)
            log(f"  {name}: {rec['params'] / 1e3:.1f}k params, test {rec['test_acc']:.2f}% "
                f"(mean of {cfg.train_seeds}; {result_mean['wall_s']:.1f}s)")

    derived_acc = trained[0]["test_acc"]
    random_accs = [r["test_acc"] for r in trained[1:]]
    return {
        "search_config": search_cfg.to_dict(),
        "search_history": [{k: h[k] for k in ("epoch", "lr", "train_loss", "train_acc", "valid_loss", "valid_acc",
                                              "seconds", "genotype_text")} for h in result.history],
        "derived": {"genotype": derived.to_dict(), "genotype_text": derived.to_text()},
        "size_tolerance_used": tol,
        "networks": trained,
        "summary": {
            "derived_test_acc": derived_acc,
            "random_test_acc": summary(random_accs),
            "derived_rank": 1 + sum(a > derived_acc for a in random_accs),
            "of": len(trained),
            "random_beaten": sum(a < derived_acc for a in random_accs),
            "random_tied": sum(a == derived_acc for a in random_accs),
        },
        "timing": {"search": t_search.to_dict(), "training": t_train.to_dict(),
                   "search_epochs": search_cfg.epochs,
                   "network_epochs": len(trained) * cfg.train_seeds * dc.budget.epochs},
    }
