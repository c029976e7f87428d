"""SPViT unified attention: MSA, 1x1 / 3x3 bottleneck convolutions built from the MSA's weights, and a shortcut.

SPViT (He et al., TPAMI 2024, arXiv:2111.11802; ``SPViT_DeiT/models_pruning.py`` ``UnifiedAttention`` and
``post_training_optimize_checkpoint.py`` at ziplab/SPViT commit ae19b0d) shares weights between an attention
layer and two bottleneck convolutions (BConv). A softmax over heads (temperature ``alpha``) assigns a convex
combination of the heads to each of the 9 kernel positions ``k``; with ``W_v^h`` / ``b_v^h`` the value rows of
head ``h`` and ``W_o^h`` the matching projection columns:

* ``Wk = sum_h P[h, k] W_v^h`` (head_dim x dim), ``bk = sum_h P[h, k] b_v^h``, ``Ok = sum_h P[h, k] W_o^h``;
* 1x1 BConv: ``Conv1x1(W4, b4) -> BN -> ReLU -> Conv1x1(O4, proj.bias)`` (k = 4 is the centre);
* 3x3 BConv: ``Conv3x3({Wk}, sum_k bk, padding 1) -> BN -> ReLU -> Conv1x1(sum_k Ok, proj.bias)``; position
  ``k`` sits at kernel row ``k % 3``, column ``k // 3`` (the original's column-major ordering).

The class token is not convolved: a conv layer returns its input class token unchanged.

Here :func:`bconv_weights` materialises these kernels (the original's post-training optimisation, exactly);
:class:`UnifiedAttention` is the search layer (all three ops, mixed by the gates it is given);
:class:`BConv` is a pruned conv layer holding the materialised kernels; :class:`SkipAttention` is the pruned
shortcut of the original's fine-tuned models (it returns its input).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import use_fused_attn

from .spvit_gates import mix_ops

__all__ = [
    "SPVIT_ALPHA",
    "KERNEL_POSITIONS",
    "CENTER_POSITION",
    "head_assignment",
    "bconv_weights",
    "UnifiedAttention",
    "BConv",
    "SkipAttention",
]

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
        """Mix the three ops with cumulative gates ``(3,)`` (see :func:`timm_nas.layers.spvit_gates.mix_ops`)."""
        return mix_ops(gates, self.msa(x), self.bconv(x, MAX_KERNEL_SIZE), self.bconv(x, 1))


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
            H, W = self.grid_size
            y = F.conv2d(patches.transpose(1, 2).reshape(B, C, H, W), self.bconv[0].weight, self.bconv[0].bias,
                         padding=self.kernel_size // 2)  # (B, head_dim, H, W)
            y = y.flatten(2).transpose(1, 2)  # (B, N - 1, head_dim)
        d = y.shape[-1]
        # BatchNorm2d over (B x H x W) positions == over the B * (N - 1) token rows, seen as 1x1 images
        y = self.bconv[2](self.bconv[1](y.reshape(-1, d, 1, 1))).reshape(B, N - 1, d)
        y = F.linear(y, self.bconv[3].weight.flatten(1), self.bconv[3].bias)  # (B, N - 1, dim)
        return torch.cat([x[:, :1], y], dim=1)


class SkipAttention(nn.Module):
    """The original fine-tuned models' skip layer: returns its (normalised) input, so the block computes
    ``x + norm1(x)``. ``attn_mask`` / ``is_causal`` are ignored, as in :class:`BConv`."""

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        return x
