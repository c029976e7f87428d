"""Training-free proxies: DSS parity with the released TF-TAS code, the zero-cost registry, and that scoring never
changes the model."""
from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn as nn

from conftest import load_json, load_tensors
from timm_nas import proxies
from timm_nas.cost import count_macs, count_params, real_params
from timm_nas.models.autoformer import checkpoint_filter_fn
from timm_nas.spaces import AutoFormerSubnet
from timm_nas.spaces.base import generator_for

#: The supernet of ../shared/fixtures/tftas (cases.json "supernet_constructor"): img 32, patch 8, embed 128,
#: depth 3, heads 2, MLP 3.0, 1000 classes; the choices only need to hold the cases' values.
FIXTURE_SPACE = dict(embed_dim=[64, 96, 128], depth=[2, 3], num_heads=[1, 2], mlp_ratio=[2.0, 2.5, 3.0],
                     super_embed_dim=128, super_depth=3, super_num_heads=2, super_mlp_ratio=3.0)
SMALL_SPACE = dict(embed_dim=[64, 128], depth=[1, 2], num_heads=[1, 2], mlp_ratio=[1.0, 2.0])
ALL_PROXIES = ["dss", "grad_norm", "jacov", "macs", "nwot", "params", "snip", "synflow"]


# one intra-op thread: see conftest.one_thread
pytestmark = pytest.mark.usefixtures("one_thread")


def small_supernet(num_classes: int = 10, **kw) -> nn.Module:
    return timm.create_model("autoformer_supernet", space=SMALL_SPACE, img_size=32, patch_size=8,
                             num_classes=num_classes, **kw)


@pytest.fixture(scope="module")
def fixture_supernet(request):
    from conftest import fixture_dir

    folder = fixture_dir("tftas")
    model = timm.create_model("autoformer_supernet", space=FIXTURE_SPACE, img_size=32, patch_size=8,
                              num_classes=1000)
    model.load_state_dict(checkpoint_filter_fn(load_tensors(folder / "state_dict.safetensors"), model))
    return model.eval(), load_json(folder / "cases.json"), load_tensors(folder / "cases.safetensors")


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "active": getattr(model, "active_subnet", None),
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"{k} changed"
    for k, g in before["grads"].items():
        assert (g is None) == (after["grads"][k] is None), f"{k}.grad changed"
        if g is not None:
            assert torch.equal(g, after["grads"][k]), f"{k}.grad changed"
    assert before["requires_grad"] == after["requires_grad"]
    assert before["training"] == after["training"]
    assert before["active"] == after["active"]


# ------------------------------------------------------------------------------------------------ DSS parity
def test_dss_reference_matches_released_code(fixture_supernet):
    model, cases, tensors = fixture_supernet
    assert len(cases["cases"]) >= 3
    for case in cases["cases"]:
        cfg = AutoFormerSubnet.from_original(case["subnet_config"])
        with torch.no_grad(), model.use_subnet(cfg):  # forward sanity check first
            torch.testing.assert_close(model(tensors["dss_input"]), tensors[f"case{case['case']}.logits_ones"],
                                       rtol=1e-5, atol=1e-5)
        score = proxies.dss(model, cfg, mode="reference")
        assert score.total == pytest.approx(case["dss"], rel=1e-4)
        assert score.msa == pytest.approx(case["dss_msa"], rel=1e-4)
        assert score.mlp == pytest.approx(case["dss_mlp"], rel=1e-4)
        assert score.head == case["dss_head"] == 0.0
        # per layer: the original's module names differ only by our `mlp.` level; zero terms are left out
        expected = {d["module"]: d["value"] for d in case["dss_per_layer"] if d["value"] != 0.0}
        got = {k.replace("mlp.", ""): v for k, v in score.per_layer.items()}
        assert got.keys() == expected.keys()
        for k, v in expected.items():
            assert got[k] == pytest.approx(v, rel=1e-4), k
        assert float(score) == score.total


def test_dss_of_extracted_subnet_equals_supernet(fixture_supernet):
    model, cases, _ = fixture_supernet
    for case in cases["cases"]:
        cfg = AutoFormerSubnet.from_original(case["subnet_config"])
        static = model.extract(cfg).eval()
        for mode in ("reference", "paper"):
            a, b = proxies.dss(model, cfg, mode=mode), proxies.dss(static, mode=mode)
            assert b.total == pytest.approx(a.total, rel=1e-5)
            assert b.per_layer.keys() == a.per_layer.keys()
        # the MLP saliency sums run in the weight's memory order: bit-identical through the supernet's slices
        a, b = proxies.dss(model, cfg), proxies.dss(static)
        assert a.mlp == b.mlp


