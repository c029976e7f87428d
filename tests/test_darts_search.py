"""DARTS architecture gradient (parity with the original architect), the search loop (log, checkpoint, resume,
export), data-parallel search on two gloo processes, the CLI and the evaluation-training recipe."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import timm
import torch

from timm_nas._checkpoint import load_checkpoint_file
from timm_nas.search.darts import (
    Cutout,
    DartsSearchConfig,
    DartsTrainConfig,
    architecture_gradient,
    momentum_buffers,
    search,
    split_indices,
    train_genotype_network,
)
from timm_nas.spaces.darts import Genotype

from conftest import darts_search_golden


# one intra-op thread: see conftest.one_thread
pytestmark = pytest.mark.usefixtures("one_thread")


ADAM = dict(lr=3e-4, betas=(0.5, 0.999), eps=1e-8, weight_decay=1e-3)
STEP = dict(eta=0.025, weight_decay=3e-4, network_momentum=0.9)


def _search_model(golden, dtype=torch.float64):
    model, t = darts_search_golden(dtype)
    f = (lambda x: x.to(dtype))
    train = (f(t["grad_input_train"]), t["grad_target_train"])
    valid = (f(t["grad_input_valid"]), t["grad_target_valid"])
    return model, t, train, valid


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref).abs().max() / ref.abs().max()).item()


def _adam(model, grads):
    opt = torch.optim.Adam(model.arch_parameters(), **ADAM)
    for a, g in zip(model.arch_parameters(), grads):
        a.grad = g.clone()
    opt.step()
    return [a.detach() for a in model.arch_parameters()]


# ------------------------------------------------------------------------------ architecture gradient parity
@pytest.mark.parametrize("order, prefix", [(1, "first_order"), (2, "second_order")])
def test_architecture_gradient_parity_float64(golden, order, prefix):
    model, t, train, valid = _search_model(golden)
    grads = architecture_gradient(model, train, valid, order=order, **STEP)
    assert _rel(grads[0], t[f"{prefix}_grad_alphas_normal_f64"]) <= 1e-9
    assert _rel(grads[1], t[f"{prefix}_grad_alphas_reduce_f64"]) <= 1e-9
    after = _adam(model, grads)
    assert _rel(after[0], t[f"{prefix}_alphas_normal_after_adam_f64"]) <= 1e-11
    assert _rel(after[1], t[f"{prefix}_alphas_reduce_after_adam_f64"]) <= 1e-11


def test_second_order_pieces_float64(golden):
    """The unrolled partial gradient, ||v|| and the implicit term, recomputed from the public pieces."""
    model, t, train, valid = _search_model(golden)
    full = architecture_gradient(model, train, valid, order=2, **STEP)
    model, _, _, _ = _search_model(golden)
    partial_and_v = _unrolled_pieces(model, train, valid)
    assert _rel(partial_and_v["partial"][0], t["second_order_partial_grad_alphas_normal_f64"]) <= 1e-9
    assert _rel(partial_and_v["partial"][1], t["second_order_partial_grad_alphas_reduce_f64"]) <= 1e-9
    assert abs(partial_and_v["norm"] - t["second_order_vector_norm_f64"].item()) <= 1e-9 * \
        t["second_order_vector_norm_f64"].item()
    implicit = [(p - g) / STEP["eta"] for p, g in zip(partial_and_v["partial"], full)]
    assert _rel(implicit[0], t["second_order_implicit_normal_f64"]) <= 1e-6  # through a 1/eta amplification
    assert _rel(implicit[1], t["second_order_implicit_reduce_f64"]) <= 1e-6


def _unrolled_pieces(model, train, valid):
    """Independent, plain re-derivation of w' and dL_val(w')/d(alpha, w') with a deep copy of the model."""
    import copy

    import torch.nn.functional as F

    model.train()
    weights = model.weight_parameters()
    loss = F.cross_entropy(model(train[0]), train[1])
    g = torch.autograd.grad(loss, weights)
    unrolled = copy.deepcopy(model)
    with torch.no_grad():
        for p, w, gw in zip(unrolled.weight_parameters(), weights, g):
            p.copy_(w - STEP["eta"] * (gw + STEP["weight_decay"] * w))
    loss = F.cross_entropy(unrolled(valid[0]), valid[1])
    grads = torch.autograd.grad(loss, unrolled.arch_parameters() + unrolled.weight_parameters())
    v = torch.cat([x.reshape(-1) for x in grads[2:]])
    return {"partial": grads[:2], "norm": v.norm().item()}


def test_architecture_gradient_float32_sanity(golden):
    model, t, train, valid = _search_model(golden, torch.float32)
    g1 = architecture_gradient(model, train, valid, order=1, **STEP)
    torch.testing.assert_close(g1[0], t["first_order_grad_alphas_normal"], atol=2e-3, rtol=0)
    torch.testing.assert_close(g1[1], t["first_order_grad_alphas_reduce"], atol=2e-3, rtol=0)
    after = _adam(model, g1)
    torch.testing.assert_close(after[0], t["first_order_alphas_normal_after_adam"], atol=1e-6, rtol=0)
    model, t, train, valid = _search_model(golden, torch.float32)
    g2 = architecture_gradient(model, train, valid, order=2, **STEP)
    assert _rel(g2[0], t["second_order_grad_alphas_normal_f64"]) <= 0.3
    assert _rel(g2[1], t["second_order_grad_alphas_reduce_f64"]) <= 0.3


def _tiny(dtype=torch.float64):
    """A tiny search network and batch pair for behaviour (not parity) tests."""
    g = torch.Generator().manual_seed(3)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = timm.create_model("darts_search", C=4, layers=3).to(dtype)
    train = (torch.randn(2, 3, 16, 16, generator=g, dtype=dtype), torch.tensor([0, 7]))
    valid = (torch.randn(2, 3, 16, 16, generator=g, dtype=dtype), torch.tensor([3, 1]))
    return model, train, valid


def test_side_effects_match_the_original():
    import copy

    model, train, valid = _tiny()
    model2 = copy.deepcopy(model)
    bn = "cells.0.preprocess1.op.2"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights_before = [p.detach().clone() for p in model.weight_parameters()]
    model.eval()
    architecture_gradient(model, train, valid, order=2, **STEP)
    assert not model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())  # .grad untouched
    after = model.state_dict()
    # three train-mode forwards on the model itself (L_train, w+Rv, w-Rv); the unrolled forward runs on copies
    assert after[f"{bn}.num_batches_tracked"] - before[f"{bn}.num_batches_tracked"] == 3
    assert not torch.equal(after[f"{bn}.running_mean"], before[f"{bn}.running_mean"])
    # weights are restored up to the original's rounding (w + Rv - 2Rv + Rv)
    for p, w in zip(model.weight_parameters(), weights_before):
        torch.testing.assert_close(p.detach(), w, atol=1e-12, rtol=0)
    architecture_gradient(model2, train, valid, order=1, **STEP)
    assert model2.state_dict()[f"{bn}.num_batches_tracked"] - before[f"{bn}.num_batches_tracked"] == 1


