"""DARTS genotype config, its text parser, the DartsSpace protocol and the original's derivation rule."""
from __future__ import annotations

import json

import pytest
import torch

from timm_nas.registry import get_entry, load_registry
from timm_nas.spaces.base import IncompatibleError, Space
from timm_nas.spaces.darts import OPERATIONS, PRIMITIVES, DartsSpace, Genotype, parse_genotype_text

from conftest import load_json, load_tensors

DARTS_V2_TEXT = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")


def _darts_v2() -> Genotype:
    return Genotype.resolve("darts_v2")


# ----------------------------------------------------------------------------------------------- Genotype
def test_genotype_json_round_trip_gives_tuples():
    g = _darts_v2()
    d = g.to_dict()
    assert d["normal"][0] == ["sep_conv_3x3", 0] and d["normal_concat"] == [2, 3, 4, 5]
    back = Genotype.from_dict(json.loads(json.dumps(d)))
    assert back == g and isinstance(back.normal[0], tuple) and isinstance(back.reduce_concat, tuple)
    assert Genotype.from_json(g.to_json()) == g


def test_genotype_unknown_and_missing_keys():
    d = _darts_v2().to_dict()
    with pytest.raises(ValueError, match=r"unknown Genotype keys \['extra'\].*allowed keys"):
        Genotype.from_dict(dict(d, extra=1))
    del d["reduce"]
    with pytest.raises(ValueError, match=r"missing Genotype keys"):
        Genotype.from_dict(d)


@pytest.mark.parametrize("change, message", [
    (dict(normal=[["sep_conv_9x9", 0], ["sep_conv_3x3", 1]]), r"normal\[0\] operation='sep_conv_9x9' is not allowed; "
                                                              r"allowed values: \['none', 'max_pool_3x3'"),
    (dict(normal=[["sep_conv_3x3", 0], ["sep_conv_3x3", 2]]), r"normal\[1\] input index 2 is out of range for "
                                                              r"intermediate node 0; allowed values: \[0, 1\]"),
    (dict(reduce=[["sep_conv_3x3", 0]] * 3), r"reduce has 3 \(operation, input\) pairs; a DARTS cell needs exactly two"),
    (dict(normal=[["sep_conv_3x3", 0], ["sep_conv_3x3", True]]), r"normal\[1\] input index must be an int"),
    (dict(normal_concat=[2, 9]), r"normal_concat\[1\]=9 is not a state of a cell with 4 nodes; allowed values: "
                                 r"\[0, 1, 2, 3, 4, 5\]"),
    (dict(normal_concat=[2, 2]), r"normal_concat lists state 2 twice"),
    (dict(normal_concat=[]), r"normal_concat must be a non-empty list"),
    (dict(normal=[["sep_conv_3x3", 2, 0], ["sep_conv_3x3", 2, 1]]), r"FairDARTS-style"),
])
def test_genotype_validation_names_field_value_and_allowed(change, message):
    d = dict(_darts_v2().to_dict(), **change)
    with pytest.raises(ValueError, match=message):
        Genotype.from_dict(d)


def test_genotype_accepts_five_node_cells_and_any_concat():
    nasnet = Genotype.resolve("NASNet")
    assert nasnet.normal_steps == 5 and nasnet.reduce_concat == (4, 5, 6)
    assert Genotype.resolve("amoebanet").reduce[-1] == ("sep_conv_3x3", 5)  # reads node 3


# ------------------------------------------------------------------------------------------ text parser
def test_parse_original_text_and_write_it_back():
    g = Genotype.from_text(DARTS_V2_TEXT)
    assert g == _darts_v2()
    assert g.to_text() == DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "range(2, 6)")
    assert Genotype.from_text(g.to_text()) == g


def test_parse_range_forms_positional_trailing_commas_and_double_quotes():
    text = ('Genotype([("sep_conv_3x3", 0), ("skip_connect", 1),], range(2, 3), '
            '[("max_pool_3x3", 0), ("max_pool_3x3", 1)], range(3),)')
    g = Genotype.from_text(text)
    assert g.normal == (("sep_conv_3x3", 0), ("skip_connect", 1)) and g.normal_concat == (2,)
    assert g.reduce_concat == (0, 1, 2)
    assert parse_genotype_text("(normal=[('none', 0), ('none', 1)], normal_concat=range(0, 4, 2), "
                               "reduce=[('none', 0), ('none', 1)], reduce_concat=[2])")["normal_concat"] == [0, 2]


