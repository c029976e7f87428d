"""SPViT gates: relaxed-Bernoulli samples with a straight-through estimator, and the ordered op gates.

Every SPViT gate is a learnable threshold ``theta`` with keep probability ``p = sigmoid(theta)``
(``SPViT_DeiT/models_pruning.py`` at ziplab/SPViT commit ae19b0d):

* **training**: a hard 0/1 sample whose gradient is that of its relaxed (sigmoid) version
  (``bernoulli_sample``: logits ``(log u - log(1-u) + log p - log(1-p)) / T``, hard ``1[logits > 0]``,
  soft ``sigmoid(logits)``, returned as ``hard - soft.detach() + soft``);
* **eval**: ``1[p > 0.5]``;
* **complexity loss**: a deterministic straight-through value ``1[p > 0.5] - s.detach() + s`` with
  ``s = sigmoid(p - 0.5)`` (its forward value is the eval decision).

The logistic noise ``log u - log(1-u)`` is drawn here from an explicit ``torch.Generator`` (the original draws
from the global RNG); :func:`logistic_noise` is the only random step, so a test can inject the noise of a
recorded run.

The three gates of an attention layer are ordered (1x1 conv, 3x3 conv, MSA) and combined with a cumulative
product, so at most one op is on: :func:`ordered_op_gates` and :func:`mix_ops`.
"""
from __future__ import annotations

import torch

__all__ = [
    "GATE_TEMPERATURE",
    "clamp_probs",
    "logistic_noise",
    "straight_through_bernoulli",
    "eval_gate",
    "deterministic_ste",
    "ordered_op_gates",
    "mix_ops",
]

#: Temperature of the relaxed Bernoulli (``bernoulli_sample(probs, temperature=1.0)`` in the original; never
#: changed there).
GATE_TEMPERATURE = 1.0


def clamp_probs(p: torch.Tensor) -> torch.Tensor:
    """Clamp probabilities to ``[eps, 1 - eps]`` of their dtype (``torch.distributions.utils.clamp_probs``)."""
    eps = torch.finfo(p.dtype).eps
    return p.clamp(min=eps, max=1 - eps)


def logistic_noise(shape: tuple[int, ...], generator: torch.Generator, *, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """``log u - log(1 - u)`` with ``u ~ U(0, 1)`` clamped as in the original, drawn on the CPU from ``generator``
    (so the sequence does not depend on the device) and moved to ``device``."""
    u = clamp_probs(torch.rand(shape, generator=generator, dtype=torch.float32))
    return (u.log() - (-u).log1p()).to(device=device, dtype=dtype)


def straight_through_bernoulli(probs: torch.Tensor, noise: torch.Tensor,
                               temperature: float = GATE_TEMPERATURE) -> torch.Tensor:
    """A hard 0/1 sample of ``Bernoulli(probs)`` with the gradient of its relaxed version.

    Args:
        probs: keep probabilities (differentiable).
        noise: logistic noise of the same shape (:func:`logistic_noise`).
        temperature: the relaxation temperature.
    """
    p = clamp_probs(probs)
    logits = (noise.to(p.dtype) + p.log() - (-p).log1p()) / temperature
    soft = torch.sigmoid(logits)
    hard = (logits > 0.0).to(soft.dtype)
    return hard.detach() - soft.detach() + soft


def eval_gate(probs: torch.Tensor) -> torch.Tensor:
    """The eval decision ``1[p > 0.5]`` (as floats, no gradient)."""
    return (probs > 0.5).to(probs.dtype)


def deterministic_ste(probs: torch.Tensor) -> torch.Tensor:
    """``1[p > 0.5] - s.detach() + s`` with ``s = sigmoid(p - 0.5)``: the eval decision in the forward pass, the
    gradient of ``s`` in the backward pass (the complexity loss uses this)."""
    s = torch.sigmoid(probs - 0.5)
    return eval_gate(probs) - s.detach() + s


def ordered_op_gates(gates: torch.Tensor) -> torch.Tensor:
    """Cumulative op gates ``[g1, g1*g2, g1*g2*g3]`` of one attention layer, with the original's
    "slow down the gradient for less-complex gates" rule (``UnifiedAttention.single_path_init``): when the
    first two cumulative gates are on, the first is detached; when all three are on, the second is detached too.

    The rule is written with ``torch.where`` (no data-dependent Python branch), so it also runs on the meta
    device; values and gradients are the original's.

    Args:
        gates: the three raw gates ``(3,)`` (1x1, 3x3, MSA).
    """
    c = torch.cumprod(gates, dim=0)
    c0, c1, c2 = c.unbind(0)
    both = (c0 != 0) & (c1 != 0)
    c0 = torch.where(both, c0.detach(), c0)
    c1 = torch.where(both & (c2 != 0), c1.detach(), c1)
    return torch.stack([c0, c1, c2])


def mix_ops(gates: torch.Tensor, msa: torch.Tensor, conv3x3: torch.Tensor, conv1x1: torch.Tensor) -> torch.Tensor:
    """``g3 * msa + g2 (1 - g3) * conv3x3 + g1 (1 - g2)(1 - g3) * conv1x1`` for cumulative gates ``g``; all zero
    gives 0 (the search model's skip). Same operation order as the original."""
    g1, g2, g3 = gates.unbind(0)
    return g3 * msa + g2 * (1 - g3) * conv3x3 + g1 * ((1 - g2) * (1 - g3)) * conv1x1
