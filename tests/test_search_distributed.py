"""torch.distributed scale-out: two CPU processes (gloo) shard the candidates and end with the single-process
result."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]
SPACE = dict(embed_dim=[64, 128], depth=[2, 3, 4], num_heads=[1, 2], mlp_ratio=[1.0, 2.0, 3.0])
KW = dict(num_classes=10, img_size=32, patch_size=8)


def _search(strategy_name: str, out: str | None, dist=None):
    import timm

    from timm_nas.search import Constraints, EvolutionSearch, ProxyScorer, RandomSearch, run_search

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        supernet = timm.create_model("autoformer_supernet", space=SPACE, img_size=32, patch_size=8,
                                     num_classes=10).eval()
    c = Constraints(params_max=1.2e6, cost_kwargs=KW)
    if strategy_name == "random":
        strategy = RandomSearch(supernet.space, 9, c, seed=3)
    else:
        strategy = EvolutionSearch(supernet.space, c, seed=3, population=5, topk=2, generations=2, mutations=2,
                                   crossovers=2)
    scorer = _Counting(ProxyScorer(supernet, "dss"))
    result = run_search(strategy, scorer, out=out, dist=dist, plot=False)
    result.calls = scorer.calls
    return result


class _Counting:
    def __init__(self, scorer) -> None:
        self.scorer, self.calls = scorer, 0

    def __call__(self, cfg) -> float:
        self.calls += 1
        return self.scorer(cfg)

    def describe(self) -> dict:
        return self.scorer.describe()


def _summary(result) -> list:
    return [(c.index, c.config.to_dict(), c.score, c.origin, c.generation) for c in result.candidates]


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from timm_nas.search import Dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for name in ("random", "evolution"):
            result = _search(name, os.path.join(out_dir, name), Dist.from_group())
            with open(os.path.join(out_dir, f"{name}.rank{rank}.json"), "w") as f:
                json.dump({"candidates": _summary(result), "calls": result.calls,
                           "best": result.best.config.to_dict()}, f)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_give_the_single_process_result(tmp_path):
    torch.set_num_threads(1)  # the same intra-op threads as the workers: bitwise comparable scores
    try:
        single = {name: _search(name, str(tmp_path / f"single-{name}")) for name in ("random", "evolution")}
    finally:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for name, ref in single.items():
        for rank in (0, 1):  # every rank ends with all the candidates
            got = json.loads((tmp_path / f"{name}.rank{rank}.json").read_text())
            assert got["best"] == ref.best.config.to_dict()
            assert [tuple(x[:2]) for x in got["candidates"]] == [(i, cfg) for i, cfg, *_ in _summary(ref)]
            for (i, cfg, score, origin, gen), (_, _, ref_score, ref_origin, ref_gen) in zip(got["candidates"],
                                                                                            _summary(ref)):
                assert score == pytest.approx(ref_score, rel=1e-6) and (origin, gen) == (ref_origin, ref_gen)
        # rank 0 wrote the same log as the single process
        logs = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
                 for line in (tmp_path / d / "candidates.jsonl").read_text().splitlines()]
                for d in (name, f"single-{name}")]
        assert [(r["index"], r["config"]) for r in logs[0]] == [(r["index"], r["config"]) for r in logs[1]]
        assert (tmp_path / name / "best.json").is_file()
        # the scoring was shared: each rank scored half of the candidates
        calls = [json.loads((tmp_path / f"{name}.rank{r}.json").read_text())["calls"] for r in (0, 1)]
        assert sum(calls) == len(ref.candidates) and abs(calls[0] - calls[1]) <= len(ref.candidates) // 4 + 1


@pytest.mark.slow
def test_torchrun_cli(tmp_path):
    """`torchrun --nproc-per-node 2 -m timm_nas search tf-tas ...` equals the single-process command."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")

    def args(out: Path) -> list[str]:
        return ["search", "tf-tas", "--space", str(space), "--img-size", "32", "--num-classes", "10",
                "--params-min", "0", "--candidates", "8", "--out", str(out), "--no-progress", "--no-export",
                "--device", "cpu"]

    subprocess.run([sys.executable, "-m", "timm_nas", *args(tmp_path / "one")], check=True, env=env,
                   capture_output=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531"]
    subprocess.run([*torchrun, "-m", "timm_nas", *args(tmp_path / "two")], check=True, env=env, capture_output=True)
    best = [json.loads((tmp_path / d / "best.json").read_text()) for d in ("one", "two")]
    assert best[0]["config"] == best[1]["config"]
    assert best[0]["score"] == pytest.approx(best[1]["score"], rel=1e-6)


# ---------------------------------------------------------------------------------------- S3 space evolution
S3_SPACE = dict(embed_dim=[[32], [32, 64], [32, 64], [32, 64]], depth=[[1, 2], [1, 2], [1, 2, 3], [1, 2]],
                window_size=[[2, 4], [2, 4], [1, 2], [1]], mlp_ratio=[2.0, 3.0, 4.0])


def _evolve(out: str, dist=None, scored: list | None = None):
    import timm

    from timm_nas.search.space_evolution import SpaceEvolution, evaluate_errors, evolve_space
    from timm_nas.spaces.s3 import S3Space

    def make(space):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return timm.create_model("s3_supernet", space=space.to_dict(), img_size=32, num_classes=2)

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 2, (4,), generator=g)) for _ in range(2)]

    def evaluate(model, configs):
        if scored is not None:
            scored.extend(c.to_dict() for c in configs)
        return evaluate_errors(model, configs, batches)

    return evolve_space(S3Space.from_dict(S3_SPACE), iterations=1, make_supernet=make, train=lambda m, t: None,
                        evaluate=evaluate, settings=SpaceEvolution(num_samples=6, top_k=2, tau=0.01), out=out,
                        plot=False, dist=dist)


def _evolve_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from timm_nas.search import Dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        scored: list = []
        result = _evolve(os.path.join(out_dir, "two"), Dist.from_group(), scored)
        with open(os.path.join(out_dir, f"evolve.rank{rank}.json"), "w") as f:
            json.dump({"steps": result.steps, "scored": scored}, f)
    finally:
        dist.destroy_process_group()


def test_space_evolution_scoring_is_shared_by_two_gloo_processes(tmp_path):
    torch.set_num_threads(1)
    try:
        scored: list = []
        single = _evolve(str(tmp_path / "one"), scored=scored)
    finally:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    mp.spawn(_evolve_worker, args=(2, str(tmp_path / "init-evolve"), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"evolve.rank{r}.json").read_text()) for r in (0, 1)]
    for got in ranks:  # every rank ends with the single-process steps (E-T errors, fits, next space)
        assert got["steps"] == json.loads(json.dumps(single.steps))
    # each rank scored half of the architectures
    assert len(ranks[0]["scored"]) + len(ranks[1]["scored"]) == len(scored) and ranks[0]["scored"] != scored
    for name in ("space_evolution.jsonl", "step_0.jsonl", "step_1.jsonl", "final_space.json"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
