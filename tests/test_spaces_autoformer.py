"""AutoFormerSubnet / AutoFormerSpace: presets, the original formats, validation, sampling, mutation, crossover."""
from __future__ import annotations

import json

import pytest
import torch

from timm_nas.spaces.autoformer import HEAD_DIM, AutoFormerSpace, AutoFormerSubnet
from timm_nas.spaces.base import IncompatibleError

#: The original supernet YAMLs (microsoft/Cream AutoFormer/experiments/supernet/supernet-{T,S,B}.yaml), as
#: ``yaml.safe_load`` returns them.
ORIGINAL_YAMLS = {
    "tiny": {"SUPERNET": {"MLP_RATIO": 4.0, "NUM_HEADS": 4, "EMBED_DIM": 256, "DEPTH": 14},
             "SEARCH_SPACE": {"MLP_RATIO": [3.5, 4], "NUM_HEADS": [3, 4], "DEPTH": [12, 13, 14],
                              "EMBED_DIM": [192, 216, 240]}},
    "small": {"SUPERNET": {"MLP_RATIO": 4.0, "NUM_HEADS": 7, "EMBED_DIM": 448, "DEPTH": 14},
              "SEARCH_SPACE": {"MLP_RATIO": [3.0, 3.5, 4.0], "NUM_HEADS": [5, 6, 7], "DEPTH": [12, 13, 14],
                               "EMBED_DIM": [320, 384, 448]}},
    "base": {"SUPERNET": {"MLP_RATIO": 4.0, "NUM_HEADS": 10, "EMBED_DIM": 640, "DEPTH": 16},
             "SEARCH_SPACE": {"MLP_RATIO": [3.0, 3.5, 4.0], "NUM_HEADS": [9, 10], "DEPTH": [14, 15, 16],
                              "EMBED_DIM": [528, 576, 624]}},
}
#: AutoFormer-T's RETRAIN block (AutoFormer/experiments/subnet/AutoFormer-T.yaml).
AUTOFORMER_T = {"RETRAIN": {"MLP_RATIO": [3.5, 3.5, 3.0, 3.5, 3.0, 3.0, 4.0, 4.0, 3.5, 4.0, 3.5, 4.0, 3.5],
                            "NUM_HEADS": [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 3, 3], "DEPTH": 13, "EMBED_DIM": 192}}


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_presets_equal_the_original_yamls(name):
    space = AutoFormerSpace.preset(name)
    assert space == AutoFormerSpace.from_original(ORIGINAL_YAMLS[name])
    assert space.head_dim == HEAD_DIM == 64
    assert space == AutoFormerSpace.resolve(name) == AutoFormerSpace.resolve(space.to_dict())


def test_tiny_preset_values():
    space = AutoFormerSpace.preset("TINY")
    assert (space.embed_dim, space.depth, space.num_heads, space.mlp_ratio) == ((192, 216, 240), (12, 13, 14), (3, 4),
                                                                                 (3.5, 4.0))
    assert (space.super_embed_dim, space.super_depth, space.super_num_heads, space.super_mlp_ratio) == (256, 14, 4, 4.0)
    assert space.full() == AutoFormerSubnet(256, 14, (4,) * 14, (4.0,) * 14)
    assert space.largest() == AutoFormerSubnet(240, 14, (4,) * 14, (4.0,) * 14)
    assert space.smallest() == AutoFormerSubnet(192, 12, (3,) * 12, (3.5,) * 12)


def test_custom_space_defaults_and_errors():
    space = AutoFormerSpace.from_dict(dict(embed_dim=[128, 64], depth=[2], num_heads=[1, 2], mlp_ratio=[4]))
    assert (space.embed_dim, space.super_embed_dim, space.super_depth, space.super_num_heads) == ((64, 128), 128, 2, 2)
    assert space.super_mlp_ratio == 4.0 and isinstance(space.mlp_ratio[0], float)
    with pytest.raises(ValueError, match=r"unknown AutoFormerSpace keys \['width'\]"):
        AutoFormerSpace.from_dict(dict(embed_dim=[64], depth=[2], num_heads=[1], mlp_ratio=[4.0], width=3))
    with pytest.raises(ValueError, match="embed_dim choice 256 exceeds the supernet's super_embed_dim=128"):
        AutoFormerSpace.from_dict(dict(embed_dim=[256], depth=[2], num_heads=[1], mlp_ratio=[4.0], super_embed_dim=128))
    with pytest.raises(ValueError, match=r"super_embed_dim=128 must be at least head_dim x super_num_heads"):
        AutoFormerSpace.from_dict(dict(embed_dim=[128], depth=[2], num_heads=[3], mlp_ratio=[4.0]))
    with pytest.raises(ValueError, match="non-empty list of choices"):
        AutoFormerSpace.from_dict(dict(embed_dim=192, depth=[2], num_heads=[1], mlp_ratio=[4.0]))
    with pytest.raises(ValueError, match="unknown AutoFormer space preset 'huge'"):
        AutoFormerSpace.preset("huge")
    with pytest.raises(ValueError, match=r"missing blocks \['SEARCH_SPACE'\]"):
        AutoFormerSpace.from_original({"SUPERNET": ORIGINAL_YAMLS["tiny"]["SUPERNET"]})


