"""Property tests over random configs of the three preset spaces: in-space, JSON round trip, supernet == extract,
analytic params == real params. Supernets run at 32 px (2 x 2 patches) to stay fast; parameter counts are taken
on the meta device at the published 224 px."""
from __future__ import annotations

import json

import pytest
import timm
import torch

import timm_nas  # noqa: F401  (registers the models)
from timm_nas import cost
from timm_nas.models.autoformer import AutoFormerSupernet
from timm_nas.spaces.autoformer import AutoFormerSpace, AutoFormerSubnet

PRESETS = ["tiny", "small", "base"]
IMG = 32


# one intra-op thread: see conftest.one_thread
pytestmark = pytest.mark.usefixtures("one_thread")


def _random_supernet(preset: str) -> AutoFormerSupernet:
    """A preset supernet at 32 px with random (non-trivial) weights, built without the slow init."""
    model = timm.create_model(f"autoformer_supernet_{preset}", img_size=IMG, device="meta").to_empty(device="cpu")
    g = torch.Generator().manual_seed(len(preset))
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.5 if p.ndim == 1 else 1.0 / max(1, p.shape[-1]) ** 0.5
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if "norm" in name and "weight" in name else 0.0))
    model.set_step(0)  # to_empty left the buffer uninitialised
    return model.eval()


@pytest.fixture(scope="module", params=PRESETS)
def preset_supernet(request):
    return request.param, _random_supernet(request.param)


def test_random_configs_properties(preset_supernet):
    preset, model = preset_supernet
    space = AutoFormerSpace.preset(preset)
    assert model.space == space
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, IMG, IMG, generator=g)
    for _ in range(3):
        cfg = space.sample(g)
        assert space.contains(cfg) and space.fits(cfg)
        assert AutoFormerSubnet.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        static = model.extract(cfg)
        with torch.no_grad(), model.use_subnet(cfg):
            ref = model(x)
            torch.testing.assert_close(static(x), ref, atol=1e-4, rtol=1e-4)
        assert cost.real_params(static) == cost.count_params(cfg, img_size=IMG)
        assert json.loads(json.dumps(static._model_args))["subnet"] == cfg.to_dict()


@pytest.mark.parametrize("preset", PRESETS)
def test_analytic_params_equal_real_params_at_224(preset):
    space = AutoFormerSpace.preset(preset)
    g = torch.Generator().manual_seed(11)
    for cfg in [space.sample(g) for _ in range(8)] + [space.largest(), space.smallest(), space.full()]:
        for kwargs in (dict(), dict(num_classes=0), dict(num_classes=10, img_size=(224, 160))):
            model = timm.create_model("autoformer_subnet", subnet=cfg.to_dict(), device="meta", **kwargs)
            assert cost.real_params(model) == cost.count_params(cfg, **kwargs), (cfg, kwargs)


@pytest.mark.parametrize("preset", PRESETS)
def test_full_supernet_params_equal_the_analytic_full_subnet(preset):
    model = timm.create_model(f"autoformer_supernet_{preset}", device="meta")
    # the presets' relative tables are exactly head_dim wide, so the full supernet has the full subnet's params
    assert cost.real_params(model) == cost.count_params(model.space.full(), space=preset)
