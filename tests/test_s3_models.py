"""S3 models: the static subnet equals timm's swin_s3, the supernet runs and extracts subnets, checkpoints load."""
from __future__ import annotations

import argparse
import re

import pytest
import timm
import torch

from timm_nas.cost import count_macs, count_params, flop_counter_macs, real_params
from timm_nas.models.s3 import crop_rel_pos_table, merged_channels, qkv_rows
from timm_nas.models.s3 import (
    S3Supernet,
    S3Transformer,
    checkpoint_filter_fn,
    resolve_subnet,
    slice_s3_state_dict,
)
from timm_nas.registry import get_entry
from timm_nas.spaces import S3Space, S3Subnet

#: A tiny space at img_size 64 (grids 16/8/4/2), the golden fixture's.
TINY = dict(embed_dim=[[32], [32, 64], [32, 64], [32, 64]], depth=[[1, 2], [1, 2], [1, 2, 3, 4], [1, 2]],
            window_size=[[4, 8], [4, 8], [2, 4], [1, 2]], mlp_ratio=[2.0, 3.0, 4.0])
TINY_ARGS = dict(space=TINY, img_size=64, num_classes=10)

PUBLISHED = {"s3_tiny": ("swin_s3_tiny_224", 28_328_674), "s3_small": ("swin_s3_small_224", 49_737_298),
             "s3_base": ("swin_s3_base_224", 71_125_762)}


@pytest.fixture(scope="module")
def supernet() -> S3Supernet:
    torch.manual_seed(0)
    model = timm.create_model("s3_supernet", **TINY_ARGS).eval()
    with torch.no_grad():  # non-trivial LayerNorm affine terms so every tensor moves the logits
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _x(size: int = 64, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------------------------------------- static
@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_parameter_counts_of_the_published_models(key):
    timm_name, expected = PUBLISHED[key]
    model = timm.create_model("s3_subnet", subnet=key, device="meta")
    assert real_params(model) == expected
    assert count_params(resolve_subnet(key)) == expected
    assert real_params(timm.create_model(timm_name, device="meta")) == expected


def _assert_same_as_timm(key: str) -> None:
    timm_name, _ = PUBLISHED[key]
    # skip the (slow) init and draw random weights directly; LayerNorm scales near 1 keep the signal alive
    ref = timm.create_model(timm_name, weight_init="skip").eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in ref.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02 + (1.0 if n.endswith("norm1.weight") or
                                                                   n.endswith("norm2.weight") or "norm.weight" in n
                                                                   else 0.0))
    ours = timm.create_model("s3_subnet", subnet=key, weight_init="skip").eval()
    assert set(ours.state_dict()) == set(ref.state_dict())
    ours.load_state_dict(checkpoint_filter_fn(ref.state_dict(), ours), strict=True)
    x = _x(224, 1)
    with torch.no_grad():
        feats, ref_feats = ours.forward_features(x), ref.forward_features(x)
        torch.testing.assert_close(feats, ref_feats, rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.forward_head(feats), ref.forward_head(ref_feats), rtol=0, atol=1e-5)
        assert feats.shape == (1, 7, 7, 768)


@pytest.mark.parametrize("key", ["s3_tiny", "s3_small"])
def test_s3_subnet_equals_timm_swin_s3(key):
    _assert_same_as_timm(key)


@pytest.mark.slow
def test_s3_subnet_equals_timm_swin_s3_base():
    _assert_same_as_timm("s3_base")


def test_default_subnet_is_s3_t_and_args_are_checked():
    model = timm.create_model("s3_subnet", device="meta")
    assert model.subnet == resolve_subnet("S3-T")
    assert model.num_features == 768 and model.feature_info[2]["num_chs"] == 384
    with pytest.raises(TypeError):
        timm.create_model("s3_subnet", not_an_arg=1)
    with pytest.raises(ValueError, match=r"window_size\[0\]\[0\]: window 6 does not divide the 16x16 token grid"):
        timm.create_model("s3_subnet", img_size=64, subnet=dict(
            embed_dim=[32, 64], depth=[1, 1], num_heads=[[1], [2]], window_size=[[6], [4]], mlp_ratio=[[4.0], [4.0]]))
    with pytest.raises(ValueError, match="grid of stage 1 is odd"):
        timm.create_model("s3_subnet", img_size=24, subnet=dict(
            embed_dim=[32, 32, 32], depth=[1, 1, 1], num_heads=[[1]] * 3, window_size=[[2]] * 3,
            mlp_ratio=[[1.0]] * 3))
    with pytest.raises(ValueError, match="'s3_huge' is not a published s3 architecture; known names: .*s3_tiny"):
        resolve_subnet("s3_huge")


