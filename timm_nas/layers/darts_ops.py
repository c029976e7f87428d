"""DARTS candidate operations and the mixed operation of the search cell (their analytic costs:
:mod:`timm_nas.cost.darts`).

Exact re-implementation of quark0/darts ``cnn/operations.py`` (commit ``f276dd346a09ae3160f8e3aca5c7b193fda1da37``)
and of ``MixedOp`` in ``cnn/model_search.py``. Every operation maps ``C -> C`` channels with stride 1 or 2; the
order inside every block is ReLU -> convolution -> BatchNorm (pre-activation), convolutions have no bias, and
the module/attribute layout keeps the original's state-dict keys (``op.1.weight``, ``conv_1``, ``bn``, ...).
"""

from typing import Sequence

import torch
import torch.nn as nn

__all__ = [
    "Zero",
    "FactorizedReduce",
    "ReLUConvBN",
    "SepConv",
    "DilConv",
    "MixedOp",
    "create_darts_op",
    "darts_drop_path",
    "DARTS_OP_NAMES",
]

#: BatchNorm defaults of the original (``nn.BatchNorm2d`` defaults).
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def _bn(C: int, affine: bool, track_running_stats: bool = True, **dd) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(C, eps=BN_EPS, momentum=BN_MOMENTUM, affine=affine, track_running_stats=track_running_stats,
                          **dd)


class Zero(nn.Module):
    """The ``none`` operation: zeros of the (strided) input's shape, ``x[:, :, ::s, ::s] * 0``."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.)
        return x[:, :, ::self.stride, ::self.stride].mul(0.)


class FactorizedReduce(nn.Module):
    """Stride-2 reduction by two 1x1 convolutions, the second shifted by one pixel, and one BatchNorm over the
    concatenation. Needs even input height and width (as the original)."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {C_out}")
        dd = dict(device=device, dtype=dtype)
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False, **dd)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False, **dd)
        self.bn = _bn(C_out, affine, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        out = torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)  # (B, C_out, H/2, W/2)
        return self.bn(out)


class ReLUConvBN(nn.Module):
    """ReLU -> Conv2d -> BatchNorm, kept under ``op`` (keys ``op.1.weight``, ``op.1.bias``, ``op.2.*``).

    DARTS' convolutions have no bias (the defaults). NAS-Bench-201's ``ReLUConvBN`` (D-X-Y/AutoDL-Projects
    ``xautodl/models/cell_operations.py``) is the same block with ``bias=not affine`` and an optional
    ``track_running_stats=False``.
    """

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True,
                 bias: bool = False, track_running_stats: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=bias, **dd),
            _bn(C_out, affine, track_running_stats, **dd),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU -> dilated depthwise conv -> 1x1 conv -> BatchNorm (one block)."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=C_in,
                      bias=False, **dd),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False, **dd),
            _bn(C_out, affine, **dd),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Two stacked depthwise-separable blocks (ReLU -> depthwise -> 1x1 -> BN), the stride in the first only."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False, **dd),
            nn.Conv2d(C_in, C_in, 1, padding=0, bias=False, **dd),
            _bn(C_in, affine, **dd),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False, **dd),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False, **dd),
            _bn(C_out, affine, **dd),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def _conv_7x1_1x7(C: int, stride: int, affine: bool, **dd) -> nn.Sequential:
    # The original builds this one as a bare Sequential (keys ``1.weight``, ``2.weight``, ``3.*``).
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False, **dd),
        nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False, **dd),
        _bn(C, affine, **dd),
    )


#: The operation factory table (the original's ``OPS``): name -> fn(C, stride, affine, **dd).
_OPS = {
    "none": lambda C, stride, affine, **dd: Zero(stride),
    "avg_pool_3x3": lambda C, stride, affine, **dd: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda C, stride, affine, **dd: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda C, stride, affine, **dd: (
        nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine, **dd)),
    "sep_conv_3x3": lambda C, stride, affine, **dd: SepConv(C, C, 3, stride, 1, affine=affine, **dd),
    "sep_conv_5x5": lambda C, stride, affine, **dd: SepConv(C, C, 5, stride, 2, affine=affine, **dd),
    "sep_conv_7x7": lambda C, stride, affine, **dd: SepConv(C, C, 7, stride, 3, affine=affine, **dd),
    "dil_conv_3x3": lambda C, stride, affine, **dd: DilConv(C, C, 3, stride, 2, 2, affine=affine, **dd),
    "dil_conv_5x5": lambda C, stride, affine, **dd: DilConv(C, C, 5, stride, 4, 2, affine=affine, **dd),
    "conv_7x1_1x7": lambda C, stride, affine, **dd: _conv_7x1_1x7(C, stride, affine, **dd),
}

#: Names :func:`create_darts_op` knows (equal to :data:`timm_nas.spaces.darts.OPERATIONS`).
DARTS_OP_NAMES: tuple[str, ...] = tuple(_OPS)


def create_darts_op(name: str, C: int, stride: int, affine: bool, device=None, dtype=None) -> nn.Module:
    """Build operation ``name`` for ``C`` channels (the original's ``OPS[name](C, stride, affine)``)."""
    if name not in _OPS:
        raise ValueError(f"unknown DARTS operation {name!r}; allowed values: {list(_OPS)}")
    if stride not in (1, 2):
        raise ValueError(f"DARTS operations take stride 1 or 2, got {stride}")
    return _OPS[name](C, stride, affine, device=device, dtype=dtype)


def darts_drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """The original's drop path (``utils.drop_path``): per sample, keep with probability ``1 - p`` and rescale,
    computed in the original's order ``(x / keep) * mask`` (out of place; draws from the global RNG like timm's
    ``DropPath``)."""
    keep_prob = 1. - drop_prob
    mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep_prob)
    return x.div(keep_prob).mul(mask)


class MixedOp(nn.Module):
    """A search-cell edge: every primitive, summed with its architecture weight.

    As in the original, the operations are built with ``affine=False`` and a pooling primitive is followed by a
    ``BatchNorm2d(C, affine=False)`` (keys ``ops.<k>.1.running_mean``).

    The original computes ``sum(w * op(x))`` over all primitives including ``none`` (``w * 0``). Skipping ``none``
    gives the same sum bit for bit (adding ``w * 0 = 0`` to a running sum that starts at 0 changes nothing) and the
    same architecture gradient (``dL/dw_none = 0`` either way), except when the input holds inf / NaN; it saves one
    multiply and one add of a full feature map per edge.
    """

    def __init__(self, C: int, stride: int, primitives: Sequence[str], device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        ops = []
        for name in primitives:
            op = create_darts_op(name, C, stride, affine=False, **dd)
            if "pool" in name:
                op = nn.Sequential(op, _bn(C, affine=False, **dd))
            ops.append(op)
        self.ops = nn.ModuleList(ops)
        self.active = [name != "none" for name in primitives]
        self.none_index = list(primitives).index("none") if "none" in primitives else -1

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor | None = None
        for k, op in enumerate(self.ops):
            if not self.active[k]:
                continue
            y = weights[k] * op(x)
            out = y if out is None else out + y
        if out is None:  # only 'none' on this edge: the original's w * 0
            out = weights[self.none_index] * self.ops[self.none_index](x)
        return out
