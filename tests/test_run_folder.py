"""The run folder every search writes (timm_nas.search.log.RunFolder): its rules on their own, then every kind of
search killed with SIGKILL at several points (a log line, the middle of a checkpoint write, the export) and
started again, which must end with the files of an uninterrupted run."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from timm_nas._checkpoint import load_checkpoint_file
from timm_nas.cli import main
from timm_nas.search.log import EXPORT_MANIFEST, ExportChangedError, RunFolder

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------- the rules
def _run(path: Path, args: dict[str, Any] | None = None, **kw: Any) -> RunFolder:
    folder = RunFolder(path, args or {"n": 3, "lr": 0.1}, kind="toy", log_name="log.jsonl", **kw)
    return folder


def test_identity_extension_and_refusals(tmp_path):
    f = _run(tmp_path / "r", extendable=("n",))
    assert f.check() == [] and not (tmp_path / "r").exists()  # checking writes nothing
    f.start()
    f.append({"i": 0})
    f.append({"i": 1})
    f.close()
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert {k: run[k] for k in ("format", "kind", "arguments")} == {"format": 1, "kind": "toy",
                                                                     "arguments": {"n": 3, "lr": 0.1}}
    assert "CUDA kernels are not deterministic" in run["determinism"] and run["versions"]["torch"]
    assert _run(tmp_path / "r", extendable=("n",)).check() == [{"i": 0}, {"i": 1}]
    grown = _run(tmp_path / "r", {"n": 5, "lr": 0.1}, extendable=("n",))
    assert grown.check() == [{"i": 0}, {"i": 1}] and grown.extended == {"n": (3, 5)}
    with pytest.raises(ValueError, match=r"n=3; it can be extended \(a larger value\) but not shortened to 2"):
        _run(tmp_path / "r", {"n": 2, "lr": 0.1}, extendable=("n",)).check()
    with pytest.raises(ValueError, match=r"different arguments \(lr: 0.1 -> 0.2\)"):
        _run(tmp_path / "r", {"n": 3, "lr": 0.2}, extendable=("n",)).check()
    with pytest.raises(ValueError, match="holds a toy run, not a other run"):
        RunFolder(tmp_path / "r", {"n": 3, "lr": 0.1}, kind="other").check()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="is not empty and holds no search"):
        _run(tmp_path / "mine").check()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        _run(tmp_path / "file").check()


def test_keep_drops_records_past_the_resumed_state_and_partial_lines(tmp_path):
    f = _run(tmp_path)
    f.check()
    f.start()
    for i in range(4):
        f.append({"i": i})
    f.close()
    with open(tmp_path / "log.jsonl", "ab") as h:
        h.write(b'{"i": 4, "cut')  # a kill in the middle of a line
    g = _run(tmp_path)
    assert [r["i"] for r in g.check()] == [0, 1, 2, 3]
    g.start(keep=2)  # the checkpoint holds two units: the two after it are redone
    g.append({"i": 2})
    g.close()
    assert [json.loads(x)["i"] for x in (tmp_path / "log.jsonl").read_text().splitlines()] == [0, 1, 2]


def test_start_removes_what_a_kill_left_and_nothing_else(tmp_path):
    f = _run(tmp_path)
    f.check()
    f.start()
    f.close()
    leftovers = [".checkpoint.pth.0123456789ab.tmp", ".export.partial-0123456789ab", ".export.old-0123456789ab"]
    for name in leftovers:
        (tmp_path / name).mkdir() if "partial" in name or "old" in name else (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".hidden-of-the-user").write_text("mine")
    g = _run(tmp_path)
    g.check()
    g.start()
    g.close()
    names = {p.name for p in tmp_path.iterdir()}
    assert not names & set(leftovers) and ".hidden-of-the-user" in names


def test_results_are_written_only_when_they_change_with_ordinary_permissions(tmp_path):
    f = _run(tmp_path)
    f.check()
    f.start()
    path = f.write_json("best.json", {"a": 1})
    stamp = path.stat().st_mtime_ns
    f.write_json("best.json", {"a": 1})
    assert path.stat().st_mtime_ns == stamp
    f.write_json("best.json", {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    f.save_checkpoint("c.pth", {"x": torch.ones(2)})
    f.save_tensors("w.safetensors", {"x": torch.ones(2)})
    mask = os.umask(0)
    os.umask(mask)
    for name in ("best.json", "c.pth", "w.safetensors", "run.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name
    f.close()


def _write(content: dict[str, str]):
    def write(folder: Path) -> None:
        folder.mkdir()
        for name, text in content.items():
            (folder / name).write_text(text)
    return write


def test_export_is_written_left_alone_replaced_or_refused(tmp_path):
    f = _run(tmp_path)
    f.check()
    f.start()
    assert f.export(_write({"a": "1", "b": "2"}))[1] == "written"
    assert (tmp_path / EXPORT_MANIFEST).read_text().count("  export/") == 2
    stamp = (tmp_path / "export" / "a").stat().st_mtime_ns
    assert f.export(_write({"a": "1", "b": "2"}))[1] == "unchanged"
    assert (tmp_path / "export" / "a").stat().st_mtime_ns == stamp
    (tmp_path / "export" / "mine.txt").write_text("the user's")  # an added file is kept while nothing changes
    assert f.export(_write({"a": "1", "b": "2"}))[1] == "unchanged"
    with pytest.raises(ExportChangedError, match=r"export/mine.txt.*--overwrite-export"):
        f.export(_write({"a": "new", "b": "2"}))  # a new result would remove it: refused
    assert (tmp_path / "export" / "mine.txt").is_file() and (tmp_path / "export" / "a").read_text() == "1"
    (tmp_path / "export" / "mine.txt").unlink()
    assert f.export(_write({"a": "new", "b": "2"}))[1] == "replaced"
    (tmp_path / "export" / "b").write_text("changed by the user")
    with pytest.raises(ExportChangedError, match=r"export/b"):
        f.export(_write({"a": "newer", "b": "2"}))
    with pytest.raises(ExportChangedError, match=r"export/b"):  # --overwrite does not remove it either
        _run(tmp_path, overwrite=True).check()
    forced = _run(tmp_path, replace_changed_export=True)
    forced.check()
    forced.start()
    assert forced.export(_write({"a": "newer", "b": "2"}))[1] == "replaced"
    assert (tmp_path / "export" / "b").read_text() == "2"
    f.close()
    forced.close()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


# --------------------------------------------------------------------------------------- kill and resume
KILLER = """
import os, signal, sys, fnmatch
from pathlib import Path
from timm_nas.search import log

