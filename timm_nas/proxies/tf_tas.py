"""DSS, the training-free indicator of TF-TAS.

Zhou et al., "Training-free Transformer Architecture Search", CVPR 2022 (arXiv:2203.12217); released code
https://github.com/decemberzhou/TF_TAS (commit 42616bc), ``lib/training_free/indicators/dss.py`` and
``compute_indicators.py``.

DSS adds an MSA term (*synaptic diversity*: ``|nuc(dL/dW) * nuc(W)|`` per weight matrix, ``nuc`` the nuclear
norm) and an MLP term (*synaptic saliency*: ``sum |dL/dW * W|``), with ``L`` the sum of the logits of an all-ones
image (batch 1) through the eval-mode subnet. Two modes:

``mode='reference'`` (default) reproduces what the released code computes, number for number
    (``../shared/fixtures/tftas``). Its gradient and sign bookkeeping make it differ from the paper:

    * only ``cls_token`` and ``pos_embed`` are replaced by their absolute values; every other weight keeps its
      sign (the code "linearises" a deep copy whose cached weight slices are copies of the signed originals);
    * the qkv term is 0 (its cached slice is built under ``no_grad`` and never gets a gradient), so the MSA term
      is the output projection only: ``sum_l |nuc(dL/dW_proj) * nuc(W_proj)|`` over the sampled
      ``(E, heads * head_dim)`` slices;
    * the MLP term is ``sum |dL/dW * W|`` over the sampled ``fc1`` and ``fc2`` slices;
    * the classifier: the code scores a ``Linear`` with 1000 outputs on the *full* weight, whose gradient is
      ``None``, so a 1000-class head contributes 0. A head of any other width falls into the code's MLP branch
      (``|dL/dW * W|`` of its sampled slice), or, if its width equals the supernet's embedding width, into the MSA
      branch (``in == out``). It is reported separately as :attr:`DSSScore.head` and counted in the total.

``mode='paper'`` is the method as the paper describes it: the whole network is linearised (every parameter
    replaced by its absolute value, signs never touched in the model), MSA synaptic diversity is summed over the
    attention's weight matrices (the qkv projection, which now receives its gradient, and the output
    projection), MLP synaptic saliency over ``fc1`` / ``fc2``; the classifier is not an MSA or MLP module and is
    left out.

Differences from the released code that do not change the numbers: no deep copy of the model (altered weights
reach the forward through ``torch.func.functional_call``; gradients are read with ``torch.autograd.grad``, so
the model's weights, ``.grad`` fields and mode are untouched), gradients are computed only for the scored
weights, the nuclear norms of the weight slices (which do not depend on the input) are cached per parameter
version, and relative-position index tables are the supernet's cached ones. The nuclear norm of a sampled slice
does not depend on the order of its rows, so AutoFormer's row-interleaved qkv needs no reordering here.

Works on an AutoFormer supernet with a subnet config (``dss(supernet, cfg)``), on a static subnet from
``supernet.extract(cfg)`` or ``timm.create_model('autoformer_subnet', ...)``, and on timm ViTs (any model with
``*.attn.proj``, ``*fc1`` / ``*fc2`` linear layers and a ``get_classifier()``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import weakref
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
from torch.func import functional_call

from ..layers.elastic import ElasticLinear
from ._registry import input_size_of, register_proxy, scoring_mode

__all__ = ["DSSScore", "dss", "DSS_MODES", "REFERENCE_HEAD_CLASSES"]

DSS_MODES = ("reference", "paper")

#: The released code special-cases ``nn.Linear`` layers with exactly this many outputs (the ImageNet head;
#: TF_TAS ``lib/training_free/p_utils.py``, ``get_layer_metric_array_dss``).
REFERENCE_HEAD_CLASSES = 1000

#: Parameters the released code ends up linearising (see the module docstring).
_REFERENCE_ABS = ("cls_token", "pos_embed")


@dataclasses.dataclass(frozen=True)
class DSSScore:
    """A DSS score.

    Attributes:
        total: ``msa + mlp + head``.
        msa: the MSA (synaptic diversity) part.
        mlp: the MLP (synaptic saliency) part.
        head: the classifier's part (``reference`` mode with a head that is not 1000 wide; otherwise 0).
        per_layer: module name -> value for every layer that contributes (non-zero terms).
        mode: ``'reference'`` or ``'paper'``.
    """

    total: float
    msa: float
    mlp: float
    head: float
    per_layer: dict[str, float]
    mode: str

    def __float__(self) -> float:
        return self.total


@dataclasses.dataclass
class _Layer:
    name: str
    module: nn.Module
    param_name: str  # name of its weight in model.named_parameters()
    kind: str  # 'qkv' | 'proj' | 'mlp' | 'head'


def _find_layers(model: nn.Module) -> list[_Layer]:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    layers = []
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor) or w.dim() != 2:
            continue
        if head is not None and m is head:
            kind = "head"
        elif name.endswith("attn.qkv"):
            kind = "qkv"
        elif name.endswith("attn.proj"):
            kind = "proj"
        elif name.endswith("fc1") or name.endswith("fc2"):
            kind = "mlp"
        else:
            continue
        layers.append(_Layer(name, m, f"{name}.weight" if name else "weight", kind))
    if not any(layer.kind == "proj" for layer in layers):
        raise ValueError(f"DSS needs a ViT-like model with '*.attn.proj' and '*fc1'/'*fc2' linear layers; "
                         f"{type(model).__name__} has none")
    return layers


def _head_rule(head: nn.Module) -> str:
    """How the released code scores this classifier: 'zero', 'mlp' or 'msa' (see the module docstring)."""
    out_features = head.weight.shape[0]
    if out_features == REFERENCE_HEAD_CLASSES:
        return "zero"
    if out_features == head.weight.shape[1]:  # the code's `in_features == out_features` test (super widths)
        return "msa"
    return "mlp"


# Nuclear norms of weight slices, per layer: {module: {(id(weight), version, rows, cols, abs): value}}.
_WEIGHT_NUC: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, float]]" = weakref.WeakKeyDictionary()
# |theta| of every parameter for the paper mode, per model: (versions, {name: tensor}).
_ABS_PARAMS: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[str, torch.Tensor]]]" = weakref.WeakKeyDictionary()


def _weight_nuc(module: nn.Module, param: torch.Tensor, rows: int, cols: int, absolute: bool) -> float:
    per_param = _WEIGHT_NUC.setdefault(module, {})
    key = (id(param), param._version, rows, cols, absolute)
    value = per_param.get(key)
    if value is None:
        w = param.detach()[:rows, :cols]
        if absolute:
            w = w.abs()
        value = _nuclear_norms([w])[0]
        if len(per_param) > 256:  # stale versions of a parameter that is being trained
            per_param.clear()
        per_param[key] = value
    return value


def _abs_params(model: nn.Module) -> dict[str, torch.Tensor]:
    versions = tuple(p._version for p in model.parameters())
    cached = _ABS_PARAMS.get(model)
    if cached is None or cached[0] != versions:
        cached = (versions, {n: p.detach().abs() for n, p in model.named_parameters()})
        _ABS_PARAMS[model] = cached
    return cached[1]


def _nuclear_norms(mats: list[torch.Tensor]) -> list[float]:
    """Nuclear norms of several matrices, batching those of equal shape into one eigenvalue call.

    The singular values of ``A`` are the square roots of the eigenvalues of its Gram matrix (``A^T A`` or ``A A^T``,
    the smaller), formed and decomposed in float64. Eigenvalues below ``max(shape) * eps * lambda_max`` are the
    rounding noise of a zero (a gradient seen by fewer tokens than the layer is wide is rank-deficient) and count
    as zero: their square roots would otherwise add up to ``1e-8`` of the largest singular value each, varying with
    the thread count. The result agrees with a float64 SVD to about 1e-7 relative, closer than the float32 SVD of
    the original code (``torch.norm(p='nuc')``), and costs about 20% less. A matrix holding inf or nan (where the
    original's SVD raised) gets nan.
    """
    out: list[float] = [0.0] * len(mats)
    by_shape: dict[tuple, list[int]] = {}
    for i, m in enumerate(mats):
        if bool(torch.isfinite(m).all()):
            by_shape.setdefault(tuple(m.shape), []).append(i)
        else:  # an overflowed forward or backward: nan, so the score is nan (ranked last) and a search goes on
            out[i] = math.nan
    for idx in by_shape.values():
        stacked = torch.stack([mats[i] for i in idx]) if len(idx) > 1 else mats[idx[0]][None]
        stacked = stacked.to(torch.float64)
        gram = stacked.mT @ stacked if stacked.shape[-2] >= stacked.shape[-1] else stacked @ stacked.mT
        eigenvalues = torch.linalg.eigvalsh(gram)
        noise = eigenvalues.amax(-1, keepdim=True) * (max(stacked.shape[-2:]) * torch.finfo(torch.float64).eps)
        values = torch.where(eigenvalues > noise, eigenvalues, 0.0).sqrt().sum(-1).tolist()
        for i, v in zip(idx, values):
            out[i] = v
    return out


@contextlib.contextmanager
def _record_widths(layers: list[_Layer], leaves: dict[str, torch.Tensor] | None = None
                   ) -> Iterator[dict[str, tuple[int, int]]]:
    """Context: record ``(out_width, in_width)`` of each scored layer's last call (its sampled slice).

    With ``leaves`` (parameter name -> the full weight the forward reads, a leaf requiring grad), an
    :class:`~timm_nas.layers.elastic.ElasticLinear` that runs on a slice of it reads instead a new leaf that *is* the slice (``leaves`` is updated): the gradient is then
    computed at the slice's size. Through the full tensor, the backward of the slice would allocate and zero a
    gradient of the supernet's full size for every layer (about a fifth of a DSS score's time on the tiny space).
    The values are the same: the slice's gradient is the full gradient's corner.
    """
    seen: dict[str, tuple[int, int]] = {}

    def make(layer: _Layer) -> tuple[Callable[..., None], Callable[..., None]]:
        def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
            w = module._parameters.get("weight")
            # only layers whose slice is the leading (out, in) corner (not the interleaved q/k/v rows)
            if leaves is None or type(module) is not ElasticLinear or w is not leaves.get(layer.param_name):
                return
            out = args[1] if len(args) > 1 and args[1] is not None else kwargs.get("out_features")
            rows = int(out) if out is not None else int(getattr(module, "out_features", w.shape[0]))
            cols = int(args[0].shape[-1])
            if (rows, cols) != tuple(w.shape) and rows <= w.shape[0] and cols <= w.shape[1]:
                leaf = w.detach()[:rows, :cols].requires_grad_(True)
                module._parameters["weight"] = leaf  # functional_call puts the model's own tensors back after
                leaves[layer.param_name] = leaf

        def post(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            seen[layer.name] = (int(output.shape[-1]), int(args[0].shape[-1]))
        return pre, post

    handles = []
    for layer in layers:
        pre, post = make(layer)
        handles.append(layer.module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(layer.module.register_forward_hook(post))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def dss(model: nn.Module, config: Any = None, *, mode: str = "reference", img_size: int | tuple | None = None,
        in_chans: int | None = None) -> DSSScore:
    """The DSS score of a subnet.

    Args:
        model: an AutoFormer supernet (with ``config``), or a static ViT (``config=None``: the model as it is).
        config: the subnet to score (a config or its dict); requires a supernet (``model.use_subnet``).
        mode: ``'reference'`` (the released TF-TAS code) or ``'paper'`` (the method as published); see the
            module docstring for the difference.
        img_size: input side (default: the model's ``pretrained_cfg['input_size']``).
        in_chans: input channels (default: as ``pretrained_cfg``).

    Returns:
        A :class:`DSSScore` (``float(score)`` is the total).
    """
    if mode not in DSS_MODES:
        raise ValueError(f"unknown DSS mode {mode!r}; choose one of {list(DSS_MODES)}")
    if config is not None and not hasattr(model, "use_subnet"):
        raise ValueError(f"a subnet config needs a supernet with use_subnet(); {type(model).__name__} has none "
                         "(pass config=None to score the model as it is)")
    layers = _layers_of(model)
    c, h, w = input_size_of(model, img_size)
    if in_chans is not None:
        c = in_chans
    if config is not None:
        with model.use_subnet(config):
            return _dss(model, layers, mode, (c, h, w))
    return _dss(model, layers, mode, (c, h, w))


_LAYERS: "weakref.WeakKeyDictionary[nn.Module, list[_Layer]]" = weakref.WeakKeyDictionary()


def _layers_of(model: nn.Module) -> list[_Layer]:
    layers = _LAYERS.get(model)
    if layers is None or any(layer.module.weight is None for layer in layers):
        layers = _find_layers(model)
        _LAYERS[model] = layers
    return layers


def _dss(model: nn.Module, layers: list[_Layer], mode: str, input_size: tuple[int, int, int]) -> DSSScore:
    paper = mode == "paper"
    named = dict(model.named_parameters())
    head_rule = "skip"
    scored: list[_Layer] = []
    for layer in layers:
        if layer.kind == "head":
            head_rule = "skip" if paper else _head_rule(layer.module)
            if head_rule in ("mlp", "msa"):
                scored.append(layer)
        elif layer.kind == "qkv":
            if paper:
                scored.append(layer)
        else:
            scored.append(layer)

    # Every tensor the forward reads, detached (no graph through unscored weights); scored weights are leaves.
    if paper:
        tensors = dict(_abs_params(model))
    else:
        tensors = {n: p.detach() for n, p in named.items()}
        for n in named:
            if n.rsplit(".", 1)[-1] in _REFERENCE_ABS:
                tensors[n] = tensors[n].abs()
    leaves = {layer.param_name: tensors[layer.param_name].detach().requires_grad_(True) for layer in scored}
    tensors.update(leaves)

    device = next(iter(named.values())).device
    x = torch.ones((1, *input_size), device=device)
    with _record_widths(scored, leaves) as widths, scoring_mode(model, False):
        out = functional_call(model, tensors, (x,), strict=False)
    used = [layer for layer in scored if layer.name in widths]
    grads = torch.autograd.grad(out.sum(), [leaves[layer.param_name] for layer in used], allow_unused=True)

    msa = mlp = head = 0.0
    per_layer: dict[str, float] = {}
    nuc_layers: list[tuple[_Layer, torch.Tensor, float]] = []
    for layer, g in zip(used, grads):
        if g is None:
            continue
        rows, cols = widths[layer.name]
        g = g[:rows, :cols]
        is_msa = layer.kind in ("qkv", "proj") or (layer.kind == "head" and head_rule == "msa")
        if is_msa:
            nuc_layers.append((layer, g, _weight_nuc(layer.module, named[layer.param_name], rows, cols, paper)))
        else:
            w = tensors[layer.param_name].detach()[:rows, :cols]
            # the weight first: the product (and so the sum) runs in the weight's memory order, whatever the
            # gradient's (the gradient of a slice leaf comes back transposed), as through the full gradient
            value = float((w * g).abs().sum())
            per_layer[layer.name] = value
            if layer.kind == "head":
                head += value
            else:
                mlp += value
    for (layer, _, w_nuc), g_nuc in zip(nuc_layers, _nuclear_norms([g for _, g, _ in nuc_layers])):
        value = abs(g_nuc * w_nuc)
        per_layer[layer.name] = value
        if layer.kind == "head":
            head += value
        else:
            msa += value
    order = {layer.name: i for i, layer in enumerate(layers)}
    per_layer = {k: v for k, v in sorted(per_layer.items(), key=lambda kv: order[kv[0]]) if v != 0.0}
    return DSSScore(total=msa + mlp + head, msa=msa, mlp=mlp, head=head, per_layer=per_layer, mode=mode)


@register_proxy("dss", uses_data=False, default_batch_size=1,
                description="DSS of TF-TAS (Zhou et al. 2022), all-ones input; options: mode='reference'|'paper'")
def _dss_proxy(model: nn.Module, inputs: Any, targets: Any, *, config: Any = None, mode: str = "reference",
               input_size: Any = None, **_: Any) -> float:
    # The registry has already entered use_subnet(config); score the active subnet.
    return dss(model, None, mode=mode, img_size=input_size).total
