"""NAS-Bench-201 networks: the benchmark's CIFAR network of a cell and a DARTS-style search network, as timm models.

Paper: Dong and Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search", ICLR 2020
(arXiv:2001.00326). Original code: https://github.com/D-X-Y/NAS-Bench-201 and the ``xautodl`` package
(``models/cell_infers/tiny_network.py`` ``TinyNetwork``, ``models/cell_infers/cells.py`` ``InferCell``,
``models/cell_operations.py`` ``ResNetBasicblock`` / ``ReLUConvBN`` / ``OPS``,
``models/cell_searchs/search_model_darts.py`` ``TinyNetworkDarts``).

* ``nb201_cifar``: the network every benchmark entry was trained with: a 3x3 convolution stem with ``C`` channels,
  three stages of ``N`` cells (``C``, ``2C``, ``4C`` channels) joined by stride-2 residual blocks, BatchNorm + ReLU,
  global average pooling and a linear classifier. The ``genotype`` argument takes an architecture string, a cell
  dict, an :class:`~timm_nas.spaces.nb201.NB201Cell`, a registry name or a benchmark index.
* ``nb201_search``: the same skeleton with every cell edge a softmax-weighted mixture of all operations (the DARTS
  relaxation on NAS-Bench-201, as the benchmark's DARTS baseline runs it), one ``(6, 5)`` architecture weight
  ``alphas`` shared by all cells.

Module names follow the original, so the authors' checkpoints load with only the ``module.`` prefix removed (the
search network's ``edges.<i><-<j>.<k>`` become ``edges.<e>.ops.<k>``, its ``arch_parameters`` become ``alphas``).
"""
import re
from typing import Any, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import create_classifier
from timm.models import generate_default_cfgs, register_model
from timm.models._input import update_model_args
from timm.models._manipulate import checkpoint

from ._build import build_model
from .._checkpoint import match_model_keys
from ..cost.nb201 import RECIPE, STAGES
from ..layers.darts_ops import ReLUConvBN, Zero
from ._cnn_api import CellNetApiMixin, check_global_pool
from ..family import Family, register_family
from ..spaces.nb201 import NB201_EDGES, NB201_OPS, NB201Cell, NB201Space

__all__ = ["ReLUConvBN", "Zero", "ResNetBasicblock", "InferCell", "SearchCell", "NB201Net", "NB201SearchNet",
           "checkpoint_filter_fn", "NB201_MEAN", "NB201_STD"]

#: CIFAR normalisation the benchmark trained with (xautodl ``datasets/get_dataset_with_transform.py``:
#: mean ``[125.3, 123.0, 113.9] / 255``, std ``[63.0, 62.1, 66.7] / 255``).
NB201_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
NB201_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

#: Scale of the search network's architecture weights at initialisation, ``1e-3 * randn`` (as DARTS).
ALPHA_INIT_SCALE = 1e-3

# ------------------------------------------------------------------------------------------------ blocks
def create_op(name: str, C: int, affine: bool = True, track_running_stats: bool = True, device=None,
              dtype=None) -> nn.Module:
    """One cell edge with ``C`` input and output channels, stride 1 (every edge of a NAS-Bench-201 cell)."""
    dd = dict(device=device, dtype=dtype)
    if name == "none":
        return Zero(1)
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(C, C, 1, 1, 0, affine, bias=not affine, track_running_stats=track_running_stats, **dd)
    if name == "nor_conv_3x3":
        return ReLUConvBN(C, C, 3, 1, 1, affine, bias=not affine, track_running_stats=track_running_stats, **dd)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 operation {name!r}; allowed values: {list(NB201_OPS)}")


