"""The elastic-layer protocol (timm_nas.layers.elastic): every elastic layer of both supernets hands back a static
twin that computes what the layer computes at those sizes, and its rule slices a bare state dict the same way."""
import importlib
import warnings

import pytest
import torch
import torch.nn as nn
from timm.layers import Mlp
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock, WindowAttention

from timm_nas.layers.elastic import ElasticLayerNorm, ElasticLinear, ElasticMlp
from timm_nas.models.autoformer import (
    AutoFormerBlock,
    ElasticAutoFormerBlock,
    ElasticPatchEmbed,
    ElasticRelPosAttention,
    InterleavedQKV,
    RelPosAttention,
    slice_interleaved_qkv,
)
from timm_nas.models.s3 import S3ElasticAttention, S3ElasticBlock, S3ElasticPatchEmbed, S3ElasticPatchMerging


def randomise(module: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module.eval()


def x_of(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def check_twin(layer: nn.Module, twin: nn.Module, twin_type: type, x: torch.Tensor, *fwd_args) -> None:
    assert type(twin) is twin_type
    assert all(not p.is_meta for p in twin.parameters())
    with torch.no_grad():
        torch.testing.assert_close(twin.eval()(x), layer(x, *fwd_args), rtol=1e-5, atol=1e-5)
    # copies: changing the twin leaves the supernet alone
    before = [p.clone() for p in layer.parameters()]
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))


def test_shared_elastic_layers_hand_back_their_static_twins():
    lin = randomise(ElasticLinear(16, 12))
    check_twin(lin, lin.static_twin(10, 7), nn.Linear, x_of(2, 10), 7)
    norm = randomise(ElasticLayerNorm(16))
    check_twin(norm, norm.static_twin(9), nn.LayerNorm, x_of(2, 9))
    mlp = randomise(ElasticMlp(16, 40))
    check_twin(mlp, mlp.static_twin(12, 30), Mlp, x_of(2, 3, 12), 30)


def test_autoformer_elastic_layers_hand_back_their_static_twins():
    pe = randomise(ElasticPatchEmbed(32, 8, 3, 24))
    twin = pe.static_twin(16)
    with torch.no_grad():
        torch.testing.assert_close(twin(x_of(2, 3, 32, 32)), pe(x_of(2, 3, 32, 32), 16))
    qkv = randomise(InterleavedQKV(24, 72))
    check_twin(qkv, qkv.static_twin(16, 8), nn.Linear, x_of(2, 16), 8)
    attn = randomise(ElasticRelPosAttention(24, 3, head_dim=8, grid_size=(3, 4), max_relative_position=2))
    check_twin(attn, attn.static_twin(16, 2), RelPosAttention, x_of(2, 13, 16), 2)
    block = randomise(ElasticAutoFormerBlock(24, 3, 96, head_dim=8, grid_size=(3, 4), max_relative_position=2))
    check_twin(block, block.static_twin(16, 2, 40), AutoFormerBlock, x_of(2, 13, 16), 2, 40)


def test_interleaved_qkv_keeps_its_reordered_slice_only_while_nothing_changes():
    """Without autograd the reordered weight slice is made once and reused (the same values as making it each
    time); a new width, an in-place weight update or a dtype change makes a new one; with autograd it is never
    used, and the gradient reaches the supernet weight."""
    qkv = randomise(InterleavedQKV(24, 72))
    x = x_of(2, 16)

    def fresh(qk: int) -> torch.Tensor:
        w, b = slice_interleaved_qkv(qkv.weight.detach(), qkv.bias.detach(), 16, qk)
        return torch.nn.functional.linear(x.to(w.dtype), w, b)

    with torch.no_grad():
        y = qkv(x, 8)
        kept = qkv.__dict__["_kept"]
        assert torch.equal(y, fresh(8)) and torch.equal(qkv(x, 8), y)
        assert qkv.__dict__["_kept"] is kept  # reused
        assert torch.equal(qkv(x, 16), fresh(16)) and qkv.__dict__["_kept"] is not kept  # another qk width
        qkv.weight.add_(1.0)  # an in-place update (an optimizer step, load_state_dict)
        assert torch.equal(qkv(x, 16), fresh(16))
    qkv.double()
    assert "_kept" not in qkv.__dict__  # dropped when the module is cast
    with torch.no_grad():
        assert qkv(x.double(), 8).dtype == torch.float64 and torch.equal(qkv(x.double(), 8), fresh(8))
    qkv.float()
    x.requires_grad_(True)
    qkv(x, 8).sum().backward()
    g = qkv.weight.grad
    assert g is not None and g[:24].abs().sum() > 0 and g[24:].abs().sum() == 0 and g[:, 16:].abs().sum() == 0


def test_s3_elastic_layers_hand_back_their_static_twins():
    pe = randomise(S3ElasticPatchEmbed(16, 4, 3, 24))
    twin = pe.static_twin(16)
    with torch.no_grad():
        torch.testing.assert_close(twin(x_of(2, 3, 16, 16)), pe(x_of(2, 3, 16, 16), 16))
    merge = randomise(S3ElasticPatchMerging(24, 48))
    check_twin(merge, merge.static_twin(16, 32), PatchMerging, x_of(2, 4, 4, 16), 32)
    attn = randomise(S3ElasticAttention(24, 3, 4))
    twin = attn.static_twin(16, 2, 2)
    assert type(twin) is WindowAttention
    windows = x_of(3, 4, 16)  # (num_windows * B, window * window, C)
    with torch.no_grad():
        expected = attn(windows.reshape(3, 2, 2, 16), 2, 2, 0).reshape(3, 4, 16)
        torch.testing.assert_close(twin(windows), expected, rtol=1e-5, atol=1e-5)
    block = randomise(S3ElasticBlock(24, 3, 4, 96))
    for shift in (0, 1):
        twin = block.static_twin(16, 2, 2, shift, 40, grid=4)
        check_twin(block, twin, SwinTransformerBlock, x_of(2, 4, 4, 16), 2, 2, shift, 40)


def test_rules_refuse_sizes_that_do_not_fit():
    lin = ElasticLinear(16, 12)
    with pytest.raises(ValueError, match="needs 13 but the supernet weight holds only 12"):
        lin.static_twin(16, 13)
    with pytest.raises(ValueError, match="needs 0"):
        ElasticLayerNorm(8).static_twin(0)


@pytest.mark.parametrize("old, name", [
    ("timm_nas.layers", "RelPosAttention"),
    ("timm_nas.layers", "S3ElasticBlock"),
    ("timm_nas.layers", "UnifiedMlp"),
    ("timm_nas.layers.s3_slicing", "qkv_rows"),
    ("timm_nas.layers.spvit_gates", "mix_ops"),
    ("timm_nas.layers.elastic_linear", "ElasticLinear"),
    ("timm_nas.layers.s3_window", "window_and_shift"),
])
def test_moved_layer_names_still_import_with_a_deprecation_warning(old, name):
    module = importlib.import_module(old)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        obj = getattr(module, name)
    assert obj is not None
    assert any(issubclass(w.category, DeprecationWarning) and "moved to" in str(w.message) for w in caught)
