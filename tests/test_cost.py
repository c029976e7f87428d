"""Cost model: analytic params / MACs against real models, fvcore and FlopCounterMode; the published numbers;
throughput; the generic measuring API."""
from __future__ import annotations

import json
import time

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

import timm_nas  # noqa: F401  (registers the models)
from timm_nas import cost
from timm_nas.spaces.autoformer import AutoFormerSpace, AutoFormerSubnet

#: The original code measured with FlopCounterMode total / 2 at 224 px (reference section 2.4 / issue 2).
ORIGINAL_MEASURED_MACS = {"autoformer_tiny": 1.482e9, "autoformer_small": 5.161e9, "autoformer_base": 11.691e9}


# one intra-op thread: see conftest.one_thread
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", sorted(ORIGINAL_MEASURED_MACS))
def test_published_macs_match_the_original_measurement(name):
    model = timm.create_model(name, device="meta").eval()
    analytic = cost.count_macs(model.subnet)
    assert abs(analytic - ORIGINAL_MEASURED_MACS[name]) / ORIGINAL_MEASURED_MACS[name] < 0.01
    # FlopCounterMode runs on the meta device: the same count from the real model's ops at 224 px
    assert cost.flop_counter_macs(model, torch.zeros(1, 3, 224, 224, device="meta")) == analytic


@pytest.mark.parametrize("preset, img_size", [("tiny", 32), ("small", 48), ("base", 32)])
def test_analytic_macs_equal_measured(preset, img_size):
    space = AutoFormerSpace.preset(preset)
    g = torch.Generator().manual_seed(3)
    for cfg in (space.sample(g), space.sample(g)):
        model = timm.create_model("autoformer_subnet", subnet=cfg.to_dict(), img_size=img_size).eval()
        x = torch.zeros(1, 3, img_size, img_size)
        analytic = cost.count_macs(cfg, img_size=img_size)
        assert cost.measure_macs(model, x) == analytic
        assert cost.flop_counter_macs(model, x) == analytic


def test_supernet_measured_macs_follow_the_active_subnet():
    model = timm.create_model("autoformer_supernet_tiny", img_size=32).eval()
    cfg = AutoFormerSubnet(216, 12, (3, 4) * 6, (3.5, 4.0, 4.0) * 4)
    x = torch.zeros(1, 3, 32, 32)
    with model.use_subnet(cfg):
        assert cost.measure_macs(model, x) == cost.count_macs(cfg, img_size=32) == cost.flop_counter_macs(model, x)


def test_macs_options():
    cfg = AutoFormerSubnet(192, 2, (3, 4), (4.0, 3.5))
    base = cost.count_macs(cfg)
    assert base - cost.count_macs(cfg, num_classes=0) == 192 * 1000
    assert cost.count_macs(cfg, global_pool="") - cost.count_macs(cfg, num_classes=0) == 197 * 192 * 1000
    assert cost.count_macs(cfg, head_dim=32) < base
    assert cost.count_macs(cfg, space="tiny") == base
    assert cost.count_params(cfg, space=dict(embed_dim=[192], depth=[2], num_heads=[4], mlp_ratio=[4.0],
                                             super_embed_dim=256, head_dim=32)) == cost.count_params(cfg, head_dim=32)
    with pytest.raises(TypeError, match="space must be a preset name"):
        cost.count_params(cfg, space=3)


def test_analytic_throughput():
    space = AutoFormerSpace.preset("base")
    g = torch.Generator().manual_seed(0)
    cfgs = [space.sample(g) for _ in range(2000)]
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for cfg in cfgs:
            cost.count_params(cfg)
            cost.count_macs(cfg)
        best = min(best, time.perf_counter() - t)
    assert len(cfgs) / best >= 10_000, f"{len(cfgs) / best:.0f} configs/s"


def test_unknown_config_type():
    with pytest.raises(TypeError, match="no analytic cost model for str; known config types: .*AutoFormerSubnet"):
        cost.count_macs("vit")


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.fc(self.norm(x)).view(x.shape[0], x.shape[1], 3, 2, 4).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v)


def test_measure_macs_conventions():
    model, x = _Block().eval(), torch.zeros(1, 5, 8)
    linear = 5 * 8 * 24
    attention = 2 * 5 * 5 * (4 + 4)  # heads x Nq x Nk x (d_qk + d_v)
    assert cost.measure_macs(model, x) == linear + attention
    assert cost.measure_macs(model, x) == cost.flop_counter_macs(model, x)
    assert cost.measure_macs(model, x, count_norms=True) > linear + attention  # fvcore's norm count, on request
    assert cost.measure_macs(model, x, ignore=["aten::linear"]) == attention
    assert cost.real_params(model) == 8 * 2 + 8 * 24 + 24


