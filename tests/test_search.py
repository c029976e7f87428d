"""Search strategies over the Space protocol: random / TF-TAS zero-shot, AutoFormer evolution, constraints, the
resumable candidate log, Pareto fronts."""
from __future__ import annotations

import json
import re
import sys

import pytest
import timm
import torch

from timm_nas.search import (Candidate, Constraints, EvolutionSearch, ProxyScorer, RandomSearch, SearchFolder,
                             ZeroShotSearch, config_key, pareto_front, plot_pareto, run_search, tf_tas)
from timm_nas.search.log import LOG_FILE
from timm_nas.proxies.zero_cost import cost_kwargs
from timm_nas.spaces import AutoFormerSpace, AutoFormerSubnet

#: A small AutoFormer space: cheap to score at 32 px, large enough (thousands of configs) to search.
SPACE = dict(embed_dim=[64, 128], depth=[2, 3, 4], num_heads=[1, 2], mlp_ratio=[1.0, 2.0, 3.0])
KW = dict(num_classes=10, img_size=32, patch_size=8)


# one intra-op thread: see conftest.one_thread
pytestmark = pytest.mark.usefixtures("one_thread")


def make_supernet(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model("autoformer_supernet", space=SPACE, img_size=32, patch_size=8, num_classes=10).eval()


class ToyScorer:
    """Deterministic, instant, and counts its calls; ``fail_after`` simulates a kill."""

    def __init__(self, constraints: Constraints | None = None, fail_after: int | None = None) -> None:
        self.calls: list[AutoFormerSubnet] = []
        self.constraints = constraints
        self.fail_after = fail_after

    def __call__(self, cfg: AutoFormerSubnet) -> float:
        if self.constraints is not None:
            assert self.constraints.admits(self.constraints.cost(cfg)), "a candidate outside the window was scored"
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt
        self.calls.append(cfg)
        return cfg.embed_dim * 0.01 + sum(h * r for h, r in zip(cfg.num_heads, cfg.mlp_ratio)) - 0.3 * cfg.depth

    def describe(self) -> dict:
        return {"kind": "toy"}


def space() -> AutoFormerSpace:
    return AutoFormerSpace.resolve(SPACE)


def records(folder) -> list[dict]:
    out = []
    for line in (folder / LOG_FILE).read_text().splitlines():
        rec = json.loads(line)
        rec.pop("seconds")
        out.append(rec)
    return out


# ------------------------------------------------------------------------------------------------ strategies
def test_random_search_is_reproducible_distinct_and_inside_the_constraints():
    c = Constraints(params_min=0.5e6, params_max=1.0e6, cost_kwargs=KW)
    runs = []
    for seed in (0, 0, 1):
        scorer = ToyScorer(c)
        result = run_search(RandomSearch(space(), 40, c, seed=seed), scorer)
        assert len(result.candidates) == 40 == len(scorer.calls)
        assert len({config_key(x.config) for x in result.candidates}) == 40
        assert all(0.5e6 <= x.params <= 1.0e6 for x in result.candidates)
        assert [x.index for x in result.candidates] == list(range(40))
        runs.append([x.config for x in result.candidates])
    assert runs[0] == runs[1] != runs[2]


def test_zero_shot_defaults_are_tf_tas():
    s = ZeroShotSearch(space())
    assert (s.name, s.num_candidates) == ("tf-tas", 8000)
    from timm_nas.search import TF_TAS_PARAMS

    assert TF_TAS_PARAMS == (3e6, 23e6)


def test_constraint_windows():
    with pytest.raises(ValueError, match="empty params window"):
        Constraints(params_min=2e6, params_max=1e6)
    with pytest.raises(ValueError, match="non-negative"):
        Constraints(macs_max=-1)
    with pytest.raises(ValueError, match="empty constraint window.*spans"):
        Constraints(params_max=1e3, cost_kwargs=KW).check_space(space())
    with pytest.raises(ValueError, match="empty constraint window"):
        Constraints(macs_min=1e12, cost_kwargs=KW).check_space(space())
    Constraints(params_min=0.5e6, params_max=1e6, cost_kwargs=KW).check_space(space())
    # a window inside the range that no sampled architecture hits is reported too (not an endless loop)
    narrow = Constraints(params_min=700_001, params_max=700_002, cost_kwargs=KW)
    with pytest.raises(ValueError, match="in a row"):
        run_search(RandomSearch(space(), 5, narrow), ToyScorer())


def test_evolution_defaults_are_autoformers():
    e = EvolutionSearch(space())
    assert (e.population, e.topk, e.generations, e.mutations, e.crossovers, e.m_prob, e.s_prob, e.retries,
            e.parent_retries) == (50, 10, 20, 25, 25, 0.2, 0.4, 10, 50)
    with pytest.raises(ValueError, match="exceed the population"):
        EvolutionSearch(space(), population=10, mutations=6, crossovers=6)
    with pytest.raises(ValueError, match="probability"):
        EvolutionSearch(space(), m_prob=1.5)


def test_evolution_runs_reproducibly_and_improves():
    c = Constraints(params_max=1.2e6, cost_kwargs=KW)
    kw = dict(population=12, topk=4, generations=4, mutations=5, crossovers=5)
    results = [run_search(EvolutionSearch(space(), c, seed=s, **kw), ToyScorer(c)) for s in (0, 0, 3)]
    a, b, other = results
    assert [x.config for x in a.candidates] == [x.config for x in b.candidates]
    assert [x.config for x in a.candidates] != [x.config for x in other.candidates]
    assert len(a.candidates) == 12 * 5  # a full population per generation (mutations + crossovers + refill)
    assert len({config_key(x.config) for x in a.candidates}) == len(a.candidates)
    origins = {x.origin for x in a.candidates}
    assert origins == {"random", "mutation", "crossover"}
    gens = sorted({x.generation for x in a.candidates})
    assert gens == [0, 1, 2, 3, 4]
    first = max(x.score for x in a.candidates if x.generation == 0)
    assert a.best.score >= first
    # the offspring of later generations are better on average than the random initial population
    mean = lambda g: sum(x.score for x in a.candidates if x.generation == g) / 12  # noqa: E731
    assert mean(4) > mean(0)


def test_evolution_crossover_retries_incompatible_parents():
    class NoCompat:  # a space without compatible(): crossover's IncompatibleError costs an attempt
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            if name == "compatible":
                raise AttributeError(name)
            return getattr(self.inner, name)

    s = NoCompat(space())
    result = run_search(EvolutionSearch(s, Constraints(cost_kwargs=KW), population=8, topk=4, generations=2,
                                        mutations=2, crossovers=4), ToyScorer())
    assert len(result.candidates) == 8 * 3
    for x in result.candidates:
        if x.origin == "crossover":
            assert space().contains(x.config)


# ------------------------------------------------------------------------------------------ log and resume
def test_interrupted_search_resumes_without_rescoring(tmp_path):
    c = Constraints(params_max=1.2e6, cost_kwargs=KW)
    for make in (lambda: RandomSearch(space(), 30, c, seed=5),
                 lambda: EvolutionSearch(space(), c, seed=5, population=10, topk=3, generations=3, mutations=4,
                                         crossovers=4)):
        full = tmp_path / f"{make().name}-full"
        part = tmp_path / f"{make().name}-part"
        reference = run_search(make(), ToyScorer(), out=full)
        with pytest.raises(KeyboardInterrupt):
            run_search(make(), ToyScorer(fail_after=13), out=part)
        assert len(records(part)) == 13 and not (part / "best.json").exists()
        scorer = ToyScorer()
        resumed = run_search(make(), scorer, out=part)
        assert (resumed.reused, resumed.scored) == (13, len(reference.candidates) - 13)
        assert len(scorer.calls) == resumed.scored
        assert records(part) == records(full)
        best = lambda f: {k: v for k, v in json.loads((f / "best.json").read_text()).items() if k != "seconds"}  # noqa
        assert best(part) == best(full)
        assert json.loads((part / "pareto.json").read_text()).keys() == {"params", "macs"}
        # once finished, running it again scores nothing and changes no result
        again = ToyScorer()
        run_search(make(), again, out=part)
        assert again.calls == [] and records(part) == records(full)


def test_resume_with_different_arguments_is_refused_and_changes_nothing(tmp_path):
    c = Constraints(params_max=1.2e6, cost_kwargs=KW)
    run_search(RandomSearch(space(), 5, c, seed=0), ToyScorer(), out=tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    for strategy in (RandomSearch(space(), 5, c, seed=1),
                     RandomSearch(space(), 5, Constraints(params_max=1.1e6, cost_kwargs=KW), seed=0)):
        with pytest.raises(ValueError, match="different arguments"):
            run_search(strategy, ToyScorer(), out=tmp_path)
    with pytest.raises(ValueError, match="can be extended .* but not shortened to 4"):
        run_search(RandomSearch(space(), 4, c, seed=0), ToyScorer(), out=tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    # --overwrite starts afresh
    result = run_search(RandomSearch(space(), 6, c, seed=1), ToyScorer(), out=tmp_path, overwrite=True)
    assert result.reused == 0 and len(records(tmp_path)) == 6


@pytest.mark.parametrize("make", [
    lambda n, c: RandomSearch(space(), n, c, seed=0),
    lambda n, c: EvolutionSearch(space(), c, seed=0, population=4, topk=2, generations=n // 4, mutations=2,
                                 crossovers=2),
], ids=["random", "evolution"])
def test_a_finished_search_is_extended_to_the_longer_run(tmp_path, make):
    c = Constraints(params_max=1.2e6, cost_kwargs=KW)
    full = run_search(make(12, c), ToyScorer(), out=tmp_path / "full")
    run_search(make(8, c), ToyScorer(), out=tmp_path / "ext")
    again = run_search(make(8, c), ToyScorer(), out=tmp_path / "ext")  # a finished run: nothing scored
    assert (again.scored, again.reused) == (0, len(again.candidates))
    extended = run_search(make(12, c), ToyScorer(), out=tmp_path / "ext")
    assert extended.reused == len(again.candidates) and extended.scored == len(full.candidates) - extended.reused
    assert records(tmp_path / "ext") == records(tmp_path / "full")
    assert json.loads((tmp_path / "ext" / "run.json").read_text()) == json.loads((tmp_path / "full" /
                                                                                   "run.json").read_text())
    def timeless(name, folder):  # results without the scoring times
        text = (tmp_path / folder / name).read_text()
        return re.sub(r'"seconds": [0-9.e-]+', "", text)

    for name in ("best.json", "pareto.json"):
        assert timeless(name, "ext") == timeless(name, "full")


def test_a_finished_search_run_again_changes_no_file(tmp_path):
    c = Constraints(params_max=1.2e6, cost_kwargs=KW)
    run_search(RandomSearch(space(), 5, c), ToyScorer(), out=tmp_path)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    again = run_search(RandomSearch(space(), 5, c), ToyScorer(), out=tmp_path)
    assert again.scored == 0
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()} == before


def test_a_foreign_folder_is_not_touched(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        run_search(RandomSearch(space(), 3, Constraints(cost_kwargs=KW)), ToyScorer(), out=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_record_cut_short_by_a_kill_is_dropped(tmp_path):
    c = Constraints(cost_kwargs=KW)
    run_search(RandomSearch(space(), 8, c), ToyScorer(), out=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run_search(RandomSearch(space(), 8, c), ToyScorer(fail_after=5), out=tmp_path / "part")
    log = tmp_path / "part" / LOG_FILE
    log.write_bytes(log.read_bytes() + b'{"index": 5, "config": {"embed')  # killed mid-write
    resumed = run_search(RandomSearch(space(), 8, c), ToyScorer(), out=tmp_path / "part")
    assert (resumed.reused, resumed.scored) == (5, 3)
    assert records(tmp_path / "part") == records(tmp_path / "full")


def test_log_mismatch_is_detected(tmp_path):
    c = Constraints(cost_kwargs=KW)
    run_search(RandomSearch(space(), 6, c), ToyScorer(), out=tmp_path)
    lines = (tmp_path / LOG_FILE).read_text().splitlines()
    rec = json.loads(lines[2])
    rec["index"] = 7  # a log that is not this search's replay
    (tmp_path / LOG_FILE).write_text("\n".join(lines[:2] + [json.dumps(rec)] + lines[3:]) + "\n")
    with pytest.raises(ValueError, match="does not match"):
        run_search(RandomSearch(space(), 6, c), ToyScorer(), out=tmp_path)


def test_search_folder_check_writes_nothing(tmp_path):
    folder = SearchFolder(tmp_path / "new", {"a": 1})
    assert folder.check() == {}
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------------------------- pareto
def _cand(i, score, params, macs=0):
    return Candidate(i, AutoFormerSubnet(64, 1, (1,), (1.0,)), score, params, macs)


def test_pareto_front():
    cands = [_cand(0, 1.0, 10), _cand(1, 2.0, 20), _cand(2, 1.5, 25), _cand(3, 3.0, 30), _cand(4, 0.5, 5),
             _cand(5, 3.0, 40), _cand(6, float("nan"), 1)]
    assert [c.index for c in pareto_front(cands, "params")] == [4, 0, 1, 3]
    assert pareto_front(cands, "latency") == []  # no latency table: no candidate has a latency
    with pytest.raises(ValueError, match="unknown cost 'flops'; choose one of"):
        pareto_front(cands, "flops")


def test_pareto_plot_and_missing_matplotlib(tmp_path, monkeypatch):
    cands = [_cand(i, float(i % 5), 10 + i, 100 + i) for i in range(20)]
    assert plot_pareto(cands, tmp_path / "p.png", best=cands[4])
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.warns(UserWarning, match="matplotlib is not installed"):
        assert not plot_pareto(cands, tmp_path / "q.png")
    assert not (tmp_path / "q.png").exists()


# -------------------------------------------------------------------------------------------- with a proxy
def test_tf_tas_with_dss_on_a_supernet(tmp_path):
    supernet = make_supernet()
    result = tf_tas(supernet, num_candidates=6, params=(0, 2e6), out=tmp_path)
    assert len(result.candidates) == 6 and result.strategy == "tf-tas"
    assert result.best.score == max(c.score for c in result.candidates)
    # the same scores as scoring each candidate directly
    from timm_nas.proxies import dss

    for c in result.candidates[:2]:
        assert c.score == pytest.approx(dss(supernet, c.config).total, rel=1e-6)
    assert {p.name for p in tmp_path.iterdir()} >= {"run.json", "candidates.jsonl", "best.json", "pareto.json"}
    run = json.loads((tmp_path / "run.json").read_text())["arguments"]
    assert run["scorer"] == {"kind": "proxy", "proxy": "dss", "options": {}}


def test_proxy_scorer_uses_one_fixed_batch():
    supernet = make_supernet()
    scorer = ProxyScorer(supernet, "snip", batch_size=3, seed=1)
    cfg = supernet.space.smallest()
    assert scorer(cfg) == scorer(cfg)
    assert scorer.inputs.shape == (3, 3, 32, 32)
    assert scorer.describe()["batch"] == {"random": True, "size": 3, "seed": 1}
    assert cost_kwargs(supernet)["patch_size"] == 8
