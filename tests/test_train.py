"""Training supernets the way timm's train.py does: sampling, checkpoints, resume, bad input, evaluation, launcher.

train.py is not in the timm wheel, so these tests build each component exactly as train.py builds it (timm
1.0.31's train.py: ``create_model`` with its keyword arguments, ``ClassificationTask``, ``create_optimizer_v2``,
``create_dataset`` / ``create_loader`` with mixup, ``ModelEmaV3`` via ``task.setup_ema``, ``CheckpointSaver``,
``resume_task_checkpoint``). Models are tiny: a custom space with 16-wide heads, 32 px images in 8 px patches.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn

import timm_nas  # noqa: F401  (registers the models)
from timm_nas.models._supernet import SupernetMixin, SupernetStateDictError
from timm_nas.spaces.autoformer import AutoFormerSpace, AutoFormerSubnet

#: A tiny custom space: 3 depths (so the depth changes between steps), 2 widths, 16-wide heads.
SPACE = dict(embed_dim=[32, 48], depth=[1, 2, 3], num_heads=[1, 2], mlp_ratio=[1.0, 2.0], head_dim=16)
#: What ``--model-kwargs`` carries for it (space, image and patch size; sampling and seed per test).
MODEL_KWARGS = dict(space=SPACE, img_size=32, patch_size=8)
NUM_CLASSES = 3
#: A subnet that fits the weights but is not one of the choices (like AutoFormer-T's MLP ratio 3.0 in 'tiny').
OUTSIDE_CHOICES = AutoFormerSubnet(embed_dim=40, depth=2, num_heads=(2, 1), mlp_ratio=(1.5, 2.0))


def train_py_model(model: str = "autoformer_supernet", **model_kwargs) -> nn.Module:
    """``create_model`` called with exactly the arguments timm's train.py passes (its defaults; ``None`` pruned by
    timm), ``--drop-path 0.1`` and ``--model-kwargs``."""
    return timm.create_model(
        model,
        pretrained=False,
        in_chans=3,
        num_classes=NUM_CLASSES,
        drop_rate=0.0,
        drop_path_rate=0.1,
        drop_block_rate=None,
        global_pool=None,
        bn_momentum=None,
        bn_eps=None,
        scriptable=False,
        checkpoint_path="",
        **dict(MODEL_KWARGS, **model_kwargs),
    )


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def train_sequence(model: nn.Module, steps: int) -> list:
    """The subnets of ``steps`` training forwards (forward only)."""
    model.train()
    out = []
    with torch.no_grad():
        for _ in range(steps):
            model(images(1))
            out.append(model.last_subnet)
    return out


# ------------------------------------------------------------------------------------ sampling, last_subnet
def test_uniform_sampling_matches_the_space_and_is_the_same_for_every_replica():
    """Two independent replicas (two data-parallel ranks) with the same seed train the same subnets; the depth,
    per-layer heads / MLP ratios and the embed dim all vary; other seeds give other sequences."""
    a = train_sequence(train_py_model(sampling="uniform", seed=7), 24)
    b = train_sequence(train_py_model(sampling="uniform", seed=7), 24)
    assert a == b
    assert a != train_sequence(train_py_model(sampling="uniform", seed=8), 24)
    space = AutoFormerSpace.from_dict(SPACE)
    assert all(space.contains(c) for c in a)
    assert {c.depth for c in a} == {1, 2, 3}
    assert {c.embed_dim for c in a} == {32, 48}
    assert len({c.num_heads for c in a}) > 3 and len({c.mlp_ratio for c in a}) > 3
    # the policy is a pure function of (seed, step): the sequence is the space's own sample for each step
    from timm_nas.spaces.base import generator_for

    assert a == [space.sample(generator_for(7, step)) for step in range(24)]


def test_sandwich_fixed_and_last_subnet_in_every_mode():
    space = AutoFormerSpace.from_dict(SPACE)
    seq = train_sequence(train_py_model(sampling="sandwich", seed=1), 9)
    assert seq[0::3] == [space.largest()] * 3 and seq[1::3] == [space.smallest()] * 3
    assert all(space.contains(c) for c in seq[2::3]) and len(set(seq[2::3])) > 1

    fixed = train_py_model(sampling="fixed")
    fixed.set_active_subnet(OUTSIDE_CHOICES)
    assert train_sequence(fixed, 3) == [OUTSIDE_CHOICES] * 3 and fixed.step == 3

    model = train_py_model(seed=2)
    assert model.last_subnet is None  # no forward yet
    sampled = train_sequence(model, 1)[0]
    model.eval()
    with torch.no_grad():
        model(images(1))
    assert model.last_subnet == space.full() and model.step == 1  # eval runs the active subnet, no step
    with torch.no_grad(), model.use_subnet(OUTSIDE_CHOICES):
        model(images(1))
    assert model.last_subnet == OUTSIDE_CHOICES and model.active_subnet == space.full()
    model.train()
    model.set_grad_checkpointing(True)
    model(images(2)).sum().backward()  # grad checkpointing: still one pick per forward
    assert model.step == 2 and model.last_subnet == train_sequence(train_py_model(seed=2), 2)[1] != sampled


class _ToySupernet(SupernetMixin, nn.Module):
    """The family-independent mixin on its own (no AutoFormer code)."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(4))
        self.init_supernet(AutoFormerSpace.from_dict(SPACE), **kwargs)


