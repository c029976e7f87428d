"""Pieces shared by the three parts of the study: the data as tensors, model builders, from-scratch training."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import torch
import torch.nn as nn

from .config import StudyConfig
from .data import DigitsData
from .training import TrainBudget, derive_seed, seeded, train_model

__all__ = ["Log", "StudyTensors", "build_supernet", "build_subnet", "train_subnet", "mean_over_seeds"]

_logger = logging.getLogger("digits_study")

#: Progress callback: one human-readable line per call.
Log = Callable[[str], None]


def default_log(line: str) -> None:
    _logger.info(line)


@dataclasses.dataclass(frozen=True)
class StudyTensors:
    """The split as normalised tensors, plus the normalised value of a black pixel (the background)."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    fill: torch.Tensor

    @classmethod
    def from_data(cls, data: DigitsData, train_images: int | None = None) -> "StudyTensors":
        """The tensors of ``data``; only the first ``train_images`` training images when given."""
        fill = torch.tensor([-m / s for m, s in zip(data.mean, data.std)], dtype=torch.float32)
        x, y = data.tensors("train")
        if train_images is not None:
            if train_images < 2:
                raise ValueError(f"train_images must be at least 2, got {train_images}")
            x, y = x[:train_images], y[:train_images]
        return cls((x, y), data.tensors("val"), data.tensors("test"), fill)

    def batches(self, split: str, batch_size: int = 256) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A split as a list of ``(images, labels)`` batches (an evaluation loader)."""
        x, y = getattr(self, split)
        return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)]


def build_supernet(cfg: StudyConfig, init_seed: int, **kwargs: Any) -> nn.Module:
    """The study's ``autoformer_supernet`` (its space, 32 px, patch 8, 10 classes), initialised from ``init_seed``;
    ``kwargs`` go to the model (``sampling``, ``seed`` of the sampling policy, ...)."""
    import timm

    with seeded(init_seed):
        return timm.create_model("autoformer_supernet", space=dict(cfg.space), **cfg.model_args, **kwargs)


def build_subnet(cfg: StudyConfig, subnet: Any, seed: int) -> nn.Module:
    """A static ``autoformer_subnet`` of the study's space, freshly initialised from ``seed``."""
    import timm

    subnet = subnet.to_dict() if hasattr(subnet, "to_dict") else dict(subnet)
    with seeded(seed):
        return timm.create_model("autoformer_subnet", subnet=subnet, head_dim=int(cfg.space["head_dim"]),
                                 **cfg.model_args)


def mean_over_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine the per-seed training results of one architecture: mean accuracies, summed times."""
    k = len(runs)
    return {"runs": runs, "seeds": k,
            "val_acc": sum(r["val_acc"] for r in runs) / k, "test_acc": sum(r["test_acc"] for r in runs) / k,
            "test_accs": [r["test_acc"] for r in runs], "val_accs": [r["val_acc"] for r in runs],
            "wall_s": round(sum(r["wall_s"] for r in runs), 3), "cpu_s": round(sum(r["cpu_s"] for r in runs), 3)}


def train_subnet(cfg: StudyConfig, subnet: Any, tensors: StudyTensors, budget: TrainBudget,
                 seed: int) -> dict[str, Any]:
    """Train ``subnet`` from scratch ``cfg.train_seeds`` times and return the mean validation / test accuracy
    (:func:`mean_over_seeds`).

    Run ``r`` takes its initialisation and data order from ``(seed, r)``: every architecture of the study gets the
    same seeds, so differences come from the architectures.
    """
    runs = []
    for r in range(cfg.train_seeds):
        model = build_subnet(cfg, subnet, derive_seed(seed, "init", r))
        result = train_model(model, tensors.train, budget, derive_seed(seed, "data", r), fill=tensors.fill,
                             eval_sets={"val": tensors.val, "test": tensors.test})
        out = result.to_dict()
        out.update(val_acc=out["accuracy"]["val"], test_acc=out["accuracy"]["test"], repeat=r)
        runs.append(out)
    return mean_over_seeds(runs)
