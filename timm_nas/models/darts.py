"""DARTS networks: the genotype networks (CIFAR / ImageNet) and the search network, as timm models.

Paper: Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019 (arXiv:1806.09055).
Original code: https://github.com/quark0/darts (commit ``f276dd346a09ae3160f8e3aca5c7b193fda1da37``),
``cnn/model.py`` (``NetworkCIFAR`` / ``NetworkImageNet``) and ``cnn/model_search.py`` (``Network``).

* ``darts_cifar`` / ``darts_imagenet``: a network built from a :class:`~timm_nas.spaces.darts.Genotype` (a registry
  name such as ``'darts_v2'``, a genotype dict, or the original ``Genotype(...)`` text), with the original's stems,
  cell plan, auxiliary head and drop path. ``model(x)`` returns logits; ``model.forward_with_aux(x)`` returns
  ``(logits, aux_logits)`` (the original's forward).
* ``<key>_cifar`` / ``<key>_imagenet``: one pair per published genotype in ``registry/darts.json``.
* ``darts_search``: the search network with the architecture weights ``alphas_normal`` / ``alphas_reduce``.

The module layout keeps the original's state-dict keys except ``_ops`` (``ops`` in a genotype cell, ``edges.<e>.ops``
in a search cell) and NetworkImageNet's ``stem0`` (``stem``); :func:`checkpoint_filter_fn` converts the original
checkpoints.
"""

import re
import warnings
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import create_classifier, get_device_dtype
from timm.models import generate_default_cfgs, register_model
from timm.models._input import update_model_args
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint

from ._build import build_model
from ..cost.darts import _STEM_TYPES, AUX_HIDDEN, AUX_WIDTH, RECIPES, STEM_MULTIPLIER, _cell_plan
from ..family import Family, register_family
from ._cnn_api import GLOBAL_POOLS, CellNetApiMixin, check_global_pool  # noqa: F401 (GLOBAL_POOLS: public name)
from ..layers.darts_ops import FactorizedReduce, MixedOp, ReLUConvBN, create_darts_op, darts_drop_path
from ..registry import load_registry
from ..spaces.darts import PRIMITIVES, DartsSpace, Genotype

__all__ = [
    "DartsCell",
    "DartsSearchCell",
    "AuxiliaryHead",
    "DartsNet",
    "DartsSearchNet",
    "checkpoint_filter_fn",
    "CIFAR_MEAN",
    "CIFAR_STD",
]

#: CIFAR-10 normalisation of the original (quark0/darts cnn/utils.py ``_data_transforms_cifar10``).
CIFAR_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR_STD = (0.24703233, 0.24348505, 0.26158768)

#: Scale of the architecture weights' initialisation, ``1e-3 * randn`` (cnn/model_search.py ``_initialize_alphas``).
ALPHA_INIT_SCALE = 1e-3


def _json_size(size: int | Sequence[int]) -> int | list[int]:
    """An image size as ``cost_args`` / ``config.json`` hold it: an int when square."""
    if isinstance(size, int):
        return size
    h, w = (int(v) for v in size)
    return h if h == w else [h, w]


def _stage_ends(layers: int) -> list[int]:
    """Index of the last cell before each reduction, and of the last cell (the feature taps)."""
    ends = [layers // 3 - 1, 2 * layers // 3 - 1, layers - 1]
    return sorted({e for e in ends if e >= 0})


# ------------------------------------------------------------------------------------------------ blocks
class DartsCell(nn.Module):
    """A genotype cell (cnn/model.py ``Cell``): node i sums ``ops[2i](states[idx[2i]])`` and
    ``ops[2i+1](states[idx[2i+1]])``; the output concatenates the ``concat`` states.

    In a reduction cell the operations reading the cell inputs (index 0 / 1) run with stride 2. Drop path is applied
    in training to every operation output except identities (as the original).
    """

    def __init__(self, pairs: Sequence[tuple[str, int]], concat: Sequence[int], C_prev_prev: int, C_prev: int,
                 C: int, reduction: bool, reduction_prev: bool, device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=True, **dd)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=True, **dd)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=True, **dd)
        self.reduction = reduction
        self.multiplier = len(concat)
        ops = [create_darts_op(name, C, 2 if reduction and index < 2 else 1, affine=True, **dd) for name, index in pairs]
        self.ops = nn.ModuleList(ops)
        self.indices: list[int] = [int(index) for _, index in pairs]
        self.concat: list[int] = [int(i) for i in concat]
        self.droppable: list[bool] = [not isinstance(op, nn.Identity) for op in ops]

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        first = states[0]
        for j, op in enumerate(self.ops):
            h = op(states[self.indices[j]])
            if self.training and drop_prob > 0. and self.droppable[j]:
                h = darts_drop_path(h, drop_prob)
            if j % 2 == 0:
                first = h
            else:
                states.append(first + h)
        return torch.cat([states[i] for i in self.concat], dim=1)