def _to_original_layout(sd: dict, subnet: S3Subnet, grid: int) -> dict:
    """A state dict as the original SSSTransformer saves it (downsample at the end of a stage, ``head.``, and the
    persistent buffers)."""
    from timm.models.swin_transformer import get_relative_position_index

    from timm_nas.layers.window_attention import shifted_window_mask, window_and_shift

    out = {}
    for k, v in sd.items():
        k = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", k)
        out[k.replace("head.fc.", "head.")] = v
    for i, j in subnet.blocks():
        g = grid // 2 ** i
        w, s = window_and_shift(g, subnet.window_size[i][j], j)
        out[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = get_relative_position_index(w, w)
        if s:
            out[f"layers.{i}.blocks.{j}.attn_mask"] = shifted_window_mask(g, g, w, s, torch.device("cpu"))
    return out


def test_original_checkpoint_file_loads_through_create_model(supernet, tmp_path):
    """An original S3 release file (``{'model': ..., 'args': Namespace}``), read with weights_only=True."""
    cfg = supernet.space.sample(2)
    src = supernet.extract(cfg).eval()
    original = _to_original_layout(src.state_dict(), cfg, 16)
    assert "layers.0.downsample.reduction.weight" in original and "head.weight" in original
    path = tmp_path / "S3-T.pth"
    torch.save({"model": original, "args": argparse.Namespace(lr=5e-4), "epoch": 299}, path)
    ours = timm.create_model("s3_subnet", subnet=cfg.to_dict(), img_size=64, num_classes=10, pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(path), num_classes=10)).eval()
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), src(x), rtol=0, atol=0)


def test_checkpoint_filter_rejects_foreign_keys():
    model = timm.create_model("s3_subnet", device="meta")
    sd = dict(timm.create_model("swin_s3_tiny_224", device="meta").state_dict())
    sd["absolute_pos_embed"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"do not belong to an S3 network.*absolute_pos_embed"):
        checkpoint_filter_fn(sd, model)
    with pytest.raises(TypeError, match="not Linear"):
        checkpoint_filter_fn(sd, torch.nn.Linear(1, 1))


# --------------------------------------------------------------------------------------------- slicing
def test_slicing_rules_on_labelled_tensors():
    E = 4  # q rows 0-3, k rows 4-7, v rows 8-11
    assert qkv_rows(torch.arange(3 * E), 2).tolist() == [0, 1, 4, 5, 8, 9]
    assert merged_channels(torch.arange(4 * E), 1).tolist() == [0, 4, 8, 12]
    W = 3  # 5x5 offsets, entry = 10 * (dy + 2) + (dx + 2)
    table = torch.tensor([[10 * a + b, -(10 * a + b)] for a in range(5) for b in range(5)], dtype=torch.float)
    crop = crop_rel_pos_table(table, 2, 1)  # offsets -1..1 keep the centre 3x3
    assert crop.shape == (9, 1)
    assert crop[:, 0].tolist() == [11, 12, 13, 21, 22, 23, 31, 32, 33]
    assert crop_rel_pos_table(table, W, 2) is not None and crop_rel_pos_table(table, W, 1).shape == (25, 1)
    with pytest.raises(ValueError, match="the subnet needs 4 but the supernet weight holds only 3"):
        crop_rel_pos_table(table, 4, 1)


def test_slice_state_dict_errors(supernet):
    sd = supernet.state_dict()
    too_wide = supernet.space.largest().to_dict()
    too_wide["embed_dim"][0] = 64
    too_wide["num_heads"][0] = [2, 2]
    with pytest.raises(ValueError, match="needs 64 but the supernet weight holds only 32"):
        slice_s3_state_dict(sd, too_wide, 16)
    fewer = {k: v for k, v in sd.items() if not k.startswith("layers.2.blocks.3.")}
    with pytest.raises(KeyError, match=r"no 'layers\.2\.blocks\.3\.\*' tensors"):
        slice_s3_state_dict(fewer, supernet.space.largest(), 16)


# -------------------------------------------------------------------------------------------- supernet
def test_supernet_defaults_to_its_full_shape(supernet):
    full = supernet.space.full()
    assert supernet.active_subnet == full
    assert supernet.num_features == 64
    sub = supernet.extract(full).eval()
    assert real_params(sub) == real_params(supernet) == count_params(full, num_classes=10, img_size=64)
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(sub(x), supernet(x), rtol=0, atol=1e-6)


