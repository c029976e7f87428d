"""Reference numbers for eight training-free proxies, produced with their released code.

- NASLib's copies (automl/NASLib ``naslib/predictors/utils/pruners/measures``): the zero-cost-proxy code of
  Abdelfattah et al., ICLR 2021 (Samsung) for ``l2_norm``, ``plain``, ``fisher`` and ``grasp``; EPE-NAS as "taken from
  the authors' Github repository" VascoLopes/EPE-NAS; Zen-NAS's ``compute_zen_score``, the same as idstcv/ZenNAS
  ``ZeroShotProxy/compute_zen_score.py`` for one repeat.
- ZiCo from its authors' repository (SLDGroup/ZiCo ``ZeroShotProxy/compute_zico.py``, run on the CPU).
- MeCo from its authors' repository (HamsterMimi/MeCo ``correlation/foresight/pruners/measures/meco.py``).
- SWAP from its authors' repository (pym1024/SWAP ``src/metrics/swap.py``, without the parameter regulariser).

Only torch and numpy are needed besides the four source trees (loaded from their paths, nothing installed)::

    git clone https://github.com/automl/NASLib /tmp/NASLib
    git clone https://github.com/SLDGroup/ZiCo /tmp/ZiCo
    git clone https://github.com/HamsterMimi/MeCo /tmp/MeCo
    git clone https://github.com/pym1024/SWAP /tmp/SWAP
    python tests/reference_scripts/proxies_reference.py --naslib /tmp/NASLib --zico /tmp/ZiCo --meco /tmp/MeCo \
        --swap /tmp/SWAP > tests/data/proxies_reference.json

The case: the small CNN of :func:`build` (conv / BatchNorm / ReLU / pooling / linear, 10 classes) with weights from
:func:`fill`, a seeded batch of 16 images, the network in train mode (BatchNorm batch statistics) as NASLib scores
it, one torch thread. Zen-NAS needs ``forward_before_global_avg_pool``: the network's layers up to the pooling.
``tests/test_proxies_reference.py`` repeats ``build`` / ``fill`` / ``batch`` and compares timm-nas's proxies. Each
NASLib measure returns per-layer arrays; the score is their total (NASLib's ``sum_arr``).
"""
import argparse
import copy
import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

SEED, BATCH, CLASSES = 7, 16, 10
#: MeCo's code draws its one image itself (``torch.randn(1, 3, 64, 64)``) from the global generator seeded so.
MECO_SEED = 11
#: The global seed the Zen-score's draws start from: timm-nas's ``zen(seed=0)`` seeds its generator with seed + 2.
ZEN_SEED = 2


def build(classes: int = CLASSES) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 1, bias=True), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))


#: EPE-NAS's second branch (more than 100 classes): 120 outputs, classes of 1, 2, 3 and 4 images.
MANY_CLASSES = 120
MANY_TARGETS = [5, 5, 17, 17, 17, 40, 40, 40, 40, 99, 110, 110, 3, 77, 77, 119]


def fill(model: nn.Module, seed: int = SEED) -> nn.Module:
    """Deterministic weights: one generator, tensors in state-dict order, fan-in scaled (BatchNorm affine near 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=g)
            if name.endswith("running_var"):
                t.copy_(1 + 0.1 * noise.abs())
            elif t.dim() == 1 and name.endswith("weight"):
                t.copy_(1 + 0.1 * noise)
            elif t.dim() == 1:
                t.copy_(0.1 * noise)
            else:
                t.copy_(noise / max(1, t[0].numel()) ** 0.5)
    return model


def batch(seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """16 images, targets with every class at least once and several classes twice or more."""
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(BATCH, 3, 8, 8, generator=g)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 0, 3, 3])
    return x, y


def _pre_gap(net: nn.Module) -> None:
    """What the Zen-score reads: the layers before the global pooling (conv / BatchNorm / ReLU)."""
    layers = list(net)[:9]

    def forward_before_global_avg_pool(x: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            x = layer(x)
        return x

    net.forward_before_global_avg_pool = forward_before_global_avg_pool


def _naslib_measures(root: Path):
    """NASLib's ``pruners`` package from a source tree, without NASLib's other modules (``p_utils`` imports the
    predictors' models, which these measures do not use)."""
    base = root / "naslib" / "predictors" / "utils"
    for name, path in (("naslib", root / "naslib"), ("naslib.predictors", root / "naslib" / "predictors"),
                       ("naslib.predictors.utils", base)):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(path)]
        sys.modules[name] = pkg
    sys.modules["naslib.predictors.utils.models"] = types.ModuleType("naslib.predictors.utils.models")
    sys.modules["naslib.predictors.utils.models"].__all__ = []
    return importlib.import_module("naslib.predictors.utils.pruners.measures")