def test_dss_paper_mode_scores_qkv_and_linearises_everything(fixture_supernet):
    model, cases, _ = fixture_supernet
    case = cases["cases"][0]
    cfg = AutoFormerSubnet.from_original(case["subnet_config"])
    ref, paper = proxies.dss(model, cfg, mode="reference"), proxies.dss(model, cfg, mode="paper")
    assert any(k.endswith("attn.qkv") for k in paper.per_layer)
    assert not any(k.endswith("attn.qkv") for k in ref.per_layer)
    assert paper.head == 0.0 and "head" not in paper.per_layer
    assert paper.total > ref.total > 0
    assert math.isclose(paper.total, paper.msa + paper.mlp, rel_tol=1e-12)


def test_dss_nuclear_norms_match_a_float64_svd():
    """Nuclear norms from the float64 Gram eigenvalues agree with a float64 SVD for tall, wide, square and
    rank-deficient matrices (a layer's gradient seen by fewer tokens than it is wide), and do not depend on how
    the matrices are batched."""
    from timm_nas.proxies.tf_tas import _nuclear_norms

    g = torch.Generator().manual_seed(0)
    low_rank = torch.randn(48, 5, generator=g) @ torch.randn(5, 32, generator=g)  # rank 5 of 32
    mats = [torch.randn(40, 24, generator=g), torch.randn(24, 40, generator=g), torch.randn(24, 40, generator=g),
            low_rank, torch.zeros(8, 8), torch.randn(16, 16, generator=g) * 1e-3]
    ours = _nuclear_norms(mats)
    for m, value in zip(mats, ours):
        assert value == pytest.approx(float(torch.linalg.svdvals(m.double()).sum()), rel=1e-7, abs=1e-12)
    assert ours[4] == 0.0
    assert [_nuclear_norms([m])[0] for m in mats] == pytest.approx(ours, rel=1e-12)  # one at a time: the same
    bad = torch.randn(6, 4, generator=g)
    bad[2, 1] = float("nan")
    nan_norm, finite_norm = _nuclear_norms([bad, mats[0]])  # an overflowed matrix: nan, the others unharmed
    assert math.isnan(nan_norm) and finite_norm == pytest.approx(ours[0], rel=1e-12)


def test_dss_head_rules():
    cfg = AutoFormerSubnet(64, 2, (1, 2), (2.0, 1.0))
    # 1000 classes: the released code scores the full head weight, whose gradient is None -> 0
    m1000 = small_supernet(num_classes=1000).eval()
    s = proxies.dss(m1000, cfg)
    assert s.head == 0.0 and "head" not in s.per_layer
    # any other width falls into the MLP branch: sum |g * W| of the sampled slice
    m10 = small_supernet(num_classes=10).eval()
    s = proxies.dss(m10, cfg)
    assert s.head > 0.0 and s.per_layer["head"] == s.head
    assert s.total == pytest.approx(s.msa + s.mlp + s.head)
    # as wide as the supernet's embedding: the code's `in == out` MSA branch (nuclear norms)
    m128 = small_supernet(num_classes=128).eval()
    s = proxies.dss(m128, cfg)
    assert s.head > 0.0
    # the paper mode leaves the classifier out
    assert proxies.dss(m10, cfg, mode="paper").head == 0.0


def test_dss_rejects_bad_input():
    with pytest.raises(ValueError, match="mode"):
        proxies.dss(small_supernet(), None, mode="nope")
    with pytest.raises(ValueError, match="use_subnet"):
        proxies.dss(timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1),
                    AutoFormerSubnet(64, 1, (1,), (1.0,)))
    with pytest.raises(ValueError, match="attn.proj"):
        proxies.dss(timm.create_model("resnet10t", num_classes=10))


def test_dss_does_not_change_the_model():
    model = small_supernet().train()
    model.head.weight.grad = torch.ones_like(model.head.weight)
    model.blocks[0].norm1.weight.requires_grad_(False)
    before = snapshot(model)
    cfg = AutoFormerSubnet(128, 2, (2, 1), (2.0, 1.0))
    for mode in ("reference", "paper"):
        proxies.dss(model, cfg, mode=mode)
    assert_unchanged(model, before)


def test_dss_weight_norm_cache_follows_weight_updates():
    model = small_supernet().eval()
    cfg = AutoFormerSubnet(64, 1, (1,), (1.0,))
    a = proxies.dss(model, cfg).total
    with torch.no_grad():
        model.blocks[0].attn.proj.weight.mul_(2.0)  # in place: bumps the version counter
    b = proxies.dss(model, cfg).total
    assert b != pytest.approx(a, rel=1e-3)


# -------------------------------------------------------------------------------------------- the registry
def test_registry_lists_the_standard_proxies():
    assert proxies.list_proxies() == sorted(ALL_PROXIES + ["epe_nas", "fisher", "grasp", "l2_norm", "meco", "plain",
                                                           "swap", "zen", "zico"])
    with pytest.raises(ValueError, match="available proxies"):
        proxies.get_proxy("no_such_proxy")
    spec = proxies.get_proxy("snip")
    assert spec.uses_data and spec.uses_labels and spec.description


