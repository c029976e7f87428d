"""Settings of the search-quality study: the tiny search space, the budgets, and the two presets.

``StudyConfig.full()`` is the published study (sized to finish in well under an hour on 2 CPU cores);
``StudyConfig.smoke()`` runs every step of the same pipeline on a handful of architectures for one epoch (CI).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .training import TrainBudget

__all__ = ["STUDY_SPACE", "ProxyStudyConfig", "SupernetStudyConfig", "DartsStudyConfig", "StudyConfig"]

#: The tiny AutoFormer space of the study: 32x32 inputs cut into 8x8 patches (a 4x4 grid: each patch covers
#: 2x2 pixels of the original 8x8 digits) and heads of width 16 instead of the original's 64.
STUDY_SPACE: dict[str, Any] = dict(embed_dim=[64, 96, 128], depth=[2, 3, 4], num_heads=[2, 3, 4],
                                   mlp_ratio=[2.0, 3.0, 4.0], head_dim=16)

#: From-scratch training of one ViT subnet (proxy study, and retraining the picks of the supernet study).
#: No augmentation: with 20 epochs on 1,078 images, random shifts cost more accuracy than they save.
VIT_BUDGET = TrainBudget(epochs=20, batch_size=64, opt="adamw", lr=2e-3, weight_decay=0.05, warmup_epochs=1.0,
                         label_smoothing=0.1, shift=0)


@dataclasses.dataclass(frozen=True)
class ProxyStudyConfig:
    """Training-free proxies against trained accuracy.

    Args:
        num_subnets: architectures sampled uniformly from the space (distinct), each trained from scratch
            (``StudyConfig.train_seeds`` times).
        budget: their training budget (identical for all, same seeds).
        proxy_batch_size: real training images in the batch of the data-dependent proxies.
        bootstrap: bootstrap resamples of the Kendall-tau intervals.
    """

    num_subnets: int = 48
    budget: TrainBudget = VIT_BUDGET
    proxy_batch_size: int = 64
    bootstrap: int = 2000


@dataclasses.dataclass(frozen=True)
class SupernetStudyConfig:
    """Evolution vs random search on a supernet trained with uniform sampling.

    Both strategies evaluate ``population * (generations + 1)`` candidates (inherited-weight validation accuracy)
    inside the same parameter window, once per search seed; each strategy's best candidate is then retrained from
    scratch with ``retrain`` and tested.

    Args:
        budget: supernet training (uniform sampling, one subnet per step).
        seeds: number of search seeds.
        population, generations, topk, mutations, crossovers: evolution settings (AutoFormer's rules, scaled down).
        params_min, params_max: the parameter window of both searches (analytic count).
        retrain: from-scratch budget of the picks (the proxy study's, so picks and random subnets compare).
    """

    budget: TrainBudget = TrainBudget(epochs=80, batch_size=64, opt="adamw", lr=2e-3, weight_decay=0.05,
                                      warmup_epochs=2.0, label_smoothing=0.1, shift=0)
    seeds: int = 3
    population: int = 20
    generations: int = 9
    topk: int = 5
    mutations: int = 8
    crossovers: int = 8
    params_min: float | None = 150_000
    params_max: float | None = 250_000
    retrain: TrainBudget = VIT_BUDGET

    @property
    def evaluations(self) -> int:
        """Candidates each search evaluates."""
        return self.population * (self.generations + 1)


@dataclasses.dataclass(frozen=True)
class DartsStudyConfig:
    """A short first-order DARTS search against random genotypes of similar size.

    The DARTS networks see the same split at ``img_size`` (16: the CIFAR network has no stride in its stem, and
    16x16 holds everything the 8x8 originals contain, at a quarter of the cost of 32x32).

    Args:
        img_size: input side.
        search: arguments of :class:`timm_nas.search.darts.DartsSearchConfig` (first order; the architecture
            learning rate is raised from the original's 3e-4 because the search is ~100x shorter).
        C, layers: the genotype networks that are trained (``darts_cifar``, no auxiliary head).
        budget: their from-scratch training budget.
        random_genotypes: random genotypes trained for comparison.
        size_tolerance: a random genotype's parameter count must lie within this fraction of the derived one's
            (if too few random genotypes are that close, the closest ones are taken; the report gives the
            tolerance actually used).
    """

    img_size: int = 16
    search: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(
        C=8, layers=5, epochs=12, batch_size=32, arch_lr=3e-3, order=1, workers=0))
    C: int = 8
    layers: int = 5
    budget: TrainBudget = TrainBudget(epochs=20, batch_size=64, opt="sgd", lr=0.05, weight_decay=3e-4,
                                      momentum=0.9, warmup_epochs=0.0, label_smoothing=0.0, shift=0)
    random_genotypes: int = 8
    size_tolerance: float = 0.2


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """The whole study.

    Args:
        preset: ``'full'`` or ``'smoke'`` (recorded in the report).
        img_size, patch_size: the ViT input and patch size.
        space: the AutoFormer space dict (:data:`STUDY_SPACE`).
        train_images: use only the first ``train_images`` images of the (shuffled) training split for every
            training and search (``None``: all 1,078; the smoke preset uses fewer).
        train_seeds: every architecture trained from scratch (proxy study, the supernet searches' picks, the DARTS
            networks) is trained this many times, with the same seeds for every architecture; its accuracy is the
            mean. Two or more also measure the seed-to-seed noise.
        proxy, supernet, darts: the three parts.
    """

    preset: str = "full"
    img_size: int = 32
    patch_size: int = 8
    space: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(STUDY_SPACE))
    train_images: int | None = None
    train_seeds: int = 2
    proxy: ProxyStudyConfig = ProxyStudyConfig()
    supernet: SupernetStudyConfig = SupernetStudyConfig()
    darts: DartsStudyConfig = DartsStudyConfig()

    @property
    def model_args(self) -> dict[str, Any]:
        """Arguments shared by the supernet and the static subnets (besides the space / subnet)."""
        return dict(img_size=self.img_size, patch_size=self.patch_size, num_classes=10)

    @classmethod
    def full(cls) -> "StudyConfig":
        """The published study."""
        return cls()

    @classmethod
    def smoke(cls) -> "StudyConfig":
        """Every step of the pipeline, tiny: 256 training images, 5 subnets and 1 epoch each, 2 search seeds of
        8 candidates, a 1-epoch DARTS search of a 2-cell network at 8 px and 2 random genotypes."""
        one = dataclasses.replace(VIT_BUDGET, epochs=1, batch_size=128)
        return cls(
            preset="smoke",
            train_images=256,
            proxy=ProxyStudyConfig(num_subnets=5, budget=one, proxy_batch_size=16, bootstrap=200),
            supernet=SupernetStudyConfig(budget=dataclasses.replace(one, warmup_epochs=0.0), seeds=2, population=4,
                                         generations=1, topk=2, mutations=1, crossovers=1, retrain=one),
            darts=DartsStudyConfig(img_size=8, search=dict(C=4, layers=2, epochs=1, batch_size=64, arch_lr=3e-3,
                                                           order=1, workers=0),
                                   C=4, layers=2, budget=dataclasses.replace(DartsStudyConfig.budget, epochs=1,
                                                                            batch_size=128),
                                   random_genotypes=2, size_tolerance=0.5),
        )

    def __post_init__(self) -> None:
        if self.train_seeds < 1:
            raise ValueError(f"train_seeds must be at least 1, got {self.train_seeds}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-native form (recorded in ``results.json``)."""
        return dataclasses.asdict(self)
