"""S3 space search: E-T error, subspace fits and moves, weight inheritance, and a small end-to-end run."""
from __future__ import annotations

import json

import pytest
import timm
import torch

from timm_nas.cli import main
from timm_nas.search import Constraints
from timm_nas.search.space_evolution import (
    SpaceEvolution,
    et_error,
    evaluate_errors,
    evolve_choices,
    evolve_space,
    inherit_weights,
    lattice,
    sample_subnets,
    train_supernet,
)
from timm_nas.spaces import S3Space, S3Subnet

#: A tiny space at img_size 32 / patch 4: grids 8, 4, 2, 1.
SPACE32 = dict(embed_dim=[[32], [32, 64], [32, 64], [32, 64]], depth=[[1, 2], [1, 2], [1, 2, 3], [1, 2]],
               window_size=[[2, 4], [2, 4], [1, 2], [1]], mlp_ratio=[2.0, 3.0, 4.0])
ARGS32 = dict(img_size=32, num_classes=2)


def test_et_error_is_the_mean_of_expected_and_top_k_error():
    q = et_error([10.0, 20.0, 30.0, 40.0], top_k=2)
    assert (q.q_e, q.q_t, q.q, q.n, q.top_k) == (25.0, 15.0, 20.0, 4, 2)
    few = et_error([30.0, 10.0], top_k=50)  # fewer than top_k: all of them
    assert few.q_t == 20.0 and few.top_k == 2 and few.q == 20.0
    with pytest.raises(ValueError, match="at least one evaluated architecture"):
        et_error([])
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        et_error([1.0], top_k=0)


def test_sample_subnets_are_distinct_constrained_and_seeded():
    space = S3Space.from_dict(SPACE32)
    c = Constraints(params_max=120_000, cost_kwargs=dict(num_classes=2, img_size=32))
    cfgs = sample_subnets(space, 20, c, seed=1, step=0)
    assert len({x.to_json() for x in cfgs}) == 20
    assert all(c.admits(c.cost(x)) and space.contains(x) for x in cfgs)
    assert cfgs == sample_subnets(space, 20, c, seed=1, step=0)
    assert cfgs != sample_subnets(space, 20, c, seed=1, step=1)
    with pytest.raises(ValueError, match="none of .* draws .* meets the constraints"):
        sample_subnets(space, 5, Constraints(params_max=10, cost_kwargs=dict(num_classes=2, img_size=32)))


def test_lattices_and_moves():
    space = S3Space.from_dict(SPACE32)
    assert lattice("window_size", 0, space, 8) == [1.0, 2.0, 4.0, 8.0]
    assert lattice("depth", 2, space, 2)[:4] == [1.0, 2.0, 3.0, 4.0]
    assert lattice("embed_dim", 1, space, 4)[:3] == [32.0, 64.0, 96.0]
    assert lattice("mlp_ratio", 0, space, 8)[:5] == [0.5, 1.0, 1.5, 2.0, 2.5]
    depths = lattice("depth", 0, space, 8)
    assert evolve_choices(depths, [0, 1], -1) == (0, [1.0, 2.0])  # no depth below 1
    assert evolve_choices(depths, [0, 1], 2) == (2, [3.0, 4.0])
    windows = lattice("window_size", 0, space, 8)
    assert evolve_choices(windows, [2, 3], 2) == (0, [4.0, 8.0])  # the global window is the end of the lattice
    assert evolve_choices(windows, [1, 2], 2) == (1, [4.0, 8.0])  # shortened until legal


