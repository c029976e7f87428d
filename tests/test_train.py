"""Training supernets the way timm's train.py does: sampling, checkpoints, resume, bad input, evaluation, launcher.

train.py is not in the timm wheel, so these tests build each component exactly as train.py builds it (timm
1.0.31's train.py: ``create_model`` with its keyword arguments, ``ClassificationTask``, ``create_optimizer_v2``,
``create_dataset`` / ``create_loader`` with mixup, ``ModelEmaV3`` via ``task.setup_ema``, ``CheckpointSaver``,
``resume_task_checkpoint``). Models are tiny: a custom space with 16-wide heads, 32 px images in 8 px patches.
"""
from __future__ import annotations

import argparse
import json
import re
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
            out.append(model.last_arch())
    return out


# ------------------------------------------------------------------------------------ sampling, last_subnet
def test_uniform_sampling_matches_the_space_and_is_the_same_for_every_replica():
    """Two independent replicas (two data-parallel ranks) with the same seed train the same subnets; the depth,
    per-layer heads / MLP ratios and the embed dim all vary; other seeds give other sequences."""
    a = train_sequence(train_py_model(sampling="uniform", seed=7), 16)
    b = train_sequence(train_py_model(sampling="uniform", seed=7), 16)
    assert a == b
    assert a[:4] != train_sequence(train_py_model(sampling="uniform", seed=8), 4)
    space = AutoFormerSpace.from_dict(SPACE)
    assert all(space.contains(c) for c in a)
    assert {c.depth for c in a} == {1, 2, 3}
    assert {c.embed_dim for c in a} == {32, 48}
    assert len({c.num_heads for c in a}) > 3 and len({c.mlp_ratio for c in a}) > 3
    # the policy is a pure function of (seed, step): the sequence is the space's own sample for each step
    from timm_nas.spaces.base import generator_for

    assert a == [space.sample(generator_for(7, step)) for step in range(16)]


def test_sandwich_fixed_and_last_subnet_in_every_mode():
    space = AutoFormerSpace.from_dict(SPACE)
    seq = train_sequence(train_py_model(sampling="sandwich", seed=1), 9)
    assert seq[0::3] == [space.largest()] * 3 and seq[1::3] == [space.smallest()] * 3
    assert all(space.contains(c) for c in seq[2::3]) and len(set(seq[2::3])) > 1

    fixed = train_py_model(sampling="fixed")
    fixed.set_active_subnet(OUTSIDE_CHOICES)
    assert train_sequence(fixed, 3) == [OUTSIDE_CHOICES] * 3 and fixed.step == 3

    model = train_py_model(seed=2)
    assert model.last_arch() is None  # no forward yet
    sampled = train_sequence(model, 1)[0]
    model.eval()
    with torch.no_grad():
        model(images(1))
    assert model.last_arch() == space.full() and model.step == 1  # eval runs the active subnet, no step
    with torch.no_grad(), model.use_subnet(OUTSIDE_CHOICES):
        model(images(1))
    assert model.last_arch() == OUTSIDE_CHOICES and model.active_subnet == space.full()
    model.train()
    model.set_grad_checkpointing(True)
    model(images(2)).sum().backward()  # grad checkpointing: still one pick per forward
    assert model.step == 2 and model.last_arch() == train_sequence(train_py_model(seed=2), 2)[1] != sampled


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


