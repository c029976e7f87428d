"""SPViT: prune a pretrained DeiT's self-attentions into convolutions in a single path, as timm models.

Paper: He et al., "Pruning Self-attentions into Convolutional Layers in Single Path", TPAMI 2024
(arXiv:2111.11802). Original code: https://github.com/ziplab/SPViT (``SPViT_DeiT``), commit ae19b0d.

Two models:

* :class:`SPViTSearchDeiT` (``spvit_search_deit``, ``spvit_search_deit_{tiny,small,base}``) is the search network:
  a DeiT whose attention layers are :class:`~timm_nas.layers.UnifiedAttention` (MSA, 1x1 and 3x3 bottleneck
  convolutions sharing the MSA's weights, chosen by three ordered gates) and whose FFNs are
  :class:`~timm_nas.layers.UnifiedMlp` (one gate per hidden unit). It starts from timm's own DeiT weights
  (``pretrained=True``). ``derive_arch()``, ``complexity()``, ``complexity_loss()`` and ``extract()`` serve the
  search (:mod:`timm_nas.search.spvit`).
* :class:`SPViTDeiT` (``spvit_deit``, ``spvit_deit_{tiny,small,base}``) is the pruned model of an
  :class:`~timm_nas.spaces.spvit.SPViTArch`: a timm ``VisionTransformer`` whose blocks hold timm ``Attention``
  (MSA layers), :class:`~timm_nas.layers.BConv` with real, materialised kernels (conv layers), a shortcut (skip
  layers) and FFNs with only the kept hidden units.

Skip layers. The search network's skip op outputs 0 (the block is ``x + 0``); the original fine-tuned models
return the layer's normalised input instead, so their block computes ``x + norm1(x)``, and the released
checkpoints were trained that way. ``skip_mode='original'`` (the default, what released weights need) reproduces
that; ``skip_mode='zero'`` reproduces the search network, and is what ``SPViTSearchDeiT.extract()`` returns.
No released DeiT architecture has a skip layer (the Swin ones do).

Checkpoint layouts and key map (``blocks.{i}.`` prefixes omitted):

========================  ===========================  ======================================================
layer                     ours (``SPViTDeiT``)          original
========================  ===========================  ======================================================
MSA                       ``attn.qkv`` (3D x D)         ``attn.qk`` (2D x D) and ``attn.v`` (D x D), concatenated
1x1 / 3x3 conv            ``attn.bconv.{0,1,3}.*``      fine-tune: ``attn.{head_probs, v, proj, bn_1x1|bn_3x3}``
                                                       (materialised on load by :func:`bconv_weights`);
                                                       optimised (``post_training_optimize_checkpoint.py``):
                                                       ``attn.bconv.{0,1,3}.*``, key for key
skip                      (no attention weights)        (none)
FFN                       ``mlp.fc1`` / ``mlp.fc2``      the same, kept units only (search: full width, sliced
                                                       with the arch's ``ffn_kept``)
========================  ===========================  ======================================================

:func:`checkpoint_filter_fn` reads all of them (and plain timm / facebook DeiT weights, giving the original
fine-tune initialisation: uniform head assignment, fresh BN); :func:`search_to_finetune_state_dict` is the
original's search -> fine-tune conversion; :func:`to_param_opt_layout` maps our state dict onto the authors'
optimised layout.
"""
from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Literal, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import Attention, DropPath, LayerNorm, Mlp, PatchEmbed, get_act_layer, get_norm_layer, \
    resample_abs_pos_embed, to_2tuple, trunc_normal_, use_fused_attn
from timm.models import VisionTransformer, generate_default_cfgs, register_model
from timm.models._manipulate import adapt_input_conv, checkpoint

from ._build import build_model
from ..cost.spvit import _kernel_size
from ..family import Family, register_family
from ..spaces.base import generator_for
from ..spaces.spvit import SPVIT_OPS, SPViTArch, SPViTSpace, op_from_indicators
from ._supernet import StepCounterMixin
from ._vit_api import ViTApiMixin, check_global_pool

__all__ = [
    "SPViTSearchDeiT",
    "SPViTDeiT",
    "SKIP_MODES",
    "SEARCH_SETTINGS",
    "checkpoint_filter_fn",
    "search_checkpoint_filter_fn",
    "derive_arch_from_state_dict",
    "search_to_finetune_state_dict",
    "to_param_opt_layout",
]

_logger = logging.getLogger(__name__)

#: Skip-layer behaviour of a pruned model: the released fine-tuned models' ``x + norm1(x)``, or the search
#: network's ``x + 0``.
SKIP_MODES = ("original", "zero")

#: Initial gate threshold of the released searches (``"theta": 1.5`` in ``SPViT_DeiT/config/*_search.json``;
#: sigmoid(1.5) = 0.82, every gate on at the start).
SPVIT_THETA = 1.5

#: Search settings of the released runs, ``SPViT_DeiT/config/spvit_deit_{ti_l200_t10,sm_l30_t32,bs_l008_t60}_search.json``:
#: FLOPs target (GFLOPs, multiply-accumulates), complexity-loss weight and gate learning rate.
SEARCH_SETTINGS: dict[str, dict[str, float]] = {
    "tiny": dict(target_flops=1.0, loss_lambda=20.0, arc_lr=1e-3),
    "small": dict(target_flops=3.2, loss_lambda=3.0, arc_lr=5e-4),
    "base": dict(target_flops=6.0, loss_lambda=0.08, arc_lr=1e-3),
}

#: DeiT shapes (timm ``deit_{tiny,small,base}_patch16_224``).
_DEIT_ARGS: dict[str, dict[str, Any]] = {
    "tiny": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3),
    "small": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "base": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
}

#: DeiT shape arguments recorded by the named pruned entrypoints (their arch is fixed by the name).
_SHAPE_ARGS = ("patch_size", "embed_dim", "depth", "num_heads")
_SEARCH_ONLY_MLP = ("ffn_thresholds", "assigned_indicator_index")
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_GATE_STEP = "gate_step"


def _input_cost_args(patch_embed: nn.Module) -> dict[str, Any]:
    """The input part of ``cost_args`` (:mod:`timm_nas.cost.spvit`'s keywords), JSON-native: a side for a square,
    else ``[H, W]``."""
    def side(size: Sequence[int]) -> int | list[int]:
        return int(size[0]) if size[0] == size[1] else [int(size[0]), int(size[1])]

    return dict(img_size=side(patch_embed.img_size), patch_size=side(patch_embed.patch_size))


# ------------------------------------------------------------------------------------------------------ gates
# SPViT gates: relaxed-Bernoulli samples with a straight-through estimator, and the ordered op gates.
#
# Every SPViT gate is a learnable threshold ``theta`` with keep probability ``p = sigmoid(theta)``
# (``SPViT_DeiT/models_pruning.py`` at ziplab/SPViT commit ae19b0d):
#
# * **training**: a hard 0/1 sample whose gradient is that of its relaxed (sigmoid) version
#   (``bernoulli_sample``: logits ``(log u - log(1-u) + log p - log(1-p)) / T``, hard ``1[logits > 0]``,
#   soft ``sigmoid(logits)``, returned as ``hard - soft.detach() + soft``);
# * **eval**: ``1[p > 0.5]``;
# * **complexity loss**: a deterministic straight-through value ``1[p > 0.5] - s.detach() + s`` with
#   ``s = sigmoid(p - 0.5)`` (its forward value is the eval decision).
#
# The logistic noise ``log u - log(1-u)`` is drawn here from an explicit ``torch.Generator`` (the original draws
# from the global RNG); :func:`logistic_noise` is the only random step, so a test can inject the noise of a
# recorded run.
#
# The three gates of an attention layer are ordered (1x1 conv, 3x3 conv, MSA) and combined with a cumulative
# product, so at most one op is on: :func:`ordered_op_gates` and :func:`mix_ops`.
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


# ------------------------------------------------------------------------------------------- attention layers
# SPViT unified attention: MSA, 1x1 / 3x3 bottleneck convolutions built from the MSA's weights, and a shortcut.
#
# SPViT (He et al., TPAMI 2024, arXiv:2111.11802; ``SPViT_DeiT/models_pruning.py`` ``UnifiedAttention`` and
# ``post_training_optimize_checkpoint.py`` at ziplab/SPViT commit ae19b0d) shares weights between an attention
# layer and two bottleneck convolutions (BConv). A softmax over heads (temperature ``alpha``) assigns a convex
# combination of the heads to each of the 9 kernel positions ``k``; with ``W_v^h`` / ``b_v^h`` the value rows of
# head ``h`` and ``W_o^h`` the matching projection columns:
#
# * ``Wk = sum_h P[h, k] W_v^h`` (head_dim x dim), ``bk = sum_h P[h, k] b_v^h``, ``Ok = sum_h P[h, k] W_o^h``;
# * 1x1 BConv: ``Conv1x1(W4, b4) -> BN -> ReLU -> Conv1x1(O4, proj.bias)`` (k = 4 is the centre);
# * 3x3 BConv: ``Conv3x3({Wk}, sum_k bk, padding 1) -> BN -> ReLU -> Conv1x1(sum_k Ok, proj.bias)``; position
#   ``k`` sits at kernel row ``k % 3``, column ``k // 3`` (the original's column-major ordering).
#
# The class token is not convolved: a conv layer returns its input class token unchanged.
#
# Here :func:`bconv_weights` materialises these kernels (the original's post-training optimisation, exactly);
# :class:`UnifiedAttention` is the search layer (all three ops, mixed by the gates it is given);
# :class:`BConv` is a pruned conv layer holding the materialised kernels; :class:`SkipAttention` is the pruned
# shortcut of the original's fine-tuned models (it returns its input).
#: Temperature of the head -> kernel-position softmax for DeiT: ``UnifiedAttention(alpha=1e-2)``, the constructor
#: default, never passed by the DeiT code (the Swin configs use 1e2).
SPVIT_ALPHA = 1e-2

