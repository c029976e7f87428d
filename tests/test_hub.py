"""Export, local load, model cards, bad input and atomicity of :mod:`timm_nas.hub` (no network).

A tiny NAS-like family is registered here with timm's ``register_model``: ``hubtest_vit`` takes its
architecture as the ``arch`` argument (a small config dataclass), ``hubtest_vit_small`` / ``_base`` are named,
fixed architectures, and ``checkpoint_filter_fn`` reads an "original" layout (a ``module.`` prefix and an
``fc`` head). The family joins :data:`timm_nas.hub.FAMILIES` for each test through a fixture.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._input import update_model_args
from timm.models.vision_transformer import VisionTransformer

import timm
import timm_nas
from timm_nas import cli, cost, hub
from timm_nas._resources import data_dir
from timm_nas.family import Family
from timm_nas.spaces.base import ArchConfig


# ------------------------------------------------------------------------------------- the tiny test family
@dataclasses.dataclass(frozen=True)
class TinyArch(ArchConfig):
    """A miniature architecture config: one width, a depth and a head count."""

    family = "hubtest"
    registry_arg = "arch"
    embed_dim: int
    depth: int
    num_heads: int

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}")


TINY = TinyArch(embed_dim=16, depth=2, num_heads=2)
SMALL = TinyArch(embed_dim=16, depth=1, num_heads=2)
BASE = TinyArch(embed_dim=24, depth=1, num_heads=2)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return dict(url="", num_classes=10, input_size=(3, 32, 32), fixed_input_size=True, mean=(0.5,) * 3,
                std=(0.5,) * 3, first_conv="patch_embed.proj", classifier="head", **kwargs)


default_cfgs = generate_default_cfgs({"hubtest_vit": _cfg(), "hubtest_vit_small": _cfg(), "hubtest_vit_base": _cfg()})


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The "original" layout: keys under ``module.`` and the classifier named ``fc``; ours passes through."""
    out = {}
    for k, v in state_dict.items():
        k = k.removeprefix("module.")
        k = re.sub(r"^fc\.", "head.", k)
        out[k] = v
    return out


def _create(variant: str, arch: TinyArch, pretrained: bool, **kwargs: Any) -> VisionTransformer:
    args = dict(img_size=32, patch_size=8, embed_dim=arch.embed_dim, depth=arch.depth, num_heads=arch.num_heads,
                mlp_ratio=2.0, num_classes=10)
    return build_model_with_cfg(VisionTransformer, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                **dict(args, **kwargs))


@register_model
def hubtest_vit(pretrained: bool = False, arch: Any = None, **kwargs: Any) -> VisionTransformer:
    """Generic entrypoint: the architecture is the ``arch`` argument (default ``TINY``)."""
    return _create("hubtest_vit", TinyArch.from_dict(arch) if arch is not None else TINY, pretrained, **kwargs)


