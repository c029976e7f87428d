"""Deployment: every family's static models export with torch.export and to ONNX (one file, dynamic batch) and
run on onnxruntime like eager PyTorch; the Hub folder carries model.onnx; supernets and search networks are
refused before anything is written."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import timm
import torch

import timm_nas  # noqa: F401
from timm_nas import hub
from timm_nas.cli import main
from timm_nas.deploy import ONNX_NAME, check_static, example_input, export_onnx, export_program

pytestmark = pytest.mark.usefixtures("one_thread")
needs_onnx = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")),
                                reason="the deploy extra (onnx, onnxscript, onnxruntime) is not installed")

AF_SUBNET = dict(embed_dim=64, depth=2, num_heads=[2, 2], mlp_ratio=[2.0, 1.0])
S3_SPACE = dict(embed_dim=[[32], [32], [32], [32]], depth=[[1], [1], [1], [1]], window_size=[[4], [4], [2], [1]],
                mlp_ratio=[2.0])


def _s3() -> torch.nn.Module:
    supernet = timm.create_model("s3_supernet", space=S3_SPACE, img_size=64, num_classes=10)
    return supernet.extract(supernet.space.largest())


def _spvit() -> torch.nn.Module:
    search = timm.create_model("spvit_search_deit", patch_size=8, embed_dim=48, depth=2, num_heads=3, img_size=32,
                               num_classes=10, target_flops=0.01, loss_lambda=1.0)
    return search.extract()


#: One small static model per family (the exported graph is the family's; the size only sets the test's time).
STATIC = {
    "autoformer": lambda: timm.create_model("autoformer_subnet", subnet=AF_SUBNET, img_size=32, patch_size=8,
                                            num_classes=10),
    "s3": _s3,
    "darts": lambda: timm.create_model("darts_cifar", genotype="darts_v2", C=8, layers=5, num_classes=10),
    "darts_imagenet": lambda: timm.create_model("darts_imagenet", genotype="pc_darts", C=8, layers=5,
                                                num_classes=10),
    "spvit": _spvit,
    "nb201": lambda: timm.create_model("nb201_cifar", genotype=123, num_classes=10),
}


@pytest.mark.parametrize("family", list(STATIC))
def test_torch_export_with_a_dynamic_batch(family):
    model = STATIC[family]().eval()
    program = export_program(model)
    for batch in (1, 3):
        x = example_input(model, batch)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), model(x), atol=1e-5, rtol=1e-5)


@needs_onnx
@pytest.mark.parametrize("family", list(STATIC))
def test_onnx_file_is_one_file_and_matches_eager_on_any_batch(family, tmp_path):
    import onnxruntime

    model = STATIC[family]().eval()
    path = export_onnx(model, tmp_path / ONNX_NAME)
    assert sorted(p.name for p in tmp_path.iterdir()) == [ONNX_NAME]  # self-contained, no temporaries left
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = example_input(model, batch)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            want = model(x)
        assert got.shape == tuple(want.shape)
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-4, rtol=1e-4)


def _supernets():
    return {
        "autoformer supernet": timm.create_model("autoformer_supernet", space=dict(
            embed_dim=[128], depth=[2], num_heads=[2], mlp_ratio=[1.0]), img_size=32, patch_size=8, num_classes=10),
        "s3 supernet": timm.create_model("s3_supernet", space=S3_SPACE, img_size=64, num_classes=10),
        "darts search network": timm.create_model("darts_search", C=4, layers=3, num_classes=10),
        "spvit search network": timm.create_model("spvit_search_deit", patch_size=8, embed_dim=48, depth=2,
                                                  num_heads=3, img_size=32, num_classes=10, target_flops=0.01,
                                                  loss_lambda=1.0),
    }


def test_supernets_and_search_networks_are_refused_before_anything_is_written(tmp_path):
    for name, model in _supernets().items():
        with pytest.raises(ValueError, match="need a static model; extract it first"):
            check_static(model)
        with pytest.raises(ValueError, match="extract it first"):
            export_onnx(model, tmp_path / "x.onnx")
        with pytest.raises(ValueError, match="extract it first"):
            hub.export(model, tmp_path / "folder", onnx=True)
        assert list(tmp_path.iterdir()) == [], name


def test_cli_onnx_on_a_supernet_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["export", "autoformer_supernet", "--model-args", json.dumps(dict(
        space=dict(embed_dim=[128], depth=[2], num_heads=[2], mlp_ratio=[1.0]), img_size=32, patch_size=8)),
        "--random-weights", "--onnx", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "extract it first" in err and not out.exists()


@needs_onnx
def test_hub_folder_with_onnx_round_trips_through_local_dir(tmp_path, capsys):
    import onnxruntime

    out = tmp_path / "af"
    assert main(["export", "autoformer_subnet", "--model-args", json.dumps(dict(subnet=AF_SUBNET, img_size=32,
                                                                                  patch_size=8, num_classes=10)),
                 "--random-weights", "--onnx", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", ONNX_NAME, "model.safetensors"]
    card = (out / "README.md").read_text()
    assert "onnxruntime.InferenceSession(\"model.onnx\")" in card
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()  # the safetensors, as before
    session = onnxruntime.InferenceSession(str(out / ONNX_NAME), providers=["CPUExecutionProvider"])
    x = example_input(model, 2)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]),
                                   model(x), atol=1e-4, rtol=1e-4)


@needs_onnx
def test_search_exports_onnx_with_its_subnet(tmp_path, capsys):
    space = tmp_path / "space.json"
    space.write_text(json.dumps(dict(embed_dim=[128], depth=[2], num_heads=[2], mlp_ratio=[1.0, 2.0])))
    out = tmp_path / "run"
    assert main(["search", "tf-tas", "--space", str(space), "--img-size", "32", "--num-classes", "10",
                 "--params-min", "0", "--candidates", "2", "--onnx", "--no-progress", "--out", str(out)]) == 0
    assert (out / "export" / ONNX_NAME).is_file()
    assert f"export/{ONNX_NAME}" in (out / "export.sha256").read_text()
    assert main(["search", "tf-tas", "--space", str(space), "--img-size", "32", "--num-classes", "10",
                 "--params-min", "0", "--candidates", "2", "--onnx", "--no-export", "--no-progress",
                 "--out", str(tmp_path / "b")]) == 2
    assert "--onnx is part of the export" in capsys.readouterr().err
    assert not Path(tmp_path / "b").exists()