def test_use_subnet_equals_extract_for_sampled_subnets(supernet):
    x = _x()
    space = supernet.space
    for seed in range(3):
        cfg = space.sample(seed)
        with torch.no_grad(), supernet.use_subnet(cfg) as active:
            assert active == cfg and supernet.num_features == cfg.embed_dim[-1]
            feats = supernet.forward_features(x)
            logits = supernet.forward_head(feats)
            pre = supernet.forward_head(feats, pre_logits=True)
        assert supernet.active_subnet == space.full() and supernet.num_features == 64
        sub = supernet.extract(cfg).eval()
        assert real_params(sub) == count_params(cfg, num_classes=10, img_size=64)
        with torch.no_grad():
            torch.testing.assert_close(sub(x), logits, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(sub.forward_head(sub.forward_features(x), pre_logits=True), pre,
                                       rtol=1e-4, atol=1e-5)
        assert pre.shape == (2, cfg.embed_dim[-1])


def test_subnets_differ_and_check_fits(supernet):
    x = _x()
    with torch.no_grad():
        with supernet.use_subnet(supernet.space.smallest()):
            small = supernet(x)
        big = supernet(x)
    assert (small - big).abs().max() > 1e-2
    bad = supernet.space.largest().to_dict()
    bad["window_size"][0][0] = 16  # clamps to 16 on the 16-grid but the supernet's table is for 8
    with pytest.raises(ValueError, match=r"window_size\[0\]\[0\]=16 needs a 16-window table .* largest is 8"):
        supernet.set_active_subnet(bad)
    bad["window_size"][0][0] = 3
    with pytest.raises(ValueError, match="window 3 does not divide the 16x16 token grid"):
        supernet.extract(bad)


def test_extract_records_json_model_args_that_rebuild_it(supernet):
    import json

    cfg = supernet.space.sample(11)
    sub = supernet.extract(cfg).eval()
    args = json.loads(json.dumps(sub._model_args))  # JSON-native
    assert args["subnet"] == cfg.to_dict() and args["img_size"] == 64 and args["num_classes"] == 10
    rebuilt = timm.create_model("s3_subnet", **args).eval()
    rebuilt.load_state_dict(sub.state_dict(), strict=True)
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), sub(x), rtol=0, atol=0)


def test_supernet_checkpoint_loads_into_a_subnet_entrypoint(supernet, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "supernet.safetensors"
    save_file({k: v.contiguous() for k, v in supernet.state_dict().items()}, str(path))
    cfg = supernet.space.sample(5)
    # num_classes in the overlay: timm drops a classifier whose class count differs from the pretrained cfg's
    overlay = dict(file=str(path), num_classes=10)
    sub = timm.create_model("s3_subnet", subnet=cfg.to_dict(), img_size=64, num_classes=10, pretrained=True,
                            pretrained_cfg_overlay=overlay).eval()
    x = _x()
    with torch.no_grad(), supernet.use_subnet(cfg):
        torch.testing.assert_close(sub(x), supernet(x), rtol=1e-4, atol=1e-5)
    # and back into a supernet of the same space (the step buffer travels with it)
    again = timm.create_model("s3_supernet", pretrained=True, pretrained_cfg_overlay=overlay, **TINY_ARGS).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), supernet(x), rtol=0, atol=0)


def test_training_samples_per_step_reproducibly_and_ties_unused_gradients():
    torch.manual_seed(0)
    model = timm.create_model("s3_supernet", seed=3, **TINY_ARGS).train()
    x = _x()
    seq = []
    for _ in range(3):
        model.zero_grad()
        model(x).sum().backward()
        seq.append(model.last_arch())
        assert all(p.grad is not None for p in model.parameters())
    assert len(set(seq)) > 1 and model.step == 3
    # the sequence is a function of (seed, step): another supernet with the same seed replays it, another seed not
    twin = timm.create_model("s3_supernet", seed=3, device="meta", **TINY_ARGS)
    assert [twin.policy_subnet(k) for k in range(3)] == seq
    other = timm.create_model("s3_supernet", seed=4, device="meta", **TINY_ARGS)
    assert [other.policy_subnet(k) for k in range(3)] != seq
    model.eval()
    model(x)
    assert model.step == 3 and model.last_arch() == model.space.full()  # eval forwards do not advance the step
    # blocks beyond the sampled depth get exactly zero gradient; used ones get a real one
    cfg = seq[-1]
    for i, stage in enumerate(model.layers):
        for j, blk in enumerate(stage.blocks):
            grads = torch.cat([p.grad.flatten() for p in blk.parameters()])
            assert (grads.abs().sum() == 0) == (j >= cfg.depth[i])
    # the step is persistent: a resumed supernet continues the sequence
    resumed = timm.create_model("s3_supernet", seed=3, **TINY_ARGS)
    resumed.load_state_dict(model.state_dict())
    assert resumed.step == 3


