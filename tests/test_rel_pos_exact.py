"""Relative-position attention (AutoFormer) equals the original explicit formulation: outputs and every gradient
(q, k, v and the four tables), square, non-square and clipped grids, any head count, static and supernet layers;
and it runs under torch.compile, torch.export, ONNX export, on the meta device and in bfloat16.

The reference is ``bench/reference/rel_pos_reference.py`` (a transcription of microsoft/Cream AutoFormer's
``RelativePosition2D_super`` / ``AttentionSuper``), shared with the benchmarks.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import timm_nas  # noqa: F401  (registers the models)
from timm_nas.layers import reference_rel_pos, rel_pos_attention
from timm_nas.models.autoformer import ElasticRelPosAttention, RelPosAttention
from timm_nas.layers.relative_position import (
    CLASS_TOKEN_SLOTS,
    relative_position_row_col_index_2d,
    relative_position_row_col_onehot_2d,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from reference.rel_pos_reference import (  # noqa: E402
    relative_embeddings,
    relative_index,
    rel_pos_attention_reference,
)

# one intra-op thread: see conftest.one_thread
pytestmark = pytest.mark.usefixtures("one_thread")

rel_pos_module = importlib.import_module("timm_nas.layers.rel_pos_attention")


@contextlib.contextmanager
def no_explicit_path():
    original = rel_pos_module._rel_pos_attention_explicit

    def fail(*args, **kwargs):
        raise AssertionError("the explicit formulation ran")

    rel_pos_module._rel_pos_attention_explicit = fail
    try:
        yield
    finally:
        rel_pos_module._rel_pos_attention_explicit = original


@pytest.fixture(params=["table-products", "per-query-tables"])
def path(request, monkeypatch):
    """Both exact ways of forming the small table terms (chosen by batch x heads): forced either way."""
    monkeypatch.setattr(rel_pos_module, "PER_QUERY_MIN_ROWS", 10 ** 9 if request.param == "table-products" else 0)
    return request.param

#: (grid, max distance): square at the published size, small square, non-square, and a grid whose sides exceed
#: m + 1 so the clip triggers (both directions, non-square too).
GRIDS = [((14, 14), 14), ((7, 7), 14), ((5, 9), 14), ((9, 9), 3), ((4, 7), 2)]
#: (head dim, heads, batch)
SHAPES = [(8, 1, 1), (64, 3, 3), (8, 4, 3), (64, 4, 1)]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}


def _inputs(grid, m, d, h, b, dtype, seed=0, cls_heavy=False):
    g = torch.Generator().manual_seed(seed)
    n, rows = grid[0] * grid[1] + 1, 2 * m + 2
    q, k, v = (torch.randn(b, h, n, d, generator=g, dtype=dtype) for _ in range(3))
    tables = [torch.randn(rows, d, generator=g, dtype=dtype) * 0.5 for _ in range(4)]
    if cls_heavy:  # the class token dominates: large class-token query / key and large row-0 table entries
        q[:, :, 0] *= 4.0
        k[:, :, 0] *= 4.0
        for t in tables:
            t[0] *= 6.0
    leaves = [t.requires_grad_() for t in (q, k, v, *tables)]
    return leaves, torch.randn(b, n, h * d, generator=g, dtype=dtype)


def _outputs_and_grads(fn, leaves, weight):
    out = fn(*leaves)
    return [out.detach()] + list(torch.autograd.grad((out * weight).sum(), leaves))


def _ours(grid, m, d, training=False):
    def fn(q, k, v, kv, kh, vv, vh):
        return rel_pos_attention(q, k, v, torch.cat([kv, kh]), torch.cat([vv, vh]), grid, m, d ** -0.5,
                                 attn_drop=0.0, training=training)
    return fn


def _reference(grid, m, d):
    def fn(q, k, v, kv, kh, vv, vh):
        return rel_pos_attention_reference(q, k, v, (kv, kh), (vv, vh), grid, m, d ** -0.5)
    return fn


NAMES = ["out", "q", "k", "v", "table_k_v", "table_k_h", "table_v_v", "table_v_h"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("d, h, b", SHAPES, ids=[f"d{d}-h{h}-b{b}" for d, h, b in SHAPES])
@pytest.mark.parametrize("grid, m", GRIDS, ids=[f"{g[0]}x{g[1]}-m{m}" for g, m in GRIDS])
def test_equals_the_original_with_gradients(grid, m, d, h, b, dtype, path):
    leaves, weight = _inputs(grid, m, d, h, b, dtype)
    expected = _outputs_and_grads(_reference(grid, m, d), leaves, weight)
    got = _outputs_and_grads(_ours(grid, m, d), leaves, weight)
    for name, x, y in zip(NAMES, got, expected):
        torch.testing.assert_close(x, y, **TOL[dtype], msg=lambda s, name=name: f"{name}: {s}")


@pytest.mark.parametrize("grid, m", [((14, 14), 14), ((9, 9), 3)], ids=["14x14", "9x9-clip"])
@pytest.mark.parametrize("cls_heavy", [False, True], ids=["plain", "class-token-heavy"])
def test_training_mode_and_class_token_effects(grid, m, cls_heavy, path):
    """Training mode (attention dropout 0) and inputs where the class token takes most of the attention."""
    leaves, weight = _inputs(grid, m, 16, 3, 2, torch.float64, seed=1, cls_heavy=cls_heavy)
    expected = _outputs_and_grads(_reference(grid, m, 16), leaves, weight)
    got = _outputs_and_grads(_ours(grid, m, 16, training=True), leaves, weight)
    for name, x, y in zip(NAMES, got, expected):
        torch.testing.assert_close(x, y, **TOL[torch.float64], msg=lambda s, name=name: f"{name}: {s}")


def test_reference_context_runs_the_explicit_formulation():
    grid, m, d = (5, 9), 14, 8
    leaves, weight = _inputs(grid, m, d, 2, 2, torch.float64)
    with reference_rel_pos():
        got = _outputs_and_grads(_ours(grid, m, d), leaves, weight)
    expected = _outputs_and_grads(_reference(grid, m, d), leaves, weight)
    for x, y in zip(got, expected):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    with FlopCounterMode(display=False) as counter:
        _ours(grid, m, d)(*leaves)
    n, bh = 46, 2 * 2
    # the measured convention: q k^T, q R_k^T, attn v, attn R_v, each N^2 d per head
    assert counter.get_total_flops() == 2 * 4 * bh * n * n * d


def test_row_col_tables_reproduce_the_original_embeddings():
    """sum_x onehot[j, x] T[index[i, x]] equals table_v[iv(i, j)] + table_h[ih(i, j)] for every key j, the class
    token included (its two slots: row 0 of each table); padding slots are empty."""
    for grid, m in GRIDS:
        g = torch.Generator().manual_seed(0)
        tv, th = torch.randn(2 * m + 2, 5, generator=g, dtype=torch.float64), torch.randn(2 * m + 2, 5, generator=g,
                                                                                           dtype=torch.float64)
        used = grid[0] + grid[1] + CLASS_TOKEN_SLOTS
        index = relative_position_row_col_index_2d(grid, m, slots=used + 2)
        onehot = relative_position_row_col_onehot_2d(grid, dtype=torch.float64, slots=used + 2)
        assert onehot[:, used:].eq(0).all() and index[:, used:].eq(0).all()  # padding slots are empty
        assert onehot.sum(1).eq(2).all()  # every key: two slots (row and column, or the class token's two)
        assert relative_position_row_col_index_2d(grid, m).shape == (grid[0] * grid[1] + 1, used)  # default: none
        rows = torch.cat([tv, th])[index]  # (N, X, 5): per query, the table row of each slot
        ours = torch.einsum("jx,ixc->ijc", onehot, rows)
        torch.testing.assert_close(ours, relative_embeddings(tv, th, grid, m), rtol=0, atol=1e-14)
        iv, _ = relative_index(grid, m)
        assert iv.shape == (grid[0] * grid[1] + 1,) * 2
    with pytest.raises(ValueError, match="needs at least 30 slots, got 29"):
        relative_position_row_col_index_2d((14, 14), 14, slots=29)


# ---------------------------------------------------------------------------------------------- layers
def _copy_tables(dst: nn.Module, src: nn.Module) -> None:
    dst.load_state_dict(src.state_dict())


@pytest.mark.parametrize("grid, m", [((14, 14), 14), ((5, 9), 14), ((9, 9), 3)], ids=["14x14", "5x9", "9x9-clip"])
def test_static_layer_gradients_match_the_explicit_layer(grid, m, path):
    torch.manual_seed(0)
    layer = RelPosAttention(48, 3, head_dim=16, grid_size=grid, max_relative_position=m).double().train()
    for p in layer.parameters():
        nn.init.normal_(p, std=0.3)
    x = torch.randn(2, grid[0] * grid[1] + 1, 48, dtype=torch.float64)
    out = layer(x)
    out.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad()
    with reference_rel_pos():
        ref = layer(x)
        ref.square().sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for n, p in layer.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-10, atol=1e-10, msg=lambda s, n=n: f"{n}: {s}")


@pytest.mark.parametrize("heads", [1, 2, 3, 4])
def test_elastic_layer_every_head_count_matches_the_reference(heads, path):
    """The supernet layer slices the tables' first head_dim columns (tables are E_super / heads_super wide)."""
    grid, m, d = (4, 6), 14, 16
    torch.manual_seed(heads)
    layer = ElasticRelPosAttention(128, 4, head_dim=d, grid_size=grid, max_relative_position=m).double()
    for p in layer.parameters():
        nn.init.normal_(p, std=0.3)
    assert layer.rel_pos_k.table_v.shape[1] == 32 > d
    x = torch.randn(3, grid[0] * grid[1] + 1, 96, dtype=torch.float64)
    out = layer(x, heads)
    out.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad()
    with reference_rel_pos():
        ref = layer(x, heads)
        ref.square().sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for n, p in layer.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-10, atol=1e-10, msg=lambda s, n=n: f"{n}: {s}")
    assert layer.rel_pos_v.table_h.grad[:, d:].eq(0).all()  # columns past head_dim unused
    # and against the independent reference
    qkv = layer.qkv(x, heads * d).reshape(3, 23 + 2, 3, heads, d).permute(2, 0, 3, 1, 4)[:, :3]
    q, k, v = qkv.unbind(0)
    tk = (layer.rel_pos_k.table_v[:, :d], layer.rel_pos_k.table_h[:, :d])
    tv = (layer.rel_pos_v.table_v[:, :d], layer.rel_pos_v.table_h[:, :d])
    expected = layer.proj(rel_pos_attention_reference(q, k, v, tk, tv, grid, m, d ** -0.5), 96)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------- models
