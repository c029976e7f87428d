"""DARTS's analytic cost: exact parameters and multiply-accumulates of a genotype network (``darts_cifar`` /
``darts_imagenet``), of each candidate operation, and the network's channel plan, which the model shares.

Paper: Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019 (arXiv:1806.09055).
Original code: https://github.com/quark0/darts (commit ``f276dd346a09ae3160f8e3aca5c7b193fda1da37``),
``cnn/model.py`` and ``cnn/operations.py``.
"""

from typing import Any, Callable, Iterator, Mapping

from ..spaces.darts import OPERATIONS, Genotype
from .analytic import register_cost

__all__ = ["darts_params", "darts_macs", "op_params", "op_macs"]

#: Stem width = ``STEM_MULTIPLIER * C`` in NetworkCIFAR and the search network (cnn/model.py ``stem_multiplier = 3``).
STEM_MULTIPLIER = 3
#: Channels of the auxiliary heads' hidden convolutions (cnn/model.py ``AuxiliaryHeadCIFAR`` / ``ImageNet``).
AUX_HIDDEN = 128
AUX_WIDTH = 768
#: The original evaluation networks: cnn/train.py (CIFAR-10: C=36, 20 cells, 32x32) and cnn/train_imagenet.py
#: (ImageNet: C=48, 14 cells, 224x224). Defaults of the entrypoints and of the analytic cost model.
RECIPES: dict[str, dict[str, int]] = {
    "cifar": dict(C=36, layers=20, num_classes=10, img_size=32),
    "imagenet": dict(C=48, layers=14, num_classes=1000, img_size=224),
}

_STEM_TYPES = ("cifar", "imagenet")


def _cell_plan(C: int, layers: int, C_stem: int, reduction_prev: bool,
               multiplier: Callable[[bool], int]) -> Iterator[tuple[int, int, int, bool, bool]]:
    """The original's channel plan: ``(C_prev_prev, C_prev, C_curr, reduction, reduction_prev)`` per cell.

    Reduction cells sit at ``layers // 3`` and ``2 * layers // 3`` and double ``C_curr``; a cell's output has
    ``multiplier(reduction) * C_curr`` channels.
    """
    C_prev_prev, C_prev, C_curr = C_stem, C_stem, C
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            C_curr *= 2
        yield C_prev_prev, C_prev, C_curr, reduction, reduction_prev
        reduction_prev = reduction
        C_prev_prev, C_prev = C_prev, multiplier(reduction) * C_curr


