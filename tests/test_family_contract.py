"""The family contract, asserted for every declared family (``timm_nas.family.families()``).

Nothing here names a family: a fifth family passes or fails these tests by its declaration alone (the tiny
instance each test builds comes from the family's ``example_args``).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

import timm_nas  # noqa: F401  (registers the models)
from timm_nas import cost
from timm_nas.family import Family, families, family_of, get_family
from timm_nas.registry import load_registry
from timm_nas.search import Constraints, EvolutionSearch, RandomSearch, run_search

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = sorted(families())
SEARCHABLE = [n for n in FAMILIES if families()[n].space is not None]


def _weight_sharing(fam: Family) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(fam.weight_sharing_entrypoint, **fam.example_args).eval()


def _space(fam: Family, model: torch.nn.Module):
    return model.space


def _config(fam: Family, model: torch.nn.Module):
    """An architecture of the tiny instance: a sample of its space, or what the search network derives."""
    if fam.space is not None:
        return _space(fam, model).sample(torch.Generator().manual_seed(1))
    return model.derive_arch()


def _published(fam: Family) -> tuple[str, dict]:
    """The first registry entry that holds an architecture of the family's config type."""
    for key, entry in load_registry(fam.name).items():
        if fam.arch_arg in entry.get("model_args", {}):
            return key, entry["model_args"][fam.arch_arg]
    raise AssertionError(f"registry/{fam.name}.json has no {fam.arch_arg!r} architecture")


def _input(fam: Family, model: torch.nn.Module) -> torch.Tensor:
    """Two images of the tiny instance's input size (``img_size`` of the example, else the model's default)."""
    size = fam.example_args.get("img_size", model.pretrained_cfg["input_size"][-1])
    chans = model.pretrained_cfg["input_size"][0]
    return torch.randn(2, chans, size, size, generator=torch.Generator().manual_seed(2))


# ------------------------------------------------------------------------------------------ the declaration
def test_every_family_is_declared_once_in_its_model_module():
    assert FAMILIES == ["autoformer", "darts", "nb201", "s3", "spvit"]
    for name, fam in families().items():
        assert fam.module == f"timm_nas.models.{name}"
        assert get_family(name.upper()) is fam
        assert family_of(fam.static_entrypoint) is fam and family_of(fam.weight_sharing_entrypoint) is fam
        assert set(fam.models()) <= set(timm_nas.list_models())
    assert sorted(n for f in families().values() for n in f.models()) == sorted(timm_nas.list_models())
    assert family_of("vit_tiny_patch16_224") is None
    with pytest.raises(ValueError, match="unknown model family 'nope'; known families: .*autoformer"):
        get_family("nope")


# ------------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("name", SEARCHABLE)
def test_a_sample_is_in_the_space(name):
    fam = get_family(name)
    space = _space(fam, _weight_sharing(fam))
    for seed in range(5):
        cfg = space.sample(torch.Generator().manual_seed(seed))
        assert isinstance(cfg, fam.config) and space.contains(cfg) and space.fits(cfg)


@pytest.mark.parametrize("name", FAMILIES)
def test_config_json_round_trip(name):
    fam = get_family(name)
    cfg = _config(fam, _weight_sharing(fam))
    text = json.dumps(cfg.to_dict())
    assert fam.config.from_dict(json.loads(text)) == cfg
    assert fam.config.resolve(text) == cfg


@pytest.mark.parametrize("name", FAMILIES)
def test_the_architecture_argument_takes_a_name_a_dict_and_the_originals_format(name):
    fam = get_family(name)
    key, data = _published(fam)
    cfg = fam.config.from_dict(data)
    assert fam.config.resolve(key) == fam.config.resolve(key.upper()) == cfg
    assert fam.config.resolve(data) == fam.config.resolve(cfg) == cfg
    assert fam.config.resolve(cfg.to_original()) == cfg
    # ... and through timm, for the generic static entrypoint (a registry name used to fail for two families)
    for value in (key, data, cfg.to_original()):
        model = timm.create_model(fam.static_entrypoint, device="meta", **{fam.arch_arg: value})
        assert getattr(model, fam.arch_arg) == cfg if hasattr(model, fam.arch_arg) else True


@pytest.mark.parametrize("name", SEARCHABLE)
def test_a_bad_config_is_one_value_error_naming_field_value_and_choices(name):
    fam = get_family(name)
    space = _space(fam, _weight_sharing(fam))
    good = space.sample(torch.Generator().manual_seed(0)).to_dict()
    field = next(iter(good))
    bad = dict(good)
    bad[field] = _corrupt(good[field])
    with pytest.raises(ValueError) as err:
        space.validate(fam.config.resolve(bad))
    msg = str(err.value)
    assert field in msg and str(_leaf(bad[field])) in msg, msg
    assert any(w in msg for w in ("allowed", "choices", "one of", "known")), msg