class DartsSearchCell(nn.Module):
    """A search cell (cnn/model_search.py ``Cell``): every earlier state feeds every node through a
    :class:`MixedOp`; edges are ordered node-major, input-minor (the row order of the architecture weights)."""

    def __init__(self, steps: int, multiplier: int, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, primitives: Sequence[str], device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False, **dd)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False, **dd)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False, **dd)
        self.reduction = reduction
        self.steps = steps
        self.multiplier = multiplier
        self.edges = nn.ModuleList([
            MixedOp(C, 2 if reduction and j < 2 else 1, primitives, **dd)
            for i in range(steps) for j in range(2 + i)
        ])

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            s: torch.Tensor | None = None
            for j, h in enumerate(states):  # the original's Python sum over inputs in index order
                y = self.edges[offset + j](h, weights[offset + j])
                s = y if s is None else s + y
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self.multiplier:], dim=1)


class AuxiliaryHead(nn.Module):
    """The auxiliary classifier (cnn/model.py ``AuxiliaryHeadCIFAR`` / ``AuxiliaryHeadImageNet``).

    ReLU -> AvgPool(5, stride 3 (CIFAR) / 2 (ImageNet)) -> 1x1 conv -> BN -> ReLU -> 2x2 conv -> [BN, CIFAR only] ->
    ReLU -> Linear. Expects an 8x8 (CIFAR) / 7x7 (ImageNet) input. The first ReLU is in place, as in the original:
    it also rectifies the backbone tensor it reads (see :meth:`DartsNet.forward_with_aux`).
    """

    def __init__(self, C: int, num_classes: int, imagenet: bool, device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        layers: list[nn.Module] = [
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=2 if imagenet else 3, padding=0, count_include_pad=False),
            nn.Conv2d(C, AUX_HIDDEN, 1, bias=False, **dd),
            nn.BatchNorm2d(AUX_HIDDEN, **dd),
            nn.ReLU(inplace=True),
            nn.Conv2d(AUX_HIDDEN, AUX_WIDTH, 2, bias=False, **dd),
        ]
        if not imagenet:  # the original drops this BN in the ImageNet head "for consistency with the paper"
            layers.append(nn.BatchNorm2d(AUX_WIDTH, **dd))
        layers.append(nn.ReLU(inplace=True))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(AUX_WIDTH, num_classes, **dd) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.flatten(1))