SMALL = dict(img_size=(40, 72), patch_size=8, num_classes=10)  # a 5 x 9 patch grid
SUB = dict(embed_dim=96, depth=2, num_heads=[1, 2], mlp_ratio=[3.5, 3.0])


def _static_model(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("autoformer_subnet", subnet=SUB, **dict(SMALL, **kwargs))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "rel_pos" in name:
                p.normal_(std=0.5)
    return model.eval()


def _x(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, 40, 72, generator=torch.Generator().manual_seed(1))


def test_model_forward_backward_matches_the_explicit_model_non_square(path):
    model = _static_model().train()
    x = _x()
    out = model(x)
    out.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    with reference_rel_pos():
        ref = model(x)
        ref.square().sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-5, msg=lambda s, n=n: f"{n}: {s}")


def test_supernet_under_use_subnet_equals_extract_non_square():
    supernet = timm.create_model("autoformer_supernet_tiny", **SMALL).eval()
    cfg = supernet.space.sample(torch.Generator().manual_seed(0))
    x = _x()
    with torch.no_grad(), supernet.use_subnet(cfg):
        out = supernet(x)
    with torch.no_grad():
        torch.testing.assert_close(out, supernet.extract(cfg).eval()(x), rtol=1e-4, atol=1e-4)


def test_meta_device_and_bfloat16(path):
    model = timm.create_model("autoformer_tiny", device="meta")
    out = model.forward_features(torch.zeros(2, 3, 224, 224, device="meta"))
    assert out.is_meta and out.shape == (2, 197, 192)
    model = _static_model()
    x = _x()
    with torch.no_grad():
        ref = model(x)
        out = model.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=0.1, atol=0.1)
    out.float().sum()  # bf16 backward runs too
    model.train()(x.to(torch.bfloat16)).float().square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bfloat16_autocast(path):
    """Under CPU autocast the activations are bf16 while the tables stay float32: forward and backward run on
    both paths, the tables get finite gradients, and the output follows the float32 one to bf16 precision."""
    model = _static_model()
    x = _x()
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.1, atol=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.train()(x).float().square().sum().backward()
    tables = [p for n, p in model.named_parameters() if "rel_pos" in n]
    assert tables and all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
                          for p in tables)