def test_step_moves_against_the_slope():
    """Synthetic errors: deeper stage 2 and smaller stage-0 windows are better, nothing else matters."""
    space = S3Space.from_dict(SPACE32)
    cfgs = sample_subnets(space, 60, seed=3)
    errors = [50.0 - 4.0 * c.depth[2] + 3.0 * sum(c.window_size[0]) / c.depth[0] for c in cfgs]
    new, fits = SpaceEvolution(top_k=5, tau=1.0, max_steps=1).step(space, cfgs, errors, grid=8)
    by = {(f.stage, f.dim): f for f in fits}
    assert len(fits) == 4 * 4
    depth2 = by[(2, "depth")]
    assert depth2.slope < -1.0 and depth2.steps == 1 and depth2.new_choices == (2, 3, 4)
    win0 = by[(0, "window_size")]
    assert win0.slope > 1.0 and win0.steps == -1 and win0.new_choices == (1, 2)
    assert by[(0, "embed_dim")].note == "fewer than two choices with architectures"
    assert by[(3, "window_size")].slope is None  # a single choice
    assert new.depth[2] == (2, 3, 4) and new.window_size[0] == (1, 2)
    assert new.embed_dim == space.embed_dim
    # each subspace's E-T error is recomputable from its members
    d2 = [e for c, e in zip(cfgs, errors) if c.depth[2] == 1]
    assert depth2.errors[0] == pytest.approx(et_error(d2, 5).q) and depth2.counts[0] == len(d2)
    # a large tau moves nothing
    same, _ = SpaceEvolution(top_k=5, tau=1e6).step(space, cfgs, errors, grid=8)
    assert same == space


def test_settings_errors():
    with pytest.raises(ValueError, match="block_value must be 'mean' or 'any'"):
        SpaceEvolution(block_value="median")
    with pytest.raises(ValueError, match=r"unknown S3 dimensions \['heads'\]"):
        SpaceEvolution(dims=("heads",))
    with pytest.raises(ValueError, match="tau must be positive"):
        SpaceEvolution(tau=0)


