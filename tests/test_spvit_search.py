"""The SPViT search loop, its files, resume, export and the CLI, on a tiny model and a synthetic image folder."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from timm.data import create_dataset

import timm_nas  # noqa: F401
from timm_nas.cli import main
from timm_nas.models.spvit import derive_arch_from_state_dict
from timm_nas.search.spvit import SPViTSearchConfig, search, search_transforms, weight_param_groups
from timm_nas.spaces.spvit import SPViTArch, read_ffn_masks

TINY_ARGS = dict(patch_size=4, embed_dim=48, depth=2, num_heads=3)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("spvit_data")
    rng = np.random.default_rng(0)
    for split in ("train", "validation"):
        for c, cls in enumerate(("a", "b")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(8):
                img = (rng.random((32, 32, 3)) * 255).astype("uint8")
                img[: 8 + 16 * c] = 255  # a learnable difference between the classes
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def _config(**kw) -> SPViTSearchConfig:
    base = dict(model="spvit_search_deit", model_kwargs=TINY_ARGS, pretrained=False, target_flops=0.002,
                loss_lambda=20.0, batch_size=4, input_size=32, stop_epoch=1, epochs=4, workers=0, ffn_save_every=1,
                mixup=0.0, cutmix=0.0, drop_path=0.0, smoothing=0.0, seed=3)
    base.update(kw)
    return SPViTSearchConfig(**base)


def _datasets(data_dir: Path, cfg: SPViTSearchConfig, augment: bool = False):
    train = create_dataset("", root=str(data_dir), split="train", is_training=True)
    # no random augmentation unless asked: the run is then a function of the seeds alone
    train.transform = search_transforms(cfg, is_training=augment)
    val = create_dataset("", root=str(data_dir), split="validation")
    val.transform = search_transforms(cfg, is_training=False)
    return train, val


def test_search_writes_the_original_files_and_exports(data_dir, tmp_path):
    cfg = _config(arc_lr=0.3)
    train, val = _datasets(data_dir, cfg, augment=True)
    out = tmp_path / "run"
    result = search(train, out, cfg, val_dataset=val, progress=False, export=dict(folder=out / "export"))
    assert [h["epoch"] for h in result.history] == [0, 1]
    first, last = result.history
    assert first["target_gflops"] == 0.002 and {"loss_cls", "loss_bop", "val_acc1", "ops", "ffn_hidden"} <= set(first)
    assert last["gate_step"] == 8  # 2 epochs x 4 steps (16 images, batch 4)
    # a strong gate lr with a FLOPs target below the network: the gates switch units off
    assert last["gflops"] < first["gflops"] or sum(last["ffn_hidden"]) < 2 * 192
    saved = json.loads((out / "arch.json").read_text())
    assert SPViTArch.from_dict(saved["arch"]) == result.arch and saved["assigned_indicators"] == result.arch.indicators()
    ckpt = torch.load(out / "last_checkpoint.pth", weights_only=True)
    assert {"model", "optimizer1", "lr_scheduler1", "optimizer2", "lr_scheduler2", "epoch", "scaler", "args"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["args"]["target_flops"] == 0.002
    masks = out / "search_1epoch.pth"  # the original's FFN mask file, readable by its tools and ours
    assert derive_arch_from_state_dict(torch.load(masks, weights_only=True)) == result.arch
    assert [int(m.sum()) for m in read_ffn_masks(masks)] == list(result.arch.ffn_hidden)
    # the exported pruned model rebuilds from the folder and reproduces the search network
    loaded = timm.create_model(f"local-dir:{out / 'export'}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (loaded(x) - result.model.eval()(x)).abs().max().item() <= 3e-5
    config = json.loads((out / "export" / "config.json").read_text())
    assert config["architecture"] == "spvit_deit" and config["model_args"]["arch"] == result.arch.to_dict()
    card = (out / "export" / "README.md").read_text()
    assert "spvit" in card and "target_gflops" in card


def test_resumed_search_equals_an_uninterrupted_one(data_dir, tmp_path):
    cfg = _config()
    train, _ = _datasets(data_dir, cfg, augment=True)  # augmentation and drop-path draws are seeded too
    cfg = _config(drop_path=0.1)
    full = search(train, tmp_path / "full", cfg, progress=False)
    search(train, tmp_path / "split", _config(drop_path=0.1, stop_epoch=0), progress=False)
    with pytest.raises(ValueError, match=r"different arguments \(.*config.target_flops: 0.002 -> 0.5"):
        search(train, tmp_path / "split", _config(drop_path=0.1, target_flops=0.5), progress=False)
    resumed = search(train, tmp_path / "split", cfg, progress=False)  # extended: stop_epoch 0 -> 1
    assert [h["epoch"] for h in resumed.history] == [0, 1] and resumed.model.step == full.model.step == 8
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k, rtol=0, atol=0)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert (tmp_path / "full" / "arch.json").read_bytes() == (tmp_path / "split" / "arch.json").read_bytes()
    with pytest.raises(ValueError, match="can be extended .* but not shortened to 0"):
        search(train, tmp_path / "split", _config(drop_path=0.1, stop_epoch=0), progress=False)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_same_seed_gives_the_same_search(data_dir, tmp_path, workers):
    """Augmentation (RandAugment, random erasing), Mixup and drop-path: one run per seed, for any workers."""
    cfg = _config(stop_epoch=0, mixup=0.8, cutmix=1.0, drop_path=0.1, workers=workers)
    train, _ = _datasets(data_dir, cfg, augment=True)
    a = search(train, tmp_path / "a", cfg, progress=False)
    b = search(train, tmp_path / "b", _config(stop_epoch=0, mixup=0.8, cutmix=1.0, drop_path=0.1, workers=0),
               progress=False)
    assert a.history[0]["loss"] == b.history[0]["loss"]
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        torch.testing.assert_close(x, y, msg=k, rtol=0, atol=0)


def test_optimiser_groups_follow_the_original():
    m = timm.create_model("spvit_search_deit", img_size=32, **TINY_ARGS)
    weights, gates = weight_param_groups(m, 0.05)
    names = {id(p): n for n, p in m.named_parameters()}
    no_decay = {names[id(p)] for p in weights[0]["params"]}
    decay = {names[id(p)] for p in weights[1]["params"]}
    gate = {names[id(p)] for p in gates[0]["params"]}
    assert gate == {n for n in names.values() if "thresholds" in n}
    assert "blocks.0.attn.head_probs" in decay and "blocks.0.attn.qk.weight" in decay
    assert {"pos_embed", "cls_token", "blocks.0.attn.qk.bias", "blocks.0.attn.bn_1x1.weight"} <= no_decay
    assert weights[1]["weight_decay"] == 0.05 and weights[0]["weight_decay"] == 0 and gates[0]["weight_decay"] == 0
    assert len(no_decay) + len(decay) + len(gate) == len(names)


def test_gate_schedule_floor_reproduces_the_original_by_default(data_dir, tmp_path):
    cfg = _config(arc_lr=1e-3, min_lr=1e-4, epochs=2, stop_epoch=1)
    train, _ = _datasets(data_dir, cfg)
    hist = search(train, tmp_path / "a", cfg, progress=False).history
    # the original's gate schedule decays towards args.min_lr (its create_scheduler ignores the arc_lr floor) and
    # is stepped with the finished epoch's index, so epochs 0 and 1 both run at arc_lr
    assert [h["arc_lr"] for h in hist] == pytest.approx([1e-3, 1e-3])
    hist = search(train, tmp_path / "b", dataclasses.replace(cfg, epochs=4, stop_epoch=2), progress=False).history
    assert hist[2]["arc_lr"] == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4) * (1 + math.cos(math.pi / 4)))
    fixed = search(train, tmp_path / "c", dataclasses.replace(cfg, epochs=4, stop_epoch=2, arc_min_lr=1e-3),
                   progress=False).history
    assert [h["arc_lr"] for h in fixed] == pytest.approx([1e-3] * 3)


def test_config_validation_and_defaults():
    cfg = SPViTSearchConfig()
    assert (cfg.lr, cfg.min_lr, cfg.weight_decay, cfg.epochs, cfg.stop_epoch) == (5e-5, 1e-4, 0.05, 300, 20)
    assert cfg.repeated_aug and cfg.mixup == 0.8 and cfg.smoothing == 0.1 and cfg.drop_path == 0.1
    assert SPViTSearchConfig(model="spvit_search_deit_tiny").resolved_arc_lr() == 1e-3
    assert SPViTSearchConfig(model="spvit_search_deit").resolved_arc_lr() == 5e-4
    with pytest.raises(ValueError, match="target_flops must be a positive number of GFLOPs"):
        SPViTSearchConfig(target_flops=0)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        SPViTSearchConfig(batch_size=0)


def test_search_refuses_a_model_without_a_target(data_dir, tmp_path):
    cfg = _config(target_flops=None, loss_lambda=None)
    train, _ = _datasets(data_dir, cfg)
    with pytest.raises(ValueError, match="has no FLOPs target"):
        search(train, tmp_path / "x", cfg, progress=False)


def test_cli_search_and_arch(data_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["search", "spvit", "--data-dir", str(data_dir), "--out", str(out), "--model", "spvit_search_deit",
               "--model-kwargs", json.dumps(dict(TINY_ARGS, depth=3)), "--val-split", "",
               "--no-pretrained", "--input-size", "32", "--batch-size", "4", "--stop-epoch", "0",
               "--max-steps-per-epoch", "2", "--target-flops", "0.01", "--loss-lambda", "1", "--workers", "0",
               "--mixup", "0", "--cutmix", "0", "--no-repeated-aug", "--no-progress"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["export"] == str(out / "export") and len(summary["ops"]) == 3
    assert (out / "export" / "model.safetensors").is_file()
    rc = main(["spvit-arch", "--search-checkpoint", str(out / "last_checkpoint.pth")])
    assert rc == 0 and json.loads(capsys.readouterr().out)["ops"] == summary["ops"]
    assert main(["spvit-arch", "--config", str(tmp_path / "x.json")]) == 2
    assert "--config needs --masks" in capsys.readouterr().err
    assert main(["search", "spvit", "--data-dir", str(tmp_path / "nope"), "--output", str(out)]) == 2


def test_cli_rerun_of_a_finished_search_changes_nothing(data_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["search", "spvit", "--data-dir", str(data_dir), "--out", str(out), "--model", "spvit_search_deit",
            "--model-args", json.dumps(TINY_ARGS), "--val-split", "", "--no-pretrained", "--input-size", "32",
            "--batch-size", "4", "--stop-epoch", "0", "--max-steps-per-epoch", "2", "--target-flops", "0.01",
            "--loss-lambda", "1", "--workers", "0", "--no-progress"]
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} >= {"run.json", "log.jsonl", "last_checkpoint.pth", "arch.json",
                                               "best.json", "export", "export.sha256"}
    first = capsys.readouterr().out
    (out / "export" / "notes.md").write_text("mine")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert main(argv) == 0 and capsys.readouterr().out == first
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == before
    # timm train.py's --aa: a policy, 'none', or one clear error line
    assert main(argv[:5] + [str(tmp_path / "aa")] + argv[6:] + ["--aa", "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--aa 'bogus' is not an auto-augment policy" in err
    assert not (tmp_path / "aa").exists()
    assert main(argv[:5] + [str(tmp_path / "aa")] + argv[6:] + ["--aa", "none"]) == 0
    assert json.loads((tmp_path / "aa" / "run.json").read_text())["arguments"]["config"]["aa"] is None


def test_training_transform_survives_zero_bit_posterize_draws():
    """Pillow 13 raises for a 0-bit posterize, which timm's rand-m9-mstd0.5-inc1 can draw; the search keeps the
    original's behaviour (a black image) instead of crashing or capping the level."""
    import random

    from PIL import Image

    from timm_nas.search.spvit import SPViTSearchConfig, _posterize, search_transforms

    transform = search_transforms(SPViTSearchConfig(), is_training=True)
    img = Image.new("RGB", (40, 40), (200, 120, 30))
    assert _posterize(img, 0).getextrema() == ((0, 0), (0, 0), (0, 0))
    assert _posterize(img, 8) is img
    ops = [op for t in transform.transforms for op in getattr(t, "ops", [])]
    assert [op.aug_fn for op in ops if op.name.startswith("Posterize")] == [_posterize]
    random.seed(0)
    torch.manual_seed(0)
    for _ in range(300):  # many draws, magnitude noise included
        transform(img)
