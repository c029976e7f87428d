"""2-D relative position embeddings of AutoFormer (keys and values), with cached index tables.

Source: ``RelativePosition2D_super`` in microsoft/Cream ``AutoFormer/model/module/multihead_super.py``. Two
learned tables per use, vertical ``table_v`` and horizontal ``table_h``, each ``(2 m + 2, width)`` for a maximum
distance ``m``. For patch tokens ``p`` (query) and ``q`` (key) on a grid of width ``W``, the row and column
offsets ``row(q) - row(p)`` and ``col(q) - col(p)`` are clipped to ``[-m, m]`` and shifted by ``m + 1`` into
``1 .. 2m + 1``; every pair involving the class token (row 0 or column 0 of the ``(N+1, N+1)`` map) uses index 0.
The embedding of a pair is ``table_v[iv] + table_h[ih]``, shared by all heads and batch items.

The original rebuilt the index maps on every forward; here they are built once per (grid, max distance) and
device and cached at module level (not as buffers, so a model created on the meta device and materialised later
never sees stale or uninitialised indices). The original derives the grid side as ``int(sqrt(N))`` (square
grids only); this uses the true ``(H, W)`` patch grid, identical for square inputs.

Speed: instead of two ``(N+1)^2 x width`` gathers and their sum, the ``(2m+2)^2`` sums ``table_v[a] + table_h[b]``
are formed once (a few hundred rows) and gathered once with a cached pair index ``a (2m+2) + b``: the same
floating-point values, a third of the memory traffic.
"""
import threading
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_function, trunc_normal_

__all__ = [
    "MAX_RELATIVE_POSITION",
    "REL_POS_INIT_STD",
    "RelativePosition2D",
    "relative_position_index_2d",
    "relative_position_pair_index_2d",
    "relative_position_embeddings",
    "clear_relative_position_cache",
]

#: Clip distance of the official runs (``--max_relative_position`` default 14, microsoft/Cream
#: AutoFormer/supernet_train.py).
MAX_RELATIVE_POSITION = 14

#: Truncated-normal std of the tables at init (microsoft/Cream multihead_super.py, ``trunc_normal_(std=.02)``).
REL_POS_INIT_STD = 0.02

_CACHE: Dict[Tuple[str, int, int, int, torch.device], torch.Tensor] = {}
_LOCK = threading.Lock()


def _build_index(grid_h: int, grid_w: int, max_distance: int) -> torch.Tensor:
    """``(2, N+1, N+1)`` long tensor on the CPU: vertical and horizontal table indices of every token pair."""
    cpu = torch.device("cpu")
    pos = torch.arange(grid_h * grid_w, device=cpu)
    rows, cols = pos // grid_w, pos % grid_w
    dv = (rows[None, :] - rows[:, None]).clamp(-max_distance, max_distance) + max_distance + 1  # (N, N) query x key
    dh = (cols[None, :] - cols[:, None]).clamp(-max_distance, max_distance) + max_distance + 1
    index = torch.zeros(2, grid_h * grid_w + 1, grid_h * grid_w + 1, dtype=torch.long, device=cpu)
    index[0, 1:, 1:] = dv  # row 0 / column 0 (class token) keep index 0
    index[1, 1:, 1:] = dh
    return index


def _cached(kind: str, grid_size: Tuple[int, int], max_distance: int, device: Optional[torch.device]) -> torch.Tensor:
    device = torch.device("cpu") if device is None else torch.device(device)
    key = (kind, int(grid_size[0]), int(grid_size[1]), int(max_distance), device)
    index = _CACHE.get(key)
    if index is None:
        # Normal (non-inference) tensors, whatever mode the first caller runs in: autograd saves them later.
        with torch.inference_mode(False), torch.no_grad(), _LOCK:
            index = _CACHE.get(key)
            if index is None:
                index = _build_index(key[1], key[2], key[3])
                if kind == "pair":
                    index = index[0] * (2 * key[3] + 2) + index[1]
                index = index.to(device)
                _CACHE[key] = index
    return index


def relative_position_index_2d(
        grid_size: Tuple[int, int],
        max_distance: int = MAX_RELATIVE_POSITION,
        device: Optional[torch.device] = None,
) -> torch.Tensor:
    """The cached ``(2, N+1, N+1)`` index maps (vertical, horizontal) for a patch grid, on ``device``.

    Built once per (grid, max distance, device); works for the meta device too (the indices are then shape-only).
    """
    return _cached("vh", grid_size, max_distance, device)


def relative_position_pair_index_2d(
        grid_size: Tuple[int, int],
        max_distance: int = MAX_RELATIVE_POSITION,
        device: Optional[torch.device] = None,
) -> torch.Tensor:
    """The cached ``(N+1, N+1)`` index ``iv (2m+2) + ih`` into the table of all vertical + horizontal sums."""
    return _cached("pair", grid_size, max_distance, device)


def clear_relative_position_cache() -> None:
    """Drop every cached index map (e.g. to free device memory)."""
    with _LOCK:
        _CACHE.clear()


@register_notrace_function
@torch.jit.ignore
def relative_position_embeddings(
        table_v: torch.Tensor,
        table_h: torch.Tensor,
        grid_size: Tuple[int, int],
        max_distance: int,
) -> torch.Tensor:
    """``(N+1, N+1, width)`` embeddings ``table_v[iv] + table_h[ih]`` of every (query, key) token pair."""
    pair = relative_position_pair_index_2d(grid_size, max_distance, table_v.device)
    sums = (table_v[:, None, :] + table_h[None, :, :]).flatten(0, 1)  # ((2m+2)^2, width): row a (2m+2) + b
    return F.embedding(pair, sums)  # a plain row gather; much faster than advanced indexing on CPU


class RelativePosition2D(nn.Module):
    """The two learned tables of one relative position embedding (for keys or for values).

    Args:
        width: table width (the head dim in a static model; ``E_super // heads_super`` in a supernet).
        max_distance: clip distance ``m``; the tables have ``2 m + 2`` rows.
        grid_size: the patch grid ``(H, W)`` the embeddings are built for.
    """

    def __init__(
            self,
            width: int,
            max_distance: int = MAX_RELATIVE_POSITION,
            grid_size: Tuple[int, int] = (14, 14),
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.width = width
        self.max_distance = max_distance
        self.grid_size: Tuple[int, int] = (int(grid_size[0]), int(grid_size[1]))
        rows = 2 * max_distance + 2
        self.table_v = nn.Parameter(torch.empty(rows, width, device=device, dtype=dtype))
        self.table_h = nn.Parameter(torch.empty(rows, width, device=device, dtype=dtype))
        if not self.table_v.is_meta:  # nothing to initialise on the meta device
            self.reset_parameters()

    def reset_parameters(self) -> None:
        trunc_normal_(self.table_v, std=REL_POS_INIT_STD)
        trunc_normal_(self.table_h, std=REL_POS_INIT_STD)

    def forward(self, width: Optional[int] = None) -> torch.Tensor:
        """``(N+1, N+1, width)`` embeddings from the first ``width`` table columns (default: all)."""
        table_v, table_h = self.table_v, self.table_h
        if width is not None:
            table_v, table_h = table_v[:, :width], table_h[:, :width]
        return relative_position_embeddings(table_v, table_h, self.grid_size, self.max_distance)

    def extra_repr(self) -> str:
        return f"width={self.width}, max_distance={self.max_distance}, grid_size={self.grid_size}"
