"""NAS-Bench-201: the cell config, the 15,625-cell space, the CIFAR network, its analytic cost and the search network.

Parity with the authors' code reads ``tests/data/nb201_reference.json``, written by
``tests/reference_scripts/nb201_reference.py`` with the ``xautodl`` package (never imported here).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import timm
import torch

import timm_nas  # noqa: F401  (registers the models)
from timm_nas import cost
from timm_nas.models.nb201 import NB201Net, NB201SearchNet, checkpoint_filter_fn
from timm_nas.spaces.nb201 import NB201_OPS, NB201Cell, NB201Space

pytestmark = pytest.mark.usefixtures("one_thread")

REFERENCE = json.loads((Path(__file__).parent / "data" / "nb201_reference.json").read_text())
SPACE = NB201Space()
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _fill(keys: list, seed: int) -> dict[str, torch.Tensor]:
    """The reference script's deterministic weights (tests/reference_scripts/nb201_reference.py ``fill``)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in sorted(keys):
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            out[key] = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            out[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = torch.Size(shape[1:]).numel() if len(shape) > 1 else shape[-1]
            out[key] = torch.randn(shape, generator=g) / fan_in ** 0.5
    return out


def _images(seed: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------- the space
def test_string_and_index_round_trip_over_the_whole_space():
    cells = SPACE.all()
    assert len(cells) == len(SPACE) == 15_625 == len(set(cells))
    strings = []
    for i, cell in enumerate(cells):
        s = cell.to_string()
        assert NB201Cell.from_string(s) == cell and SPACE.index(cell) == i and SPACE.cell_at(i) == cell
        strings.append(s)
    # the benchmark's own index order, as the authors' code builds it (gen_all + random.seed(88) shuffle)
    order = REFERENCE["index_order"]
    assert hashlib.sha256("\n".join(strings).encode()).hexdigest() == order["sha256"]
    assert strings[:20] == order["first"]
    assert {str(i): strings[int(i)] for i in order["at"]} == order["at"]
    assert list(NB201_OPS) == REFERENCE["ops"]


def test_resolve_takes_every_form():
    cell = NB201Cell.from_string(BEST)
    assert cell.to_original() == str(cell) == BEST
    assert NB201Cell.resolve(BEST) == NB201Cell.resolve(cell.to_dict()) == NB201Cell.resolve(cell.to_json()) == cell
    assert NB201Cell.resolve(SPACE.index(cell)) == cell == NB201Cell.resolve({"arch_str": BEST})
    assert NB201Cell.resolve("ResNet") == NB201Cell.resolve("resnet") == NB201Cell.from_registry("resnet")
    assert cell.index == 1  # the authors' README example is benchmark entry 1 (tests/data/nb201_reference.json)
    with pytest.raises(ValueError, match="has 2 nodes"):
        NB201Cell.from_string("|nor_conv_3x3~0|+|none~0|none~1|")
    with pytest.raises(ValueError, match="conv_5x5.*allowed values"):
        NB201Cell.from_string(BEST.replace("avg_pool_3x3", "conv_5x5"))
    with pytest.raises(ValueError, match="must be 'op~1'"):
        NB201Cell.from_string(BEST.replace("avg_pool_3x3~1", "avg_pool_3x3~2"))
    with pytest.raises(ValueError, match="outside the space"):
        SPACE.cell_at(15_625)


def test_sampling_mutation_and_crossover_stay_in_the_space():
    g = torch.Generator().manual_seed(0)
    a, b = SPACE.sample(g), SPACE.sample(g)
    for _ in range(50):
        child = SPACE.mutate(a, g, m_prob=0.0)
        assert child != a and SPACE.contains(child)
        assert sum(x != y for x, y in zip(child.ops, a.ops)) == 1  # Real et al.'s one-edge mutation
        assert set(SPACE.crossover(a, b, g).ops) <= set(a.ops) | set(b.ops)
    assert SPACE.mutate(a, 3, m_prob=0.5, s_prob=0.5) == SPACE.mutate(a, 3, m_prob=0.5, s_prob=0.5)
    params = [cost.count_params(c) for c in SPACE.all()[::97]]
    assert cost.count_params(SPACE.largest()) >= max(params) and cost.count_params(SPACE.smallest()) <= min(params)
    small = NB201Space(("skip_connect", "nor_conv_3x3"))
    assert len(small) == 64 and len(set(small)) == 64 and not small.contains(SPACE.largest().__class__(("none",) * 6))


# ---------------------------------------------------------------------------------------------- the network
def test_analytic_params_equal_the_real_model_on_a_seeded_sample():
    g = torch.Generator().manual_seed(201)
    for _ in range(500):
        cell = SPACE.sample(g)
        model = NB201Net(cell, device="meta")
        assert cost.count_params(cell) == cost.real_params(model), cell


@pytest.mark.parametrize("arch", [BEST, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                                  "|nor_conv_1x1~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"])
def test_analytic_macs_equal_the_measured(arch):
    model = timm.create_model("nb201_cifar", genotype=arch, C=8, N=2).eval()
    assert cost.model_cost(model) == (cost.real_params(model), cost.measure_macs(model, _images(0, 1)))


@pytest.mark.parametrize("entry", REFERENCE["cells"], ids=lambda e: e["arch_str"])
def test_parity_with_the_authors_network(entry):
    """Parameter counts of the authors' TinyNetwork, and its logits on the same weights."""
    cell = NB201Cell.from_string(entry["arch_str"])
    for num_classes, params in entry["params"].items():
        assert cost.count_params(cell, num_classes=int(num_classes)) == params
    for case in entry["logits"]:
        model = timm.create_model("nb201_cifar", genotype=entry["arch_str"], C=case["C"], N=case["N"]).eval()
        model.load_state_dict(checkpoint_filter_fn(_fill(case["keys"], case["seed"]), model))
        with torch.no_grad():
            logits = model(_images(case["seed"]))
        torch.testing.assert_close(logits, torch.tensor(case["logits"]), rtol=1e-5, atol=1e-6)


def test_parity_with_the_authors_search_network():
    ref = REFERENCE["search"]
    model = timm.create_model("nb201_search", C=ref["C"], N=ref["N"]).eval()
    assert cost.real_params(model) == ref["params"]
    model.load_state_dict(checkpoint_filter_fn({"search_model": _fill(ref["keys"], ref["seed"])}, model))
    assert model.derive_arch() == NB201Cell.from_string(ref["genotype"])
    with torch.no_grad():
        logits = model(_images(ref["seed"]))
    torch.testing.assert_close(logits, torch.tensor(ref["logits"]), rtol=1e-5, atol=1e-6)


def test_genotype_argument_and_export_args():
    for value in (BEST, NB201Cell.from_string(BEST).to_dict(), NB201Cell.from_string(BEST), 1):
        model = timm.create_model("nb201_cifar", genotype=value, device="meta")
        assert model.genotype == NB201Cell.from_string(BEST)
    model = timm.create_model("nb201_cifar", device="meta")
    assert model.genotype == NB201Cell.from_registry("resnet")
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)


def test_search_network_architecture_api_and_a_darts_architecture_step():
    from timm_nas.search.darts import architecture_gradient

    torch.manual_seed(0)
    model = timm.create_model("nb201_search", C=4, N=1)
    assert model.arch_parameters() == [model.alphas]
    assert len(model.weight_parameters()) == len(list(model.parameters())) - 1
    with torch.no_grad():
        model.alphas.zero_()
        model.alphas[:, NB201_OPS.index("nor_conv_3x3")] = 1.0
    assert model.derive_arch() == SPACE.largest()
    static = model.extract()
    assert isinstance(static, NB201Net) and static.genotype == SPACE.largest() and (static.C, static.N) == (4, 1)
    batch = (_images(1, 4), torch.tensor([0, 1, 2, 3]))
    grads = architecture_gradient(model, batch, batch, eta=0.025, weight_decay=3e-4, network_momentum=0.9, order=2)
    assert len(grads) == 1 and grads[0].shape == model.alphas.shape and torch.isfinite(grads[0]).all()
    assert grads[0].abs().sum() > 0
