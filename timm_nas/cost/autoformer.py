"""AutoFormer's analytic cost: exact parameters and multiply-accumulates of a static subnet.

Paper: Chen et al., "AutoFormer: Searching Transformers for Visual Recognition", ICCV 2021 (arXiv:2107.00651).
Original code: https://github.com/microsoft/Cream/tree/main/AutoFormer (``model/supernet_transformer.py``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..spaces.autoformer import HEAD_DIM, AutoFormerSpace, AutoFormerSubnet
from .analytic import register_cost

__all__ = ["autoformer_params", "autoformer_macs"]


def _grid(img_size: int | Sequence[int], patch_size: int | Sequence[int]) -> int:
    """Number of patches of an image (int side or (H, W)) cut into patches (int side or (h, w))."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    return (int(h) // int(ph)) * (int(w) // int(pw))


def _head_dim(head_dim: int | None, space: Any) -> int:
    if head_dim is not None:
        return int(head_dim)
    if space is None:
        return HEAD_DIM
    if isinstance(space, AutoFormerSpace):
        return space.head_dim
    if isinstance(space, str):
        return AutoFormerSpace.preset(space).head_dim
    if isinstance(space, Mapping):
        return int(space.get("head_dim", HEAD_DIM))
    raise TypeError(f"space must be a preset name, a space dict or an AutoFormerSpace, got {type(space).__name__}")


def autoformer_params(
        cfg: AutoFormerSubnet | Mapping[str, Any],
        *,
        num_classes: int = 1000,
        img_size: int | Sequence[int] = 224,
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        head_dim: int | None = None,
        space: Any = None,
        max_relative_position: int = 14,
        qkv_bias: bool = True,
        global_pool: str = "avg",
) -> int:
    """Exact parameter count of the static AutoFormer model of ``cfg`` (``autoformer_subnet``).

    Equals the original's ``get_sampled_params_numel`` (microsoft/Cream ``supernet_transformer.py``): patch
    conv, class token and position embedding, per block two LayerNorms, qkv (``3 qk x E`` + bias, ``qk = heads x
    head_dim``), four relative tables ``(2 m + 2) x head_dim``, proj, fc1, fc2; final norm and head.

    Args:
        cfg: the subnet.
        num_classes: classifier outputs (0: no head).
        img_size: image side or (H, W).
        patch_size: patch side.
        in_chans: input channels.
        head_dim: width of one head (default: the space's, else 64).
        space: the space (preset name, dict or object) whose ``head_dim`` applies.
        max_relative_position: clip distance ``m`` of the relative tables.
        qkv_bias: whether qkv has a bias.
        global_pool: the head's pooling (no parameters; taken so that both formulas accept the model's
            ``cost_args``).
    """
    cfg = AutoFormerSubnet.from_dict(cfg)
    d = _head_dim(head_dim, space)
    e = cfg.embed_dim
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    n = _grid(img_size, patch_size)
    total = e * in_chans * ph * pw + e  # patch conv
    total += e + (n + 1) * e  # class token, position embedding
    rel_tables = 4 * (2 * max_relative_position + 2) * d
    for heads, ratio in zip(cfg.num_heads, cfg.mlp_ratio):
        qk = heads * d
        hidden = int(e * ratio)
        total += 4 * e  # two LayerNorms
        total += 3 * qk * e + (3 * qk if qkv_bias else 0) + rel_tables + qk * e + e  # attention
        total += e * hidden + hidden + hidden * e + e  # MLP
    total += 2 * e  # final norm
    if num_classes > 0:
        total += e * num_classes + num_classes
    return total


def autoformer_macs(
        cfg: AutoFormerSubnet | Mapping[str, Any],
        *,
        num_classes: int = 1000,
        img_size: int | Sequence[int] = 224,
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        head_dim: int | None = None,
        space: Any = None,
        global_pool: str = "avg",
        max_relative_position: int = 14,
        qkv_bias: bool = True,
) -> int:
    """Multiply-accumulates of one image through the AutoFormer model of ``cfg``.

    Convention (module docstring): convolutions, linear layers and matrix products. With ``T = N + 1`` tokens,
    per block: qkv ``T E 3qk``, ``q k^T`` and ``attn v`` ``T^2 qk`` each, the two relative-position products
    ``T^2 qk`` each (they are full batched matmuls, as in the original), proj ``T qk E``, MLP ``2 T E H``; plus
    the patch convolution and the head on the pooled vector. LayerNorms, softmax, GELU, the relative-table
    gathers and the pooling are not counted. Equals :func:`measure_macs` and ``FlopCounterMode`` / 2 on the
    model. For AutoFormer-T/S/B at 224 it gives 1,481,938,432 / 5,161,400,832 / 11,691,179,008, the original
    code's ``FlopCounterMode`` / 2 count (1.482G / 5.161G / 11.691G; its own ``get_complexity`` undercounts).

    Keyword arguments are those of :func:`autoformer_params`; ``global_pool=''`` applies the head to every token.
    ``max_relative_position`` and ``qkv_bias`` do not change the count (table gathers and bias additions are not
    multiply-accumulates).
    """
    cfg = AutoFormerSubnet.from_dict(cfg)
    d = _head_dim(head_dim, space)
    e = cfg.embed_dim
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    n = _grid(img_size, patch_size)
    t = n + 1
    total = n * e * in_chans * ph * pw  # patch conv
    for heads, ratio in zip(cfg.num_heads, cfg.mlp_ratio):
        qk = heads * d
        hidden = int(e * ratio)
        total += t * e * 3 * qk + 4 * t * t * qk + t * qk * e + 2 * t * e * hidden
    if num_classes > 0:
        total += (t if global_pool == "" else 1) * e * num_classes
    return total


register_cost(AutoFormerSubnet, autoformer_params, autoformer_macs)
