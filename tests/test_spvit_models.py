"""SPViT models on tiny shapes: gates, complexity, extract, pruned layers, costs, checkpoint conversion."""
from __future__ import annotations

import argparse
import json

import pytest
import timm
import torch
import torch.nn.functional as F

import timm_nas  # noqa: F401
from timm_nas import cost
from timm_nas.cost import count_macs, count_params, measure_macs, real_params
from timm_nas.models.spvit import (
    BConv,
    bconv_weights,
    deterministic_ste,
    logistic_noise,
    mix_ops,
    ordered_op_gates,
    straight_through_bernoulli,
    SPViTDeiT,
    SPViTSearchDeiT,
    checkpoint_filter_fn,
    derive_arch_from_state_dict,
    search_checkpoint_filter_fn,
    search_to_finetune_state_dict,
)
from timm_nas.spaces.base import generator_for
from timm_nas.spaces.spvit import SPViTArch

TINY = dict(img_size=32, patch_size=4, embed_dim=48, depth=4, num_heads=3, num_classes=10)
HIDDEN = 192
NO_NORMS = {"aten::layer_norm": lambda i, o: 0, "aten::batch_norm": lambda i, o: 0}


def _search(**kw) -> SPViTSearchDeiT:
    return timm.create_model("spvit_search_deit", **dict(TINY, target_flops=0.004, loss_lambda=20.0, **kw))


