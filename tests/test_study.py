"""The search-quality study (bench/search_quality/study.py, its modules in digits_study/): data, statistics,
training, and the whole pipeline in its smoke preset.

The smoke test checks that every step runs and that the outputs agree with each other (report vs JSON vs the
per-architecture records vs the search logs), not what the study concludes.
"""
from __future__ import annotations

import json
import math
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn", reason="the study needs the 'study' extra (scikit-learn)")

#: The study is a script of the source tree, not part of the package: import it from there.
STUDY_DIR = Path(__file__).resolve().parents[1] / "bench" / "search_quality"
if str(STUDY_DIR) not in sys.path:
    sys.path.insert(0, str(STUDY_DIR))

from digits_study import StudyConfig, TrainBudget, derive_seed, load_digits_data, train_model  # noqa: E402
from digits_study.data import SPLITS, DigitsDataset, write_image_folder  # noqa: E402
from digits_study.stats import correlation_table, kendall_tau  # noqa: E402
from digits_study.training import seeded  # noqa: E402


# one intra-op thread: see conftest.one_thread
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_digits_data(32)


# ------------------------------------------------------------------------------------------------------ data
def test_split_is_fixed_stratified_and_disjoint(digits):
    assert digits.counts() == {"train": 1078, "val": 359, "test": 360}
    all_idx = [i for s in SPLITS for i in digits.indices[s]]
    assert sorted(all_idx) == list(range(1797))
    again = load_digits_data(16)  # another size, same split
    assert again.indices == digits.indices
    for s in SPLITS:
        share = torch.bincount(digits.targets[s], minlength=10).float() / len(digits.targets[s])
        assert share.min() > 0.08 and share.max() < 0.12, (s, share)
    x = digits.images["train"]
    assert x.shape == (1078, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0], x[:, 2])  # grey replicated


def test_bad_inputs(digits):
    with pytest.raises(ValueError, match="img_size"):
        load_digits_data(4)
    with pytest.raises(ValueError, match="allowed values"):
        DigitsDataset(digits, "validation")


def test_dataset_through_timm_create_loader_equals_tensors(digits):
    from timm.data import create_loader

    cfg = digits.data_config()
    ds = DigitsDataset(digits, "val")
    loader = create_loader(ds, input_size=cfg["input_size"], batch_size=128, is_training=False, use_prefetcher=False,
                           mean=cfg["mean"], std=cfg["std"], crop_pct=cfg["crop_pct"],
                           interpolation=cfg["interpolation"], num_workers=0, persistent_workers=False,
                           device=torch.device("cpu"))
    xs, ys = zip(*loader)
    x, y = digits.tensors("val")
    torch.testing.assert_close(torch.cat(xs), x, rtol=0, atol=1e-6)
    assert torch.equal(torch.cat(ys), y)


def test_image_folder_reads_with_timm_and_the_search_loader(tmp_path, digits):
    from timm.data import create_dataset

    from timm_nas.search import build_eval_loader

    small = load_digits_data(8)
    root = write_image_folder(tmp_path / "digits", small)
    assert json.loads((root / "digits.json").read_text())["counts"] == small.counts()
    ds = create_dataset("", root=str(root), split="val")
    assert len(ds) == 359
    assert ds.reader.class_to_idx == {str(c): c for c in range(10)}
    assert sorted(t for _, t in ds.reader.samples) == sorted(small.targets["val"].tolist())
    model = torch.nn.Flatten()  # the loader only reads the model's data config: give it an 8 px input size
    model.pretrained_cfg = {"input_size": (3, 8, 8), "mean": small.mean, "std": small.std, "crop_pct": 1.0,
                            "interpolation": "bilinear"}
    loader, desc = build_eval_loader(model, root, split="val", subset_per_class=5, workers=0)
    assert desc["images"] == 50
    assert sum(len(y) for _, y in loader) == 50


