"""DARTS networks: exact parameter counts, MACs, parity with the original's numbers, checkpoint conversion and the
timm model API."""
from __future__ import annotations

import pytest
import timm
import torch

import timm_nas
from timm_nas.cost import count_macs, count_params, flop_counter_macs, measure_macs, real_params
from timm_nas.models.darts import DartsNet, DartsSearchNet, checkpoint_filter_fn
from timm_nas.registry import load_registry
from timm_nas.spaces.darts import Genotype

from conftest import darts_search_golden, load_tensors


# one intra-op thread: see conftest.one_thread
pytestmark = pytest.mark.usefixtures("one_thread")


def _meta(name: str, **kwargs) -> torch.nn.Module:
    return timm.create_model(name, device="meta", **kwargs)


# ---------------------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("name, auxiliary, expected", [
    ("darts_v2_cifar", False, 3_349_342), ("darts_v2_cifar", True, 3_825_768),
    ("darts_v1_cifar", False, 3_169_414), ("darts_v1_cifar", True, 3_645_840),
    ("darts_v2_imagenet", False, 4_718_752), ("darts_v2_imagenet", True, 5_979_528),
    ("darts_v1_imagenet", True, 5_771_208), ("darts_v1_imagenet", False, 4_510_432),
    ("nasnet_cifar", True, 4_288_944), ("nasnet_cifar", False, 3_830_950),
    ("amoebanet_cifar", True, 3_603_072), ("amoebanet_cifar", False, 3_145_078),
    ("nasnet_imagenet", True, 6_800_520), ("nasnet_imagenet", False, 5_564_320),
    ("amoebanet_imagenet", True, 5_863_560), ("amoebanet_imagenet", False, 4_627_360),
    ("darts_cifar", False, 3_349_342), ("darts_imagenet", False, 4_718_752),
])
def test_published_parameter_counts(name, auxiliary, expected):
    """The counts of the original code (reference section 8), exactly."""
    model = _meta(name, auxiliary=auxiliary)
    assert real_params(model) == expected
    stem = "imagenet" if name.endswith("imagenet") else "cifar"
    assert count_params(model.genotype, stem_type=stem, auxiliary=auxiliary) == expected


def test_search_network_parameter_count():
    model = _meta("darts_search")
    assert sum(p.numel() for p in model.weight_parameters()) == 1_930_618
    assert real_params(model) == 1_930_618 + 2 * 14 * 8
    names = [n for n, _ in model.named_parameters()]
    assert {"alphas_normal", "alphas_reduce"} <= set(names) and names[-1] == "classifier.bias"


@pytest.mark.parametrize("key", sorted(load_registry("darts")))
def test_analytic_params_equal_real_for_every_registry_genotype(key):
    measured = load_registry("darts")[key]["measured"]
    for kind in ("cifar", "imagenet"):
        model = _meta(f"{key}_{kind}", auxiliary=True)
        total = real_params(model)
        no_aux = total - sum(p.numel() for n, p in model.named_parameters() if n.startswith("auxiliary_head."))
        assert count_params(model.genotype, stem_type=kind, auxiliary=True) == total
        assert count_params(model.genotype, stem_type=kind) == no_aux
        # the registry's recorded counts are those of the registered models
        assert (measured[f"{kind}_params_with_aux"], measured[f"{kind}_params"]) == (total, no_aux)
    assert measured["cifar_macs_32"] == count_macs(model.genotype, stem_type="cifar")
    assert measured["imagenet_macs_224"] == count_macs(model.genotype, stem_type="imagenet")


def test_analytic_params_other_shapes():
    g = Genotype.resolve("pc_darts")
    for kw in (dict(C=8, layers=5), dict(C=10, layers=7, num_classes=0), dict(C=16, layers=2, in_chans=1)):
        model = _meta("darts_cifar", genotype=g.to_dict(), auxiliary=True, **kw)
        assert count_params(g, stem_type="cifar", auxiliary=True, **kw) == real_params(model)


