"""S3 (AutoFormerV2)'s analytic cost: exact parameters and multiply-accumulates of a static subnet
(``s3_subnet``, the original ``SSSTransformer``), and the token-grid rules the model shares.

Paper: Chen et al., "Searching the Search Space of Vision Transformer", NeurIPS 2021 (arXiv:2111.14725).
Original code: https://github.com/microsoft/Cream/tree/main/AutoFormerV2 (``model/SSS.py``).
"""
from typing import List, Sequence, Union

from timm.layers import to_2tuple

from ..spaces.s3 import S3Subnet, effective_window
from .analytic import register_cost

__all__ = ["s3_params", "s3_macs"]


def _square_grid(img_size: Union[int, Sequence[int]], patch_size: Union[int, Sequence[int]]) -> int:
    img, patch = to_2tuple(img_size), to_2tuple(patch_size)
    if img[0] != img[1] or patch[0] != patch[1]:
        raise ValueError(f"S3 models need a square input and patch (the original's window rule uses one grid side), "
                         f"got img_size={img_size}, patch_size={patch_size}")
    if img[0] % patch[0]:
        raise ValueError(f"img_size={img[0]} is not a multiple of patch_size={patch[0]}")
    return img[0] // patch[0]


def _stage_grids(grid: int, num_stages: int) -> List[int]:
    """Token grid side of each stage; patch merging between stages needs an even grid (no padding)."""
    grids = [grid]
    for i in range(1, num_stages):
        if grids[-1] % 2:
            raise ValueError(f"the {grids[-1]}x{grids[-1]} grid of stage {i - 1} is odd and cannot be merged; use an "
                             f"img_size / patch_size whose grid ({grid}) stays even for {num_stages - 1} merges")
        grids.append(grids[-1] // 2)
    return grids


def s3_params(cfg: S3Subnet, num_classes: int = 1000, img_size: int = 224, patch_size: int = 4,
              in_chans: int = 3, qkv_bias: bool = True) -> int:
    """Exact parameter count of ``s3_subnet`` (= the original ``SSSTransformer``; buffers excluded)."""
    cfg = S3Subnet.from_dict(cfg)
    grids = _stage_grids(_square_grid(img_size, patch_size), cfg.num_stages)
    e0 = cfg.embed_dim[0]
    total = in_chans * patch_size * patch_size * e0 + e0 + 2 * e0  # conv + its bias + LayerNorm
    for i, j in cfg.blocks():
        e, hid = cfg.embed_dim[i], cfg.mlp_hidden(i, j)
        w = effective_window(grids[i], cfg.window_size[i][j])
        total += 2 * e + 3 * e * e + (3 * e if qkv_bias else 0) + (2 * w - 1) ** 2 * cfg.num_heads[i][j]
        total += e * e + e + 2 * e + e * hid + hid + hid * e + e
    for i in range(1, cfg.num_stages):
        total += 2 * 4 * cfg.embed_dim[i - 1] + 4 * cfg.embed_dim[i - 1] * cfg.embed_dim[i]
    total += 2 * cfg.embed_dim[-1]
    if num_classes:
        total += cfg.embed_dim[-1] * num_classes + num_classes
    return total


def s3_macs(cfg: S3Subnet, num_classes: int = 1000, img_size: int = 224, patch_size: int = 4,
            in_chans: int = 3, qkv_bias: bool = True) -> int:
    """Multiply-accumulates of one image: patch conv, qkv / proj / MLP / merging / head linears and the two
    attention products (``N * w^2 * e`` each per block); norms, softmax and additions are not counted.
    ``qkv_bias`` does not change the count (taken so that both formulas accept the model's ``cost_args``)."""
    cfg = S3Subnet.from_dict(cfg)
    grids = _stage_grids(_square_grid(img_size, patch_size), cfg.num_stages)
    e0 = cfg.embed_dim[0]
    total = grids[0] ** 2 * e0 * in_chans * patch_size * patch_size
    for i, j in cfg.blocks():
        n, e, hid = grids[i] ** 2, cfg.embed_dim[i], cfg.mlp_hidden(i, j)
        w = effective_window(grids[i], cfg.window_size[i][j])
        total += n * (3 * e * e + e * e + 2 * e * hid) + 2 * n * w * w * e
    for i in range(1, cfg.num_stages):
        total += grids[i] ** 2 * 4 * cfg.embed_dim[i - 1] * cfg.embed_dim[i]
    return total + cfg.embed_dim[-1] * num_classes


register_cost(S3Subnet, s3_params, s3_macs)