# ---------------------------------------------------------------------------------------------- statistics
def test_kendall_tau_and_bootstrap_table():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    assert kendall_tau([1, float("nan"), 3, 2], [1, 5, 3, 2]) == pytest.approx(1.0)  # NaN pairs dropped
    g = torch.Generator().manual_seed(0)
    target = torch.randn(40, generator=g).tolist()
    noisy = [t + 0.3 * float(torch.randn(1, generator=g)) for t in target]
    rows = {r["name"]: r for r in correlation_table({"params": noisy, "perfect": target, "same": noisy,
                                                     "reverse": [-t for t in target]}, target,
                                                    resamples=300, seed=1)}
    assert rows["params"]["beats_baseline"] is None
    assert rows["perfect"]["tau"] == pytest.approx(1.0) and rows["perfect"]["beats_baseline"] == "yes"
    assert rows["reverse"]["beats_baseline"] == "no"
    assert rows["same"]["delta_ci"] == [0.0, 0.0] and rows["same"]["beats_baseline"] == "unclear"
    lo, hi = rows["params"]["tau_ci"]
    assert lo <= rows["params"]["tau"] <= hi
    again = correlation_table({"params": noisy}, target, resamples=300, seed=1)[0]
    assert again["tau_ci"] == rows["params"]["tau_ci"]


# ------------------------------------------------------------------------------------------------ training
def test_seeds_and_training_are_deterministic():
    assert derive_seed(0, "train", 1) == derive_seed(0, "train", 1) != derive_seed(1, "train", 1)
    state = torch.get_rng_state()
    with seeded(5):
        a = torch.rand(3)
    with seeded(5):
        b = torch.rand(3)
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)

    small = load_digits_data(8)
    x, y = small.tensors("train")
    budget = TrainBudget(epochs=2, batch_size=128, shift=1)

    def run() -> tuple:
        with seeded(0):
            model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 10))
        r = train_model(model, (x[:256], y[:256]), budget, seed=3, eval_sets={"val": small.tensors("val")})
        return r.loss, r.accuracy, model[1].weight.detach().clone()

    l1, a1, w1 = run()
    l2, a2, w2 = run()
    assert l1 == l2 and a1 == a2 and torch.equal(w1, w2)
    assert l1[1] < l1[0]
    with pytest.raises(ValueError, match="opt"):
        TrainBudget(opt="lamb")


def test_random_genotypes_of_similar_size(monkeypatch):
    from timm_nas.search import config_key
    from timm_nas.spaces import DartsSpace
    from digits_study import darts_study

    space = DartsSpace()
    target = space.sample(0)
    found, tol = darts_study.random_genotypes_like(target, space, 3, C=4, layers=2, tolerance=0.3, seed=1)
    goal = darts_study._params(target, 4, 2)
    assert len({config_key(g) for g in found} | {config_key(target)}) == 4
    assert all(abs(darts_study._params(g, 4, 2) - goal) <= tol * goal for g in found) and tol <= 0.3
    again, _ = darts_study.random_genotypes_like(target, space, 3, C=4, layers=2, tolerance=0.3, seed=1)
    assert [g.to_dict() for g in again] == [g.to_dict() for g in found]
    # a cell cheaper than any random one: the closest draws are taken and the tolerance used is reported
    monkeypatch.setattr(darts_study, "MAX_DRAWS", 200)
    cheapest = space.smallest()
    found, tol = darts_study.random_genotypes_like(cheapest, space, 2, C=4, layers=2, tolerance=0.0, seed=1)
    assert len(found) == 2 and tol > 0.0


