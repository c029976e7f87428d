"""The zoo, offline: every pretrained tag loads through timm's real ``pretrained=True`` path, the release files'
pickled extras are read without unrestricted unpickling, and ``timm-nas zoo list / export`` work on local files.

Nothing is downloaded. A release URL is served from where timm's downloader caches it
(``torch.hub.get_dir()/checkpoints/<file name>``, with ``TORCH_HOME`` in ``tmp_path``); a Hub id from the fake Hub
of ``tests/hub_server.py``. The "release" files are random weights of our own models written back in the
authors' layout (keys, extra training state, an ``argparse.Namespace``, numpy scalars, a yacs-like config).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import types
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

import timm
import timm_nas  # noqa: F401
from timm.models import get_pretrained_cfg, model_entrypoint
from timm_nas import cli, hub
from timm_nas._checkpoint import load_checkpoint_file, opaque_global
from timm_nas.hub.zoo import export_zoo, is_finished, zoo_entries
from timm_nas.models import autoformer as af
from timm_nas.models.spvit import checkpoint_filter_fn as spvit_filter

from hub_server import FakeHub, Repo

OURS = ("timm_nas.models.autoformer", "timm_nas.models.s3", "timm_nas.models.spvit", "timm_nas.models.darts")


def _ours(pretrained: bool = True) -> list[str]:
    return [n for n in timm.list_models(pretrained=pretrained, include_tags=True)
            if getattr(model_entrypoint(n.split(".")[0]), "__module__", "") in OURS]


def _logits(model: torch.nn.Module, size: int) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)))


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """timm's download cache in tmp_path: a file placed here is what ``pretrained=True`` reads for its URL."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True)
    return cache


def _cached(cache: Path, name: str) -> Path:
    return cache / get_pretrained_cfg(name).url.rsplit("/", 1)[-1]


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """This process's huggingface_hub pointed at the fake Hub (downloads resolve through the URL template),
    with its cache in tmp_path."""
    from huggingface_hub import constants

    with FakeHub() as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent_harnesses.json"))
        yield server