#: Largest kernel (``max_kernel_size = 3``) and its number of positions.
MAX_KERNEL_SIZE = 3
KERNEL_POSITIONS = MAX_KERNEL_SIZE ** 2

#: Index of the kernel centre in the original's column-major position order (``k = row + 3 * col``).
CENTER_POSITION = 4


def head_assignment(head_probs: torch.Tensor, alpha: float = SPVIT_ALPHA) -> torch.Tensor:
    """``softmax(head_probs / alpha)`` over heads: ``(num_heads, 9)``, each column a convex combination of heads."""
    return (head_probs / alpha).softmax(0)


def bconv_weights(
        v_weight: torch.Tensor,
        v_bias: Optional[torch.Tensor],
        proj_weight: torch.Tensor,
        head_probs: torch.Tensor,
        kernel_size: int,
        alpha: float = SPVIT_ALPHA,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Materialise the kernels of a BConv from an attention layer's value / projection weights.

    Same operations as the original's ``post_training_optimize_checkpoint.py``, so the result is bit-identical.

    Args:
        v_weight: value projection weight ``(dim, dim)`` (rows grouped by head).
        v_bias: value projection bias ``(dim,)`` or ``None`` (zeros).
        proj_weight: output projection weight ``(dim, dim)`` (columns grouped by head).
        head_probs: head-assignment logits ``(num_heads, 9)``.
        kernel_size: 1 or 3.
        alpha: head-assignment temperature.

    Returns:
        ``(w_in, b_in, w_out)``: the first conv's weight ``(head_dim, dim, k, k)`` and bias ``(head_dim,)``, and
        the second (1x1) conv's weight ``(dim, head_dim, 1, 1)``; its bias is the projection bias.
    """
    if kernel_size not in (1, MAX_KERNEL_SIZE):
        raise ValueError(f"kernel_size must be 1 or {MAX_KERNEL_SIZE}, got {kernel_size}")
    num_heads = head_probs.shape[0]
    dim = v_weight.shape[0]
    head_dim = dim // num_heads
    probs = head_assignment(head_probs, alpha)
    if v_bias is None:
        v_bias = v_weight.new_zeros(dim)
    new_v_weight = v_weight.view(num_heads, head_dim, dim).permute(1, 2, 0) @ probs  # (head_dim, dim, 9)
    new_v_bias = v_bias.view(num_heads, head_dim).permute(1, 0) @ probs  # (head_dim, 9)
    new_proj = proj_weight.view(dim, num_heads, head_dim).permute(0, 2, 1) @ probs  # (dim, head_dim, 9)
    if kernel_size == 1:
        return (new_v_weight[..., CENTER_POSITION][..., None, None], new_v_bias[..., CENTER_POSITION],
                new_proj[..., CENTER_POSITION][..., None, None])
    # position k -> (row k % 3, col k // 3): (9, head_dim, dim) -> (3 [col], 3 [row], head_dim, dim)
    w_in = new_v_weight.permute(2, 0, 1).reshape(MAX_KERNEL_SIZE, MAX_KERNEL_SIZE, head_dim, dim).permute(2, 3, 1, 0)
    return w_in, new_v_bias.sum(-1), new_proj.sum(-1)[..., None, None]


class UnifiedAttention(nn.Module):
    """The search layer: MSA, 1x1 BConv and 3x3 BConv on shared weights, mixed by cumulative gates.

    Parameter names are the original's (``qk``, ``v``, ``proj``, ``bn_1x1``, ``bn_3x3``, ``head_probs``,
    ``kernel_thresholds``), so original search checkpoints load unchanged. The gates are computed by the model
    and passed to :meth:`forward`.

    Args:
        dim: token width.
        num_heads: attention heads (the BConv bottleneck width is ``dim // num_heads``).
        grid_size: patch grid ``(H, W)`` of the tokens after the class token.
        qkv_bias: bias on the q/k/v projections.
        attn_drop: attention dropout.
        proj_drop: dropout after the MSA projection.
        theta: initial value of the three gate thresholds.
        alpha: head-assignment temperature.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            grid_size: tuple[int, int],
            qkv_bias: bool = True,
            attn_drop: float = 0.,
            proj_drop: float = 0.,
            theta: float = 0.,
            alpha: float = SPVIT_ALPHA,
            device: torch.device | str | None = None,
            dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.grid_size = tuple(grid_size)
        self.alpha = alpha
        self.fused_attn = use_fused_attn()
        self.kernel_thresholds = nn.Parameter(torch.full((3,), float(theta), **dd))
        self.head_probs = nn.Parameter(torch.ones(num_heads, KERNEL_POSITIONS, **dd))
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias, **dd)
        self.v = nn.Linear(dim, dim, bias=qkv_bias, **dd)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        self.bn_1x1 = nn.BatchNorm2d(self.head_dim, **dd)
        self.bn_3x3 = nn.BatchNorm2d(self.head_dim, **dd)
        self.conv_act = nn.ReLU()

    def kernel_probs(self) -> torch.Tensor:
        """Keep probabilities of the three op gates, ``sigmoid(kernel_thresholds)``."""
        return torch.sigmoid(self.kernel_thresholds)

    def msa(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention over all tokens (class token included)."""
        B, N, C = x.shape
        qk = self.qk(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = qk.unbind(0)  # (B, heads, N, head_dim)
        v = self.v(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        if self.fused_attn:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.)
        else:
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            out = self.attn_drop(attn) @ v
        out = self.proj(out.transpose(1, 2).reshape(B, N, C))
        return self.proj_drop(out)

    def bconv(self, x: torch.Tensor, kernel_size: int) -> torch.Tensor:
        """The 1x1 or 3x3 BConv with kernels materialised from the current weights; class token passed through."""
        B, N, C = x.shape
        H, W = self.grid_size
        w_in, b_in, w_out = bconv_weights(self.v.weight, self.v.bias, self.proj.weight, self.head_probs,
                                          kernel_size, self.alpha)
        bn = self.bn_1x1 if kernel_size == 1 else self.bn_3x3
        patches = x[:, 1:].transpose(1, 2).reshape(B, C, H, W)  # (B, dim, H, W)
        y = F.conv2d(patches, w_in, b_in, padding=kernel_size // 2)  # (B, head_dim, H, W)
        y = self.conv_act(bn(y)).flatten(2).transpose(1, 2)  # (B, N - 1, head_dim)
        y = F.linear(y, w_out.flatten(1), self.proj.bias)
        return torch.cat([x[:, :1], y], dim=1)

    def forward(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """Mix the three ops with cumulative gates ``(3,)`` (see :func:`mix_ops`)."""
        return mix_ops(gates, self.msa(x), self.bconv(x, MAX_KERNEL_SIZE), self.bconv(x, 1))


class _GridBox:
    """The patch grid of the current input of a ``dynamic_img_size`` model, shared by its conv layers (timm's ViT
    blocks receive token sequences only; :class:`_RecordGrid` on the patch embedding fills it)."""

    def __init__(self) -> None:
        self.grid: Any = None


class _RecordGrid:
    """Forward hook of the patch embedding: its ``(B, H, W, C)`` output's grid into a :class:`_GridBox` (a plain
    object, so deep copies of the model, e.g. timm's EMA, keep hook and layers on one copied box)."""

    def __init__(self, box: _GridBox) -> None:
        self.box = box

    def __call__(self, module: nn.Module, args: Any, out: torch.Tensor) -> None:
        self.box.grid = (out.shape[1], out.shape[2])


class BConv(nn.Module):
    """A pruned BConv layer with real kernels: ``bconv = Conv(k) -> BN -> ReLU -> Conv1x1`` on the patch grid.

    The submodule layout is the original's materialised one (``bconv.0`` / ``bconv.1`` / ``bconv.3``, index 2
    being the ReLU), so the authors' optimised checkpoints map onto it key for key. The class token passes
    through unchanged.

    Args:
        dim: token width.
        head_dim: bottleneck width.
        kernel_size: 1 or 3.
        grid_size: patch grid ``(H, W)``.
    """

    def __init__(
            self,
            dim: int,
            head_dim: int,
            kernel_size: int,
            grid_size: tuple[int, int],
            device: torch.device | str | None = None,
            dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if kernel_size not in (1, MAX_KERNEL_SIZE):
            raise ValueError(f"kernel_size must be 1 or {MAX_KERNEL_SIZE}, got {kernel_size}")
        self.kernel_size = kernel_size
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.dynamic = False  # the grid of each input comes from the model's patch embedding (use_dynamic_grid)
        self._box: Any = None
        self.bconv = nn.Sequential(
            nn.Conv2d(dim, head_dim, kernel_size, padding=kernel_size // 2, **dd),
            nn.BatchNorm2d(head_dim, **dd),
            nn.ReLU(),
            nn.Conv2d(head_dim, dim, 1, **dd),
        )

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        """``attn_mask`` / ``is_causal`` (passed by timm's ``VisionTransformer`` to every block's attention) are
        ignored: a convolution has no attention to mask. (Raising on them would break FX tracing, where an
        unset ``attn_mask`` is a proxy.)"""
        B, N, C = x.shape
        patches = x[:, 1:]
        # 1x1 convolutions are matrix products on the tokens: no layout change needed
        if self.kernel_size == 1:
            y = F.linear(patches, self.bconv[0].weight.flatten(1), self.bconv[0].bias)  # (B, N - 1, head_dim)
        else:
            H, W = self._input_grid() if self.dynamic else self.grid_size
            y = F.conv2d(patches.transpose(1, 2).reshape(B, C, H, W), self.bconv[0].weight, self.bconv[0].bias,
                         padding=self.kernel_size // 2)  # (B, head_dim, H, W)
            y = y.flatten(2).transpose(1, 2)  # (B, N - 1, head_dim)
        d = y.shape[-1]
        # BatchNorm2d over (B x H x W) positions == over the B * (N - 1) token rows, seen as 1x1 images
        y = self.bconv[2](self.bconv[1](y.reshape(-1, d, 1, 1))).reshape(B, N - 1, d)
        y = F.linear(y, self.bconv[3].weight.flatten(1), self.bconv[3].bias)  # (B, N - 1, dim)
        return torch.cat([x[:, :1], y], dim=1)


    def use_dynamic_grid(self, box: _GridBox) -> None:
        """Take each input's grid from ``box`` (a ``dynamic_img_size`` model) instead of the built one."""
        self.dynamic = True
        self._box = box

    @torch.jit.unused
    def _input_grid(self):  # the signature as a type comment: TorchScript cannot read this file's postponed ones
        # type: () -> Tuple[int, int]
        grid = self._box.grid
        if grid is None:
            raise RuntimeError("the patch grid of this input is unknown: a dynamic-size BConv runs inside its model")
        return grid


class SkipAttention(nn.Module):
    """The original fine-tuned models' skip layer: returns its (normalised) input, so the block computes
    ``x + norm1(x)``. ``attn_mask`` / ``is_causal`` are ignored, as in :class:`BConv`."""

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        return x


# -------------------------------------------------------------------------------------------------- MLP layer
# SPViT unified FFN: an MLP whose hidden units are gated one by one.
#
# SPViT (He et al., TPAMI 2024; ``SPViT_DeiT/models_pruning.py`` ``UnifiedMlp`` at ziplab/SPViT commit ae19b0d):
# ``fc2(drop(mask * act(fc1(x))))`` with one learnable threshold per hidden unit (``ffn_thresholds``). The mask
# (computed by the model from the thresholds: a straight-through sample in training, ``1[p > 0.5]`` at eval) is
# shared by all tokens and images of a batch.
#
# As in the original, every forward also writes the eval decision into the persistent buffer
# ``assigned_indicator_index``, so a saved search checkpoint carries the FFN masks the original's fine-tune
# conversion reads.
class UnifiedMlp(nn.Module):
    """The search FFN with per-hidden-unit gates (original parameter names: ``fc1``, ``fc2``,
    ``ffn_thresholds``, buffer ``assigned_indicator_index``).

    Args:
        in_features: token width.
        hidden_features: hidden width of the unpruned FFN.
        act_layer: activation.
        drop: dropout after the activation and after ``fc2``.
        theta: initial threshold of every hidden unit.
    """

    def __init__(
            self,
            in_features: int,
            hidden_features: int,
            act_layer: type[nn.Module] = nn.GELU,
            drop: float = 0.,
            theta: float = 0.,
            device: torch.device | str | None = None,
            dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.ffn_thresholds = nn.Parameter(torch.full((hidden_features,), float(theta), **dd))
        self.register_buffer("assigned_indicator_index", torch.zeros(hidden_features, **dd), persistent=True)
        self.fc1 = nn.Linear(in_features, hidden_features, **dd)
        self.act = act_layer()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features, **dd)

    def ffn_probs(self) -> torch.Tensor:
        """Keep probability of every hidden unit, ``sigmoid(ffn_thresholds)``."""
        return torch.sigmoid(self.ffn_thresholds)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Apply the FFN with hidden-unit ``mask`` ``(hidden,)`` (0/1 values, possibly straight-through)."""
        with torch.no_grad():
            self.assigned_indicator_index.copy_(eval_gate(self.ffn_probs()))
        x = self.act(self.fc1(x))
        x = self.drop(mask * x)
        return self.drop(self.fc2(x))


# ------------------------------------------------------------------------------------------------------ blocks
class SPViTSearchBlock(nn.Module):
    """A search block: ``x + attn(norm1(x), gates)``, then ``x + mlp(norm2(x), mask)``."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            grid_size: tuple[int, int],
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            proj_drop: float = 0.,
            attn_drop: float = 0.,
            drop_path: float = 0.,
            theta: float = SPVIT_THETA,
            alpha: float = SPVIT_ALPHA,
            norm_layer: Callable[..., nn.Module] = LayerNorm,
            act_layer: type[nn.Module] = nn.GELU,
            device: torch.device | str | None = None,
            dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm1 = norm_layer(dim, **dd)
        self.attn = UnifiedAttention(dim, num_heads, grid_size, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                     proj_drop=proj_drop, theta=theta, alpha=alpha, **dd)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        # the original's hidden width: int(dim * mlp_ratio)
        self.mlp = UnifiedMlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop, theta=theta, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor, attn_gates: torch.Tensor, ffn_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), attn_gates))
        return x + self.drop_path2(self.mlp(self.norm2(x), ffn_mask))


def _pruned_mlp(dim: int, hidden: int, act_layer: type[nn.Module], drop: float, **dd: Any) -> Mlp:
    """timm's ``Mlp`` with ``hidden`` units, including none: a fully pruned FFN keeps only ``fc2``'s bias (what the
    search network computes when every unit's gate is off), where ``Mlp(hidden_features=0)`` would silently
    build a full-width layer."""
    mlp = Mlp(dim, hidden_features=max(hidden, 1), act_layer=act_layer, drop=drop, **dd)
    if hidden == 0:
        with warnings.catch_warnings():  # "initializing zero-element tensors is a no-op"
            warnings.simplefilter("ignore", UserWarning)
            mlp.fc1 = nn.Linear(dim, 0, **dd)
            mlp.fc2 = nn.Linear(0, dim, **dd)
    return mlp


class SPViTBlock(nn.Module):
    """A pruned block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``; ``attn`` is timm ``Attention``
    (``'msa'``), :class:`BConv` (``'bconv1x1'`` / ``'bconv3x3'``) or :class:`SkipAttention` (``'skip'``,
    original mode)."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            op: str,
            ffn_hidden: int,
            grid_size: tuple[int, int],
            qkv_bias: bool = True,
            proj_drop: float = 0.,
            attn_drop: float = 0.,
            drop_path: float = 0.,
            norm_layer: Callable[..., nn.Module] = LayerNorm,
            act_layer: type[nn.Module] = nn.GELU,
            device: torch.device | str | None = None,
            dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.op = op
        self.norm1 = norm_layer(dim, **dd)
        if op == "msa":
            self.attn: nn.Module = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                             proj_drop=proj_drop, **dd)
        elif op in ("bconv1x1", "bconv3x3"):
            self.attn = BConv(dim, dim // num_heads, _kernel_size(op), grid_size, **dd)
        elif op == "skip":
            self.attn = SkipAttention()
        else:
            raise ValueError(f"op={op!r} is not allowed; allowed values: {list(SPVIT_OPS)}")
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = _pruned_mlp(dim, ffn_hidden, act_layer, proj_drop, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class SPViTFFNBlock(nn.Module):
    """A pruned block whose attention was pruned to a zero shortcut (``skip_mode='zero'``): ``x + mlp(norm2(x))``."""

    op = "skip"

    def __init__(
            self,
            dim: int,
            ffn_hidden: int,
            proj_drop: float = 0.,
            drop_path: float = 0.,
            norm_layer: Callable[..., nn.Module] = LayerNorm,
            act_layer: type[nn.Module] = nn.GELU,
            device: torch.device | str | None = None,
            dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = _pruned_mlp(dim, ffn_hidden, act_layer, proj_drop, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        return x + self.drop_path2(self.mlp(self.norm2(x)))


def _pruned_block(
        *,
        arch: SPViTArch,
        skip_mode: str,
        grid_size: tuple[int, int],
        dim: int,
        num_heads: int,
        qkv_bias: bool,
        proj_drop: float,
        attn_drop: float,
        drop_path: float,
        norm_layer: Callable[..., nn.Module],
        act_layer: type[nn.Module],
        depth: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **vit_defaults: Any,
) -> nn.Module:
    """``block_fn`` for timm's ``VisionTransformer``: block ``depth`` of ``arch``. ``vit_defaults`` are the
    remaining ``VisionTransformer`` block arguments (mlp_ratio, qk_norm, ...), fixed by :class:`SPViTDeiT`."""
    op, hidden = arch.ops[depth], arch.ffn_hidden[depth]
    dd = {"device": device, "dtype": dtype}
    if op == "skip" and skip_mode == "zero":
        return SPViTFFNBlock(dim, hidden, proj_drop=proj_drop, drop_path=drop_path, norm_layer=norm_layer,
                             act_layer=act_layer, **dd)
    return SPViTBlock(dim, num_heads, op, hidden, grid_size, qkv_bias=qkv_bias, proj_drop=proj_drop,
                      attn_drop=attn_drop, drop_path=drop_path, norm_layer=norm_layer, act_layer=act_layer, **dd)


# -------------------------------------------------------------------------------------------- search model
class SPViTSearchDeiT(StepCounterMixin, ViTApiMixin, nn.Module):
    """The SPViT search network on a DeiT (one gate set per layer; see the module docstring).

    Training-mode forwards sample every gate (a straight-through relaxed Bernoulli); the noise comes from
    ``generator_for(gate_seed, step)``, where ``step`` counts training forwards in the persistent buffer
    ``gate_step`` (a resumed search continues the sequence). Eval-mode forwards use the decisions
    ``sigmoid(theta) > 0.5``.

    Args:
        img_size: input size.
        patch_size: patch size.
        in_chans: input channels.
        num_classes: classes of the head (0: no head).
        global_pool: ``'token'`` (DeiT), ``'avg'`` (mean of the patch tokens) or ``''``.
        embed_dim: token width.
        depth: blocks.
        num_heads: heads per attention layer.
        mlp_ratio: FFN hidden width / ``embed_dim``.
        qkv_bias: bias on q/k/v.
        drop_rate: head dropout.
        pos_drop_rate: dropout after the position embedding.
        proj_drop_rate: dropout after the attention projection and in the FFN.
        attn_drop_rate: attention dropout.
        drop_path_rate: stochastic depth (linearly increasing over blocks).
        theta: initial value of every gate threshold (the original's ``theta``).
        alpha: head -> kernel-position softmax temperature (the original's ``alpha``, 1e-2 for DeiT).
        loss_lambda: weight of the complexity loss (the original's ``loss_lambda``).
        target_flops: FLOPs target in GFLOPs (the original's ``target_flops``).
        gate_seed: seed of the gate-sampling generators (the search uses ``seed + rank``, as the original
            seeds each rank's RNG).
        norm_layer: normalisation layer (default timm ``LayerNorm``, eps 1e-6).
        act_layer: FFN activation (default GELU).
    """

    def __init__(
            self,
            img_size: int | tuple[int, int] = 224,
            patch_size: int | tuple[int, int] = 16,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: Literal["token", "avg", ""] = "token",
            embed_dim: int = 768,
            depth: int = 12,
            num_heads: int = 12,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            pos_drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            theta: float = SPVIT_THETA,
            alpha: float = SPVIT_ALPHA,
            loss_lambda: float | None = None,
            target_flops: float | None = None,
            gate_seed: int = 0,
            norm_layer: Any = None,
            act_layer: Any = None,
            device: torch.device | str | None = None,
            dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        check_global_pool(global_pool)
        if isinstance(gate_seed, bool) or not isinstance(gate_seed, int):
            raise TypeError(f"gate_seed must be an int, got {gate_seed!r}")
        norm_layer = get_norm_layer(norm_layer) or LayerNorm
        act_layer = get_act_layer(act_layer) or nn.GELU
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.has_class_token = True
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.theta = theta
        self.alpha = alpha
        self.loss_lambda = loss_lambda
        self.target_flops = target_flops
        self.gate_seed = int(gate_seed)
        self.grad_checkpointing = False
        self._init_args = dict(img_size=img_size, patch_size=patch_size)  # for the pruned model's arguments

        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                      embed_dim=embed_dim, **dd)
        # The cost formulas' shape arguments: those of the pruned models extract() builds (skip_mode 'zero')
        # (timm_nas.cost.model_cost).
        self.cost_args = dict(embed_dim=embed_dim, num_heads=num_heads, **_input_cost_args(self.patch_embed),
                              in_chans=in_chans, num_classes=num_classes, skip_mode="zero", qkv_bias=qkv_bias)
        grid = self.patch_embed.grid_size
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim, **dd))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim, **dd))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth, device="cpu")]
        self.blocks = nn.ModuleList([
            SPViTSearchBlock(embed_dim, num_heads, grid, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                             proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i], theta=theta,
                             alpha=alpha, norm_layer=norm_layer, act_layer=act_layer, **dd)
            for i in range(depth)])
        self.norm = norm_layer(embed_dim, **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.init_step_counter(_GATE_STEP, device=device)
        self.last_gates: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.init_weights()

    def init_weights(self) -> None:
        """The original's initialisation (trunc-normal linear weights and embeddings, zero biases)."""
        if self.pos_embed.is_meta:
            return
        trunc_normal_(self.pos_embed, std=.02)
        trunc_normal_(self.cls_token, std=.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # timm API (no_weight_decay, group_matcher, get_classifier, reset_classifier, ...): ViTApiMixin

    def arch_parameters(self) -> list[nn.Parameter]:
        """The gate thresholds (every parameter whose name contains ``thresholds``: the original's second
        optimiser, ``add_weight_decay_2ops``)."""
        return [p for n, p in self.named_parameters() if "thresholds" in n]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other parameter (``head_probs`` included, as in the original); with names:
        :meth:`named_weight_parameters`."""
        return [p for _, p in self.named_weight_parameters()]

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of every parameter :meth:`weight_parameters` returns."""
        return [(n, p) for n, p in self.named_parameters() if "thresholds" not in n]

    # --------------------------------------------------------------------------------------------- gates
    def gate_probs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the keep probabilities ``(attention (3,), FFN (hidden,))``."""
        return [(b.attn.kernel_probs(), b.mlp.ffn_probs()) for b in self.blocks]

    def draw_gate_noise(self, generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Logistic noise for every gate, drawn in the original's call order (attention of block 0, FFN of
        block 0, attention of block 1, ...)."""
        ref = self.cls_token
        return [(logistic_noise((3,), generator, dtype=ref.dtype, device=ref.device),
                 logistic_noise((b.mlp.hidden_features,), generator, dtype=ref.dtype, device=ref.device))
                for b in self.blocks]

    def gates(self, noise: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None
              ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The gates of one forward pass, per layer ``(cumulative op gates (3,), FFN mask (hidden,))``.

        Training mode: straight-through samples from ``noise`` (default: drawn from
        ``generator_for(gate_seed, step)``, which advances ``step``). Eval mode: the decisions (``noise`` must be
        ``None``).
        """
        if not self.training:
            if noise is not None:
                raise ValueError("gate noise only applies in training mode; call model.train() first")
            return [(ordered_op_gates(eval_gate(pa)), eval_gate(pf)) for pa, pf in self.gate_probs()]
        if noise is None:
            noise = self.draw_gate_noise(generator_for(self.gate_seed, self.advance_step()))
        if len(noise) != len(self.blocks):
            raise ValueError(f"gate noise has {len(noise)} layers but the model has {len(self.blocks)} blocks")
        return [(ordered_op_gates(straight_through_bernoulli(pa, na, GATE_TEMPERATURE)),
                 straight_through_bernoulli(pf, nf, GATE_TEMPERATURE))
                for (pa, pf), (na, nf) in zip(self.gate_probs(), noise)]

    @property
    def arch_space(self) -> SPViTSpace:
        """Every arch :meth:`extract` takes (any op per layer, any kept FFN units): what a latency table of this
        network is built over (``timm-nas latency build --model spvit_search_deit_small``). Not searched: the
        search trains the gates."""
        return SPViTSpace(len(self.blocks), self.blocks[0].mlp.hidden_features)

    def derive_arch(self) -> SPViTArch:
        """The architecture the gates choose (eval decisions): one op per layer and the kept FFN units."""
        with torch.no_grad():
            ops, kept = [], []
            for pa, pf in self.gate_probs():
                ops.append(op_from_indicators(torch.cumprod(eval_gate(pa), 0).tolist()))
                kept.append(tuple(int(i) for i in torch.nonzero(pf > 0.5).flatten().tolist()))
        return SPViTArch(tuple(ops), tuple(kept))

    def last_arch(self) -> SPViTArch | None:
        """The architecture the most recent forward ran (in training mode, the sampled one)."""
        if self.last_gates is None:
            return None
        ops = [op_from_indicators((g > 0.5).float().tolist()) for g, _ in self.last_gates]
        kept = [tuple(int(i) for i in torch.nonzero(m > 0.5).flatten().tolist()) for _, m in self.last_gates]
        return SPViTArch(tuple(ops), tuple(kept))

    # --------------------------------------------------------------------------------------- complexity
    def flops_table(self) -> dict[str, int]:
        """The closed-form per-op costs (multiply-accumulates) of the original's ``SPVisionTransformer.flops``.

        Keys: ``conv_1x1``, ``conv_3x3``, ``msa`` (one attention layer), ``ffn_unit`` (one FFN hidden unit:
        ``2 * N * D``, patch tokens only, no biases) and ``fixed`` (patch embedding, head and 2 LayerNorms per
        block).
        """
        H, W = self.patch_embed.grid_size
        N, D = H * W, self.embed_dim
        d = D // self.num_heads
        ph, pw = self.patch_embed.patch_size
        fixed = N * D * self.in_chans * ph * pw + self.num_features * self.num_classes
        fixed += len(self.blocks) * D * (N + 1) * 2
        return dict(
            conv_1x1=(1 * D * d + d * D) * N,
            conv_3x3=(3 * 3 * D * d + d * D) * N,
            msa=4 * (N + 1) * D ** 2 + 2 * D * (N + 1) ** 2,
            ffn_unit=2 * N * D,
            fixed=fixed,
        )

    def complexity(self) -> dict[str, torch.Tensor]:
        """The FLOPs of the architecture the gates choose, differentiable in the thresholds.

        The original's ``SPVisionTransformer.flops`` with its deterministic straight-through indicators (forward
        value: the eval decision; gradient: that of ``sigmoid(sigmoid(theta) - 0.5)``), in the same operation
        order. Returns ``flops`` (total), ``att_flops`` and ``ffn_flops`` (scalar tensors, multiply-accumulates).
        """
        H, W = self.patch_embed.grid_size
        t = self.flops_table()
        ph, pw = self.patch_embed.patch_size
        D = self.embed_dim
        ref = self.cls_token
        conv_1x1 = torch.tensor(t["conv_1x1"], device=ref.device)
        conv_3x3 = torch.tensor(t["conv_3x3"], device=ref.device)
        msa = torch.tensor(t["msa"], device=ref.device)
        flops: Any = H * W * D * self.in_chans * ph * pw
        flops += self.num_features * self.num_classes
        att_flops: Any = 0
        ffn_flops: Any = 0
        for pa, pf in self.gate_probs():
            g = torch.cumprod(deterministic_ste(pa), dim=0)
            block_att = g[0] * conv_1x1 + g[1] * (conv_3x3 - conv_1x1) + g[2] * (msa - conv_3x3)
            att_flops = att_flops + block_att
            block_mlp = 2 * H * W * D * torch.sum(deterministic_ste(pf))
            ffn_flops = ffn_flops + block_mlp
            flops = flops + D * (H * W + 1) * 2
            flops = flops + (block_att + block_mlp)
        return dict(flops=flops, att_flops=att_flops, ffn_flops=ffn_flops)

    def latency(self, table: Any) -> torch.Tensor:
        """The predicted latency (ms) of the architecture the gates choose, on the device ``table`` (a
        :class:`~timm_nas.cost.LatencyTable` of this network, ``timm-nas latency build --model spvit_search_deit_*``)
        was measured on; differentiable in the thresholds as :meth:`complexity` is.

        Per layer: the attention op's entry through the cumulative straight-through indicators (``skip`` plus
        each step up: 1x1 conv, 3x3 conv, MSA), and the FFN's at its number of kept units, interpolated linearly
        between the measured widths; plus the rest, calibrated. At the eval decisions it equals
        ``table.predict(self.derive_arch())`` up to float rounding.
        """
        t = table.spvit_terms()
        ref = self.cls_token
        dd = {"dtype": ref.dtype, "device": ref.device}
        attn = torch.tensor([t["attn"][op] for op in SPVIT_OPS], **dd)
        steps = attn[1:] - attn[:-1]  # skip -> 1x1 -> 3x3 -> MSA
        grid = torch.tensor(t["ffn_grid"], **dd)
        ffn = torch.tensor(t["ffn_ms"], **dd)
        total: Any = torch.tensor(t["rest"], **dd)
        for pa, pf in self.gate_probs():
            g = torch.cumprod(deterministic_ste(pa), dim=0)
            kept = torch.sum(deterministic_ste(pf))
            j = torch.clamp(torch.searchsorted(grid, kept.detach(), right=True) - 1, 0, len(grid) - 2)
            frac = (kept - grid[j]) / (grid[j + 1] - grid[j])
            total = total + attn[0] + torch.sum(g * steps) + ffn[j] + frac * (ffn[j + 1] - ffn[j])
        return t["scale"] * total + t["intercept"]

    def latency_loss(self, table: Any, target_latency: float, loss_lambda: float | None = None) -> torch.Tensor:
        """The complexity loss with a latency target: ``loss_lambda * ((target_latency - latency) * k) ** 2``, where
        ``k`` is the unpruned network's GFLOPs per predicted millisecond, so the error is weighed as the FLOPs
        loss weighs the same relative error (the released ``loss_lambda`` values carry over).

        Args:
            table: the network's latency table (:meth:`latency`).
            target_latency: milliseconds.
            loss_lambda: weight (default: the model's).
        """
        lam = self.loss_lambda if loss_lambda is None else loss_lambda
        if lam is None:
            raise ValueError("the latency loss needs loss_lambda: pass it here or build the model with it")
        t = self.flops_table()
        hidden = self.blocks[0].mlp.hidden_features
        full_gflops = (t["fixed"] + len(self.blocks) * (t["msa"] + t["ffn_unit"] * hidden)) / 1e9
        k = full_gflops / table.predict(self.arch_space.largest())
        latency = self.latency(table)
        return ((target_latency - latency) * k) ** 2 * lam

    def complexity_loss(self, target_flops: float | None = None, loss_lambda: float | None = None) -> torch.Tensor:
        """``loss_lambda * (target_flops - flops / 1e9) ** 2`` (the original's ``calculate_bops_loss``).

        Args:
            target_flops: GFLOPs target (default: the model's ``target_flops``).
            loss_lambda: weight (default: the model's ``loss_lambda``).
        """
        target = self.target_flops if target_flops is None else target_flops
        lam = self.loss_lambda if loss_lambda is None else loss_lambda
        if target is None or lam is None:
            raise ValueError("the complexity loss needs target_flops (GFLOPs) and loss_lambda: pass them here or "
                             "build the model with them (spvit_search_deit_tiny/_small/_base have the original's)")
        flops = self.complexity()["flops"]
        return (torch.tensor(target, device=flops.device) - flops / 1e9) ** 2 * lam

    # -------------------------------------------------------------------------------------------- forward
    def forward_features(self, x: torch.Tensor,
                         gate_noise: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """Tokens after the final norm, ``(B, 1 + N, D)``; ``gate_noise`` injects the sampling noise
        (training mode only, see :meth:`gates`)."""
        gates = self.gates(gate_noise)
        self.last_gates = [(a.detach(), m.detach()) for a, m in gates]
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        for blk, (attn_gates, ffn_mask) in zip(self.blocks, gates):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, attn_gates, ffn_mask)
            else:
                x = blk(x, attn_gates, ffn_mask)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor,
                gate_noise: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, gate_noise))

    # -------------------------------------------------------------------------------------------- extract
    def pruned_model_args(self, arch: SPViTArch | Mapping[str, Any] | None = None,
                          skip_mode: str = "zero") -> dict[str, Any]:
        """Deprecated spelling of :meth:`static_model_args`."""
        warnings.warn("SPViTSearchDeiT.pruned_model_args() is deprecated; use static_model_args() (one name across "
                      "families)", DeprecationWarning, stacklevel=2)
        return self.static_model_args(arch, skip_mode)

    def static_model_args(self, arch: SPViTArch | Mapping[str, Any] | None = None,
                          skip_mode: str = "zero") -> dict[str, Any]:
        """JSON-native ``spvit_deit`` arguments of the pruned model of ``arch`` (default: :meth:`derive_arch`)."""
        arch = self.derive_arch() if arch is None else SPViTArch.resolve(arch)
        img_size = self._init_args["img_size"]
        patch_size = self._init_args["patch_size"]
        return dict(
            arch=arch.to_dict(), skip_mode=skip_mode,
            img_size=list(img_size) if isinstance(img_size, (tuple, list)) else img_size,
            patch_size=list(patch_size) if isinstance(patch_size, (tuple, list)) else patch_size,
            in_chans=self.in_chans, num_classes=self.num_classes, global_pool=self.global_pool or "",
            fc_norm=False,  # the search network normalises before pooling, whatever the pooling
            embed_dim=self.embed_dim, depth=len(self.blocks), num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
            qkv_bias=self.qkv_bias)

    def extract(self, arch: SPViTArch | Mapping[str, Any] | None = None, skip_mode: str = "zero") -> "SPViTDeiT":
        """A pruned :class:`SPViTDeiT` with this network's weights (kernels materialised, FFNs sliced).

        With the derived arch and ``skip_mode='zero'`` its eval outputs equal this network's (float rounding).
        The pruned model records its constructor arguments (``timm.models._input.update_model_args``), so an
        exported ``config.json`` rebuilds it.

        Args:
            arch: the architecture (default: :meth:`derive_arch`).
            skip_mode: ``'zero'`` (the search network's skip) or ``'original'`` (the released models').
        """
        from timm.models._input import update_model_args

        args = self.static_model_args(arch, skip_mode)
        ref = self.cls_token
        model = _create_spvit_deit("spvit_deit", pretrained=False, device=ref.device, dtype=ref.dtype, **args)
        update_model_args(model, **args)
        model.load_state_dict(checkpoint_filter_fn(self.state_dict(), model), strict=True)
        model.train(self.training)
        return model


# -------------------------------------------------------------------------------------------- pruned model
class SPViTDeiT(VisionTransformer):
    """A pruned SPViT DeiT: timm's ``VisionTransformer`` with per-layer ops and FFN widths from an arch.

    Args:
        arch: the :class:`SPViTArch` (or its dict); default: the unpruned DeiT (MSA everywhere, full FFNs).
        skip_mode: ``'original'`` (skip layers compute ``x + norm1(x)``, as the released checkpoints were trained)
            or ``'zero'`` (``x + 0``, as in the search network).
        img_size, patch_size, in_chans, num_classes, global_pool, embed_dim, depth, num_heads, mlp_ratio,
        qkv_bias, drop_rate, pos_drop_rate, proj_drop_rate, attn_drop_rate, drop_path_rate, fc_norm,
        weight_init, norm_layer, act_layer: as timm's ``VisionTransformer`` (``mlp_ratio`` only sets the width
        the arch's ``ffn_kept`` indices refer to).
        dynamic_img_size, dynamic_img_pad: as timm's ``VisionTransformer`` (any input size, the position
            embedding resampled per input); the conv layers take each input's patch grid from the patch embedding.
    """

    def __init__(
            self,
            arch: SPViTArch | Mapping[str, Any] | None = None,
            skip_mode: str | None = None,
            img_size: int | tuple[int, int] = 224,
            patch_size: int | tuple[int, int] = 16,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: Literal["", "avg", "avgmax", "max", "token"] = "token",
            embed_dim: int = 768,
            depth: int = 12,
            num_heads: int = 12,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            pos_drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            fc_norm: Optional[bool] = None,
            weight_init: Literal["skip", "reset", "jax", "jax_nlhb", "moco", ""] = "",
            norm_layer: Any = None,
            act_layer: Any = None,
            dynamic_img_size: bool = False,
            dynamic_img_pad: bool = False,
            device: torch.device | str | None = None,
            dtype: torch.dtype | None = None,
    ) -> None:
        skip_mode = "original" if skip_mode is None else skip_mode
        if skip_mode not in SKIP_MODES:
            raise ValueError(f"skip_mode={skip_mode!r} is not allowed; allowed values: {list(SKIP_MODES)}")
        hidden = int(embed_dim * mlp_ratio)
        arch = SPViTArch.full(depth, hidden) if arch is None else SPViTArch.resolve(arch)
        arch.check_fits(depth, hidden)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        img, patch = to_2tuple(img_size), to_2tuple(patch_size)
        grid = (img[0] // patch[0], img[1] // patch[1])
        super().__init__(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
            global_pool=global_pool, embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias, fc_norm=fc_norm, drop_rate=drop_rate, pos_drop_rate=pos_drop_rate,
            proj_drop_rate=proj_drop_rate, attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
            weight_init=weight_init, norm_layer=norm_layer, act_layer=act_layer,
            block_fn=partial(_pruned_block, arch=arch, skip_mode=skip_mode, grid_size=grid),  # type: ignore[arg-type]
            dynamic_img_size=dynamic_img_size, dynamic_img_pad=dynamic_img_pad, device=device, dtype=dtype)
        self.arch = arch
        self.skip_mode = skip_mode
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        # The cost formulas' shape arguments (timm_nas.cost.model_cost).
        self.cost_args = dict(embed_dim=embed_dim, num_heads=num_heads, **_input_cost_args(self.patch_embed),
                              in_chans=in_chans, num_classes=num_classes, skip_mode=skip_mode, qkv_bias=qkv_bias)
        self._sync_grid()
        if dynamic_img_size:  # 3x3 conv layers read each input's grid from the patch embedding
            box = _GridBox()
            convs = [blk.attn for blk in self.blocks if isinstance(getattr(blk, "attn", None), BConv)]
            for conv in convs:
                conv.use_dynamic_grid(box)
            if convs:
                self.patch_embed.register_forward_hook(_RecordGrid(box))

    def _sync_grid(self) -> None:
        for blk in self.blocks:
            attn = getattr(blk, "attn", None)
            if isinstance(attn, BConv):
                attn.grid_size = tuple(self.patch_embed.grid_size)

    def set_input_size(self, img_size: Optional[tuple[int, int]] = None,
                       patch_size: Optional[tuple[int, int]] = None) -> None:
        """timm's resize (position embedding resampled); the conv layers follow the new patch grid."""
        if patch_size is not None and any(isinstance(getattr(b, "attn", None), BConv) for b in self.blocks):
            raise ValueError("changing the patch size of a model with conv layers would change what the conv "
                             "kernels see; only img_size can change")
        super().set_input_size(img_size=img_size, patch_size=patch_size)
        self._sync_grid()
        self.cost_args.update(_input_cost_args(self.patch_embed))

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """timm's head reset; ``cost_args`` follows."""
        super().reset_classifier(num_classes, global_pool)
        self.cost_args["num_classes"] = num_classes

    def load_pretrained(self, checkpoint_path: str, prefix: str = "") -> None:
        """Load an original SPViT checkpoint file (``.pth`` read with ``weights_only=True`` and an allow-list, or
        ``.safetensors``) through :func:`checkpoint_filter_fn` (used for the authors' release files)."""
        from .._checkpoint import load_checkpoint_file, unwrap_state_dict

        state_dict = checkpoint_filter_fn(unwrap_state_dict(load_checkpoint_file(checkpoint_path)), self)
        own = self.state_dict()
        for key in ("head.weight", "head.bias"):
            if key in state_dict and (key not in own or state_dict[key].shape != own[key].shape):
                _logger.info("%s: checkpoint head %s does not match num_classes=%d; keeping a new head",
                             checkpoint_path, tuple(state_dict[key].shape), self.num_classes)
                state_dict.pop(key)
                if key in own:
                    state_dict[key] = own[key]
        weight = state_dict.get("patch_embed.proj.weight")
        if weight is not None and weight.shape[1] != self.in_chans:
            state_dict["patch_embed.proj.weight"] = adapt_input_conv(self.in_chans, weight)
        self.load_state_dict(state_dict, strict=True)


# --------------------------------------------------------------------------------------------- conversions
def _unwrap(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict"):
        inner = state_dict.get(key) if isinstance(state_dict, Mapping) else None
        if isinstance(inner, Mapping):
            state_dict = inner
            break
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def _depth_of(state_dict: Mapping[str, Any]) -> int:
    blocks = {int(k.split(".")[1]) for k in state_dict if k.startswith("blocks.")}
    if not blocks:
        raise ValueError("the state dict has no 'blocks.<i>.' entries; is it a DeiT / SPViT checkpoint?")
    return max(blocks) + 1


def derive_arch_from_state_dict(state_dict: Mapping[str, Any], ffn_from: str = "mask") -> SPViTArch:
    """The architecture stored in an original-layout search checkpoint (ours or the authors').

    Ops: the eval decisions of ``blocks.i.attn.kernel_thresholds`` (what the original prints at evaluation and
    the authors pasted into ``assigned_indicators``).

    Args:
        state_dict: a search checkpoint (optionally under ``'model'``).
        ffn_from: ``'mask'`` (the saved ``assigned_indicator_index`` buffers, what the original's fine-tuning
            reads) or ``'thresholds'`` (decisions of ``ffn_thresholds``).
    """
    if ffn_from not in ("mask", "thresholds"):
        raise ValueError(f"ffn_from={ffn_from!r} is not allowed; allowed values: ['mask', 'thresholds']")
    sd = _unwrap(state_dict)
    ops, kept = [], []
    for i in range(_depth_of(sd)):
        p = f"blocks.{i}."
        try:
            theta = sd[p + "attn.kernel_thresholds"]
            ffn = sd[p + ("mlp.assigned_indicator_index" if ffn_from == "mask" else "mlp.ffn_thresholds")]
        except KeyError as e:
            raise ValueError(f"not a search checkpoint: {e.args[0]!r} is missing") from None
        ops.append(op_from_indicators(torch.cumprod(eval_gate(torch.sigmoid(theta.float())), 0).tolist()))
        keep = ffn != 0 if ffn_from == "mask" else torch.sigmoid(ffn.float()) > 0.5
        kept.append(tuple(int(j) for j in torch.nonzero(keep).flatten().tolist()))
    return SPViTArch(tuple(ops), tuple(kept))


def _attn_keys(op: str) -> tuple[str, ...]:
    """Attention parameters of the original fine-tune layout, in its state-dict order."""
    if op == "skip":
        return ()
    bn = [f"bn_{_kernel_size(op)}x{_kernel_size(op)}.{f}" for f in _BN_FIELDS]
    linear = [f"{m}.{f}" for m in ("v", "proj") for f in ("weight", "bias")]
    if op == "msa":
        return tuple(["qk.weight", "qk.bias"] + linear)
    return tuple(["head_probs"] + bn + linear)


def search_to_finetune_state_dict(state_dict: Mapping[str, Any], arch: SPViTArch | Mapping[str, Any] | None = None
                                  ) -> OrderedDict[str, torch.Tensor]:
    """The original's search -> fine-tune conversion (``main_pruning.py``: ``utils.prune_ffn`` then a load into
    ``SPVisionTransformer(msa_indicators=..., ffn_indicators=...)``), as a pure function.

    Keeps each layer's parameters of its op (conv layers: ``head_probs``, ``v``, ``proj`` and that op's BN; MSA:
    ``qk``, ``v``, ``proj``; skip: none), gathers the kept FFN units and drops the gates.

    Args:
        state_dict: a search checkpoint in the original layout (ours or the authors').
        arch: the architecture (default: :func:`derive_arch_from_state_dict`, FFN units from the saved masks).

    Returns:
        The fine-tune state dict, key for key the original's (``blocks.i.attn.qk.*``, ``attn.head_probs``, ...).
    """
    sd = _unwrap(state_dict)
    arch = derive_arch_from_state_dict(sd) if arch is None else SPViTArch.from_dict(arch)
    depth = _depth_of(sd)
    if arch.depth != depth:
        raise ValueError(f"the arch has {arch.depth} layers but the checkpoint has {depth} blocks")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"):
        out[key] = sd[key]
    for i, (op, kept) in enumerate(zip(arch.ops, arch.ffn_kept)):
        p = f"blocks.{i}."
        out[p + "norm1.weight"], out[p + "norm1.bias"] = sd[p + "norm1.weight"], sd[p + "norm1.bias"]
        for k in _attn_keys(op):
            out[p + "attn." + k] = sd[p + "attn." + k]
        out[p + "norm2.weight"], out[p + "norm2.bias"] = sd[p + "norm2.weight"], sd[p + "norm2.bias"]
        index = torch.tensor(kept, dtype=torch.long)
        out[p + "mlp.fc1.weight"] = sd[p + "mlp.fc1.weight"].index_select(0, index)
        out[p + "mlp.fc1.bias"] = sd[p + "mlp.fc1.bias"].index_select(0, index)
        out[p + "mlp.fc2.weight"] = sd[p + "mlp.fc2.weight"].index_select(1, index)
        out[p + "mlp.fc2.bias"] = sd[p + "mlp.fc2.bias"]
    for key in ("norm.weight", "norm.bias", "head.weight", "head.bias"):
        if key in sd:
            out[key] = sd[key]
    return out


def to_param_opt_layout(state_dict: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Map a :class:`SPViTDeiT` state dict onto the authors' optimised layout (``post_training_optimize_checkpoint.py``
    output): ``attn.qkv`` splits into ``attn.qk`` (first 2D rows) and ``attn.v`` (last D rows); every other key
    (``attn.bconv.{0,1,3}.*`` included) is the same."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in state_dict.items():
        if k.endswith("attn.qkv.weight") or k.endswith("attn.qkv.bias"):
            dim = v.shape[0] // 3
            out[k.replace("attn.qkv.", "attn.qk.")] = v[:2 * dim]
            out[k.replace("attn.qkv.", "attn.v.")] = v[2 * dim:]
        else:
            out[k] = v
    return out


class _Taker:
    """Hands out the entries of a state dict and remembers what was used, so leftovers can be reported."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        self.sd = state_dict
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.sd

    def take(self, key: str) -> torch.Tensor:
        if key not in self.sd:
            raise KeyError(key)
        self.used.add(key)
        return self.sd[key]

    def drop(self, *keys: str) -> None:
        self.used.update(k for k in keys if k in self.sd)

    def leftover(self) -> list[str]:
        return sorted(set(self.sd) - self.used)


def _qkv(t: _Taker, p: str, field: str) -> torch.Tensor:
    if t.has(p + f"attn.qkv.{field}"):
        return t.take(p + f"attn.qkv.{field}")
    return torch.cat([t.take(p + f"attn.qk.{field}"), t.take(p + f"attn.v.{field}")], dim=0)


def _v(t: _Taker, p: str, field: str) -> torch.Tensor:
    if t.has(p + f"attn.v.{field}"):
        return t.take(p + f"attn.v.{field}")
    qkv = t.take(p + f"attn.qkv.{field}")
    return qkv[2 * qkv.shape[0] // 3:]


def _conv_from_attention(t: _Taker, p: str, op: str, dim: int, num_heads: int, alpha: float,
                         like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Materialise a BConv from attention weights (fine-tune / search layout: ``head_probs``, ``v``, ``proj``,
    ``bn_*``; DeiT layout: ``qkv``, ``proj``, with the original fine-tune initialisation: uniform head
    assignment (``head_probs`` = ones) and a fresh BN)."""
    k = _kernel_size(op)
    v_weight, proj_weight = _v(t, p, "weight"), t.take(p + "attn.proj.weight")
    has_v_bias = t.has(p + "attn.v.bias") or t.has(p + "attn.qkv.bias")
    v_bias = _v(t, p, "bias") if has_v_bias else None
    if t.has(p + "attn.head_probs"):
        head_probs = t.take(p + "attn.head_probs")
    else:
        head_probs = torch.ones(num_heads, KERNEL_POSITIONS, dtype=v_weight.dtype)
    w_in, b_in, w_out = bconv_weights(v_weight, v_bias, proj_weight, head_probs, k, alpha)
    out = {p + "attn.bconv.0.weight": w_in, p + "attn.bconv.0.bias": b_in, p + "attn.bconv.3.weight": w_out,
           p + "attn.bconv.3.bias": t.take(p + "attn.proj.bias")}
    bn = p + f"attn.bn_{k}x{k}."
    head_dim = dim // num_heads
    fresh = dict(weight=torch.ones(head_dim), bias=torch.zeros(head_dim), running_mean=torch.zeros(head_dim),
                 running_var=torch.ones(head_dim), num_batches_tracked=torch.zeros((), dtype=torch.long))
    for f in _BN_FIELDS:
        value = t.take(bn + f) if t.has(bn + f) else fresh[f]
        out[p + f"attn.bconv.1.{f}"] = value if f == "num_batches_tracked" else value.to(like.dtype)
    return out


def _ffn(t: _Taker, p: str, kept: tuple[int, ...]) -> dict[str, torch.Tensor]:
    w1, b1, w2, b2 = (t.take(p + k) for k in ("mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"))
    if w1.shape[0] != len(kept):
        if kept and kept[-1] >= w1.shape[0]:
            raise ValueError(f"{p}mlp.fc1 has {w1.shape[0]} hidden units; the arch keeps unit {kept[-1]}")
        index = torch.tensor(kept, dtype=torch.long)
        w1, b1, w2 = w1.index_select(0, index), b1.index_select(0, index), w2.index_select(1, index)
    return {p + "mlp.fc1.weight": w1, p + "mlp.fc1.bias": b1, p + "mlp.fc2.weight": w2, p + "mlp.fc2.bias": b2}


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: SPViTDeiT | SPViTSearchDeiT,
                         alpha: float = SPVIT_ALPHA) -> dict[str, torch.Tensor]:
    """Convert a checkpoint to ``model``'s layout: the family's one filter, dispatching on the target model.

    For an :class:`SPViTSearchDeiT` it is :func:`search_checkpoint_filter_fn` (timm / facebook DeiT weights or our
    search layout). For a pruned :class:`SPViTDeiT`, the conversion to its arch (see the key map above):

    Accepts, layer by layer: our layout; the authors' fine-tune layout (kernels materialised here); their
    optimised layout; an original search checkpoint (FFNs sliced with the arch's ``ffn_kept``); timm / facebook
    DeiT weights (the original fine-tune initialisation). Weights a layer's op does not use (the other ops', the
    gates) are dropped; any other leftover key raises.

    Args:
        state_dict: the checkpoint (optionally under ``'model'`` / ``'state_dict'``).
        model: the target model (its arch, ``skip_mode``, width and head count decide the conversion).
        alpha: head-assignment temperature of the source (1e-2 for DeiT).

    Raises:
        ValueError: naming the keys no layer could use.
    """
    if isinstance(model, SPViTSearchDeiT):
        return search_checkpoint_filter_fn(state_dict, model)
    t = _Taker(_unwrap(state_dict))
    arch: SPViTArch = model.arch
    dim, num_heads = model.embed_dim, model.num_heads
    like = model.cls_token
    out: dict[str, torch.Tensor] = {}
    for key in ("cls_token", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias",
                "head.weight", "head.bias"):
        if t.has(key):
            out[key] = t.take(key)
    if t.has("pos_embed"):
        pos = t.take("pos_embed")
        if model.pos_embed is not None and pos.shape != model.pos_embed.shape:
            pos = resample_abs_pos_embed(pos, new_size=model.patch_embed.grid_size,
                                         num_prefix_tokens=model.num_prefix_tokens, verbose=True)
        out["pos_embed"] = pos
    t.drop(_GATE_STEP)
    for i, (op, kept) in enumerate(zip(arch.ops, arch.ffn_kept)):
        p = f"blocks.{i}."
        attn_keys = [k for k in t.sd if k.startswith(p + "attn.")]
        if op == "skip" and model.skip_mode == "zero":
            t.drop(p + "norm1.weight", p + "norm1.bias")  # x + 0 never reads norm1
        else:
            out[p + "norm1.weight"], out[p + "norm1.bias"] = t.take(p + "norm1.weight"), t.take(p + "norm1.bias")
        if op == "msa":
            out[p + "attn.qkv.weight"] = _qkv(t, p, "weight")
            if t.has(p + "attn.qkv.bias") or t.has(p + "attn.qk.bias"):
                out[p + "attn.qkv.bias"] = _qkv(t, p, "bias")
            out[p + "attn.proj.weight"], out[p + "attn.proj.bias"] = (t.take(p + "attn.proj.weight"),
                                                                      t.take(p + "attn.proj.bias"))
        elif op in ("bconv1x1", "bconv3x3"):
            if t.has(p + "attn.bconv.0.weight"):
                for k in [k for k in attn_keys if k.startswith(p + "attn.bconv.")]:
                    out[k] = t.take(k)
            else:
                out.update(_conv_from_attention(t, p, op, dim, num_heads, alpha, like))
        # whatever else this layer's attention held belongs to the ops it did not become (or to the gates)
        t.drop(*attn_keys)
        out[p + "norm2.weight"], out[p + "norm2.bias"] = t.take(p + "norm2.weight"), t.take(p + "norm2.bias")
        out.update(_ffn(t, p, kept))
        t.drop(*(p + "mlp." + k for k in _SEARCH_ONLY_MLP))
    leftover = t.leftover()
    if leftover:
        raise ValueError(f"checkpoint keys no layer of this SPViT model can use: {leftover[:10]}"
                         f"{' ...' if len(leftover) > 10 else ''} (depth {arch.depth}; is it a DeiT / SPViT "
                         "checkpoint of the same depth?)")
    return out


def search_checkpoint_filter_fn(state_dict: Mapping[str, Any], model: SPViTSearchDeiT) -> dict[str, torch.Tensor]:
    """Convert a checkpoint to :class:`SPViTSearchDeiT`'s layout (the original's search layout).

    Accepts an original / our search checkpoint (unchanged, ``gate_step`` added when absent) and timm / facebook
    DeiT weights: ``attn.qkv`` is split into ``attn.qk`` (first 2D rows) and ``attn.v`` (last D rows), as the
    original's ``main_pruning.py`` does; the search-only state (gate thresholds, ``head_probs``, the conv BNs,
    the FFN mask buffers, the step) starts from the model's own initialisation (``theta``, ones, fresh BN,
    zeros), which the original gets by loading DeiT weights with ``strict=False``.

    Raises:
        ValueError: naming checkpoint keys the model has no place for.
    """
    t = _Taker(_unwrap(state_dict))
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    search_only = ("attn.kernel_thresholds", "attn.head_probs", "attn.bn_1x1.", "attn.bn_3x3.",
                   "mlp.ffn_thresholds", "mlp.assigned_indicator_index")
    for key, value in own.items():
        if t.has(key):
            v = t.take(key)
            if key == "pos_embed" and v.shape != value.shape:
                v = resample_abs_pos_embed(v, new_size=model.patch_embed.grid_size, num_prefix_tokens=1, verbose=True)
            out[key] = v
        elif ".attn.qk." in key or ".attn.v." in key:
            qkv_key = key.replace(".attn.qk.", ".attn.qkv.").replace(".attn.v.", ".attn.qkv.")
            if t.has(qkv_key):
                qkv = t.take(qkv_key)
                n = qkv.shape[0] // 3
                out[key] = qkv[:2 * n] if ".attn.qk." in key else qkv[2 * n:]
        elif key == _GATE_STEP or any(s in key for s in search_only):
            out[key] = value
    leftover = t.leftover()
    if leftover:
        raise ValueError(f"checkpoint keys the SPViT search model has no place for: {leftover[:10]}"
                         f"{' ...' if len(leftover) > 10 else ''}")
    return out


# ------------------------------------------------------------------------------------------------- configs
def _cfg(url: str = "", **kwargs: Any) -> dict[str, Any]:
    # Evaluation transform of the original (DeiT's datasets.build_transform): resize 256 bicubic, centre crop 224.
    return {
        "url": url, "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": None,
        "crop_pct": 0.875, "interpolation": "bicubic", "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj", "classifier": "head", "license": "apache-2.0",
        **kwargs,
    }


_RELEASE = "https://github.com/ziplab/SPViT/releases/download/1.0/"
_SPVIT = dict(paper_ids="arXiv:2111.11802", origin_url="https://github.com/ziplab/SPViT")
# DeiT (facebookresearch/deit, Apache-2.0): the unpruned networks the searches start from
_DEIT = dict(paper_ids="arXiv:2012.12877", origin_url="https://github.com/facebookresearch/deit")


def _deit_init(size: str, file: str) -> dict[str, dict[str, Any]]:
    """The search network's initialisation: timm's DeiT weights, NOT an SPViT model. The honest tag
    ``fb_in1k_deit_init`` is the default; ``fb_in1k`` is the earlier name, kept so code calling it keeps loading."""
    cfg = _cfg(hf_hub_id=f"timm/deit_{size}_patch16_224.fb_in1k", url="https://dl.fbaipublicfiles.com/deit/" + file,
               **_DEIT)
    return {f"spvit_search_deit_{size}.{tag}": dict(cfg) for tag in ("fb_in1k_deit_init", "fb_in1k")}


def _release_cfgs(name: str, file: str) -> dict[str, dict[str, Any]]:
    """The authors' fine-tuned release files (original layout, read by SPViTDeiT.load_pretrained): the
    source-prefixed tags ``ziplab_in1k`` / ``ziplab_dist_in1k`` (defaults first) and the earlier ``in1k`` /
    ``dist_in1k``, kept so code calling them keeps loading. ``dist``: hard distillation from RegNetY-160."""
    out = {}
    for tag, suffix in (("ziplab_in1k", ""), ("ziplab_dist_in1k", "_dist"), ("in1k", ""), ("dist_in1k", "_dist")):
        out[f"{name}.{tag}"] = _cfg(url=_RELEASE + file + suffix + ".pth", custom_load=True, **_SPVIT)
    return out


default_cfgs = generate_default_cfgs({
    # search networks start from timm's DeiT weights (converted by search_checkpoint_filter_fn)
    "spvit_search_deit.untrained": _cfg(**_SPVIT),
    **_deit_init("tiny", "deit_tiny_patch16_224-a1311bcf.pth"),
    **_deit_init("small", "deit_small_patch16_224-cd65a155.pth"),
    **_deit_init("base", "deit_base_patch16_224-b5f2ef4d.pth"),
    "spvit_deit.untrained": _cfg(**_SPVIT),
    **_release_cfgs("spvit_deit_tiny", "spvit_deit_ti_l200_t10"),
    **_release_cfgs("spvit_deit_small", "spvit_deit_sm_l30_t32"),
    **_release_cfgs("spvit_deit_base", "spvit_deit_bs_l008_t60"),
})


def _create_spvit_search_deit(variant: str, pretrained: bool = False, **kwargs: Any) -> SPViTSearchDeiT:
    if kwargs.get("features_only"):
        raise RuntimeError("features_only is not supported by the SPViT search network (its blocks mix gated ops): "
                           "take features from the pruned model, search_model.extract() or spvit_deit")
    return build_model(SPViTSearchDeiT, variant, pretrained,
                                pretrained_filter_fn=search_checkpoint_filter_fn, **kwargs)


def _create_spvit_deit(variant: str, pretrained: bool = False, record: Sequence[str] = (), **kwargs: Any
                       ) -> SPViTDeiT:
    """Build a pruned model; ``record`` names the entrypoint defaults to record as constructor arguments (the
    shape an exported ``config.json`` and the cost formulas need; an ``SPViTArch`` does not hold it)."""
    from timm.models._input import update_model_args

    out_indices = kwargs.pop("out_indices", 3)
    model = build_model(SPViTDeiT, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                 feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **kwargs)
    recorded = {k: kwargs[k] for k in record if k in kwargs}
    if "arch" in recorded:
        recorded["arch"] = SPViTArch.resolve(recorded["arch"]).to_dict()
    if recorded and isinstance(model, SPViTDeiT):  # not on a features_only wrapper
        update_model_args(model, **recorded)
    return model


def _released(name: str) -> dict[str, Any]:
    from ..registry import get_entry

    return get_entry("spvit", name)["model_args"]


# ------------------------------------------------------------------------------------------------ entrypoints
@register_model
def spvit_search_deit(pretrained: bool = False, **kwargs: Any) -> SPViTSearchDeiT:
    """SPViT search network on a DeiT of any shape (default: DeiT-Ti's shape; set ``target_flops`` and
    ``loss_lambda`` for the complexity loss)."""
    model_args = dict(_DEIT_ARGS["tiny"])
    return _create_spvit_search_deit("spvit_search_deit", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def spvit_search_deit_tiny(pretrained: bool = False, **kwargs: Any) -> SPViTSearchDeiT:
    """SPViT search network on DeiT-Ti, with the released search's target (1.0 GFLOPs) and loss weight (20)."""
    s = SEARCH_SETTINGS["tiny"]
    model_args = dict(_DEIT_ARGS["tiny"], target_flops=s["target_flops"], loss_lambda=s["loss_lambda"])
    return _create_spvit_search_deit("spvit_search_deit_tiny", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def spvit_search_deit_small(pretrained: bool = False, **kwargs: Any) -> SPViTSearchDeiT:
    """SPViT search network on DeiT-S, with the released search's target (3.2 GFLOPs) and loss weight (3.0)."""
    s = SEARCH_SETTINGS["small"]
    model_args = dict(_DEIT_ARGS["small"], target_flops=s["target_flops"], loss_lambda=s["loss_lambda"])
    return _create_spvit_search_deit("spvit_search_deit_small", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def spvit_search_deit_base(pretrained: bool = False, **kwargs: Any) -> SPViTSearchDeiT:
    """SPViT search network on DeiT-B, with the released search's target (6.0 GFLOPs) and loss weight (0.08)."""
    s = SEARCH_SETTINGS["base"]
    model_args = dict(_DEIT_ARGS["base"], target_flops=s["target_flops"], loss_lambda=s["loss_lambda"])
    return _create_spvit_search_deit("spvit_search_deit_base", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def spvit_deit(pretrained: bool = False, **kwargs: Any) -> SPViTDeiT:
    """A pruned SPViT DeiT of any ``arch`` (an :class:`SPViTArch`, its dict, the original's format, or a registry
    name such as ``'spvit_deit_small'``, which also brings that release's shape); default: SPViT-DeiT-Ti."""
    arch = kwargs.get("arch")
    model_args = _released(arch if isinstance(arch, str) and not arch.lstrip().startswith("{") else "spvit_deit_tiny")
    return _create_spvit_deit("spvit_deit", pretrained=pretrained, record=list(model_args),
                              **dict(model_args, **kwargs))


@register_model
def spvit_deit_tiny(pretrained: bool = False, **kwargs: Any) -> SPViTDeiT:
    """The released SPViT-DeiT-Ti (1.0 GFLOPs; 70.7 top-1, 73.2 with distillation)."""
    model_args = _released("spvit_deit_tiny")
    return _create_spvit_deit("spvit_deit_tiny", pretrained=pretrained, record=_SHAPE_ARGS,
                              **dict(model_args, **kwargs))


@register_model
def spvit_deit_small(pretrained: bool = False, **kwargs: Any) -> SPViTDeiT:
    """The released SPViT-DeiT-S (3.3 GFLOPs; 78.3 top-1, 80.3 with distillation)."""
    model_args = _released("spvit_deit_small")
    return _create_spvit_deit("spvit_deit_small", pretrained=pretrained, record=_SHAPE_ARGS,
                              **dict(model_args, **kwargs))


@register_model
def spvit_deit_base(pretrained: bool = False, **kwargs: Any) -> SPViTDeiT:
    """The released SPViT-DeiT-B (8.3 GFLOPs; 81.5 top-1, 82.4 with distillation)."""
    model_args = _released("spvit_deit_base")
    return _create_spvit_deit("spvit_deit_base", pretrained=pretrained, record=_SHAPE_ARGS,
                              **dict(model_args, **kwargs))


# ------------------------------------------------------------------------------------------ family declaration
FAMILY = register_family(Family(
    name="spvit",
    config=SPViTArch,
    space=None,  # the search is over the search network's gates, not a space of configs
    static_cls=SPViTDeiT,
    static_entrypoint="spvit_deit",
    weight_sharing_cls=SPViTSearchDeiT,
    weight_sharing_entrypoint="spvit_search_deit",
    weight_sharing_arg=None,
    checkpoint_filter=checkpoint_filter_fn,
    example_args=dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10),
    convert_models=("spvit_deit_tiny", "spvit_deit_small", "spvit_deit_base"),
    datasets=("imagenet-1k",),
))
