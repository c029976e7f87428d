"""Multi-head self-attention with AutoFormer's 2-D relative position terms on keys and values.

Source: ``AttentionSuper.forward`` in microsoft/Cream ``AutoFormer/model/module/multihead_super.py`` (official
setting ``change_qkv``: head dim fixed, qk width = heads x head dim, scale = head_dim ** -0.5). With relative
embeddings ``R_k, R_v`` of shape ``(N, N, d)`` (``relative_position.py``)::

    attn = softmax(q k^T * scale + (q . R_k[i, j]) * scale)
    out_i = sum_j attn_ij v_j + sum_j attn_ij R_v[i, j]

The original forms ``R_k, R_v`` and both relative terms as batched matmuls over the query index (``N^2 d``
multiply-accumulates each per head) and therefore computes attention explicitly. ``R[i, j]`` depends only on the
query and the key's grid row and column, so the same values come out of one fused attention call, exactly. With
``G`` the ``(N, H+W+2)`` per-query table rows of each key row, key column and of the class-token key, and ``K``
the keys' one-hot slots (:func:`~.relative_position.relative_position_row_col_2d`)::

    q . R_k[i, j] = sum_x K[j, x] (q T_k^T)[i, G[i, x]]            # logits: a gathered (N, slots) term per query
    sum_j a_ij R_v[i, j] = sum_x (sum_j a_ij K[j, x]) T_v[G[i, x]]  # values: the attention mass of each slot

so ``sdpa([q, (q T_k^T)[G]], [k, K], [v, K])`` returns ``attn @ v`` in its first ``d`` columns and the slot masses
in the rest. The class-token key meets row 0 of both tables from every query: it has two slots of its own (rows
``0`` and ``M = 2m + 2`` of the stacked tables), so it needs no special case. The class-token query meets only row
0 of both tables, so its slots all point there. Clipped grids (a side longer than ``m + 1``) differ only in ``G``:
several slots of a query share a table row. The work beyond plain attention is ``N^2 (H+W+2)`` per head inside the
fused kernel (slots padded so that ``d + slots`` is a multiple of 4: odd widths run slower), instead of ``2 N^2 d``
and two ``(N, N, d)`` gathers, plus the two small table terms, done one of two ways (both exact):

* few rows per query (``batch x heads < 16``, e.g. batch-1 inference): one matmul ``q T_k^T`` against all
  ``2(2m+2)`` table rows, gathered per query; masses scattered onto the table rows and multiplied by ``T_v``
  (large matmuls; nothing per query but an index);
* many rows (training, batched inference): the tables gathered per query once, ``T[G]`` of shape
  ``(N, slots, d)``, and two batched matmuls over the query index. Only the needed products, and less to keep
  for backward: no ``(B, h, N, 2(2m+2))`` tensors, and when a backward will run the two matmuls are autograd
  functions that keep only what the fused call keeps anyway (its extended queries and its output) and rebuild the
  query-major copies from them.

The explicit formulation stays as the reference for cost measurement: MACs are counted with the relative products
as ``N^2 d`` matmuls (``timm_nas.cost.count_macs``, as the original's measured FLOPs did), so inside
:func:`reference_rel_pos`, under torch's ``FlopCounterMode`` and under ``torch.jit`` tracing other than ONNX export
(fvcore counts from a trace) the explicit path runs.

The attention layers that call it (static and elastic) are AutoFormer's: :mod:`timm_nas.models.autoformer`.
"""
import contextlib
from typing import Iterator, Tuple

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

from .relative_position import relative_position_embeddings, relative_position_row_col_2d

__all__ = ["rel_pos_attention", "reference_rel_pos"]

_FORCE_REFERENCE = [0]  # nesting depth of reference_rel_pos()


@contextlib.contextmanager
def reference_rel_pos() -> Iterator[None]:
    """Run :func:`rel_pos_attention` in the original's explicit formulation inside this block (same values up to
    float rounding; slower): for measuring MACs with the relative products counted as ``N^2 d`` matmuls, or for
    comparing speed. The switch is process-wide (every thread sees it while the block runs)."""
    _FORCE_REFERENCE[0] += 1
    try:
        yield
    finally:
        _FORCE_REFERENCE[0] -= 1


@torch.jit.ignore
def _explicit_wanted() -> bool:
    if torch.compiler.is_compiling():
        return False
    if _FORCE_REFERENCE[0] > 0:
        return True
    if torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export():
        return True  # fvcore's op counting (cost.measure_macs) traces the model
    # torch.utils.flop_counter.FlopCounterMode (cost.flop_counter_macs) pushes a dispatch mode of this name
    return any(type(mode).__name__ in ("_FlopCounterMode", "FlopCounterMode")
               for mode in _get_current_dispatch_mode_stack())


#: Rows per query (batch x heads) from which the per-query table path is used (module docstring).
PER_QUERY_MIN_ROWS = 16


