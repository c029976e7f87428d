"""S3 weight entanglement: how a smaller subnet takes its weights from the supernet's (pure functions).

The rules follow AutoFormer's "first-k" weight entanglement (same authors) in the Swin tensor layout that
``AutoFormerV2/model/SSS.py`` and timm's ``swin_transformer.py`` use; they are the contract of the golden fixtures
(``shared/fixtures/s3/cases.json``, ``weight_extraction_rules`` R1-R6):

* R2 width: every tensor on a stage's residual stream keeps its first ``e`` channels.
* R3 Q-K-V: the qkv rows are laid out ``[q | k | v]``, ``E`` rows each; a subnet keeps the first ``e`` rows of each.
* R4 MLP: the first ``hidden`` units of ``fc1`` (rows) and ``fc2`` (columns).
* R5 window: the centred ``(2w-1)^2`` crop of the ``(2W-1)^2`` relative-position table (the same relative offset
  shares one bias), then the first ``num_heads`` columns.
* R6 patch merging: the input is 4 quarter-grids of ``E`` channels each; keep the first ``e`` of each quarter.

The supernet's sizes are read from the tensors' shapes, so these functions need only the subnet's sizes. Each
``slice_*`` function takes the parameters of one module (names relative to it, as in its ``state_dict``) and
returns the subnet's, and is used unchanged by the supernet's forward pass, by ``extract`` and by checkpoint
loading (:func:`timm_nas.models.s3.slice_s3_state_dict`). Slicing is differentiable; nothing is copied when a size
is already full.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch

__all__ = [
    "qkv_rows",
    "merged_channels",
    "table_window",
    "crop_rel_pos_table",
    "slice_patch_embed",
    "slice_downsample",
    "slice_block",
    "slice_norm",
    "slice_head",
    "paste_overlap",
]

Params = Mapping[str, torch.Tensor]


def _check(name: str, size: int, available: int) -> None:
    if size > available:
        raise ValueError(f"{name}: the subnet needs {size} but the supernet weight holds only {available}; "
                         "choose a subnet that fits the supernet (S3Space.check_fits says which value is too large)")
    if size <= 0:
        raise ValueError(f"{name}: size must be positive, got {size}")


def qkv_rows(t: torch.Tensor, dim: int) -> torch.Tensor:
    """R3: keep the first ``dim`` rows of each of q, k and v of a ``[q | k | v]`` weight ``(3E, ...)`` or bias."""
    big = t.shape[0] // 3
    _check("attn.qkv rows", dim, big)
    if dim == big:
        return t
    rows = t.reshape(3, big, *t.shape[1:])[:, :dim]  # (3, dim, ...)
    return rows.reshape(3 * dim, *t.shape[1:])


def merged_channels(t: torch.Tensor, dim: int) -> torch.Tensor:
    """R6: of a last axis made of 4 quarters of ``E`` channels (patch merging), keep the first ``dim`` of each."""
    big = t.shape[-1] // 4
    _check("downsample input channels", dim, big)
    if dim == big:
        return t
    return t.reshape(*t.shape[:-1], 4, big)[..., :dim].reshape(*t.shape[:-1], 4 * dim)


def table_window(table: torch.Tensor) -> int:
    """The window side ``W`` of a ``((2W-1)^2, heads)`` relative-position bias table."""
    side = math.isqrt(table.shape[0])
    if side * side != table.shape[0] or side % 2 == 0:
        raise ValueError(f"a relative-position table has (2W-1)^2 rows; got {table.shape[0]}")
    return (side + 1) // 2


def crop_rel_pos_table(table: torch.Tensor, window: int, num_heads: int) -> torch.Tensor:
    """R5: the table of an effective ``window`` (centred crop) for the first ``num_heads`` heads."""
    big = table_window(table)
    _check("relative-position window", window, big)
    _check("relative-position heads", num_heads, table.shape[1])
    if window == big:
        return table[:, :num_heads]
    side = 2 * big - 1
    lo, hi = big - window, big + window - 1  # offsets -(w-1)..(w-1) around the centre W-1
    return table.reshape(side, side, -1)[lo:hi, lo:hi, :num_heads].reshape((2 * window - 1) ** 2, num_heads)


def _first(t: torch.Tensor, *sizes: int) -> torch.Tensor:
    for axis, size in enumerate(sizes):
        _check(f"axis {axis} of a {tuple(t.shape)} weight", size, t.shape[axis])
    if all(size == t.shape[axis] for axis, size in enumerate(sizes)):
        return t
    return t[tuple(slice(0, s) for s in sizes)]


def slice_norm(p: Params, dim: int) -> dict[str, torch.Tensor]:
    """R2 for a LayerNorm (``weight``, ``bias``)."""
    return {k: _first(v, dim) for k, v in p.items()}


def slice_patch_embed(p: Params, dim: int) -> dict[str, torch.Tensor]:
    """R2 for the stem: ``proj.{weight,bias}`` (conv) and ``norm.{weight,bias}`` keep the first ``dim`` channels."""
    return {k: _first(v, dim) for k, v in p.items()}


def slice_downsample(p: Params, in_dim: int, out_dim: int) -> dict[str, torch.Tensor]:
    """R6 for patch merging: ``norm.*`` (4 quarters) and ``reduction.weight`` (rows ``[:out_dim]``, quarters)."""
    out = {}
    for k, v in p.items():
        if k.startswith("norm."):
            out[k] = merged_channels(v, in_dim)
        elif k == "reduction.weight":
            out[k] = merged_channels(_first(v, out_dim), in_dim)
        else:
            raise KeyError(f"unexpected patch-merging parameter {k!r}")
    return out


def slice_block(p: Params, dim: int, num_heads: int, window: int, hidden: int) -> dict[str, torch.Tensor]:
    """R2-R5 for one Swin block.

    Args:
        p: the block's parameters (``norm1.*``, ``attn.qkv.*``, ``attn.relative_position_bias_table``,
            ``attn.proj.*``, ``norm2.*``, ``mlp.fc1.*``, ``mlp.fc2.*``).
        dim: the stage width ``e`` (also the Q-K-V width).
        num_heads: heads of the block (columns of the bias table).
        window: the block's *effective* window side.
        hidden: the MLP hidden width ``int(e * mlp_ratio)``.
    """
    out = {}
    for k, v in p.items():
        if k in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "attn.proj.bias", "mlp.fc2.bias"):
            out[k] = _first(v, dim)
        elif k == "attn.qkv.weight":
            out[k] = qkv_rows(_first(v, v.shape[0], dim), dim)
        elif k == "attn.qkv.bias":
            out[k] = qkv_rows(v, dim)
        elif k == "attn.relative_position_bias_table":
            out[k] = crop_rel_pos_table(v, window, num_heads)
        elif k == "attn.proj.weight":
            out[k] = _first(v, dim, dim)
        elif k == "mlp.fc1.weight":
            out[k] = _first(v, hidden, dim)
        elif k == "mlp.fc1.bias":
            out[k] = _first(v, hidden)
        elif k == "mlp.fc2.weight":
            out[k] = _first(v, dim, hidden)
        else:
            raise KeyError(f"unexpected Swin block parameter {k!r}")
    return out


def slice_head(p: Params, dim: int) -> dict[str, torch.Tensor]:
    """R2 for the classifier ``fc.{weight,bias}``: the first ``dim`` input columns (the bias is unchanged)."""
    out = {}
    for k, v in p.items():
        if k == "fc.weight":
            out[k] = v if v.shape[1] == dim else _first(v, v.shape[0], dim)
        elif k == "fc.bias":
            out[k] = v
        else:
            raise KeyError(f"unexpected classifier parameter {k!r}")
    return out


def paste_overlap(dst: torch.Tensor, src: torch.Tensor, key: str) -> torch.Tensor:
    """A copy of ``dst`` whose region shared with ``src`` (under the same rules) holds ``src``'s values.

    The inverse direction of slicing, for growing or shrinking a supernet (the space evolution rebuilds the supernet
    at the new largest choices and keeps the weights both share): first-k on every axis, q/k/v blocks separately for
    ``attn.qkv``, quarters separately for patch merging, and the common centre of relative-position tables.

    Args:
        dst: the new tensor (its values stay outside the overlap).
        src: the old tensor.
        key: the state-dict key (selects the rule).
    """
    out = dst.detach().clone()
    src = src.detach().to(dtype=out.dtype, device=out.device)
    if out.dim() == 0:
        return src.clone() if src.dim() == 0 else out
    if key.endswith("relative_position_bias_table"):
        big, old = table_window(out), table_window(src)
        w, h = min(big, old), min(out.shape[1], src.shape[1])
        o = out.view(2 * big - 1, 2 * big - 1, -1)
        s = src.reshape(2 * old - 1, 2 * old - 1, -1)
        o[big - w:big + w - 1, big - w:big + w - 1, :h] = s[old - w:old + w - 1, old - w:old + w - 1, :h]
        return out
    if key.endswith("attn.qkv.weight") or key.endswith("attn.qkv.bias"):
        o, s = out.view(3, out.shape[0] // 3, *out.shape[1:]), src.reshape(3, src.shape[0] // 3, *src.shape[1:])
    else:
        o, s = out, src
    if ".downsample." in key and (key.endswith("norm.weight") or key.endswith("norm.bias")
                                  or key.endswith("reduction.weight")):
        o = o.view(*o.shape[:-1], 4, o.shape[-1] // 4)
        s = s.reshape(*s.shape[:-1], 4, s.shape[-1] // 4)
    region = tuple(slice(0, min(a, b)) for a, b in zip(o.shape, s.shape))
    o[region] = s[region]
    return out
