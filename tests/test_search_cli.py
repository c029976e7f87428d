"""`timm-nas search tf-tas|evolution|random` and `timm-nas demo`: outputs, export, bad input, and a real
kill-and-resume of a search subprocess."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch

from timm_nas.cli import main

SPACE = dict(embed_dim=[64, 128], depth=[2, 3, 4], num_heads=[1, 2], mlp_ratio=[1.0, 2.0, 3.0])
REPO = Path(__file__).resolve().parents[1]


# one intra-op thread: see conftest.one_thread
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(SPACE))
    return str(path)


def base_args(space_file: str, out, strategy: str = "tf-tas", *extra: str) -> list[str]:
    return ["search", strategy, "--space", space_file, "--img-size", "32", "--num-classes", "10",
            "--params-min", "0", "--out", str(out), "--no-progress", *extra]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tf_tas_cli_writes_results_and_a_loadable_export(tmp_path, space_file, capsys):
    out = tmp_path / "run"
    assert main(base_args(space_file, out, "tf-tas", "--candidates", "5", "--top", "3")) == 0
    printed = capsys.readouterr().out
    assert "5 candidates (5 scored now, 0 from the log" in printed
    assert "rank" in printed and "score" in printed and "params(M)" in printed
    names = {p.name for p in out.iterdir()}
    assert names == {"run.json", "candidates.jsonl", "best.json", "pareto.json", "pareto.png", "export", "export.sha256"}
    best = json.loads((out / "best.json").read_text())
    lines = [json.loads(x) for x in (out / "candidates.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and best["score"] == max(x["score"] for x in lines)
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto["params"][0]["params"] == min(x["params"] for x in lines)

    # the export rebuilds the searched subnet with the supernet's (seeded random) weights
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        supernet = timm.create_model("autoformer_supernet", space=SPACE, img_size=32, num_classes=10).eval()
    model = timm.create_model(f"local-dir:{out / 'export'}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), supernet.use_subnet(best["config"]):
        torch.testing.assert_close(model(x), supernet(x))
    card = (out / "export" / "README.md").read_text()
    assert "TF-TAS" in card

    # the same command again: nothing re-scored, no file changed, the user's files in export/ kept
    (out / "export" / "notes.txt").write_text("mine")
    before = tree(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(base_args(space_file, out, "tf-tas", "--candidates", "5", "--top", "3")) == 0
    printed = capsys.readouterr().out
    assert "holds this finished search (5 candidates); nothing to do" in printed
    assert "already holds this export: left unchanged" in printed
    assert tree(out) == before and {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps


def test_rerun_never_replaces_files_the_user_changed_in_export(tmp_path, space_file, capsys):
    out = tmp_path / "run"
    assert main(base_args(space_file, out, "tf-tas", "--candidates", "4")) == 0
    (out / "export" / "model.safetensors").write_bytes(b"fine-tuned weights")
    before = tree(out)
    # extending the search finds a new best, which would replace export/: refused, the user's file kept
    assert main(base_args(space_file, out, "tf-tas", "--candidates", "9")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "export/model.safetensors" in err and "--overwrite-export" in err
    assert tree(out / "export") == {k[len("export/"):]: v for k, v in before.items() if k.startswith("export/")}
    # --overwrite discards the run, but not the user's file either
    assert main(base_args(space_file, out, "tf-tas", "--candidates", "4", "--overwrite")) == 2
    assert "export/model.safetensors" in capsys.readouterr().err
    assert (out / "export" / "model.safetensors").read_bytes() == b"fine-tuned weights"
    # asked for explicitly, the export is replaced
    assert main(base_args(space_file, out, "tf-tas", "--candidates", "9", "--overwrite-export")) == 0
    assert "replacing the earlier export" in capsys.readouterr().out
    assert (out / "export" / "model.safetensors").read_bytes() != b"fine-tuned weights"


def test_random_cli_with_a_proxy_and_list_proxies(tmp_path, space_file, capsys):
    assert main(["search", "proxies"]) == 0
    assert "synflow" in capsys.readouterr().out
    out = tmp_path / "rnd"
    assert main(base_args(space_file, out, "random", "--proxy", "synflow", "--candidates", "4", "--no-export")) == 0
    assert not (out / "export").exists()
    run = json.loads((out / "run.json").read_text())["arguments"]
    assert run["strategy"] == "random" and run["scorer"]["proxy"] == "synflow"


def _image_folder(root: Path, classes: int = 2, per_class: int = 3) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for c in range(classes):
        d = root / "train" / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 255, (32, 32, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(d / f"{i}.png")
    return root


def test_evolution_cli_with_accuracy_on_a_class_subset(tmp_path, space_file, capsys):
    data = _image_folder(tmp_path / "data")
    out = tmp_path / "evo"
    argv = base_args(space_file, out, "evolution", "--data-dir", str(data), "--subset-per-class", "2",
                     "--population", "4", "--topk", "2", "--generations", "1", "--mutations", "1",
                     "--crossovers", "1", "--workers", "0", "--batch-size", "3", "--no-export")
    argv[argv.index("--num-classes") + 1] = "2"
    assert main(argv) == 0
    lines = [json.loads(x) for x in (out / "candidates.jsonl").read_text().splitlines()]
    assert len(lines) == 8
    assert all(x["score"] in (0.0, 25.0, 50.0, 75.0, 100.0) for x in lines)  # top-1 % of 4 images
    scorer = json.loads((out / "run.json").read_text())["arguments"]["scorer"]
    assert scorer["kind"] == "top1" and scorer["images"] == 4 and scorer["subset_per_class"] == 2
    assert "evolution: 8 candidates" in capsys.readouterr().out


@pytest.mark.parametrize("strategy, extra, message", [
    ("tf-tas", ["--space", "huge"], "unknown AutoFormer space preset 'huge'"),
    ("tf-tas", ["--proxy", "no_such_proxy"], "unknown proxy 'no_such_proxy'"),
    ("tf-tas", ["--params-min", "30", "--params-max", "20"], "empty params window"),
    ("tf-tas", ["--params-max", "0.001"], "empty constraint window"),
    ("tf-tas", ["--model", "no_such_supernet"], "unknown model"),
    ("tf-tas", ["--model", "resnet18"], "resnet18"),
    ("tf-tas", ["--checkpoint", "/nonexistent/w.pth"], "checkpoint file not found"),
    ("evolution", ["--data-dir", "/nonexistent/imagenet"], "data folder not found"),
    ("random", [], "needs a scorer"),
    ("tf-tas", ["--model-args", '{"img_size": 64}'], "--model-args sets ['img_size']: use the options"),
    ("tf-tas", ["--model-args", "[1]"], "--model-args must be a JSON object of model arguments"),
    ("tf-tas", ["--model-args", "no_such.json"], "--model-args: 'no_such.json' is neither a JSON object nor an"),
    ("tf-tas", ["--model-args", '{"patch_sise": 8}'], "patch_sise"),
    ("tf-tas", ["--space", '{"embed_dim": [64],'], "--space is not valid JSON"),
    ("tf-tas", ["--space", "/nonexistent/space.json"], "--space file not found"),
])
def test_bad_input_is_one_error_line(tmp_path, space_file, capsys, strategy, extra, message):
    out = tmp_path / "out"
    argv = base_args(space_file, out, strategy) + extra
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("timm-nas: error: ") and message in err[0], err
    assert not out.exists()


def test_resume_folder_with_other_arguments_is_refused_and_untouched(tmp_path, space_file, capsys):
    out = tmp_path / "run"
    assert main(base_args(space_file, out, "random", "--proxy", "params", "--candidates", "3")) == 0
    before = tree(out)
    capsys.readouterr()
    assert main(base_args(space_file, out, "random", "--proxy", "params", "--candidates", "3", "--seed", "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different arguments" in err[0] and "seed" in err[0]
    assert tree(out) == before


def _records(folder: Path) -> list[dict]:
    out = []
    for line in (folder / "candidates.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec.pop("seconds")
        out.append(rec)
    return out


def test_killed_search_subprocess_resumes_to_the_same_result(tmp_path, space_file):
    """A real `timm-nas search` process killed with SIGKILL mid-run, then started again with the same arguments,
    re-scores nothing and ends with the uninterrupted run's log and best candidate."""
    n = 120
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "timm_nas", "search", "tf-tas", "--space", space_file, "--img-size", "64",
                "--num-classes", "10", "--params-min", "0", "--candidates", str(n), "--out", str(out),
                "--no-progress", "--no-export"]

    full, part = tmp_path / "full", tmp_path / "part"
    subprocess.run(cmd(full), check=True, env=env, capture_output=True, cwd=tmp_path)
    proc = subprocess.Popen(cmd(part), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    log = part / "candidates.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and log.read_bytes().count(b"\n") >= 10:
            break
        time.sleep(0.005)
    if proc.poll() is not None:
        pytest.fail(f"the search ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    logged = log.read_bytes().count(b"\n")
    assert 10 <= logged < n and not (part / "best.json").exists()

    done = subprocess.run(cmd(part), check=True, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert f"{n} candidates ({n - logged} scored now, {logged} from the log" in done.stdout
    assert _records(part) == _records(full)
    best = lambda f: {k: v for k, v in json.loads((f / "best.json").read_text()).items() if k != "seconds"}  # noqa
    assert best(part) == best(full)


@pytest.mark.slow
def test_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--candidates", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "local-dir:" in printed and "(OK, max |diff|" in printed
    assert (out / "export" / "model.safetensors").is_file()
    # run again: the scored candidates are reused
    assert main(["demo", "--out", str(out), "--candidates", "3", "--no-progress"]) == 0
    assert "(0 scored now, 3 from the log" in capsys.readouterr().out


def test_push_to_hub_pushes_the_export(tmp_path, space_file, capsys, monkeypatch):
    """``--push-to-hub`` uploads ``export/`` with the real huggingface_hub client to the fake Hub of
    tests/hub_server.py; a refused push is one error line."""
    from huggingface_hub import constants

    from hub_server import FakeHub

    token = "hf_fake_" + "s" * 24
    with FakeHub(token=token) as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent_harnesses.json"))
        monkeypatch.setenv("HF_TOKEN", token)
        out = tmp_path / "run"
        argv = base_args(space_file, out, "tf-tas", "--candidates", "3", "--push-to-hub", "user/searched")
        assert main(argv) == 0
        assert f"pushed to {server.endpoint}/user/searched" in capsys.readouterr().out
        files = server.repos["user/searched"].files
        assert {"config.json", "model.safetensors", "README.md"} <= set(files)
        assert json.loads(files["config.json"])["architecture"] == "autoformer_subnet"
        assert b"TF-TAS" in files["README.md"]
        monkeypatch.setenv("HF_TOKEN", "hf_wrong_" + "y" * 20)
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("timm-nas: error: push of") and "hf_wrong_" not in err[0]


@pytest.mark.parametrize("argv, message", [
    (["search", "random", "--candidates", "0"], "argument --candidates: expected a positive integer, got 0"),
    (["search", "random", "--candidates", "x"], "argument --candidates: expected a positive integer, got 'x'"),
    (["search", "s3-space", "--workers", "-1"], "argument --workers: expected a non-negative integer, got -1"),
])
def test_bad_numbers_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_model_args_reach_the_supernet_the_export_and_the_resume_identity(tmp_path, space_file, capsys):
    out = tmp_path / "run"
    argv = base_args(space_file, out, "random", "--proxy", "params", "--candidates", "3")
    assert main(argv + ["--model-args", '{"patch_size": 8}']) == 0
    config = json.loads((out / "export" / "config.json").read_text())
    assert config["model_args"]["patch_size"] == 8 and config["model_args"]["img_size"] in (32, [32, 32])
    model = timm.create_model(f"local-dir:{out / 'export'}", pretrained=True)
    assert model.patch_embed.grid_size == (4, 4)
    assert json.loads((out / "run.json").read_text())["arguments"]["model_args"]["patch_size"] == 8
    capsys.readouterr()
    assert main(argv) == 2  # patch 16 is another search: the folder is not resumed
    err = capsys.readouterr().err
    assert "different arguments" in err and "patch_size" in err


@pytest.mark.parametrize("space, message", [
    ('{"embed_dim": [[96]],', "--space is not valid JSON"),
    ("/nonexistent/s3.json", "--space file not found"),
    ("huge", "unknown S3 space preset 'huge'"),
])
def test_s3_space_command_reads_space_like_search(tmp_path, space, message, capsys):
    argv = ["search", "s3-space", "--space", space, "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