def _corrupt(value):
    """The same structure with its first leaf replaced by a value no space offers."""
    if isinstance(value, (list, tuple)):
        return [_corrupt(value[0]), *value[1:]]
    if isinstance(value, bool) or isinstance(value, int):
        return 999_983
    if isinstance(value, float):
        return 99.5
    return "no_such_op"


def _leaf(value):
    while isinstance(value, (list, tuple)):
        value = value[0]
    return value


# ------------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", FAMILIES)
def test_weight_sharing_model_equals_its_extracted_static_model(name):
    fam = get_family(name)
    model = _weight_sharing(fam)
    cfg = _config(fam, model)
    static = model.extract(cfg).eval()
    assert isinstance(static, fam.static_cls)
    assert getattr(static, fam.arch_arg, cfg) == cfg
    if not fam.inherits_weights:
        return  # the derived network is a fresh model to train (checked above: its architecture)
    x = _input(fam, static)
    with torch.no_grad():
        if fam.space is not None:
            with model.use_subnet(cfg):
                expected = model(x)
        else:
            expected = model(x)
        torch.testing.assert_close(static(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_analytic_cost_equals_the_real_model(name):
    fam = get_family(name)
    model = _weight_sharing(fam)
    static = model.extract(_config(fam, model)).eval()
    params, macs = cost.model_cost(static)
    assert params == cost.real_params(static)
    assert macs == cost.measure_macs(static, _input(fam, static)[:1])


@pytest.mark.parametrize("name", FAMILIES)
def test_export_reloads_with_identical_logits(name, tmp_path):
    from timm_nas import hub

    fam = get_family(name)
    model = _weight_sharing(fam)
    static = model.extract(_config(fam, model)).eval()
    folder = hub.export(static, tmp_path / "export")
    reloaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert type(reloaded) is fam.static_cls
    x = _input(fam, static)
    with torch.no_grad():
        assert torch.equal(reloaded(x), static(x))


# ------------------------------------------------------------------------------------------------- search
def _params_scorer(fam: Family, model: torch.nn.Module):
    def score(cfg) -> float:
        return float(cost.count_params(cfg, **model.cost_args))
    return score


@pytest.mark.parametrize("strategy", ["random", "evolution"])
@pytest.mark.parametrize("name", SEARCHABLE)
def test_random_and_evolutionary_search_run(name, strategy, tmp_path):
    fam = get_family(name)
    model = _weight_sharing(fam)
    space = _space(fam, model)
    if strategy == "random":
        search = RandomSearch(space, num_candidates=6, constraints=Constraints(), seed=0)
    else:
        search = EvolutionSearch(space, constraints=Constraints(), seed=0, population=6, topk=3, generations=2,
                                 mutations=3, crossovers=2)
    result = run_search(search, _params_scorer(fam, model), out=tmp_path / "run", plot=False)
    assert result.best is not None and space.contains(result.best.config)
    assert len(result.candidates) >= 6


# ------------------------------------------------------------------------------------ older exports still load
_OLD_EXPORTS = Path(__file__).parent / "assets" / "exports_cc8874a"


@pytest.mark.parametrize("name", ["autoformer", "darts", "s3", "spvit"])
def test_exports_made_before_the_family_contract_still_load(name):
    """Folders written by the exporter before the family declarations (see the assets' README) load through
    ``local-dir:`` into the same model and give the same logits."""
    folder = _OLD_EXPORTS / name
    expected = json.loads((folder / "expected.json").read_text())
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert family_of(model) is get_family(name)
    x = torch.randn(*expected["input"]["shape"],
                    generator=torch.Generator().manual_seed(expected["input"]["generator_seed"]))
    with torch.no_grad():
        torch.testing.assert_close(model(x), torch.tensor(expected["logits"]), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ renamed operations
@pytest.mark.parametrize("name", FAMILIES)
def test_former_operation_names_still_work_with_a_deprecation(name):
    """One name per operation across families; the former spellings keep working for one release."""
    fam = get_family(name)
    model = _weight_sharing(fam)
    cfg = _config(fam, model)
    former = {"autoformer": ("subnet_model_args", "static_model_args"), "spvit": ("pruned_model_args",
                                                                                 "static_model_args"),
              "darts": ("genotype", "derive_arch")}.get(name)
    if former is not None:
        old, new = former
        with pytest.warns(DeprecationWarning, match=new):
            value = getattr(model, old)()
        assert value == getattr(model, new)()
    if hasattr(model, "active_subnet"):  # supernets: last_subnet (a property) became last_arch()
        with torch.no_grad():
            model(_input(fam, model)[:1])
        with pytest.warns(DeprecationWarning, match="last_arch"):
            assert model.last_subnet == model.last_arch() == model.active_subnet
    assert isinstance(model.static_model_args(cfg), dict)
    assert all(isinstance(p, torch.nn.Parameter) for p in getattr(model, "weight_parameters", list)())
