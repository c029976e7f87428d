"""`timm-nas proxy-bench` (timm_nas.proxies.bench).

The accuracy tables here are SYNTHETIC: 30 NAS-Bench-201 cells drawn with a seed, with an "accuracy" that grows with
the log of the benchmark network's parameter count plus Gaussian noise. They test the machinery (correlations,
resume, sharding, report), not any proxy's quality; real tables come from the NAS-Bench-201 release.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math

import pytest
import torch

from timm_nas import cost
from timm_nas.proxies.bench import correlations, load_table, proxy_bench, rank_ensemble
from timm_nas.search.distributed import Dist
from timm_nas.spaces.nb201 import NB201Cell, NB201Space

pytestmark = pytest.mark.usefixtures("one_thread")

SPACE = NB201Space()
FAST = dict(model_args={"C": 4, "N": 1}, batch_size=8, bootstrap=100, progress=False)


def _synthetic_rows(n: int = 30, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    cells = {SPACE.sample(g) for _ in range(4 * n)}
    cells = sorted(cells, key=lambda c: c.to_string())[:n]
    noise = torch.randn(n, generator=g, dtype=torch.float64).tolist()
    return [{"arch": c.to_string(), "accuracy": 70 + 4 * math.log(cost.count_params(c)) / math.log(10) + 1.5 * e}
            for c, e in zip(cells, noise)]


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("table") / "synthetic_nb201.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["arch", "accuracy"])
        w.writeheader()
        w.writerows(_synthetic_rows())
    return path


def test_load_table_reads_csv_json_strings_and_indices(table_csv, tmp_path):
    table = load_table(table_csv, NB201Cell)
    assert len(table) == 30 and all(isinstance(c, NB201Cell) for c, _ in table.values())
    rows = _synthetic_rows()
    by_index = [{"index": SPACE.index(NB201Cell.from_string(r["arch"])), "acc": r["accuracy"]} for r in rows]
    (tmp_path / "t.json").write_text(json.dumps(by_index))
    assert load_table(tmp_path / "t.json", NB201Cell) == table
    (tmp_path / "m.json").write_text(json.dumps({r["arch"]: r["accuracy"] for r in rows}))
    assert load_table(tmp_path / "m.json", NB201Cell) == table
    (tmp_path / "bad.json").write_text(json.dumps([{"arch": "|bogus~0|", "accuracy": 1}]))
    with pytest.raises(ValueError, match=r"bad.json: row 1"):
        load_table(tmp_path / "bad.json", NB201Cell)
    (tmp_path / "twice.json").write_text(json.dumps([rows[0], rows[0]]))
    with pytest.raises(ValueError, match="listed twice"):
        load_table(tmp_path / "twice.json", NB201Cell)


def test_statistics():
    acc = [1.0, 2.0, 3.0, 4.0, 5.0]
    c = correlations([10, 20, 20, 40, 50], acc, bootstrap=50)
    assert c["kendall_tau_b"] == pytest.approx(0.9486833, abs=1e-6)  # tau-b with one tie: 9 / sqrt(9.5 * 10)
    assert c["spearman_rho"] == pytest.approx(0.9746794, abs=1e-6)
    lo, hi = c["kendall_tau_b_ci95"]
    assert -1 <= lo <= hi <= 1
    assert correlations([float("nan"), 2, 3, 4, 5], acc, bootstrap=0)["kendall_tau_b"] == pytest.approx(1.0)
    # log-rank aggregation punishes one bad rank more than the mean rank does
    scores = {"a": [1, 2, 3], "b": [3, 1, 2]}
    assert rank_ensemble(scores, "mean_rank") == [2.0, 1.5, 2.5]
    assert rank_ensemble(scores, "log_rank") == pytest.approx([math.log(1 / 3), math.log(2 / 9), math.log(2 / 3)])


def test_bench_report_resume_and_interruption(table_csv, tmp_path):
    table = load_table(table_csv, NB201Cell)
    out = tmp_path / "run"
    res = proxy_bench(SPACE, table, ["synflow", "nwot"], out, **FAST)
    assert res.num_architectures == 30
    assert set(res.correlations) == {"synflow", "nwot", "params", "macs", "ensemble"}
    assert res.correlations["params"]["kendall_tau_b"] > 0.3  # the synthetic accuracy follows params
    assert set(res.seconds_per_arch) == {"synflow", "nwot"}
    report = res.report.read_text()
    assert "| `params` |" in report and "proxy_bench.png" in report and (out / "proxy_bench.png").stat().st_size > 0
    lines = (out / "scores.rank0.jsonl").read_text().splitlines()
    assert len(lines) == 30
    # the same call scores nothing again and gives the same result
    again = proxy_bench(SPACE, table, ["synflow", "nwot"], out, **FAST)
    assert (out / "scores.rank0.jsonl").read_text().splitlines() == lines and again.correlations == res.correlations
    # an interrupted run (10 lines and half a line written) resumes to the uninterrupted result
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "run.json").write_text((out / "run.json").read_text())
    (cut / "scores.rank0.jsonl").write_text("\n".join(lines[:10]) + "\n" + lines[10][:25])
    resumed = proxy_bench(SPACE, table, ["synflow", "nwot"], cut, **FAST)
    assert resumed.correlations == res.correlations
    # another run's folder is refused
    with pytest.raises(ValueError, match="another proxy-bench run"):
        proxy_bench(SPACE, table, ["synflow"], out, **FAST)


@dataclasses.dataclass
class _FakeRank(Dist):
    """Rank ``rank`` of a group run one after the other in this process (collectives are not needed)."""

    def barrier(self) -> None:
        pass


def test_sharded_ranks_give_the_single_process_result(table_csv, tmp_path):
    table = load_table(table_csv, NB201Cell)
    single = proxy_bench(SPACE, table, ["grad_norm"], tmp_path / "one", sample=12, seed=3, **FAST)
    # the two ranks start together, so each sees the same (empty) set of scored architectures
    out, other = tmp_path / "two", tmp_path / "rank1"
    other.mkdir()
    proxy_bench(SPACE, table, ["grad_norm"], other, sample=12, seed=3, dist=_FakeRank(1, 2), **FAST)
    proxy_bench(SPACE, table, ["grad_norm"], out, sample=12, seed=3, dist=_FakeRank(0, 2), **FAST)
    (out / "scores.rank1.jsonl").write_text((other / "scores.rank1.jsonl").read_text())
    both = proxy_bench(SPACE, table, ["grad_norm"], out, sample=12, seed=3, dist=_FakeRank(0, 2), **FAST)
    sizes = [len(f.read_text().splitlines()) for f in sorted(out.glob("scores*.jsonl"))]
    assert sizes == [6, 6] and both.num_architectures == single.num_architectures == 12
    assert both.correlations == single.correlations


def test_cli(table_csv, tmp_path, capsys):
    from timm_nas.cli import main

    rc = main(["proxy-bench", "--space", "nb201", "--table", str(table_csv), "--proxies", "synflow", "--sample", "8",
               "--model-args", '{"C": 4, "N": 1}', "--batch-size", "4", "--bootstrap", "20", "--no-progress",
               "--out", str(tmp_path / "cli")])
    assert rc == 0 and "Kendall tau-b" in capsys.readouterr().out
    assert main(["proxy-bench", "--space", "nb201", "--table", str(table_csv), "--proxies", "nope",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "unknown proxy 'nope'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- search with an oracle
def _synthetic_oracle_rows() -> list[dict]:
    """A SYNTHETIC table of the whole NAS-Bench-201 space: additive per-edge operation values plus a fixed
    pseudo-random term (not the benchmark's accuracies)."""
    value = {"none": 0.0, "skip_connect": 1.0, "nor_conv_1x1": 2.0, "nor_conv_3x3": 3.0, "avg_pool_3x3": 0.5}
    return [{"index": i, "accuracy": sum(value[o] * (1 + k % 3) for k, o in enumerate(c.ops)) + (i * 7919 % 100) / 100}
            for i, c in enumerate(SPACE)]


def test_oracle_search_curves_and_regularized_evolution(tmp_path):
    from timm_nas.search import OracleScorer, RegularizedEvolution, compare_strategies, run_search

    path = tmp_path / "oracle.json"
    path.write_text(json.dumps(_synthetic_oracle_rows()))
    oracle = OracleScorer(path, NB201Cell)
    assert len(oracle.table) == 15_625 and oracle(SPACE.cell_at(3)) == _synthetic_oracle_rows()[3]["accuracy"]
    curves = compare_strategies(SPACE, oracle, ["random", "regularized_evolution"], budget=60, seeds=range(6))
    for c in curves.values():
        assert len(c.curves) == 6 and all(len(x) == 60 and x == sorted(x) for x in c.curves)
    # on this smooth synthetic landscape, evolution beats random search on average (Real et al. 2019's finding)
    assert sum(curves["regularized_evolution"].final) > sum(curves["random"].final)
    again = compare_strategies(SPACE, oracle, ["regularized_evolution"], budget=60, seeds=range(6))
    assert again["regularized_evolution"].curves == curves["regularized_evolution"].curves  # seeded
    # a run folder resumes to the same result; candidates are distinct
    search = RegularizedEvolution(SPACE, num_candidates=30, population=10, sample_size=3, seed=1)
    first = run_search(search, oracle, out=tmp_path / "rea", plot=False)
    assert len({c.config for c in first.candidates}) == 30
    resumed = run_search(search, oracle, out=tmp_path / "rea", plot=False)
    assert resumed.scored == 0 and [c.config for c in resumed.candidates] == [c.config for c in first.candidates]


def test_prefilter_and_cli(table_csv, tmp_path, capsys):
    from timm_nas.cli import main
    from timm_nas.search import OracleScorer, compare_strategies, proxy_prefilter

    oracle = OracleScorer({k: v for k, v in load_table(table_csv, NB201Cell).items()}, missing="nan")
    pre = proxy_prefilter("nb201", "params", model_args={"C": 4, "N": 1})
    curves = compare_strategies(SPACE, oracle, ["random", "regularized_evolution"], budget=12, seeds=[0],
                                prefilter=pre, prefilter_pool=3)
    assert all(len(c.curves[0]) == 12 for c in curves.values())
    path = tmp_path / "oracle.json"
    path.write_text(json.dumps(_synthetic_oracle_rows()))
    rc = main(["oracle-search", "--space", "nb201", "--oracle", str(path), "--budget", "20", "--seeds", "0,1",
               "--prefilter", "params", "--prefilter-pool", "2", "--model-args", '{"C": 4, "N": 1}',
               "--out", str(tmp_path / "cli")])
    assert rc == 0 and "| regularized_evolution |" in capsys.readouterr().out
    data = json.loads((tmp_path / "cli" / "curves.json").read_text())
    # with a prefilter, the strategies that take one
    assert set(data["strategies"]) == {"random", "regularized_evolution"} and data["oracle_best"] > 0


# --------------------------------------------------------------------- `timm-nas search ... --oracle` (no supernet)
def test_search_commands_take_an_oracle_over_a_family_space(tmp_path, capsys):
    """`search regularized-evolution | random | evolution --space nb201 --oracle TABLE`: the same candidates as the
    library's strategies with an OracleScorer, a run folder that a second run leaves unchanged, and an export of the
    benchmark network of the best cell that timm loads back."""
    import timm

    from timm_nas.cli import main
    from timm_nas.search import (EvolutionSearch, OracleScorer, RandomSearch, RegularizedEvolution, proxy_prefilter,
                                 run_search)

    path = tmp_path / "oracle.json"
    path.write_text(json.dumps(_synthetic_oracle_rows()))
    oracle = OracleScorer(path, NB201Cell)
    small = ["--model-args", '{"C": 4, "N": 1}', "--no-progress"]

    out = tmp_path / "rea"
    assert main(["search", "regularized-evolution", "--space", "nb201", "--oracle", str(path), "--candidates", "30",
                 "--out", str(out), *small]) == 0
    expected = run_search(RegularizedEvolution(SPACE, num_candidates=30, seed=0), oracle)
    rows = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert [r["score"] for r in rows] == [c.score for c in expected.candidates]
    best = json.loads((out / "best.json").read_text())
    assert best["score"] == expected.best.score
    model = timm.create_model(f"local-dir:{out / 'export'}", pretrained=True)
    assert model.genotype.to_string() == expected.best.config.to_string()
    card = (out / "export" / "README.md").read_text()
    assert "random initialisation, to be trained before use" in card
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["search", "regularized-evolution", "--space", "nb201", "--oracle", str(path), "--candidates", "30",
                 "--out", str(out), *small]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    # random search, a proxy choosing what the oracle is asked (the best of 3 draws by parameter count)
    assert main(["search", "random", "--space", "nb201", "--oracle", str(path), "--prefilter", "params",
                 "--prefilter-pool", "3", "--candidates", "8", "--out", str(tmp_path / "rnd"), "--no-export",
                 *small]) == 0
    pre = proxy_prefilter("nb201", "params", model_args={"C": 4, "N": 1})
    expected = run_search(RandomSearch(SPACE, num_candidates=8, prefilter=pre, prefilter_pool=3), oracle)
    rows = [json.loads(line) for line in (tmp_path / "rnd" / "candidates.jsonl").read_text().splitlines()]
    assert [r["score"] for r in rows] == [c.score for c in expected.candidates]
    plain = run_search(RandomSearch(SPACE, num_candidates=8), oracle)
    assert sum(c.params for c in expected.candidates) > sum(c.params for c in plain.candidates)

    # AutoFormer's evolution over the same space
    assert main(["search", "evolution", "--space", "nb201", "--oracle", str(path), "--population", "6",
                 "--topk", "2", "--generations", "2", "--mutations", "3", "--crossovers", "3",
                 "--out", str(tmp_path / "evo"), "--no-export", *small]) == 0
    expected = run_search(EvolutionSearch(SPACE, population=6, topk=2, generations=2, mutations=3, crossovers=3),
                          oracle)
    rows = [json.loads(line) for line in (tmp_path / "evo" / "candidates.jsonl").read_text().splitlines()]
    assert [r["score"] for r in rows] == [c.score for c in expected.candidates] and len(rows) == 18


def test_search_with_a_proxy_over_a_family_space(tmp_path):
    """`--space nb201 --proxy NAME` scores each cell's own (seeded) benchmark network."""
    from timm_nas.cli import main
    from timm_nas.search import proxy_prefilter

    out = tmp_path / "nwot"
    assert main(["search", "random", "--space", "nb201", "--proxy", "nwot", "--proxy-batch-size", "8",
                 "--candidates", "3", "--model-args", '{"C": 4, "N": 1}', "--no-progress", "--no-export",
                 "--params-max", "0.02", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    score = proxy_prefilter("nb201", "nwot", model_args={"C": 4, "N": 1}, batch_size=8)
    assert [r["score"] for r in rows] == [score(NB201Cell.resolve(r["config"])) for r in rows]
    assert all(r["params"] <= 20_000 for r in rows)


@pytest.mark.parametrize("argv, message", [
    (["random", "--space", "nb201", "--proxy", "nwot", "--oracle", "T"], "give one scorer, not --proxy and --oracle"),
    (["random", "--space", "nb201", "--data-dir", "."], "no supernet to inherit weights from"),
    (["tf-tas", "--space", "nb201"], "TF-TAS searches a supernet's space"),
    (["random", "--space", "nb201", "--oracle", "missing.csv"], "--oracle table not found: missing.csv"),
    (["random", "--space", "nb201", "--proxy", "nwot", "--checkpoint", "x.pth"], "--checkpoint do not apply"),
    (["random", "--space", "nb201", "--proxy", "nwot", "--prefilter", "nope"], "unknown proxy 'nope'"),
    (["random", "--space", "nb201", "--proxy", "nwot", "--model-args", '{"genotype": 3}'], "'genotype', the arch"),
    (["regularized-evolution", "--space", "tiny", "--proxy", "params"], "--m-prob / --s-prob"),
    (["random", "--space", "nb201"], "needs a scorer: --data-dir DIR"),
])
def test_search_scorer_errors_are_one_line(argv, message, tmp_path, capsys):
    from timm_nas.cli import main

    assert main(["search", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_compare_strategies_with_autoformer_evolution_and_the_curve_plot(tmp_path, capsys):
    from timm_nas.cli import main
    from timm_nas.search import OracleScorer, compare_strategies, proxy_prefilter

    path = tmp_path / "oracle.json"
    path.write_text(json.dumps(_synthetic_oracle_rows()))
    oracle = OracleScorer(path, NB201Cell)
    curves = compare_strategies(SPACE, oracle, ["evolution"], budget=25, seeds=[0, 1])
    assert all(len(c) == 25 and c == sorted(c) for c in curves["evolution"].curves)
    assert len(curves["evolution"].std) == 25 and curves["evolution"].std[-1] >= 0
    with pytest.raises(ValueError, match="evolution has no prefilter"):
        compare_strategies(SPACE, oracle, ["evolution"], budget=25, seeds=[0],
                           prefilter=proxy_prefilter("nb201", "params"))
    with pytest.raises(ValueError, match="unknown strategy 'rea'; known strategies"):
        compare_strategies(SPACE, oracle, ["rea"], budget=5, seeds=[0])
    assert main(["oracle-search", "--space", "nb201", "--oracle", str(path), "--budget", "12", "--seeds", "0,1",
                 "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    data = json.loads((tmp_path / "o" / "curves.json").read_text())
    assert set(data["strategies"]) == {"random", "regularized_evolution", "evolution"}
    assert (tmp_path / "o" / "curves.png").stat().st_size > 0 and "| evolution |" in printed
    assert main(["oracle-search", "--space", "nb201", "--oracle", str(path), "--seeds", ",", "--out",
                 str(tmp_path / "o2")]) == 2
    assert "--seeds ',' names no seed" in capsys.readouterr().err
