"""Shared test helpers.

Golden fixtures (numbers produced by the original authors' code) live in ``../shared/fixtures`` beside the
checkout; ``TIMM_NAS_FIXTURES`` overrides the location. Tests that need them skip with a clear reason only when
the folder is absent (a user's checkout); they are never copied into the repository.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

import timm_nas  # noqa: F401  (registers the models)

REPO_ROOT = Path(__file__).resolve().parents[1]


def fixtures_root() -> Path:
    env = os.environ.get("TIMM_NAS_FIXTURES")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "fixtures"


def fixture_dir(family: str) -> Path:
    """The golden fixture folder of ``family``; skips the calling test if it is absent."""
    path = fixtures_root() / family
    if not path.is_dir():
        pytest.skip(f"golden fixtures for {family!r} not found at {path} (set TIMM_NAS_FIXTURES to the "
                    "shared/fixtures folder to run the parity tests)")
    return path


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def load_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def darts_search_golden(dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The DARTS search network of the fixture (``C=4, layers=5``) with the golden weights and alphas in ``dtype``,
    and the fixture's ``search_cases`` tensors. Skips when the fixtures are absent."""
    import timm

    from timm_nas.models.darts import checkpoint_filter_fn

    folder = fixture_dir("darts")
    sd = load_tensors(folder / "search_state_dict.safetensors")
    t = load_tensors(folder / "search_cases.safetensors")
    model = timm.create_model("darts_search", C=4, layers=5).to(dtype)
    state = checkpoint_filter_fn(dict(sd, alphas_normal=t["alphas_normal"], alphas_reduce=t["alphas_reduce"]), model)
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()})
    return model, t


@pytest.fixture
def golden():
    """``golden('autoformer')`` -> the fixture folder (skips when absent)."""
    return fixture_dir


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``).

    The models under test are tiny and gain nothing from threads; on a shared 2-core machine spinning OpenMP
    threads make each op far slower; and the DARTS goldens were made with one thread (bit-exact parity)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