def test_momentum_buffers_enter_the_unrolled_step():
    import copy

    base, train, valid = _tiny()

    def grad(bufs):
        return architecture_gradient(copy.deepcopy(base), train, valid, order=2, momentum_buffers=bufs, **STEP)

    weights = base.weight_parameters()
    opt = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)
    assert momentum_buffers(opt, weights) == [None] * len(weights)
    none = grad(None)
    assert all(torch.equal(a, b) for a, b in zip(grad([torch.zeros_like(p) for p in weights]), none))
    moved = grad([torch.full_like(p, 0.01) for p in weights])
    assert not torch.allclose(moved[0], none[0])
    partial = [torch.full_like(p, 0.01) for p in weights]
    partial[3] = None
    # the original's bare except: any missing buffer -> no momentum term at all
    assert all(torch.equal(a, b) for a, b in zip(grad(partial), none))


def test_unused_alphas_get_zero_gradients():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = timm.create_model("darts_search", C=4, layers=2)  # cells 0 and 1 are both reduction cells
    batch = (torch.randn(2, 3, 16, 16), torch.tensor([0, 1]))
    for order in (1, 2):
        g_normal, g_reduce = architecture_gradient(model, batch, batch, order=order, **STEP)
        assert torch.equal(g_normal, torch.zeros(14, 8)) and g_reduce.abs().sum() > 0


