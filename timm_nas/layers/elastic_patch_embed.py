"""Elastic patch embedding: a patch convolution of the largest width, run with its first ``E`` filters.

As AutoFormer's ``PatchembedSuper`` (microsoft/Cream ``AutoFormer/model/module/embedding_super.py``): the subnet
uses ``proj.weight[:E]`` and ``proj.bias[:E]``; the input must have the configured image size.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import to_2tuple

__all__ = ["ElasticPatchEmbed"]


class ElasticPatchEmbed(nn.Module):
    """Image to patch tokens ``(B, N, E)`` with an elastic embedding width ``E``.

    Args:
        img_size: input image size (int or (H, W)); inputs must have exactly this size.
        patch_size: patch side (kernel = stride).
        in_chans: input channels.
        embed_dim: the largest embedding width (the weight's output channels).
    """

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: Union[int, Tuple[int, int]] = 16,
            in_chans: int = 3,
            embed_dim: int = 768,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size,
                              device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, embed_dim: Optional[int] = None) -> torch.Tensor:
        _, _, H, W = x.shape
        if (H, W) != self.img_size:
            raise ValueError(f"input image size ({H}x{W}) does not match the model ({self.img_size[0]}x"
                             f"{self.img_size[1]}); create the model with img_size=({H}, {W})")
        e = self.proj.out_channels if embed_dim is None else embed_dim
        bias = None if self.proj.bias is None else self.proj.bias[:e]
        x = F.conv2d(x, self.proj.weight[:e], bias, stride=self.patch_size)  # (B, E, gh, gw)
        return x.flatten(2).transpose(1, 2)  # (B, N, E)