def _set_gates(model: SPViTSearchDeiT, attn: list[list[float]], seed: int = 0) -> None:
    """Set the op thresholds; FFN thresholds random around 0 (about half the units on)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk, th in zip(model.blocks, attn):
            blk.attn.kernel_thresholds.copy_(torch.tensor(th))
            blk.mlp.ffn_thresholds.copy_(torch.randn(blk.mlp.hidden_features, generator=g))
            blk.attn.head_probs.add_(0.01 * torch.randn(blk.attn.head_probs.shape, generator=g))
            for bn in (blk.attn.bn_1x1, blk.attn.bn_3x3):
                bn.running_mean.copy_(0.1 * torch.randn(bn.num_features, generator=g))
                bn.running_var.uniform_(0.5, 1.5, generator=g)


MIXED = [[1.0, -1.0, 1.0], [1.0, 1.0, -1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]]  # 1x1, 3x3, msa, skip


# ---------------------------------------------------------------------------------------------------- gates
def test_straight_through_bernoulli_is_hard_with_relaxed_gradient():
    p = torch.tensor([0.2, 0.7, 0.9], requires_grad=True)
    noise = torch.tensor([0.5, -3.0, 0.1])
    g = straight_through_bernoulli(p, noise)
    logits = noise + torch.log(p) - torch.log1p(-p)
    assert g.tolist() == (logits > 0).float().tolist()
    g.sum().backward()
    expected = torch.sigmoid(logits) * (1 - torch.sigmoid(logits)) * (1 / p + 1 / (1 - p))
    torch.testing.assert_close(p.grad, expected.detach())


def test_deterministic_ste_value_and_gradient():
    p = torch.tensor([0.3, 0.8], requires_grad=True)
    v = deterministic_ste(p)
    assert v.tolist() == [0.0, 1.0]
    v.sum().backward()
    s = torch.sigmoid(p.detach() - 0.5)
    torch.testing.assert_close(p.grad, s * (1 - s))


def test_ordered_gates_detach_rule_and_mixing():
    raw = torch.ones(3, requires_grad=True)
    c = ordered_op_gates(raw)
    assert c.tolist() == [1.0, 1.0, 1.0]
    c.sum().backward()
    # c0 and c1 are detached when all three are on; only c2 = g1*g2*g3 carries gradient
    assert raw.grad.tolist() == [1.0, 1.0, 1.0]
    raw2 = torch.tensor([1.0, 1.0, 0.0], requires_grad=True)
    c2 = ordered_op_gates(raw2)
    (c2 * torch.tensor([10.0, 100.0, 1000.0])).sum().backward()
    # c0 detached (c0, c1 on), c1 = g1*g2 kept, c2 = g1*g2*g3: d/dg3 = 1000
    assert raw2.grad.tolist() == [100.0, 100.0, 1000.0]
    a, b, z = torch.full((2,), 3.0), torch.full((2,), 5.0), torch.full((2,), 7.0)
    for gates, want in (([1, 1, 1], 3.0), ([1, 1, 0], 5.0), ([1, 0, 0], 7.0), ([0, 0, 0], 0.0)):
        assert mix_ops(torch.tensor(gates, dtype=torch.float), a, b, z).tolist() == [want, want]


def test_eval_gates_and_derived_arch():
    m = _search().eval()
    _set_gates(m, MIXED)
    arch = m.derive_arch()
    assert arch.ops == ("bconv1x1", "bconv3x3", "msa", "skip")
    for blk, kept in zip(m.blocks, arch.ffn_kept):
        assert list(kept) == torch.nonzero(blk.mlp.ffn_thresholds > 0).flatten().tolist()
    gates = m.gates()
    assert [g.tolist() for g, _ in gates] == [[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 0]]
    with pytest.raises(ValueError, match="call model.train"):
        m.gates(noise=[])


def test_training_gates_are_seeded_by_seed_and_step_and_resume():
    m = _search(gate_seed=7).train()
    _set_gates(m, [[0.0, 0.0, 0.0]] * 4)  # p = 0.5: samples vary
    x = torch.randn(2, 3, 32, 32)
    m(x)
    first = m.last_arch()
    assert m.step == 1
    m(x)
    second = m.last_arch()
    assert m.step == 2 and first != second
    expected = [(ordered_op_gates(straight_through_bernoulli(pa, na)), straight_through_bernoulli(pf, nf))
                for (pa, pf), (na, nf) in zip(m.gate_probs(), m.draw_gate_noise(generator_for(7, 0)))]
    assert [g.tolist() for g, _ in expected] == [(torch.tensor(first.indicators()[i])).tolist() for i in range(4)]
    # the step is part of the state: a resumed model draws what the original would draw next
    other = _search(gate_seed=7).train()
    other.load_state_dict(m.state_dict())
    assert other.step == 2
    m(x)
    other(x)
    assert m.last_arch() == other.last_arch()
    m.eval()
    m(x)
    assert m.step == 3  # eval forwards do not advance it


def test_complexity_matches_the_closed_form_table():
    m = _search().eval()
    _set_gates(m, MIXED)
    t = m.flops_table()
    N, D, d = 64, 48, 16
    assert t["conv_1x1"] == 2 * D * d * N and t["conv_3x3"] == (9 * D * d + d * D) * N
    assert t["msa"] == 4 * (N + 1) * D ** 2 + 2 * D * (N + 1) ** 2
    kept = sum(m.derive_arch().ffn_hidden)
    att = t["conv_1x1"] + t["conv_3x3"] + t["msa"]
    fixed = N * D * 3 * 16 + D * 10 + 4 * D * (N + 1) * 2
    c = m.complexity()
    assert c["att_flops"].item() == att and c["ffn_flops"].item() == 2 * N * D * kept
    assert c["flops"].item() == pytest.approx(fixed + att + 2 * N * D * kept, rel=1e-6)
    loss = m.complexity_loss()
    assert loss.item() == pytest.approx(20.0 * (0.004 - c["flops"].item() / 1e9) ** 2, rel=1e-4)
    loss.backward()
    assert all(b.attn.kernel_thresholds.grad is not None and b.mlp.ffn_thresholds.grad.abs().sum() > 0
               for b in m.blocks)


def test_complexity_loss_needs_a_target():
    m = timm.create_model("spvit_search_deit", **TINY)
    with pytest.raises(ValueError, match="needs target_flops"):
        m.complexity_loss()
    assert m.complexity_loss(target_flops=0.004, loss_lambda=1.0).item() >= 0


# -------------------------------------------------------------------------------------------------- extract
@pytest.mark.parametrize("gates", [MIXED, [[1.0, 1.0, 1.0]] * 4, [[-1.0, 1.0, 1.0]] * 4])
def test_extract_reproduces_search_eval_outputs(gates):
    m = _search().eval()
    _set_gates(m, gates)
    x = torch.randn(2, 3, 32, 32)
    pruned = m.extract()
    assert isinstance(pruned, SPViTDeiT) and pruned.skip_mode == "zero" and not pruned.training
    with torch.no_grad():
        diff = (pruned(x) - m(x)).abs().max().item()
    assert diff <= 3e-5
    assert real_params(pruned) == count_params(pruned.arch, embed_dim=48, num_heads=3, img_size=32, patch_size=4,
                                               num_classes=10, skip_mode="zero")
    # the recorded arguments are JSON-native and rebuild the same model
    args = json.loads(json.dumps(pruned._model_args))
    rebuilt = timm.create_model("spvit_deit", **args).eval()
    rebuilt.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), pruned(x))


def test_extract_with_average_pooling():
    m = _search(global_pool="avg").eval()
    _set_gates(m, MIXED)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (m.extract()(x) - m(x)).abs().max().item() <= 3e-5


def test_skip_modes_differ_exactly_by_norm1():
    arch = SPViTArch(("skip",) * 4, tuple(tuple(range(0, HIDDEN, 3)) for _ in range(4)))
    orig = timm.create_model("spvit_deit", arch=arch.to_dict(), **TINY).eval()
    zero = timm.create_model("spvit_deit", arch=arch.to_dict(), skip_mode="zero", **TINY).eval()
    assert "blocks.0.norm1.weight" in orig.state_dict() and "blocks.0.norm1.weight" not in zero.state_dict()
    blk_o, blk_z = orig.blocks[0], zero.blocks[0]
    blk_z.load_state_dict({k: v for k, v in blk_o.state_dict().items() if not k.startswith("norm1")})
    x = torch.randn(2, 65, 48)
    with torch.no_grad():
        y = x + blk_o.norm1(x)
        torch.testing.assert_close(blk_o(x), y + blk_o.mlp(blk_o.norm2(y)))
        torch.testing.assert_close(blk_z(x), x + blk_o.mlp(blk_o.norm2(x)))
    with pytest.raises(ValueError, match="skip_mode='zeros' is not allowed"):
        timm.create_model("spvit_deit", arch=arch.to_dict(), skip_mode="zeros", **TINY)


# ----------------------------------------------------------------------------------------------- pruned layers
def _reference_3x3(x_patches, v_weight, v_bias, proj_weight, head_probs, H, W):
    """The original's search path written out: per kernel position k (dy = k % 3 - 1, dx = k // 3 - 1), mix the
    heads' value rows, shift the patch grid, sum; then the summed projection."""
    heads = head_probs.shape[0]
    D = v_weight.shape[0]
    d = D // heads
    P = (head_probs / 1e-2).softmax(0)
    B = x_patches.shape[0]
    v = (x_patches @ v_weight.t()).view(B, H, W, heads, d)
    out = torch.zeros(B, H, W, d)
    for k in range(9):
        dy, dx = k % 3 - 1, k // 3 - 1
        mixed = torch.einsum("bhwnd,n->bhwd", v, P[:, k])
        shifted = torch.zeros_like(mixed)
        ys, yd = slice(max(0, -dy), H - max(0, dy)), slice(max(0, dy), H - max(0, -dy))
        xs, xd = slice(max(0, -dx), W - max(0, dx)), slice(max(0, dx), W - max(0, -dx))
        shifted[:, ys, xs] = mixed[:, yd, xd]
        out = out + shifted + (v_bias.view(heads, d) * P[:, k, None]).sum(0)
    proj = sum((proj_weight.view(D, heads, d) * P[None, :, k, None]).sum(1) for k in range(9))  # (D, d)
    return out, proj