def test_torch_export(path):
    model, x = _static_model(), _x()
    with no_explicit_path():
        program = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_torch_export_published_model():
    model = timm.create_model("autoformer_tiny").eval()
    x = torch.randn(1, 3, 224, 224)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-4)


def test_torch_compile_forward_backward(path):
    model, x = _static_model().train(), _x()
    compiled = torch.compile(model, backend="aot_eager")  # traces through dynamo and AOT autograd, no C compiler
    with no_explicit_path():
        out = compiled(x)
        out.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ref = model(x)
    ref.square().sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-5, msg=lambda s, n=n: f"{n}: {s}")


def test_fx_and_torchscript_static_model(path):
    """timm's FX tracing (its registered leaf functions, as in timm's model contract) and TorchScript."""
    from timm.models._features_fx import create_feature_extractor, get_graph_node_names

    model, x = _static_model(), _x()
    last = get_graph_node_names(model)[1][-1]
    traced = create_feature_extractor(model, return_nodes=[last])
    scripted = torch.jit.script(model)
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(traced(x)[last], ref)
        torch.testing.assert_close(torch.jit.script(traced)(x)[last], ref)
        torch.testing.assert_close(scripted(x), ref)


def _have(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
def test_onnx_export(tmp_path, dynamo, path):
    if not _have("onnx") or (dynamo and not _have("onnxscript")):
        pytest.skip("onnx (and onnxscript for dynamo=True) not installed")
    import onnx

    model, x = _static_model(), _x()
    with no_explicit_path():  # the export records the row/column formulation, not the explicit one
        torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), dynamo=dynamo)
    path = tmp_path / "m.onnx"
    assert onnx.load(str(path)).graph.node
    if _have("onnxruntime"):
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path))
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-4, atol=1e-5)