@torch.jit.ignore
def _many_rows(q: torch.Tensor) -> bool:
    if isinstance(q, torch.fx.Proxy) or torch.compiler.is_compiling():
        # FX / torch.export / the ONNX exporter record one path for every batch size (the batch is symbolic)
        return True
    return q.shape[0] * q.shape[1] >= PER_QUERY_MIN_ROWS


def _rel_pos_attention_explicit(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        tables_k: torch.Tensor,
        tables_v: torch.Tensor,
        grid_size: Tuple[int, int],
        max_distance: int,
        scale: float,
        attn_drop: float,
        training: bool,
) -> torch.Tensor:
    """The original's formulation: ``(N, N, d)`` embeddings, both relative terms as batched matmuls."""
    B, H, N, D = q.shape
    rows = tables_k.shape[0] // 2
    rel_k = relative_position_embeddings(tables_k[:rows], tables_k[rows:], grid_size, max_distance)  # (N, N, d)
    rel_v = relative_position_embeddings(tables_v[:rows], tables_v[rows:], grid_size, max_distance)
    attn = (q @ k.transpose(-2, -1)) * scale  # (B, h, N, N)
    q_by_query = q.permute(2, 0, 1, 3).reshape(N, B * H, D)  # (N, B*h, d)
    attn = attn + (q_by_query @ rel_k.transpose(1, 2)).transpose(0, 1).reshape(B, H, N, N) * scale
    attn = attn.softmax(dim=-1)
    attn = F.dropout(attn, attn_drop, training)
    out = attn @ v  # (B, h, N, d)
    attn_by_query = attn.permute(2, 0, 1, 3).reshape(N, B * H, N)  # (N, B*h, N)
    out = out + (attn_by_query @ rel_v).transpose(0, 1).reshape(B, H, N, D)
    return out.transpose(1, 2).reshape(B, N, H * D)


class _SlotQuery(torch.autograd.Function):
    """``cat([q, slot_logits])`` with ``slot_logits[b, h, i, x] = q[b, h, i] . rows_k[i, x]``, keeping for backward
    only its own output (which the fused attention call keeps anyway) and ``rows_k``: the query-major copy of
    ``q`` that a plain ``bmm`` would keep is rebuilt from the output's first ``d`` columns."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, rows_k: torch.Tensor) -> torch.Tensor:
        B, H, N, D = q.shape
        X = rows_k.shape[1]
        q_by_query = q.permute(2, 0, 1, 3).reshape(N, B * H, D)
        slot_logits = torch.bmm(q_by_query, rows_k.transpose(1, 2)).view(N, B, H, X).permute(1, 2, 0, 3)
        out = torch.cat([q, slot_logits], dim=-1)
        ctx.save_for_backward(out, rows_k)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out, rows_k = ctx.saved_tensors
        B, H, N, DX = out.shape
        X = rows_k.shape[1]
        D = DX - X
        grad_slots = grad[..., D:].permute(2, 0, 1, 3).reshape(N, B * H, X)
        q_by_query = out[..., :D].permute(2, 0, 1, 3).reshape(N, B * H, D)
        grad_q = grad[..., :D] + torch.bmm(grad_slots, rows_k).view(N, B, H, D).permute(1, 2, 0, 3)
        grad_rows = torch.bmm(grad_slots.transpose(1, 2), q_by_query)  # (N, X, d)
        return grad_q, grad_rows


class _SlotValues(torch.autograd.Function):
    """``out[..., :d] + rel`` with ``rel[b, h, i] = sum_x out[b, h, i, d + x] rows_v[i, x]`` (the slot masses
    times their table rows), keeping for backward only the fused call's output (which it keeps anyway) and
    ``rows_v``."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, rows_v: torch.Tensor) -> torch.Tensor:
        B, H, N, DX = out.shape
        X, D = rows_v.shape[1], rows_v.shape[2]
        mass = out[..., D:].permute(2, 0, 1, 3).reshape(N, B * H, X)
        rel = torch.bmm(mass, rows_v).view(N, B, H, D).permute(1, 2, 0, 3)
        ctx.save_for_backward(out, rows_v)
        return out[..., :D] + rel  # (B, h, N, d)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out, rows_v = ctx.saved_tensors
        B, H, N, DX = out.shape
        X, D = rows_v.shape[1], rows_v.shape[2]
        grad_by_query = grad.permute(2, 0, 1, 3).reshape(N, B * H, D)
        mass = out[..., D:].permute(2, 0, 1, 3).reshape(N, B * H, X)
        grad_out = torch.cat([grad, torch.bmm(grad_by_query, rows_v.transpose(1, 2)).view(N, B, H, X)
                              .permute(1, 2, 0, 3)], dim=-1)
        return grad_out, torch.bmm(mass.transpose(1, 2), grad_by_query)  # (N, X, d)


@torch.jit.ignore
def _slot_query(q: torch.Tensor, rows_k: torch.Tensor) -> torch.Tensor:
    return _SlotQuery.apply(q, rows_k)


