"""Bad or awkward input a new user gives the commands: each is one clear error line with exit status 2 (or a
``ValueError`` naming the argument from the Python API), and nothing is written or changed."""
from __future__ import annotations

import json
import re
import urllib.error
from pathlib import Path

import pytest
import torch

import timm_nas  # noqa: F401
from timm_nas.cli import main

SPACE = dict(embed_dim=[64], depth=[2], num_heads=[1], mlp_ratio=[1.0])
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def where(tmp_path) -> Path:
    (tmp_path / "empty").mkdir()
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "notes.txt").write_text("hello text")
    return tmp_path


def _main(argv: list[str]) -> int:
    """The command's exit status (argparse exits with 2 on a bad option value)."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _search(kind: str, *extra: str) -> list[str]:
    return ["search", kind, "--space", "{where}/space.json", "--img-size", "32", "--num-classes", "10",
            "--params-min", "0", "--no-progress", "--out", "{where}/out", *extra]


CASES = {
    # an empty --data-dir
    "empty data, accuracy search": (_search("random", "--data-dir", "{where}/empty"),
                                     r"cannot read an image folder .* from --data-dir .*empty \(split 'train'\): "
                                     r"Found 0 images"),
    "empty data, darts": (["search", "darts", "--data-dir", "{where}/empty", "--dataset", "", "--out",
                           "{where}/out"], r"--data-dir .*empty \(split 'train'\): Found 0 images"),
    "empty data, spvit": (["search", "spvit", "--data-dir", "{where}/empty", "--out", "{where}/out",
                           "--no-pretrained"], r"--data-dir .*empty \(split 'train'\): Found 0 images"),
    "empty data, s3-space": (["search", "s3-space", "--data-dir", "{where}/empty", "--out", "{where}/out"], r"--data-dir .*empty \(split 'validation'\): Found 0 images"),
    # the default --dataset torch/cifar10 when it is not on disk
    "cifar10 not on disk": (["search", "darts", "--data-dir", "{where}/empty", "--out", "{where}/out"],
                            r"does not hold dataset 'torch/cifar10' .*add --download .*--dataset ''"),
    "missing data folder": (["search", "darts", "--data-dir", "{where}/nope", "--out", "{where}/out"],
                            r"--data-dir .*nope does not exist \(add --download"),
    # a classifier width that is no classifier
    "negative classes": (["search", "tf-tas", "--space", "{where}/space.json", "--num-classes", "-3", "--out",
                          "{where}/out"], r"argument --num-classes: expected a positive integer, got -3"),
    "zero classes": (["search", "evolution", "--space", "{where}/space.json", "--num-classes", "0", "--proxy",
                      "dss", "--out", "{where}/out"], r"argument --num-classes: expected a positive integer, got 0"),
    "zero export classes": (["search", "darts", "--data-dir", "{where}/empty", "--export-num-classes", "0",
                             "--out", "{where}/out"], r"--export-num-classes: expected a positive integer, got 0"),
    # an output that cannot be a folder
    "out under a file": (_search("tf-tas", "--candidates", "2")[:-1] + ["{where}/a-file/run"],
                         r"a-file/run"),
    # devices
    "unknown device": (_search("tf-tas", "--device", "gpu0"), r"argument --device: 'gpu0' is not a device"),
    # export
    "unknown model": (["export", "autoformer_tinyy", "--out", "{where}/out"],
                      r"unknown model 'autoformer_tinyy'; did you mean \[.*'autoformer_tiny'"),
    "random weights": (["export", "autoformer_tiny", "--out", "{where}/out"],
                       r"would be exported with randomly initialised weights: give --pretrained .*--random-weights"),
    "convert a text file": (["convert", "autoformer", "--checkpoint", "{where}/notes.txt", "--out", "{where}/out"],
                            r"cannot read .*notes.txt: it is not a PyTorch checkpoint, or it is truncated or corrupt"),
    "spvit unknown aa": (["search", "spvit", "--data-dir", "{where}/empty", "--out", "{where}/out", "--aa", "bogus",
                          "--no-pretrained"], r"--aa 'bogus' is not an auto-augment policy"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_changes_nothing(case, where, capsys):
    argv, pattern = CASES[case]
    argv = [a.replace("{where}", str(where)) for a in argv]
    before = _tree(where)
    assert _main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and re.search(pattern, last), err
    assert last.startswith("timm-nas") and (err.count("\n") == 1 or "usage:" in err)  # argparse adds its usage
    assert _tree(where) == before and not (where / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it(where, capsys):
    assert _main([a.replace("{where}", str(where)) for a in _search("tf-tas", "--device", "cuda")]) == 2
    assert "argument --device: 'cuda': CUDA is not available on this machine" in capsys.readouterr().err


def test_a_failed_download_is_one_line_naming_the_way_out(where, capsys, monkeypatch):
    import timm_nas._factory as factory

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise urllib.error.URLError("[Errno -2] Name or service not known")
        return factory.timm.create_model(name, **kw)

    monkeypatch.setattr(factory, "create_model", offline)
    out = where / "out"
    assert main(["export", "autoformer_tiny", "--pretrained", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot download the weights of autoformer_tiny (URLError" in err
    assert "pass --checkpoint FILE" in err and not out.exists()


def test_pretrained_search_takes_the_presets_released_supernet(where, capsys, monkeypatch):
    """--space tiny --pretrained loads autoformer_supernet_tiny's weights (autoformer_supernet has none)."""
    import timm_nas._factory as factory

    asked = []

    def record(name, pretrained=False, **kw):
        asked.append((name, pretrained, sorted(kw)))
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(factory, "create_model", record)
    assert main(["search", "evolution", "--space", "tiny", "--pretrained", "--proxy", "dss", "--out",
                 str(where / "out")]) == 2
    assert asked == [("autoformer_supernet_tiny", True, [])]
    with pytest.raises(ValueError, match=r"autoformer_subnet has no released weights; .*--checkpoint"):
        from timm_nas.commands._argtypes import create_model_checked

        monkeypatch.undo()
        create_model_checked("autoformer_subnet", pretrained=True)