def test_bconv_3x3_kernel_layout_is_the_original_column_major_order():
    torch.manual_seed(1)
    D, heads, H, W = 12, 3, 5, 4
    v_w, v_b, p_w = torch.randn(D, D), torch.randn(D), torch.randn(D, D)
    head_probs = 1 + 0.01 * torch.randn(heads, 9)
    w_in, b_in, w_out = bconv_weights(v_w, v_b, p_w, head_probs, 3)
    assert w_in.shape == (4, D, 3, 3) and w_out.shape == (D, 4, 1, 1)
    x = torch.randn(2, H * W, D)
    conv = F.conv2d(x.transpose(1, 2).reshape(2, D, H, W), w_in, b_in, padding=1).permute(0, 2, 3, 1)
    ref, proj = _reference_3x3(x, v_w, v_b, p_w, head_probs, H, W)
    torch.testing.assert_close(conv, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(w_out.flatten(1), proj, atol=1e-5, rtol=1e-5)
    w1, b1, o1 = bconv_weights(v_w, v_b, p_w, head_probs, 1)
    P = (head_probs / 1e-2).softmax(0)
    torch.testing.assert_close(w1.flatten(1), torch.einsum("nde,n->de", v_w.view(heads, 4, D), P[:, 4]))
    assert torch.equal(w1[:, :, 0, 0], w_in[:, :, 1, 1])  # the 1x1 kernel is position k = 4, the 3x3 centre
    with pytest.raises(ValueError, match="kernel_size must be 1 or 3"):
        bconv_weights(v_w, v_b, p_w, head_probs, 5)


def test_bconv_passes_the_class_token_and_ignores_masks():
    layer = BConv(12, 4, 3, (2, 2)).eval()
    x = torch.randn(2, 5, 12)
    y = layer(x)
    assert torch.equal(y[:, 0], x[:, 0]) and y.shape == x.shape
    assert torch.equal(layer(x, attn_mask=torch.zeros(5, 5)), y)  # a convolution has nothing to mask


def test_pruned_model_costs_match_measurement_and_analytic_formula():
    arch = SPViTArch(("bconv1x1", "bconv3x3", "msa", "skip"),
                     ((0, 5, 9), tuple(range(0, HIDDEN, 2)), tuple(range(HIDDEN)), (3,)))
    for skip_mode in ("original", "zero"):
        m = timm.create_model("spvit_deit", arch=arch.to_dict(), skip_mode=skip_mode, **TINY).eval()
        kw = dict(embed_dim=48, num_heads=3, img_size=32, patch_size=4, num_classes=10)
        assert real_params(m) == count_params(arch, skip_mode=skip_mode, **kw)
        measured = measure_macs(m, torch.randn(1, 3, 32, 32), extra_handles=NO_NORMS)
        assert measured == count_macs(arch, **kw)
    with pytest.raises(TypeError, match="need the model's embed_dim and num_heads"):
        count_macs(arch)


def test_released_models_build_and_match_their_analytic_cost():
    for name, (dim, heads) in {"spvit_deit_tiny": (192, 3), "spvit_deit_small": (384, 6)}.items():
        m = timm.create_model(name, device="meta")
        assert m._model_args == {"patch_size": 16, "embed_dim": dim, "depth": 12, "num_heads": heads}
        assert real_params(m) == count_params(m.arch, embed_dim=dim, num_heads=heads)
    # the published DeiT-S architecture: 15.87 M parameters with materialised kernels (README: 16.4 M)
    assert count_params(timm.create_model("spvit_deit_small", device="meta").arch, embed_dim=384,
                        num_heads=6) == 15_870_724


def test_set_input_size_moves_the_conv_grid():
    arch = SPViTArch(("bconv3x3", "msa", "bconv1x1", "msa"), tuple(tuple(range(HIDDEN)) for _ in range(4)))
    m = timm.create_model("spvit_deit", arch=arch.to_dict(), **TINY).eval()
    m.set_input_size(img_size=(48, 48))
    assert m.blocks[0].attn.grid_size == (12, 12)
    assert m(torch.randn(1, 3, 48, 48)).shape == (1, 10)
    with pytest.raises(ValueError, match="only img_size can change"):
        m.set_input_size(patch_size=(8, 8))


def test_unknown_arguments_and_bad_archs_raise():
    with pytest.raises(TypeError):
        timm.create_model("spvit_deit", not_an_arg=1)
    with pytest.raises(TypeError):
        timm.create_model("spvit_search_deit", not_an_arg=1)
    with pytest.raises(ValueError, match="the arch has 12 layers but the model has depth=4"):
        timm.create_model("spvit_deit", **TINY)  # the default arch is the released 12-layer DeiT-Ti
    with pytest.raises(ValueError, match=r"ffn_kept\[0\] holds index 700"):
        timm.create_model("spvit_deit", arch={"ops": ["msa"] * 4, "ffn_kept": [[700]] * 4}, **TINY)


# ------------------------------------------------------------------------------------------ checkpoints
def _tiny_deit_state() -> dict[str, torch.Tensor]:
    deit = timm.create_model("deit_tiny_patch16_224", **TINY)
    return deit, {k: v.clone() for k, v in deit.state_dict().items()}


def test_search_model_starts_from_a_local_timm_deit_checkpoint(tmp_path):
    from safetensors.torch import save_file

    deit, state = _tiny_deit_state()
    path = tmp_path / "deit.safetensors"
    save_file(state, str(path))
    m = timm.create_model("spvit_search_deit_tiny", pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
                          **TINY).eval()
    # qkv split into qk and v; the gates start from theta = 1.5 (everything on): the network is the DeiT
    torch.testing.assert_close(m.blocks[1].attn.qk.weight, state["blocks.1.attn.qkv.weight"][:96])
    torch.testing.assert_close(m.blocks[1].attn.v.bias, state["blocks.1.attn.qkv.bias"][96:])
    assert m.derive_arch() == SPViTArch.full(4, HIDDEN)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), deit.eval()(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no place for: \\['blocks.0.attn.extra'\\]"):
        search_checkpoint_filter_fn(dict(state, **{"blocks.0.attn.extra": torch.zeros(1)}), m)


def test_pruned_model_from_deit_weights_is_the_original_finetune_init(tmp_path):
    deit, state = _tiny_deit_state()
    arch = SPViTArch(("bconv1x1", "msa", "msa", "msa"), tuple(tuple(range(HIDDEN)) for _ in range(4)))
    m = timm.create_model("spvit_deit", arch=arch.to_dict(), **TINY)
    m.load_state_dict(checkpoint_filter_fn({"model": state}, m))
    # uniform head assignment: the 1x1 kernel is the mean of the heads' value rows; fresh BN
    v = state["blocks.0.attn.qkv.weight"][96:].view(3, 16, 48)
    torch.testing.assert_close(m.blocks[0].attn.bconv[0].weight.flatten(1), v.mean(0))
    assert torch.equal(m.blocks[0].attn.bconv[1].running_var, torch.ones(16))
    torch.testing.assert_close(m.blocks[1].attn.qkv.weight, state["blocks.1.attn.qkv.weight"])
    full = timm.create_model("spvit_deit", arch=SPViTArch.full(4, HIDDEN).to_dict(), **TINY).eval()
    full.load_state_dict(checkpoint_filter_fn(state, full))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(full(x), deit.eval()(x))


def test_search_checkpoint_to_finetune_layout_and_pruned_load(tmp_path):
    m = _search().eval()
    _set_gates(m, MIXED)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)  # also writes the FFN masks into assigned_indicator_index, as the original does
    sd = m.state_dict()
    arch = derive_arch_from_state_dict(sd)
    assert arch == m.derive_arch() == derive_arch_from_state_dict(sd, ffn_from="thresholds")
    ft = search_to_finetune_state_dict(sd)
    assert "blocks.0.attn.head_probs" in ft and "blocks.0.attn.bn_1x1.weight" in ft
    assert "blocks.0.attn.qk.weight" not in ft and "blocks.2.attn.head_probs" not in ft
    assert not any(k.startswith("blocks.3.attn.") for k in ft) and "gate_step" not in ft
    kept = torch.tensor(arch.ffn_kept[1])
    assert torch.equal(ft["blocks.1.mlp.fc2.weight"], sd["blocks.1.mlp.fc2.weight"][:, kept])
    # a fine-tune .pth file (with training state) loads through the real pretrained path
    path = tmp_path / "spvit_ft.pth"
    torch.save({"model": ft, "epoch": 3, "args": argparse.Namespace(lr=1e-4)}, path)
    pruned = timm.create_model("spvit_deit", pretrained=True, arch=arch.to_dict(), skip_mode="zero",
                               pretrained_cfg_overlay=dict(file=str(path), custom_load=True), **TINY).eval()
    with torch.no_grad():
        assert (pruned(x) - ref).abs().max().item() <= 3e-5
    with pytest.raises(ValueError, match="keys no layer of this SPViT model can use: \\['blocks.9.norm1.weight'\\]"):
        checkpoint_filter_fn(dict(ft, **{"blocks.9.norm1.weight": torch.ones(48)}), pruned)
    with pytest.raises(ValueError, match="not a search checkpoint"):
        derive_arch_from_state_dict(ft)