class ResNetBasicblock(nn.Module):
    """The stride-2 residual block between stages: two ReLU-Conv-BN 3x3 convolutions, shortcut AvgPool(2) + 1x1
    convolution."""

    def __init__(self, C_in: int, C_out: int, device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1, **dd)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, **dd)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(C_in, C_out, kernel_size=1, stride=1, padding=0, bias=False, **dd),
        )

    def forward(self, x: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        # ``weights`` is ignored: the search network calls every cell with its architecture weights.
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def _edge_plan() -> tuple[list[int], list[bool], list[bool]]:
    """Per edge (string order): its input node, whether it is the first / the last edge into its node."""
    sources = [j for _, j in NB201_EDGES]
    first = [j == 0 for _, j in NB201_EDGES]
    last = [j == i - 1 for i, j in NB201_EDGES]
    return sources, first, last


class InferCell(nn.Module):
    """A NAS-Bench-201 cell: node ``i`` sums its edges from nodes ``0 .. i-1``; the output is node 3."""

    def __init__(self, cell: NB201Cell, C: int, device=None, dtype=None) -> None:
        super().__init__()
        self.layers = nn.ModuleList([create_op(op, C, device=device, dtype=dtype) for op in cell.ops])
        self.edge_src, self.edge_first, self.edge_last = _edge_plan()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        acc = x
        for k, layer in enumerate(self.layers):
            y = layer(nodes[self.edge_src[k]])
            acc = y if self.edge_first[k] else acc + y
            if self.edge_last[k]:
                nodes.append(acc)
        return nodes[-1]


class MixedEdge(nn.Module):
    """One search-cell edge: every operation, mixed by the softmaxed architecture weights of the edge."""

    def __init__(self, ops: tuple[str, ...], C: int, device=None, dtype=None) -> None:
        super().__init__()
        # affine=False as in the benchmark's weight-sharing baselines (TinyNetworkDarts(affine=False)).
        self.ops = nn.ModuleList([create_op(op, C, affine=False, device=device, dtype=dtype) for op in ops])

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = self.ops[0](x) * weights[0]
        for k, op in enumerate(self.ops):
            if k > 0:
                out = out + op(x) * weights[k]
        return out


class SearchCell(nn.Module):
    """A search cell: :class:`InferCell` with a :class:`MixedEdge` on each of the six edges."""

    def __init__(self, ops: tuple[str, ...], C: int, device=None, dtype=None) -> None:
        super().__init__()
        self.edges = nn.ModuleList([MixedEdge(ops, C, device=device, dtype=dtype) for _ in NB201_EDGES])
        self.edge_src, self.edge_first, self.edge_last = _edge_plan()

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        acc = x
        for k, edge in enumerate(self.edges):
            y = edge(nodes[self.edge_src[k]], weights[k])
            acc = y if self.edge_first[k] else acc + y
            if self.edge_last[k]:
                nodes.append(acc)
        return nodes[-1]


# ----------------------------------------------------------------------------------------- model classes
class _NB201Base(CellNetApiMixin, nn.Module):
    """The skeleton both networks share: stem, stages (cells made by ``make_cell``), BN + ReLU, pooled classifier.

    No class annotations here: TorchScript would read them as attribute types."""

    def _build(self, make_cell, C: int, N: int, num_classes: int, in_chans: int, global_pool: str, drop_rate: float,
               dd: dict) -> None:
        if C < 1 or N < 0:
            raise ValueError(f"C must be at least 1 and N at least 0, got C={C}, N={N}")
        self.C, self.N = C, N
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.stem = nn.Sequential(nn.Conv2d(in_chans, C, 3, padding=1, bias=False, **dd), nn.BatchNorm2d(C, **dd))
        cells: list[nn.Module] = []
        self.feature_info = []
        for stage in range(STAGES):
            c = C * 2 ** stage
            if stage:
                cells.append(ResNetBasicblock(c // 2, c, **dd))
            cells += [make_cell(c) for _ in range(N)]
            if stage < STAGES - 1:
                self.feature_info.append(dict(num_chs=c, reduction=2 ** stage, module=f"cells.{len(cells) - 1}"))
        self.cells = nn.ModuleList(cells)
        self.num_features = self.head_hidden_size = C * 2 ** (STAGES - 1)
        self.lastact = nn.Sequential(nn.BatchNorm2d(self.num_features, **dd), nn.ReLU(inplace=True))
        self.feature_info.append(dict(num_chs=self.num_features, reduction=2 ** (STAGES - 1), module="lastact"))
        self.global_pool, self.head_drop, self.classifier = create_classifier(
            self.num_features, num_classes, pool_type=check_global_pool(global_pool), drop_rate=drop_rate, **dd)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        # The cost formulas' shape arguments (timm_nas.cost.model_cost), at the benchmark's 32x32 input.
        self.cost_args = dict(C=C, N=N, num_classes=num_classes, in_chans=in_chans, img_size=RECIPE["img_size"])

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()



class NB201Net(_NB201Base):
    """The NAS-Bench-201 CIFAR network of one cell (the original's ``TinyNetwork`` as a timm model).

    Args:
        genotype: the cell: an architecture string, a cell dict, an ``NB201Cell``, a registry name or alias
            (``'resnet'``) or a benchmark index.
        C: stem / first-stage channels (16 in the benchmark).
        N: cells per stage (5 in the benchmark).
        num_classes: classifier width (0 removes it).
        in_chans: input channels.
        global_pool: timm pooling type of the head (``'avg'`` is the original's).
        drop_rate: dropout before the classifier (0 in the original).
    """

    def __init__(self, genotype: NB201Cell | Mapping[str, Any] | str | int = "resnet", C: int = RECIPE["C"],
                 N: int = RECIPE["N"], num_classes: int = RECIPE["num_classes"], in_chans: int = 3,
                 global_pool: str = "avg", drop_rate: float = 0., device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.genotype = NB201Cell.resolve(genotype)
        self._build(lambda c: InferCell(self.genotype, c, **dd), C, N, num_classes, in_chans, global_pool, drop_rate,
                    dd)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stem", blocks=[(r"^cells\.(\d+)", None), (r"^lastact", (99999,))])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(cell, x)
            else:
                x = cell(x)
        return self.lastact(x)


class NB201SearchNet(_NB201Base):
    """The DARTS search network over NAS-Bench-201 (the original's ``TinyNetworkDarts``).

    The architecture weights are one parameter ``alphas`` of shape ``(6, len(space.ops))`` (edges in string order,
    operations in :data:`~timm_nas.spaces.nb201.NB201_OPS` order) shared by every cell; the residual blocks are
    ordinary weights. :meth:`arch_parameters` / :meth:`weight_parameters` split them, :meth:`derive_arch` takes the
    strongest operation of every edge (``'none'`` included, as the original's ``genotype()``).

    Args:
        C: stem / first-stage channels (16).
        N: search cells per stage (5).
        num_classes: classifier width.
        ops: candidate operations (default: the benchmark's five).
        in_chans: input channels.
        global_pool: timm pooling type of the head.
        drop_rate: dropout before the classifier.
    """

    def __init__(self, C: int = RECIPE["C"], N: int = RECIPE["N"], num_classes: int = RECIPE["num_classes"],
                 ops: tuple[str, ...] | list[str] = NB201_OPS, in_chans: int = 3, global_pool: str = "avg",
                 drop_rate: float = 0., device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.space = NB201Space(tuple(ops))
        self._build(lambda c: SearchCell(self.space.ops, c, **dd), C, N, num_classes, in_chans, global_pool,
                    drop_rate, dd)
        # Drawn after every weight, like the original (from the global RNG, as every timm initialisation).
        self.alphas = nn.Parameter(ALPHA_INIT_SCALE * torch.randn(len(NB201_EDGES), len(self.space.ops), **dd))

    # ---------------------------------------------------------------------------------- architecture API
    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture weights ``[alphas]``."""
        return [self.alphas]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the architecture weights, in ``named_parameters()`` order."""
        return [p for _, p in self.named_weight_parameters()]

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if n != "alphas"]

    @torch.no_grad()
    def derive_arch(self) -> NB201Cell:
        """The cell of the strongest operation of every edge (first maximum on ties)."""
        best = self.alphas.detach().float().cpu().argmax(dim=-1).tolist()
        return NB201Cell(tuple(self.space.ops[k] for k in best))

    def static_model_args(self, genotype: NB201Cell | Mapping[str, Any] | str | int | None = None) -> dict[str, Any]:
        """JSON-native ``nb201_cifar`` arguments of ``genotype`` (default: :meth:`derive_arch`) with this network's
        ``C`` and ``N`` (the benchmark searches and evaluates with the same skeleton)."""
        cell = self.derive_arch() if genotype is None else NB201Cell.resolve(genotype)
        return dict(genotype=cell.to_dict(), C=self.C, N=self.N, num_classes=self.num_classes, in_chans=self.in_chans)

    def extract(self, genotype: NB201Cell | Mapping[str, Any] | str | int | None = None, **kwargs: Any) -> NB201Net:
        """A new ``nb201_cifar`` network of ``genotype`` (default: :meth:`derive_arch`), freshly initialised: the
        benchmark's accuracy of a cell is that of the network trained from scratch."""
        import timm

        return timm.create_model("nb201_cifar", **dict(self.static_model_args(genotype), **kwargs))

    # --------------------------------------------------------------------------------------- timm API
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stem|^alphas", blocks=[(r"^cells\.(\d+)", None), (r"^lastact", (99999,))])

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"alphas"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        weights = F.softmax(self.alphas, dim=-1)
        x = self.stem(x)
        for cell in self.cells:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(cell, x, weights)
            else:
                x = cell(x, weights)  # residual blocks ignore the weights
        return self.lastact(x)


# --------------------------------------------------------------------------------- checkpoint conversion
_ORIGINAL_SEARCH_EDGE = re.compile(r"^cells\.(\d+)\.edges\.(\d+)<-(\d+)\.(\d+)\.")
_EDGE_INDEX = {f"{i}<-{j}": e for e, (i, j) in enumerate(NB201_EDGES)}


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
    """Convert an original (xautodl / NAS-Bench-201) checkpoint, or one of ours, to this model's state dict.

    * Unwraps ``{'state_dict': ...}`` / ``{'net_state_dict': ...}`` / ``{'model': ...}`` and strips ``module.``.
    * ``nb201_cifar``: the original's keys are this model's keys (the authors' ``TinyNetwork``).
    * ``nb201_search``: ``cells.<c>.edges.<i><-<j>.<k>.`` -> ``cells.<c>.edges.<e>.ops.<k>.`` and
      ``arch_parameters`` -> ``alphas``.

    Raises:
        ValueError: naming unexpected and missing keys (e.g. a checkpoint of another cell, ``C`` or ``N``).
    """
    from .._checkpoint import unwrap_state_dict

    sd = unwrap_state_dict(state_dict, keys=("state_dict", "net_state_dict", "model", "search_model"))
    search = isinstance(model, NB201SearchNet)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if search:
            m = _ORIGINAL_SEARCH_EDGE.match(key)
            if m:
                edge = _EDGE_INDEX[f"{m.group(2)}<-{m.group(3)}"]
                key = f"cells.{m.group(1)}.edges.{edge}.ops.{m.group(4)}." + key[m.end():]
            elif key == "arch_parameters":
                key = "alphas"
        out[key] = value
    return match_model_keys(out, model, "the cell, C, N and num_classes")


# ------------------------------------------------------------------------------------------- default cfgs
def _cfg(url: str = "", **kwargs: Any) -> dict[str, Any]:
    return {
        "url": url, "num_classes": 10, "input_size": (3, 32, 32), "pool_size": (8, 8),
        "crop_pct": 1.0, "interpolation": "bilinear", "mean": NB201_MEAN, "std": NB201_STD,
        "first_conv": "stem.0", "classifier": "classifier", "license": "mit", **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "nb201_cifar": _cfg(),
    "nb201_search": _cfg(),
})

#: Feature taps: the last cell of the first two stages and the final BN + ReLU. Cells are a chain, but the taps
#: sit on module outputs, so features come from forward hooks as for DARTS.
#: A new dict per model: timm's builder pops keys from it.
def _feature_cfg() -> dict[str, Any]:
    return dict(feature_cls="hook", no_rewrite=True, out_indices=(0, 1, 2))


def _create(cls: type, variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    model = build_model(cls, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                 feature_cfg=_feature_cfg(), **kwargs)
    if cls is NB201Net and not kwargs.get("features_only"):
        # Record the cell even when it is the default, so an exported config.json rebuilds this network.
        update_model_args(model, genotype=model.genotype.to_dict())
    return model


@register_model
def nb201_cifar(pretrained: bool = False, **kwargs: Any) -> NB201Net:
    """The NAS-Bench-201 CIFAR network (C=16, N=5) of a ``genotype`` (default: the ResNet cell)."""
    model_args = dict(genotype="resnet", C=RECIPE["C"], N=RECIPE["N"])
    return _create(NB201Net, "nb201_cifar", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def nb201_search(pretrained: bool = False, **kwargs: Any) -> NB201SearchNet:
    """The DARTS search network over NAS-Bench-201 (C=16, N=5, 10 classes)."""
    model_args = dict(C=RECIPE["C"], N=RECIPE["N"])
    return _create(NB201SearchNet, "nb201_search", pretrained=pretrained, **dict(model_args, **kwargs))


# ------------------------------------------------------------------------------------------ family declaration
FAMILY = register_family(Family(
    name="nb201",
    config=NB201Cell,
    space=NB201Space,
    static_cls=NB201Net,
    static_entrypoint="nb201_cifar",
    weight_sharing_cls=NB201SearchNet,
    weight_sharing_entrypoint="nb201_search",
    weight_sharing_arg=None,
    checkpoint_filter=checkpoint_filter_fn,
    inherits_weights=False,  # the benchmark trains every cell's network from scratch
    example_args=dict(C=4, N=1, num_classes=10),
    datasets=("cifar10",),
))
