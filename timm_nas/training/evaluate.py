"""Inherited-weight evaluation of a subnet: the supernet's weights, one architecture, an image folder.

Data goes through timm's own pipeline (``resolve_data_config`` -> ``create_dataset`` -> ``create_loader`` with
the eval transforms: resize, center crop, normalise), as in timm's validate.py; the supernet runs the subnet through
``use_subnet`` in eval mode, so no weights are copied and nothing about the supernet changes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["parse_subnet", "subnet_config", "create_eval_loader", "evaluate_subnet", "EvalTotals", "evaluate_batches"]

_logger = logging.getLogger(__name__)


def parse_subnet(value: str | Mapping[str, Any], family: str | None = None) -> dict[str, Any]:
    """Read a subnet given on a command line.

    Accepts a JSON object (``'{"embed_dim": 192, ...}'``, parsed with ``json.loads``, never evaluated), the path of
    a ``.json`` / ``.yaml`` / ``.yml`` file (our dict, or the original project's format such as AutoFormer's
    subnet YAML with a ``RETRAIN`` block), or the name of a published architecture in the family's registry
    (``autoformer_tiny``; its ``model_args['subnet']``).

    Args:
        value: the text (or an already parsed dict, returned as a copy).
        family: registry family used for names (e.g. ``'autoformer'``); without it names are refused.

    Returns:
        The subnet as a plain dict (validated later against the supernet with :func:`subnet_config`).

    Raises:
        ValueError: for invalid JSON / YAML or something that is not an object.
        FileNotFoundError: for a ``.json`` / ``.yaml`` path that does not exist.
        KeyError: for a name that is not in the registry (listing the known names).
    """
    if isinstance(value, Mapping):
        return dict(value)
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--subnet is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); give a "
                             "JSON object such as '{\"embed_dim\": 192, \"depth\": 13, ...}', a .json/.yaml file "
                             "or a registry name") from e
    elif Path(text).suffix.lower() in (".json", ".yaml", ".yml"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--subnet file not found: {path}")
        raw = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from e
        else:
            import yaml

            try:
                data = yaml.safe_load(raw)
            except yaml.YAMLError as e:
                raise ValueError(f"{path} is not valid YAML: {e}") from e
    else:
        if family is None:
            raise ValueError(f"--subnet {text!r} is neither a JSON object nor a .json/.yaml file")
        from ..registry import get_entry

        entry = get_entry(family, text)
        data = entry.get("model_args", {}).get("subnet")
        if data is None:
            raise ValueError(f"registry entry {text!r} of {family} has no model_args['subnet']")
    if not isinstance(data, Mapping):
        raise ValueError(f"--subnet must describe an object (a dict of the subnet's fields), got {type(data).__name__}")
    return dict(data)


def subnet_config(supernet: nn.Module, subnet: Mapping[str, Any] | Any) -> Any:
    """The subnet as the supernet's config type, checked against its weights (``space.fits``).

    The original project's formats are accepted where the config type offers ``from_original`` (e.g. AutoFormer's
    ``layer_num`` dict or ``RETRAIN`` block). A published subnet outside the search choices is fine as long as it
    fits the weights.

    Raises:
        ValueError: naming the field that does not fit (or the unknown / missing keys).
    """
    if not hasattr(supernet, "check_subnet"):
        raise ValueError(f"{type(supernet).__name__} is not a supernet (no check_subnet / use_subnet); evaluate a "
                         "static model with timm's validate.py instead")
    cls = supernet.space.config_cls
    if isinstance(subnet, Mapping) and hasattr(cls, "from_original") and dataclasses.is_dataclass(cls):
        names = [f.name for f in dataclasses.fields(cls)]
        if not set(names) <= set(subnet):  # not our format (which would be checked, unknown keys listed, below)
            try:
                subnet = cls.from_original(subnet)
            except ValueError as e:
                raise ValueError(f"{e}; or give the {cls.__name__} keys {names}") from e
    try:
        return supernet.check_subnet(subnet)
    except TypeError as e:
        raise ValueError(f"invalid subnet {subnet!r}: {e}") from e


def create_eval_loader(
        data_dir: str | os.PathLike,
        data_config: Mapping[str, Any],
        *,
        split: str = "validation",
        batch_size: int = 64,
        workers: int = 2,
        device: torch.device | str = "cpu",
        class_map: str = "",
        dataset: str = "",
) -> torch.utils.data.DataLoader:
    """timm's eval pipeline over an image folder, as timm's validate.py builds it.

    Args:
        data_dir: the dataset root; a sub-folder named ``split`` (or a synonym such as ``val``) is used if present.
        data_config: from ``timm.data.resolve_data_config`` (input size, interpolation, mean, std, crop).
        split: the split folder to look for.
        batch_size: images per batch.
        workers: loader worker processes.
        device: where batches go.
        class_map: optional class-map file (timm's ``--class-map``).
        dataset: timm dataset name (empty: an image folder or tar).

    Raises:
        FileNotFoundError: if ``data_dir`` does not exist.
        ValueError: if the split holds no images.
    """
    from timm.data import create_dataset, create_loader

    root = Path(data_dir).expanduser()
    if not dataset and not root.exists():
        raise FileNotFoundError(f"--data-dir {root} does not exist; give an image folder (class sub-folders, or a "
                                f"'{split}' folder holding them)")
    ds = create_dataset(dataset, root=str(root), split=split, is_training=False, class_map=class_map or None,
                        batch_size=batch_size)
    if len(ds) == 0:
        raise ValueError(f"no images found in {root} (split {split!r})")
    return create_loader(
        ds,
        input_size=data_config["input_size"],
        batch_size=batch_size,
        is_training=False,
        interpolation=data_config["interpolation"],
        mean=data_config["mean"],
        std=data_config["std"],
        num_workers=workers,
        crop_pct=data_config["crop_pct"],
        crop_mode=data_config.get("crop_mode"),
        device=torch.device(device),
        use_prefetcher=False,
        persistent_workers=False,
    )


def _num_classes_of(loader: torch.utils.data.DataLoader) -> int | None:
    reader = getattr(loader.dataset, "reader", None)
    class_to_idx = getattr(reader, "class_to_idx", None)
    return len(class_to_idx) if class_to_idx else None


@dataclasses.dataclass
class EvalTotals:
    """Sums over evaluated images: cross-entropy, top-1 and top-5 hits, and the count (add them over ranks with
    :meth:`to_tensor` / :meth:`from_tensor`)."""

    loss_sum: float = 0.0
    correct1: float = 0.0
    correct5: float = 0.0
    count: int = 0

    def to_tensor(self) -> torch.Tensor:
        return torch.tensor([self.loss_sum, self.correct1, self.correct5, self.count], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> "EvalTotals":
        loss_sum, c1, c5, n = (float(v) for v in t.tolist())
        return cls(loss_sum, c1, c5, int(n))

    def _mean(self, value: float) -> float:
        if self.count == 0:
            raise ValueError("the evaluation data is empty")
        return value / self.count

    @property
    def top1(self) -> float:
        """Top-1 accuracy, percent."""
        return self._mean(100.0 * self.correct1)

    @property
    def top5(self) -> float:
        """Top-5 accuracy, percent (top-k with k = the number of classes when there are fewer than 5)."""
        return self._mean(100.0 * self.correct5)

    @property
    def loss(self) -> float:
        """Mean cross-entropy."""
        return self._mean(self.loss_sum)


@torch.no_grad()
def evaluate_batches(model: nn.Module, loader: Any, device: torch.device | str | None = None, *,
                     amp_dtype: torch.dtype | None = None) -> EvalTotals:
    """The top-1 / top-5 / cross-entropy loop every evaluation in timm-nas runs (searches' accuracy scorers,
    validation passes, inherited-weight evaluation).

    ``model`` runs as it is (the caller sets eval mode or an active subnet); the top-1 hit is ``argmax == label``.

    Raises:
        ValueError: a class index the model has no output for.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    totals = EvalTotals()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with autocast:
            logits = model(x)
        logits = logits.float()
        if y.numel() and int(y.max()) >= logits.shape[-1]:
            raise ValueError(f"class index {int(y.max())} is out of range for {logits.shape[-1]} outputs")
        k = min(5, logits.shape[-1])
        hits = logits.topk(k, dim=-1).indices.eq(y[:, None])
        totals.correct1 += float((logits.argmax(-1) == y).sum())
        totals.correct5 += float(hits.any(dim=-1).sum())
        totals.loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        totals.count += y.numel()
    return totals


def evaluate_subnet(
        supernet: nn.Module,
        subnet: Mapping[str, Any] | Any,
        loader: torch.utils.data.DataLoader,
        *,
        device: torch.device | str = "cpu",
        amp_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Top-1 / top-5 accuracy and cross-entropy of one subnet with the supernet's (inherited) weights.

    The supernet runs in eval mode under ``use_subnet`` (its active subnet and training mode are restored after).

    Args:
        supernet: a supernet (``check_subnet`` / ``use_subnet``).
        subnet: the subnet (config, dict, or the original project's dict).
        loader: batches of ``(images, class indices)``, e.g. from :func:`create_eval_loader`.
        device: where to run.
        amp_dtype: autocast dtype (``torch.bfloat16`` / ``torch.float16``) or ``None`` for full precision.

    Returns:
        ``{'subnet', 'in_space', 'top1', 'top5', 'loss', 'num_images', 'params'}``: accuracies in percent, the mean
        loss, ``in_space`` whether the subnet is one of the search choices (a published subnet may only fit the
        weights), ``params`` the parameter count of the static subnet model.

    Raises:
        ValueError: if the subnet does not fit, or the data has more classes than the model outputs.
    """
    cfg = subnet_config(supernet, subnet)
    model_classes = getattr(supernet, "num_classes", None)
    data_classes = _num_classes_of(loader)
    if model_classes and data_classes and data_classes > model_classes:
        raise ValueError(f"the data has {data_classes} classes but the model outputs {model_classes}; evaluate on "
                         "the label set the supernet was trained on (or give --class-map)")
    device = torch.device(device)
    was_training = supernet.training
    supernet.eval()
    try:
        with supernet.use_subnet(cfg):
            totals = evaluate_batches(supernet, loader, device, amp_dtype=amp_dtype)
    finally:
        supernet.train(was_training)
    if totals.count == 0:
        raise ValueError("the loader gave no images")
    params = None
    if hasattr(supernet, "extract"):
        params = sum(p.numel() for p in supernet.extract(cfg).parameters())
    space = getattr(supernet, "space", None)
    result = {
        "subnet": cfg.to_dict(),
        "in_space": bool(space.contains(cfg)) if space is not None else None,
        "top1": totals.top1,
        "top5": totals.top5,
        "loss": totals.loss,
        "num_images": totals.count,
        "params": params,
    }
    _logger.info("subnet %s: top-1 %.3f top-5 %.3f loss %.4f on %d images", cfg, result["top1"], result["top5"],
                 result["loss"], totals.count)
    return result
