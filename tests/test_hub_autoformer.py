"""The Hub round trip with the AutoFormer family: an extracted subnet, a supernet, a published architecture and
the conversion of an original-layout supernet checkpoint (``argparse.Namespace`` inside). Tiny spaces
(``head_dim=8``, 32x32 images) keep it fast; the real supernet-T conversion is marked slow.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

import timm_nas
from timm_nas import cli, cost, hub
from timm_nas.models import autoformer as af
from timm_nas.spaces import AutoFormerSpace, AutoFormerSubnet

SPACE = dict(embed_dim=[16, 24], depth=[1, 2], num_heads=[1, 2], mlp_ratio=[1.0, 2.0], head_dim=8)
ARGS = dict(img_size=32, patch_size=8, num_classes=10)


def _supernet(space: dict[str, Any] = SPACE, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm_nas.create_model("autoformer_supernet", space=space, **ARGS).eval()


def _x(size: int = 32) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


def _logits(model: torch.nn.Module, size: int = 32) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(_x(size))


def _original_layout(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A supernet's weights under microsoft/Cream's key names (the inverse of the family's own key tables)."""
    glob = {ours: orig for orig, ours in af._ORIGINAL_GLOBAL.items()}
    block = {ours: orig for orig, ours in af._ORIGINAL_BLOCK.items()}
    out = {}
    for key, value in model.state_dict().items():
        m = re.match(r"^blocks\.(\d+)\.(.+)$", key)
        if key == af.STEP_KEY:
            continue  # the original has no sampling step
        out[f"blocks.{m.group(1)}.{block[m.group(2)]}" if m else glob[key]] = value.clone()
    return out


def _release_file(path: Path, model: torch.nn.Module, **extra: torch.Tensor) -> Path:
    """An authors'-style ``.pth``: original keys, optimizer state and the run's ``argparse.Namespace``."""
    torch.save({"model": dict(_original_layout(model), **extra), "optimizer": {"state": {}, "param_groups": []},
                "epoch": 499, "args": argparse.Namespace(change_qkv=True, relative_position=True, lr=5e-4)}, path)
    return path


SEARCH_CARD = {
    "provenance": {"method": "evolution", "space": SPACE, "constraints": {"params_max": 20000}, "seed": 0,
                   "score": 0.42},
    "metrics": {"top1": 42.0, "dataset": "imagenet-1k"},
}


def test_export_of_an_extracted_subnet_round_trips(tmp_path: Path) -> None:
    sup = _supernet()
    cfg = AutoFormerSpace.from_dict(SPACE).sample(3)
    sub = sup.extract(cfg).eval()
    folder = hub.export(sub, tmp_path / "searched", card=SEARCH_CARD)
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "autoformer_subnet"
    assert config["model_args"]["subnet"] == cfg.to_dict()
    assert config["timm_nas"]["family"] == "autoformer" and config["timm_nas"]["arch_arg"] == "subnet"
    loaded = hub.load(folder)
    assert torch.equal(_logits(sub), _logits(loaded))
    with sup.use_subnet(cfg):
        assert torch.allclose(_logits(sup), _logits(loaded), atol=1e-6)

    text = (folder / "README.md").read_text()
    macs = cost.count_macs(cfg, img_size=32, patch_size=8, head_dim=8, num_classes=10)
    assert f"({macs:,}) per 32x32 image, analytic (AutoFormerSubnet formula in timm_nas.cost)" in text
    assert f"({cost.real_params(sub):,})" in text
    assert "| layer | num_heads | mlp_ratio |" in text and "| embed_dim |" in text
    assert "| method | evolution |" in text and "AutoFormer: Searching Transformers" in text


def test_extracted_subnet_loads_in_a_fresh_process(tmp_path: Path) -> None:
    sub = _supernet().extract(AutoFormerSpace.from_dict(SPACE).largest()).eval()
    folder = hub.export(sub, tmp_path / "out")
    torch.save(_x(), tmp_path / "x.pt")
    code = textwrap.dedent(f"""
        import torch, timm
        import timm_nas
        model = timm.create_model("local-dir:{folder}", pretrained=True).eval()
        with torch.no_grad():
            torch.save(model(torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)), {str(tmp_path / 'y.pt')!r})
    """)
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert torch.equal(torch.load(tmp_path / "y.pt", weights_only=True), _logits(sub))


