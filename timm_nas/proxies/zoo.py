"""More training-free proxies, each implemented from its paper (the registry's call signature, higher is better).

==========  ==========================================================================================================
l2_norm     Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021: ``sum_W ||W||_F`` over the conv /
            linear weights (data-free)
plain       Abdelfattah et al. 2021 (after Mozer and Smolensky 1989): ``sum dL/dW * W`` (signed)
fisher      Turner et al., "BlockSwap", ICLR 2020 (after Theis et al. 2018): per conv / linear output channel,
            ``0.5 * mean_batch (sum_spatial a * dL/da)^2``, summed with each channel counted once per weight
            (as the zero-cost-proxy code totals it)
grasp       Wang, Zhang, Grosse, "Picking Winning Tickets Before Training by Preserving Gradient Flow", ICLR 2020:
            ``sum -W * (H g)``, ``g = dL/dW`` and ``H`` the Hessian of the loss (a Hessian-gradient product)
zen         Lin et al., "Zen-NAS", ICCV 2021: ``log E||f(x) - f(x + a e)||_1 + sum_BN log sqrt(mean var)`` of the
            pre-pooling features with N(0, 1) weights and inputs, ``a = 0.01`` (needs BatchNorm), as the authors'
            code
epe_nas     Lopes, Alirezazadeh, Alexandre, "EPE-NAS", ICANN 2021: per-class input-Jacobian correlation scores
            ``E_c = sum log(|corr| + k)``, score ``sum_c |E_c|`` (<= 100 classes) or
            ``sum_{c,c'} |E_c - E_c'| / #classes``, as the authors' code
zico        Li et al., "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on Gradients", ICLR 2023:
            ``sum_layers log sum_theta mean|g| / std(g)`` over mini-batches
meco        Jiang et al., "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via Minimum Eigenvalue of
            Correlation", NeurIPS 2023: ``sum_modules lambda_min(corr of the output's channels)`` on one image, as
            the authors' code
swap        Peng et al., "SWAP-NAS: Sample-Wise Activation Patterns for Ultra-Fast NAS", ICLR 2024: the number of
            distinct sample-wise ReLU activation patterns over a batch (needs ReLU)
==========  ==========================================================================================================

Like :mod:`timm_nas.proxies.zero_cost`, every proxy reads the model through ``torch.func.functional_call`` on
detached parameters and cloned buffers and removes its hooks, so the model (weights, buffers, ``.grad``, mode) is
unchanged; each raises ``ValueError`` naming what the model lacks when it does not apply. "Weights" are the
parameters named ``*.weight`` with at least two dimensions (conv and linear layers).

These are our implementations of the papers' formulas, checked against released code on a seeded case
(tests/test_proxies_reference.py, with the script that produced the reference numbers): ``l2_norm``, ``plain``,
``fisher``, ``grasp``, ``epe_nas`` and ``zen`` against the copies NASLib ships, ``zico``, ``meco`` and ``swap``
against their authors' repositories.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import cloned_buffers, register_proxy
from .zero_cost import _call, _weight_grads, weight_names

__all__ = ["ZEN_MIXUP", "EPE_K", "SWAP_ACTIVATIONS"]

#: Zen-NAS's perturbation scale ``alpha`` (Lin et al. 2021, section 3: ``alpha = 0.01``).
ZEN_MIXUP = 0.01
#: EPE-NAS's constant inside the logarithm (Lopes et al. 2021, eq. 3: ``k = 1e-5``).
EPE_K = 1e-5
#: Up to this many output classes EPE-NAS sums ``|E_c|``; above it, the pairwise differences (the authors' code).
EPE_MAX_CLASSES_PLAIN = 100
#: Activations whose binary patterns SWAP counts (the authors' code: ``nn.ReLU``).
SWAP_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU,)
_LAYERS = (nn.Conv2d, nn.Linear)


def _detached(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


def _need_weights(model: nn.Module, proxy: str) -> list[str]:
    names = weight_names(model)
    if not names:
        raise ValueError(f"{proxy} needs conv or linear weights (parameters named *.weight with >= 2 dims); none found")
    return names


# --------------------------------------------------------------------------------------------- weight-based
@register_proxy("l2_norm", uses_data=False, default_batch_size=1,
                description="l2_norm (Abdelfattah et al. 2021): sum of the Frobenius norms of the conv / linear weights")
def l2_norm(model: nn.Module, inputs: Any, targets: Any, *, config: Any = None, **_: Any) -> float:
    params = dict(model.named_parameters())
    return float(sum(params[n].detach().norm() for n in _need_weights(model, "l2_norm")))


@register_proxy("plain", uses_data=True, uses_labels=True,
                description="plain (Abdelfattah et al. 2021): sum of dL/dW * W (signed)")
def plain(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, config: Any = None, train: bool = False,
          **_: Any) -> float:
    _need_weights(model, "plain")
    return float(sum((w * g).sum() for w, g in _weight_grads(model, inputs, targets, train) if g is not None))


@register_proxy("grasp", uses_data=True, uses_labels=True,
                description="GraSP (Wang et al. 2020): sum of -W * (Hessian @ gradient)")
def grasp(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, config: Any = None, train: bool = False,
          **_: Any) -> float:
    """``-W * Hg`` summed, ``Hg = d(g_stop . g)/dW`` (one double-backward pass on one batch)."""
    names = _need_weights(model, "grasp")
    params = _detached(model)
    leaves = {n: params[n].clone().requires_grad_(True) for n in names}
    out = _call(model, {**params, **leaves, **cloned_buffers(model)}, inputs, train)
    grads = torch.autograd.grad(F.cross_entropy(out, targets), list(leaves.values()), create_graph=True,
                                allow_unused=True)
    pairs = [(w, g) for w, g in zip(leaves.values(), grads) if g is not None]
    z = sum((g.detach() * g).sum() for _, g in pairs)
    hg = torch.autograd.grad(z, [w for w, _ in pairs], allow_unused=True)
    return float(sum((-w.detach() * h).sum() for (w, _), h in zip(pairs, hg) if h is not None))


@register_proxy("zico", uses_data=True, uses_labels=True, default_batch_size=64,
                description="ZiCo (Li et al. 2023): sum over layers of log(sum mean|g| / std(g)) over mini-batches")
def zico(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, config: Any = None, train: bool = False,
         splits: int = 2, **_: Any) -> float:
    """The batch is cut into ``splits`` mini-batches (the paper uses two or more); gradient statistics are over them
    (population standard deviation); elements with zero deviation are left out, as layers whose sum is zero."""
    if inputs.shape[0] < splits or splits < 2:
        raise ValueError(f"zico needs at least 2 mini-batches: a batch of at least splits={max(splits, 2)} images")
    _need_weights(model, "zico")
    per_batch = [_weight_grads(model, x, y, train) for x, y in zip(inputs.chunk(splits), targets.chunk(splits))]
    total = 0.0
    for k in range(len(per_batch[0])):
        gs = [pb[k][1] for pb in per_batch]
        if any(g is None for g in gs):
            continue
        g = torch.stack(gs).to(torch.float64)  # (splits, *W.shape)
        std, mean = g.std(dim=0, unbiased=False), g.abs().mean(dim=0)
        keep = std > 0
        s = (mean[keep] / std[keep]).sum()
        if s > 0:
            total += float(torch.log(s))
    return total


# ------------------------------------------------------------------------------------------ activation-based
def _forward_with_hooks(model: nn.Module, types: tuple[type[nn.Module], ...], x: torch.Tensor, train: bool,
                        on_output: Any, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    modules = [m for m in model.modules() if isinstance(m, types)]
    handles = [m.register_forward_hook(on_output) for m in modules]
    try:
        return _call(model, {**(params or _detached(model)), **cloned_buffers(model)}, x, train)
    finally:
        for h in handles:
            h.remove()


@register_proxy("fisher", uses_data=True, uses_labels=True,
                description="Fisher (Turner et al. 2020): 0.5 * mean (sum_spatial a * dL/da)^2 per conv/linear channel")
def fisher(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, config: Any = None,
           train: bool = False, **_: Any) -> float:
    """Each channel's value counts once per weight of the channel (its fan-in), as the released zero-cost-proxy
    code totals it (Abdelfattah et al.'s ``fisher`` broadcasts the channel value to the channel's weights before
    summing; checked against NASLib's copy in tests/test_proxies_reference.py)."""
    acts: list[torch.Tensor] = []
    fan_ins: list[int] = []

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        acts.append(output)
        fan_ins.append(module.weight[0].numel())
        return output.clone()  # later in-place ops (ReLU(inplace=True)) must not touch the recorded activation

    # the input requires grad so that every activation is in the graph (the parameters are detached copies)
    out = _forward_with_hooks(model, _LAYERS, inputs.detach().clone().requires_grad_(True), train, hook)
    if not acts:
        raise ValueError("fisher needs conv or linear layers (nn.Conv2d / nn.Linear); none found")
    grads = torch.autograd.grad(F.cross_entropy(out, targets), acts, allow_unused=True)
    total = 0.0
    for a, g, fan_in in zip(acts, grads, fan_ins):
        if g is None:
            continue
        prod = (a.detach() * g).to(torch.float64)
        per_channel = prod.sum(dim=tuple(range(2, prod.dim()))) if prod.dim() > 2 else prod  # (B, C)
        total += fan_in * float((0.5 * per_channel.pow(2).mean(dim=0)).sum())
    return total


@register_proxy("epe_nas", uses_data=True, uses_labels=True, default_batch_size=64,
                description="EPE-NAS (Lopes et al. 2021): spread of per-class input-Jacobian correlation scores")
def epe_nas(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, config: Any = None,
            train: bool = False, **_: Any) -> float:
    """As the authors' code (VascoLopes/EPE-NAS ``search.py``, checked through NASLib's copy in
    tests/test_proxies_reference.py): ``E_c = sum log(|corr| + k)`` over the correlation matrix of class ``c``'s
    input Jacobians (a class with one image in the batch has the 1x1 matrix [1]); with at most 100 output classes
    the score is ``sum_c |E_c|``, above that each ``E_c`` is divided by its class's image count (classes with one
    image left out, as there) and the score is ``sum_{c,c'} |E_c - E_c'| / #classes``. One deviation: a constant
    Jacobian row (no correlation defined) counts as 0 where the authors' code gives NaN."""
    x = inputs.detach().clone().requires_grad_(True)
    out = _call(model, {**_detached(model), **cloned_buffers(model)}, x, train)
    (jac,) = torch.autograd.grad(out.sum(), [x])
    jac = jac.reshape(jac.shape[0], -1).to(torch.float64)
    many = out.shape[-1] > EPE_MAX_CLASSES_PLAIN
    per_class = []
    for c in torch.unique(targets).tolist():
        rows = jac[targets == c]
        if rows.shape[0] < 2:
            if many:
                continue
            per_class.append(math.log(1.0 + EPE_K))
            continue
        corr = torch.nan_to_num(torch.corrcoef(rows), nan=0.0)
        value = float(torch.log(corr.abs() + EPE_K).sum())
        per_class.append(value / rows.shape[0] if many else value)
    if not many:
        return float(sum(abs(v) for v in per_class))
    if not per_class:
        raise ValueError("epe_nas with more than 100 classes needs at least two images of one class in the batch; "
                         "use a larger batch")
    return sum(abs(a - b) for a in per_class for b in per_class) / len(per_class)


@register_proxy("meco", uses_data=True, default_batch_size=1,
                description="MeCo (Jiang et al. 2023): sum over every module's output of the minimum eigenvalue of "
                            "its channel correlation, one image")
def meco(model: nn.Module, inputs: torch.Tensor, targets: Any, *, config: Any = None, train: bool = False,
         **_: Any) -> float:
    """As the authors' code (HamsterMimi/MeCo ``foresight/pruners/measures/meco.py``; checked in
    tests/test_proxies_reference.py): on the first image of the batch, every module's output (containers and the
    model itself included) is read as ``(C, -1)`` rows, their correlation matrix (NaN / inf entries set to 0) gives
    its smallest eigenvalue, and the values (NaN ones left out) are summed. The authors' code draws that image
    itself (``torch.randn(1, 3, 64, 64)``); here it is the batch's, which the registry draws from a seeded
    generator at the model's input size. Defined for convolutional networks: a model without ``nn.Conv2d`` is
    refused."""
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise ValueError("meco needs convolution layers (nn.Conv2d): it reads the channel correlation of feature "
                         "maps; this model has none")
    values: list[float] = []

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        if not torch.is_tensor(output) or output.dim() < 2:
            return
        fea = output.detach()[0]
        fea = fea.reshape(fea.shape[0], -1).to(torch.float64)
        if fea.shape[1] < 2:  # one value per channel: no correlation (the authors' NaNs, set to 0)
            values.append(0.0)
            return
        corr = torch.corrcoef(fea) if fea.shape[0] > 1 else torch.ones(1, 1, dtype=torch.float64)
        corr = torch.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)
        value = float(torch.linalg.eigvalsh(corr)[0])
        if not math.isnan(value):
            values.append(value)

    with torch.no_grad():
        _forward_with_hooks(model, (nn.Module,), inputs[:1], train, hook)
    return sum(values)