def test_subnet_json_round_trip_and_types():
    cfg = AutoFormerSubnet.from_original(AUTOFORMER_T)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert AutoFormerSubnet.from_dict(data) == cfg
    assert isinstance(AutoFormerSubnet.from_dict(data).num_heads, tuple)
    assert AutoFormerSubnet.from_json(cfg.to_json()) == cfg
    assert AutoFormerSubnet.from_dict(cfg) is cfg
    space = AutoFormerSpace.preset("small")
    assert AutoFormerSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space


def test_from_original_formats():
    cfg = AutoFormerSubnet.from_original(AUTOFORMER_T)
    assert cfg.embed_dim == 192 and cfg.depth == 13 and cfg.num_heads[10] == 4 and cfg.mlp_ratio[2] == 3.0
    assert AutoFormerSubnet.from_original(AUTOFORMER_T["RETRAIN"]) == cfg
    sampled = cfg.to_original()
    assert sampled["embed_dim"] == [192] * 13 and sampled["layer_num"] == 13
    assert AutoFormerSubnet.from_original(sampled) == cfg
    with pytest.raises(ValueError, match="one embed dim for all layers"):
        AutoFormerSubnet.from_original(dict(sampled, embed_dim=[192] * 12 + [216]))
    with pytest.raises(ValueError, match="unrecognised AutoFormer config"):
        AutoFormerSubnet.from_original({"depth": 3})
    with pytest.raises(ValueError, match=r"missing keys \['num_heads'\]"):
        AutoFormerSubnet.from_original({k: v for k, v in sampled.items() if k != "num_heads"})


def test_invalid_subnets_name_field_value_and_allowed():
    with pytest.raises(ValueError, match="num_heads has 2 values but depth=3"):
        AutoFormerSubnet(192, 3, (3, 3), (4.0, 4.0, 4.0))
    with pytest.raises(ValueError, match="mlp_ratio has 1 values but depth=2"):
        AutoFormerSubnet(192, 2, (3, 3), (4.0,))
    with pytest.raises(ValueError, match="embed_dim must be positive"):
        AutoFormerSubnet(0, 1, (3,), (4.0,))
    with pytest.raises(ValueError, match=r"unknown AutoFormerSubnet keys \['heads'\]; allowed keys"):
        AutoFormerSubnet.from_dict(dict(embed_dim=192, depth=1, heads=[3], mlp_ratio=[4.0]))
    space = AutoFormerSpace.preset("tiny")
    t = AutoFormerSubnet.from_original(AUTOFORMER_T)
    with pytest.raises(ValueError, match=r"mlp_ratio\[2\]=3\.0 is not allowed; allowed values: \[3\.5, 4\.0\]"):
        space.validate(t)
    with pytest.raises(ValueError, match=r"embed_dim=200 is not allowed; allowed values: \[192, 216, 240\]"):
        space.validate(AutoFormerSubnet(200, 12, (3,) * 12, (4.0,) * 12))
    with pytest.raises(ValueError, match=r"depth=11 is not allowed; allowed values: \[12, 13, 14\]"):
        space.validate(AutoFormerSubnet(192, 11, (3,) * 11, (4.0,) * 11))
    # contains is about the choices, fits about the weights: AutoFormer-T is outside tiny's choices but fits
    assert not space.contains(t) and space.fits(t)
    with pytest.raises(ValueError, match="depth=15 exceeds the supernet's super_depth=14"):
        space.check_fits(AutoFormerSubnet(192, 15, (3,) * 15, (4.0,) * 15))
    with pytest.raises(ValueError, match=r"num_heads\[0\]=5 needs a qkv width of 320"):
        space.check_fits(AutoFormerSubnet(192, 12, (5,) + (3,) * 11, (4.0,) * 12))


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_sampling_is_in_space_reproducible_and_uses_no_global_rng(name):
    space = AutoFormerSpace.preset(name)
    state = torch.random.get_rng_state()
    samples = [space.sample(torch.Generator().manual_seed(i)) for i in range(30)]
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(space.contains(c) for c in samples)
    assert samples == [space.sample(i) for i in range(30)]  # int seeds mean the same generators
    assert len(set(samples)) == 30
    assert {c.depth for c in samples} == set(space.depth)
    assert {c.embed_dim for c in samples} == set(space.embed_dim)
    g = torch.Generator().manual_seed(0)
    assert space.sample(g) != space.sample(g)  # a shared generator advances


def test_mutate_and_crossover():
    space = AutoFormerSpace.preset("small")
    g = torch.Generator().manual_seed(0)
    parents = [space.sample(g) for _ in range(20)]
    children = [space.mutate(p, g) for p in parents]
    assert all(space.contains(c) for c in children)
    assert any(c != p for c, p in zip(children, parents))
    assert space.mutate(parents[0], 5) == space.mutate(parents[0], 5)
    assert space.mutate(parents[0], 1, m_prob=0.0, s_prob=0.0) == parents[0]
    changed = space.mutate(parents[0], 1, m_prob=1.0, s_prob=0.0)
    assert changed.depth == parents[0].depth
    a = AutoFormerSubnet(320, 12, (5,) * 12, (3.0,) * 12)
    b = AutoFormerSubnet(448, 12, (7,) * 12, (4.0,) * 12)
    child = space.crossover(a, b, 3)
    assert child.depth == 12 and set(child.num_heads) <= {5, 7} and child.embed_dim in (320, 448)
    assert child == space.crossover(a, b, 3) and space.compatible(a, b)
    c = AutoFormerSubnet(320, 13, (5,) * 13, (3.0,) * 13)
    assert not space.compatible(a, c)
    with pytest.raises(IncompatibleError, match="equal depth, got 12 and 13"):
        space.crossover(a, c, 0)