def test_flop_counter_counts_attention_by_hand():
    """The cross-check is real: on a tiny attention block, FlopCounterMode's number is the hand count, whichever
    attention kernel the installed torch dispatches to (torch 2.14's own table lacks the CPU flash kernel)."""
    model, x = _Block().eval(), torch.zeros(2, 5, 8)
    linear = 2 * 5 * 8 * 24
    attention = 2 * 2 * 5 * 5 * (4 + 4)  # batch x heads x Nq x Nk x (d_qk + d_v)
    assert cost.flop_counter_macs(model, x) == linear + attention
    assert cost.flop_counter_macs(model.to("meta"), x.to("meta")) == linear + attention  # meta: decomposed to bmm


def test_flop_counter_fails_loudly_on_an_uncounted_attention_op(monkeypatch):
    """An attention op with no formula (neither torch's nor ours) is an error, never a silent under-count."""
    import torch.utils.flop_counter as fc

    monkeypatch.setattr(fc, "flop_registry", {})  # a torch whose table knows nothing
    monkeypatch.setattr(cost, "_attention_formulas", lambda: {})  # and no formula of ours
    with pytest.raises(RuntimeError, match="no formula for .*attention.*measure_macs"):
        cost.flop_counter_macs(_Block().eval(), torch.zeros(1, 5, 8))


def test_measure_macs_leaves_pooling_out():
    """Pooling is not a multiply-accumulate (fvcore counts adaptive_avg_pool2d by default)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    x = torch.zeros(1, 3, 6, 6)
    conv, fc = 4 * 4 * 4 * 3 * 9, 4 * 2
    assert cost.measure_macs(model.eval(), x) == conv + fc == cost.flop_counter_macs(model, x)


# ------------------------------------------------------------------ every published static model, three ways
def _darts_names() -> list[str]:
    from timm_nas.registry import load_registry

    return [f"{k}_{s}" for k in load_registry("darts") for s in ("cifar", "imagenet")]


def _published() -> list:
    """(timm name, model args) of every published static model of every family (not the search networks)."""
    from timm_nas.registry import load_registry

    out = [(n, {}) for n in load_registry("autoformer")]
    out += [("s3_subnet", {"subnet": k}) for k in load_registry("s3")]
    out += [(n, {}) for n in _darts_names()]
    out += [(f"spvit_deit_{s}", {}) for s in ("tiny", "small", "base")]
    return out


#: Published models above this many MACs are measured in the slow suite only (measuring needs real tensors).
_FAST_MACS = 1.6e9


def _analytic(model: nn.Module) -> int:
    # Each family's config and the shape arguments the model recorded (model.cost_args).
    return cost.model_cost(model)[1]


def _published_params() -> list:
    params = []
    for name, kw in _published():
        model = timm.create_model(name, device="meta", **kw)
        slow = _analytic(model) > _FAST_MACS
        label = name + "".join(f"-{v}" for v in kw.values())
        params.append(pytest.param(name, kw, id=label, marks=[pytest.mark.slow] if slow else []))
    return params


@pytest.mark.parametrize("name, kw", _published_params())
def test_published_static_models_three_counts_agree(name, kw):
    """``measure_macs == count_macs == flop_counter_macs`` at each model's default resolution."""
    model = timm.create_model(name, **kw).eval()
    x = torch.randn(1, *model.pretrained_cfg["input_size"])
    analytic = _analytic(model)
    assert cost.measure_macs(model, x) == analytic
    assert cost.flop_counter_macs(model, x) == analytic


# ------------------------------------------------------------- one input: the config plus the recorded shape
_AUTOFORMER_SPACE = dict(embed_dim=[32, 48], depth=[1, 2], num_heads=[1, 2], mlp_ratio=[1.0, 2.0], head_dim=16)
_S3_SPACE = dict(embed_dim=[[16], [16, 32], [16, 32], [16, 32]], depth=[[1], [1], [1, 2], [1]], head_dim=16,
                 window_size=[[2, 4], [2, 4], [2], [1]], mlp_ratio=[1.0, 2.0])
_S3_SUBNET = dict(embed_dim=[16, 32, 16, 32], depth=[1, 1, 2, 1], num_heads=[[1], [2], [1, 1], [2]],
                  window_size=[[4], [2], [2, 2], [1]], mlp_ratio=[[2.0], [1.0], [1.0, 2.0], [1.0]])