def test_architecture_gradient_errors():
    net = timm.create_model("darts_cifar", C=4, layers=3, device="meta")
    batch = (torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match=r"DartsNet has no arch_parameters\(\); .*darts_search"):
        architecture_gradient(net, batch, batch, order=1, **STEP)
    search_net = timm.create_model("darts_search", C=4, layers=3)
    with pytest.raises(ValueError, match=r"order=3 is not allowed; allowed values: \[1, 2\]"):
        architecture_gradient(search_net, batch, batch, order=3, **STEP)
    with pytest.raises(ValueError, match=r"momentum_buffers has 1 entries but the model has \d+ weight parameters"):
        architecture_gradient(search_net, batch, batch, order=2, momentum_buffers=[None], **STEP)


# ------------------------------------------------------------------------------------------- search loop
class TinyData(torch.utils.data.Dataset):
    """Deterministic 16-image, 2-class dataset (class = sign of the mean)."""

    classes = ["neg", "pos"]

    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 32, 32, generator=g)
        self.y = (self.x.mean((1, 2, 3)) > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def _cfg(**kw) -> DartsSearchConfig:
    return DartsSearchConfig(**dict(dict(C=4, layers=3, epochs=2, batch_size=4, workers=0, seed=5), **kw))


def test_config_defaults_are_the_originals():
    c = DartsSearchConfig()
    assert (c.epochs, c.batch_size, c.lr, c.lr_min, c.momentum, c.weight_decay, c.grad_clip) == \
           (50, 64, 0.025, 0.001, 0.9, 3e-4, 5.0)
    assert (c.arch_lr, c.arch_betas, c.arch_weight_decay, c.train_portion, c.order) == \
           (3e-4, (0.5, 0.999), 1e-3, 0.5, 1)
    assert (c.C, c.layers, c.steps, c.multiplier) == (16, 8, 4, 4)
    assert c.lr_at(0) == 0.025 and abs(c.lr_at(25) - 0.013) < 1e-12 and c.lr_at(49) > 0.001
    assert split_indices(10, 0.5) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
    with pytest.raises(ValueError, match=r"order=3 is not allowed"):
        DartsSearchConfig(order=3)
    with pytest.raises(ValueError, match=r"train_portion must be in \(0, 1\)"):
        DartsSearchConfig(train_portion=1.0)


@pytest.mark.parametrize("order", [1, 2])
def test_search_writes_log_checkpoint_and_genotype(tmp_path, order):
    result = search(TinyData(), tmp_path, _cfg(order=order), progress=False)
    lines = [json.loads(x) for x in (tmp_path / "search_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1] and lines == result.history
    assert lines[0]["lr"] == 0.025 and lines[1]["lr"] == pytest.approx(0.013)
    for r in lines:
        assert Genotype.from_dict(r["genotype"]).to_text() == r["genotype_text"]
        assert len(r["alphas_normal"]) == 14 and abs(sum(r["alphas_normal"][0]) - 1) < 1e-6
        assert 0 <= r["valid_acc"] <= 1 and r["train_loss"] > 0
    assert Genotype.from_json((tmp_path / "genotype.json").read_text()) == result.genotype
    assert result.genotype == Genotype.from_dict(lines[-1]["genotype"])
    assert (tmp_path / "checkpoint.pth").is_file()


def _interrupt(monkeypatch, where: str, at_epoch: int) -> None:
    """Make the search raise KeyboardInterrupt in epoch ``at_epoch``: in the middle of the epoch (``'step'``) or
    while its checkpoint is written (``'checkpoint'``, after its log line)."""
    import timm_nas.search.darts as darts
    from timm_nas.search.log import RunFolder

    if where == "step":
        real = darts._search_step

        def step(model, *a, **k):
            if len(darts_epochs) > at_epoch:
                raise KeyboardInterrupt
            return real(model, *a, **k)

        darts_epochs: list = []
        real_epoch = darts._epoch
        monkeypatch.setattr(darts, "_epoch", lambda state, epoch, *a: (darts_epochs.append(epoch),
                                                                        real_epoch(state, epoch, *a))[1])
        monkeypatch.setattr(darts, "_search_step", step)
    else:
        real_save = RunFolder.save_checkpoint

        def save(self, name, payload):
            if payload["epoch"] == at_epoch:
                def killed(tmp):
                    tmp.write_bytes(b"half a checkpoi")
                    raise KeyboardInterrupt
                from timm_nas._io import atomic_write
                atomic_write(self.path / name, killed)
            return real_save(self, name, payload)

        monkeypatch.setattr(RunFolder, "save_checkpoint", save)


@pytest.mark.parametrize("where", ["step", "checkpoint"])
def test_an_interrupted_search_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch, where):
    cfg = _cfg(epochs=3)
    straight = search(TinyData(), tmp_path / "a", cfg, progress=False)
    with monkeypatch.context() as m:
        _interrupt(m, where, at_epoch=1)
        with pytest.raises(KeyboardInterrupt):
            search(TinyData(), tmp_path / "b", cfg, progress=False)
    assert not [p.name for p in (tmp_path / "b").iterdir() if p.name.endswith(".tmp")]
    resumed = search(TinyData(), tmp_path / "b", cfg, progress=False)
    logged = [json.loads(x) for x in (tmp_path / "b" / "search_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [0, 1, 2]  # no epoch logged twice
    assert [h["alphas_normal"] for h in resumed.history] == [h["alphas_normal"] for h in straight.history]
    assert resumed.genotype == straight.genotype
    a = torch.load(tmp_path / "a" / "checkpoint.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    for name in ("genotype.json", "best.json", "run.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_a_finished_search_run_again_changes_nothing_and_refuses_other_settings(tmp_path):
    export = dict(model_name="darts_cifar", model_kwargs={"C": 4, "layers": 3, "num_classes": 2})
    first = search(TinyData(), tmp_path, _cfg(epochs=1), progress=False, export=export)
    assert first.export_status == "written" and (tmp_path / "export" / "config.json").is_file()
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}
    again = search(TinyData(), tmp_path, _cfg(epochs=1), progress=False, export=export)
    assert again.export_status == "unchanged" and again.genotype == first.genotype
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()} == before
    for other, diff in ((_cfg(epochs=1, lr=0.1), "config.lr: 0.025 -> 0.1"),
                        (_cfg(epochs=2), "config.epochs: 1 -> 2")):  # the cosine schedule spans --epochs
        with pytest.raises(ValueError, match=re.escape(diff)):
            search(TinyData(), tmp_path, other, progress=False)
    # workers do not change the run
    search(TinyData(), tmp_path, _cfg(epochs=1, workers=2), progress=False)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()} == before


class AugmentedData(TinyData):
    """TinyData with a random flip and noise drawn from the global generators (like torchvision transforms)."""

    def __getitem__(self, i: int):
        x, y = super().__getitem__(i)
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x + 0.1 * torch.randn(x.shape), y


def test_the_same_seed_gives_the_same_search_with_any_number_of_workers(tmp_path):
    runs = [search(AugmentedData(), tmp_path / str(w), _cfg(epochs=2, workers=w), progress=False)
            for w in (0, 0, 2)]
    assert runs[0].history[-1]["alphas_normal"] == runs[1].history[-1]["alphas_normal"] == \
           runs[2].history[-1]["alphas_normal"]
    assert [h["train_loss"] for h in runs[0].history] == [h["train_loss"] for h in runs[2].history]


def test_search_does_not_touch_the_global_rng(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    search(TinyData(), tmp_path, _cfg(epochs=1), progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_search_exports_the_genotype_network(tmp_path):
    pytest.importorskip("timm_nas.hub")
    result = search(TinyData(), tmp_path / "run", _cfg(epochs=1), progress=False,
                    export=dict(folder=tmp_path / "export", model_kwargs={"C": 8, "layers": 5, "num_classes": 2}))
    cfg = json.loads((tmp_path / "export" / "config.json").read_text())
    assert cfg["architecture"] == "darts_cifar"
    assert Genotype.from_dict(cfg["model_args"]["genotype"]) == result.genotype
    assert cfg["model_args"]["C"] == 8 and cfg["model_args"]["layers"] == 5
    model = timm.create_model(f"local-dir:{tmp_path / 'export'}", pretrained=True)
    assert model.genotype == result.genotype and real_chs(model) == (8, 5)
    card = (tmp_path / "export" / "README.md").read_text()
    assert "darts" in card.lower()


def real_chs(model) -> tuple[int, int]:
    return model.C, len(model.cells)


# --------------------------------------------------------------------------------------------- distributed
def _dist_worker(rank: int, world: int, init_file: str, out_dir: str, order: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = search(TinyData(), out_dir, _cfg(epochs=1, order=order), progress=False, resume=False)
        model_state = torch.load(Path(out_dir) / "checkpoint.pth", weights_only=True)["model"] if rank == 0 else None
        torch.save({"alphas": result.history[-1]["alphas_normal"], "genotype": result.genotype.to_dict(),
                    "state": model_state}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two processes that import torch + timm: ~15 s of CPU each
@pytest.mark.parametrize("order", [1, 2])
def test_distributed_alphas_identical_on_two_gloo_processes(tmp_path, order):
    import torch.multiprocessing as mp

    mp.start_processes(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path), order), nprocs=2,
                       start_method="spawn")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["alphas"] == r1["alphas"] and r0["genotype"] == r1["genotype"]
    init = torch.softmax(torch.zeros(8), 0)[0].item()
    assert any(abs(v - init) > 1e-7 for row in r0["alphas"] for v in row)  # the alphas did move


# ------------------------------------------------------------------------------------- evaluation training
def test_cutout_zeroes_a_clipped_square():
    torch.manual_seed(0)
    img = torch.ones(3, 32, 32)
    out = Cutout(16)(img)
    zeros = (out == 0).all(0)
    assert 0 < zeros.sum() <= 256 and img.min() == 1
    rows, cols = zeros.any(1).nonzero(), zeros.any(0).nonzero()
    assert rows.numel() <= 16 and cols.numel() <= 16


def test_train_config_recipes():
    c = DartsTrainConfig()
    assert (c.C, c.layers, c.epochs, c.batch_size, c.lr, c.auxiliary_weight, c.drop_path_prob, c.cutout) == \
           (36, 20, 600, 96, 0.025, 0.4, 0.2, 16)
    i = DartsTrainConfig.imagenet()
    assert (i.model_name, i.C, i.layers, i.epochs, i.batch_size, i.lr, i.weight_decay, i.label_smoothing) == \
           ("darts_imagenet", 48, 14, 250, 128, 0.1, 3e-5, 0.1)
    with pytest.raises(ValueError, match=r"schedule='linear' is not allowed"):
        DartsTrainConfig(schedule="linear")


def test_train_genotype_network_runs_the_recipe(tmp_path):
    cfg = DartsTrainConfig(genotype="pc_darts", C=4, layers=5, epochs=2, batch_size=8, workers=0, ema_decay=0.9)
    result = train_genotype_network(TinyData(), TinyData(8), tmp_path, cfg, progress=False)
    hist = result["history"]
    assert [h["epoch"] for h in hist] == [0, 1]
    assert hist[0]["drop_path_prob"] == 0 and hist[1]["drop_path_prob"] == pytest.approx(0.1)
    assert hist[0]["lr"] == pytest.approx(0.025) and hist[1]["lr"] < 0.025
    assert (tmp_path / "last.pth.tar").is_file() and (tmp_path / "model_best.pth.tar").is_file()
    ckpt = load_checkpoint_file(tmp_path / "last.pth.tar")  # weights_only with the allow-list
    assert any(k.startswith("auxiliary_head.") for k in ckpt["state_dict"])  # trained with the auxiliary head
    again = train_genotype_network(TinyData(), TinyData(8), tmp_path, cfg, progress=False)  # resumes: nothing to do
    assert [h["epoch"] for h in again["history"]] == [0, 1]


# --------------------------------------------------------------------------------------------------- CLI
def test_cli_search_and_train(tmp_path):
    from PIL import Image

    from timm_nas.cli import main

    g = torch.Generator().manual_seed(0)
    for split in ("train", "validation"):
        for c in range(2):
            d = tmp_path / "data" / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(4):
                arr = (torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(d / f"{i}.png")
    rc = main(["search", "darts", "--data-dir", str(tmp_path / "data"), "--dataset", "", "--out",
               str(tmp_path / "run"), "--epochs", "1", "--batch-size", "2", "--init-channels", "4", "--layers", "3",
               "--workers", "0", "--no-progress", "--no-export", "--unrolled"])
    assert rc == 0
    genotype_file = tmp_path / "run" / "genotype.json"
    assert Genotype.from_json(genotype_file.read_text())
    rc = main(["train-darts", "--genotype", str(genotype_file), "--data-dir", str(tmp_path / "data"), "--dataset", "",
               "--output", str(tmp_path / "train"), "--epochs", "1", "--batch-size", "4", "--C", "4", "--layers", "3",
               "--workers", "0", "--no-progress"])
    assert rc == 0 and (tmp_path / "train" / "last.pth.tar").is_file()
    assert main(["search", "darts", "--data-dir", str(tmp_path / "missing"), "--output", str(tmp_path / "x")]) == 2
    assert main(["search", "darts", "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "x"),
                 "--unrolled", "--order", "1"]) == 2


def test_search_runs_on_the_nas_bench_201_space(tmp_path):
    """The DARTS loop on nb201_search (the benchmark's DARTS baseline): alphas over the 6 edges, a cell string per
    epoch, a resume equal to the uninterrupted run, and the searched cell exported as nb201_cifar."""
    from timm_nas.spaces.nb201 import NB201Cell

    cfg = _cfg(space="nb201", C=4, cells_per_stage=1, epochs=2)
    export = dict(model_kwargs={"num_classes": 2})
    result = search(TinyData(), tmp_path / "a", cfg, progress=False, export=export)
    lines = [json.loads(x) for x in (tmp_path / "a" / "search_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1] and len(lines[-1]["alphas"]) == 6
    cell = NB201Cell.from_string(lines[-1]["genotype_text"])
    assert result.genotype == cell and (tmp_path / "a" / "genotype.txt").read_text().strip() == cell.to_string()
    exported = timm.create_model(f"local-dir:{tmp_path / 'a' / 'export'}", pretrained=True)
    assert type(exported).__name__ == "NB201Net" and NB201Cell.resolve(exported.genotype) == cell
    with pytest.raises(ValueError, match=r"space='x' is not allowed; allowed values: \['darts', 'nb201'\]"):
        _cfg(space="x")