# ------------------------------------------------------------------------------------------------- smoke
def _row(report: str, label: str) -> list[str]:
    line = next(ln for ln in report.splitlines() if ln.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_smoke_study_end_to_end(tmp_path):
    """`study.py --smoke` (through `timm-nas study`): report, JSON and plots are produced and agree."""
    from digits_study.report import PLOTS, fmt
    from digits_study.supernet_study import best_so_far

    from timm_nas.cli import main

    out = tmp_path / "study"
    assert main(["study", "--smoke", "--out", str(out), "--seed", "3", "--quiet"]) == 0
    r = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    cfg = StudyConfig.smoke()
    assert r["preset"] == "smoke" and r["seed"] == 3
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in report
    for key in ("cpu", "usable_cpus", "torch_threads", "versions"):
        assert key in r["environment"]
    assert "torch" in report and "timm" in report and "Total wall time" in report

    # proxy study: the table is the records' Kendall tau, and the report prints it
    p = r["proxy_study"]
    assert len(p["subnets"]) == cfg.proxy.num_subnets
    target = [s["test_acc"] for s in p["subnets"]]
    for row in p["correlations"]:
        if row["name"] == "supernet_inherited":
            values = r["supernet_study"]["ranking_scores"]
        else:
            values = [math.nan if s["proxies"][row["name"]] is None else s["proxies"][row["name"]]
                      for s in p["subnets"]]
        tau = kendall_tau(values, target)
        assert (math.isnan(tau) and math.isnan(row["tau"])) or tau == pytest.approx(row["tau"])
    params_row = next(x for x in p["correlations"] if x["name"] == "params")
    assert _row(report, "params")[1] == fmt(params_row["tau"])
    assert [s["params"] for s in p["subnets"]] == [s["proxies"]["params"] for s in p["subnets"]]
    for sub in p["subnets"]:
        accs = sub["train"]["test_accs"]
        assert len(accs) == cfg.train_seeds and sub["test_acc"] == pytest.approx(sum(accs) / len(accs))
    assert p["noise"]["seeds"] == cfg.train_seeds and p["noise"]["seed_vs_seed"] is not None

    # supernet study: curves, picks and summaries agree with each other and with the search logs
    s = r["supernet_study"]
    assert len(s["runs"]) == 2 * cfg.supernet.seeds
    for run in s["runs"]:
        assert run["evaluations"] == cfg.supernet.evaluations == len(run["scores"])
        assert run["curve"] == best_so_far(run["scores"])
        assert run["pick"]["val_acc_inherited"] == max(run["scores"]) == run["curve"][-1]
        folder = out / "searches" / f"{run['strategy']}_seed{run['seed_index']}"
        logged = [json.loads(line) for line in (folder / "candidates.jsonl").read_text().splitlines()]
        assert [c["score"] for c in logged] == run["scores"]
        assert json.loads((folder / "best.json").read_text())["config"] == run["pick"]["config"]
        lo, hi = s["constraints"].get("params_min", 0), s["constraints"].get("params_max", math.inf)
        assert all(lo <= n <= hi for n in run["params"])
    for name, st in s["per_strategy"].items():
        mine = [x["pick"]["test_acc_retrained"] for x in s["runs"] if x["strategy"] == name]
        assert st["test_retrained"]["mean"] == pytest.approx(sum(mine) / len(mine))
        assert _row(report, name)[3].startswith(fmt(st["test_retrained"]["mean"], 2))

    # DARTS study: the derived genotype is the search's, and the summary is the networks'
    d = r["darts_study"]
    assert json.loads((out / "darts_search" / "genotype.json").read_text()) == d["derived"]["genotype"]
    assert d["networks"][0]["kind"] == "derived" and len(d["networks"]) == 1 + cfg.darts.random_genotypes
    accs = [n["test_acc"] for n in d["networks"]]
    assert d["summary"]["derived_rank"] == 1 + sum(a > accs[0] for a in accs[1:])
    derived_params = d["networks"][0]["params"]
    for n in d["networks"][1:]:
        assert abs(n["params"] - derived_params) <= d["size_tolerance_used"] * derived_params
    assert _row(report, "derived")[3] == fmt(accs[0], 2)

    # the ImageFolder copy of the split, and re-rendering the report from the JSON alone
    assert len(list((out / "digits" / "test").rglob("*.png"))) == 360
    (out / "report.md").unlink()
    study_main = runpy.run_path(str(STUDY_DIR / "study.py"))["main"]
    assert study_main(["--out", str(out), "--report-only", "--no-plots"]) == 0
    assert (out / "report.md").read_text() == report


def test_study_command_errors(tmp_path, capsys):
    from timm_nas.cli import main

    assert main(["study", "--out", str(tmp_path), "--report-only"]) == 2
    assert "no results.json" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["study", "--out", str(tmp_path / "file"), "--smoke"]) == 2
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse's own usage error, from the script's parser
        main(["study", "--bogus"])
    assert e.value.code == 2 and "--bogus" in capsys.readouterr().err


def test_study_script_runs_from_any_cwd(tmp_path):
    """`python bench/search_quality/study.py ...` from another folder (its help; --report-only needs no work)."""
    r = subprocess.run([sys.executable, str(STUDY_DIR / "study.py"), "--out", "x", "--report-only"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no results.json in x" in r.stderr, r.stderr


def test_study_command_without_the_script(monkeypatch, capsys):
    """An installed wheel has no bench folder: one line says where to get the script and how to run it."""
    from timm_nas.cli import main
    from timm_nas.commands import study

    monkeypatch.setattr(study, "study_script", lambda: None)
    assert main(["study", "--smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bench/search_quality/study.py --out" in err


def test_library_does_not_ship_the_study():
    import timm_nas

    assert not (Path(timm_nas.__file__).parent / "study").exists()
