"""NAS-Bench-201's analytic cost: exact parameters and multiply-accumulates of a cell's CIFAR network
(``nb201_cifar``).

Paper: Dong and Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search", ICLR 2020
(arXiv:2001.00326), section 2.1 and Figure 1: a 3x3 convolution stem, three stages of ``N`` cells with ``C``,
``2C``, ``4C`` channels separated by residual reduction blocks, a final BatchNorm + ReLU, global pooling and a linear
classifier. Code: https://github.com/D-X-Y/NAS-Bench-201 (``xautodl`` package: ``models/cell_infers/tiny_network.py``,
``models/cell_operations.py``).
"""
from __future__ import annotations

from typing import Any, Mapping

from ..spaces.nb201 import NB201_OPS, NB201Cell
from .analytic import register_cost

__all__ = ["nb201_params", "nb201_macs", "edge_params", "edge_macs", "STAGES", "RECIPE"]

#: Stages of the network; each after the first starts with a stride-2 residual block doubling the channels.
STAGES = 3
#: The benchmark's network: C=16, N=5 cells per stage, CIFAR-10 at 32x32 (NAS-Bench-201 paper, section 2.1).
RECIPE: dict[str, int] = dict(C=16, N=5, num_classes=10, img_size=32)


def edge_params(op: str, C: int) -> int:
    """Parameters of one cell edge with ``C`` channels (BatchNorm affine weights counted, as in the benchmark)."""
    if op == "nor_conv_3x3":
        return 9 * C * C + 2 * C
    if op == "nor_conv_1x1":
        return C * C + 2 * C
    if op in ("none", "skip_connect", "avg_pool_3x3"):
        return 0
    raise ValueError(f"unknown NAS-Bench-201 operation {op!r}; allowed values: {list(NB201_OPS)}")


def edge_macs(op: str, C: int, height: int, width: int) -> int:
    """Multiply-accumulates of one cell edge (convolutions only; pooling and BatchNorm are not counted)."""
    edge_params(op, C)  # validates the name
    kernel_area = {"nor_conv_3x3": 9, "nor_conv_1x1": 1}.get(op, 0)
    return kernel_area * C * C * height * width


def _res_block_params(C_in: int, C_out: int) -> int:
    # conv_a (3x3, stride 2) + BN, conv_b (3x3) + BN, downsample: AvgPool(2) + 1x1 conv without BN
    return 9 * C_in * C_out + 2 * C_out + 9 * C_out * C_out + 2 * C_out + C_in * C_out


def nb201_params(cfg: NB201Cell | Mapping[str, Any] | str | int, *, C: int = RECIPE["C"], N: int = RECIPE["N"],
                 num_classes: int = RECIPE["num_classes"], in_chans: int = 3,
                 img_size: int | tuple[int, int] | None = None) -> int:
    """Analytic parameter count of the ``nb201_cifar`` network of ``cfg``; keyword names are the model's arguments
    (``img_size`` does not change the count: taken so that both formulas accept the model's ``cost_args``)."""
    cell = NB201Cell.resolve(cfg)
    total = 9 * in_chans * C + 2 * C  # stem conv + BN
    for stage in range(STAGES):
        c = C * 2 ** stage
        if stage:
            total += _res_block_params(c // 2, c)
        total += N * sum(edge_params(op, c) for op in cell.ops)
    c_last = C * 2 ** (STAGES - 1)
    total += 2 * c_last  # lastact BN
    return total + (c_last * num_classes + num_classes if num_classes > 0 else 0)


def nb201_macs(cfg: NB201Cell | Mapping[str, Any] | str | int, *, C: int = RECIPE["C"], N: int = RECIPE["N"],
               num_classes: int = RECIPE["num_classes"], in_chans: int = 3,
               img_size: int | tuple[int, int] | None = None) -> int:
    """Analytic multiply-accumulates of one image through the ``nb201_cifar`` network of ``cfg`` (default 32x32):
    convolutions and the classifier, the convention of :mod:`timm_nas.cost`."""
    cell = NB201Cell.resolve(cfg)
    img_size = RECIPE["img_size"] if img_size is None else img_size
    H, W = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    total = 9 * in_chans * C * H * W
    for stage in range(STAGES):
        c = C * 2 ** stage
        if stage:
            ho, wo = -(-H // 2), -(-W // 2)  # 3x3 conv, stride 2, padding 1
            total += 9 * (c // 2) * c * ho * wo + 9 * c * c * ho * wo
            total += (c // 2) * c * (H // 2) * (W // 2)  # 1x1 conv after AvgPool2d(2, 2)
            H, W = ho, wo
        total += N * sum(edge_macs(op, c, H, W) for op in cell.ops)
    return total + C * 2 ** (STAGES - 1) * num_classes


register_cost(NB201Cell, nb201_params, nb201_macs)