def _serve(server: FakeHub, repo_id: str, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    server.repos[repo_id] = Repo()
    server.commit(repo_id, {"model.safetensors": save({k: v.contiguous() for k, v in state.items()}),
                            "config.json": b"{}"})


# ------------------------------------------------------------------------------------- metadata / listing
def test_list_pretrained_lists_the_released_models_and_no_deit_as_spvit():
    names = _ours()
    for size in ("tiny", "small", "base"):
        assert f"s3_{size}.ms_in1k" in names and f"s3_{size}.ms_in1k_orig" in names
        assert f"autoformer_{size}.ms_in1k" in names and f"autoformer_{size}.in1k" in names  # old tag kept
        assert f"spvit_deit_{size}.ziplab_in1k" in names and f"spvit_deit_{size}.dist_in1k" in names
        # the search network's DeiT initialisation is under an honest tag (the old one kept beside it)
        assert get_pretrained_cfg(f"spvit_search_deit_{size}.fb_in1k_deit_init").hf_hub_id.startswith("timm/deit_")
    # the pruned SPViT models load only the authors' SPViT files, never an unpruned DeiT
    assert not [n for n in names if n.startswith("spvit_deit") and "deit_" in (get_pretrained_cfg(n).hf_hub_id or "")]
    assert not [n for n in names if n.startswith(("tf_tas", "darts", "s3_supernet"))]  # no weights were released
    # default tags are the source-prefixed ones
    assert timm.create_model("autoformer_tiny", device="meta").pretrained_cfg["tag"] == "ms_in1k"
    assert timm.create_model("s3_tiny", device="meta").pretrained_cfg["tag"] == "ms_in1k"
    assert timm.create_model("spvit_deit_tiny", device="meta").pretrained_cfg["tag"] == "ziplab_in1k"


@pytest.mark.parametrize("name", _ours())
def test_every_tag_has_a_source_paper_origin_and_its_licence(name):
    cfg = get_pretrained_cfg(name)
    assert cfg.url or cfg.hf_hub_id
    assert re.fullmatch(r"arXiv:\d{4}\.\d{4,5}", cfg.paper_ids) and cfg.origin_url.startswith("https://github.com/")
    assert cfg.license in ("mit", "apache-2.0")


def test_licences_are_the_source_repositories_own():
    lic = {n: get_pretrained_cfg(n).license for n in ("pdarts_cifar", "pc_darts_cifar", "sdarts_rs_imagenet",
                                                      "snas_cifar", "gdas_v1_cifar", "darts_v2_cifar",
                                                      "darts_minus_cifar", "tf_tas_tiny", "s3_tiny", "spvit_deit_tiny")}
    assert lic == {"pdarts_cifar": "other", "pc_darts_cifar": None, "sdarts_rs_imagenet": None, "snas_cifar": None,
                   "gdas_v1_cifar": "mit", "darts_v2_cifar": "apache-2.0", "darts_minus_cifar": "apache-2.0",
                   "tf_tas_tiny": None, "s3_tiny": "mit", "spvit_deit_tiny": "apache-2.0"}


def test_zoo_list_offline(capsys):
    assert cli.main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for line in ("s3_tiny.ms_in1k", "hf-hub:timm/swin_s3_tiny_224.ms_in1k", "82.1 (imagenet-1k)", "28.33M",
                 "autoformer_tiny.ms_in1k", "1.482G", "darts_v2_cifar.cifar10", "cifar10_model.pt (manual download",
                 "tf_tas_tiny", "none (architecture only)", "none stated", "spvit_deit_tiny.ziplab_dist_in1k"):
        assert line in out, line
    assert "fb_in1k" not in out and "autoformer_tiny.in1k " not in out  # aliases and DeiT inits are not releases
    entries = {e.name: e for e in zoo_entries(architectures=True)}
    assert entries["spvit_deit_small.ziplab_dist_in1k"].metrics == {"top1": 80.3, "top5": 95.1, "dataset": "imagenet-1k"}
    assert any("relative-position" in n for n in entries["autoformer_tiny.ms_in1k"].notes)


# ------------------------------------------------------------------------------ release files (pickles)
def test_release_reader_handles_numpy_and_unknown_classes_without_running_them(tmp_path: Path, monkeypatch):
    """What the real releases pickle beside the weights: an argparse.Namespace (AutoFormer, SPViT-DeiT), numpy
    scalars and arrays, a yacs CfgNode (SPViT-Swin) and other third-party classes (here stand-ins registered under
    those names only while saving). Both serialisation formats."""
    yacs, config = types.ModuleType("yacs"), types.ModuleType("yacs.config")

    class CfgNode(dict):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.__dict__["__immutable__"] = False

    ran = []

    class Amp:
        def __init__(self, x):
            self.x = x

        def __setstate__(self, state):  # would run under unrestricted unpickling
            ran.append(state)

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    Amp.__module__, Amp.__qualname__ = "apex.amp", "Amp"
    apex, amp = types.ModuleType("apex"), types.ModuleType("apex.amp")
    config.CfgNode, amp.Amp = CfgNode, Amp
    for name, mod in (("yacs", yacs), ("yacs.config", config), ("apex", apex), ("apex.amp", amp)):
        monkeypatch.setitem(sys.modules, name, mod)
    payload = {"model": {"w": torch.arange(3.0)}, "args": argparse.Namespace(lr=5e-4), "acc": np.float64(81.5),
               "best": np.array([1.0, 2.0], dtype=np.float32), "config": CfgNode(MODEL=CfgNode(NAME="spvit")),
               "amp": Amp(3), "epoch": 299}
    for new_format in (True, False):
        path = tmp_path / f"release_{new_format}.pth"
        torch.save(payload, path, _use_new_zipfile_serialization=new_format)
        for name in ("yacs.config", "yacs", "apex.amp", "apex"):
            monkeypatch.delitem(sys.modules, name)  # the classes are not importable when reading
        with pytest.raises(ValueError, match="yacs.config.CfgNode"):
            load_checkpoint_file(path, stub_unknown=False)
        ckpt = load_checkpoint_file(path)
        for name, mod in (("yacs", yacs), ("yacs.config", config), ("apex", apex), ("apex.amp", amp)):
            monkeypatch.setitem(sys.modules, name, mod)
        assert torch.equal(ckpt["model"]["w"], torch.arange(3.0)) and ckpt["args"].lr == 5e-4
        assert ckpt["acc"] == 81.5 and isinstance(ckpt["acc"], np.float64) and ckpt["best"].tolist() == [1.0, 2.0]
        assert opaque_global(ckpt["config"]) == "yacs.config.CfgNode" and ckpt["config"]["MODEL"]["NAME"] == "spvit"
        assert opaque_global(ckpt["amp"]) == "apex.amp.Amp" and ran == []
    # numpy stays allowed only inside the load: torch's process-wide allow-list is unchanged
    assert not any("numpy" in str(g) for g in torch.serialization.get_safe_globals())


def test_release_reader_refuses_code(tmp_path: Path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"model": {}, "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_checkpoint_file(tmp_path / "evil.pth")


# ------------------------------------------------------------------- pretrained=True: URL through the cache
def _autoformer_release(path: Path, supernet: torch.nn.Module) -> None:
    glob = {ours: orig for orig, ours in af._ORIGINAL_GLOBAL.items()}
    block = {ours: orig for orig, ours in af._ORIGINAL_BLOCK.items()}
    sd = {}
    for key, value in supernet.state_dict().items():
        m = re.match(r"^blocks\.(\d+)\.(.+)$", key)
        if key != af.STEP_KEY:
            sd[f"blocks.{m.group(1)}.{block[m.group(2)]}" if m else glob[key]] = value.clone()
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": []}, "epoch": 499,
                "max_accuracy": np.float64(75.3), "args": argparse.Namespace(relative_position=True)}, path)