@register_model
def hubtest_vit_small(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    return _create("hubtest_vit_small", SMALL, pretrained, **kwargs)


@register_model
def hubtest_vit_base(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    return _create("hubtest_vit_base", BASE, pretrained, **kwargs)


FAMILY = Family(
    name="hubtest",
    config=TinyArch,
    space=None,
    static_cls=VisionTransformer,
    static_entrypoint="hubtest_vit",
    weight_sharing_cls=VisionTransformer,
    weight_sharing_entrypoint="hubtest_vit",
    weight_sharing_arg=None,
    checkpoint_filter=checkpoint_filter_fn,
    module=__name__,
    convert_models=("hubtest_vit_small", "hubtest_vit_base"),
    datasets=("imagenet-1k",),
)


@pytest.fixture(autouse=True)
def hubtest_family(monkeypatch: pytest.MonkeyPatch) -> Family:
    # declared like a real family (timm_nas.family), for the duration of each test
    monkeypatch.setitem(timm_nas.family._FAMILIES, "hubtest", FAMILY)
    return FAMILY


def _x(n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _logits(model: torch.nn.Module, size: int = 32) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(_x(size=size))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _tiny_model(arch: TinyArch = TINY, **kwargs: Any) -> torch.nn.Module:
    return timm.create_model("hubtest_vit", arch=arch.to_dict(), **kwargs).eval()


def _front_matter(readme: str) -> dict[str, Any]:
    import yaml

    m = re.match(r"^---\n(.*?)\n---\n", readme, flags=re.S)
    assert m, "README.md must start with YAML front matter"
    return yaml.safe_load(m.group(1))


# --------------------------------------------------------------------------------------------- export + load
def test_export_writes_timm_config_weights_and_card(tmp_path: Path) -> None:
    model = _tiny_model()
    folder = hub.export(model, tmp_path / "out")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "hubtest_vit"
    assert config["num_classes"] == 10
    assert config["model_args"]["arch"] == TINY.to_dict()  # the config under its argument name, JSON-native
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    marker = config["timm_nas"]
    assert marker["version"] == timm_nas.__version__ and marker["family"] == "hubtest"
    assert marker["arch_arg"] == "arch" and marker["import"] == "import timm_nas"
    assert "pip install" in marker["install"] and marker["weights"] == "model.safetensors"
    assert marker["versions"]["timm"] == timm.__version__


def test_export_accepts_a_config_dataclass_argument(tmp_path: Path) -> None:
    model = timm.create_model("hubtest_vit", arch=TINY)  # a dataclass, not a dict: converted with to_dict()
    config = json.loads((hub.export(model, tmp_path / "out") / "config.json").read_text())
    assert config["model_args"]["arch"] == {"embed_dim": 16, "depth": 2, "num_heads": 2}


@pytest.mark.parametrize("how", ["local-dir", "path", "timm"])
def test_local_round_trip_gives_identical_logits(tmp_path: Path, how: str) -> None:
    model = _tiny_model(TinyArch(embed_dim=24, depth=3, num_heads=3))
    folder = hub.export(model, tmp_path / "out")
    if how == "local-dir":
        loaded = hub.load(f"local-dir:{folder}")
    elif how == "path":
        loaded = hub.load(folder)
    else:
        loaded = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert torch.equal(_logits(model), _logits(loaded))
    assert loaded._model_args["arch"] == {"embed_dim": 24, "depth": 3, "num_heads": 3}


def test_reexport_of_a_loaded_model_round_trips(tmp_path: Path) -> None:
    model = _tiny_model()
    loaded = hub.load(hub.export(model, tmp_path / "a"))
    again = hub.load(hub.export(loaded, tmp_path / "b"))
    assert torch.equal(_logits(model), _logits(again))


def test_export_after_reset_classifier_records_the_current_head(tmp_path: Path) -> None:
    model = _tiny_model()
    model.reset_classifier(4)
    loaded = hub.load(hub.export(model, tmp_path / "out"))
    assert loaded.num_classes == 4
    assert torch.equal(_logits(model), _logits(loaded))


def test_named_model_needs_no_architecture_argument(tmp_path: Path) -> None:
    model = timm.create_model("hubtest_vit_small")
    folder = hub.export(model, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    assert "arch" not in config["model_args"]
    assert "fixed by the timm name" in (folder / "README.md").read_text()
    assert torch.equal(_logits(model), _logits(hub.load(folder)))


def test_plain_timm_model_exports_and_loads(tmp_path: Path) -> None:
    model = timm.create_model("test_vit", num_classes=7).eval()
    folder = hub.export(model, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    assert config["timm_nas"]["family"] is None
    assert torch.equal(_logits(model, 160), _logits(hub.load(folder), 160))


def test_extracted_model_without_recorded_arch_is_refused(tmp_path: Path) -> None:
    # built outside create_model (as extract() does) and without a recorded arch: nothing says which arch
    model = hubtest_vit(arch=TinyArch(embed_dim=24, depth=1, num_heads=3).to_dict())
    with pytest.raises(ValueError, match=r"no recorded 'arch'.*timm_nas\.hub\.record_model_args\(model, "
                                         r"arch=\.\.\.\)"):
        hub.export(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_extracted_model_with_recorded_arch_round_trips(tmp_path: Path) -> None:
    arch = TinyArch(embed_dim=24, depth=1, num_heads=3)
    model = hubtest_vit(arch=arch.to_dict())
    assert hub.record_model_args(model, arch=arch) is model  # what extract() does
    loaded = hub.load(hub.export(model, tmp_path / "out"))
    assert torch.equal(_logits(model), _logits(loaded))


def test_recorded_args_that_do_not_rebuild_the_model_are_refused(tmp_path: Path) -> None:
    model = _tiny_model(TinyArch(embed_dim=24, depth=1, num_heads=3))
    update_model_args(model, arch=TINY.to_dict())  # a wrong record (timm's own record): other shapes
    with pytest.raises(ValueError, match=r"would not rebuild this model.*shape mismatches.*record_model_args"):
        hub.export(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_model_not_built_by_timm_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no timm pretrained_cfg\['architecture'\].*create_model"):
        hub.export(torch.nn.Linear(2, 2), tmp_path / "out")


def test_meta_model_exports_the_architecture_only(tmp_path: Path) -> None:
    model = timm.create_model("hubtest_vit", arch=TINY.to_dict(), device="meta")
    folder = hub.export(model, tmp_path / "out")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json"]
    assert json.loads((folder / "config.json").read_text())["timm_nas"]["weights"] is None
    assert "architecture only" in (folder / "README.md").read_text()
    with pytest.raises(FileNotFoundError, match="pretrained=False"):
        hub.load(folder)
    built = hub.load(folder, pretrained=False)
    assert built._model_args["arch"] == TINY.to_dict()


def test_tied_and_overlapping_weights_are_stored(tmp_path: Path) -> None:
    model = _tiny_model()
    model.blocks[1].attn.proj.weight = model.blocks[0].attn.proj.weight  # two names, one tensor
    flat = torch.randn(2 * 16)
    with torch.no_grad():  # two parameters that are views into one storage at different offsets
        model.blocks[0].norm1.bias = torch.nn.Parameter(flat[:16])
        model.blocks[1].norm1.bias = torch.nn.Parameter(flat[16:])
    loaded = hub.load(hub.export(model, tmp_path / "out"))
    assert torch.equal(_logits(model), _logits(loaded))


# --------------------------------------------------------------------------------- destination and atomicity
def test_non_empty_destination_without_overwrite_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    hub.export(_tiny_model(), out)
    before = _snapshot(out)
    with pytest.raises(FileExistsError, match="not empty; pass overwrite=True to replace it"):
        hub.export(_tiny_model(TinyArch(24, 1, 3)), out)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_replaces_a_previous_export(tmp_path: Path) -> None:
    out = tmp_path / "out"
    hub.export(_tiny_model(), out)
    model = _tiny_model(TinyArch(24, 1, 3))
    hub.export(model, out, overwrite=True)
    assert torch.equal(_logits(model), _logits(hub.load(out)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or backup folders left


def test_overwrite_refuses_a_folder_that_is_not_an_export(tmp_path: Path) -> None:
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an exported model folder"):
        hub.export(_tiny_model(), out, overwrite=True)
    assert (out / "todo.txt").read_text() == "keep me"


def test_empty_destination_is_used_and_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert (hub.export(_tiny_model(), tmp_path / "empty") / "config.json").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        hub.export(_tiny_model(), tmp_path / "file")


def test_crash_while_writing_weights_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    def broken(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        hub.export(_tiny_model(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_crash_during_overwrite_keeps_the_previous_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    out = tmp_path / "out"
    old = _tiny_model()
    hub.export(old, out)
    before = _snapshot(out)
    monkeypatch.setattr(safetensors.torch, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        hub.export(_tiny_model(TinyArch(24, 1, 3)), out, overwrite=True)
    assert _snapshot(out) == before
    assert torch.equal(_logits(old), _logits(hub.load(out)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_killed_process_leaves_no_folder_that_loads(tmp_path: Path) -> None:
    """A process killed while writing the weights (no cleanup runs) leaves only a staging folder, and that
    folder has no config.json, so nothing in the parent loads."""
    code = textwrap.dedent(f"""
        import os, pathlib, safetensors.torch, timm, timm_nas
        from timm_nas import hub
        def die(tensors, filename, metadata=None):
            pathlib.Path(filename).write_bytes(b"half")
            os._exit(9)
        safetensors.torch.save_file = die
        hub.export(timm.create_model("test_vit"), {str(tmp_path / "out")!r})
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr
    assert not (tmp_path / "out").exists()
    leftovers = list(tmp_path.iterdir())
    assert leftovers and all(p.name.startswith(".out.partial-") for p in leftovers)
    for folder in leftovers:
        assert not (folder / "config.json").exists()
        with pytest.raises(FileNotFoundError, match="no config.json"):
            hub.load(folder)


# ------------------------------------------------------------------------------------------------ bad input
def _exported(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    model = _tiny_model()
    return model, hub.export(model, tmp_path / "out")


def _edit_config(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_malformed_config_json(tmp_path: Path) -> None:
    _, folder = _exported(tmp_path)
    (folder / "config.json").write_text('{"architecture": "hubtest_vit",\n "model_args": {')
    before = _snapshot(folder)
    with pytest.raises(ValueError, match=r"config.json of .* is not valid JSON \(line 2"):
        hub.load(folder)
    assert _snapshot(folder) == before


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "must hold a JSON object"),
    ('{"model_args": {}}', "has no 'architecture'"),
    ('{"architecture": "hubtest_vit", "model_args": [1]}', "'model_args' must be a JSON object"),
    ('{"architecture": "hubtest_vit", "num_classes": "ten"}', "'num_classes' must be an integer"),
])
def test_config_json_with_wrong_structure(tmp_path: Path, content: str, message: str) -> None:
    _, folder = _exported(tmp_path)
    (folder / "config.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        hub.load(folder)


def test_missing_folder_and_missing_config(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        hub.load(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="for a Hub repository write 'hf-hub:org/name'"):
        hub.load("org/name")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        hub.load(tmp_path / "empty")


def test_unknown_architecture_with_marker_says_what_to_install(tmp_path: Path) -> None:
    _, folder = _exported(tmp_path)
    _edit_config(folder, lambda c: (c.update(architecture="autoformer_from_the_future"),
                                    c["timm_nas"].update(version="9.9.0", family="autoformer",
                                                         install="pip install 'timm-nas>=9.9.0'")))
    with pytest.raises(ValueError, match=r"'autoformer_from_the_future' \(autoformer family\), exported with "
                                         r"timm-nas 9\.9\.0.*pip install 'timm-nas>=9\.9\.0'"):
        hub.load(folder)


def test_unknown_architecture_without_marker(tmp_path: Path) -> None:
    _, folder = _exported(tmp_path)
    _edit_config(folder, lambda c: (c.update(architecture="mystery_net"), c.pop("timm_nas")))
    with pytest.raises(ValueError, match="'mystery_net', which no imported package registers"):
        hub.load(folder)


def test_model_args_failing_validation(tmp_path: Path) -> None:
    _, folder = _exported(tmp_path)
    _edit_config(folder, lambda c: c["model_args"]["arch"].update(embed_dim=17))
    with pytest.raises(ValueError, match=r"could not be built from the model_args.*embed_dim=17 must be divisible"):
        hub.load(folder)
    _edit_config(folder, lambda c: c["model_args"]["arch"].update(embed_dim=16, width=3))
    with pytest.raises(ValueError, match=r"unknown TinyArch keys \['width'\]"):
        hub.load(folder)


def test_weights_that_do_not_fit_the_config(tmp_path: Path) -> None:
    _, folder = _exported(tmp_path)
    _edit_config(folder, lambda c: c["model_args"]["arch"].update(depth=3))  # valid args, one block too many
    with pytest.raises(ValueError, match=r"do not fit hubtest_vit.*missing keys \(\d+\): blocks\.2\."):
        hub.load(folder)
    _edit_config(folder, lambda c: c["model_args"]["arch"].update(depth=2, embed_dim=24, num_heads=3))
    with pytest.raises(ValueError, match=r"shape mismatches \(\d+\): cls_token \[1, 1, 16\] \(expected \[1, 1, 24\]\)"):
        hub.load(folder)


def test_unexpected_keys_in_stored_weights(tmp_path: Path) -> None:
    import safetensors.torch

    _, folder = _exported(tmp_path)
    state = safetensors.torch.load_file(str(folder / "model.safetensors"))
    state["extra.weight"] = torch.zeros(2)
    safetensors.torch.save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): extra\.weight"):
        hub.load(folder)


def test_state_dict_mismatch_lists_everything() -> None:
    a = {"x": torch.zeros(2), "y": torch.zeros(3), "z": torch.zeros(1)}
    b = {"x": torch.zeros(2), "y": torch.zeros(4), "w": torch.zeros(1)}
    assert hub.state_dict_mismatch(a, a) == ""
    assert hub.state_dict_mismatch(a, b) == ("missing keys (1): z; unexpected keys (1): w; "
                                             "shape mismatches (1): y [4] (expected [3])")
    many = {f"k{i}": torch.zeros(1) for i in range(20)}
    assert "(8 more)" in hub.state_dict_mismatch(many, {})


@pytest.mark.parametrize("card, message", [
    ({"colour": "red"}, r"unknown card keys \['colour'\]; allowed keys"),
    ({"metrics": {"top1": 70.0}}, "needs the dataset"),
    ({"metrics": {"top1": "high", "dataset": "imagenet-1k"}}, "must be a finite number"),
    ({"metrics": {"dataset": "imagenet-1k"}}, "holds no metric values"),
    ({"provenance": ["evolution"]}, "must be a dict"),
    ({"repo_id": "no-namespace"}, "namespace/name"),
    ({"datasets": [1]}, "list of dataset names"),
])
def test_bad_card_is_refused_before_writing(tmp_path: Path, card: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hub.export(_tiny_model(), tmp_path / "out", card=card)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------------ card
CARD = {
    "description": "An architecture found by evolution under a parameter limit.",
    "provenance": {"method": "evolution", "space": "tiny", "constraints": {"params_max": 6e6}, "seed": 0,
                   "score": 0.71},
    "metrics": {"top1": 71.5, "top5": 90.1, "dataset": "imagenet-1k"},
    "license": "apache-2.0",
    "notes": "Trained for 3 epochs only.",
}


def test_card_metadata_parses_with_huggingface_hub(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import metadata_load

    folder = hub.export(_tiny_model(), tmp_path / "searched", card=CARD)
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "timm"
    assert {"timm", "timm-nas", "hubtest"} <= set(card.data.tags)
    assert card.data.license == "apache-2.0"
    assert card.data.datasets == ["imagenet-1k"]
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {"top1": 71.5, "top5": 90.1}
    assert card.data.eval_results[0].dataset_type == "imagenet-1k"
    assert card.data.model_name == "searched"
    assert metadata_load(folder / "README.md")["library_name"] == "timm"


def test_card_body_has_usage_architecture_cost_provenance_versions(tmp_path: Path) -> None:
    model = _tiny_model()
    folder = hub.export(model, tmp_path / "searched", card=CARD)
    text = (folder / "README.md").read_text()
    body = text.split("\n---\n", 1)[1]
    assert body.index("import timm_nas") < body.index("import timm\n")
    assert "| field | value |" in body and "| embed_dim | 16 |" in body and "| depth | 2 |" in body
    assert '"num_heads": 2' in body  # the exact config as JSON
    assert f"({cost.real_params(model):,})" in body
    assert re.search(r"MACs: [\d.]+ [KMG] \([\d,]+\) per 32x32 image, measured", body)
    assert "| method | evolution |" in body and '| constraints | {"params_max": 6000000.0} |' in body
    assert "| top1 | 71.5 | imagenet-1k |" in body
    assert "## Notes\n\nTrained for 3 epochs only." in body
    assert f"| timm | {timm.__version__} |" in body and f"| timm-nas | {timm_nas.__version__} |" in body
    assert "\n\n\n" not in body


def test_card_without_metrics_has_no_model_index(tmp_path: Path) -> None:
    folder = hub.export(_tiny_model(), tmp_path / "out")
    meta = _front_matter((folder / "README.md").read_text())
    assert "model-index" not in meta and "datasets" not in meta
    assert meta["library_name"] == "timm" and "timm-nas" in meta["tags"]
    text = (folder / "README.md").read_text()
    assert "No measured result" in text and "do not come from a recorded architecture search" in text


def _tiny_params(cfg: TinyArch, num_classes: int = 10) -> int:
    """Parameters of ``hubtest_vit`` (32x32 input, 8x8 patches, MLP ratio 2, class token)."""
    e = cfg.embed_dim
    block = 2 * e + (3 * e * e + 3 * e) + (e * e + e) + 2 * e + (2 * e * e + 2 * e) + (2 * e * e + e)
    return (3 * 8 * 8 * e + e) + e + 17 * e + cfg.depth * block + 2 * e + (e * num_classes + num_classes)


def test_card_uses_the_analytic_cost_when_its_params_formula_fits(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The formula gets the config and the model's recorded ``cost_args``, nothing guessed."""
    seen = {}

    def macs(cfg: TinyArch, img_size: int = 224) -> int:
        seen["img_size"] = img_size
        return 1000 * cfg.depth

    model = _tiny_model()
    model.cost_args = {"img_size": 32, "num_classes": 10}  # the shape arguments a family's model records
    assert _tiny_params(TINY) == cost.real_params(model)
    monkeypatch.setitem(cost._ANALYTIC, TinyArch, (lambda cfg, img_size, num_classes: _tiny_params(cfg, num_classes),
                                                   lambda cfg, img_size, num_classes: macs(cfg, img_size)))
    text = (hub.export(model, tmp_path / "a") / "README.md").read_text()
    assert "MACs: 2.00 K (2,000) per 32x32 image, analytic (TinyArch formula in timm_nas.cost)" in text
    assert seen["img_size"] == 32
    # a formula that does not reproduce the model's parameters (e.g. an unrecorded entrypoint default) is not used
    monkeypatch.setitem(cost._ANALYTIC, TinyArch, (lambda cfg, **kw: _tiny_params(cfg) + 1,
                                                   lambda cfg, img_size, num_classes: macs(cfg, img_size)))
    text = (hub.export(model, tmp_path / "b") / "README.md").read_text()
    assert "analytic" not in text and "per 32x32 image, measured" in text


def test_measured_macs_match_the_cost_module(tmp_path: Path) -> None:
    model = _tiny_model()
    text = (hub.export(model, tmp_path / "out") / "README.md").read_text()
    expected = cost.measure_macs(model.eval(), torch.zeros(1, 3, 32, 32))
    assert f"({expected:,}) per 32x32 image, measured" in text


def test_repo_id_in_card_goes_into_the_example(tmp_path: Path) -> None:
    text = (hub.export(_tiny_model(), tmp_path / "out", card={"repo_id": "me/tiny"}) / "README.md").read_text()
    assert 'timm.create_model("hf-hub:me/tiny", pretrained=True)' in text
    assert hub.REPO_ID_PLACEHOLDER not in text


@pytest.mark.parametrize("family", ["autoformer", "s3", "darts", "spvit", None])
def test_every_template_renders_and_parses(family: str | None) -> None:
    from huggingface_hub import ModelCard

    config = {"architecture": "x_net", "model_args": {"num_classes": 10}, "pretrained_cfg": {},
              "timm_nas": {"version": timm_nas.__version__, "family": family, "weights": "model.safetensors"}}
    text = hub.render_card(config, CARD, cost={"params": 1234, "input_size": [3, 224, 224], "macs": 5678,
                                               "macs_source": "analytic"})
    card = ModelCard(text)
    assert card.data.library_name == "timm"
    assert "timm-nas" in card.data.tags and (family is None or family in card.data.tags)
    assert card.data.license  # every template states one (the card's wins)
    assert not re.search(r"\{\{\s*\w+\s*\}\}|\{%", text)  # every Jinja2 variable filled, every block closed
    assert "import timm_nas" in text and "1,234" in text and "5,678" in text
    if family == "darts":
        assert "574M" in text and "529.9M" in text
    if family is not None:
        assert "## Citation" in text


def test_card_base_model_goes_into_the_metadata() -> None:
    from huggingface_hub import ModelCard

    config = {"architecture": "x", "model_args": {}, "pretrained_cfg": {}, "timm_nas": {"family": "spvit"}}
    card = ModelCard(hub.render_card(config, {"base_model": "timm/deit_small_patch16_224.fb_in1k"}))
    assert card.data.base_model == "timm/deit_small_patch16_224.fb_in1k"
    with pytest.raises(ValueError, match=r"card\['base_model'\] must be a list of Hub model ids"):
        hub.render_card(config, {"base_model": "deit_small"})


def test_template_license_is_the_default(tmp_path: Path) -> None:
    config = {"architecture": "x", "model_args": {}, "pretrained_cfg": {}, "timm_nas": {"family": "autoformer"}}
    assert _front_matter(hub.render_card(config))["license"] == "mit"
    assert _front_matter(hub.render_card(config, {"license": "cc-by-4.0"}))["license"] == "cc-by-4.0"
    config["pretrained_cfg"]["license"] = "apache-2.0"  # the model's own declaration beats the family default
    assert _front_matter(hub.render_card(config))["license"] == "apache-2.0"
    assert _front_matter(hub.render_card(config, {"license": "cc-by-4.0"}))["license"] == "cc-by-4.0"


def test_card_example_code_runs_against_the_local_folder(tmp_path: Path) -> None:
    """The card's Python block, run as-is in a fresh process, with only the repo id pointed at the folder."""
    model = timm.create_model("test_vit", num_classes=5).eval()
    folder = hub.export(model, tmp_path / "out", card=CARD)
    text = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, flags=re.S).group(1)
    code = code.replace(f"hf-hub:{hub.REPO_ID_PLACEHOLDER}", f"local-dir:{folder}")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "torch.Size([1, 5])"


# --------------------------------------------------------------------------------------------------- convert
def _original_checkpoint(path: Path, model: torch.nn.Module, **extra: Any) -> Path:
    """Write ``model``'s weights in the "original" layout, with training state, as the authors' files do."""
    state = {f"module.{re.sub(r'^head[.]', 'fc.', k)}": v.clone() for k, v in model.state_dict().items()}
    state.update(extra)
    torch.save({"model": state, "epoch": 299, "args": argparse.Namespace(lr=5e-4, model="tiny")}, path)
    return path


def test_convert_picks_the_model_whose_shapes_fit(tmp_path: Path) -> None:
    source = timm.create_model("hubtest_vit_base").eval()
    ckpt = _original_checkpoint(tmp_path / "release.pth", source)
    folder = hub.convert_checkpoint("hubtest", ckpt, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "hubtest_vit_base"  # hubtest_vit_small was tried first and did not fit
    assert torch.equal(_logits(source), _logits(hub.load(folder)))
    text = (folder / "README.md").read_text()
    assert "| checkpoint | release.pth |" in text and "| sha256 |" in text
    assert _front_matter(text)["datasets"] == ["imagenet-1k"]


def test_convert_with_a_named_model_reports_missing_and_unexpected_keys(tmp_path: Path) -> None:
    source = timm.create_model("hubtest_vit_small")
    state = {f"module.{k}": v for k, v in source.state_dict().items() if k != "norm.bias"}
    state["module.dist_token"] = torch.zeros(1, 1, 16)
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"does not fit hubtest_vit_small.*missing keys \(1\): norm\.bias; "
                                         r"unexpected keys \(1\): dist_token"):
        hub.convert_checkpoint("hubtest", tmp_path / "bad.pth", tmp_path / "out", model_name="hubtest_vit_small")
    assert not (tmp_path / "out").exists()


def test_convert_without_a_fitting_model_lists_each_candidate(tmp_path: Path) -> None:
    source = timm.create_model("hubtest_vit", arch=TinyArch(32, 1, 2).to_dict())
    ckpt = _original_checkpoint(tmp_path / "other.pth", source)
    with pytest.raises(ValueError, match=r"fits none of the hubtest models.*hubtest_vit_small: shape mismatches.*"
                                         r"hubtest_vit_base: shape mismatches.*model_name=\.\.\."):
        hub.convert_checkpoint("hubtest", ckpt, tmp_path / "out")


def test_convert_tries_generic_candidates_with_their_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """A (name, model_args) candidate (a published architecture behind a generic entrypoint) is tried like a
    named model; the caller's model_args are merged over it and the export records the architecture."""
    other = TinyArch(32, 1, 2)
    family = dataclasses.replace(FAMILY, convert_models=FAMILY.convert_models + (("hubtest_vit",
                                                                                  {"arch": other.to_dict()}),))
    monkeypatch.setitem(timm_nas.family._FAMILIES, "hubtest", family)
    source = timm.create_model("hubtest_vit", arch=other.to_dict(), num_classes=5).eval()
    ckpt = _original_checkpoint(tmp_path / "release.pth", source)
    folder = hub.convert_checkpoint("hubtest", ckpt, tmp_path / "out", model_args={"num_classes": 5})
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "hubtest_vit" and config["model_args"]["arch"] == other.to_dict()
    assert config["model_args"]["num_classes"] == 5
    assert torch.equal(_logits(source), _logits(hub.load(folder)))
    assert '| model | hubtest_vit({"arch": ' in (folder / "README.md").read_text()
    with pytest.raises(ValueError, match=r'hubtest_vit\(\{"arch": .*\}\): shape mismatches'):
        hub.convert_checkpoint("hubtest", _original_checkpoint(tmp_path / "x.pth", _tiny_model(TinyArch(48, 1, 3))),
                               tmp_path / "out2")


def test_convert_reads_with_weights_only(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"model": {}, "payload": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        hub.convert_checkpoint("hubtest", tmp_path / "evil.pth", tmp_path / "out")


def test_convert_errors_for_unknown_family(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown model family 'nope'; known families: \["):
        hub.convert_checkpoint("nope", tmp_path / "x.pth", tmp_path / "out")
    # a family declares its filter and config types as objects: nothing is looked up by name, so nothing can be
    # missing ("under construction") at conversion time
    assert FAMILY.checkpoint_filter is checkpoint_filter_fn and FAMILY.config_type("arch") is TinyArch


def test_family_rows_point_at_timm_nas_modules() -> None:
    for name, family in hub.FAMILIES.items():
        if name == "hubtest":
            continue
        assert family.module == f"timm_nas.models.{name}"
        assert family.checkpoint_filter.__name__ == "checkpoint_filter_fn"
        assert (data_dir("hub_cards") / f"{name}.md").is_file()
    assert hub.family_of("hubtest_vit") is FAMILY
    assert hub.family_of("test_vit") is None


# ------------------------------------------------------------------------------------------------------- CLI
def test_cli_export_with_model_args_and_card_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    card = tmp_path / "card.json"
    card.write_text(json.dumps(CARD))
    args = json.dumps({"arch": TinyArch(24, 1, 3).to_dict()})
    assert cli.main(["export", "hubtest_vit", "--model-args", args, "--card", str(card), "--random-weights",
                     "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    loaded = hub.load(tmp_path / "out")
    assert loaded._model_args["arch"] == TinyArch(24, 1, 3).to_dict()
    assert "| top1 | 71.5 | imagenet-1k |" in (tmp_path / "out" / "README.md").read_text()


def test_cli_export_with_checkpoint(tmp_path: Path) -> None:
    source = _tiny_model()
    torch.save({"model": source.state_dict(), "args": argparse.Namespace(seed=0)}, tmp_path / "trained.pth")
    assert cli.main(["export", "hubtest_vit", "--model-args", json.dumps({"arch": TINY.to_dict()}),
                     "--checkpoint", str(tmp_path / "trained.pth"), "--out", str(tmp_path / "out")]) == 0
    assert torch.equal(_logits(source), _logits(hub.load(tmp_path / "out")))


def test_cli_export_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    hub.export(_tiny_model(), out)
    assert cli.main(["export", "hubtest_vit", "--out", str(out), "--random-weights"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("timm-nas: error:") and "overwrite=True" in err and "\n" not in err
    assert cli.main(["export", "hubtest_vit", "--model-args", "{nope", "--out", str(tmp_path / "b"),
                     "--random-weights"]) == 2
    assert "--model-args is not valid JSON" in capsys.readouterr().err
    state = _tiny_model().state_dict()
    state["extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pth")
    assert cli.main(["export", "hubtest_vit", "--checkpoint", str(tmp_path / "w.pth"),
                     "--out", str(tmp_path / "c")]) == 2
    assert "unexpected keys (1): extra" in capsys.readouterr().err
    # a generic entrypoint's default architecture is not recorded: config.json would not say what it is
    assert cli.main(["export", "hubtest_vit", "--out", str(out), "--overwrite", "--random-weights"]) == 2
    assert "no recorded 'arch'" in capsys.readouterr().err
    assert cli.main(["export", "hubtest_vit", "--model-args", json.dumps({"arch": TINY.to_dict()}),
                     "--out", str(out), "--overwrite", "--random-weights"]) == 0


def test_cli_convert(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = timm.create_model("hubtest_vit_small").eval()
    ckpt = _original_checkpoint(tmp_path / "release.pth", source)
    assert cli.main(["convert", "hubtest", "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")]) == 0
    assert torch.equal(_logits(source), _logits(hub.load(tmp_path / "out")))
    assert cli.main(["convert", "hubtest", "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")]) == 2
    assert "overwrite=True" in capsys.readouterr().err
    assert cli.main(["convert", "hubtest", "--checkpoint", str(ckpt), "--out", str(tmp_path / "other"),
                     "--model", "hubtest_vit_base"]) == 2
    assert "does not fit hubtest_vit_base" in capsys.readouterr().err
