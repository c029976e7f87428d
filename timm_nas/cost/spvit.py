"""SPViT's analytic cost: exact parameters and multiply-accumulates of a pruned DeiT (``spvit_deit``).

Paper: He et al., "Pruning Self-attentions into Convolutional Layers in Single Path", IEEE TPAMI 2024
(arXiv:2111.11802). Original code: https://github.com/ziplab/SPViT (``SPViT_DeiT``).
"""
from __future__ import annotations

from typing import Sequence

from timm.layers import to_2tuple

from ..spaces.spvit import SPViTArch
from .analytic import register_cost

__all__ = ["spvit_params", "spvit_macs"]


def _kernel_size(op: str) -> int:
    """Kernel side of a bottleneck-convolution op (``bconv1x1`` / ``bconv3x3``)."""
    return 3 if op == "bconv3x3" else 1


def _cost_shape(embed_dim: int | None, num_heads: int | None, img_size: int | Sequence[int],
                patch_size: int | Sequence[int]) -> tuple[int, int, int, int, int]:
    if embed_dim is None or num_heads is None:
        raise TypeError("SPViT costs need the model's embed_dim and num_heads (an SPViTArch does not hold them), "
                        "e.g. count_params(arch, embed_dim=384, num_heads=6)")
    (ih, iw), (ph, pw) = to_2tuple(img_size), to_2tuple(patch_size)
    return embed_dim, embed_dim // num_heads, (ih // ph) * (iw // pw), ph, pw


def spvit_params(cfg: SPViTArch, *, embed_dim: int | None = None, num_heads: int | None = None,
                 img_size: int | Sequence[int] = 224, patch_size: int | Sequence[int] = 16, in_chans: int = 3,
                 num_classes: int = 1000, skip_mode: str = "original", qkv_bias: bool = True) -> int:
    """Parameters of the pruned model :class:`~timm_nas.models.spvit.SPViTDeiT` of ``cfg`` (materialised kernels,
    kept FFN units).

    Args:
        cfg: the architecture.
        embed_dim: token width (required).
        num_heads: heads (required; the conv bottleneck is ``embed_dim // num_heads`` wide).
        img_size, patch_size, in_chans, num_classes, skip_mode, qkv_bias: as the model's.
    """
    D, d, n, ph, pw = _cost_shape(embed_dim, num_heads, img_size, patch_size)
    total = D * in_chans * ph * pw + D + D + (n + 1) * D + 2 * D  # patch embed, cls, pos, final norm
    total += (D * num_classes + num_classes) if num_classes > 0 else 0
    for op, h in zip(cfg.ops, cfg.ffn_hidden):
        norm1 = 0 if (op == "skip" and skip_mode == "zero") else 2 * D
        total += norm1 + 2 * D + (D * h + h) + (h * D + D)
        if op == "msa":
            total += 3 * D * D + (3 * D if qkv_bias else 0) + D * D + D
        elif op in ("bconv1x1", "bconv3x3"):
            k = _kernel_size(op)
            total += d * D * k * k + d + 2 * d + D * d + D
    return total


def spvit_macs(cfg: SPViTArch, *, embed_dim: int | None = None, num_heads: int | None = None,
               img_size: int | Sequence[int] = 224, patch_size: int | Sequence[int] = 16, in_chans: int = 3,
               num_classes: int = 1000, skip_mode: str = "original", qkv_bias: bool = True) -> int:
    """Multiply-accumulates of one image through :class:`~timm_nas.models.spvit.SPViTDeiT` of ``cfg``, in the
    project's convention (:mod:`timm_nas.cost`: convolutions, linear layers and attention products; no norms,
    activations or additions); it equals :func:`timm_nas.cost.measure_macs` on the pruned model. Unlike the
    original's FLOPs table (:meth:`~timm_nas.models.spvit.SPViTSearchDeiT.flops_table`) it counts the FFN and the
    qkv projection on the class token too, and no norms.

    Args:
        cfg: the architecture.
        embed_dim, num_heads, img_size, patch_size, in_chans, num_classes: as :func:`spvit_params`.
        skip_mode, qkv_bias: as :func:`spvit_params`; they do not change the count (taken so that both formulas
            accept the model's ``cost_args``).
    """
    D, d, n, ph, pw = _cost_shape(embed_dim, num_heads, img_size, patch_size)
    total = n * D * in_chans * ph * pw + D * max(num_classes, 0)
    for op, h in zip(cfg.ops, cfg.ffn_hidden):
        total += 2 * (n + 1) * D * h
        if op == "msa":
            total += 4 * (n + 1) * D * D + 2 * (n + 1) * (n + 1) * D
        elif op in ("bconv1x1", "bconv3x3"):
            k = _kernel_size(op)
            total += n * (k * k * D * d + d * D)
    return total


register_cost(SPViTArch, spvit_params, spvit_macs)