SMALL_AF = dict(space=dict(embed_dim=[64, 96, 128], depth=[2, 3], num_heads=[1, 2], mlp_ratio=[3.0, 3.5, 4.0],
                           super_embed_dim=128, super_depth=3, super_num_heads=2, super_mlp_ratio=4.0),
                img_size=32, patch_size=8, num_classes=10)
SUB_AF = dict(embed_dim=96, depth=2, num_heads=[1, 2], mlp_ratio=[3.5, 3.0])


@pytest.mark.parametrize("tag", ["ms_in1k", "in1k"])
def test_autoformer_pretrained_from_the_cached_release_url(torch_home: Path, tag: str):
    torch.manual_seed(0)
    src = timm.create_model("autoformer_supernet", **SMALL_AF).eval()
    for p in src.parameters():
        p.data.normal_(0, 0.05)
    _autoformer_release(_cached(torch_home, f"autoformer_supernet_tiny.{tag}"), src)
    sub = timm.create_model(f"autoformer_tiny.{tag}", pretrained=True, subnet=SUB_AF,
                            **{k: v for k, v in SMALL_AF.items() if k != "space"})
    supernet = timm.create_model(f"autoformer_supernet_tiny.{tag}", pretrained=True, **SMALL_AF)
    torch.testing.assert_close(_logits(sub, 32), _logits(src.extract(SUB_AF), 32))
    torch.testing.assert_close(_logits(supernet, 32), _logits(src, 32))


def _s3_small():
    from timm_nas.spaces import S3Subnet

    cfg = S3Subnet.from_dict(dict(embed_dim=[16, 32, 32, 32], depth=[1, 1, 2, 1], num_heads=[[1], [2], [2, 2], [2]],
                                  window_size=[[4], [4], [2, 2], [1]], mlp_ratio=[[2.0], [1.0], [2.0, 1.0], [1.0]]))
    torch.manual_seed(1)
    src = timm.create_model("s3_subnet", subnet=cfg.to_dict(), img_size=64, num_classes=10).eval()
    return cfg, src


def test_s3_pretrained_from_the_cached_authors_file(torch_home: Path):
    cfg, src = _s3_small()
    original = {re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.",
                       k).replace("head.fc.", "head."): v for k, v in src.state_dict().items()}
    torch.save({"model": original, "args": argparse.Namespace(cfg="S3-T.yaml"), "max_accuracy": np.float64(82.1)},
               _cached(torch_home, "s3_tiny.ms_in1k_orig"))
    ours = timm.create_model("s3_tiny.ms_in1k_orig", pretrained=True, subnet=cfg.to_dict(), img_size=64,
                             num_classes=10)
    torch.testing.assert_close(_logits(ours, 64), _logits(src, 64), rtol=0, atol=0)


