"""The Hub round trip with the DARTS family (small networks: few channels and cells), the family table's rows
and the DARTS card's cost note. AutoFormer has its own file (``test_hub_autoformer.py``)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import timm_nas
from timm_nas import cost, hub
from timm_nas.spaces import Genotype

SMALL = dict(C=8, layers=5)


def _logits(model: torch.nn.Module, size: int) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)))


def test_darts_genotype_dict_round_trips_with_analytic_cost(tmp_path: Path) -> None:
    genotype = Genotype.resolve("darts_v1")
    model = timm_nas.create_model("darts_cifar", genotype=genotype.to_dict(), **SMALL).eval()
    folder = hub.export(model, tmp_path / "out", card={"provenance": {"method": "darts", "seed": 2}})
    config = json.loads((folder / "config.json").read_text())
    assert config["model_args"]["genotype"] == genotype.to_dict()
    assert config["timm_nas"]["family"] == "darts" and config["timm_nas"]["arch_arg"] == "genotype"
    assert torch.equal(_logits(model, 32), _logits(hub.load(folder), 32))
    text = (folder / "README.md").read_text()
    macs = cost.count_macs(genotype, stem_type="cifar", num_classes=10, img_size=32, **SMALL)
    assert f"({macs:,}) per 32x32 image, analytic (Genotype formula in timm_nas.cost)" in text
    assert "| normal_concat | [2, 3, 4, 5] |" in text and '"sep_conv_3x3"' in text
    assert "574M" in text and "529.9M" in text and "- darts" in text


def test_darts_genotype_name_is_resolved_on_the_card(tmp_path: Path) -> None:
    model = timm_nas.create_model("darts_cifar", genotype="pc_darts", **SMALL)
    text = (hub.export(model, tmp_path / "out") / "README.md").read_text()
    assert '`model_args["genotype"]` in `config.json` (the name "pc_darts", resolved)' in text
    assert json.dumps(Genotype.resolve("pc_darts").to_dict(), indent=1) in text


def test_an_entrypoint_default_reaches_the_analytic_cost_through_cost_args(tmp_path: Path) -> None:
    """darts_imagenet's stem_type='imagenet' is an entrypoint default, absent from model_args; the model records
    it in ``cost_args``, so the card's analytic count is right (it equals the measured one)."""
    model = timm_nas.create_model("darts_imagenet", genotype="darts_v2", **SMALL).eval()
    assert "stem_type" not in model._model_args and model.cost_args["stem_type"] == "imagenet"
    text = (hub.export(model, tmp_path / "out") / "README.md").read_text()
    measured = cost.measure_macs(model, torch.zeros(1, 3, 224, 224))
    assert re.search(rf"\({measured:,}\) per 224x224 image, analytic", text)


def test_published_darts_network_card_shows_its_genotype(tmp_path: Path) -> None:
    model = timm_nas.create_model("darts_v2_cifar", device="meta")
    text = (hub.export(model, tmp_path / "out") / "README.md").read_text()
    assert "the model's `genotype`, fixed by the timm name `darts_v2_cifar`" in text
    assert json.dumps(Genotype.resolve("darts_v2").to_dict(), indent=1) in text
    assert "architecture only" in text


def test_darts_convert_needs_a_model_name(tmp_path: Path) -> None:
    torch.save({"model": {}}, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="no default model for conversion: .*model_name="):
        hub.convert_checkpoint("darts", tmp_path / "weights.pt", tmp_path / "out")


@pytest.mark.parametrize("name", ["autoformer", "s3", "darts", "spvit"])
def test_family_rows_match_the_registered_models(name: str) -> None:
    family = hub.FAMILIES[name]
    registered = set(timm_nas.list_models())
    assert set(family.arch_args) <= registered, "a generic entrypoint in the row is not registered"
    names = {c if isinstance(c, str) else c[0] for c in family.convert_models}
    assert names <= registered, "a conversion candidate in the row is not registered"
    for c in family.convert_models:  # a generic candidate's arguments build a model
        if not isinstance(c, str):
            timm_nas.create_model(c[0], device="meta", **c[1])
    for entrypoint in family.arch_args:
        assert hub.family_of(entrypoint) is family
    for arg in family.arch_args.values():
        assert family.config_type(arg) is not None, f"{name}: config type of {arg!r} does not resolve"
    assert callable(family.checkpoint_filter)


@pytest.mark.parametrize("name, arg", [("autoformer_subnet", "subnet"), ("autoformer_supernet", "space"),
                                       ("darts_cifar", "genotype"), ("darts_imagenet", "genotype"),
                                       ("s3_subnet", "subnet"), ("s3_supernet", "space"), ("spvit_deit", "arch")])
def test_generic_entrypoint_default_is_recorded_and_exports(tmp_path: Path, name: str, arg: str) -> None:
    """create_model(name) with no architecture argument records its default, so the export rebuilds it."""
    model = timm_nas.create_model(name, device="meta")
    assert isinstance(model._model_args[arg], dict)
    folder = hub.export(model, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_args"][arg] == model._model_args[arg]
    rebuilt = hub.load(folder, pretrained=False, device="meta")
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["darts_cifar", "darts_imagenet", "s3_subnet", "s3_supernet"])
def test_generic_entrypoint_features_only_still_builds(name: str) -> None:
    """Recording the default architecture must not touch a features_only wrapper (it has no architecture)."""
    model = timm_nas.create_model(name, features_only=True, device="meta")
    assert len(model.feature_info.channels()) >= 3


def test_s3_convert_finds_a_released_searched_model(tmp_path: Path) -> None:
    """A static S3-T release in the original layout (downsample at the end of a stage, ``head.``, persistent
    buffers) converts with no --model: the supernet candidates do not fit, and of the searched models whose
    weights the slicing filter accepts (S3-T, cut out of bigger files too) the largest fitting one is chosen."""
    torch.manual_seed(0)
    source = timm_nas.create_model("s3_subnet", subnet="s3_tiny").eval()
    original = {}
    for k, v in source.state_dict().items():
        k = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", k)
        original[re.sub(r"^head\.fc\.", "head.", k)] = v
    original["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    torch.save({"model": original}, tmp_path / "s3-t.pth")
    folder = hub.convert_checkpoint("s3", tmp_path / "s3-t.pth", tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "s3_subnet"
    assert config["model_args"]["subnet"] == "s3_tiny"  # a registry name (resolved on the card)
    assert '| model | s3_subnet({"subnet": "s3_tiny"}) |' in (folder / "README.md").read_text()
    assert torch.equal(_logits(source, 224), _logits(hub.load(folder), 224))
