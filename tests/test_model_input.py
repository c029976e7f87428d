"""timm's input-size features on our models: dynamic image size, set_input_size (and an export that reloads as the
resized model), forward_intermediates of the DARTS networks, one feature-map layout for S3 supernet and subnet."""
from __future__ import annotations

import pytest
import timm
import torch

import timm_nas  # noqa: F401
from timm_nas import hub

pytestmark = pytest.mark.usefixtures("one_thread")

AF = dict(subnet=dict(embed_dim=64, depth=2, num_heads=[2, 2], mlp_ratio=[2.0, 1.0]), patch_size=8, head_dim=32,
          num_classes=5)


def _autoformer(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("autoformer_subnet", img_size=32, **AF, **kw).eval()


def test_autoformer_dynamic_img_size_runs_any_size_and_equals_the_fixed_model_at_its_size():
    fixed, dynamic = _autoformer(), _autoformer(dynamic_img_size=True)
    dynamic.load_state_dict(fixed.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dynamic(x), fixed(x), rtol=0, atol=0)
        for h, w in ((48, 40), (24, 64), (8, 8)):
            assert dynamic(torch.randn(1, 3, h, w)).shape == (1, 5)
        maps = dynamic.forward_intermediates(torch.randn(1, 3, 48, 40), intermediates_only=True)
    assert [m.shape for m in maps] == [(1, 64, 6, 5)] * 2
    with pytest.raises(AssertionError):  # the fixed model keeps timm's strict size check
        fixed(torch.randn(1, 3, 48, 40))


def test_autoformer_set_input_size_equals_the_dynamic_model_and_reloads_resized(tmp_path):
    fixed, dynamic = _autoformer(), _autoformer(dynamic_img_size=True)
    dynamic.load_state_dict(fixed.state_dict())
    fixed.set_input_size(img_size=(48, 40))
    assert fixed.patch_embed.grid_size == (6, 5) and fixed.pos_embed.shape == (1, 31, 64)
    assert all(b.attn.grid_size == (6, 5) and b.attn.rel_pos_k.grid_size == (6, 5) for b in fixed.blocks)
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        torch.testing.assert_close(fixed(x), dynamic(x), rtol=0, atol=0)
    hub.export(fixed, tmp_path / "resized", card={"notes": "resized"}, overwrite=False)
    restored = timm.create_model(f"local-dir:{tmp_path / 'resized'}", pretrained=True).eval()
    assert restored.patch_embed.img_size == (48, 40)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), fixed(x), rtol=0, atol=0)
    # the analytic cost follows the new size too
    from timm_nas import cost

    assert cost.model_cost(fixed)[1] == cost.measure_macs(fixed, x[:1])


def test_spvit_dynamic_img_size_runs_its_conv_layers_on_each_inputs_grid():
    import copy

    kw = dict(num_classes=5, depth=3, embed_dim=48, num_heads=3, img_size=32, patch_size=8,
              arch=dict(ops=["bconv3x3", "bconv1x1", "msa"], ffn_kept=[list(range(96)), list(range(64)), [0, 5]]))
    torch.manual_seed(0)
    fixed = timm.create_model("spvit_deit", **kw).eval()
    dynamic = timm.create_model("spvit_deit", dynamic_img_size=True, **kw).eval()
    dynamic.load_state_dict(fixed.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dynamic(x), fixed(x), rtol=0, atol=0)
        fixed.set_input_size(img_size=(48, 40))
        x2 = torch.randn(2, 3, 48, 40)
        torch.testing.assert_close(dynamic(x2), fixed(x2), rtol=0, atol=0)  # the 3x3 kernel saw the 6x5 grid
        ema = copy.deepcopy(dynamic)  # timm's EMA copies the model: the copy keeps its own grid
        torch.testing.assert_close(ema(x2), dynamic(x2), rtol=0, atol=0)
        assert ema(torch.randn(1, 3, 24, 64)).shape == (1, 5)
        maps = dynamic.forward_intermediates(x2, intermediates_only=True)
    assert maps[0].shape == (2, 48, 6, 5)
    torch.jit.script(timm.create_model("spvit_deit", **kw).eval())  # the fixed-size model still scripts