def test_s3_pretrained_from_timms_hub_copy(fake_hub: FakeHub):
    """``s3_tiny.ms_in1k`` reads timm's ``swin_s3_tiny_224`` weights from the Hub through checkpoint_filter_fn."""
    cfg, src = _s3_small()
    _serve(fake_hub, "timm/swin_s3_tiny_224.ms_in1k", src.state_dict())
    # (a 10-class checkpoint: timm drops a classifier whose class count differs from the tag's)
    ours = timm.create_model("s3_tiny", pretrained=True, subnet=cfg.to_dict(), img_size=64, num_classes=10,
                             pretrained_cfg_overlay=dict(num_classes=10))
    assert ours.pretrained_cfg["hf_hub_id"] == "timm/swin_s3_tiny_224.ms_in1k"
    torch.testing.assert_close(_logits(ours, 64), _logits(src, 64), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_s3_full_size_equals_timms_swin_s3(fake_hub: FakeHub, size: str):
    """At full size: timm's own swin_s3_<size>_224 weights (random here) give timm's logits in s3_<size>."""
    ref = timm.create_model(f"swin_s3_{size}_224").eval()
    _serve(fake_hub, f"timm/swin_s3_{size}_224.ms_in1k", ref.state_dict())
    ours = timm.create_model(f"s3_{size}", pretrained=True)
    torch.testing.assert_close(_logits(ours, 224), _logits(ref, 224), rtol=0, atol=0)


@pytest.mark.parametrize("tag", ["ziplab_in1k", "dist_in1k"])
def test_spvit_pretrained_from_the_cached_release_url(torch_home: Path, tag: str):
    """SPViT-DeiT-Ti at full size (4.8M parameters): a release-style file holding DeiT-layout weights (qkv for the
    layers that become convolutions, unpruned FFNs) beside the run's Namespace and numpy accuracy."""
    torch.manual_seed(2)
    deit = timm.create_model("deit_tiny_patch16_224").state_dict()
    torch.save({"model": deit, "args": argparse.Namespace(arch="deit_tiny"), "max_accuracy": np.float64(70.7)},
               _cached(torch_home, f"spvit_deit_tiny.{tag}"))
    expected = timm.create_model("spvit_deit_tiny")
    expected.load_state_dict(spvit_filter(deit, expected), strict=True)
    ours = timm.create_model(f"spvit_deit_tiny.{tag}", pretrained=True)
    torch.testing.assert_close(_logits(ours, 224), _logits(expected, 224), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------- zoo export
def _darts_release(path: Path) -> torch.nn.Module:
    """DARTS's cifar10_model.pt: a bare state dict in the original key layout, auxiliary head included."""
    torch.manual_seed(3)
    src = timm.create_model("darts_v2_cifar", auxiliary=True).eval()
    for m in src.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    sd = {k.replace(".ops.", "._ops."): v for k, v in src.state_dict().items() if "num_batches_tracked" not in k}
    torch.save(sd, path)
    return src


def test_zoo_export_from_local_files_then_resume(tmp_path: Path, capsys):
    ckpts = tmp_path / "downloads"
    ckpts.mkdir()
    src = _darts_release(ckpts / "cifar10_model.pt")
    out = tmp_path / "zoo"
    argv = ["zoo", "export", "--out", str(out), "--checkpoint-dir", str(ckpts), "--models", "*darts_v2_cifar*",
            "--no-progress"]
    assert cli.main(argv) == 0
    assert "darts_v2_cifar.cifar10: done (from local file" in capsys.readouterr().out
    folder = out / "darts_v2_cifar.cifar10"
    assert is_finished(folder)
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True)
    torch.testing.assert_close(_logits(loaded, 32), _logits(src, 32))
    readme = (folder / "README.md").read_text()
    assert "license: apache-2.0" in readme and "model-index" in readme and "97.24" in readme
    assert "cifar10_model.pt" in readme and "arXiv:1806.09055" in readme
    assert cli.main(argv) == 0  # resumable: the finished folder is skipped
    assert "darts_v2_cifar.cifar10: skipped (already exported)" in capsys.readouterr().out


def test_zoo_export_says_what_is_unreachable(tmp_path: Path):
    results = export_zoo(tmp_path / "zoo", pattern="pdarts*", progress=False)
    assert [r.status for r in results] == ["unreachable", "unreachable"]
    assert "no --checkpoint-dir given; download it from https://drive.google.com" in results[0].detail
    assert not (tmp_path / "zoo").exists() or not any((tmp_path / "zoo").iterdir())


def test_zoo_export_from_the_download_cache_to_a_local_dir_folder(torch_home: Path, tmp_path: Path):
    """A release URL already in timm's cache is converted (here AutoFormer-T, sliced from a full-size
    supernet-T in the original layout) and the folder loads with local-dir:."""
    torch.manual_seed(4)
    src = timm.create_model("autoformer_supernet_tiny").eval()
    _autoformer_release(_cached(torch_home, "autoformer_tiny.ms_in1k"), src)
    results = export_zoo(tmp_path / "zoo", pattern="autoformer_tiny.*", progress=False)
    assert [(r.name, r.status) for r in results] == [("autoformer_tiny.ms_in1k", "done")]
    loaded = hub.load(tmp_path / "zoo" / "autoformer_tiny.ms_in1k")
    cfg = json.loads((tmp_path / "zoo" / "autoformer_tiny.ms_in1k" / "config.json").read_text())
    assert cfg["architecture"] == "autoformer_tiny"
    expected = src.extract(timm.create_model("autoformer_tiny", device="meta").subnet)
    torch.testing.assert_close(_logits(loaded, 224), _logits(expected, 224))


# -------------------------------------------------------------------- every listed tag, through its real source
def _spvit_small_args(name: str) -> dict:
    """Small dims with the tag's own ops (the release's architecture pattern; FFNs pruned at small widths)."""
    ops = list(timm.create_model(name, device="meta").arch.ops)
    arch = dict(ops=ops, ffn_kept=[list(range(0, 192, 2 + i % 3)) for i in range(len(ops))])
    return dict(embed_dim=48, num_heads=3, img_size=32, patch_size=8, arch=arch)


def _deit_small(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return timm.create_model("deit_tiny_patch16_224", embed_dim=48, num_heads=3, img_size=32,
                             patch_size=8).state_dict()


@pytest.mark.parametrize("tag", _ours())
def test_every_listed_tag_loads_offline_from_its_source(tag: str, torch_home: Path, fake_hub: FakeHub):
    """Every tag ``timm.list_pretrained()`` lists for our models loads with ``pretrained=True`` from where timm
    looks for it (the download cache for a release URL, the Hub for a Hub id) through the family's filter, and
    gives the source model's logits. Architectures are shrunk with constructor arguments (the tags' files are the
    same layout at any size)."""
    name = tag.split(".")[0]
    cfg = get_pretrained_cfg(tag)
    if name.startswith("autoformer"):
        torch.manual_seed(0)
        src = timm.create_model("autoformer_supernet", **SMALL_AF).eval()
        for p in src.parameters():
            p.data.normal_(0, 0.05)
        _autoformer_release(_cached(torch_home, tag), src)
        if "supernet" in name:
            ours, ref = timm.create_model(tag, pretrained=True, **SMALL_AF), src
        else:
            ours = timm.create_model(tag, pretrained=True, subnet=SUB_AF,
                                     **{k: v for k, v in SMALL_AF.items() if k != "space"})
            ref = src.extract(SUB_AF)
        size = 32
    elif name.startswith("s3_"):
        s3cfg, ref = _s3_small()
        kw = dict(subnet=s3cfg.to_dict(), img_size=64, num_classes=10)
        if cfg.hf_hub_id:
            _serve(fake_hub, cfg.hf_hub_id, ref.state_dict())
            kw["pretrained_cfg_overlay"] = dict(num_classes=10)
        else:
            original = {re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.",
                               k).replace("head.fc.", "head."): v for k, v in ref.state_dict().items()}
            torch.save({"model": original, "args": argparse.Namespace(cfg="S3.yaml")}, _cached(torch_home, tag))
        ours = timm.create_model(tag, pretrained=True, **kw)
        size = 64
    elif name.startswith("spvit_deit"):
        kw = _spvit_small_args(name)
        deit = _deit_small(1)
        torch.save({"model": deit, "args": argparse.Namespace(arch=name), "max_accuracy": np.float64(70.0)},
                   _cached(torch_home, tag))
        ref = timm.create_model(name, **kw)
        ref.load_state_dict(spvit_filter(deit, ref), strict=True)
        ours = timm.create_model(tag, pretrained=True, **kw)
        size = 32
    elif name.startswith("spvit_search_deit"):
        assert cfg.hf_hub_id.startswith("timm/deit_") and tag.endswith(("fb_in1k", "fb_in1k_deit_init"))
        deit = _deit_small(2)
        _serve(fake_hub, cfg.hf_hub_id, deit)
        kw = dict(embed_dim=48, num_heads=3, img_size=32, patch_size=8, num_classes=1000)
        ours = timm.create_model(tag, pretrained=True, **kw)
        ref = timm.create_model("deit_tiny_patch16_224", embed_dim=48, num_heads=3, img_size=32, patch_size=8)
        ref.load_state_dict(deit)
        size = 32
        # the search network starts as the DeiT: every gate open (MSA everywhere, full FFNs) gives DeiT's logits
        ours.eval()
        torch.testing.assert_close(_logits(ours, size), _logits(ref, size), rtol=1e-5, atol=1e-5)
        return
    else:
        pytest.fail(f"no offline source test for the family of {tag}")
    torch.testing.assert_close(_logits(ours, size), _logits(ref, size), rtol=0, atol=0)