def _out(size: int, stride: int) -> int:
    # Every DARTS operation pads to "same" size: output = ceil(size / stride).
    return -(-size // stride)


def op_params(name: str, C: int, stride: int, affine: bool = True) -> int:
    """Parameters of operation ``name`` with ``C`` channels (BatchNorm affine weights counted when ``affine``)."""
    bn = 2 * C if affine else 0
    if name in ("none", "avg_pool_3x3", "max_pool_3x3"):
        return 0
    if name == "skip_connect":
        return 0 if stride == 1 else 2 * C * (C // 2) + bn
    if name.startswith("sep_conv_"):
        k = int(name[-1])
        return 2 * (k * k * C + C * C + bn)
    if name.startswith("dil_conv_"):
        k = int(name[-1])
        return k * k * C + C * C + bn
    if name == "conv_7x1_1x7":
        return 2 * 7 * C * C + bn
    raise ValueError(f"unknown DARTS operation {name!r}; allowed values: {list(OPERATIONS)}")


def op_macs(name: str, C: int, stride: int, height: int, width: int) -> int:
    """Multiply-accumulates of convolutions in operation ``name`` on a ``C x height x width`` input (pooling,
    BatchNorm, ReLU and additions are not counted)."""
    ho, wo = _out(height, stride), _out(width, stride)
    if name in ("none", "avg_pool_3x3", "max_pool_3x3"):
        return 0
    if name == "skip_connect":
        return 0 if stride == 1 else 2 * (C // 2) * C * ho * wo
    if name.startswith("sep_conv_"):
        k = int(name[-1])
        return 2 * (k * k * C + C * C) * ho * wo
    if name.startswith("dil_conv_"):
        k = int(name[-1])
        return (k * k * C + C * C) * ho * wo
    if name == "conv_7x1_1x7":
        return 7 * C * C * height * wo + 7 * C * C * ho * wo
    raise ValueError(f"unknown DARTS operation {name!r}; allowed values: {list(OPERATIONS)}")


def _bn_params(C: int) -> int:
    return 2 * C


def _recipe(stem_type: str) -> dict[str, int]:
    if stem_type not in _STEM_TYPES:
        raise ValueError(f"stem_type={stem_type!r} is not allowed; allowed values: {list(_STEM_TYPES)}")
    return RECIPES[stem_type]


def darts_params(cfg: Genotype | Mapping[str, Any] | str, *, stem_type: str = "cifar", C: int | None = None,
                 layers: int | None = None, num_classes: int | None = None, auxiliary: bool = False,
                 in_chans: int = 3, img_size: int | tuple[int, int] | None = None) -> int:
    """Analytic parameter count of the genotype network of ``cfg`` (a genotype): ``stem_type='cifar'``
    (``darts_cifar``) or ``'imagenet'`` (``darts_imagenet``); keyword names are the model's arguments.

    Defaults are the original recipes: CIFAR C=36, 20 layers, 10 classes; ImageNet C=48, 14 layers, 1000 classes.
    ``img_size`` does not change the count (taken so that both formulas accept the model's ``cost_args``).
    """
    recipe, imagenet = _recipe(stem_type), stem_type == "imagenet"
    C = recipe["C"] if C is None else C
    layers = recipe["layers"] if layers is None else layers
    num_classes = recipe["num_classes"] if num_classes is None else num_classes
    genotype = Genotype.resolve(cfg)
    if imagenet:
        total = 9 * in_chans * (C // 2) + _bn_params(C // 2) + 9 * (C // 2) * C + _bn_params(C) + 9 * C * C + _bn_params(C)
        C_stem = C
    else:
        C_stem = STEM_MULTIPLIER * C
        total = 9 * in_chans * C_stem + _bn_params(C_stem)
    C_aux = C_last = 0
    for i, (C_pp, C_p, C_curr, red, red_prev) in enumerate(
            _cell_plan(C, layers, C_stem, imagenet, lambda r: len(genotype.cell(r)[1]))):
        pairs, concat = genotype.cell(red)
        total += C_pp * C_curr + _bn_params(C_curr)  # preprocess0 (FactorizedReduce or 1x1 ReLUConvBN: same count)
        total += C_p * C_curr + _bn_params(C_curr)
        total += sum(op_params(op, C_curr, 2 if red and idx < 2 else 1) for op, idx in pairs)
        C_last = len(concat) * C_curr
        if i == 2 * layers // 3:
            C_aux = C_last
    total += C_last * num_classes + num_classes if num_classes > 0 else 0
    if auxiliary:
        total += C_aux * AUX_HIDDEN + _bn_params(AUX_HIDDEN) + AUX_HIDDEN * AUX_WIDTH * 4
        total += 0 if imagenet else _bn_params(AUX_WIDTH)
        total += AUX_WIDTH * num_classes + num_classes if num_classes > 0 else 0
    return total


def darts_macs(cfg: Genotype | Mapping[str, Any] | str, *, stem_type: str = "cifar", C: int | None = None,
               layers: int | None = None, num_classes: int | None = None,
               img_size: int | tuple[int, int] | None = None, in_chans: int = 3, auxiliary: bool = False) -> int:
    """Analytic multiply-accumulates of one image through the genotype network of ``cfg`` in eval mode
    (``stem_type`` as in :func:`darts_params`; default image size 32 for CIFAR, 224 for ImageNet).

    Convention (that of :mod:`timm_nas.cost`): convolutions and the classifier only; BatchNorm, ReLU, pooling and
    additions are not counted. For DARTS_V2 ImageNet (C=48, 14 layers) at 224x224 this is 529,911,552 (529.9M); the
    paper's 574M is not reproducible (see the registry entry). ``auxiliary`` does not change the count (the
    auxiliary head runs only in training).
    """
    recipe, imagenet = _recipe(stem_type), stem_type == "imagenet"
    C = recipe["C"] if C is None else C
    layers = recipe["layers"] if layers is None else layers
    num_classes = recipe["num_classes"] if num_classes is None else num_classes
    img_size = recipe["img_size"] if img_size is None else img_size
    H, W = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    genotype = Genotype.resolve(cfg)
    half = lambda n: -(-n // 2)  # noqa: E731  (stride-2, "same" padding: ceil(n / 2))
    if imagenet:
        h, w = half(H), half(W)
        total = 9 * in_chans * (C // 2) * h * w
        h, w = half(h), half(w)
        total += 9 * (C // 2) * C * h * w
        size0 = (h, w)
        h, w = half(h), half(w)
        total += 9 * C * C * h * w
        size1 = (h, w)
        C_stem = C
    else:
        C_stem = STEM_MULTIPLIER * C
        total = 9 * in_chans * C_stem * H * W
        size0 = size1 = (H, W)
    C_last = 0
    for C_pp, C_p, C_curr, red, red_prev in _cell_plan(C, layers, C_stem, imagenet,
                                                       lambda r: len(genotype.cell(r)[1])):
        pairs, concat = genotype.cell(red)
        h1, w1 = size1
        if red_prev:
            total += 2 * (C_curr // 2) * C_pp * half(size0[0]) * half(size0[1])
        else:
            total += C_pp * C_curr * size0[0] * size0[1]
        total += C_p * C_curr * h1 * w1
        out = (half(h1), half(w1)) if red else (h1, w1)
        for op, idx in pairs:
            stride = 2 if red and idx < 2 else 1
            hi, wi = (h1, w1) if idx < 2 else out
            total += op_macs(op, C_curr, stride, hi, wi)
        C_last = len(concat) * C_curr
        size0, size1 = size1, out
    return total + C_last * num_classes


register_cost(Genotype, darts_params, darts_macs)
