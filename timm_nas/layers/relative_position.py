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

The explicit ``(N+1, N+1, width)`` embeddings (:func:`relative_position_embeddings`) are formed from the
``(2m+2)^2`` sums ``table_v[a] + table_h[b]`` with one gather of a cached pair index ``a (2m+2) + b``.

Attention never needs them, though (``rel_pos_attention``): the pair's table rows depend only on the query and
the key's grid *row* (``iv``) or *column* (``ih``); the class-token key meets row 0 of both tables from every
query. :func:`relative_position_row_col_index_2d` gives, per query, the row of the stacked tables
``[table_v; table_h]`` for every key row and key column (``H + W`` slots) and for the class-token key (two slots:
row 0 of each table); :func:`relative_position_row_col_onehot_2d` says which slots each key occupies (a patch key:
its row and its column; the class-token key: its two slots). With ``G = index`` and ``K = onehot``,
``table_v[iv(i, j)] + table_h[ih(i, j)] = sum_x K[j, x] T[G[i, x]]`` for every key ``j``, clipped or not (clipping
only makes several slots share a table row).
"""
import threading
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch.utils._python_dispatch import _disable_current_modes

__all__ = [
    "MAX_RELATIVE_POSITION",
    "REL_POS_INIT_STD",
    "CLASS_TOKEN_SLOTS",
    "relative_position_index_2d",
    "relative_position_pair_index_2d",
    "relative_position_embeddings",
    "relative_position_row_col_index_2d",
    "relative_position_row_col_onehot_2d",
    "relative_position_row_col_2d",
    "clear_relative_position_cache",
]

#: Clip distance of the official runs (``--max_relative_position`` default 14, microsoft/Cream
#: AutoFormer/supernet_train.py).
MAX_RELATIVE_POSITION = 14

#: Slots of the class-token key in the row/column layout: row 0 of the vertical and of the horizontal table.
CLASS_TOKEN_SLOTS = 2

#: Truncated-normal std of the tables at init (microsoft/Cream multihead_super.py, ``trunc_normal_(std=.02)``).
REL_POS_INIT_STD = 0.02

_CACHE: Dict[Tuple[str, int, int, int, torch.device, Optional[torch.dtype], int], torch.Tensor] = {}  # see _build_cached
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


def _build_row_col(grid_h: int, grid_w: int, max_distance: int, kind: str, slots: int) -> torch.Tensor:
    """``(N+1, slots)``: ``[key rows 0..H-1, key columns 0..W-1, class token (vertical), class token
    (horizontal)]``, then empty slots (index 0, no key) up to ``slots``.

    ``kind == "row_col_index"``: per query, the row of ``[table_v; table_h]`` (``2m+2`` rows each) that each slot
    uses; the class-token query uses row 0 of either table for every key, and every query meets the class-token
    key through row 0 of both tables. ``kind == "row_col_onehot"``: per key, 1 in the slots it occupies (a patch
    key: its row and its column; the class-token key: its two slots).
    """
    cpu = torch.device("cpu")
    rows = 2 * max_distance + 2
    pos = torch.arange(grid_h * grid_w, device=cpu)
    r, c = pos // grid_w, pos % grid_w
    n, x = grid_h * grid_w + 1, grid_h + grid_w
    if slots < x + CLASS_TOKEN_SLOTS:
        raise ValueError(f"a {grid_h}x{grid_w} grid needs at least {x + CLASS_TOKEN_SLOTS} slots, got {slots}")
    if kind == "row_col_onehot":
        onehot = torch.zeros(n, slots, device=cpu)
        onehot[pos + 1, r] = 1.0
        onehot[pos + 1, c + grid_h] = 1.0
        onehot[0, x:x + CLASS_TOKEN_SLOTS] = 1.0
        return onehot
    index = torch.zeros(n, slots, dtype=torch.long, device=cpu)
    dv = (torch.arange(grid_h, device=cpu)[None, :] - r[:, None]).clamp(-max_distance, max_distance)
    dh = (torch.arange(grid_w, device=cpu)[None, :] - c[:, None]).clamp(-max_distance, max_distance)
    index[1:, :grid_h] = dv + max_distance + 1
    index[1:, grid_h:x] = dh + max_distance + 1 + rows
    index[0, grid_h:x] = rows  # the class-token query: row 0 of both tables for every key
    index[:, x + 1] = rows  # the class-token key: table_v[0] (slot x, index 0) + table_h[0] (slot x + 1)
    return index


_Key = Tuple[str, int, int, int, torch.device, Optional[torch.dtype], int]


@torch.compiler.disable
def _build_cached(key: _Key) -> torch.Tensor:
    # Real, normal (non-inference) tensors whatever context the first caller runs in: autograd saves them later,
    # and a fake-tensor or tracing mode (torch.export, FlopCounterMode) must not leave its tensors in the cache.
    kind, grid_h, grid_w, max_distance, device, dtype, slots = key
    with _disable_current_modes(), torch.inference_mode(False), torch.no_grad(), _LOCK:
        index = _CACHE.get(key)
        if index is None:
            if kind in ("row_col_index", "row_col_onehot"):
                index = _build_row_col(grid_h, grid_w, max_distance, kind, slots)
            else:
                index = _build_index(grid_h, grid_w, max_distance)
                if kind == "pair":
                    index = index[0] * (2 * max_distance + 2) + index[1]
            index = index.to(device=device, dtype=dtype)
            _CACHE[key] = index
    return index


def _cached(
        kind: str,
        grid_size: Tuple[int, int],
        max_distance: int,
        device: Optional[torch.device],
        dtype: Optional[torch.dtype] = None,
        slots: int = 0,
) -> torch.Tensor:
    device = torch.device("cpu") if device is None else torch.device(device)
    key = (kind, int(grid_size[0]), int(grid_size[1]), int(max_distance), device, dtype, int(slots))
    index = _CACHE.get(key)
    return _build_cached(key) if index is None else index


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


def relative_position_row_col_index_2d(
        grid_size: Tuple[int, int],
        max_distance: int = MAX_RELATIVE_POSITION,
        device: Optional[torch.device] = None,
        slots: Optional[int] = None,
) -> torch.Tensor:
    """The cached ``(N+1, slots)`` long index: per query, the row of ``[table_v; table_h]`` used by each key row
    ``0..H-1``, by each key column ``0..W-1`` and by the class-token key (two slots: rows ``0`` and ``2m+2``, row
    0 of each table); then unused slots (index 0) up to ``slots`` (default ``H + W + 2``: none)."""
    slots = grid_size[0] + grid_size[1] + CLASS_TOKEN_SLOTS if slots is None else slots
    return _cached("row_col_index", grid_size, max_distance, device, slots=slots)


def relative_position_row_col_onehot_2d(
        grid_size: Tuple[int, int],
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        slots: Optional[int] = None,
) -> torch.Tensor:
    """The cached ``(N+1, slots)`` 0/1 matrix: per key, its slots (a patch key: its grid row and column; the class
    token: its two slots), in the layout of :func:`relative_position_row_col_index_2d`; unused slots are 0."""
    slots = grid_size[0] + grid_size[1] + CLASS_TOKEN_SLOTS if slots is None else slots
    return _cached("row_col_onehot", grid_size, 0, device, dtype, slots=slots)


#: Slots are padded so that ``head_dim + slots`` is a multiple of this: fused attention kernels are slower on odd
#: widths (measured on CPU, torch 2.14: widths 92 and 96 take about the same time, 94 6% more).
SLOT_ALIGN = 4


@register_notrace_function
@torch.jit.ignore
def relative_position_row_col_2d(
        like: torch.Tensor,
        grid_size: Tuple[int, int],
        max_distance: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Both cached row/column tables on ``like``'s device (the one-hot in ``like``'s dtype), padded so that
    ``like.shape[-1] + slots`` is a multiple of :data:`SLOT_ALIGN`: a leaf for FX and TorchScript, which cannot
    trace the cache."""
    slots = grid_size[0] + grid_size[1] + CLASS_TOKEN_SLOTS
    slots += -(like.shape[-1] + slots) % SLOT_ALIGN
    return (relative_position_row_col_index_2d(grid_size, max_distance, like.device, slots),
            relative_position_row_col_onehot_2d(grid_size, like.device, like.dtype, slots))


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