# ------------------------------------------------------------------------------------------------- MACs
ZERO = {"aten::batch_norm": lambda i, o: 0, "aten::adaptive_avg_pool2d": lambda i, o: 0}


def test_imagenet_macs_529_9m():
    """Convention: conv + linear multiply-accumulates (BatchNorm, ReLU, pooling, additions not counted)."""
    g = Genotype.resolve("darts_v2")
    assert count_macs(g, stem_type="imagenet") == 529_911_552
    assert count_macs(g, stem_type="imagenet") != 574_000_000  # the paper's figure is not reproducible
    assert count_macs(Genotype.resolve("darts_v1"), stem_type="imagenet") == 505_864_704
    assert count_macs(g, stem_type="cifar") == 528_359_040  # 528.4M conv + 5,760 classifier (reference: 528.4M conv)
    model = timm.create_model("darts_v2_imagenet").eval()
    x = torch.randn(1, 3, 224, 224)
    assert flop_counter_macs(model, x) == 529_911_552
    # fvcore counts BatchNorm (and the adaptive pool) unless told not to; with them zeroed it agrees.
    assert measure_macs(model, x, extra_handles=ZERO) == 529_911_552


@pytest.mark.parametrize("key", ["nasnet", "amoebanet", "gdas_v1", "pdarts"])
def test_analytic_macs_equal_measured(key):
    for kind, size in (("cifar", 32), ("imagenet", 64)):
        model = timm.create_model(f"{key}_{kind}", C=8, layers=5, num_classes=5).eval()
        expected = flop_counter_macs(model, torch.randn(1, 3, size, size))
        assert count_macs(model.genotype, stem_type=kind, C=8, layers=5, num_classes=5, img_size=size) == expected


def test_cost_rejects_unknown_network():
    with pytest.raises(ValueError, match=r"stem_type='mnist' is not allowed; allowed values: \['cifar', 'imagenet'\]"):
        count_params(Genotype.resolve("darts_v2"), stem_type="mnist")


# -------------------------------------------------------------------------------------- fixture parity
def _eval_model(golden, dtype=torch.float32):
    folder = golden("darts")
    sd = load_tensors(folder / "eval_state_dict.safetensors")
    model = timm.create_model("darts_cifar", genotype="DARTS_V2", C=8, layers=5, auxiliary=True).to(dtype)
    state = checkpoint_filter_fn(sd, model)
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()})
    return model, load_tensors(folder / "eval_cases.safetensors")


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a - ref).abs().max() / ref.abs().max()).item()


def test_genotype_network_parity_float32(golden):
    model, t = _eval_model(golden)
    assert real_params(model) == 456_100 and sum(p.numel() for n, p in model.named_parameters()
                                                 if "auxiliary" not in n) == 37_018
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(t["input"]), t["logits_eval"], atol=1e-5, rtol=1e-4)
        logits, aux = model.forward_with_aux(t["input"])
        assert aux is None
        model.train()
        logits, aux = model.forward_with_aux(t["input_train"])
    torch.testing.assert_close(logits, t["logits_train"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(aux, t["logits_aux_train"], atol=1e-5, rtol=1e-4)


def test_genotype_network_running_stats_after_train_forward(golden):
    model, t = _eval_model(golden)
    model.train()
    with torch.no_grad():
        model.forward_with_aux(t["input_train"])
    ours = model.state_dict()
    prefix = "running_after_train_forward."
    expected = {k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)}
    checked = 0
    for key, value in expected.items():  # original key names
        mapped = key.replace("._ops.", ".ops.")
        torch.testing.assert_close(ours[mapped], value, atol=1e-6, rtol=1e-5)
        checked += 1
    assert checked == 92


def test_genotype_network_parity_float64(golden):
    model, t = _eval_model(golden, torch.float64)
    with torch.no_grad():
        model.eval()
        assert _rel(model(t["input"].double()), t["logits_eval_f64"]) <= 1e-9
        model.train()
        logits, aux = model.forward_with_aux(t["input_train"].double())
    assert _rel(logits, t["logits_train_f64"]) <= 1e-9
    assert _rel(aux, t["logits_aux_train_f64"]) <= 1e-9


def _search_model(golden, dtype=torch.float32):
    return darts_search_golden(dtype)


def test_search_network_parity(golden):
    model, t = _search_model(golden)
    assert sum(p.numel() for p in model.weight_parameters()) == 136_182
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(t["input"]), t["logits_eval"], atol=1e-5, rtol=1e-4)
        model.train()
        torch.testing.assert_close(model(t["input"]), t["logits_train"], atol=1e-5, rtol=1e-4)
    m64, _ = _search_model(golden, torch.float64)
    with torch.no_grad():
        m64.eval()
        assert _rel(m64(t["input"].double()), t["logits_eval_f64"]) <= 1e-9
        m64.train()
        assert _rel(m64(t["input"].double()), t["logits_train_f64"]) <= 1e-9


