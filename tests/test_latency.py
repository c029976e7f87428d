"""Latency tables: build on this machine (tiny supernet, few repeats), predict, refuse other settings, constrain a
search. The predictor's accuracy on real spaces is measured by ``timm-nas latency check``, not asserted here
(timings on a shared CI machine are noise)."""
from __future__ import annotations

import json
import time

import pytest
import torch

from timm_nas import cli, cost

pytestmark = pytest.mark.usefixtures("one_thread")

SPACE = {"embed_dim": [32, 48], "depth": [1, 2], "num_heads": [1, 2], "mlp_ratio": [1.0, 2.0], "head_dim": 16}
BUILD = ["latency", "build", "--model", "autoformer_supernet", "--model-args",
         json.dumps({"space": SPACE, "patch_size": 8}), "--img-size", "32", "--repeats", "2", "--warmup", "1",
         "--calibration", "2", "--no-progress"]
SEARCH = ["search", "random", "--space", json.dumps(SPACE), "--model-args", '{"patch_size": 8}', "--img-size", "32",
          "--candidates", "4", "--proxy", "params"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("lat") / "lat.json"
    assert cli.main(BUILD + ["--out", str(path)]) == 0
    return path


def test_table_records_its_setting_and_predicts_fast(table):
    data = json.loads(table.read_text())
    assert data["setting"]["batch_size"] == 1 and data["setting"]["threads"] == 1
    t = cost.LatencyTable.load(table)
    from timm_nas.spaces import AutoFormerSpace

    cfgs = [AutoFormerSpace.from_dict(SPACE).sample(torch.Generator().manual_seed(i)) for i in range(2000)]
    start = time.perf_counter()
    values = [cost.predict_latency(c, t) for c in cfgs]
    rate = len(cfgs) / (time.perf_counter() - start)
    assert all(v > 0 for v in values) and rate >= 10_000, f"{rate:.0f} configs/s"
    assert cost.predict_latency(cfgs[0], table) == values[0]  # a path works as well as a loaded table


def test_calibration_never_predicts_a_non_positive_latency():
    """Two noisy calibration points can fit a negative intercept; the fit then goes through the origin."""
    t = cost.LatencyTable({"family": "autoformer"}, {}, calibration={"points": [{"parts_ms": 1.0, "measured_ms": 2.0},
                                                          {"parts_ms": 2.0, "measured_ms": 6.0}]})
    t.fit_calibration()
    assert t.calibration["intercept"] == 0.0 and t.calibration["scale"] == pytest.approx(14 / 5)


def test_rebuild_resumes_without_measuring_again(table, capsys):
    before = table.read_text()
    assert cli.main(BUILD + ["--out", str(table)]) == 0
    assert json.loads(table.read_text())["entries"] == json.loads(before)["entries"]


def test_bad_tables_are_one_line_errors(table, tmp_path, capsys):
    assert cli.main(SEARCH + ["--latency-table", str(tmp_path / "missing.json"), "--latency-max", "1",
                              "--out", str(tmp_path / "a")]) == 2
    (tmp_path / "corrupt.json").write_text("{not json")
    assert cli.main(SEARCH + ["--latency-table", str(tmp_path / "corrupt.json"), "--latency-max", "1",
                              "--out", str(tmp_path / "b")]) == 2
    # a table of another model (patch size 8 vs 16)
    other = ["search", "random", "--space", json.dumps(SPACE), "--img-size", "32", "--candidates", "4", "--proxy",
             "params", "--latency-table", str(table), "--latency-max", "100", "--out", str(tmp_path / "c")]
    assert cli.main(other) == 2
    assert "patch_size=8, this search has 16" in capsys.readouterr().err
    # a limit no candidate meets
    assert cli.main(SEARCH + ["--latency-table", str(table), "--latency-max", "0.00001",
                              "--out", str(tmp_path / "d")]) == 2
    assert "empty constraint window" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_search_records_the_predicted_latency_under_its_limit(table, tmp_path):
    t = cost.LatencyTable.load(table)
    assert cli.main(SEARCH + ["--latency-table", str(table), "--latency-max", "100", "--out",
                              str(tmp_path / "run")]) == 0
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["latency_ms"] <= 100 and best["latency_device"]
    from timm_nas.spaces import AutoFormerSubnet

    assert best["latency_ms"] == pytest.approx(t.predict(AutoFormerSubnet.from_dict(best["config"])))


def test_candidates_and_pareto_fronts_carry_the_predicted_latency(table, tmp_path):
    from timm_nas.spaces import AutoFormerSubnet

    t = cost.LatencyTable.load(table)
    out = tmp_path / "run"
    assert cli.main(SEARCH + ["--latency-table", str(table), "--latency-max", "100", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert all(r["latency_ms"] == t.predict(AutoFormerSubnet.from_dict(r["config"])) <= 100 for r in rows)
    fronts = json.loads((out / "pareto.json").read_text())
    assert set(fronts) == {"params", "macs", "latency"}
    lat = [r["latency_ms"] for r in fronts["latency"]]
    assert lat == sorted(lat) and [r["score"] for r in fronts["latency"]] == sorted(r["score"] for r in fronts["latency"])
    assert (out / "pareto.png").stat().st_size > 0
    # without a table, records and fronts are as before (no latency key): older run folders still resume
    assert cli.main(SEARCH + ["--out", str(tmp_path / "plain")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "plain" / "candidates.jsonl").read_text().splitlines()]
    assert not any("latency_ms" in r for r in rows)
    assert set(json.loads((tmp_path / "plain" / "pareto.json").read_text())) == {"params", "macs"}


def test_check_reports_and_plots(table, tmp_path, capsys):
    out = tmp_path / "check"
    assert cli.main(["latency", "check", "--table", str(table), "--samples", "4", "--repeats", "2", "--warmup", "1",
                     "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "check.json").read_text())
    assert data["samples"] == 4 and len(data["subnets"]) == 4
    assert all(len(s["measured_ms"]) == 2 and min(s["measured_ms"]) > 0 for s in data["subnets"])
    assert -1 <= data["predictor"]["kendall_tau"] <= 1 and data["predictor"]["mape"] >= 0
    assert "predictor:   Kendall tau" in printed and "test-retest" in printed
    assert (out / "check.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # another batch size than the table's is refused, naming both, and nothing is written
    assert cli.main(["latency", "check", "--table", str(table), "--batch-size", "8", "--no-progress",
                     "--out", str(tmp_path / "other")]) == 2
    assert "batch_size" in capsys.readouterr().err and not (tmp_path / "other").exists()


@pytest.fixture(scope="module")
def darts_table(tmp_path_factory):
    """A table of the DARTS CIFAR evaluation network (C=36, 20 cells, 32 px) that ``darts_search`` extracts."""
    path = tmp_path_factory.mktemp("lat") / "darts.json"
    assert cli.main(["latency", "build", "--model", "darts_search", "--repeats", "1", "--warmup", "0",
                     "--calibration", "3", "--no-progress", "--out", str(path)]) == 0
    return path


def test_darts_genotype_networks_have_a_latency_table(darts_table, tmp_path, capsys):
    from timm_nas.spaces.darts import DartsSpace

    t = cost.LatencyTable.load(darts_table)
    s = t.setting
    assert s["family"] == "darts" and s["img_size"] == 32 and len(s["cells"]) == 20
    assert [c[3] for c in s["cells"]].count(True) == 2  # the two reduction cells
    # one entry per operation and (channels, size, stride) an operation of some cell runs at: 5 sites x 8 primitives
    assert len(t.entries) == 5 * len(DartsSpace().primitives)
    space = DartsSpace()
    lo, hi = t.bounds(space)
    g = torch.Generator().manual_seed(0)
    values = [t.predict(space.sample(g)) for _ in range(200)]
    assert lo <= min(values) and max(values) <= hi and lo > 0
    # a search over the family's own networks, constrained by latency
    limit = sorted(values)[100]
    out = tmp_path / "run"
    assert cli.main(["search", "random", "--space", "darts", "--proxy", "params", "--candidates", "5",
                     "--latency-table", str(darts_table), "--latency-max", f"{limit}", "--no-export",
                     "--no-progress", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(r["latency_ms"] <= limit for r in rows)
    # another network shape than the table's is refused, naming the argument
    assert cli.main(["search", "random", "--space", "darts", "--proxy", "params", "--model-args", '{"C": 16}',
                     "--latency-table", str(darts_table), "--latency-max", "100", "--no-progress",
                     "--out", str(tmp_path / "other")]) == 2
    assert "measured with C=36, this search has 16" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
