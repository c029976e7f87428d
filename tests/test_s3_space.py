"""S3 configs and search space: formats, validation, sampling, mutation, crossover."""
from __future__ import annotations

import itertools
import json

import pytest

from timm_nas.registry import get_entry, load_registry
from timm_nas.spaces import S3Space, S3Subnet
from timm_nas.spaces.base import IncompatibleError, Space
from timm_nas.spaces.s3 import HEAD_DIM, S3_PRESETS, effective_window

#: The custom space of the issue (also the golden fixture's tiny space).
ISSUE_SPACE = dict(embed_dim=[[32], [32, 64], [32, 64], [32, 64]], depth=[[1, 2], [1, 2], [1, 2, 3, 4], [1, 2]],
                   window_size=[[4, 8], [4, 8], [2, 4], [1, 2]], mlp_ratio=[2.0, 3.0, 4.0])

#: AutoFormerV2/configs/S3-T.yaml (microsoft/Cream 016c4fa5): stage 3 lists 8 values for its 6 blocks.
S3_T_YAML = dict(EMBED_DIM=[96, 192, 384, 768], DEPTHS=[2, 2, 6, 2],
                 NUM_HEADS=[[3, 3], [6, 6], [12] * 8, [24, 24]],
                 MLP_RATIO=[[4.0, 4.0], [4.0, 4.0], [4.0] * 8, [4.0, 4.0]],
                 WINDOW_SIZE=[[7, 7], [7, 7], [14] * 8, [7, 7]])


def test_from_original_reads_the_released_yaml_and_truncates_per_block_lists():
    cfg = S3Subnet.from_original(S3_T_YAML)
    assert cfg.embed_dim == (96, 192, 384, 768) and cfg.depth == (2, 2, 6, 2)
    assert cfg.num_heads[2] == (12,) * 6 and cfg.window_size[2] == (14,) * 6 and cfg.mlp_ratio[2] == (4.0,) * 6
    assert cfg == S3Subnet.from_dict(get_entry("s3", "S3-T")["model_args"]["subnet"])
    assert S3Subnet.from_original(cfg.to_original()) == cfg


def test_from_original_errors():
    with pytest.raises(ValueError, match=r"missing keys \['WINDOW_SIZE'\]"):
        S3Subnet.from_original({k: v for k, v in S3_T_YAML.items() if k != "WINDOW_SIZE"})
    with pytest.raises(ValueError, match=r"WINDOW_SIZE\[2\] lists 2 values but stage 2 has 6 blocks"):
        S3Subnet.from_original(dict(S3_T_YAML, WINDOW_SIZE=[[7, 7], [7, 7], [14, 14], [7, 7]]))
    with pytest.raises(ValueError, match="unknown keys"):
        S3Subnet.from_original(dict(S3_T_YAML, QKV_DIM=[96]))


def test_subnet_validation_messages():
    good = S3Subnet.from_original(S3_T_YAML).to_dict()
    with pytest.raises(ValueError, match=r"num_heads\[0\] must hold one value per block of stage 0 \(depth\[0\]=2\)"):
        S3Subnet.from_dict(dict(good, num_heads=[[3], [6, 6], [12] * 6, [24, 24]]))
    with pytest.raises(ValueError, match=r"num_heads\[1\]\[0\]=5 does not divide embed_dim\[1\]=192"):
        S3Subnet.from_dict(dict(good, num_heads=[[3, 3], [5, 6], [12] * 6, [24, 24]]))
    with pytest.raises(ValueError, match="embed_dim has 3 stages but depth has 4"):
        S3Subnet.from_dict(dict(good, embed_dim=[96, 192, 384]))
    with pytest.raises(ValueError, match=r"unknown S3Subnet keys \['qkv_dim'\]; allowed keys"):
        S3Subnet.from_dict(dict(good, qkv_dim=[96, 192, 384, 768]))
    with pytest.raises(ValueError, match=r"mlp_ratio\[0\]\[1\] must be a positive number"):
        S3Subnet.from_dict(dict(good, mlp_ratio=[[4.0, -1.0], [4.0, 4.0], [4.0] * 6, [4.0, 4.0]]))