@register_proxy("swap", uses_data=True, default_batch_size=32,
                description="SWAP (Peng et al. 2024): distinct sample-wise ReLU activation patterns over a batch")
def swap(model: nn.Module, inputs: torch.Tensor, targets: Any, *, config: Any = None, train: bool = False,
         **_: Any) -> float:
    """As the authors' code (pym1024/SWAP ``src/metrics/swap.py``, without its optional parameter regulariser;
    checked in tests/test_proxies_reference.py): every output unit of an ``nn.ReLU`` applied to a convolutional
    feature map (4-D input) gives one pattern, its on / off state over the batch's images; the score is the number of
    distinct patterns over the network (packed into integers here, so the count is exact)."""
    if not any(isinstance(m, SWAP_ACTIVATIONS) for m in model.modules()):
        raise ValueError("swap needs ReLU activations (nn.ReLU): its activation patterns are defined for ReLU "
                         "networks")
    b = inputs.shape[0]
    # A unit's pattern over the batch is packed into ceil(b / 62) integers of 62 bits each (exact for any batch).
    words = -(-b // _SWAP_BITS)
    weights = 2 ** (torch.arange(words * _SWAP_BITS, dtype=torch.int64, device=inputs.device) % _SWAP_BITS)
    codes: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if args[0].dim() != 4:  # the authors' patterns are those of convolutional feature maps
            return
        on = (output.detach().reshape(b, -1) > 0).to(torch.int64)  # (B, units)
        on = torch.nn.functional.pad(on, (0, 0, 0, words * _SWAP_BITS - b)) * weights[:, None]
        codes.append(on.reshape(words, _SWAP_BITS, -1).sum(dim=1).t())  # (units, words)

    with torch.no_grad():
        _forward_with_hooks(model, SWAP_ACTIVATIONS, inputs, train, hook)
    if not codes:
        raise ValueError("swap needs ReLU activations on convolutional feature maps (4-D inputs); this model applies "
                         "none")
    return float(torch.unique(torch.cat(codes), dim=0).shape[0])


#: Bits of one packed word of a SWAP activation pattern (int64, sign bit and one spare bit unused).
_SWAP_BITS = 62


@register_proxy("zen", uses_data=True, default_batch_size=64,
                description="Zen-NAS (Lin et al. 2021): log feature change under a small input perturbation plus "
                            "BatchNorm scale, N(0,1) weights and inputs (needs BatchNorm)")
def zen(model: nn.Module, inputs: torch.Tensor, targets: Any, *, config: Any = None, seed: int = 0,
        mixup: float = ZEN_MIXUP, **_: Any) -> float:
    """Zen-score as the authors' code computes it (idstcv/ZenNAS ``ZeroShotProxy/compute_zen_score.py``, one
    repeat; checked through NASLib's copy in tests/test_proxies_reference.py): from a generator seeded with
    ``seed + 2``, the conv / linear weights are redrawn N(0, 1) in module order (BatchNorm weight 1, every bias 0),
    then two N(0, 1) batches ``x`` and ``e`` of the inputs' shape (the proxy is data-free: only the batch's shape is
    used). ``f`` is ``model.forward_features`` (pre-pooling) in training mode;
    ``score = log mean_batch ||f(x) - f(x + a e)||_1 + sum_BN log sqrt(mean running_var)``, the running variances
    as the two forwards left them (on copies: the model is unchanged)."""
    bns = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise ValueError("zen needs BatchNorm layers: the Zen-score reads their variance (Lin et al. 2021, section "
                         "3.3); this model has none")
    g = torch.Generator().manual_seed(int(seed) + 2)
    params = {}
    for n, p in model.named_parameters():
        if n.endswith("weight") and p.dim() >= 2:
            params[n] = torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device)
        elif n.endswith("weight"):
            params[n] = torch.ones_like(p.detach())
        else:
            params[n] = torch.zeros_like(p.detach())
    x = torch.randn(inputs.shape, generator=g, dtype=inputs.dtype).to(inputs.device)
    noise = torch.randn(inputs.shape, generator=g, dtype=inputs.dtype).to(inputs.device)

    from ._registry import scoring_mode

    view = _FeatureView(model)
    buffers = cloned_buffers(model)  # updated by the two training-mode forwards, as the model's would be
    state = {f"m.{n}": t for n, t in {**params, **buffers}.items()}
    with torch.no_grad(), scoring_mode(model, True):
        f1 = torch.func.functional_call(view, state, (x,), strict=False)
        f2 = torch.func.functional_call(view, state, (x + mixup * noise,), strict=False)
    delta = (f1 - f2).abs().to(torch.float64).reshape(f1.shape[0], -1).sum(dim=1).mean()
    bn_term = 0.0
    for name in bns:
        var = buffers.get(f"{name}.running_var")
        if var is not None:  # a BatchNorm without running statistics has no scale to read
            bn_term += float(torch.log(torch.sqrt(var.to(torch.float64).mean())))
    return float(torch.log(delta)) + bn_term if delta > 0 else -math.inf


class _FeatureView(nn.Module):
    """``model.forward_features`` (pre-pooling features) as a module, else ``model(x)``; parameters under ``m.``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        forward = getattr(self.m, "forward_features", None)
        return forward(x) if callable(forward) else self.m(x)