@torch.jit.ignore
def _slot_values(out: torch.Tensor, rows_v: torch.Tensor) -> torch.Tensor:
    return _SlotValues.apply(out, rows_v)


@torch.jit.ignore
def _saving_memory(q: torch.Tensor) -> bool:
    """Whether to use the memory-saving autograd functions: when a backward will run, outside compilation (which
    plans its own saved tensors)."""
    return torch.is_grad_enabled() and not torch.compiler.is_compiling() and not isinstance(q, torch.fx.Proxy)


def _rel_pos_attention_fused(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        tables_k: torch.Tensor,
        tables_v: torch.Tensor,
        grid_size: Tuple[int, int],
        max_distance: int,
        scale: float,
        attn_drop: float,
        training: bool,
) -> torch.Tensor:
    """One fused attention call on queries, keys and values extended by the row/column slots (module docstring)."""
    B, H, N, D = q.shape
    # (N, X) each: X >= H_grid + W_grid + 2 slots, padded so that d + X is a multiple of 4
    index, onehot = relative_position_row_col_2d(q, grid_size, max_distance)
    X = index.shape[-1]
    per_query = _many_rows(q)
    saving = per_query and _saving_memory(q)
    if saving:
        q_ext = _slot_query(q, F.embedding(index, tables_k))
    elif per_query:
        rows_k = F.embedding(index, tables_k)  # (N, X, d): per query, the key-table row of every slot
        q_by_query = q.permute(2, 0, 1, 3).reshape(N, B * H, D)  # (N, B*h, d)
        slot_logits = torch.bmm(q_by_query, rows_k.transpose(1, 2)).view(N, B, H, X).permute(1, 2, 0, 3)
        q_ext = torch.cat([q, slot_logits], dim=-1)  # (B, h, N, d + X)
    else:
        table_logits = q @ tables_k.transpose(0, 1)  # (B, h, N, 2(2m+2)): q_i . every table row
        q_ext = torch.cat([q, table_logits.gather(-1, index.expand(B, H, N, X))], dim=-1)
    onehot = onehot.expand(B, H, N, X)
    out = F.scaled_dot_product_attention(
        q_ext,
        torch.cat([k, onehot], dim=-1),
        torch.cat([v, onehot], dim=-1),
        dropout_p=attn_drop if training else 0.0,
        scale=scale,
    )  # (B, h, N, d + X): attn @ v, then each slot's attention mass
    if saving:
        return _slot_values(out, F.embedding(index, tables_v)).transpose(1, 2).reshape(B, N, H * D)
    # the output's own memory order is (B, N, h, .) for CPU's fused kernel: the (B N h, .) rows below are views
    attended, slot_mass = out.split([D, X], dim=-1)
    attended = attended.transpose(1, 2).reshape(B * N * H, D)
    if per_query:
        rows_v = F.embedding(index, tables_v)  # (N, X, d)
        mass = slot_mass.permute(2, 0, 1, 3).reshape(N, B * H, X)  # (N, B*h, X)
        rel = torch.bmm(mass, rows_v).view(N, B, H, D).transpose(0, 1)  # (B, N, h, d)
        return (attended.view(B, N, H, D) + rel).reshape(B, N, H * D)
    # the masses gathered onto the table rows, then one product with the value tables
    mass = q.new_zeros((B, H, N, tables_v.shape[0])).scatter_add_(-1, index.expand(B, H, N, X), slot_mass)
    return torch.addmm(attended, mass.transpose(1, 2).reshape(B * N * H, -1), tables_v).view(B, N, H * D)


@register_notrace_function  # one leaf in FX graphs, wherever the calling layer lives
def rel_pos_attention(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        tables_k: torch.Tensor,
        tables_v: torch.Tensor,
        grid_size: Tuple[int, int],
        max_distance: int,
        scale: float,
        attn_drop: float = 0.0,
        training: bool = False,
) -> torch.Tensor:
    """Attention with AutoFormer's relative position terms on keys and values.

    Args:
        q, k, v: ``(B, h, N, d)``, ``N = H W + 1`` (class token first).
        tables_k, tables_v: ``(2 (2m+2), d)`` stacked vertical and horizontal tables
            (:meth:`~.relative_position.RelativePosition2D.tables`) of the key and value embeddings.
        grid_size: the patch grid ``(H, W)``.
        max_distance: clip distance ``m`` of the tables.
        scale: logit scale (applies to both logit terms).
        attn_drop: dropout probability on the attention weights (training only).
        training: whether dropout is active.

    Returns:
        ``(B, N, h * d)``, heads concatenated.
    """
    if _explicit_wanted():
        return _rel_pos_attention_explicit(q, k, v, tables_k, tables_v, grid_size, max_distance, scale, attn_drop,
                                           training)
    return _rel_pos_attention_fused(q, k, v, tables_k, tables_v, grid_size, max_distance, scale, attn_drop, training)