# ------------------------------------------------------------------------------------- launcher and CLI
def write_image_folder(root: Path, per_class: int = 2) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for c in range(NUM_CLASSES):
        folder = root / "validation" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 255, (32, 32, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


SCRIPT = '''
import json, logging, sys
import timm
model = timm.create_model(sys.argv[1], space={space!r}, img_size=32, patch_size=8)
print(json.dumps({{"argv": sys.argv[1:], "params": sum(p.numel() for p in model.parameters()),
                   "first_path": sys.path[0], "root_handlers": len(logging.getLogger().handlers)}}))
sys.exit(int(sys.argv[2]))
'''


def test_launcher_runs_a_timm_script_with_our_models_registered(tmp_path):
    """``python -m timm_nas.launch SCRIPT ARGS`` in a fresh interpreter: the script sees our models, its own argv
    and its folder on sys.path, and its exit status comes back."""
    import subprocess
    import sys

    script = tmp_path / "scripts" / "validate.py"
    script.parent.mkdir()
    script.write_text(SCRIPT.format(space=SPACE))
    proc = subprocess.run([sys.executable, "-m", "timm_nas.launch", str(script), "autoformer_supernet", "3",
                           "--model-kwargs", "a=1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["argv"] == ["autoformer_supernet", "3", "--model-kwargs", "a=1"]
    expected = timm.create_model("autoformer_supernet", space=SPACE, img_size=32, patch_size=8)
    assert out["params"] == sum(p.numel() for p in expected.parameters())
    assert out["first_path"] == str(script.parent)


def test_run_script_and_validate_commands(tmp_path, capsys):
    import sys

    from timm_nas import cli
    from timm_nas.launch import run_script

    script = tmp_path / "validate.py"
    script.write_text(SCRIPT.format(space=SPACE))
    argv, path = sys.argv[:], sys.path[:]
    # everything after the script goes to it, including options timm-nas itself knows (-v) or that look like ours
    assert cli.main(["run-script", str(script), "autoformer_supernet", "0", "-v", "--checkpoint", "x"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["argv"] == ["autoformer_supernet", "0", "-v", "--checkpoint", "x"]
    assert out["root_handlers"] == 0  # the script sets up its own logging (no duplicate lines)
    # `validate` takes the script or a checkout folder holding validate.py
    assert cli.main(["validate", str(tmp_path), "autoformer_supernet", "4"]) == 4
    assert sys.argv == argv and sys.path == path  # restored
    import logging

    handler = logging.NullHandler()
    logging.getLogger().addHandler(handler)
    try:
        assert run_script(script, ["autoformer_supernet", "0"]) == 0
        assert handler in logging.getLogger().handlers  # restored afterwards
    finally:
        logging.getLogger().removeHandler(handler)
    capsys.readouterr()
    assert cli.main(["validate", str(tmp_path / "nowhere"), "--model", "x"]) == 2
    err = capsys.readouterr().err
    assert "validate.py is not part of the timm wheel" in err and f"v{timm.__version__}" in err
    (tmp_path / "notes.txt").write_text("x")
    assert cli.main(["run-script", str(tmp_path / "notes.txt")]) == 2
    assert "is not a Python script" in capsys.readouterr().err


def test_eval_subnet_from_a_bare_state_dict_with_model_kwargs(tmp_path, capsys):
    """A checkpoint that does not record its model: --model and --model-kwargs rebuild it (parsed like train.py's)."""
    from timm_nas import cli

    data = write_image_folder(tmp_path / "data")
    model = train_py_model().eval()
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    sub = OUTSIDE_CHOICES.to_dict()
    base = ["eval-subnet", "--checkpoint", str(tmp_path / "weights.pth"), "--data-dir", str(data), "-j", "0",
            "--device", "cpu"]
    kwargs = ["--model", "autoformer_supernet", "--num-classes", str(NUM_CLASSES), "--model-kwargs",
              f"space={SPACE!r}", "img_size=32", "patch_size=8"]
    assert cli.main(base + ["--subnet", json.dumps(sub)]) == 2
    assert "does not record which model it belongs to" in capsys.readouterr().err
    assert cli.main(base + kwargs + ["--subnet", json.dumps(sub), "--subnet", json.dumps(SMALLEST),
                                     "--results-file", str(tmp_path / "r.json")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["subnet"] for r in lines] == [sub, SMALLEST] and [r["in_space"] for r in lines] == [False, True]
    assert json.loads((tmp_path / "r.json").read_text()) == lines
    # the numbers are the static subnet's on the same images
    with torch.no_grad():
        static = model.extract(sub).eval()
        from timm.data import create_dataset, create_loader, resolve_data_config

        cfg = resolve_data_config({"img_size": 32}, model=model)
        ds = create_dataset("", root=str(data), split="validation")
        loader = create_loader(ds, cfg["input_size"], 6, interpolation=cfg["interpolation"], mean=cfg["mean"],
                               std=cfg["std"], crop_pct=cfg["crop_pct"], num_workers=0, use_prefetcher=False)
        x, y = next(iter(loader))
        logits = static(x)
    assert lines[0]["loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-5)
    assert lines[0]["top1"] == pytest.approx(100.0 * float(logits.argmax(-1).eq(y).float().mean()))
    assert lines[0]["num_images"] == 6


SMALLEST = dict(embed_dim=32, depth=1, num_heads=[1], mlp_ratio=[1.0])


@pytest.mark.parametrize("extra, match", [
    (["--subnet", '{"embed_dim": 32,'], r"--subnet is not valid JSON"),
    (["--subnet", json.dumps(dict(SMALLEST, embed_dim=64))], r"embed_dim=64 exceeds the supernet's width "
                                                             r"super_embed_dim=48"),
    (["--subnet", json.dumps(dict(SMALLEST, depth=2))], r"num_heads has 1 values but depth=2"),
    (["--subnet", json.dumps(dict(SMALLEST, width=3))], r"unknown AutoFormerSubnet keys \['width'\]"),
    (["--subnet", '{"embed_dim": 32}'], r"unrecognised AutoFormer config.*or give the AutoFormerSubnet keys "
                                        r"\['embed_dim', 'depth', 'num_heads', 'mlp_ratio'\]"),
    (["--subnet", "autoformer_tinyy"], r"'autoformer_tinyy' is not in the autoformer registry"),
    (["--subnet", "missing.yaml"], r"--subnet file not found"),
    (["--subnet", json.dumps(SMALLEST), "--model-args", json.dumps({"seed": "abc"})], r"cannot be built with .*seed must be an int"),
    (["--subnet", json.dumps(SMALLEST), "--model-args", json.dumps({"space": "tiny"})], r"does not match AutoFormerSupernet.*Create "
                                                                          r"the model with the checkpoint's space"),
    (["--subnet", json.dumps(SMALLEST), "--use-ema"], r"holds no EMA weights"),
    (["--subnet", json.dumps(SMALLEST), "--results-file", "{ckpt}"], r"exists and is not a .json file; refusing to "
                                                                     r"overwrite it"),
    (["--subnet", json.dumps(SMALLEST), "--model", "autoformer_supernett"], r"unknown model 'autoformer_supernett'"),
])
def test_eval_subnet_bad_input(extra, match, tmp_path, capsys):
    """One clear error line and exit status 2, before any image is read."""
    from timm_nas import cli

    args = argparse.Namespace(model="autoformer_supernet", model_kwargs=dict(MODEL_KWARGS), num_classes=NUM_CLASSES,
                              in_chans=None, input_size=None, gp=None, img_size=32)
    torch.save({"state_dict": train_py_model().state_dict(), "args": args, "epoch": 0, "arch": args.model},
               tmp_path / "last.pth.tar")
    data = tmp_path / "data"
    data.mkdir()  # empty: reading images would fail with another error
    ckpt = tmp_path / "last.pth.tar"
    before = ckpt.read_bytes()
    code = cli.main(["eval-subnet", "--checkpoint", str(ckpt), "--data-dir", str(data), "--device", "cpu",
                     *(str(ckpt) if e == "{ckpt}" else e for e in extra)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("timm-nas: error: "), err
    assert len(err.strip().splitlines()) == 1
    assert re.search(match, err), err
    assert ckpt.read_bytes() == before


def test_published_subnets_outside_the_choices_are_valid_for_evaluation(tmp_path):
    """AutoFormer-T (MLP ratio 3.0, not a choice of the tiny space) fits supernet-T's weights; it can be named,
    given as the original's subnet YAML, or as our dict."""
    from timm_nas.training import parse_subnet, subnet_config

    supernet = timm.create_model("autoformer_supernet_tiny", device="meta")
    by_name = subnet_config(supernet, parse_subnet("autoformer_tiny", "autoformer"))
    assert not supernet.space.contains(by_name) and supernet.space.fits(by_name)
    d = by_name.to_dict()
    original = tmp_path / "AutoFormer-T.yaml"
    original.write_text("SEARCH_SPACE: {}\nRETRAIN:\n  DEPTH: 13\n  EMBED_DIM: 192\n"
                        f"  MLP_RATIO: {list(d['mlp_ratio'])}\n  NUM_HEADS: {list(d['num_heads'])}\n")
    assert subnet_config(supernet, parse_subnet(str(original), "autoformer")) == by_name
    (tmp_path / "t.json").write_text(json.dumps(d))
    assert subnet_config(supernet, parse_subnet(str(tmp_path / "t.json"))) == by_name
    with pytest.raises(ValueError, match=r"neither a JSON object nor a .json/.yaml file"):
        parse_subnet("autoformer_tiny")  # a name needs the family
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"must describe an object"):
        parse_subnet(str(tmp_path / "list.json"))
    with pytest.raises(ValueError, match=r"not a supernet"):
        subnet_config(timm.create_model("autoformer_tiny", device="meta"), d)