def test_mixin_initial_active_subnet_must_fit():
    assert _ToySupernet().active_subnet == AutoFormerSpace.from_dict(SPACE).full()
    assert _ToySupernet(subnet=OUTSIDE_CHOICES.to_dict()).active_subnet == OUTSIDE_CHOICES
    with pytest.raises(ValueError, match=r"embed_dim=64 exceeds the supernet's width super_embed_dim=48"):
        _ToySupernet(subnet=dict(OUTSIDE_CHOICES.to_dict(), embed_dim=64))
    with pytest.raises(ValueError, match=r"depth=4 exceeds the supernet's super_depth=3"):
        _ToySupernet(subnet=dict(embed_dim=32, depth=4, num_heads=[1] * 4, mlp_ratio=[1.0] * 4))


# ------------------------------------------------------------------------------------------- bad input
def test_checkpoint_of_another_space_is_refused_before_anything_is_copied():
    source = train_py_model(seed=0)
    other = train_py_model(space=dict(SPACE, embed_dim=[32, 64]))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(SupernetStateDictError) as info:
        other.load_state_dict(source.state_dict())
    msg = str(info.value)
    assert "cls_token: checkpoint (1, 1, 48) vs model (1, 1, 64)" in msg
    assert "another search space" in msg and "'embed_dim': [32, 64]" in msg and "--model-kwargs" in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, RuntimeError)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())  # nothing copied
    # strict=False does not help: a size mismatch is never loadable
    with pytest.raises(SupernetStateDictError):
        other.load_state_dict(source.state_dict(), strict=False)
    # another classifier size or image size is caught the same way
    with pytest.raises(SupernetStateDictError, match=r"head.weight: checkpoint \(3, 48\) vs model \(5, 48\)"):
        timm.create_model("autoformer_supernet", num_classes=5, **MODEL_KWARGS).load_state_dict(source.state_dict())
    with pytest.raises(SupernetStateDictError, match=r"pos_embed: checkpoint \(1, 17, 48\) vs model \(1, 5, 48\)"):
        timm.create_model("autoformer_supernet", num_classes=NUM_CLASSES,
                          **dict(MODEL_KWARGS, img_size=16)).load_state_dict(source.state_dict())
    # the same space with other training knobs loads (sampling and seed are not part of the weights)
    train_py_model(sampling="sandwich", seed=5).load_state_dict(source.state_dict())


def test_checkpoint_of_another_space_inside_a_wrapper():
    """The hook sees prefixed keys when the supernet sits inside another module (a task, a distillation wrapper)."""
    wrapper = nn.Sequential(train_py_model(space=dict(SPACE, mlp_ratio=[1.0, 3.0])))
    source = nn.Sequential(train_py_model())
    with pytest.raises(SupernetStateDictError, match=r"blocks.0.mlp.fc1.weight: checkpoint \(96, 48\) vs model "
                                                     r"\(144, 48\)"):
        wrapper.load_state_dict(source.state_dict())