point, pattern, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = [0]

def hit():
    seen[0] += 1
    return seen[0] == nth

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "append":  # the unit is done, its log line not yet written
    real_append = log.RunFolder.append
    def append(self, record):
        if fnmatch.fnmatch(self.path.name, pattern) and hit():
            die()
        real_append(self, record)
    log.RunFolder.append = append
elif point == "write":  # in the middle of an atomic write of a file matching the pattern
    real_write = log.atomic_write
    def atomic_write(path, write):
        if fnmatch.fnmatch(Path(path).name, pattern) and hit():
            def half(tmp):
                write(tmp)
                with open(tmp, "r+b") as f:
                    f.truncate(max(1, os.path.getsize(tmp) // 2))
                die()
            return real_write(path, half)
        return real_write(path, write)
    log.atomic_write = atomic_write
elif point == "export":  # the export half built
    real_export = log.RunFolder.export
    def export(self, write):
        def half(folder):
            write(folder)
            die()
        return real_export(self, half)
    log.RunFolder.export = export

from timm_nas.cli import main
sys.exit(main(sys.argv[4:]))
"""


def _strip(value: Any) -> Any:
    """JSON without timings."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _results(folder: Path) -> dict[str, Any]:
    """Every file of a run folder, as bytes (JSON / JSONL without timings); checkpoints as tensors."""
    out: dict[str, Any] = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.suffix == ".png":
            continue
        name = str(p.relative_to(folder))
        if p.suffix == ".json":
            out[name] = _strip(json.loads(p.read_text()))
        elif p.suffix == ".jsonl":
            out[name] = [_strip(json.loads(x)) for x in p.read_text().splitlines()]
        elif p.suffix == ".pth":
            ckpt = load_checkpoint_file(p)  # restricted unpickling (weights_only=True), as for any checkpoint
            out[name] = {k: v for k, v in ckpt.items() if k in ("model", "epoch")}
        elif p.name == EXPORT_MANIFEST or p.name == "README.md":
            continue  # the card and its hash record timings of the candidates (provenance): compared below
        else:
            out[name] = p.read_bytes()
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        if name.endswith(".pth"):
            assert a[name]["epoch"] == b[name]["epoch"], name
            for k, t in a[name]["model"].items():
                assert torch.equal(t, b[name]["model"][k]), f"{name}: {k}"
        else:
            assert a[name] == b[name], name


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 8), ("validation", 4)):
        for label in range(2):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = (torch.rand(32, 32, 3, generator=g) * 128 + 127 * label).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


SPACE = dict(embed_dim=[64, 128], depth=[2, 3], num_heads=[1, 2], mlp_ratio=[1.0, 2.0])
S3_SPACE = dict(embed_dim=[[32], [32, 64], [32, 64], [32, 64]], depth=[[1, 2], [1, 2], [1, 2], [1, 2]],
                window_size=[[2, 4], [2, 4], [1, 2], [1]], mlp_ratio=[2.0, 3.0])