@pytest.mark.parametrize("key", sorted(load_registry("s3")))
def test_registry_entries_round_trip_through_json(key):
    entry = get_entry("s3", key)
    cfg = S3Subnet.from_dict(entry["model_args"]["subnet"])
    again = S3Subnet.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and isinstance(again.window_size[0], tuple)
    # each published model lies in its preset and is the full width of that preset's supernet
    space = S3Space.preset(entry["space"])
    assert space.contains(cfg)
    assert cfg.embed_dim == space.full().embed_dim


def test_space_is_a_space_and_round_trips():
    space = S3Space.from_dict(ISSUE_SPACE)
    assert isinstance(space, Space)
    assert space.mlp_ratio == ((2.0, 3.0, 4.0),) * 4  # a flat list is broadcast to every stage
    assert S3Space.from_dict(json.loads(space.to_json())) == space
    assert S3Space.resolve("TINY") == S3Space.from_dict(S3_PRESETS["tiny"])
    assert space.head_dim == HEAD_DIM == 32


def test_space_errors():
    with pytest.raises(ValueError, match="embed_dim choice 48 of stage 1 is not a multiple of head_dim=32"):
        S3Space.from_dict(dict(ISSUE_SPACE, embed_dim=[[32], [32, 48], [32, 64], [32, 64]]))
    with pytest.raises(ValueError, match="space field depth has 3 stages but embed_dim has 4"):
        S3Space.from_dict(dict(ISSUE_SPACE, depth=[[1], [1], [1]]))
    with pytest.raises(ValueError, match=r"unknown S3 space preset 'huge'; choose from \['base', 'small', 'tiny'\]"):
        S3Space.preset("huge")
    with pytest.raises(TypeError, match="space must be a preset name"):
        S3Space.resolve(3)


def test_largest_smallest_full():
    space = S3Space.from_dict(ISSUE_SPACE)
    big, small = space.largest(), space.smallest()
    assert big.embed_dim == (32, 64, 64, 64) and big.depth == (2, 2, 4, 2)
    assert big.window_size == ((8, 8), (8, 8), (4,) * 4, (2, 2)) and big.num_heads[1] == (2, 2)
    assert small.depth == (1, 1, 1, 1) and small.mlp_ratio == ((2.0,),) * 4 and small.num_heads[3] == (1,)
    assert space.full() == big
    assert space.contains(big) and space.contains(small)


def test_validate_names_field_value_and_allowed():
    space = S3Space.from_dict(ISSUE_SPACE)
    cfg = space.largest().to_dict()
    cfg["window_size"][2][1] = 8
    with pytest.raises(ValueError, match=r"window_size\[2\]\[1\]=8 is not allowed; allowed values: \[2, 4\]"):
        space.validate(cfg)
    cfg = space.largest().to_dict()
    cfg["num_heads"][1] = [1, 1]  # 64 channels must have 64 // 32 = 2 heads in the space
    with pytest.raises(ValueError, match=r"num_heads\[1\]\[0\]=1 is not allowed; allowed values: \[2\]"):
        space.validate(cfg)
    assert not space.contains(cfg)
    assert space.fits(cfg)  # the weights can still run it (1 head of 64 channels)


def test_check_fits_compares_windows_after_clamping_to_the_grid():
    space = S3Space.preset("tiny")
    s3_s = S3Subnet.from_dict(get_entry("s3", "s3_small")["model_args"]["subnet"])
    assert not space.fits(s3_s)  # 18 blocks in stage 3
    wide_window = S3Space.from_dict(dict(S3_PRESETS["tiny"], window_size=[[7, 14], [7, 14], [7, 14], [7]]))
    s3_t = S3Subnet.from_dict(get_entry("s3", "s3_tiny")["model_args"]["subnet"]).to_dict()
    s3_t["window_size"][3] = [14, 14]  # S3-S uses 14 in stage 4: on the 7x7 grid at 224 that is global (7)
    with pytest.raises(ValueError, match=r"window_size\[3\]\[0\]=14 exceeds the supernet's largest window 7"):
        wide_window.check_fits(s3_t)
    assert wide_window.check_fits(s3_t, grid=56)
    with pytest.raises(ValueError, match=r"embed_dim\[0\]=128 exceeds the supernet's width 96"):
        space.check_fits(dict(s3_t, embed_dim=[128, 192, 384, 768], num_heads=[[4, 4], [6, 6], [12] * 6, [24, 24]]))
    assert effective_window(7, 14) == 7 and effective_window(56, 14) == 14