def test_pruned_model_reads_a_different_head_and_in_chans(tmp_path):
    arch = SPViTArch(("bconv1x1", "msa", "msa", "msa"), tuple(tuple(range(0, HIDDEN, 2)) for _ in range(4)))
    src = timm.create_model("spvit_deit", arch=arch.to_dict(), **TINY)
    path = tmp_path / "w.pth"
    torch.save({"model": src.state_dict()}, path)
    m = timm.create_model("spvit_deit", pretrained=True, arch=arch.to_dict(),
                          pretrained_cfg_overlay=dict(file=str(path), custom_load=True),
                          **dict(TINY, num_classes=5, in_chans=1))
    assert m.head.weight.shape == (5, 48) and m.patch_embed.proj.weight.shape[1] == 1
    torch.testing.assert_close(m.blocks[0].attn.bconv[0].weight, src.blocks[0].attn.bconv[0].weight)


def test_logistic_noise_is_reproducible_and_finite():
    a = logistic_noise((1000,), torch.Generator().manual_seed(3))
    b = logistic_noise((1000,), torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.isfinite(a).all() and abs(a.mean().item()) < 0.3


def test_pruned_model_features_and_search_network_refusal():
    """Pruned models are timm ViTs: forward_intermediates runs the BConv / MSA blocks and features_only wraps it;
    the search network refuses features_only and names the pruned model instead."""
    arch = dict(ops=["bconv3x3", "msa"], ffn_kept=[[0, 3, 5], [1, 2]])
    kw = dict(arch=arch, img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=3)
    model = timm.create_model("spvit_deit", **kw).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.allclose(final, model.forward_features(x), atol=1e-6)
        assert [m.shape for m in maps] == [(2, 64, 4, 4)] * 2
        feats = timm.create_model("spvit_deit", features_only=True, out_indices=(0, 1), **kw).eval()
        feats.model.load_state_dict(model.state_dict(), strict=False)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(feats(x), maps))
    with pytest.raises(RuntimeError, match=r"not supported by the SPViT search network.*extract\(\)"):
        timm.create_model("spvit_search_deit_tiny", features_only=True, device="meta")


def test_a_fully_pruned_ffn_keeps_only_the_fc2_bias():
    """Every FFN unit of a layer pruned: the pruned model keeps no hidden unit (timm's Mlp would silently build a
    full-width layer for hidden_features=0), its counts equal the formulas', and it computes what the search
    network computes with every unit's gate off (fc2's bias)."""
    search = _search().eval()
    arch = search.derive_arch()
    arch = SPViTArch(arch.ops, ((),) + arch.ffn_kept[1:])
    pruned = search.extract(arch).eval()
    assert pruned.blocks[0].mlp.fc1.out_features == 0 and pruned.blocks[0].mlp.fc2.in_features == 0
    params, macs = cost.model_cost(pruned)
    assert params == real_params(pruned)
    assert macs == measure_macs(pruned, torch.randn(1, 3, 32, 32), extra_handles=NO_NORMS)
    x = torch.randn(2, 5, TINY["embed_dim"])
    torch.testing.assert_close(pruned.blocks[0].mlp(x), search.blocks[0].mlp.fc2.bias.expand(2, 5, -1))