def test_inherited_weights_give_the_same_subnets():
    """A supernet of a moved space inherits every shared weight: a subnet in both spaces computes the same."""
    torch.manual_seed(0)
    old = timm.create_model("s3_supernet", space=SPACE32, **ARGS32).eval()
    moved = S3Space.from_dict(SPACE32).with_choices("depth", 2, [2, 3, 4]).with_choices("window_size", 0, [4, 8])
    moved = moved.with_choices("mlp_ratio", 1, [3.0, 3.5, 4.0, 4.5])
    new = timm.create_model("s3_supernet", space=moved.to_dict(), **ARGS32).eval()
    fresh = inherit_weights(new, old.state_dict())
    assert fresh == ["layers.2.blocks.3." + k for k in ("norm1.weight", "norm1.bias", "attn.relative_position_bias_table",
                                                        "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                                                        "attn.proj.bias", "norm2.weight", "norm2.bias",
                                                        "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
                                                        "mlp.fc2.bias")]
    x = torch.randn(2, 3, 32, 32)
    both = [c for c in (old.space.sample(s) for s in range(60)) if new.space.fits(c, grid=8)][:4]
    assert len(both) >= 2
    with torch.no_grad():
        for cfg in both:
            with old.use_subnet(cfg), new.use_subnet(cfg):
                torch.testing.assert_close(new(x), old(x), rtol=0, atol=0)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Two classes of 32x32 images (dark / bright noise), train and validation splits."""
    from PIL import Image

    root = tmp_path_factory.mktemp("s3data")
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 8), ("validation", 6)):
        for label in range(2):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = (torch.rand(32, 32, 3, generator=g) * 128 + 127 * label).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_train_and_evaluate_helpers(image_folder):
    from timm_nas.search import build_eval_loader

    torch.manual_seed(0)
    model = timm.create_model("s3_supernet", space=SPACE32, **ARGS32)
    loader, info = build_eval_loader(model, image_folder, split="train", subset_per_class=None, batch_size=8,
                                     workers=0)
    assert info["images"] == 16
    losses = train_supernet(model, loader, 3, lr=1e-3)
    assert len(losses) == 3 and all(l > 0 for l in losses)
    assert model.step == 3 and not model.training
    cfgs = [model.space.smallest(), model.space.largest()]
    errors = evaluate_errors(model, cfgs, loader)
    assert all(0.0 <= e <= 100.0 for e in errors)
    assert all(e * 16 / 100 == pytest.approx(round(e * 16 / 100)) for e in errors)  # whole images of 16


def test_end_to_end_cli_space_evolution_then_search(image_folder, tmp_path, capsys):
    """Train a tiny S3 supernet a few steps, E-T error, one evolution step, the final space's E-T error, and an
    evolutionary search in it; then check every logged number against the logged per-architecture errors."""
    out = tmp_path / "run"
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(SPACE32))
    argv = ["search", "s3-space", "--space", str(space_file), "--img-size", "32", "--num-classes", "2",
            "--data-dir", str(image_folder), "--train-steps", "3", "--finetune-steps", "1", "--batch-size", "8",
            "--workers", "0", "--iterations", "1", "--num-samples", "8", "--top-k", "3", "--tau", "0.01",
            "--params-max", "0.2", "--search-generations", "1", "--search-population", "4", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "step 0: E-T error" in printed and "exported the best subnet" in printed

    lines = [json.loads(x) for x in (out / "space_evolution.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 1]
    first, final = lines
    settings = SpaceEvolution(num_samples=8, top_k=3, tau=0.01,
                              constraints=Constraints(params_max=0.2e6, cost_kwargs=dict(num_classes=2, img_size=32,
                                                                                         patch_size=4)))
    assert first["settings"] == settings.to_dict()
    for rec in lines:
        archs = [json.loads(x) for x in (out / f"step_{rec['step']}.jsonl").read_text().splitlines()]
        assert len(archs) == rec["et_error"]["n"] == 8
        assert all(a["params"] <= 0.2e6 and 0 <= a["error"] <= 100 for a in archs)
        assert et_error([a["error"] for a in archs], 3).to_dict() == pytest.approx(rec["et_error"])
        assert (out / f"supernet_{rec['step']}.safetensors").is_file()
    # the logged fits and the next space follow from the logged errors
    archs = [json.loads(x) for x in (out / "step_0.jsonl").read_text().splitlines()]
    space0 = S3Space.from_dict(first["space"])
    again, fits = settings.step(space0, [S3Subnet.from_dict(a["config"]) for a in archs],
                                [a["error"] for a in archs], grid=8)
    assert json.loads(json.dumps([f.to_dict() for f in fits])) == first["fits"]
    assert again.to_dict() == first["next_space"] == final["space"]
    assert final["fits"] == [] and final["next_space"] is None
    assert json.loads((out / "final_space.json").read_text()) == final["space"]
    assert (out / "space_evolution.png").stat().st_size > 0
    # the search ran in the final space and exported a subnet of it
    best = json.loads((out / "search" / "best.json").read_text())
    assert S3Space.from_dict(final["space"]).contains(best["config"])
    cfg = json.loads((out / "search" / "export" / "config.json").read_text())
    assert cfg["model_args"]["subnet"] == best["config"]

    # the same command on the finished run: nothing recomputed, no file changed (final space and search included)
    capsys.readouterr()
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert main(argv) == 0
    assert "a finished search: nothing to do" in capsys.readouterr().out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == before
    # the same seed with data-loader workers gives the same run
    other_out = tmp_path / "workers"
    argv2 = [a if a != str(out) else str(other_out) for a in argv]
    argv2[argv2.index("--workers") + 1] = "2"
    assert main(argv2 + ["--no-progress"]) == 0
    for name in ("space_evolution.jsonl", "step_0.jsonl", "step_1.jsonl", "supernet_0.safetensors",
                 "supernet_1.safetensors", "final_space.json"):
        assert (out / name).read_bytes() == (other_out / name).read_bytes(), name
    # another space in the same folder is refused, naming the difference
    other = dict(SPACE32, mlp_ratio=[3.0, 4.0])
    space_file.write_text(json.dumps(other))
    assert main(argv) == 2
    assert "different arguments (space.mlp_ratio" in capsys.readouterr().err


def test_evolve_space_api_without_a_folder():
    """The loop with injected train / evaluate functions (errors from a known rule), two updates."""
    def errors_of(model, cfgs):
        return [40.0 - 2.0 * c.depth[2] for c in cfgs]

    make = lambda s: timm.create_model("s3_supernet", space=s.to_dict(), **ARGS32)  # noqa: E731
    res = evolve_space(S3Space.from_dict(SPACE32), iterations=2, make_supernet=make, train=lambda m, t: None,
                       evaluate=errors_of, settings=SpaceEvolution(num_samples=40, top_k=4, tau=3.0,
                                                                   dims=("depth",)), evaluate_final=False)
    assert [r["step"] for r in res.steps] == [0, 1]
    assert res.space.depth[2] == (3, 4, 5) and res.space.depth[0] == (1, 2)
    assert res.et_errors[1] < res.et_errors[0]
