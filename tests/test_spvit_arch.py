"""SPViTArch: dict form, validation, the original's file formats, and the registry of released architectures."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from timm_nas.registry import get_entry, load_registry, resolve_key
from timm_nas.spaces.spvit import (
    OP_INDICATORS,
    SPVIT_OPS,
    SPViTArch,
    op_from_indicators,
    read_ffn_masks,
    read_original_indicators,
)

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "spvit_released_archs.json"


def _arch() -> SPViTArch:
    return SPViTArch(("bconv1x1", "bconv3x3", "msa", "skip"), ((0, 2), (1,), (0, 1, 2, 3), ()))


def test_dict_round_trip_through_json():
    a = _arch()
    d = json.loads(json.dumps(a.to_dict()))
    assert d == {"ops": ["bconv1x1", "bconv3x3", "msa", "skip"], "ffn_kept": [[0, 2], [1], [0, 1, 2, 3], []]}
    b = SPViTArch.from_dict(d)
    assert b == a and isinstance(b.ops, tuple) and isinstance(b.ffn_kept[0], tuple)
    assert a.depth == 4 and a.ffn_hidden == (2, 1, 4, 0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(ops=("msa", "conv"), ffn_kept=((0,), (0,))), r"ops\[1\]='conv' is not allowed; allowed values: \['skip'"),
    (dict(ops=("msa",), ffn_kept=((2, 1),)), r"ffn_kept\[0\] must be sorted ascending without duplicates; found 2 then 1"),
    (dict(ops=("msa",), ffn_kept=((1, 1),)), r"sorted ascending without duplicates"),
    (dict(ops=("msa",), ffn_kept=((-1, 1),)), r"negative index -1"),
    (dict(ops=("msa", "msa"), ffn_kept=((0,),)), r"2 ops but 1 index lists"),
    (dict(ops=(), ffn_kept=()), r"non-empty"),
    (dict(ops=("msa",), ffn_kept=((0.5,),)), r"integer hidden-unit indices, got 0.5"),
    (dict(ops=("msa",), ffn_kept=((True,),)), r"integer hidden-unit indices"),
])
def test_validation_names_field_and_allowed_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SPViTArch(**kwargs)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown SPViTArch keys \['depth'\]; allowed keys: \['ops', 'ffn_kept'\]"):
        SPViTArch.from_dict({"ops": ["msa"], "ffn_kept": [[0]], "depth": 1})


def test_indicators_and_masks_match_the_original_encoding():
    a = _arch()
    assert a.indicators() == [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    masks = a.ffn_masks(4)
    assert [m.tolist() for m in masks] == [[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    assert SPViTArch.from_original(a.indicators(), masks) == a
    assert [op_from_indicators(v) for v in OP_INDICATORS.values()] == list(OP_INDICATORS)
    assert set(OP_INDICATORS) == set(SPVIT_OPS)


def test_op_from_indicators_follows_the_original_first_zero_rule():
    # UnifiedAttention.__init__ checks g1, then g2, then g3: the first zero decides
    assert op_from_indicators([1, 0, 1]) == "bconv1x1"
    assert op_from_indicators([0, 1, 1]) == "skip"
    with pytest.raises(ValueError, match="three gate values"):
        op_from_indicators([1, 0])


def test_check_fits_and_full():
    a = _arch()
    assert a.check_fits(4, 4) is a
    with pytest.raises(ValueError, match="the arch has 4 layers but the model has depth=3"):
        a.check_fits(3, 4)
    with pytest.raises(ValueError, match=r"ffn_kept\[2\] holds index 3 but the layer has only 3 hidden units"):
        a.check_fits(4, 3)
    full = SPViTArch.full(2, 3)
    assert full.ops == ("msa", "msa") and full.ffn_kept == ((0, 1, 2), (0, 1, 2))


def test_readers_of_the_original_deit_files(tmp_path):
    a = _arch()
    config = tmp_path / "spvit_deit_x_ft.json"
    config.write_text(json.dumps({"model": "spvit_deit_tiny_patch16_224", "assigned_indicators": a.indicators()}))
    masks = tmp_path / "search_10epoch.pth"
    # the original saves the whole search state dict under 'model'; a Namespace rides along in training checkpoints
    state = {f"blocks.{i}.mlp.assigned_indicator_index": m for i, m in enumerate(a.ffn_masks(4))}
    state.update({f"blocks.{i}.mlp.fc1.weight": torch.zeros(4, 2) for i in range(4)})
    torch.save({"model": state, "args": argparse.Namespace(lr=1e-4)}, masks)
    assert read_original_indicators(config) == a.indicators()
    assert SPViTArch.from_original_files(config, masks) == a
    assert [m.tolist() for m in read_ffn_masks(masks)] == [m.tolist() for m in a.ffn_masks(4)]


def test_mask_reader_orders_blocks_numerically_and_reads_swin_yaml(tmp_path):
    # 12 blocks: lexicographic order would put blocks.10 before blocks.2
    masks = {f"layers.{s}.blocks.{j}.mlp.assigned_indicator_index": torch.tensor([float(s), float(j), 1.0])
             for s in range(2) for j in range(6)}
    shuffled = dict(sorted(masks.items()))
    read = read_ffn_masks({"model": shuffled, "amp": {"scale": 1.0}})
    assert [m[:2].tolist() for m in read] == [[s, j] for s in range(2) for j in range(6)]
    yaml_text = ("MODEL:\n  TYPE: spvit_swin\nEXTRA:\n  theta: 1.5\n  assigned_indicators: "
                 "[[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]]]\n")
    path = tmp_path / "spvit_swin_ft.yaml"
    path.write_text(yaml_text)
    assert read_original_indicators(path) == [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]


def test_reader_errors_say_what_to_do(tmp_path):
    search_cfg = tmp_path / "search.json"
    search_cfg.write_text(json.dumps({"assigned_indicators": [], "theta": 1.5}))
    with pytest.raises(ValueError, match="pass a fine-tune config"):
        read_original_indicators(search_cfg)
    with pytest.raises(FileNotFoundError, match="original SPViT config not found"):
        read_original_indicators(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="no '\\*.mlp.assigned_indicator_index' entries"):
        read_ffn_masks({"model": {"blocks.0.mlp.fc1.weight": torch.zeros(2, 2)}})
    with pytest.raises(ValueError, match="3 layers of indicators but 1 FFN masks"):
        SPViTArch.from_original([[1, 1, 1]] * 3, [torch.ones(2)])


# ------------------------------------------------------------------------------------------------- registry
DEIT_KEYS = ("spvit_deit_tiny", "spvit_deit_small", "spvit_deit_base", "spvit_deit_base_t100")
SWIN_KEYS = ("spvit_swin_tiny", "spvit_swin_small", "spvit_swin_base")

# Kept FFN widths per layer, from the specification's table (../shared/reference/spvit.md section 4).
SPEC_WIDTHS = {
    "spvit_deit_tiny": [744, 758, 764, 767, 766, 764, 756, 659, 633, 473, 179, 145],
    "spvit_deit_small": [1304, 1399, 1344, 1214, 1251, 1183, 1140, 925, 742, 391, 104, 103],
    "spvit_deit_base": [1118, 489, 1050, 1345, 1336, 1326, 1431, 1564, 1606, 1702, 1290, 190],
    "spvit_deit_base_t100": [1253, 610, 1343, 1912, 2354, 2306, 2483, 2753, 2869, 2860, 2443, 934],
    "spvit_swin_tiny": [186, 152, 646, 504, 1350, 1319, 1289, 1249, 1234, 1082, 3041, 2994],
}
SPEC_OPS = {
    "spvit_deit_tiny": ["bconv1x1"] * 2 + ["msa"] * 10,
    "spvit_deit_small": ["bconv1x1"] + ["msa"] * 11,
    "spvit_deit_base": ["bconv1x1"] * 3 + ["bconv3x3"] * 2 + ["msa"] * 7,
    "spvit_deit_base_t100": ["bconv1x1"] * 3 + ["bconv3x3"] + ["msa"] * 8,
    "spvit_swin_tiny": ["bconv1x1", "skip", "bconv1x1", "skip"] + ["msa"] * 8,
}


def test_registry_holds_every_released_architecture_with_sources():
    entries = load_registry("spvit")
    assert set(DEIT_KEYS + SWIN_KEYS) <= set(entries)
    for key, entry in entries.items():
        arch = SPViTArch.from_dict(entry["model_args"]["arch"])
        src = entry["source"]
        assert src["repo"] == "https://github.com/ziplab/SPViT" and len(src["commit"]) == 40
        assert src["file"].endswith(("_ft.json", "_ft.yaml")) and src["mask_file"].endswith(".pth")
        if key in SPEC_WIDTHS:
            assert list(arch.ffn_hidden) == SPEC_WIDTHS[key], key
            assert list(arch.ops) == SPEC_OPS[key], key
        if key.startswith("spvit_deit"):
            arch.check_fits(entry["model_args"]["depth"], 4 * entry["model_args"]["embed_dim"])
        else:
            assert entry["model"] is None and arch.depth == sum(entry["model_args"]["depths"])
    assert resolve_key("spvit", "spvit_deit_sm_l30_t32") == "spvit_deit_small"
    assert get_entry("spvit", "SPViT-DeiT-Ti")["reported"]["top1"] == 70.7
    assert "skip" not in get_entry("spvit", "spvit_deit_base")["model_args"]["arch"]["ops"]


def test_registry_equals_the_reference_data_read_from_the_authors_files():
    if not REFERENCE.is_file():
        pytest.skip(f"reference data not found at {REFERENCE}")
    ref = json.loads(REFERENCE.read_text())["models"]
    names = {k.split(" ")[0]: v for k, v in ref.items()}
    entries = load_registry("spvit")
    for key in DEIT_KEYS + SWIN_KEYS:
        m = names[key]
        arch = SPViTArch.from_dict(entries[key]["model_args"]["arch"])
        assert arch.ffn_kept == tuple(tuple(layer["kept"]) for layer in m["ffn"]), key
        indicators = m.get("assigned_indicators") or [v for s in m["config"]["EXTRA"]["assigned_indicators"] for v in s]
        assert arch.indicators() == [[float(x) for x in v] for v in indicators], key
        assert entries[key]["source"]["mask_file"] == m["mask_file"]