def test_unused_grad_none_restores_the_original_behaviour():
    model = timm.create_model("s3_supernet", unused_grad="none", sampling="fixed", **TINY_ARGS)
    model.set_active_subnet(model.space.smallest())
    model.train()
    model(_x()).sum().backward()
    assert model.layers[2].blocks[1].attn.qkv.weight.grad is None
    assert model.layers[2].blocks[0].attn.qkv.weight.grad is not None


def test_supernet_features_and_intermediates(supernet):
    x = _x()
    with torch.no_grad():
        final, inter = supernet.forward_intermediates(x)
        torch.testing.assert_close(final, supernet.forward_features(x))
    assert [t.shape[1] for t in inter] == [32, 64, 64, 64] and inter[0].shape[-1] == 16
    feats = timm.create_model("s3_supernet", features_only=True, out_indices=(1, 3), **TINY_ARGS).eval()
    outs = feats(x)
    assert [o.shape for o in outs] == [(2, 8, 8, 64), (2, 2, 2, 64)]  # NHWC, as the static model and timm's Swin


def test_grad_checkpointing_keeps_outputs(supernet):
    x = _x()
    model = timm.create_model("s3_supernet", **TINY_ARGS).eval()
    with torch.no_grad():
        before = model(x)
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model(x), before)
        model.set_grad_checkpointing(False)


def test_meta_device_forward():
    model = timm.create_model("s3_supernet", device="meta", **TINY_ARGS)
    assert all(t.is_meta for t in model.state_dict().values())
    assert model(torch.randn(1, 3, 64, 64, device="meta")).shape == (1, 10)


# ------------------------------------------------------------------------------------------------ cost
def test_analytic_cost_matches_the_real_models(supernet):
    x = _x(batch=1)
    space = supernet.space
    for seed in range(3):
        cfg = space.sample(seed)
        sub = supernet.extract(cfg).eval()
        assert count_params(cfg, num_classes=10, img_size=64) == real_params(sub)
        assert count_macs(cfg, num_classes=10, img_size=64) == flop_counter_macs(sub, x)
    s3_t = resolve_subnet("s3_tiny")  # FlopCounterMode counts on the meta device too
    meta = timm.create_model("s3_subnet", device="meta").eval()
    assert count_macs(s3_t) == flop_counter_macs(meta, torch.randn(1, 3, 224, 224, device="meta")) == 4_623_332_352


def test_registry_config_is_the_default_and_an_s3subnet():
    entry = get_entry("s3", "swin_s3_tiny_224")
    assert S3Subnet.from_dict(entry["model_args"]["subnet"]) == resolve_subnet(None)
    assert isinstance(S3Space.preset(entry["space"]), S3Space)
    assert S3Transformer.__name__ in repr(type(timm.create_model("s3_subnet", device="meta")))


def test_initial_subnet_argument_and_subnet_state_dict(supernet):
    small = supernet.space.smallest()
    model = timm.create_model("s3_supernet", subnet=small.to_dict(), sampling="fixed", device="meta", **TINY_ARGS)
    assert model.active_subnet == small and model.num_features == small.embed_dim[-1]
    assert model.feature_info[1]["num_chs"] == small.embed_dim[1]
    with pytest.raises(ValueError, match=r"depth\[2\]=5 exceeds the supernet's 4 blocks"):
        bad = small.to_dict()
        bad["depth"][2] = 5
        for field in ("num_heads", "window_size", "mlp_ratio"):
            bad[field][2] = bad[field][2] * 5
        timm.create_model("s3_supernet", subnet=bad, device="meta", **TINY_ARGS)
    cfg = supernet.space.sample(4)
    state = supernet.subnet_state_dict(cfg)
    assert set(state) == set(supernet.extract(cfg).state_dict())
    assert all(not t.requires_grad for t in state.values())
    fine = supernet.extract(cfg, drop_path_rate=0.0)
    assert fine._model_args["drop_path_rate"] == 0.0
