"""Parity with the golden fixtures of the original S3 code (``shared/fixtures/s3``, see its README).

Case 0 is the original ``SSSTransformer`` with the supernet config; every other case is the original network with
weights extracted from the same state dict by rules R0-R6. We must match both through ``use_subnet`` (the
supernet's own forward) and through ``extract`` (a static ``s3_subnet``), logits and pooled features, at
atol 1e-5 / rtol 1e-4.
"""
from __future__ import annotations

import re

import pytest
import timm
import torch

from conftest import load_json, load_tensors
from timm_nas.cost import count_params
from timm_nas.models.s3 import checkpoint_filter_fn, slice_s3_state_dict
from timm_nas.spaces import S3Space, S3Subnet


@pytest.fixture(scope="module")
def s3_golden():
    from conftest import fixture_dir

    folder = fixture_dir("s3")
    meta = load_json(folder / "cases.json")
    sd = load_tensors(folder / "state_dict.safetensors")
    tensors = load_tensors(folder / "cases.safetensors")
    sp = meta["tiny_search_space"]
    space = S3Space(embed_dim=sp["EMBED_DIM"], depth=sp["DEPTHS"], window_size=sp["WINDOW_SIZE"],
                    mlp_ratio=sp["MLP_RATIO"])
    kw = meta["constructor_kwargs"]
    model = timm.create_model("s3_supernet", space=space.to_dict(), img_size=kw["img_size"],
                              patch_size=kw["patch_size"], in_chans=kw["in_chans"], num_classes=kw["num_classes"],
                              qkv_bias=kw["qkv_bias"]).eval()
    model.load_state_dict(checkpoint_filter_fn(sd, model), strict=True)
    return meta, sd, tensors, model


def _cases(meta):
    return [(c["id"], c) for c in meta["cases"]]


def test_supernet_config_is_the_space_maximum(s3_golden):
    meta, _, _, model = s3_golden
    assert model.space.full() == S3Subnet.from_original(meta["supernet_config"])
    assert count_params(model.space.full(), num_classes=10, img_size=64) == meta["cases"][0]["num_params"]


def test_golden_cases_through_use_subnet_and_extract(s3_golden):
    meta, _, tensors, model = s3_golden
    tol = meta["tolerance"]
    x = tensors["x"]
    assert len(meta["cases"]) >= 2
    for cid, case in _cases(meta):
        cfg = S3Subnet.from_original(case["config"])
        logits, feats = tensors[case["tensors"]["logits"]], tensors[case["tensors"]["features"]]
        with torch.no_grad(), model.use_subnet(cfg):
            f = model.forward_features(x)
            torch.testing.assert_close(model.forward_head(f), logits, atol=tol["atol"], rtol=tol["rtol"],
                                       msg=f"case {cid}: use_subnet logits")
            torch.testing.assert_close(model.forward_head(f, pre_logits=True), feats, atol=tol["atol"],
                                       rtol=tol["rtol"], msg=f"case {cid}: use_subnet features")
        sub = model.extract(cfg).eval()
        assert sum(p.numel() for p in sub.parameters()) == case["num_params"]
        assert count_params(cfg, num_classes=10, img_size=64) == case["num_params"]
        with torch.no_grad():
            f = sub.forward_features(x)
            torch.testing.assert_close(sub.forward_head(f), logits, atol=tol["atol"], rtol=tol["rtol"],
                                       msg=f"case {cid}: extract logits")
            torch.testing.assert_close(sub.forward_head(f, pre_logits=True), feats, atol=tol["atol"],
                                       rtol=tol["rtol"], msg=f"case {cid}: extract features")


def test_effective_windows_and_shifts_match_the_original(s3_golden):
    from timm_nas.layers.window_attention import window_and_shift

    meta, _, _, _ = s3_golden
    for _, case in _cases(meta):
        cfg = S3Subnet.from_original(case["config"])
        got = [[list(window_and_shift(16 // 2 ** i, cfg.window_size[i][j], j)) for j in range(cfg.depth[i])]
               for i in range(cfg.num_stages)]
        assert got == case["effective_window_and_shift_per_block"]


def test_extracted_weights_tensor_by_tensor(s3_golden):
    """Every extracted tensor has the fixture's shape and float64 sum (original key names mapped to timm's)."""
    meta, sd, _, model = s3_golden
    timm_layout = checkpoint_filter_fn(sd, model)
    for cid, case in _cases(meta):
        cfg = S3Subnet.from_original(case["config"])
        sliced = slice_s3_state_dict(timm_layout, cfg, 16)
        checks = case["extracted_weight_checks"]
        assert len(sliced) == len(checks)
        for key, check in checks.items():
            ours = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", key)
            ours = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", ours)
            t = sliced[ours]
            assert list(t.shape) == check["shape"], f"case {cid} {key}"
            assert t.double().sum().item() == pytest.approx(check["sum"], abs=1e-6), f"case {cid} {key}"