def test_export_with_random_weights_says_so(where, capsys):
    out = where / "out"
    assert main(["export", "autoformer_tiny", "--random-weights", "--out", str(out)]) == 0
    assert "warning: exported autoformer_tiny with random weights" in capsys.readouterr().err
    assert "random initialisation" in (out / "README.md").read_text()
    assert main(["export", "autoformer_tiny", "--random-weights", "--pretrained", "--out", str(where / "b")]) == 2


def test_python_api_names_the_argument():
    import timm

    for name in ("autoformer_tiny", "darts_cifar", "s3_subnet", "nb201_cifar", "spvit_deit_tiny"):
        with pytest.raises(ValueError, match=r"num_classes must be a non-negative integer .* got -3"):
            timm.create_model(name, num_classes=-3)


def test_corrupt_checkpoint_never_suggests_unrestricted_unpickling(tmp_path):
    from timm_nas._checkpoint import load_checkpoint_file

    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(3)}, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path in (cut, tmp_path / "noise.pth"):
        if not path.exists():
            path.write_bytes(bytes(range(256)) * 4)
        with pytest.raises(ValueError) as info:
            load_checkpoint_file(path)
        assert "not a PyTorch checkpoint, or it is truncated or corrupt" in str(info.value)
        assert "weights_only=False" not in str(info.value)


def test_unregistered_architecture_of_this_version_is_not_told_to_install_it(tmp_path):
    from timm_nas import hub

    model = torch.nn.Linear(1, 1)
    folder = tmp_path / "x"
    folder.mkdir()
    from timm_nas.version import __version__

    (folder / "config.json").write_text(json.dumps({
        "architecture": "autoformer_tinny", "num_classes": 10, "pretrained_cfg": {},
        "timm_nas": {"version": __version__, "family": "autoformer", "install": "pip install 'timm-nas'"}}))
    with pytest.raises(ValueError) as info:
        hub.load(folder, pretrained=False)
    text = str(info.value)
    assert "pip install" not in text and "does not register" in text and "'autoformer_tiny'" in text
    del model


def test_s3_space_help_shows_each_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["search", "s3-space", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: )" not in text
    assert text.count("(default: cuda when available)") == 1


def test_truncated_weights_through_timm_name_the_folder(tmp_path):
    """timm.create_model('local-dir:...', pretrained=True) on a cut-short safetensors file names where it came from
    (a bad config.json is parsed by timm before any timm-nas code runs: timm_nas.hub.load names that file)."""
    import timm

    from timm_nas import hub

    good = tmp_path / "good"
    assert main(["export", "autoformer_tiny", "--random-weights", "--out", str(good)]) == 0
    cut = tmp_path / "cut"
    cut.mkdir()
    for p in good.iterdir():
        (cut / p.name).write_bytes(p.read_bytes())
    (cut / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"cannot read the weights of autoformer_tiny from .*cut: SafetensorError.*"
                                         r"truncated or corrupt"):
        timm.create_model(f"local-dir:{cut}", pretrained=True)
    (cut / "config.json").write_text("{bad")
    with pytest.raises(ValueError, match=r"config.json of .*cut is not valid JSON"):
        hub.load(cut)