def _argv(kind: str, out: Path, images: Path, tmp: Path) -> list[str]:
    space = tmp / "space.json"
    if kind in ("tf-tas", "random", "evolution"):
        space.write_text(json.dumps(SPACE))
        argv = ["search", kind, "--space", str(space), "--img-size", "32", "--num-classes", "10", "--params-min", "0",
                "--out", str(out), "--no-progress"]
        if kind == "evolution":
            return argv + ["--proxy", "synflow", "--population", "4", "--topk", "2", "--generations", "2",
                           "--mutations", "2", "--crossovers", "2"]
        return argv + ["--candidates", "6"] + (["--proxy", "snip"] if kind == "random" else [])
    if kind == "darts":
        return ["search", "darts", "--data-dir", str(images), "--dataset", "", "--out", str(out), "--epochs", "3",
                "--batch-size", "4", "--init-channels", "4", "--layers", "3", "--workers", "0", "--no-progress"]
    if kind == "spvit":
        return ["search", "spvit", "--data-dir", str(images), "--out", str(out), "--model", "spvit_search_deit",
                "--model-args", json.dumps(dict(patch_size=4, embed_dim=48, depth=2, num_heads=3)),
                "--no-pretrained", "--input-size", "32", "--batch-size", "4", "--stop-epoch", "2",
                "--epochs", "4", "--target-flops", "0.01", "--loss-lambda", "1", "--workers", "0", "--no-progress"]
    space.write_text(json.dumps(S3_SPACE))
    return ["search", "s3-space", "--space", str(space), "--img-size", "32", "--num-classes", "2", "--data-dir",
            str(images), "--train-steps", "2", "--finetune-steps", "1", "--batch-size", "4", "--workers", "0",
            "--iterations", "1", "--num-samples", "4", "--top-k", "2", "--tau", "0.01", "--search-generations", "1",
            "--search-population", "4", "--out", str(out), "--no-progress", "--no-plot"]


#: (kind, point, file pattern, n-th hit): a kill at a log line, in a checkpoint write, during the export.
KILLS = [
    ("tf-tas", "append", "run", 3), ("tf-tas", "export", "*", 1),
    ("random", "append", "run", 4),
    ("evolution", "append", "run", 6), ("evolution", "write", "best.json", 1),
    ("darts", "append", "run", 2), ("darts", "write", "checkpoint.pth", 2), ("darts", "export", "*", 1),
    ("spvit", "append", "run", 2), ("spvit", "write", "last_checkpoint.pth", 1), ("spvit", "export", "*", 1),
    ("s3-space", "append", "run", 2), ("s3-space", "write", "supernet_*", 1), ("s3-space", "append", "search", 5),
    ("s3-space", "export", "*", 1),
]
#: One case per kind of search runs in the fast suite; the rest are marked slow.
FAST = {("tf-tas", "export"), ("random", "append"), ("evolution", "write"), ("darts", "write"),
        ("spvit", "append"), ("s3-space", "write")}


@pytest.fixture(scope="module")
def references(images, tmp_path_factory) -> dict[str, Path]:
    """An uninterrupted run of every kind (computed once, on demand)."""
    cache: dict[str, Path] = {}

    class Lazy(dict):
        def __missing__(self, kind: str) -> Path:
            tmp = tmp_path_factory.mktemp(f"ref-{kind}")
            out = tmp / "run"
            assert main(_argv(kind, out, images, tmp)) == 0
            cache[kind] = out
            self[kind] = out
            return out

    return Lazy()


@pytest.mark.parametrize("kind,point,pattern,nth", [
    pytest.param(*k, marks=() if (k[0], k[1]) in FAST else pytest.mark.slow, id=f"{k[0]}-{k[1]}-{k[2]}-{k[3]}")
    for k in KILLS])
def test_a_killed_search_resumes_to_the_uninterrupted_result(kind, point, pattern, nth, images, references, tmp_path,
                                                             capsys):
    out = tmp_path / "run"
    argv = _argv(kind, out, images, tmp_path)
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent(KILLER))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    killed = subprocess.run([sys.executable, str(script), point, pattern, str(nth), *argv], env=env,
                            capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert killed.returncode == -9, f"not killed at {point} {pattern} #{nth}: rc {killed.returncode}\n" \
                                    f"{killed.stderr[-3000:]}"
    assert main(argv) == 0, capsys.readouterr().err
    reference = references[kind]
    _same(_results(reference), _results(out))
    assert not [p.name for p in out.rglob("*") if p.name.endswith(".tmp") or ".partial-" in p.name]
    # and once more: a finished run changes nothing
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert main(argv) == 0
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == before
