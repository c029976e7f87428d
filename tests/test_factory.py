"""`timm_nas.list_models` lists exactly timm-nas's models; the sub-packages load lazily from `import timm_nas`."""
from __future__ import annotations

import subprocess
import sys
import types

import pytest
import timm
from timm.models import _registry

import timm_nas

FAKE_MODULE = "fake_pkg.darts"  # the same basename as our darts module: timm's module index cannot tell them apart
FAKE_MODEL = "darts_from_another_package_test_only"


@pytest.fixture
def foreign_darts_model(monkeypatch):
    """A model registered with timm from another package's ``darts`` module; removed from timm's registry after."""
    monkeypatch.setitem(sys.modules, FAKE_MODULE, types.ModuleType(FAKE_MODULE))

    def entrypoint(pretrained: bool = False, **kwargs):  # never called
        raise NotImplementedError

    entrypoint.__name__ = entrypoint.__qualname__ = FAKE_MODEL
    entrypoint.__module__ = FAKE_MODULE
    timm.models.register_model(entrypoint)
    try:
        yield FAKE_MODEL
    finally:
        _registry._clear_model_entries(FAKE_MODEL)
        _registry._model_entrypoints.pop(FAKE_MODEL, None)


def test_list_models_excludes_other_packages_modules_of_the_same_name(foreign_darts_model):
    assert foreign_darts_model in timm.list_models(module="darts")  # timm's own module filter lets it in
    assert foreign_darts_model not in timm_nas.list_models()
    assert foreign_darts_model not in timm_nas.list_models("darts*")


def test_list_models_lists_ours_with_filter_and_pretrained():
    names = timm_nas.list_models()
    assert names and all(timm.models.model_entrypoint(n).__module__.startswith("timm_nas.") for n in names)
    assert {"autoformer_tiny", "darts_cifar", "autoformer_supernet"} <= set(names)
    assert timm_nas.list_models("autoformer*") == [n for n in names if n.startswith("autoformer")]
    pretrained = timm_nas.list_models(pretrained=True)
    assert pretrained and set(pretrained) <= set(timm.list_models(pretrained=True))


def test_subpackages_are_lazy_attributes():
    code = ("import sys, timm_nas; lazy = ('hub', 'search', 'proxies');"
            "assert not any(f'timm_nas.{m}' in sys.modules for m in lazy), sys.modules.keys();"
            "assert {'hub', 'cost', 'search', 'proxies', 'spaces'} <= set(dir(timm_nas));"
            "assert callable(timm_nas.search.run_search) and callable(timm_nas.hub.export);"
            "assert timm_nas.proxies is sys.modules['timm_nas.proxies']")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with pytest.raises(AttributeError, match="no attribute 'not_a_module'"):
        timm_nas.not_a_module  # noqa: B018