def test_darts_forward_intermediates_equal_features_only_and_prune():
    for name, kw, size in (("darts_cifar", dict(C=8, layers=5), 32), ("darts_imagenet", dict(C=8, layers=5), 64)):
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=10, **kw).eval()
        torch.manual_seed(0)
        features = timm.create_model(name, num_classes=10, features_only=True, **kw).eval()
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            maps = model.forward_intermediates(x, intermediates_only=True)
            final, last_two = model.forward_intermediates(x, indices=2)
            for a, b in zip(maps, features(x)):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
            torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        assert [m.shape[1] for m in maps] == [info["num_chs"] for info in model.feature_info]
        assert len(maps) == len(model.feature_info) and [t.shape for t in last_two] == [m.shape for m in maps[-2:]]
        kept = model.prune_intermediate_layers(indices=2)
        assert kept == [2, 3] and isinstance(model.get_classifier(), torch.nn.Identity)
        with pytest.raises(ValueError, match="output_fmt='NHWC' is not supported"):
            model.forward_intermediates(x, output_fmt="NHWC")


def test_s3_supernet_and_subnet_give_the_same_feature_layout():
    space = dict(embed_dim=[[32], [32], [32], [32]], depth=[[1], [1], [1], [1]], window_size=[[4], [4], [2], [1]],
                 mlp_ratio=[2.0])
    torch.manual_seed(0)
    supernet = timm.create_model("s3_supernet", space=space, img_size=64, num_classes=10, features_only=True).eval()
    subnet = timm.create_model("s3_subnet", subnet=timm.create_model("s3_supernet", space=space, img_size=64,
                                                                     device="meta").space.largest().to_dict(),
                               img_size=64, num_classes=10, features_only=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = supernet(x), subnet(x)
    assert [t.shape for t in a] == [t.shape for t in b] == [(1, 16, 16, 32), (1, 8, 8, 32), (1, 4, 4, 32),
                                                            (1, 2, 2, 32)]  # NHWC, as timm's Swin


def test_s3_set_input_size_keeps_the_searched_windows_and_reloads_resized(tmp_path):
    space = dict(embed_dim=[[32], [32], [32], [32]], depth=[[2], [2], [2], [1]], window_size=[[4], [4], [2], [1]],
                 mlp_ratio=[2.0])
    cfg = timm.create_model("s3_supernet", space=space, img_size=64, device="meta").space.largest().to_dict()
    torch.manual_seed(0)
    model = timm.create_model("s3_subnet", subnet=cfg, img_size=64, num_classes=10).eval()
    model.set_input_size(img_size=128)
    fresh = timm.create_model("s3_subnet", subnet=cfg, img_size=128, num_classes=10, device="meta")

    def windows(m):
        return [(b.window_size, b.shift_size, b.input_resolution) for b in m.modules() if hasattr(b, "shift_size")]

    assert windows(model) == windows(fresh)
    x = torch.randn(1, 3, 128, 128)
    hub.export(model, tmp_path / "s3")
    restored = timm.create_model(f"local-dir:{tmp_path / 's3'}", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"the 5x5 grid of stage 2 is odd and cannot be merged"):
        model.set_input_size(img_size=80)
    with pytest.raises(ValueError, match="changes img_size only"):
        model.set_input_size(img_size=128, window_size=8)


def test_darts_nominal_input_size_follows_set_input_size_into_cost_and_export(tmp_path):
    from timm_nas import cost

    model = timm.create_model("darts_cifar", C=8, layers=5, num_classes=10).eval()
    model.set_input_size(img_size=64)
    x = torch.randn(1, 3, 64, 64)
    assert cost.model_cost(model)[1] == cost.measure_macs(model, x)
    hub.export(model, tmp_path / "d", card={"notes": "untrained"})
    restored = timm.create_model(f"local-dir:{tmp_path / 'd'}", pretrained=True).eval()
    assert restored.cost_args["img_size"] == 64
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"has no \['window_size'\] to change"):
        model.set_input_size(img_size=64, window_size=4)