def _saved_bytes(fn, leaves):
    """Bytes autograd keeps for backward over one call (each storage once)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*leaves)
    return sum(storages.values())


@pytest.mark.parametrize("grid, m", [((14, 14), 14), ((5, 9), 14), ((9, 9), 3)], ids=["14x14", "5x9", "9x9-m3"])
def test_per_query_tables_keep_less_for_backward_with_the_same_values(grid, m, monkeypatch):
    """With a backward to come, the per-query path's two matmuls keep only what the fused call keeps anyway; the
    values and gradients are those of the plain per-query path (and the no-grad output too)."""
    monkeypatch.setattr(rel_pos_module, "PER_QUERY_MIN_ROWS", 0)
    d, h, b = 64, 3, 4
    leaves, weight = _inputs(grid, m, d, h, b, torch.float32)
    saving = _outputs_and_grads(_ours(grid, m, d), leaves, weight)
    saving_bytes = _saved_bytes(_ours(grid, m, d), leaves)
    with torch.no_grad():
        assert torch.equal(_ours(grid, m, d)(*leaves), saving[0])
    monkeypatch.setattr(rel_pos_module, "_saving_memory", lambda q: False)
    plain = _outputs_and_grads(_ours(grid, m, d), leaves, weight)
    plain_bytes = _saved_bytes(_ours(grid, m, d), leaves)
    assert torch.equal(saving[0], plain[0])
    for name, a, p in zip(NAMES[1:], saving[1:], plain[1:]):
        torch.testing.assert_close(a, p, rtol=1e-6, atol=1e-6, msg=name)
    n = grid[0] * grid[1] + 1  # at least the query-major copy of q (b h n d, float32) is no longer kept
    assert saving_bytes <= plain_bytes - 4 * b * h * n * d, (saving_bytes, plain_bytes)