class DartsNet(CellNetApiMixin, nn.Module):
    """A DARTS genotype network: the original's ``NetworkCIFAR`` (``stem_type='cifar'``) or ``NetworkImageNet``
    (``stem_type='imagenet'``) as a timm model.

    Args:
        genotype: a registry name or alias (``'darts_v2'``, ``'DARTS_V2'``), a genotype dict, a
            :class:`~timm_nas.spaces.darts.Genotype`, or the original ``Genotype(normal=[...], ...)`` text.
        C: initial channels (36 in the original CIFAR recipe, 48 for ImageNet).
        layers: number of cells (20 / 14); reductions at ``layers // 3`` and ``2 * layers // 3``.
        num_classes: classifier width (0 removes it).
        stem_type: ``'cifar'`` (3x3 conv stem, no downsampling) or ``'imagenet'`` (stride-8 two-part stem).
        auxiliary: build the auxiliary head after the second reduction cell; it is used only by
            :meth:`forward_with_aux` in training (``model(x)`` never runs it, so leave it off for timm's train.py).
        drop_path_rate: initial value of :attr:`drop_path_prob`, the drop-path probability of every cell (the
            original ramps it per epoch: set ``model.drop_path_prob``).
        drop_rate: dropout before the classifier (0 in the original).
        in_chans: input channels.
        global_pool: timm pooling type of the head (``'avg'`` is the original's; the ImageNet original's fixed
            ``AvgPool2d(7)`` equals it at 224x224 input).
        img_size: the nominal input size, recorded for the analytic cost and the export (default: the recipe's, 32
            or 224). The network itself takes any input size (convolutions and a global pool); for timm's data
            config, as for its CNNs, the image size is a preprocessing choice.
    """

    def __init__(
            self,
            genotype: Genotype | Mapping[str, Any] | str = "darts_v2",
            C: int = 36,
            layers: int = 20,
            num_classes: int = 10,
            stem_type: str = "cifar",
            auxiliary: bool = False,
            drop_path_rate: float = 0.,
            drop_rate: float = 0.,
            in_chans: int = 3,
            global_pool: str = "avg",
            img_size: int | tuple[int, int] | None = None,
            device=None,
            dtype=None,
    ) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if stem_type not in _STEM_TYPES:
            raise ValueError(f"stem_type={stem_type!r} is not allowed; allowed values: {list(_STEM_TYPES)}")
        if C < 2 or layers < 1:
            raise ValueError(f"C must be at least 2 and layers at least 1, got C={C}, layers={layers}")
        self.genotype = Genotype.resolve(genotype)
        self.C = C
        self.stem_type = stem_type
        # The cost formulas' shape arguments (timm_nas.cost.model_cost); the network takes any input size, the cost
        # is counted at the recipe's (32 for CIFAR, 224 for ImageNet: the default_cfgs' input_size).
        self.cost_args = dict(stem_type=stem_type, C=C, layers=layers, num_classes=num_classes, auxiliary=auxiliary,
                              in_chans=in_chans, img_size=_json_size(img_size or RECIPES[stem_type]["img_size"]))
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.drop_path_prob = float(drop_path_rate)
        self.grad_checkpointing = False
        imagenet = stem_type == "imagenet"

        if imagenet:
            self.stem = nn.Sequential(  # the original's stem0 (s0 at stride 4)
                nn.Conv2d(in_chans, C // 2, 3, stride=2, padding=1, bias=False, **dd),
                nn.BatchNorm2d(C // 2, **dd),
                nn.ReLU(inplace=True),
                nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False, **dd),
                nn.BatchNorm2d(C, **dd),
            )
            # The original's ReLU here is in place and so also rectifies s0; every consumer of s0 starts with a
            # ReLU, so an out-of-place ReLU gives identical outputs and gradients without aliasing s0.
            self.stem1 = nn.Sequential(
                nn.ReLU(inplace=False),
                nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False, **dd),
                nn.BatchNorm2d(C, **dd),
            )
            C_stem, stem_chs, stem_reduction, base_reduction = C, C, 4, 8
        else:
            C_stem = STEM_MULTIPLIER * C
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, C_stem, 3, padding=1, bias=False, **dd),
                nn.BatchNorm2d(C_stem, **dd),
            )
            self.stem1 = None
            stem_chs, stem_reduction, base_reduction = C_stem, 1, 1

        g = self.genotype
        plan = list(_cell_plan(C, layers, C_stem, reduction_prev=imagenet,
                               multiplier=lambda red: len(g.cell(red)[1])))
        cells = []
        self.aux_index = 2 * layers // 3
        C_aux = 0
        for i, (C_pp, C_p, C_curr, reduction, reduction_prev) in enumerate(plan):
            pairs, concat = g.cell(reduction)
            cells.append(DartsCell(pairs, concat, C_pp, C_p, C_curr, reduction, reduction_prev, **dd))
            if i == self.aux_index:
                C_aux = cells[-1].multiplier * C_curr
        self.cells = nn.ModuleList(cells)
        self.num_features = self.head_hidden_size = cells[-1].multiplier * plan[-1][2]
        self.auxiliary_head = AuxiliaryHead(C_aux, num_classes, imagenet, **dd) if auxiliary else None

        self.global_pool, self.head_drop, self.classifier = create_classifier(
            self.num_features, num_classes, pool_type=check_global_pool(global_pool), drop_rate=drop_rate, **dd)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

        # Feature taps: the stem, then the last cell of every resolution.
        self.feature_info = [dict(num_chs=stem_chs, reduction=stem_reduction, module="stem")]
        reduction_at = base_reduction
        for i, cell in enumerate(cells):
            if cell.reduction:
                reduction_at *= 2
            if i in _stage_ends(layers):
                chs = cell.multiplier * plan[i][2]
                self.feature_info.append(dict(num_chs=chs, reduction=reduction_at, module=f"cells.{i}"))

    # --------------------------------------------------------------------------------------- timm API
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stem", blocks=r"^cells\.(\d+)")

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (and the auxiliary head's classifier) with one for ``num_classes``."""
        dd = get_device_dtype(self)
        self._reset_pool_classifier(num_classes, global_pool)
        if self.auxiliary_head is not None:
            aux = self.auxiliary_head
            aux.classifier = nn.Linear(AUX_WIDTH, num_classes, **dd) if num_classes > 0 else nn.Identity()
            aux.classifier.train(self.training)

    @torch.jit.ignore
    def set_input_size(self, img_size: int | tuple[int, int] | None = None, **kwargs: Any) -> None:
        """Change the nominal input size (the analytic cost and the export's ``img_size``); the network runs any
        size already, so no weight changes."""
        from timm.models._input import update_model_input_size

        unknown = sorted(k for k, v in kwargs.items() if v is not None)
        if unknown:
            raise ValueError(f"a DARTS network has no {unknown} to change; set_input_size takes img_size only")
        if img_size is None:
            return
        self.cost_args["img_size"] = _json_size(img_size)
        update_model_input_size(self, img_size)

    # ------------------------------------------------------------------------------------------ forward
    def _stems(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem(x)
        if self.stem1 is not None:
            return s0, self.stem1(s0)
        return s0, s0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        s0, s1 = self._stems(x)
        for cell in self.cells:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                s0, s1 = s1, checkpoint(cell, s0, s1, self.drop_path_prob)
            else:
                s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
        return s1

    def _taps(self) -> list[int]:
        """Cell index of every feature tap after the stem (``feature_info[1:]``)."""
        return [int(info["module"].split(".")[1]) for info in self.feature_info[1:]]

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | list[int] | None = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Feature maps at the taps of ``feature_info`` (the stem, then the last cell of each resolution), as
        timm's CNNs return them (``features_only=True`` gives the same maps).

        Args:
            x: images.
            indices: the last ``n`` taps (int), the given tap indices (list), or every tap (``None``).
            norm: unused (no final norm in a DARTS network; kept for timm's signature).
            stop_early: stop after the last requested tap.
            output_fmt: only ``'NCHW'``.
            intermediates_only: return only the intermediates.

        Returns:
            ``(final features, intermediates)``, or the intermediates alone.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r} is not supported; DARTS feature maps are 'NCHW'")
        taps = self._taps()
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        intermediates: list[torch.Tensor] = []
        s0, s1 = self._stems(x)
        if 0 in take_indices:
            intermediates.append(s0)
        last = len(self.cells) - 1
        if stop_early:
            last = taps[max_index - 1] if max_index > 0 else -1
        for i, cell in enumerate(self.cells):
            if i > last:
                break
            if self.grad_checkpointing and not torch.jit.is_scripting():
                s0, s1 = s1, checkpoint(cell, s0, s1, self.drop_path_prob)
            else:
                s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i in taps and taps.index(i) + 1 in take_indices:
                intermediates.append(s1)
        if intermediates_only:
            return intermediates
        return s1, intermediates

    def prune_intermediate_layers(
            self,
            indices: int | list[int] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> list[int]:
        """Drop the cells after the last tap of ``indices`` (and the classifier when asked); returns the kept tap
        indices, as timm's CNNs do."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        taps = self._taps()
        keep = taps[max_index - 1] + 1 if max_index > 0 else 0
        self.cells = self.cells[:keep]
        if keep == 0:
            self.stem1 = None  # the features end at the stem tap (the ImageNet stem's second part feeds cells only)
        self.feature_info = self.feature_info[:max_index + 1]
        if self.auxiliary_head is not None and self.aux_index >= keep:
            self.auxiliary_head = None
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    @torch.jit.ignore
    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The original's forward: ``(logits, aux_logits)``, where ``aux_logits`` is computed only in training
        with the auxiliary head (else ``None``).

        As in the original, the head's first in-place ReLU also rectifies the output of the cell it reads. That is
        harmless when another cell follows (cells start with a ReLU) and changes the final features only when that
        cell is the last one (``layers`` <= 3); this method keeps the original's behaviour there, ``model(x)`` does
        not.
        """
        aux: torch.Tensor | None = None
        s0, s1 = self._stems(x)
        for i, cell in enumerate(self.cells):
            if self.grad_checkpointing:
                s0, s1 = s1, checkpoint(cell, s0, s1, self.drop_path_prob)
            else:
                s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        return self.forward_head(s1), aux


class DartsSearchNet(CellNetApiMixin, nn.Module):
    """The DARTS search network (cnn/model_search.py ``Network``) as a timm model.

    The architecture weights are parameters named ``alphas_normal`` and ``alphas_reduce``, each
    ``(num_edges, len(primitives))`` with rows in edge order (node-major, input-minor) and columns in primitive order,
    shared by all normal / all reduction cells. :meth:`arch_parameters` and :meth:`weight_parameters` split them from
    the network weights; :meth:`derive_arch` derives the discrete architecture.

    Training this model with timm's train.py optimises weights and alphas jointly on the same data, which is NOT
    the DARTS algorithm (a bilevel problem: weights on the training split, alphas on a held-out split); use
    :func:`timm_nas.search.darts.search` / ``timm-nas search darts`` for that.

    Args:
        C: initial channels (16 in the original search).
        layers: number of cells (8).
        steps: intermediate nodes per cell (4).
        multiplier: how many of the last states form a cell's output (4).
        stem_multiplier: stem width is ``stem_multiplier * C`` (3).
        num_classes: classifier width (10).
        primitives: candidate operations, the column order of the alphas (default: the original's
            :data:`~timm_nas.spaces.darts.PRIMITIVES`).
        in_chans: input channels.
        global_pool: timm pooling type of the head.
        drop_rate: dropout before the classifier (0 in the original).
    """

    def __init__(
            self,
            C: int = 16,
            layers: int = 8,
            steps: int = 4,
            multiplier: int = 4,
            stem_multiplier: int = STEM_MULTIPLIER,
            num_classes: int = 10,
            primitives: Sequence[str] | None = None,
            in_chans: int = 3,
            global_pool: str = "avg",
            drop_rate: float = 0.,
            device=None,
            dtype=None,
    ) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.space = DartsSpace(tuple(primitives) if primitives is not None else PRIMITIVES, steps, multiplier)
        if C < 2 or layers < 1 or stem_multiplier < 1:
            raise ValueError(f"C must be at least 2, layers and stem_multiplier at least 1; got C={C}, "
                             f"layers={layers}, stem_multiplier={stem_multiplier}")
        # The cost formulas' shape arguments: those of the evaluation network extract() builds (darts_cifar at the
        # paper's C=36, 20 cells, 32x32), not of this network (timm_nas.cost.model_cost).
        recipe = RECIPES["cifar"]
        self.cost_args = dict(stem_type="cifar", C=recipe["C"], layers=recipe["layers"], num_classes=num_classes,
                              auxiliary=False, in_chans=in_chans, img_size=recipe["img_size"])
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        C_stem = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, C_stem, 3, padding=1, bias=False, **dd),
            nn.BatchNorm2d(C_stem, **dd),  # the search network's only affine BatchNorm
        )
        plan = list(_cell_plan(C, layers, C_stem, reduction_prev=False, multiplier=lambda red: multiplier))
        self.cells = nn.ModuleList([
            DartsSearchCell(steps, multiplier, C_pp, C_p, C_curr, red, red_prev, self.space.primitives, **dd)
            for C_pp, C_p, C_curr, red, red_prev in plan
        ])
        self.num_features = multiplier * plan[-1][2]
        self.global_pool, self.head_drop, self.classifier = create_classifier(
            self.num_features, num_classes, pool_type=check_global_pool(global_pool), drop_rate=drop_rate, **dd)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        shape = (self.space.num_edges, len(self.space.primitives))
        # Drawn after every weight, in this order, like the original (which draws them from the global RNG).
        self.alphas_normal = nn.Parameter(ALPHA_INIT_SCALE * torch.randn(shape, **dd))
        self.alphas_reduce = nn.Parameter(ALPHA_INIT_SCALE * torch.randn(shape, **dd))

        self.feature_info = [dict(num_chs=C_stem, reduction=1, module="stem")]
        reduction_at = 1
        for i, (_, _, C_curr, red, _) in enumerate(plan):
            reduction_at *= 2 if red else 1
            if i in _stage_ends(layers):
                self.feature_info.append(dict(num_chs=multiplier * C_curr, reduction=reduction_at, module=f"cells.{i}"))

    # ---------------------------------------------------------------------------------- architecture API
    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture weights ``[alphas_normal, alphas_reduce]``."""
        return [self.alphas_normal, self.alphas_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the architecture weights, in ``named_parameters()`` order."""
        return [p for n, p in self.named_parameters() if n not in ("alphas_normal", "alphas_reduce")]

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if n not in ("alphas_normal", "alphas_reduce")]

    @torch.no_grad()
    def derive_arch(self) -> Genotype:
        """The genotype the original derives from the current alphas (softmax over all primitives, including
        ``none``; see :meth:`timm_nas.spaces.darts.DartsSpace.derive`). The same method as the SPViT search
        network's."""
        return self.space.derive(F.softmax(self.alphas_normal, dim=-1), F.softmax(self.alphas_reduce, dim=-1))

    def genotype(self) -> Genotype:
        """Deprecated spelling of :meth:`derive_arch`."""
        warnings.warn("DartsSearchNet.genotype() is deprecated; use derive_arch() (one name across families)",
                      DeprecationWarning, stacklevel=2)
        return self.derive_arch()

    def static_model_args(self, genotype: Genotype | Mapping[str, Any] | str | None = None) -> dict[str, Any]:
        """JSON-native ``darts_cifar`` arguments of the evaluation network of ``genotype`` (default:
        :meth:`derive_arch`), at ``darts_cifar``'s default width and depth (C=36, 20 cells: the paper's
        evaluation network, not the search network's 16 / 8)."""
        g = self.derive_arch() if genotype is None else Genotype.resolve(genotype)
        return dict(genotype=g.to_dict(), num_classes=self.num_classes, in_chans=self.in_chans)

    def extract(self, genotype: Genotype | Mapping[str, Any] | str | None = None, **kwargs: Any) -> "DartsNet":
        """A new ``darts_cifar`` evaluation network of ``genotype`` (default: :meth:`derive_arch`).

        Its weights are freshly initialised: DARTS trains the derived network from scratch (Liu et al. 2019,
        "DARTS: Differentiable Architecture Search", section 3.3); nothing is inherited from the search network,
        whose cells have another shape.

        Args:
            genotype: the architecture (a ``Genotype``, its dict, a registry name or the original text).
            **kwargs: other ``darts_cifar`` arguments (e.g. ``C``, ``layers``, ``auxiliary``).
        """
        import timm

        return timm.create_model("darts_cifar", **dict(self.static_model_args(genotype), **kwargs))

    # --------------------------------------------------------------------------------------- timm API
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stem|^alphas_", blocks=r"^cells\.(\d+)")

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # If someone trains weights and alphas jointly, the alphas must not be decayed by the weight optimiser.
        return {"alphas_normal", "alphas_reduce"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            # Recomputed per cell as in the original (identical values; the alphas' gradient sums per cell).
            weights = F.softmax(self.alphas_reduce if cell.reduction else self.alphas_normal, dim=-1)
            if self.grad_checkpointing and not torch.jit.is_scripting():
                s0, s1 = s1, checkpoint(cell, s0, s1, weights)
            else:
                s0, s1 = s1, cell(s0, s1, weights)
        return s1


# --------------------------------------------------------------------------------- checkpoint conversion
_ORIGINAL_SEARCH_EDGE = re.compile(r"^cells\.(\d+)\._ops\.(\d+)\._ops\.")
_ORIGINAL_CELL_OP = re.compile(r"^cells\.(\d+)\._ops\.")
_ARCH_KEYS = ("alphas_normal", "alphas_reduce")


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
    """Convert an original quark0/darts checkpoint (or one of ours) to this model's state dict.

    * Unwraps ``{'state_dict': ...}`` / ``{'model': ...}`` and strips ``module.`` (``nn.DataParallel``) prefixes.
    * Genotype networks: ``cells.<i>._ops.<m>.`` -> ``cells.<i>.ops.<m>.``; NetworkImageNet's ``stem0.`` ->
      ``stem.``. The auxiliary head's weights are dropped when the model has no auxiliary head (it is only used
      for training).
    * Search network: ``cells.<i>._ops.<e>._ops.<k>.`` -> ``cells.<i>.edges.<e>.ops.<k>.``. The original keeps the
      alphas outside the state dict; ``alphas_normal`` / ``alphas_reduce`` are taken from the state dict or the
      checkpoint's top level when present, else the model's current alphas are kept.
    * BatchNorm ``num_batches_tracked`` counters, absent from PyTorch 0.3 checkpoints, are set to 0 (they have no
      effect with the original's momentum 0.1).

    Raises:
        ValueError: naming unexpected and missing keys (e.g. a checkpoint of another genotype or channel count).
    """
    from .._checkpoint import match_model_keys, unwrap_state_dict

    top = state_dict
    sd = unwrap_state_dict(state_dict, keys=("state_dict", "model", "state_dict_ema", "model_ema"))
    search = isinstance(model, DartsSearchNet)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if search:
            key = _ORIGINAL_SEARCH_EDGE.sub(r"cells.\1.edges.\2.ops.", key)
        else:
            key = _ORIGINAL_CELL_OP.sub(r"cells.\1.ops.", key)
            if key.startswith("stem0."):
                key = "stem." + key[len("stem0."):]
            if key.startswith("auxiliary_head.") and getattr(model, "auxiliary_head", None) is None:
                continue
        out[key] = value
    if search:
        for name in _ARCH_KEYS:
            if name not in out:
                value = top.get(name) if isinstance(top, Mapping) else None
                out[name] = (value if isinstance(value, torch.Tensor) else getattr(model, name)).detach().clone()
    return match_model_keys(out, model, "the genotype, C, layers and auxiliary arguments")


# ------------------------------------------------------------------------------------------- default cfgs
def _cfg(url: str = "", **kwargs: Any) -> dict[str, Any]:
    return {
        "url": url, "num_classes": 10, "input_size": (3, 32, 32), "pool_size": (8, 8),
        "crop_pct": 1.0, "interpolation": "bilinear", "mean": CIFAR_MEAN, "std": CIFAR_STD,
        "first_conv": "stem.0", "classifier": "classifier", "license": "apache-2.0", **kwargs,
    }


def _imagenet_cfg(**kwargs: Any) -> dict[str, Any]:
    # The original evaluates at Resize(256) + CenterCrop(224) with bilinear resizing.
    return _cfg(num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, **kwargs)


#: Registry keys with entrypoints (``<key>_cifar`` / ``<key>_imagenet``).
REGISTRY_KEYS: tuple[str, ...] = tuple(load_registry("darts"))

_DARTS = dict(paper_ids="arXiv:1806.09055", origin_url="https://github.com/quark0/darts")


def _source(key: str) -> dict[str, Any]:
    """Paper, code and licence of a published genotype, from ``registry/darts.json``: the licence is the one the
    repository the genotype was taken from states (``None`` where it has no licence file)."""
    entry = load_registry("darts")[key]
    return dict(paper_ids=entry["paper_ids"], origin_url=entry["origin_url"], license=entry["license"])


# No tag has weights: the authors' evaluation weights are on Google Drive / Baidu only (no URL timm can fetch);
# `timm-nas zoo export --checkpoint-dir` converts downloaded copies (registry "weights" entries).
default_cfgs = generate_default_cfgs({
    "darts_cifar": _cfg(**_DARTS),
    "darts_imagenet": _imagenet_cfg(**_DARTS),
    "darts_search": _cfg(**_DARTS),
    **{f"{key}_cifar": _cfg(**_source(key)) for key in REGISTRY_KEYS},
    **{f"{key}_imagenet": _imagenet_cfg(**_source(key)) for key in REGISTRY_KEYS},
})


def _feature_cfg(layers: int) -> dict[str, Any]:
    # Two-input cells are not a sequential chain: features come from forward hooks. The stem plus one tap per
    # resolution (4 levels for 3+ cells), not timm's default of 5.
    return dict(feature_cls="hook", no_rewrite=True, out_indices=tuple(range(1 + len(_stage_ends(layers)))))


def _create_darts(variant: str, pretrained: bool = False, **kwargs: Any) -> DartsNet:
    model = build_model(
        DartsNet, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=_feature_cfg(kwargs["layers"]),
        **kwargs,
    )
    if variant in ("darts_cifar", "darts_imagenet") and not kwargs.get("features_only"):
        # Record the genotype even when it is the entrypoint's default (timm records only what the caller passed),
        # so an exported config.json rebuilds this network. Named networks are fixed by their timm name.
        update_model_args(model, genotype=model.genotype.to_dict())
    return model


def _create_darts_search(variant: str, pretrained: bool = False, **kwargs: Any) -> DartsSearchNet:
    return build_model(
        DartsSearchNet, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=_feature_cfg(kwargs["layers"]),
        **kwargs,
    )


#: Entrypoint defaults: the original evaluation networks, without the (training-only) auxiliary head.
_CIFAR_ARGS = dict(C=RECIPES["cifar"]["C"], layers=RECIPES["cifar"]["layers"], stem_type="cifar", auxiliary=False)
_IMAGENET_ARGS = dict(C=RECIPES["imagenet"]["C"], layers=RECIPES["imagenet"]["layers"], stem_type="imagenet",
                      auxiliary=False)


@register_model
def darts_cifar(pretrained: bool = False, **kwargs: Any) -> DartsNet:
    """NetworkCIFAR (C=36, 20 cells) of a ``genotype`` (default DARTS_V2); auxiliary head off by default."""
    model_args = dict(genotype="darts_v2", **_CIFAR_ARGS)
    return _create_darts("darts_cifar", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def darts_imagenet(pretrained: bool = False, **kwargs: Any) -> DartsNet:
    """NetworkImageNet (C=48, 14 cells) of a ``genotype`` (default DARTS_V2); auxiliary head off by default."""
    model_args = dict(genotype="darts_v2", **_IMAGENET_ARGS)
    return _create_darts("darts_imagenet", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def darts_search(pretrained: bool = False, **kwargs: Any) -> DartsSearchNet:
    """The DARTS search network (C=16, 8 cells, 4 steps, 10 classes)."""
    model_args = dict(C=16, layers=8, steps=4, multiplier=4, stem_multiplier=STEM_MULTIPLIER)
    return _create_darts_search("darts_search", pretrained=pretrained, **dict(model_args, **kwargs))


def _registry_entrypoint(key: str, kind: str) -> Callable[..., DartsNet]:
    name = f"{key}_{kind}"
    base = _CIFAR_ARGS if kind == "cifar" else _IMAGENET_ARGS

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> DartsNet:
        model_args = dict(genotype=load_registry("darts")[key]["model_args"]["genotype"], **base)
        return _create_darts(name, pretrained=pretrained, **dict(model_args, **kwargs))

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    network = "NetworkCIFAR (C=36, 20 cells)" if kind == "cifar" else "NetworkImageNet (C=48, 14 cells)"
    entrypoint.__doc__ = f"{network} of the registry genotype ``{key}`` (registry/darts.json)."
    return entrypoint


# Published genotypes are data: one pair of entrypoints per registry key, no per-architecture code.
for _key in REGISTRY_KEYS:
    for _kind in ("cifar", "imagenet"):
        globals()[f"{_key}_{_kind}"] = register_model(_registry_entrypoint(_key, _kind))
del _key, _kind


# ------------------------------------------------------------------------------------------ family declaration
FAMILY = register_family(Family(
    name="darts",
    config=Genotype,
    space=DartsSpace,
    static_cls=DartsNet,
    static_entrypoint="darts_cifar",
    weight_sharing_cls=DartsSearchNet,
    weight_sharing_entrypoint="darts_search",
    weight_sharing_arg=None,
    checkpoint_filter=checkpoint_filter_fn,
    inherits_weights=False,  # the derived network is trained from scratch (Liu et al. 2019, section 3.3)
    other_static_entrypoints=("darts_imagenet",),
    example_args=dict(C=4, layers=3, num_classes=10),
))
