"""Training a supernet for a given number of steps, without timm's ``train.py``: the small trainer S3's space
evolution (:func:`timm_nas.search.space_evolution.evolve_space`) runs between its updates."""
from __future__ import annotations

import logging
from typing import Iterable

import torch
import torch.nn as nn

__all__ = ["train_supernet"]

_logger = logging.getLogger(__name__)


def train_supernet(model: nn.Module, loader: Iterable, steps: int, *, lr: float = 5e-4, weight_decay: float = 0.05,
                   device: torch.device | str = "cpu", log_every: int = 0) -> list[float]:
    """Train a supernet for ``steps`` optimizer steps with its own per-step sampling (cross-entropy, AdamW; the
    original recipe's optimizer, lr 5e-4 and weight decay 0.05, without its schedule and augmentation).

    A small stand-in for timm's ``train.py`` (which trains supernets too: ``--model s3_supernet``); the space
    evolution calls it between updates. Returns the loss of every step.
    """
    if steps <= 0:
        return []
    model.to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    criterion = nn.CrossEntropyLoss()
    losses: list[float] = []
    while len(losses) < steps:
        seen = 0
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            loss = criterion(model(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            seen += 1
            if log_every and len(losses) % log_every == 0:
                _logger.info("supernet step %d/%d: loss %.4f", len(losses), steps, losses[-1])
            if len(losses) >= steps:
                break
        if seen == 0:
            raise ValueError("the training data is empty")
    model.eval()
    return losses