def test_sample_is_reproducible_and_in_space():
    space = S3Space.from_dict(ISSUE_SPACE)
    samples = [space.sample(seed) for seed in range(200)]
    assert all(space.contains(s) for s in samples)
    assert samples[:20] == [space.sample(seed) for seed in range(20)]
    # every choice of every dimension shows up
    assert {s.depth[2] for s in samples} == {1, 2, 3, 4}
    assert {w for s in samples for w in s.window_size[0]} == {4, 8}
    assert {r for s in samples for blk in s.mlp_ratio for r in blk} == {2.0, 3.0, 4.0}
    assert {s.embed_dim[3] for s in samples} == {32, 64}


def test_num_architectures_counts_the_space():
    space = S3Space.from_dict(dict(embed_dim=[[32, 64], [32]], depth=[[1, 2], [1]], window_size=[[2, 4], [2]],
                                   mlp_ratio=[[1.0, 2.0], [1.0]]))
    # stage 0: 2 widths x (4 + 4^2) block choices; stage 1: 1
    assert space.num_architectures() == 2 * (4 + 16)
    configs = {space.sample(seed).to_json() for seed in range(2000)}
    assert len(configs) == space.num_architectures()


def test_mutate_stays_in_space_and_changes_things():
    space = S3Space.from_dict(ISSUE_SPACE)
    parent = space.sample(1)
    children = [space.mutate(parent, seed, m_prob=0.5, s_prob=0.5) for seed in range(100)]
    assert all(space.contains(c) for c in children)
    assert any(c.depth != parent.depth for c in children)
    assert any(c.embed_dim != parent.embed_dim for c in children)
    assert space.mutate(parent, 3, m_prob=0.0, s_prob=0.0) == parent
    assert children[:5] == [space.mutate(parent, seed, m_prob=0.5, s_prob=0.5) for seed in range(5)]


def test_crossover_mixes_genes_of_equal_depth_parents():
    space = S3Space.from_dict(ISSUE_SPACE)
    a, b = space.largest(), space.largest().to_dict()
    b["embed_dim"] = [32, 32, 32, 32]
    b["num_heads"] = [[1, 1], [1, 1], [1] * 4, [1, 1]]
    b["window_size"] = [[4, 4], [4, 4], [2] * 4, [1, 1]]
    b = S3Subnet.from_dict(b)
    kids = [space.crossover(a, b, seed) for seed in range(50)]
    assert all(space.contains(k) for k in kids)
    genes = lambda c: list(c.embed_dim) + [w for s in c.window_size for w in s]  # noqa: E731
    for k in kids:
        assert all(g in (x, y) for g, x, y in zip(genes(k), genes(a), genes(b)))
    assert len({k.to_json() for k in kids}) > 10
    assert space.compatible(a, b)
    with pytest.raises(IncompatibleError, match="equal depths"):
        space.crossover(a, space.smallest(), 0)


def test_with_choices_and_dimensions():
    space = S3Space.from_dict(ISSUE_SPACE)
    moved = space.with_choices("depth", 2, [2, 3, 4, 5])
    assert moved.depth[2] == (2, 3, 4, 5) and moved.depth[:2] == space.depth[:2]
    assert moved.choices("window_size", 3) == (1, 2)
    with pytest.raises(ValueError, match="unknown S3 dimension 'heads'"):
        space.choices("heads", 0)
    with pytest.raises(ValueError, match="stage 4 out of range"):
        space.with_choices("depth", 4, [1])


@pytest.mark.parametrize("preset", sorted(S3_PRESETS))
def test_presets_are_valid_and_hold_their_published_model(preset):
    space = S3Space.preset(preset)
    published = [k for k, e in load_registry("s3").items() if e["space"] == preset]
    assert len(published) == 1
    assert space.contains(S3Subnet.from_dict(get_entry("s3", published[0])["model_args"]["subnet"]))
    for a, b in itertools.combinations(range(space.num_stages), 2):
        assert space.embed_dim[a][-1] < space.embed_dim[b][-1]  # widths grow with the stage
