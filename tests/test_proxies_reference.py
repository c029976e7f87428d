"""Nine training-free proxies against released code: NASLib's copies (the zero-cost-proxy code of Abdelfattah et
al. for l2_norm / plain / fisher / grasp, EPE-NAS and Zen-NAS as taken from the authors' repositories), and the
authors' repositories of ZiCo, MeCo and SWAP, on the
small seeded case of ``tests/reference_scripts/proxies_reference.py``: the reference numbers in
``tests/data/proxies_reference.json`` come from that script run on a NASLib source tree."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from timm_nas import proxies

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_module():
    spec = importlib.util.spec_from_file_location("proxies_reference", HERE / "reference_scripts" /
                                                  "proxies_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REF = _reference_module()


class _Features(torch.nn.Sequential):
    """The reference CNN with ``forward_features`` (the layers before the global pooling), which zen reads."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self[:9](x)
VALUES = json.loads((HERE / "data" / "proxies_reference.json").read_text())["values"]


@pytest.mark.parametrize("name", sorted(VALUES))
def test_proxy_matches_the_released_code(name):
    x, y = REF.batch()
    many = name.endswith("_many_classes")
    model = _Features(*REF.fill(REF.build(REF.MANY_CLASSES if many else REF.CLASSES)))
    proxy = name.removesuffix("_many_classes")
    if many:
        y = torch.tensor(REF.MANY_TARGETS)
    # NASLib scores the network in train mode; zen(seed=0) draws what the reference drew after manual_seed(2)
    options = {"l2_norm": {}, "zen": {"seed": REF.ZEN_SEED - 2}}.get(proxy, {"train": True})
    rel = 1e-6
    if proxy == "meco":  # the authors' code draws its one 64 px image itself: the same draw, given here
        torch.manual_seed(REF.MECO_SEED)
        x = torch.randn(1, 3, 64, 64)
        rel = 1e-5  # their float32 general eigensolver against our float64 symmetric one
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = proxies.score(proxy, model, x, y, **options)
    assert got == pytest.approx(VALUES[name], rel=rel, abs=1e-9)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is left as it was