def test_search_network_genotype_method(golden):
    from conftest import load_json

    model, t = _search_model(golden)
    cases = load_json(golden("darts") / "search_cases.json")["derived_genotypes"]
    assert model.derive_arch().to_text() == cases["alphas_random"]["text"]
    with torch.no_grad():
        model.alphas_normal.copy_(t["alphas_none_boosted_normal"])
        model.alphas_reduce.copy_(t["alphas_none_boosted_reduce"])
    assert model.derive_arch().to_text() == cases["alphas_none_boosted"]["text"]


# ------------------------------------------------------------------------------------ checkpoint conversion
def _original_keys(model: DartsNet) -> dict[str, torch.Tensor]:
    """Our state dict in the original's key layout (as the original code would save it, PyTorch 0.3 style)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        k = k.replace(".ops.", "._ops.")
        if model.stem_type == "imagenet" and k.startswith("stem."):
            k = "stem0." + k[len("stem."):]
        out[k] = v
    return out


def test_filter_converts_original_cifar_checkpoints():
    src = timm.create_model("darts_cifar", C=8, layers=5, auxiliary=True).eval()
    original = {"module." + k: v for k, v in _original_keys(src).items()}  # saved from nn.DataParallel
    dst = timm.create_model("darts_cifar", C=8, layers=5, auxiliary=True)
    dst.load_state_dict(checkpoint_filter_fn({"state_dict": original, "epoch": 3}, dst))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst.eval()(x), src(x), atol=0, rtol=0)
    no_aux = timm.create_model("darts_cifar", C=8, layers=5)  # the training-only head is dropped
    no_aux.load_state_dict(checkpoint_filter_fn(original, no_aux))
    with torch.no_grad():
        torch.testing.assert_close(no_aux.eval()(x), src(x), atol=0, rtol=0)


def test_filter_converts_original_imagenet_checkpoints():
    src = timm.create_model("darts_imagenet", C=8, layers=5, num_classes=3).eval()
    original = _original_keys(src)
    assert any(k.startswith("stem0.") for k in original) and any(k.startswith("stem1.") for k in original)
    dst = timm.create_model("darts_imagenet", C=8, layers=5, num_classes=3)
    dst.load_state_dict(checkpoint_filter_fn(original, dst))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst.eval()(x), src(x), atol=0, rtol=0)


def test_filter_search_network_with_and_without_alphas():
    src = timm.create_model("darts_search", C=4, layers=3)
    original = {k.replace(".edges.", "._ops.").replace(".ops.", "._ops."): v for k, v in src.state_dict().items()
                if not k.startswith("alphas_") and not k.endswith("num_batches_tracked")}
    assert any("._ops.3._ops.4.op.1.weight" in k for k in original)
    dst = timm.create_model("darts_search", C=4, layers=3)
    before = dst.alphas_normal.detach().clone()
    dst.load_state_dict(checkpoint_filter_fn(original, dst))  # no alphas: the model keeps its own
    assert torch.equal(dst.alphas_normal, before)
    dst.load_state_dict(checkpoint_filter_fn({"state_dict": original, "alphas_normal": src.alphas_normal.detach(),
                                              "alphas_reduce": src.alphas_reduce.detach()}, dst))
    assert torch.equal(dst.alphas_normal, src.alphas_normal) and torch.equal(dst.alphas_reduce, src.alphas_reduce)
    assert all(torch.equal(a, b) for a, b in zip(dst.weight_parameters(), src.weight_parameters()))


def test_filter_rejects_other_architectures_with_a_clear_error():
    src = timm.create_model("darts_cifar", C=8, layers=5)
    other = timm.create_model("darts_cifar", genotype="darts_v1", C=8, layers=5)
    with pytest.raises(ValueError, match=r"checkpoint does not match DartsNet: \d+ unexpected keys .*missing keys"
                                         r".*Check the genotype, C, layers"):
        checkpoint_filter_fn(_original_keys(src), other)


def test_timm_loads_original_file_through_the_filter(tmp_path):
    src = timm.create_model("darts_cifar", C=8, layers=5, auxiliary=True).eval()
    path = tmp_path / "cifar10_model.pt"
    torch.save(_original_keys(src), path)
    model = timm.create_model("darts_cifar", C=8, layers=5, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), atol=0, rtol=0)


# ------------------------------------------------------------------------------------------- timm API
def test_registry_entrypoints_are_generated_from_data():
    names = set(timm_nas.list_models())
    for key in load_registry("darts"):
        assert {f"{key}_cifar", f"{key}_imagenet"} <= names
    model = _meta("pc_darts_imagenet")
    assert model.genotype == Genotype.resolve("PC_DARTS_cifar") and model.stem_type == "imagenet"
    assert model.auxiliary_head is None and model.num_classes == 1000


@pytest.mark.parametrize("genotype", ["darts_v1", "DARTS_V1", "GDAS_V1", "{}"])
def test_genotype_argument_forms(genotype):
    if genotype == "{}":
        genotype = Genotype.resolve("darts_v1").to_json()
    model = _meta("darts_cifar", genotype=genotype)
    assert model.genotype == Genotype.resolve(genotype)
    text_model = _meta("darts_cifar", genotype=model.genotype.to_text())
    assert text_model.genotype == model.genotype


def test_bad_arguments_raise():
    with pytest.raises(TypeError):
        timm.create_model("darts_cifar", device="meta", not_an_arg=1)
    with pytest.raises(ValueError, match=r"stem_type='mnist' is not allowed"):
        timm.create_model("darts_cifar", device="meta", stem_type="mnist")
    with pytest.raises(ValueError, match=r"'nope' is not a published darts architecture"):
        timm.create_model("darts_cifar", device="meta", genotype="nope")


def test_forward_with_aux_and_head_api():
    model = timm.create_model("darts_cifar", C=8, layers=5, auxiliary=True, num_classes=4)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    logits, aux = model.forward_with_aux(x)
    assert logits.shape == aux.shape == (2, 4)
    assert model(x).shape == (2, 4)  # plain forward: logits only, the aux head unused
    model.eval()
    assert model.forward_with_aux(x)[1] is None
    model.reset_classifier(6)
    model.train()
    logits, aux = model.forward_with_aux(x)
    assert logits.shape == aux.shape == (2, 6)
    model.reset_classifier(0, "")
    assert model.eval()(x).shape == (2, model.num_features, 8, 8)
    no_aux = timm.create_model("darts_cifar", C=8, layers=5).train()
    assert no_aux.forward_with_aux(x)[1] is None


def test_drop_path_skips_identities_and_ramps():
    model = timm.create_model("darts_cifar", C=8, layers=5, drop_path_rate=0.5).train()
    assert model.drop_path_prob == 0.5
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    assert not torch.allclose(a, b)
    model.drop_path_prob = 0.
    torch.manual_seed(2)
    c = model(x)
    torch.manual_seed(3)
    assert torch.equal(c, model(x))
    cell = model.cells[0]
    # DARTS_V2's normal cell: skip_connect pairs are Identity -> never dropped
    assert [cell.droppable[j] for j, (op, _) in enumerate(model.genotype.normal)] == \
           [op != "skip_connect" for op, _ in model.genotype.normal]


def test_drop_path_formula_matches_original():
    from timm_nas.layers.darts_ops import darts_drop_path

    x = torch.randn(64, 2, 3, 3)
    torch.manual_seed(0)
    y = darts_drop_path(x, 0.25)
    kept = (y != 0).flatten(1).any(1)
    torch.testing.assert_close(y[kept], x[kept] / 0.75, atol=0, rtol=0)
    assert 0 < kept.sum() < 64


def test_grad_checkpointing_same_outputs_and_grads():
    model = timm.create_model("darts_cifar", C=8, layers=5).train()
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for g, r in zip((p.grad for p in model.parameters()), ref):
        torch.testing.assert_close(g, r)


def test_features_only():
    model = timm.create_model("darts_cifar", C=8, layers=5, features_only=True).eval()
    feats = model(torch.randn(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == model.feature_info.channels() == [24, 32, 64, 128]
    assert [f.shape[-1] for f in feats] == [32, 32, 16, 8]
    net = timm.create_model("darts_imagenet", C=8, layers=5, features_only=True).eval()
    assert [f.shape[-1] for f in net(torch.randn(1, 3, 64, 64))] == [64 // r for r in net.feature_info.reduction()]


def test_search_network_api():
    model = timm.create_model("darts_search", C=4, layers=3, steps=3, multiplier=2, num_classes=5,
                              primitives=["none", "skip_connect", "sep_conv_3x3"])
    assert isinstance(model, DartsSearchNet)
    assert model.alphas_normal.shape == (2 + 3 + 4, 3) and model.num_features == 2 * 16
    assert model.arch_parameters() == [model.alphas_normal, model.alphas_reduce]
    names = {id(p) for p in model.weight_parameters()}
    assert id(model.alphas_normal) not in names and len(names) + 2 == len(list(model.parameters()))
    assert model.alphas_normal.abs().max() < 0.01  # 1e-3 * randn
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert model.alphas_normal.grad is not None and model.alphas_normal.grad.abs().sum() > 0
    g = model.derive_arch()
    assert g.normal_steps == 3 and g.normal_concat == (3, 4) and model.space.contains(g)
    assert model.no_weight_decay() == {"alphas_normal", "alphas_reduce"}


@pytest.mark.parametrize("value", [
    "darts_v1",                                                    # registry name
    Genotype.resolve("darts_v1").to_json(),                        # the genotype dict (JSON)
    Genotype.resolve("darts_v1").to_text(),                        # the original text
])
def test_train_py_model_kwargs(value):
    """timm's train.py: ``--model-kwargs genotype=...`` (parsed by timm's ParseKwargs) plus the factory arguments it
    always passes (``drop_rate=0.0``; the ``None`` ones are dropped by create_model)."""
    import argparse

    from timm.utils import ParseKwargs

    parser = argparse.ArgumentParser()
    parser.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs)
    kwargs = parser.parse_args(["--model-kwargs", f"genotype={value}"]).model_kwargs
    model = timm.create_model("darts_cifar", pretrained=False, in_chans=3, num_classes=10, drop_rate=0.0,
                              drop_path_rate=None, drop_block_rate=None, global_pool=None, bn_momentum=None,
                              bn_eps=None, scriptable=None, checkpoint_path=None, device="meta", **kwargs)
    assert model.genotype == Genotype.resolve("darts_v1") and model.auxiliary_head is None


@pytest.mark.parametrize("name", ["darts_v2_cifar", "darts_search"])
def test_unknown_global_pool_is_a_clear_error(name):
    with pytest.raises(ValueError, match=r"global_pool='bogus' is not supported; choose one of \['', 'avg', 'max'"):
        _meta(name, global_pool="bogus")
    model = _meta(name)
    with pytest.raises(ValueError, match=r"global_pool='mean' is not supported"):
        model.reset_classifier(5, "mean")
    model.reset_classifier(5, "catavgmax")  # every pooling timm builds is accepted
    assert model.head_hidden_size == 2 * model.num_features and model.get_classifier().out_features == 5
