"""Parity with the original SPViT code (golden fixtures in ../shared/fixtures/spvit, configuration A)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from conftest import load_json, load_tensors
from timm_nas.models.spvit import clamp_probs
from timm_nas.models.spvit import (
    checkpoint_filter_fn,
    derive_arch_from_state_dict,
    search_checkpoint_filter_fn,
    search_to_finetune_state_dict,
    to_param_opt_layout,
)
from timm_nas.spaces.spvit import SPViTArch

ACT = dict(atol=1e-4, rtol=1e-4)  # the fixture README's tolerance for activations / logits


@pytest.fixture
def fx(golden):
    folder: Path = golden("spvit")
    cases = load_json(folder / "cases.json")
    return dict(
        cases=cases,
        search_sd=load_tensors(folder / "search_state_dict.safetensors"),
        search=load_tensors(folder / "search_cases.safetensors"),
        ft_sd=load_tensors(folder / "finetune_state_dict.safetensors"),
        ft=load_tensors(folder / "finetune_cases.safetensors"),
        param_opt=load_tensors(folder / "finetune_param_opt_state_dict.safetensors"),
    )


def _shape(cases):
    c = cases["constructor"]
    return {k: c[k] for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "num_classes")}


def _search_model(fx):
    c = fx["cases"]["constructor"]
    m = timm.create_model("spvit_search_deit", theta=c["theta"], loss_lambda=c["loss_lambda"],
                          target_flops=c["target_flops"], **_shape(fx["cases"]))
    m.load_state_dict(search_checkpoint_filter_fn(fx["search_sd"], m), strict=True)
    return m


def _hook_outputs(model):
    outs = {}
    for i, blk in enumerate(model.blocks):
        blk.register_forward_hook(lambda mod, inp, out, i=i: outs.__setitem__(f"block{i}.out", out))
        if hasattr(blk, "attn"):
            blk.attn.register_forward_hook(lambda mod, inp, out, i=i: outs.__setitem__(f"block{i}.attn_out", out))
    return outs


def test_search_eval_outputs_decisions_and_complexity(fx):
    m = _search_model(fx).eval()
    ref = fx["search"]
    outs = _hook_outputs(m)
    with torch.no_grad():
        logits = m(ref["input"])
    torch.testing.assert_close(logits, ref["logits"], **ACT)
    for i in range(len(m.blocks)):
        torch.testing.assert_close(outs[f"block{i}.attn_out"], ref[f"block{i}.attn_out"], **ACT)
        torch.testing.assert_close(outs[f"block{i}.out"], ref[f"block{i}.out"], **ACT)
    gates = m.gates()
    assert torch.equal(torch.stack([g for g, _ in gates]), ref["kernel_indicators"])
    torch.testing.assert_close(torch.stack([pa for pa, _ in m.gate_probs()]), ref["kernel_probs"])
    assert torch.equal(torch.stack([f.sum() for _, f in gates]), ref["ffn_indicator_sums"])
    arch = m.derive_arch()
    assert list(arch.ops) == fx["cases"]["op_per_layer_eval"]
    assert [list(k) for k in arch.ffn_kept] == fx["cases"]["ffn_kept_indices_per_layer"]
    comp = m.complexity()
    for key in ("flops", "att_flops", "ffn_flops"):
        torch.testing.assert_close(comp[key].reshape(1), ref[key], rtol=1e-4, atol=0)
    loss = m.complexity_loss()
    torch.testing.assert_close(loss.reshape(1), ref["bops_loss"], rtol=1e-4, atol=0)
    loss.backward()
    grads = torch.stack([b.attn.kernel_thresholds.grad for b in m.blocks])
    torch.testing.assert_close(grads, ref["grad.kernel_thresholds"], rtol=1e-3, atol=1e-12)
    for i, b in enumerate(m.blocks):
        torch.testing.assert_close(b.mlp.ffn_thresholds.grad, ref[f"grad.ffn_thresholds.{i}"], rtol=1e-3, atol=1e-12)


def test_search_train_mode_with_injected_gate_noise(fx):
    m = _search_model(fx).train()
    ref = fx["search"]
    noise = []
    with torch.no_grad():  # the recorded logits minus the probability part: the logistic noise the original drew
        for i, (pa, pf) in enumerate(m.gate_probs()):
            inv = lambda logits, p: logits - (clamp_probs(p).log() - (-clamp_probs(p)).log1p())  # noqa: E731
            noise.append((inv(ref[f"train.gate_logits.attn.{i}"], pa), inv(ref[f"train.gate_logits.ffn.{i}"], pf)))
    logits = m(ref["input"], gate_noise=noise)
    sampled = m.last_arch()
    assert list(sampled.ops) == fx["cases"]["train_mode_sampled_ops"]
    assert list(sampled.ffn_hidden) == fx["cases"]["train_mode_sampled_ffn_kept_count"]
    torch.testing.assert_close(logits, ref["train.logits"], **ACT)
    loss_cls = F.cross_entropy(logits, ref["labels"])
    loss_bop = m.complexity_loss()
    torch.testing.assert_close(loss_cls.reshape(1), ref["train.loss_cls"], rtol=1e-4, atol=0)
    torch.testing.assert_close(loss_bop.reshape(1), ref["train.loss_bop"], rtol=1e-4, atol=0)
    (loss_cls + loss_bop).backward()
    grads = torch.stack([b.attn.kernel_thresholds.grad for b in m.blocks])
    torch.testing.assert_close(grads, ref["train.grad.kernel_thresholds"], rtol=1e-3, atol=1e-7)
    for i, b in enumerate(m.blocks):
        torch.testing.assert_close(b.mlp.ffn_thresholds.grad, ref[f"train.grad.ffn_thresholds.{i}"], rtol=1e-3,
                                   atol=1e-7)
        torch.testing.assert_close(b.attn.head_probs.grad, ref[f"train.grad.head_probs.{i}"], rtol=1e-3, atol=1e-5)


def test_search_to_finetune_conversion_is_exact(fx):
    ft = search_to_finetune_state_dict(fx["search_sd"])
    assert set(ft) == set(fx["ft_sd"])
    for k, v in fx["ft_sd"].items():
        assert torch.equal(ft[k], v), k
    # the unexpected keys of the original's strict=False load are exactly what the conversion dropped
    dropped = set(fx["search_sd"]) - set(ft)
    assert dropped == set(fx["cases"]["conversion_load_state_dict"]["unexpected_keys"])
    assert derive_arch_from_state_dict(fx["search_sd"]).ops == tuple(fx["cases"]["op_per_layer_eval"])


def _pruned(fx, **kw):
    arch = SPViTArch.from_original(fx["cases"]["msa_indicators_eval (assigned_indicators)"],
                                   [m for k, m in fx["search_sd"].items() if k.endswith("assigned_indicator_index")])
    return timm.create_model("spvit_deit", arch=arch.to_dict(), **_shape(fx["cases"]), **kw)


def test_pruned_model_loads_the_finetune_layout_and_matches_its_outputs(fx, tmp_path):
    path = tmp_path / "spvit_ft.pth"  # the authors' files are torch.save dicts with training state
    torch.save({"model": fx["ft_sd"], "epoch": 129, "args": argparse.Namespace(model="spvit")}, path)
    m = timm.create_model("spvit_deit", pretrained=True, pretrained_cfg_overlay=dict(file=str(path), custom_load=True,
                                                                                      num_classes=10),
                          arch=_pruned(fx).arch.to_dict(), **_shape(fx["cases"])).eval()
    assert m.skip_mode == "original"
    ref = fx["ft"]
    outs = _hook_outputs(m)
    with torch.no_grad():
        torch.testing.assert_close(m(ref["input"]), ref["logits"], **ACT)
    for i in range(len(m.blocks)):
        torch.testing.assert_close(outs[f"block{i}.attn_out"], ref[f"block{i}.attn_out"], **ACT)
        torch.testing.assert_close(outs[f"block{i}.out"], ref[f"block{i}.out"], **ACT)


def test_materialised_kernels_equal_the_authors_optimised_checkpoint(fx):
    m = _pruned(fx)
    m.load_state_dict(checkpoint_filter_fn(fx["ft_sd"], m), strict=True)
    ours = to_param_opt_layout(m.state_dict())  # key map: attn.qkv -> attn.qk + attn.v, all else identical

    def same(key: str, a: torch.Tensor, b: torch.Tensor) -> None:
        if key.endswith(("bconv.0.weight", "bconv.0.bias", "bconv.3.weight")):
            # computed by matrix products (bconv_weights): equal up to float rounding, whose last bits depend on
            # the CPU's matmul kernels (seen: 1-310 ulp, relative 1e-7, on an AVX-512 machine; bit-equal on others)
            torch.testing.assert_close(a, b, msg=key)
        else:  # copied: bit for bit
            assert torch.equal(a, b), key

    assert set(ours) == set(fx["param_opt"])
    for k, v in fx["param_opt"].items():
        same(k, ours[k], v)
    # and the optimised layout loads back key for key
    again = _pruned(fx)
    again.load_state_dict(checkpoint_filter_fn(fx["param_opt"], again), strict=True)
    for (k, a), b in zip(again.state_dict().items(), m.state_dict().values()):
        same(k, a, b)


def test_extract_reproduces_the_search_eval_within_3e5(fx):
    m = _search_model(fx).eval()
    pruned = m.extract()
    assert pruned.skip_mode == "zero" and list(pruned.arch.ops) == fx["cases"]["op_per_layer_eval"]
    x = fx["search"]["input"]
    with torch.no_grad():
        assert (pruned(x) - fx["search"]["logits"]).abs().max().item() <= 3e-5 + 1e-6
        assert (pruned(x) - m(x)).abs().max().item() <= 3e-5
    # with the released models' skip the last (skip) block differs by norm1(x), as in the original fine-tune model
    orig = m.extract(skip_mode="original").eval()
    with torch.no_grad():
        diff = (orig(x) - fx["ft"]["logits"]).abs().max().item()
    assert diff <= 1e-4