_SPVIT_SHAPE = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3)
_SPVIT_ARCH = dict(ops=["msa", "bconv3x3", "skip"], ffn_kept=[list(range(0, 192, 3)), list(range(40)), [5, 7]])

#: One tiny model of every family, static and weight-sharing (num_classes=5 so that reset_classifier(10) changes it).
_TINY = {
    "autoformer_subnet": dict(subnet=dict(embed_dim=32, depth=2, num_heads=[1, 2], mlp_ratio=[2.0, 1.0]),
                              img_size=32, patch_size=8, head_dim=16, num_classes=5),
    "autoformer_supernet": dict(space=_AUTOFORMER_SPACE, img_size=32, patch_size=8, num_classes=5),
    "s3_subnet": dict(subnet=_S3_SUBNET, img_size=64, num_classes=5),
    "s3_supernet": dict(space=_S3_SPACE, img_size=64, num_classes=5),
    "darts_cifar": dict(genotype="darts_v2", C=4, layers=3, auxiliary=True, num_classes=5),
    "darts_imagenet": dict(genotype="pc_darts", C=8, layers=3, num_classes=5),
    "darts_search": dict(C=4, layers=3, num_classes=5),
    "spvit_deit": dict(arch=_SPVIT_ARCH, **_SPVIT_SHAPE, num_classes=5),
    "spvit_search_deit": dict(**_SPVIT_SHAPE, num_classes=5),
}


def _static_of(model: nn.Module) -> nn.Module:
    """The static model whose cost ``model_cost(model)`` gives: the model itself, or what a supernet / search
    network extracts (its active subnet / derived architecture)."""
    return model.extract().eval() if hasattr(model, "extract") else model


def _input(cost_args: dict) -> torch.Tensor:
    size = cost_args["img_size"]
    h, w = (size, size) if isinstance(size, int) else size
    return torch.zeros(1, cost_args["in_chans"], h, w)


def _real(model: nn.Module) -> tuple[int, int]:
    static = _static_of(model)
    return cost.real_params(static), cost.measure_macs(static, _input(model.cost_args))


@pytest.mark.parametrize("name", sorted(_TINY))
def test_cost_args_give_the_real_counts(name):
    """``count_*(cfg, **model.cost_args)`` equals the real model's counts, for every family, static and
    weight-sharing; ``cost_args`` is JSON; ``model_cost`` is the same call."""
    model = timm.create_model(name, **_TINY[name]).eval()
    assert json.loads(json.dumps(model.cost_args)) == model.cost_args
    cfg = cost.arch_config(model)
    real = _real(model)
    assert (cost.count_params(cfg, **model.cost_args), cost.count_macs(cfg, **model.cost_args)) == real
    assert cost.model_cost(model) == real
    if hasattr(model, "extract"):  # a weight-sharing model records its static models' shape arguments
        assert _static_of(model).cost_args == model.cost_args


@pytest.mark.parametrize("name", sorted(_TINY))
def test_cost_args_follow_reset_classifier(name):
    model = timm.create_model(name, **_TINY[name]).eval()
    model.reset_classifier(10)
    assert model.cost_args["num_classes"] == 10
    assert cost.model_cost(model) == _real(model)
    if "global_pool" in model.cost_args:  # AutoFormer: the head on every token
        model.reset_classifier(10, global_pool="")
        assert cost.model_cost(model) == _real(model)


def test_model_cost_of_another_config():
    """``config=`` takes a config or its dict; a supernet gives the cost of that subnet as its static model."""
    from timm_nas.spaces import S3Space

    supernet = timm.create_model("s3_supernet", **_TINY["s3_supernet"]).eval()
    cfg = S3Space.from_dict(_S3_SPACE).smallest()
    static = supernet.extract(cfg)
    expected = (cost.real_params(static), cost.measure_macs(static.eval(), _input(supernet.cost_args)))
    assert cost.model_cost(supernet, cfg) == cost.model_cost(supernet, cfg.to_dict()) == expected
    with supernet.use_subnet(cfg):
        assert cost.model_cost(supernet) == expected


def test_model_cost_needs_cost_args():
    with pytest.raises(TypeError, match="records no cost_args"):
        cost.model_cost(nn.Linear(2, 2), AutoFormerSubnet(192, 2, (3, 4), (4.0, 3.5)))


def test_spvit_cost_args_follow_set_input_size():
    model = timm.create_model("spvit_deit", **_TINY["spvit_deit"]).eval()
    model.set_input_size((48, 48))
    assert model.cost_args["img_size"] == 48
    assert cost.model_cost(model) == _real(model)
