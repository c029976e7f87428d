"""The proxies of timm_nas.proxies.zoo: registered, model left unchanged, checked on small hand-computed cases and
by a second route (torch.autograd.functional for GraSP), and clear errors where a proxy does not apply.

These are not checked against the authors' released code (not run in this repository; see the module docstring).
"""
from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from timm_nas import proxies

pytestmark = pytest.mark.usefixtures("one_thread")

ZOO = ["l2_norm", "plain", "fisher", "grasp", "zen", "epe_nas", "zico", "meco", "swap"]


def _snapshot(model: nn.Module) -> dict:
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "grads": [p.grad for p in model.parameters()], "req": [p.requires_grad for p in model.parameters()],
            "modes": [m.training for m in model.modules()]}


def test_the_registry_has_at_least_16_proxies():
    assert set(ZOO) <= set(proxies.list_proxies()) and len(proxies.list_proxies()) >= 16


@pytest.mark.parametrize("name", ZOO)
def test_each_proxy_scores_an_nb201_network_and_leaves_it_unchanged(name):
    torch.manual_seed(0)
    model = timm.create_model("nb201_cifar", genotype=1, C=4, N=1).eval()
    before = _snapshot(model)
    value = proxies.score(name, model, batch_size=16, seed=1)
    assert math.isfinite(value)
    assert value == proxies.score(name, model, batch_size=16, seed=1)  # seeded, deterministic
    after = _snapshot(model)
    assert all(torch.equal(before["state"][k], v) for k, v in after["state"].items())
    assert after["grads"] == before["grads"] and after["req"] == before["req"] and after["modes"] == before["modes"]


def _linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))


def _batch(n: int = 8):
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 6, generator=g), torch.randint(3, (n,), generator=g)


def test_l2_norm_plain_and_grasp_against_direct_computations():
    model = _linear()
    x, y = _batch()
    w0, w1 = model[0].weight, model[2].weight
    assert proxies.score("l2_norm", model) == pytest.approx(float(w0.detach().norm() + w1.detach().norm()), rel=1e-6)
    loss = F.cross_entropy(model(x), y)
    g0, g1 = torch.autograd.grad(loss, [w0, w1])
    assert proxies.score("plain", model, x, y) == pytest.approx(float((g0 * w0.detach()).sum() + (g1 * w1.detach()).sum()), rel=1e-5)

    # GraSP: -W . (H g) over both weights, with H g from torch.autograd.functional.hvp
    b0, b1 = model[0].bias.detach(), model[2].bias.detach()

    def f(a, b):
        return F.cross_entropy(torch.tanh(x @ a.T + b0) @ b.T + b1, y)

    wa, wb = w0.detach(), w1.detach()
    ga, gb = torch.autograd.grad(f(wa.requires_grad_(), wb.requires_grad_()), [wa, wb])
    _, (ha, hb) = torch.autograd.functional.hvp(f, (wa.detach(), wb.detach()), (ga, gb))
    expected = float(-(wa.detach() * ha).sum() - (wb.detach() * hb).sum())
    assert proxies.score("grasp", model, x, y) == pytest.approx(expected, rel=1e-4)


def test_fisher_on_a_linear_model_equals_the_closed_form():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    x, y = _batch()
    logits = model(x).detach()
    dlogits = (F.softmax(logits, dim=1) - F.one_hot(y, 3)) / x.shape[0]  # dCE/dlogits (mean reduction)
    # each output channel's value counted once per weight of the channel (fan-in 6), as the released code totals it
    expected = 6 * float((0.5 * (logits * dlogits).pow(2).mean(dim=0)).sum())
    assert proxies.score("fisher", model, x, y) == pytest.approx(expected, rel=1e-5)


def test_swap_counts_distinct_patterns():
    model = nn.Sequential(nn.ReLU())
    x = torch.tensor([[1.0, -1.0, 1.0, 0.0, 2.0], [1.0, 1.0, -1.0, 0.0, 3.0]]).reshape(2, 1, 1, 5)  # feature maps
    # unit patterns over the two images: (1,1) (0,1) (1,0) (0,0) (1,1) -> 4 distinct
    assert proxies.score("swap", model, x) == 4.0
    # ReLUs on flat (2-D) activations are not counted, as in the authors' code
    with pytest.raises(ValueError, match="ReLU activations on convolutional feature maps"):
        proxies.score("swap", model, x.reshape(2, 5))


@pytest.mark.parametrize("batch", [1, 61, 62, 63, 130])
def test_swap_is_exact_for_any_batch(batch):
    """Patterns longer than one packed word (62 images) are counted exactly: the count of distinct rows of the
    on / off matrix, written out."""
    g = torch.Generator().manual_seed(batch)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU())
    # few distinct values per unit, so that some long patterns coincide and some differ in one image only
    x = torch.randint(-1, 2, (batch, 2, 4, 4), generator=g).float()
    on = (model(x).detach().reshape(batch, -1) > 0).t().tolist()
    assert proxies.score("swap", model, x) == float(len({tuple(row) for row in on}))


def test_where_a_proxy_does_not_apply_it_says_why():
    no_bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="zen needs BatchNorm"):
        proxies.score("zen", no_bn, x)
    with pytest.raises(ValueError, match="swap needs ReLU"):
        proxies.score("swap", no_bn, x)
    with pytest.raises(ValueError, match="meco needs convolution"):
        proxies.score("meco", _linear(), _batch()[0])
    many = nn.Sequential(nn.Linear(6, 120))  # above 100 classes a class needs two images, as the authors' code
    with pytest.raises(ValueError, match="more than 100 classes needs at least two images of one class"):
        proxies.score("epe_nas", many, _batch(3)[0], torch.tensor([0, 1, 2]))
    # up to 100 classes a one-image class has the correlation matrix [1] (the authors' code)
    assert proxies.score("epe_nas", _linear(), _batch(3)[0], torch.tensor([0, 1, 2])) == pytest.approx(
        3 * math.log(1 + 1e-5))
    with pytest.raises(ValueError, match="zico needs at least 2 mini-batches"):
        proxies.score("zico", _linear(), _batch(1)[0], torch.tensor([0]))
