"""Scorers: ``config -> float`` for a supernet's subnets.

* :class:`ProxyScorer`: a training-free proxy of :mod:`timm_nas.proxies` on the subnet (TF-TAS's DSS by default).
* :class:`AccuracyScorer`: top-1 accuracy (%) of the subnet with the supernet's inherited weights on a dataset,
  AutoFormer's evolution fitness. :func:`build_eval_loader` makes the loader with timm's ``create_dataset`` /
  ``create_loader``, optionally on ``subset_per_class`` images of each class (the original's subImageNet:
  100 random train images per class, ``AutoFormer/lib/subImageNet.py``).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn

from ..proxies import get_proxy
from ..proxies._registry import default_inputs, default_targets, input_size_of, scoring_mode

__all__ = ["ProxyScorer", "AccuracyScorer", "build_eval_loader"]


class ProxyScorer:
    """Score a subnet of ``model`` with a registered proxy.

    The input batch of data-dependent proxies is drawn once (seeded) and reused for every candidate, so
    candidates are compared on the same images.

    Args:
        model: a supernet (``use_subnet``) or any model (then ``config`` is ignored by non-cost proxies).
        proxy: a name from :func:`timm_nas.proxies.list_proxies`.
        inputs, targets: a batch of your own (default: random, seeded by ``seed``).
        batch_size: size of the random batch (default: the proxy's).
        seed: seed of the random batch.
        **options: proxy options (``mode='paper'`` for DSS, ``train=True``, ...).
    """

    def __init__(self, model: nn.Module, proxy: str = "dss", *, inputs: torch.Tensor | None = None,
                 targets: torch.Tensor | None = None, batch_size: int | None = None, seed: int = 0,
                 **options: Any) -> None:
        self.model = model
        self.spec = get_proxy(proxy)
        self.options = options
        self.batch_size = batch_size
        self.seed = seed
        self._own_batch = inputs is not None
        if self.spec.uses_data and inputs is None:
            inputs = default_inputs(model, batch_size or self.spec.default_batch_size, seed=seed,
                                    input_size=options.get("input_size"))
        if self.spec.uses_labels and targets is None:
            targets = default_targets(model, inputs.shape[0], seed=seed)
        self.inputs, self.targets = inputs, targets

    def __call__(self, config: Any) -> float:
        return self.spec(self.model, self.inputs, self.targets, config=config, **self.options)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": "proxy", "proxy": self.spec.name,
                             "options": {k: v for k, v in sorted(self.options.items())}}
        if self.spec.uses_data:
            d["batch"] = "given" if self._own_batch else {"random": True, "size": int(self.inputs.shape[0]),
                                                          "seed": self.seed}
        return d


class AccuracyScorer:
    """Top-1 accuracy (%) of a subnet of ``model`` with inherited weights, in eval mode, on ``loader``.

    Args:
        model: a supernet with ``use_subnet``.
        loader: yields ``(images, labels)``.
        device: where to run (default: the model's).
        describe: JSON-native identity of the data (recorded in ``run.json``).
    """

    def __init__(self, model: nn.Module, loader: Iterable, *, device: torch.device | str | None = None,
                 describe: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.loader = loader
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self._describe = dict(describe or {})

    @torch.no_grad()
    def __call__(self, config: Any) -> float:
        from ..training.evaluate import evaluate_batches

        ctx = self.model.use_subnet(config) if config is not None else contextlib.nullcontext()
        with ctx, scoring_mode(self.model, False):
            totals = evaluate_batches(self.model, self.loader, self.device)
        return totals.top1  # raises on empty data

    def describe(self) -> dict[str, Any]:
        return {"kind": "top1", **self._describe}


class _ClassSubset(torch.utils.data.Dataset):
    """``indices`` of a timm dataset; ``transform`` passes through (``create_loader`` sets it)."""

    def __init__(self, dataset: Any, indices: list[int]) -> None:
        self.dataset = dataset
        self.indices = indices

    @property
    def transform(self) -> Any:
        return self.dataset.transform

    @transform.setter
    def transform(self, value: Any) -> None:
        self.dataset.transform = value

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]


def _targets(dataset: Any) -> list[int]:
    reader = getattr(dataset, "reader", None)
    samples = getattr(reader, "samples", None)
    if samples is not None:
        return [int(s[1]) for s in samples]
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return [int(t) for t in targets]
    raise ValueError("subset_per_class (--subset-per-class) needs a folder dataset whose labels are known without "
                     "reading the images (an ImageFolder-style tree of class folders)")


def class_subset(targets: list[int], per_class: int, seed: int) -> list[int]:
    """``per_class`` indices of each class, drawn without replacement from a generator seeded with ``seed``
    (all of a class when it has fewer), in dataset order."""
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(t, []).append(i)
    g = torch.Generator().manual_seed(int(seed))
    chosen: list[int] = []
    for t in sorted(by_class):
        idx = by_class[t]
        if len(idx) > per_class:
            perm = torch.randperm(len(idx), generator=g)[:per_class].tolist()
            idx = [idx[k] for k in sorted(perm)]
        chosen.extend(idx)
    return chosen


def build_eval_loader(model: nn.Module, data_dir: str | os.PathLike, *, dataset: str = "", split: str = "train",
                      subset_per_class: int | None = 100, seed: int = 0, batch_size: int = 64, workers: int = 4,
                      device: torch.device | str = "cpu") -> tuple[Any, dict[str, Any]]:
    """An eval-transform loader over ``data_dir`` for :class:`AccuracyScorer`, and its description.

    Args:
        model: the supernet (its data config gives the eval transform; the input size is the model's).
        data_dir: dataset root (timm's ``create_dataset(dataset, root=data_dir, split=split)``).
        dataset: timm dataset name (``''``: a folder of class folders).
        split: the split (timm looks for a sub-folder of that name, else uses ``data_dir`` itself).
        subset_per_class: images per class (the original's subImageNet: 100 of the train split); ``None``: all.
        seed: seed of the per-class subset.
        batch_size, workers: loader settings.
        device: the device the scorer runs on.

    Raises:
        FileNotFoundError: if ``data_dir`` does not exist.
    """
    from timm.data import create_loader, resolve_data_config

    from ..training.data import open_dataset

    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    ds = open_dataset(dataset, root, split)
    if subset_per_class is not None:
        if subset_per_class < 1:
            raise ValueError(f"subset_per_class (--subset-per-class) must be at least 1, got {subset_per_class}")
        ds = _ClassSubset(ds, class_subset(_targets(ds), subset_per_class, seed))
    cfg = resolve_data_config(model=model)
    cfg["input_size"] = input_size_of(model)
    device = torch.device(device)
    loader = create_loader(ds, input_size=cfg["input_size"], batch_size=batch_size, is_training=False,
                           use_prefetcher=False, interpolation=cfg["interpolation"], mean=cfg["mean"], std=cfg["std"],
                           crop_pct=cfg["crop_pct"], crop_mode=cfg.get("crop_mode"), num_workers=workers,
                           persistent_workers=workers > 0, device=device)
    describe = {"data_dir": str(root.resolve()), "dataset": dataset, "split": split,
                "subset_per_class": subset_per_class, "seed": seed, "images": len(ds)}
    return loader, describe
