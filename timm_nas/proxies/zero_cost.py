"""The standard zero-cost proxies, for any timm model.

Definitions follow the reference implementations of zero-cost-nas (Abdelfattah et al., "Zero-Cost Proxies for
Lightweight NAS", ICLR 2021, https://github.com/SamsungLabs/zero-cost-nas) and NASLib
(https://github.com/automl/NASLib, ``naslib/predictors/pruners/measures``):

==========  ==========================================================================================
synflow     Tanaka et al. 2020: ``sum |theta * dR/dtheta|`` with ``R = sum(f_|theta|(1))`` (all-ones input of
            batch 1, every parameter replaced by its absolute value, float64 so deep nets do not overflow)
snip        Lee et al. 2019: ``sum |theta * dL/dtheta|``, ``L`` the cross-entropy of a batch
grad_norm   ``sum over layers of ||dL/dW||_2``, ``L`` the cross-entropy of a batch
jacov       Mellor et al. 2020 (v1): ``-sum(log(v + k) + 1/(v + k))``, ``v`` the eigenvalues of the correlation
            matrix of the input Jacobians of a batch, ``k = 1e-5``
nwot        Mellor et al. 2021: ``log|K_H|``, the Hamming-similarity kernel of the binary activation codes
            (``pre-activation > 0``) of every activation module over a batch
params      parameter count (analytic for a ``config``, else the model's real count)
macs        multiply-accumulates of one image (analytic for a ``config``, else measured with fvcore)
==========  ==========================================================================================

"Weights" (synflow, snip, grad_norm) are the parameters named ``*.weight`` with two or more dimensions:
convolution and linear layers, as in zero-cost-nas (which scores ``nn.Conv2d`` / ``nn.Linear``), including
elastic supernet layers; norms, biases and embeddings are left out. All proxies score in eval mode unless
``train=True`` (zero-cost-nas uses training mode for BatchNorm batch statistics; the buffers it would update
are clones here, so the model is unchanged either way). Higher is better for every proxy.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ._registry import cloned_buffers, input_size_of, register_proxy, scoring_mode

__all__ = ["weight_names", "cost_kwargs", "ACTIVATIONS", "JACOV_K"]

#: Activation modules whose inputs give the NASWOT binary codes (NASLib hooks ``nn.ReLU``; ViTs use GELU).
ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish,
                                           nn.Mish, nn.ELU)
#: The constant of the jacov score (Mellor et al. 2020, NASLib ``jacov.py``: ``k = 1e-5``).
JACOV_K = 1e-5


def weight_names(model: nn.Module) -> list[str]:
    """Names of the conv / linear weights the gradient proxies score (``*.weight`` with >= 2 dims)."""
    return [n for n, p in model.named_parameters() if (n == "weight" or n.endswith(".weight")) and p.dim() >= 2]


def _call(model: nn.Module, tensors: dict[str, torch.Tensor], x: torch.Tensor, train: bool) -> torch.Tensor:
    with scoring_mode(model, train):
        out = functional_call(model, tensors, (x,), strict=False)
    if isinstance(out, (tuple, list)):  # some models return (logits, aux) in training mode
        out = out[0]
    return out


def _weight_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train: bool
                  ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """``[(W, dCE/dW)]`` for every scored weight, computed on detached copies (the model's ``.grad`` untouched)."""
    names = weight_names(model)
    params = {n: p.detach() for n, p in model.named_parameters()}
    leaves = {n: params[n].requires_grad_(True) for n in names}
    out = _call(model, {**params, **cloned_buffers(model)}, x, train)
    loss = F.cross_entropy(out, y)
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return [(w.detach(), g) for w, g in zip(leaves.values(), grads)]


@register_proxy("synflow", uses_data=False, default_batch_size=1,
                description="SynFlow (Tanaka et al. 2020): sum |theta * dR/dtheta| of the |theta| network on ones")
def synflow(model: nn.Module, inputs: Any, targets: Any, *, config: Any = None, train: bool = False,
            input_size: Any = None, **_: Any) -> float:
    """SynFlow. Input: all ones of batch 1 (``inputs`` is ignored); float64 throughout."""
    names = set(weight_names(model))
    params = {n: p.detach().to(torch.float64).abs() for n, p in model.named_parameters()}
    leaves = [params[n].requires_grad_(True) for n in params if n in names]
    buffers = {n: b.to(torch.float64) if b.is_floating_point() else b.clone() for n, b in model.named_buffers()}
    x = torch.ones((1, *input_size_of(model, input_size)), dtype=torch.float64, device=leaves[0].device)
    out = _call(model, {**params, **buffers}, x, train)
    grads = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
    return float(sum((w.detach() * g).abs().sum() for w, g in zip(leaves, grads) if g is not None))


@register_proxy("snip", uses_data=True, uses_labels=True,
                description="SNIP (Lee et al. 2019): sum |theta * dL/dtheta| on a labelled batch")
def snip(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, config: Any = None, train: bool = False,
         **_: Any) -> float:
    """SNIP connection sensitivity summed over the conv / linear weights."""
    return float(sum((w * g).abs().sum() for w, g in _weight_grads(model, inputs, targets, train) if g is not None))


@register_proxy("grad_norm", uses_data=True, uses_labels=True,
                description="grad_norm (Abdelfattah et al. 2021): sum of per-layer L2 gradient norms")
def grad_norm(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, config: Any = None,
              train: bool = False, **_: Any) -> float:
    """Sum over conv / linear layers of ``||dL/dW||_2``."""
    return float(sum(g.norm() for _, g in _weight_grads(model, inputs, targets, train) if g is not None))


@register_proxy("jacov", uses_data=True,
                description="jacov (Mellor et al. 2020): score of the input-Jacobian correlation spectrum")
def jacov(model: nn.Module, inputs: torch.Tensor, targets: Any, *, config: Any = None, train: bool = False,
          **_: Any) -> float:
    """Jacobian covariance. Needs a batch of at least 2; eigenvalues are clamped at 0 (round-off can make
    them slightly negative, which would give NaN in the original)."""
    if inputs.shape[0] < 2:
        raise ValueError("jacov needs a batch of at least 2 images")
    params = {n: p.detach() for n, p in model.named_parameters()}
    x = inputs.detach().clone().requires_grad_(True)
    out = _call(model, {**params, **cloned_buffers(model)}, x, train)
    (jac,) = torch.autograd.grad(out.sum(), [x])
    corr = torch.corrcoef(jac.reshape(jac.shape[0], -1).to(torch.float64))
    corr = torch.nan_to_num(corr, nan=0.0)
    v = torch.linalg.eigvalsh(corr).clamp_min(0.0)
    return float(-(torch.log(v + JACOV_K) + 1.0 / (v + JACOV_K)).sum())


@register_proxy("nwot", uses_data=True,
                description="NASWOT (Mellor et al. 2021): log-determinant of the activation-code kernel")
def nwot(model: nn.Module, inputs: torch.Tensor, targets: Any, *, config: Any = None, train: bool = False,
         **_: Any) -> float:
    """NASWOT ``log|K_H|`` over every activation module (ReLU, GELU, SiLU, ...)."""
    acts = [m for m in model.modules() if isinstance(m, ACTIVATIONS)]
    if not acts:
        raise ValueError(f"nwot needs activation modules ({', '.join(a.__name__ for a in ACTIVATIONS)}) in the "
                         "model; none found")
    b = inputs.shape[0]
    kernel = torch.zeros(b, b, dtype=torch.float64, device=inputs.device)

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        codes = (args[0].detach().reshape(b, -1) > 0).to(torch.float64)
        kernel.add_(codes @ codes.T).add_((1.0 - codes) @ (1.0 - codes).T)

    handles = [m.register_forward_hook(hook) for m in acts]
    try:
        params = {n: p.detach() for n, p in model.named_parameters()}
        with torch.no_grad():
            _call(model, {**params, **cloned_buffers(model)}, inputs, train)
    finally:
        for h in handles:
            h.remove()
    return float(torch.linalg.slogdet(kernel)[1])


def cost_kwargs(model: nn.Module) -> dict[str, Any]:
    """Keyword arguments of the analytic cost model that describe ``model``: a copy of the shape arguments it
    recorded at construction, ``model.cost_args`` (for a supernet, those of its static subnets).

    Raises:
        TypeError: if the model records none (it is not a timm-nas model with an analytic cost model).
    """
    args = getattr(model, "cost_args", None)
    if not isinstance(args, Mapping):
        raise TypeError(f"{type(model).__name__} records no cost_args; the analytic cost model covers the timm-nas "
                        "models (AutoFormer, S3, DARTS, SPViT)")
    return dict(args)


@register_proxy("params", uses_data=False, default_batch_size=1,
                description="parameter count (analytic for a config, else the model's own)")
def params(model: nn.Module, inputs: Any, targets: Any, *, config: Any = None, **_: Any) -> float:
    """Number of parameters of ``config`` (analytic cost model, :func:`timm_nas.cost.model_cost`) or of ``model``."""
    from ..cost import model_cost, real_params

    if config is not None:
        return float(model_cost(model, config)[0])
    return float(real_params(model))


@register_proxy("macs", uses_data=False, default_batch_size=1,
                description="multiply-accumulates of one image (analytic for a config, else measured)")
def macs(model: nn.Module, inputs: Any, targets: Any, *, config: Any = None, input_size: Any = None,
         **_: Any) -> float:
    """MACs of ``config`` (analytic cost model, :func:`timm_nas.cost.model_cost`) or measured on ``model`` with
    fvcore (eval mode)."""
    from ..cost import measure_macs, model_cost

    if config is not None:
        return float(model_cost(model, config)[1])
    x = torch.zeros((1, *input_size_of(model, input_size)), device=next(model.parameters()).device)
    with scoring_mode(model, False):
        return float(measure_macs(model, x))
