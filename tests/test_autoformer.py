"""AutoFormer models: fixture parity, the supernet API, slicing, checkpoints, sampling, gradients and errors.

Models are kept tiny (the fixture's space: super embed 128, 3 blocks, 2 heads; 32 px images in 8 px patches),
except where a test is about the published architectures, which it builds on the meta device.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from safetensors.torch import save_file

import timm_nas  # noqa: F401  (registers the models)
from conftest import fixtures_root, load_json, load_tensors
from timm_nas import AutoFormerSpace, AutoFormerSubnet
from timm_nas.layers import relative_position_embeddings, relative_position_index_2d
from timm_nas.models.autoformer import slice_interleaved_qkv
from timm_nas.models.autoformer import (
    AutoFormer,
    AutoFormerSupernet,
    checkpoint_filter_fn,
    convert_original_state_dict,
    slice_subnet_state_dict,
)
from timm_nas.registry import get_entry

#: The golden fixture's space (README: super embed 128, depth 3, 2 heads, MLP 4.0) with a few choices.
SPACE = dict(embed_dim=[64, 96, 128], depth=[2, 3], num_heads=[1, 2], mlp_ratio=[3.0, 3.5, 4.0],
             super_embed_dim=128, super_depth=3, super_num_heads=2, super_mlp_ratio=4.0)
SMALL = dict(img_size=32, patch_size=8, num_classes=10)
SUB = AutoFormerSubnet(embed_dim=96, depth=2, num_heads=(1, 2), mlp_ratio=(3.5, 3.0))


# one intra-op thread: see conftest.one_thread
pytestmark = pytest.mark.usefixtures("one_thread")


def make_supernet(**kwargs) -> AutoFormerSupernet:
    return timm.create_model("autoformer_supernet", space=SPACE, **dict(SMALL, **kwargs))


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial values everywhere (biases and norms too), so slicing mistakes change the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            offset = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + offset)
    return model


def images(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------- parity
def _fixture_supernet(folder: Path) -> tuple[AutoFormerSupernet, dict]:
    cases = load_json(folder / "cases.json")
    c = {k: v["value"] for k, v in cases["supernet_constructor"].items()}
    official = dict(relative_position=True, change_qkv=True, abs_pos=True, pre_norm=True, scale=False)
    assert {k: c[k] for k in official} == official, f"fixture uses non-official flags: {c}"
    space = dict(embed_dim=[c["embed_dim"]], depth=[c["depth"]], num_heads=[c["num_heads"]],
                 mlp_ratio=[c["mlp_ratio"]])
    model = timm.create_model(
        "autoformer_supernet", space=space, img_size=c["img_size"], patch_size=c["patch_size"],
        in_chans=c["in_chans"], num_classes=c["num_classes"], qkv_bias=c["qkv_bias"],
        global_pool="avg" if c["gp"] else "token", max_relative_position=c["max_relative_position"])
    sd = load_tensors(folder / cases["state_dict"]["file"])
    model.load_state_dict(checkpoint_filter_fn(sd, model), strict=True)
    return model.eval(), cases


def test_parity_with_original_use_subnet_and_extract(golden):
    folder = golden("autoformer")
    model, cases = _fixture_supernet(folder)
    tensors = load_tensors(folder / "cases.safetensors")
    assert sum(p.numel() for p in model.parameters()) == cases["state_dict"]["num_params"]
    failures = []
    for case in cases["cases"]:
        cfg = AutoFormerSubnet.from_original(case["subnet_config"])
        names = case["tensors"]
        x, logits, pre = tensors[names["input"]], tensors[names["logits"]], tensors[names["pre_logits"]]
        with torch.no_grad(), model.use_subnet(cfg):
            feats = model.forward_features(x)
            got_pre, got = model.forward_head(feats, pre_logits=True), model.forward_head(feats)
        static = model.extract(cfg).eval()
        with torch.no_grad():
            s_feats = static.forward_features(x)
            s_pre, s_logits = static.forward_head(s_feats, pre_logits=True), static.forward_head(s_feats)
        assert sum(p.numel() for p in static.parameters()) == case["sampled_param_count_get_sampled_params_numel"]
        for what, a, b in (("use_subnet logits", got, logits), ("use_subnet pre_logits", got_pre, pre),
                           ("extract logits", s_logits, logits), ("extract pre_logits", s_pre, pre)):
            diff = (a - b).abs().max().item()
            if not torch.allclose(a, b, atol=1e-5, rtol=1e-5):
                failures.append(f"case {case['case']} {what}: max abs diff {diff:.3g}")
    assert not failures, failures


def test_parity_through_timm_pretrained_paths(golden):
    """The fixture file loads through timm's own pretrained machinery (file source + checkpoint_filter_fn), for
    the supernet and, sliced, for a static subnet of each case."""
    folder = golden("autoformer")
    cases = load_json(folder / "cases.json")
    c = {k: v["value"] for k, v in cases["supernet_constructor"].items()}
    tensors = load_tensors(folder / "cases.safetensors")
    common = dict(img_size=c["img_size"], patch_size=c["patch_size"], num_classes=c["num_classes"], pretrained=True,
                  pretrained_cfg_overlay=dict(file=str(folder / cases["state_dict"]["file"]),
                                              num_classes=c["num_classes"]))
    space = dict(embed_dim=[c["embed_dim"]], depth=[c["depth"]], num_heads=[c["num_heads"]],
                 mlp_ratio=[c["mlp_ratio"]])
    supernet = timm.create_model("autoformer_supernet", space=space, **common).eval()
    for case in cases["cases"]:
        cfg = AutoFormerSubnet.from_original(case["subnet_config"])
        x, logits = tensors[case["tensors"]["input"]], tensors[case["tensors"]["logits"]]
        static = timm.create_model("autoformer_subnet", subnet=cfg.to_dict(), **common).eval()
        with torch.no_grad(), supernet.use_subnet(cfg):
            torch.testing.assert_close(supernet(x), logits, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(static(x), logits, atol=1e-5, rtol=1e-5)


def test_fixture_cases_are_listed():
    """The parity tests must not pass vacuously: the shared fixture has cases 0-2 (skips if absent)."""
    folder = fixtures_root() / "autoformer"
    if not folder.is_dir():
        pytest.skip(f"no fixtures at {folder}")
    assert len(load_json(folder / "cases.json")["cases"]) >= 3


# ------------------------------------------------------------------------------------------- published
PUBLISHED = {
    "autoformer_tiny": 5_867_944, "autoformer_small": 22_891_432, "autoformer_base": 53_691_688,
    "tf_tas_tiny": 6_200_776, "tf_tas_small": 23_935_336, "tf_tas_base": 56_470_792,
    "autoformer_supernet_tiny": 11_669_224, "autoformer_supernet_small": 34_790_440,
    "autoformer_supernet_base": 80_160_360,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_counts(name):
    model = timm.create_model(name, device="meta")
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[name]
    assert model.num_classes == 1000 and model.pretrained_cfg["input_size"] == (3, 224, 224)


@pytest.mark.parametrize("name", ["autoformer_tiny", "autoformer_small", "autoformer_base", "tf_tas_tiny",
                                  "tf_tas_small", "tf_tas_base"])
def test_published_configs_come_from_the_registry(name):
    model = timm.create_model(name, device="meta")
    entry = get_entry("autoformer", name)
    assert model.subnet == AutoFormerSubnet.from_dict(entry["model_args"]["subnet"])
    # the published subnet runs on its supernet's weights (AutoFormer-T's MLP 3.0 is outside tiny's choices)
    assert AutoFormerSpace.preset(entry["space"]).fits(model.subnet)


def test_default_models():
    assert timm.create_model("autoformer_subnet", device="meta").subnet == timm.create_model(
        "autoformer_tiny", device="meta").subnet
    supernet = timm.create_model("autoformer_supernet", device="meta")
    assert supernet.space == AutoFormerSpace.preset("tiny")
    assert supernet.active_subnet == supernet.space.full()
    assert supernet.num_features == supernet.head_hidden_size == 256


def test_pretrained_cfgs():
    release = "https://github.com/silent-chen/AutoFormer-model-zoo/releases/download/v1.0/supernet-{}.pth"
    for size in ("tiny", "small", "base"):
        for name in (f"autoformer_supernet_{size}", f"autoformer_{size}"):
            cfg = timm.create_model(name, device="meta").pretrained_cfg
            assert cfg["url"] == release.format(size) and cfg["custom_load"] is True
        assert not timm.create_model(f"tf_tas_{size}", device="meta").pretrained_cfg["url"]


def test_unknown_kwargs_raise_type_error():
    with pytest.raises(TypeError):
        timm.create_model("autoformer_supernet_tiny", device="meta", not_an_arg=1)
    with pytest.raises(TypeError):
        timm.create_model("autoformer_tiny", device="meta", not_an_arg=1)


# ------------------------------------------------------------------------------------------ supernet API
def test_use_subnet_restores_and_accepts_dicts():
    model = make_supernet().eval()
    full = model.active_subnet
    with model.use_subnet(SUB.to_dict()) as cfg:
        assert cfg == SUB and model.active_subnet == SUB and model.num_features == 96
        with model.use_subnet(model.space.smallest()):
            assert model.num_features == 64
        assert model.active_subnet == SUB
    assert model.active_subnet == full and model.num_features == 128
    with pytest.raises(RuntimeError), model.use_subnet(SUB):
        raise RuntimeError("boom")
    assert model.active_subnet == full


def test_initial_active_subnet_argument():
    t = timm.create_model("autoformer_tiny", device="meta").subnet
    model = timm.create_model("autoformer_supernet_tiny", subnet=t.to_dict(), sampling="fixed", device="meta")
    assert model.active_subnet == t and model.num_features == 192
    with pytest.raises(ValueError, match="embed_dim=512 exceeds"):
        timm.create_model("autoformer_supernet_tiny", subnet=dict(t.to_dict(), embed_dim=512), device="meta")


def test_features_and_head_follow_the_active_subnet():
    model = make_supernet().eval()
    x = images()
    with torch.no_grad(), model.use_subnet(SUB):
        feats = model.forward_features(x)
        assert feats.shape == (2, 17, 96) and model.last_arch() == SUB
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
        assert model(x).shape == (2, 10)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, 128)
    model.reset_classifier(5, "token")
    with torch.no_grad():
        assert model(x).shape == (2, 5)
    model.reset_classifier(5, "")
    with torch.no_grad():
        assert model(x).shape == (2, 17, 5)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(5, "max")


@pytest.mark.parametrize("pool", ["avg", "token"])
def test_supernet_equals_extract(pool):
    model = randomise(make_supernet(global_pool=pool)).eval()
    x = images()
    for cfg in (SUB, model.space.smallest(), model.space.full(), AutoFormerSubnet(64, 3, (2, 2, 1), (4.0, 3.0, 3.5))):
        static = model.extract(cfg)
        assert isinstance(static, AutoFormer) and not static.training
        with torch.no_grad(), model.use_subnet(cfg):
            torch.testing.assert_close(static(x), model(x), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(static.forward_features(x), model.forward_features(x), atol=1e-5, rtol=1e-5)


def test_extract_copies_weights_and_records_model_args():
    model = randomise(make_supernet()).eval()
    static = model.extract(SUB)
    args = static._model_args
    assert args["subnet"] == SUB.to_dict() and args["num_classes"] == 10 and args["img_size"] == 32
    assert json.loads(json.dumps(args)) == args  # JSON-native
    assert static.pretrained_cfg["architecture"] == "autoformer_subnet"
    # the copy shares no storage with the supernet
    ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert not any(p.untyped_storage().data_ptr() in ptrs for p in static.parameters())
    # the recorded arguments rebuild the same architecture; with the state dict, the same outputs
    rebuilt = timm.create_model("autoformer_subnet", **args).eval()
    rebuilt.load_state_dict(static.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images()), static(images()))
    # training knobs pass through
    assert model.extract(SUB, drop_path_rate=0.1)._model_args["drop_path_rate"] == 0.1


def test_published_subnet_outside_the_choices_fits():
    model = timm.create_model("autoformer_supernet_tiny", device="meta")
    t = timm.create_model("autoformer_tiny", device="meta").subnet
    assert not model.space.contains(t) and model.space.fits(t)
    with model.use_subnet(t):
        assert model.num_features == 192
        assert model.forward_features(torch.zeros(1, 3, 224, 224, device="meta")).shape == (1, 197, 192)
    static = model.extract(t)
    assert sum(p.numel() for p in static.parameters()) == PUBLISHED["autoformer_tiny"]


@pytest.mark.parametrize("bad, match", [
    (AutoFormerSubnet(160, 2, (1, 1), (4.0, 4.0)), "embed_dim=160 exceeds"),
    (AutoFormerSubnet(64, 4, (1,) * 4, (4.0,) * 4), "depth=4 exceeds"),
    (AutoFormerSubnet(128, 2, (3, 1), (4.0, 4.0)), r"num_heads\[0\]=3"),
    (AutoFormerSubnet(128, 2, (1, 1), (4.0, 4.5)), r"mlp_ratio\[1\]=4.5"),
])
def test_configs_that_do_not_fit_raise(bad, match):
    model = make_supernet()
    with pytest.raises(ValueError, match=match):
        with model.use_subnet(bad):
            pass
    with pytest.raises(ValueError, match=match):
        model.extract(bad)
    with pytest.raises(ValueError, match=match):
        model.set_active_subnet(bad)
    with pytest.raises(ValueError, match="unknown AutoFormerSubnet keys"):
        model.extract(dict(SUB.to_dict(), width=3))


def test_constructor_errors():
    with pytest.raises(ValueError, match="sampling='random' is not supported"):
        make_supernet(sampling="random")
    with pytest.raises(ValueError, match="unused_grad='nan'"):
        make_supernet(unused_grad="nan")
    with pytest.raises(ValueError, match="unknown AutoFormer space preset 'huge'"):
        timm.create_model("autoformer_supernet", space="huge", device="meta")
    with pytest.raises(ValueError, match="global_pool='max'"):
        make_supernet(global_pool="max")
    with pytest.raises(ValueError, match="input image size"):
        make_supernet().eval()(torch.zeros(1, 3, 64, 64))


def test_meta_device_and_bf16():
    model = timm.create_model("autoformer_supernet", space=SPACE, **SMALL, device="meta").eval()
    assert all(t.is_meta for t in model.state_dict().values())
    assert model.forward_features(torch.zeros(2, 3, 32, 32, device="meta")).shape == (2, 17, 128)
    model.train()  # sampling works on meta too (the step is not readable there; it starts at 0)
    assert model(torch.zeros(2, 3, 32, 32, device="meta")).shape == (2, 10)
    model = make_supernet().eval().to(torch.bfloat16)
    with torch.no_grad(), model.use_subnet(SUB):
        out = model(images().to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    static = model.extract(SUB)
    assert next(static.parameters()).dtype == torch.bfloat16


def test_group_matcher_and_no_weight_decay():
    from timm.models._manipulate import group_parameters

    for model in (make_supernet(), make_supernet().extract(SUB)):
        groups = group_parameters(model, model.group_matcher())
        assert len(groups) > 2
        names = {n for n, _ in model.named_parameters()}
        assert model.no_weight_decay() <= names


def test_grad_checkpointing_keeps_outputs():
    model = randomise(make_supernet()).eval()
    x = images()
    with torch.no_grad(), model.use_subnet(SUB):
        ref = model(x)
        model.set_grad_checkpointing()
        torch.testing.assert_close(model(x), ref)
    model.set_grad_checkpointing(False)
    static = model.extract(SUB)
    static.set_grad_checkpointing()
    x.requires_grad_(True)
    out = static(x)
    out.sum().backward()
    torch.testing.assert_close(out.detach(), ref)


def test_static_model_is_torchscript_compatible():
    model = randomise(make_supernet()).eval()
    static = model.extract(SUB)
    scripted = torch.jit.script(static)
    with torch.no_grad():
        torch.testing.assert_close(scripted(images()), static(images()))


# ------------------------------------------------------------------------------------------------ slicing
def test_qkv_weight_is_row_interleaved_and_bias_contiguous():
    w = torch.arange(12 * 5, dtype=torch.float32).reshape(12, 5)
    b = torch.arange(12, dtype=torch.float32)
    ws, bs = slice_interleaved_qkv(w, b, in_features=3, qk_dim=2)
    assert ws.shape == (6, 3)
    torch.testing.assert_close(ws, w[[0, 3, 1, 4, 2, 5], :3])  # q rows 0, 3; k rows 1, 4; v rows 2, 5
    torch.testing.assert_close(bs, b[:6])  # the original's contiguous bias


def test_slice_subnet_state_dict_rules():
    model = randomise(make_supernet())
    sd = model.state_dict()
    out = slice_subnet_state_dict(sd, SUB)
    static = timm.create_model("autoformer_subnet", subnet=SUB.to_dict(), **SMALL, device="meta")
    assert list(out) == list(static.state_dict())
    assert all(out[k].shape == v.shape for k, v in static.state_dict().items())
    torch.testing.assert_close(out["blocks.1.attn.proj.weight"], sd["blocks.1.attn.proj.weight"][:96, :128])
    torch.testing.assert_close(out["blocks.0.mlp.fc1.weight"], sd["blocks.0.mlp.fc1.weight"][:336, :96])
    torch.testing.assert_close(out["blocks.1.mlp.fc2.weight"], sd["blocks.1.mlp.fc2.weight"][:96, :288])
    torch.testing.assert_close(out["head.weight"], sd["head.weight"][:, :96])
    torch.testing.assert_close(out["blocks.0.attn.rel_pos_v.table_h"], sd["blocks.0.attn.rel_pos_v.table_h"][:, :64])
    assert "blocks.2.norm1.weight" not in out and "subnet_step" not in out
    # pure: nothing modified
    torch.testing.assert_close(model.state_dict()["blocks.0.attn.qkv.weight"], sd["blocks.0.attn.qkv.weight"])
    with pytest.raises(ValueError, match="unexpected keys"):
        slice_subnet_state_dict(dict(sd, **{"blocks.0.attn.extra": torch.zeros(1)}), SUB)
    with pytest.raises(KeyError, match="blocks.1.norm2.bias"):
        slice_subnet_state_dict({k: v for k, v in sd.items() if k != "blocks.1.norm2.bias"}, SUB)


def test_subnet_state_dict_of_gradients():
    model = randomise(make_supernet()).eval()
    with pytest.raises(ValueError, match="no gradient"):
        model.subnet_state_dict(SUB, grads=True)
    with model.use_subnet(SUB):
        model(images()).sum().backward()
    grads = model.subnet_state_dict(SUB, grads=True)
    static = model.extract(SUB)
    static(images()).sum().backward()
    for name, p in static.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, atol=1e-5, rtol=1e-4)


def test_relative_position_index_matches_the_original_rule_and_is_cached():
    grid, m = (4, 4), 2
    index = relative_position_index_2d(grid, m)
    assert index is relative_position_index_2d(grid, m)  # built once
    n = grid[0] * grid[1]
    for p in range(n):
        for q in range(n):
            dv = max(-m, min(m, q // 4 - p // 4)) + m + 1
            dh = max(-m, min(m, q % 4 - p % 4)) + m + 1
            assert (index[0, p + 1, q + 1].item(), index[1, p + 1, q + 1].item()) == (dv, dh)
    assert index[:, 0, :].eq(0).all() and index[:, :, 0].eq(0).all()
    assert relative_position_index_2d(grid, m, torch.device("meta")).is_meta
    with torch.inference_mode():
        fresh = relative_position_index_2d((3, 5), m)
    assert not fresh.is_inference()  # usable by autograd later


def test_relative_embeddings_equal_the_original_two_gathers_with_gradients():
    """The single gather of pre-summed rows gives the original's ``T_v[iv] + T_h[ih]`` and the same gradients."""
    g = torch.Generator().manual_seed(0)
    tables = [torch.randn(30, 64, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    weight = torch.randn(17, 17, 64, generator=g, dtype=torch.float64)
    (relative_position_embeddings(*tables, (4, 4), 14) * weight).sum().backward()
    ours = [t.grad.clone() for t in tables]
    for t in tables:
        t.grad = None
    index = relative_position_index_2d((4, 4), 14)
    original = tables[0][index[0]] + tables[1][index[1]]
    (original * weight).sum().backward()
    torch.testing.assert_close(relative_position_embeddings(*tables, (4, 4), 14), original, rtol=0, atol=0)
    for a, t in zip(ours, tables):
        torch.testing.assert_close(a, t.grad)


# ------------------------------------------------------------------------------------------- checkpoints
def _original_state_dict(model: AutoFormerSupernet) -> dict:
    """Our supernet's weights under the original key names (reference section 1.8)."""
    rename = {"patch_embed.proj": "patch_embed_super.proj", "norm1": "attn_layer_norm", "norm2": "ffn_layer_norm",
              "mlp.fc1": "fc1", "mlp.fc2": "fc2", "attn.rel_pos_k.table": "attn.rel_pos_embed_k.embeddings_table",
              "attn.rel_pos_v.table": "attn.rel_pos_embed_v.embeddings_table"}
    out = {}
    for key, value in model.state_dict().items():
        if key == "subnet_step":
            continue
        for a, b in rename.items():
            key = key.replace(a, b)
        out[key] = value.clone()
    return out


def _write_original_pth(path: Path, model: AutoFormerSupernet) -> Path:
    """An authors'-style release file: model weights plus training state and an argparse.Namespace."""
    torch.save({"model": _original_state_dict(model), "optimizer": {"state": {}, "param_groups": []},
                "epoch": 499, "args": argparse.Namespace(gp=True, change_qkv=True, relative_position=True,
                                                         max_relative_position=14, lr=5e-4)}, path)
    return path


def test_checkpoint_filter_reads_original_keys_bare_and_wrapped():
    src = randomise(make_supernet())
    original = _original_state_dict(src)
    assert "blocks.0.attn.rel_pos_embed_k.embeddings_table_v" in original
    for ckpt in (original, {"model": original}, {f"module.{k}": v for k, v in original.items()}):
        dst = make_supernet()
        dst.load_state_dict(checkpoint_filter_fn(ckpt, dst), strict=True)
        for k, v in src.state_dict().items():
            torch.testing.assert_close(dst.state_dict()[k], v)
    # our own keys pass unchanged
    dst = make_supernet()
    dst.load_state_dict(checkpoint_filter_fn(src.state_dict(), dst), strict=True)
    # a static model slices a supernet checkpoint (original keys or ours) and also accepts its own
    static = timm.create_model("autoformer_subnet", subnet=SUB.to_dict(), **SMALL)
    for ckpt in (original, src.state_dict(), src.extract(SUB).state_dict()):
        static.load_state_dict(checkpoint_filter_fn(ckpt, static), strict=True)
        with torch.no_grad(), src.use_subnet(SUB):
            torch.testing.assert_close(static.eval()(images()), src.eval()(images()), atol=1e-5, rtol=1e-5)


def test_checkpoint_filter_errors_list_keys():
    src = make_supernet()
    original = _original_state_dict(src)
    with pytest.raises(ValueError, match=r"not part of an original AutoFormer supernet: \['blocks.0.attn.foo'\]"):
        checkpoint_filter_fn(dict(original, **{"blocks.0.attn.foo": torch.zeros(1)}), make_supernet())
    missing = {k: v for k, v in original.items() if k != "norm.bias"}
    with pytest.raises(ValueError, match=r"missing keys \['norm.bias'\]"):
        checkpoint_filter_fn(missing, make_supernet())
    with pytest.raises(ValueError, match="shape mismatches"):
        checkpoint_filter_fn(original, timm.create_model("autoformer_supernet_tiny", **SMALL, device="meta"))
    too_big = AutoFormerSubnet(128, 3, (2, 2, 3), (4.0, 4.0, 4.0))
    with pytest.raises(ValueError, match=r"num_heads\[2\]=3 needs a qkv width of 192"):
        checkpoint_filter_fn(original, timm.create_model("autoformer_subnet", subnet=too_big.to_dict(), **SMALL))
    with pytest.raises(ValueError, match="holds no state dict"):
        checkpoint_filter_fn({"epoch": 3}, make_supernet())


def test_pretrained_from_an_original_release_file(tmp_path, monkeypatch):
    """A .pth in the authors' layout (with an argparse.Namespace) loads with pretrained=True through timm's file
    source, through the custom-load hook, and through the release URL (download faked), all weights_only."""
    src = randomise(make_supernet())
    path = _write_original_pth(tmp_path / "supernet-tiny.pth", src)
    with pytest.raises(Exception):  # plain weights_only refuses the Namespace: the allow-list is what reads it
        torch.load(path, weights_only=True)
    x = images()
    with torch.no_grad(), src.eval().use_subnet(SUB):
        expected_super, expected_sub = src(x), src.extract(SUB)(x)
    for overlay in (dict(file=str(path), num_classes=10), dict(file=str(path), num_classes=10, custom_load=True)):
        supernet = timm.create_model("autoformer_supernet", space=SPACE, **SMALL, pretrained=True,
                                     pretrained_cfg_overlay=overlay).eval()
        sub = timm.create_model("autoformer_subnet", subnet=SUB.to_dict(), **SMALL, pretrained=True,
                                pretrained_cfg_overlay=overlay).eval()
        with torch.no_grad(), supernet.use_subnet(SUB):
            torch.testing.assert_close(supernet(x), expected_super)
            torch.testing.assert_close(sub(x), expected_sub)
    # the release URL path: timm downloads, then calls load_pretrained (custom_load) on the cached file
    import timm.models._builder as builder

    seen = []
    monkeypatch.setattr(builder, "download_cached_file", lambda url, **kw: seen.append(url) or str(path))
    supernet = timm.create_model("autoformer_supernet_tiny", space=SPACE, **SMALL, pretrained=True).eval()
    sub = timm.create_model("autoformer_tiny", subnet=SUB.to_dict(), **SMALL, pretrained=True).eval()
    assert seen == [supernet.pretrained_cfg["url"]] * 2 and seen[0].endswith("supernet-tiny.pth")
    with torch.no_grad(), supernet.use_subnet(SUB):
        torch.testing.assert_close(supernet(x), expected_super)
        torch.testing.assert_close(sub(x), expected_sub)
    # a new classifier size keeps a fresh head; a single input channel adapts the patch conv
    sub5 = timm.create_model("autoformer_tiny", subnet=SUB.to_dict(), img_size=32, patch_size=8, num_classes=5,
                             in_chans=1, pretrained=True)
    assert sub5.head.weight.shape == (5, 96) and sub5.patch_embed.proj.weight.shape[1] == 1
    torch.testing.assert_close(sub5.blocks[1].mlp.fc2.bias, src.blocks[1].mlp.fc2.bias[:96])


def test_convert_original_state_dict_renames_every_key():
    original = _original_state_dict(make_supernet())
    ours = convert_original_state_dict(original)
    assert set(ours) == set(make_supernet().state_dict()) - {"subnet_step"}


# ----------------------------------------------------------------------------------- sampling and steps
def _train_sequence(model: AutoFormerSupernet, n: int) -> list:
    model.train()
    seen = []
    with torch.no_grad():
        for _ in range(n):
            model(images(1))
            seen.append(model.last_arch())
    return seen


def test_uniform_sampling_is_seeded_and_resumable():
    a = _train_sequence(make_supernet(seed=3), 6)
    assert a == _train_sequence(make_supernet(seed=3), 6)
    assert a != _train_sequence(make_supernet(seed=4), 6)
    space = AutoFormerSpace.from_dict(SPACE)
    assert all(space.contains(c) for c in a) and len(set(a)) > 1
    # resume: the step is in the state dict; eval forwards do not advance it
    first = make_supernet(seed=3)
    _train_sequence(first, 3)
    first.eval()
    with torch.no_grad():
        first(images(1))
    assert first.last_arch() == space.full() and first.step == 3 and first.state_dict()["subnet_step"].item() == 3
    resumed = make_supernet(seed=3)
    resumed.load_state_dict(first.state_dict())
    assert resumed.step == 3
    assert _train_sequence(resumed, 3) == a[3:]
    resumed.set_step(1)
    assert _train_sequence(resumed, 2) == a[1:3]


def test_sandwich_and_fixed_policies():
    model = make_supernet(sampling="sandwich", seed=1)
    seq = _train_sequence(model, 6)
    space = model.space
    assert seq[0] == seq[3] == space.largest() and seq[1] == seq[4] == space.smallest()
    assert space.contains(seq[2]) and space.contains(seq[5])
    fixed = make_supernet(sampling="fixed")
    fixed.set_active_subnet(SUB)
    assert _train_sequence(fixed, 2) == [SUB, SUB] and fixed.step == 2


def test_unsampled_parameters_get_zero_gradients():
    model = make_supernet(sampling="fixed").train()
    model.set_active_subnet(SUB)  # depth 2 of 3: block 2 is skipped
    model(images()).mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert all(g.eq(0).all() for n, g in grads.items() if n.startswith("blocks.2."))
    assert grads["blocks.1.mlp.fc1.weight"][:288, :96].abs().sum() > 0
    assert grads["blocks.1.mlp.fc1.weight"][288:].eq(0).all()  # outside the slice: zero as well
    original = make_supernet(sampling="fixed", unused_grad="none").train()
    original.set_active_subnet(SUB)
    original(images()).mean().backward()
    assert all(p.grad is None for n, p in original.named_parameters() if n.startswith("blocks.2."))
    assert all(p.grad is not None for n, p in original.named_parameters() if not n.startswith("blocks.2."))


@pytest.mark.slow
def test_ddp_without_find_unused_parameters(tmp_path):
    """DDP (gloo, one process) trains sampled subnets without find_unused_parameters; with the original's None
    gradients the reducer complains."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        for mode, ok in (("zero", True), ("none", False)):
            model = make_supernet(sampling="fixed", unused_grad=mode).train()
            model.set_active_subnet(SUB)
            ddp = DDP(model, find_unused_parameters=False)
            try:
                for _ in range(2):
                    ddp(images()).mean().backward()
            except RuntimeError:
                assert not ok, f"unused_grad={mode!r} should train under DDP"
            else:
                assert ok, f"unused_grad={mode!r} unexpectedly trained under DDP"
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------ intermediates
def test_static_forward_intermediates_and_features_only():
    """As timm's ViTs: block outputs as maps (or tokens), final features equal forward_features, and
    features_only=True wraps forward_intermediates (pruning the blocks after the last requested one)."""
    cfg = AutoFormerSubnet(embed_dim=64, depth=4, num_heads=(1, 1, 1, 1), mlp_ratio=(2.0, 2.0, 2.0, 2.0))
    kw = dict(subnet=cfg.to_dict(), img_size=32, patch_size=8, num_classes=5)
    model = timm.create_model("autoformer_subnet", **kw).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert [m.shape for m in maps] == [(2, 64, 4, 4)] * 4
        tokens = model.forward_intermediates(x, indices=[1], output_fmt="NLC", norm=True, intermediates_only=True)
        assert len(tokens) == 1 and torch.allclose(tokens[0].transpose(1, 2).reshape(2, 64, 4, 4),
                                                   model.norm(maps[1].flatten(2).transpose(1, 2)).transpose(1, 2)
                                                   .reshape(2, 64, 4, 4), atol=1e-6)
        (spatial, prefix), = model.forward_intermediates(x, indices=1, return_prefix_tokens=True,
                                                         intermediates_only=True)
        assert torch.equal(spatial, maps[-1]) and prefix.shape == (2, 1, 64)
        feats = timm.create_model("autoformer_subnet", features_only=True, out_indices=(0, 2), **kw).eval()
        assert len(feats.model.blocks) == 3 and feats.feature_info.channels() == [64, 64]
        missing, unexpected = feats.model.load_state_dict(
            {k: v for k, v in model.state_dict().items() if not k.startswith(("head", "norm", "blocks.3"))}, strict=False)
        assert missing == [] and unexpected == []
        out = feats(x)
    assert torch.equal(out[0], maps[0]) and torch.equal(out[1], maps[2])
    with pytest.raises(ValueError, match="output_fmt must be 'NCHW' or 'NLC', got 'NHWC'"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_supernet_refuses_features_only_with_the_way_out():
    with pytest.raises(RuntimeError, match=r"not supported by AutoFormer supernets .*supernet\.extract\(cfg\)"):
        timm.create_model("autoformer_supernet_tiny", features_only=True, device="meta")