def _zico_module(root: Path):
    """The authors' ``compute_zico`` module, its repository-level imports stubbed (unused by ``getzico``) and CUDA
    calls made no-ops (this runs on the CPU)."""
    for name in ("global_utils", "ModelLoader"):
        sys.modules.setdefault(name, types.ModuleType(name))
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    spec = importlib.util.spec_from_file_location("compute_zico", root / "ZeroShotProxy" / "compute_zico.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _meco_module(root: Path):
    """The authors' ``meco`` measure, its package's ``measure`` decorator replaced by a pass-through."""
    package = types.ModuleType("meco_reference")
    package.__path__ = [str(root / "correlation" / "foresight" / "pruners" / "measures")]
    package.measure = lambda *a, **k: (lambda fn: fn)
    sys.modules["meco_reference"] = package
    return importlib.import_module("meco_reference.meco")


def _swap_module(root: Path):
    """The authors' SWAP module; its one repository import (``count_parameters``, for the unused regulariser)
    stubbed."""
    for name in ("src", "src.utils"):
        pkg = sys.modules.setdefault(name, types.ModuleType(name))
        pkg.__path__ = []
    utilities = types.ModuleType("src.utils.utilities")
    utilities.count_parameters = lambda model: sum(p.numel() for p in model.parameters() if p.requires_grad)
    sys.modules["src.utils.utilities"] = utilities
    spec = importlib.util.spec_from_file_location("swap_reference", root / "src" / "metrics" / "swap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--naslib", required=True, type=Path, help="a NASLib source tree")
    parser.add_argument("--zico", required=True, type=Path, help="an SLDGroup/ZiCo source tree")
    parser.add_argument("--meco", required=True, type=Path, help="a HamsterMimi/MeCo source tree")
    parser.add_argument("--swap", required=True, type=Path, help="a pym1024/SWAP source tree")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the test runs: ZiCo's mean/std ratios magnify the reduction order's rounding
    measures = _naslib_measures(args.naslib)
    zico = _zico_module(args.zico)
    meco = _meco_module(args.meco)
    swap = _swap_module(args.swap)
    x, y = batch()
    out = {"source": "automl/NASLib naslib/predictors/utils/pruners/measures", "seed": SEED, "values": {}}
    runs = {
        "l2_norm": lambda net: measures.l2_norm.get_l2_norm_array(net, x, y, mode="param"),
        "plain": lambda net: measures.plain.compute_plain_per_weight(net, x, y, mode="param",
                                                                     loss_fn=F.cross_entropy),
        "fisher": lambda net: measures.fisher.compute_fisher_per_weight(net, x, y, loss_fn=F.cross_entropy,
                                                                        mode="channel"),
        "grasp": lambda net: measures.grasp.compute_grasp_per_weight(net, x, y, mode="param",
                                                                     loss_fn=F.cross_entropy),
        "epe_nas": lambda net: measures.epe_nas.compute_epe_score(net, x.clone(), y, loss_fn=F.cross_entropy),
        "epe_nas_many_classes": lambda net: measures.epe_nas.compute_epe_score(
            net, x.clone(), torch.tensor(MANY_TARGETS), loss_fn=F.cross_entropy),
        # Zen-NAS draws weights and inputs from the global generator: seeded as timm-nas's zen(seed=0) seeds its own
        "zen": lambda net: (_pre_gap(net), torch.manual_seed(ZEN_SEED), measures.zen.compute_zen_score(net, x, y))[2],
        # ZiCo over two mini-batches (the batch cut in halves, as timm-nas's zico(splits=2))
        "zico": lambda net: zico.getzico(net, list(zip(x.chunk(2), y.chunk(2))), F.cross_entropy),
        "meco": lambda net: (torch.manual_seed(MECO_SEED), meco.compute_meco(net, x, y))[1],
        "swap": lambda net: float(swap.SWAP(model=net, inputs=x, device="cpu", seed=0).forward()),
    }
    for name, run in runs.items():
        net = fill(build(MANY_CLASSES if name.endswith("many_classes") else CLASSES)).train()
        value = run(copy.deepcopy(net))
        total = float(sum(float(torch.sum(a)) for a in value)) if isinstance(value, list) else float(value)
        out["values"][name] = total
    out["versions"] = {"torch": torch.__version__}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