def _small_cnn() -> nn.Module:
    return timm.create_model("resnet10t", num_classes=5)


@pytest.mark.parametrize("name", ALL_PROXIES)
@pytest.mark.parametrize("train", [False, True])
def test_every_proxy_leaves_a_timm_model_unchanged(name, train):
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=5)
    for model in ([vit] if name == "dss" else [vit, _small_cnn()]):
        model.train(train)
        first = next(p for n, p in model.named_parameters() if n.endswith("weight"))
        first.grad = torch.zeros_like(first)  # an existing .grad must survive untouched
        before = snapshot(model)
        size = 32 if hasattr(model, "blocks") else 64
        for scoring_train in (False, True):
            value = proxies.score(name, model, batch_size=4, input_size=size, train=scoring_train)
            assert isinstance(value, float) and math.isfinite(value), (name, type(model).__name__)
        assert_unchanged(model, before)


def test_proxies_are_deterministic_and_take_a_batch():
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=5)
    for name in ("snip", "grad_norm", "jacov", "nwot", "synflow"):
        assert proxies.score(name, model, batch_size=4) == proxies.score(name, model, batch_size=4)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 3, 32, 32, generator=g), torch.randint(5, (4,), generator=g)
    assert proxies.score("snip", model, x, y) != proxies.score("snip", model, batch_size=4)
    with pytest.raises(ValueError, match="at least 2"):
        proxies.score("jacov", model, batch_size=1)


@pytest.mark.parametrize("name", ["synflow", "snip", "grad_norm", "jacov", "nwot", "params", "macs"])
def test_proxy_of_a_supernet_subnet_equals_the_extracted_model(name):
    supernet = small_supernet().eval()
    cfg = AutoFormerSubnet(64, 2, (2, 1), (2.0, 1.0))
    static = supernet.extract(cfg).eval()
    before = snapshot(supernet)
    a = proxies.score(name, supernet, config=cfg, batch_size=4)
    b = proxies.score(name, static, batch_size=4)
    assert a == pytest.approx(b, rel=1e-4, abs=1e-6)
    assert_unchanged(supernet, before)


def test_params_and_macs_proxies_use_the_analytic_cost_model():
    supernet = small_supernet().eval()
    cfg = AutoFormerSubnet(128, 2, (2, 2), (2.0, 2.0))
    kw = dict(num_classes=10, img_size=32, patch_size=8)
    assert proxies.score("params", supernet, config=cfg) == count_params(cfg, **kw)
    assert proxies.score("macs", supernet, config=cfg) == count_macs(cfg, **kw)
    static = supernet.extract(cfg)
    assert proxies.score("params", static) == real_params(static) == count_params(cfg, **kw)


def test_registering_a_proxy():
    @proxies.register_proxy("test_depth_proxy", uses_data=False, description="number of blocks")
    def depth(model, inputs, targets, *, config=None, **_):
        return float(config.depth if config is not None else len(model.blocks))

    try:
        assert proxies.score("test_depth_proxy", small_supernet(), config=AutoFormerSubnet(64, 1, (1,), (1.0,))) == 1
        with pytest.raises(ValueError, match="already registered"):
            proxies.register_proxy("test_depth_proxy")(depth)
    finally:
        from timm_nas.proxies import _registry

        _registry._REGISTRY.pop("test_depth_proxy")


def test_dss_neither_copies_the_model_nor_rebuilds_position_tables(monkeypatch):
    """The released code deep-copies the model and rebuilds the relative-position index tables per candidate
    (most of its cost); here neither happens after the first call, so DSS costs about one forward + backward of
    the subnet (bench/bench_dss.py measures the ratio)."""
    import copy

    from timm_nas.layers import relative_position

    supernet = small_supernet().eval()
    cfgs = [supernet.space.sample(generator_for(0, i)) for i in range(4)]
    proxies.dss(supernet, cfgs[0])
    builds = []
    real_build = relative_position._build_index
    monkeypatch.setattr(relative_position, "_build_index", lambda *a: builds.append(a) or real_build(*a))
    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: pytest.fail("DSS deep-copied something"))
    for cfg in cfgs:
        proxies.dss(supernet, cfg)
    assert builds == []


@pytest.mark.parametrize("name", ["params", "macs"])
def test_cost_proxies_accept_a_config_dict(name: str) -> None:
    """Like every other proxy, params / macs take the config as a dataclass or its dict form."""
    from timm_nas import create_model
    from timm_nas.proxies import score

    space = {"embed_dim": [32, 64], "depth": [1, 2], "num_heads": [1, 2], "mlp_ratio": [2.0, 4.0], "head_dim": 16}
    supernet = create_model("autoformer_supernet", space=space, img_size=32, patch_size=8, num_classes=10)
    cfg = supernet.space.smallest()
    assert score(name, supernet, config=cfg.to_dict()) == score(name, supernet, config=cfg) > 0
