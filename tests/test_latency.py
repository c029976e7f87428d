"""Latency tables: build on this machine (tiny supernet, few repeats), predict, refuse other settings, constrain a
search. The predictor's accuracy on real spaces is measured by ``timm-nas latency check``, not asserted here
(timings on a shared CI machine are noise)."""
from __future__ import annotations

import json
import statistics
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


def test_interleaved_rounds_alternate_their_order():
    from timm_nas.cost.latency import time_interleaved

    visits = []
    subjects = [lambda i=i: (lambda: visits.append(i)) for i in range(3)]
    rounds_seen = []
    out = time_interleaved(subjects, rounds=4, warmup=0, repeats=1, on_round=rounds_seen.append)
    assert visits == [0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0] and rounds_seen == [0, 1, 2, 3]
    assert [len(v) for v in out] == [4, 4, 4]
    # a resumed measurement starts at its next round, in that round's order
    visits.clear()
    time_interleaved(subjects, rounds=4, warmup=0, repeats=1, start=3)
    assert visits == [2, 1, 0]


def test_an_interrupted_build_resumes_at_its_next_round(tmp_path, monkeypatch, capsys):
    import timm_nas.cost.latency as latency

    path = tmp_path / "lat.json"
    real, calls = latency.time_paired, []

    def interrupted(fn, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2 * 12:  # 10 parts and 2 calibration subnets a round: stop in the third round
            raise KeyboardInterrupt
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(latency, "time_paired", interrupted)
    assert cli.main(BUILD + ["--rounds", "4", "--out", str(path)]) == 130
    monkeypatch.setattr(latency, "time_paired", real)
    partial = json.loads(path.read_text())
    assert partial["rounds_done"] == 2 and all(len(v) == 2 for v in partial["samples"].values())
    assert len(partial["reference_ms"]) == 2 and partial["setting"]["measure"]["reference"]["depth"] == 1
    assert len(partial["samples"]) == 10 and set(partial["samples"]) == set(partial["entries"])
    # an unfinished table is refused by a search and by the check, nothing written
    assert cli.main(SEARCH + ["--latency-table", str(path), "--latency-max", "100", "--out", str(tmp_path / "s")]) == 2
    assert "unfinished (2 of 4 rounds measured)" in capsys.readouterr().err and not (tmp_path / "s").exists()
    # other options than the table's are refused; the same command finishes it, keeping the measured rounds
    assert cli.main(BUILD + ["--rounds", "4", "--repeats", "3", "--out", str(path)]) == 2
    assert "repeats=2" in capsys.readouterr().err
    assert cli.main(BUILD + ["--rounds", "4", "--out", str(path)]) == 0
    done = json.loads(path.read_text())
    assert done["rounds_done"] == 4
    assert done["reference_ms"][:2] == partial["reference_ms"] and len(done["reference_ms"]) == 4
    for key, values in done["samples"].items():
        assert values[:2] == partial["samples"][key] and len(values) == 4
        assert done["entries"][key] == latency.paired_ms(values, done["reference_ms"])
    points = done["calibration"]["points"]
    assert [len(p["rounds_ratio"]) for p in points] == [4, 4]
    assert all(p["measured_ms"] == latency.paired_ms(p["rounds_ratio"], done["reference_ms"]) for p in points)
    # the smallest subnet is the reference and the first calibration point: its ratio to itself is about 1
    assert 0.5 < statistics.median(points[0]["rounds_ratio"]) < 2
    t = cost.LatencyTable.load(path)
    assert all(p["parts_ms"] == t.parts_ms(p["config"]) for p in points)
    # more rounds refine a finished table
    assert cli.main(BUILD + ["--rounds", "5", "--out", str(path)]) == 0
    assert json.loads(path.read_text())["rounds_done"] == 5
    # measuring without the reference is another measurement: refused for this table, naming the option
    assert cli.main(BUILD + ["--rounds", "5", "--no-reference", "--out", str(path)]) == 2
    assert "measured with reference={" in capsys.readouterr().err


def test_a_build_without_reference_keeps_each_rounds_milliseconds(tmp_path):
    path = tmp_path / "lat.json"
    assert cli.main(BUILD + ["--rounds", "2", "--no-reference", "--out", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["setting"]["measure"]["reference"] is None and "reference_ms" not in data
    for key, values in data["samples"].items():
        assert data["entries"][key] == min(values)
    assert all(p["measured_ms"] == min(p["rounds_ms"]) for p in data["calibration"]["points"])


def test_paired_timing_cancels_the_speed_of_the_moment(monkeypatch):
    """A machine that runs at half speed in some visits: alone, those visits read twice as slow; against a
    reference timed in the same visit, every visit gives the same ratio, and :func:`paired_ms` scales it by the
    reference's fastest round."""
    import timm_nas.cost.latency as latency

    clock = {"slow": 1.0, "t": 0.0}
    work = {"subject": 3.0, "reference": 2.0}

    def fake_time_once(fn, device):
        return fn()

    def subject() -> float:
        return work["subject"] * clock["slow"]

    def reference() -> float:
        return work["reference"] * clock["slow"]

    visits = []

    def get_subject():
        clock["slow"] = 2.0 if len(visits) % 2 else 1.0  # every other visit runs at half speed
        visits.append(1)
        return subject

    monkeypatch.setattr(latency, "_time_once", fake_time_once)
    alone = latency.time_interleaved([get_subject], rounds=4, warmup=0, repeats=2)
    assert alone == [[3.0, 6.0, 3.0, 6.0]]
    visits.clear()
    ratios, reference_ms = latency.time_interleaved([get_subject], rounds=4, warmup=0, repeats=2,
                                                    reference=lambda: reference)
    assert ratios == [1.5] * 4 and reference_ms == [2.0, 4.0, 2.0, 4.0]
    assert latency.paired_ms(ratios, reference_ms) == 3.0


SPVIT_ARGS = dict(patch_size=4, embed_dim=48, depth=2, num_heads=3, num_classes=2)


@pytest.fixture(scope="module")
def spvit_table(tmp_path_factory):
    """A table of the pruned models of a tiny SPViT search network (32 px, 2 layers of 192 FFN units)."""
    path = tmp_path_factory.mktemp("lat") / "spvit.json"
    assert cli.main(["latency", "build", "--model", "spvit_search_deit", "--model-args", json.dumps(SPVIT_ARGS),
                     "--img-size", "32", "--rounds", "2", "--repeats", "1", "--warmup", "0", "--calibration", "3",
                     "--no-progress", "--out", str(path)]) == 0
    return path


def test_spvit_pruned_models_have_a_latency_table(spvit_table):
    import timm

    t = cost.LatencyTable.load(spvit_table)
    grid = t.setting["ffn_grid"]
    assert grid == list(range(0, 193, 12))  # 17 widths from none to all
    assert set(t.entries) == {"rest"} | {f"attn|{op}" for op in ("skip", "bconv1x1", "bconv3x3", "msa")} | \
        {f"ffn|{w}" for w in grid}
    from timm_nas.spaces import SPViTArch

    # a width between two measured ones is interpolated linearly
    a = SPViTArch(("msa", "skip"), (tuple(range(18)), ()))
    e = t.entries
    parts = e["rest"] + e["attn|msa"] + 0.5 * (e["ffn|12"] + e["ffn|24"]) + e["attn|skip"] + e["ffn|0"]
    assert t.parts_ms(a) == pytest.approx(parts)
    # the search network's differentiable latency equals the table's prediction at its decisions, with gradients
    model = timm.create_model("spvit_search_deit", img_size=32, **SPVIT_ARGS)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "thresholds" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 2)
        assert model.latency(t).item() == pytest.approx(t.predict(model.derive_arch()), rel=1e-5)
    loss = model.latency_loss(t, target_latency=t.predict(model.arch_space.smallest()) * 1.5, loss_lambda=1.0)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "thresholds" in n)


def test_spvit_search_with_a_latency_target(spvit_table, tmp_path, capsys):
    from PIL import Image

    data = tmp_path / "data"
    for c in ("a", "b"):
        (data / "train" / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (32, 32), (60 * i, 100 * (c == "a"), 7)).save(data / "train" / c / f"{i}.png")
    t = cost.LatencyTable.load(spvit_table)
    from timm_nas.spaces import SPViTSpace

    floor, full = (t.predict(f()) for f in (SPViTSpace(2, 192).smallest, SPViTSpace(2, 192).largest))
    target = (floor + full) / 2
    argv = ["search", "spvit", "--data-dir", str(data), "--model", "spvit_search_deit", "--model-args",
            json.dumps({k: v for k, v in SPVIT_ARGS.items() if k != "num_classes"}), "--val-split", "",
            "--no-pretrained", "--input-size", "32", "--batch-size", "4", "--stop-epoch", "0",
            "--max-steps-per-epoch", "2", "--loss-lambda", "1", "--workers", "0", "--mixup", "0", "--cutmix", "0",
            "--no-repeated-aug", "--no-progress", "--latency-table", str(spvit_table)]
    out = tmp_path / "run"
    assert cli.main(argv + ["--target-latency", f"{target}", "--out", str(out)]) == 0
    best = json.loads((out / "best.json").read_text())
    from timm_nas.spaces import SPViTArch

    assert best["target_latency_ms"] == target and "target_gflops" not in best and best["latency_device"]
    assert best["latency_ms"] == pytest.approx(t.predict(SPViTArch.from_dict(best["arch"])), rel=1e-5)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[0]["target_latency_ms"] == target and log[0]["latency_ms"] > 0
    assert "target_latency_ms" in (out / "export" / "README.md").read_text()
    capsys.readouterr()
    # refused, one line each, nothing written: a target no arch meets, two targets, a target without a table, a
    # table of another network
    bad = [(["--target-latency", f"{floor / 2}"], "no arch meets it"),
           (["--target-latency", "5", "--target-flops", "0.01"], "not both")]
    for extra, message in bad:
        assert cli.main(argv + extra + ["--out", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "bad").exists()
    no_table = [a for a in argv if a not in ("--latency-table", str(spvit_table))]
    assert cli.main(no_table + ["--target-latency", "5", "--out", str(tmp_path / "bad")]) == 2
    assert "target_latency needs latency_table" in capsys.readouterr().err
    i = argv.index("--model-args") + 1
    deeper = argv[:i] + [json.dumps({"patch_size": 4, "embed_dim": 48, "depth": 3, "num_heads": 3})] + argv[i + 1:]
    assert cli.main(deeper + ["--target-latency", "5", "--out", str(tmp_path / "bad")]) == 2
    assert "model_args.depth=2, this search has 3" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def _rss_mib() -> float:
    import resource

    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def test_the_heap_is_held_steady_while_timing():
    """Inside :func:`steady_heap` freed 16 MiB blocks stay in the process (the next forward reuses them instead of
    faulting in fresh pages; glibc's default would have unmapped them at once)."""
    from timm_nas.cost.latency import heap_mode, steady_heap

    if heap_mode() != "glibc-steady":
        pytest.skip("glibc's mallopt is not available here")
    with steady_heap() as held:
        assert held
        before = _rss_mib()
        blocks = [torch.ones(4 << 20) for _ in range(4)]  # 4 x 16 MiB, every page touched
        del blocks
        assert _rss_mib() - before > 48
    assert heap_mode() == "glibc-steady"


def test_a_build_records_its_heap_mode(table):
    from timm_nas.cost.latency import heap_mode

    assert json.loads(table.read_text())["setting"]["measure"]["heap"] == heap_mode()


def test_cuda_timing_waits_for_the_queued_work(monkeypatch):
    """The CUDA branch, run on the CPU with a fake CUDA: each timed call sits between two recorded events, waits for
    the end event, and reads the time between them (the work queued, not the time to queue it); the warm-up is
    synchronised before the first timed call."""
    import timm_nas.cost.latency as latency

    log = []

    class FakeEvent:
        count = 0

        def __init__(self, enable_timing: bool = False) -> None:
            assert enable_timing
            FakeEvent.count += 1
            self.n = FakeEvent.count

        def record(self) -> None:
            log.append(("record", self.n))

        def synchronize(self) -> None:
            log.append(("wait", self.n))

        def elapsed_time(self, end: "FakeEvent") -> float:
            return 10.0 * end.n  # milliseconds between the events, as CUDA reports them

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append(("sync", None)))
    fn = lambda: log.append(("fn", None))  # noqa: E731
    ref = lambda: log.append(("ref", None))  # noqa: E731
    times, ref_times = latency.time_paired(fn, ref, "cuda", warmup=1, repeats=2)
    assert log[:3] == [("ref", None), ("fn", None), ("sync", None)]
    timed = log[3:]
    assert timed == [("record", 1), ("ref", None), ("record", 2), ("wait", 2),
                     ("record", 3), ("fn", None), ("record", 4), ("wait", 4),
                     ("record", 5), ("ref", None), ("record", 6), ("wait", 6),
                     ("record", 7), ("fn", None), ("record", 8), ("wait", 8)]
    assert ref_times == [20.0, 60.0] and times == [40.0, 80.0]


def test_measure_subnets_against_a_reference_reports_milliseconds_per_subnet():
    import timm

    from timm_nas.cost.latency import latency_space, measure_subnets

    supernet = timm.create_model("autoformer_supernet", space=SPACE, patch_size=8, img_size=32).eval()
    space = latency_space(supernet)
    cfgs = [space.largest(), space.smallest()]
    seen = []
    ms = measure_subnets(supernet, cfgs, rounds=2, warmup=0, repeats=2, reference=space.smallest(),
                         callback=lambda k, value: seen.append(k))
    assert len(ms) == 2 and all(v > 0 for v in ms)
    assert sorted(seen) == [0, 0, 1, 1]  # one callback per subnet visit; the reference's rows are not reported