def test_parse_gdas_nested_pairs_are_flattened():
    text = ("Genotype(normal=[(('skip_connect', 0), ('skip_connect', 1)), (('skip_connect', 0), ('sep_conv_5x5', 2))], "
            "normal_concat=[2, 3], reduce=[(('sep_conv_5x5', 0), ('sep_conv_3x3', 1)), "
            "(('sep_conv_5x5', 2), ('sep_conv_5x5', 1))], reduce_concat=[2, 3], connectN=None, connects=None)")
    g = Genotype.from_text(text)
    assert g.normal == (("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("sep_conv_5x5", 2))


@pytest.mark.parametrize("text, message", [
    ("Genotype(normal=__import__('os').system('x'), normal_concat=[2], reduce=[], reduce_concat=[2])",
     r"unexpected character '\.'"),
    ("Genotype(normal=open('/etc/passwd'), normal_concat=[2])", r"name 'open' at position 16 is not a literal"),
    ("Genotype(normal=[('a', 0)] + [], normal_concat=[2])", r"unexpected character '\+'"),
    ("Namedtuple(normal=[])", r"must start with 'Genotype\('"),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=[2], reduce=[('sep_conv_3x3', 0), "
     "('sep_conv_3x3', 1)])", r"missing fields \['reduce_concat'\]"),
    ("Genotype(normal=[], other=[])", r"unknown field 'other'; allowed fields"),
    ("Genotype(normal=[('a', 0)", r"ends early"),
    ("Genotype(connectN=3, normal=[])", r"unexpected|GDAS field"),
    ("Genotype(normal=[('a\\'b', 0)])", r"escape sequences are not supported"),
])
def test_parse_rejects_non_literals_and_malformed_text(text, message):
    with pytest.raises(ValueError, match=message):
        parse_genotype_text(text)


def test_parse_never_evaluates(monkeypatch):
    import builtins

    def no_eval(*args, **kwargs):  # pragma: no cover - would only run if the parser evaluated text
        raise AssertionError("the genotype parser must not evaluate text")

    monkeypatch.setattr(builtins, "eval", no_eval)
    monkeypatch.setattr(builtins, "exec", no_eval)
    assert Genotype.from_text(DARTS_V2_TEXT) == _darts_v2()


def test_resolve_accepts_every_form():
    g = _darts_v2()
    assert Genotype.resolve(g) is g
    assert Genotype.resolve(g.to_dict()) == g
    assert Genotype.resolve(g.to_json()) == g
    assert Genotype.resolve(DARTS_V2_TEXT) == g
    for alias in ("darts_v2", "DARTS_V2", "DARTS", "  darts_v2  "):
        assert Genotype.resolve(alias) == g
    with pytest.raises(ValueError, match=r"'nope' is not a published darts architecture; known names: .*darts_v2.*or pass a Genotype"):
        Genotype.resolve("nope")
    with pytest.raises(ValueError, match=r"Genotype JSON text does not parse"):
        Genotype.resolve("{not json")
    with pytest.raises(TypeError, match=r"genotype must be a Genotype, a dict"):
        Genotype.resolve(3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- registry
def test_registry_entries_are_valid_genotypes_with_sources():
    entries = load_registry("darts")
    assert {"darts_v1", "darts_v2", "nasnet", "amoebanet", "pc_darts", "pc_darts_image", "pdarts", "gdas_v1", "snas",
            "mdenas", "darts_minus", "sdarts_rs", "sdarts_adv"} <= set(entries)
    for key, entry in entries.items():
        assert key == key.lower()
        Genotype.from_dict(entry["model_args"]["genotype"])
        assert entry["source"]["repo"].startswith("https://github.com/") and len(entry["source"]["commit"]) == 40
    assert "574" in json.dumps(get_entry("darts", "DARTS_V2")["reported"]) and \
           "NOT reproducible" in get_entry("darts", "darts_v2")["reported"]["note"]


def test_registry_keeps_fairdarts_as_data_only():
    from timm_nas.registry import _load

    raw = _load("darts")
    assert "_fairdarts" in raw and "fairdarts_a" not in load_registry("darts")
    texts = raw["_fairdarts"]["genotypes"]
    assert len(texts) == 7
    with pytest.raises(ValueError, match="FairDARTS-style"):
        Genotype.from_text(texts["FairDARTS_a"]["text"])


# ----------------------------------------------------------------------------------------------- space
def test_space_implements_protocol_and_round_trips():
    space = DartsSpace()
    assert isinstance(space, Space) and space.config_cls is Genotype
    assert space.num_edges == 14 and space.concat == (2, 3, 4, 5) and "none" not in space.operations
    assert DartsSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    assert DartsSpace(steps=5, multiplier=3).concat == (4, 5, 6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(primitives=("none", "conv_9x9")), r"primitives\[1\]='conv_9x9' is not allowed"),
    (dict(primitives=("none",)), r"at least one operation other than 'none'"),
    (dict(primitives=("none", "none", "skip_connect")), r"lists an operation twice"),
    (dict(steps=0), r"steps must be at least 1"),
    (dict(multiplier=7), r"multiplier=7 must be between 1 and steps \+ 2 = 6"),
])
def test_space_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DartsSpace(**kwargs)


def test_space_membership():
    space = DartsSpace()
    assert space.contains(_darts_v2()) and space.fits(_darts_v2())
    nasnet = Genotype.resolve("nasnet")
    assert not space.contains(nasnet) and not space.fits(nasnet)
    with pytest.raises(ValueError, match=r"normal node count=5 is not allowed; allowed values: \[4\]"):
        space.validate(nasnet)
    d = _darts_v2().to_dict()
    d["normal"][1] = ["sep_conv_3x3", 0]  # node 0 reads input 0 twice
    with pytest.raises(ValueError, match=r"normal\[0\] and normal\[1\] both read input 0"):
        space.validate(d)
    other_concat = dict(_darts_v2().to_dict(), reduce_concat=[3, 4, 5])
    assert space.fits(other_concat) and not space.contains(other_concat)
    with pytest.raises(ValueError, match=r"reduce_concat=\[3, 4, 5\] is not allowed"):
        space.validate(other_concat)
    small = DartsSpace(primitives=("none", "skip_connect", "sep_conv_3x3"))
    with pytest.raises(ValueError, match=r"normal\[7\] operation='dil_conv_3x3' is not allowed; allowed values: "
                                         r"\['skip_connect', 'sep_conv_3x3'\]"):
        small.validate(_darts_v2())


def test_sample_is_in_space_and_reproducible():
    space = DartsSpace()
    samples = [space.sample(torch.Generator().manual_seed(s)) for s in range(20)]
    assert all(space.contains(g) for g in samples)
    assert space.sample(7) == space.sample(7) and len(set(samples)) == 20
    ops = {op for g in samples for op, _ in g.normal + g.reduce}
    assert ops == set(space.operations)
    assert DartsSpace(steps=2, multiplier=2).sample(0).normal_steps == 2


def test_mutate_stays_in_space_and_changes_with_probability():
    space = DartsSpace()
    g = _darts_v2()
    assert space.mutate(g, 0, m_prob=0., s_prob=0.) == g
    m = space.mutate(g, 0, m_prob=1., s_prob=0.)
    assert space.contains(m)
    assert all(a[0] != b[0] and a[1] == b[1] for a, b in zip(g.normal + g.reduce, m.normal + m.reduce))
    e = space.mutate(g, 1, m_prob=0., s_prob=1.)
    assert space.contains(e) and e != g
    assert all(a[0] == b[0] for a, b in zip(g.normal, e.normal))
    assert space.mutate(g, 3) == space.mutate(g, 3)


def test_mutate_old_argument_names_still_work_with_a_deprecation():
    space, g = DartsSpace(), _darts_v2()
    with pytest.warns(DeprecationWarning, match="m_prob"):
        old = space.mutate(g, 4, op_prob=0.5, edge_prob=0.3)
    assert old == space.mutate(g, 4, m_prob=0.5, s_prob=0.3)


def test_crossover_takes_whole_nodes_from_parents():
    space = DartsSpace()
    a, b = space.sample(1), space.sample(2)
    c = space.crossover(a, b, 5)
    assert space.contains(c)
    for cell in ("normal", "reduce"):
        pa, pb, pc = getattr(a, cell), getattr(b, cell), getattr(c, cell)
        for node in range(4):
            got = pc[2 * node:2 * node + 2]
            assert got in (pa[2 * node:2 * node + 2], pb[2 * node:2 * node + 2])
    with pytest.raises(IncompatibleError, match="crossover needs two genotypes of this space"):
        space.crossover(a, Genotype.resolve("nasnet"))


def test_largest_and_smallest_bound_the_parameter_count():
    from timm_nas.cost import count_params

    space = DartsSpace()
    big, small = space.largest(), space.smallest()
    assert space.contains(big) and space.contains(small)
    assert {op for op, _ in big.normal} == {"sep_conv_5x5"} and {op for op, _ in small.normal} == {"max_pool_3x3"}
    counts = [count_params(space.sample(s)) for s in range(10)]
    assert count_params(small) <= min(counts) and count_params(big) >= max(counts)


# ---------------------------------------------------------------------------------------------- derive
def test_derive_reproduces_the_original_genotypes(golden):
    folder = golden("darts")
    cases = load_json(folder / "search_cases.json")["derived_genotypes"]
    t = load_tensors(folder / "search_cases.safetensors")
    prefixes = {"alphas_random": "alphas", "alphas_init_1e-3_randn": "alphas_init",
                "alphas_none_boosted": "alphas_none_boosted"}
    space = DartsSpace()
    for case, expected in cases.items():
        p = prefixes[case]
        g = space.derive(torch.softmax(t[f"{p}_normal"], -1), torch.softmax(t[f"{p}_reduce"], -1))
        assert g.to_dict() == {k: expected[k] for k in ("normal", "normal_concat", "reduce", "reduce_concat")}, case
        assert g.to_text() == expected["text"]


def test_derive_ranks_edges_by_softmax_including_none(golden):
    # Raw alphas or a softmax without 'none' pick different edges on the none-boosted case.
    t = load_tensors(golden("darts") / "search_cases.safetensors")
    space = DartsSpace()
    right = space.derive(torch.softmax(t["alphas_none_boosted_normal"], -1),
                         torch.softmax(t["alphas_none_boosted_reduce"], -1))

    def without_none(alphas: torch.Tensor) -> torch.Tensor:  # softmax over the non-'none' columns only
        return torch.cat([torch.zeros(alphas.shape[0], 1), torch.softmax(alphas[:, 1:], -1)], 1)

    wrong = space.derive(without_none(t["alphas_none_boosted_normal"]), without_none(t["alphas_none_boosted_reduce"]))
    raw = space.derive(t["alphas_none_boosted_normal"], t["alphas_none_boosted_reduce"])
    assert right != wrong and right != raw


def test_derive_tie_breaking_and_shape_errors():
    space = DartsSpace()
    uniform = torch.full((14, 8), 1 / 8)
    g = space.derive(uniform, uniform)
    # equal strengths: the lower input index wins, and the first non-'none' primitive is chosen
    assert g.normal[:4] == (("max_pool_3x3", 0), ("max_pool_3x3", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1))
    with pytest.raises(ValueError, match=r"weights_reduce must have shape \(14, 8\)"):
        space.derive(uniform, uniform[:13])
    no_none = DartsSpace(primitives=("skip_connect", "sep_conv_3x3"))
    w = torch.tensor([[0.2, 0.8]] * 14)
    assert {op for op, _ in no_none.derive(w, w).normal} == {"sep_conv_3x3"}


def test_operation_names_match_the_layer_factory():
    from timm_nas.layers.darts_ops import DARTS_OP_NAMES

    assert set(DARTS_OP_NAMES) == set(OPERATIONS) and OPERATIONS[:8] == PRIMITIVES