def test_export_of_a_supernet_keeps_its_space_and_step(tmp_path: Path) -> None:
    sup = _supernet()
    sup.train()
    with torch.no_grad():
        sup(_x())  # one training-mode forward advances the sampling step
    folder = hub.export(sup, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_args"]["space"] == SPACE and config["timm_nas"]["arch_arg"] == "space"
    loaded = hub.load(folder)
    assert int(getattr(loaded, af.STEP_KEY)) == int(getattr(sup, af.STEP_KEY)) == 1
    assert torch.equal(_logits(sup), _logits(loaded))
    text = (folder / "README.md").read_text()
    assert '| embed_dim | [16, 24] |' in text  # the space's choices, one row each
    assert "measured (timm_nas.cost.measure_macs" in text  # a space has no analytic formula


def test_published_architecture_card_comes_from_the_registry(tmp_path: Path) -> None:
    model = timm_nas.create_model("autoformer_tiny", device="meta")
    folder = hub.export(model, tmp_path / "out")  # architecture only
    text = (folder / "README.md").read_text()
    entry = timm_nas.registry.get_entry("autoformer", "autoformer_tiny")["model_args"]["subnet"]
    assert "the timm-nas registry entry `autoformer_tiny`" in text
    assert f"| depth | {entry['depth']} |" in text
    macs = cost.count_macs(AutoFormerSubnet.from_dict(entry), num_classes=1000)
    assert f"({macs:,}) per 224x224 image, analytic" in text
    assert f"({cost.real_params(model):,})" in text
    built = hub.load(folder, pretrained=False)
    assert type(built).__name__ == "AutoFormer" and built.subnet == AutoFormerSubnet.from_dict(entry)


def test_extract_without_recorded_args_would_be_refused(tmp_path: Path) -> None:
    sub = _supernet().extract(AutoFormerSpace.from_dict(SPACE).smallest())
    sub._model_args.pop("subnet")  # as if extract() had not recorded its architecture
    with pytest.raises(ValueError, match=r"autoformer_subnet takes its architecture as the 'subnet' argument.*"
                                         r"timm_nas\.hub\.record_model_args\(model, subnet=\.\.\.\)"):
        hub.export(sub, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _edit(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config["model_args"]["subnet"])
    (folder / "config.json").write_text(json.dumps(config))


def test_subnet_model_args_failing_validation_and_weights_not_fitting(tmp_path: Path) -> None:
    cfg = AutoFormerSubnet(embed_dim=16, depth=1, num_heads=(2,), mlp_ratio=(2.0,))
    folder = hub.export(_supernet().extract(cfg), tmp_path / "out")
    _edit(folder, lambda s: s.update(num_heads=[2, 2]))
    with pytest.raises(ValueError, match=r"autoformer_subnet could not be built from the model_args.*"
                                         r"num_heads has 2 values but depth=1"):
        hub.load(folder)
    _edit(folder, lambda s: s.update(num_heads=[2], embed_dim=24))  # valid, but the stored weights are 16 wide
    with pytest.raises(ValueError, match=r"weights in .* do not fit autoformer_subnet.*shape mismatches \(\d+\): "
                                         r"cls_token \[1, 1, 16\] \(expected \[1, 1, 24\]\)"):
        hub.load(folder)


def test_convert_an_original_supernet_checkpoint(tmp_path: Path) -> None:
    source = _supernet(seed=5)
    ckpt = _release_file(tmp_path / "supernet-custom.pth", source)
    folder = hub.convert_checkpoint("autoformer", ckpt, tmp_path / "out", model_name="autoformer_supernet",
                                    model_args=dict(space=SPACE, **ARGS))
    loaded = hub.load(folder)
    assert torch.equal(_logits(source), _logits(loaded))
    cfg = AutoFormerSpace.from_dict(SPACE).sample(1)
    assert torch.equal(_logits(source.extract(cfg)), _logits(loaded.extract(cfg)))
    text = (folder / "README.md").read_text()
    assert "| checkpoint | supernet-custom.pth |" in text
    assert "| filter | timm_nas.models.autoformer.checkpoint_filter_fn |" in text
    assert "license: mit" in text and "- imagenet-1k" in text


def test_convert_lists_unexpected_and_missing_original_keys(tmp_path: Path) -> None:
    source = _supernet()
    extra = _release_file(tmp_path / "extra.pth", source, **{"blocks.0.attn.gate": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"does not fit autoformer_supernet.*blocks\.0\.attn\.gate"):
        hub.convert_checkpoint("autoformer", extra, tmp_path / "out", model_name="autoformer_supernet",
                               model_args=dict(space=SPACE, **ARGS))
    state = _original_layout(source)
    state.pop("norm.bias")
    torch.save({"model": state, "args": argparse.Namespace(lr=1.0)}, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"does not fit autoformer_supernet.*missing keys.*norm\.bias"):
        hub.convert_checkpoint("autoformer", tmp_path / "missing.pth", tmp_path / "out",
                               model_name="autoformer_supernet", model_args=dict(space=SPACE, **ARGS))
    assert not (tmp_path / "out").exists()


def test_convert_without_a_fitting_preset_lists_them(tmp_path: Path) -> None:
    ckpt = _release_file(tmp_path / "custom.pth", _supernet())
    with pytest.raises(ValueError, match=r"fits none of the autoformer models \['autoformer_supernet_tiny', "
                                         r"'autoformer_supernet_small', 'autoformer_supernet_base'\].*model_name="):
        hub.convert_checkpoint("autoformer", ckpt, tmp_path / "out")


def test_cli_convert_autoformer(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = _supernet(seed=2)
    ckpt = _release_file(tmp_path / "release.pth", source)
    argv = ["convert", "autoformer", "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"),
            "--model", "autoformer_supernet", "--model-args", json.dumps(dict(space=SPACE, **ARGS))]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    assert torch.equal(_logits(source), _logits(hub.load(tmp_path / "out")))


@pytest.mark.slow
def test_convert_picks_the_tiny_supernet_for_a_supernet_tiny_release(tmp_path: Path) -> None:
    source = timm_nas.create_model("autoformer_supernet_tiny").eval()
    ckpt = _release_file(tmp_path / "supernet-tiny.pth", source)
    folder = hub.convert_checkpoint("autoformer", ckpt, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "autoformer_supernet_tiny"
    assert torch.equal(_logits(source, 224), _logits(hub.load(folder), 224))
