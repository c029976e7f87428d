"""Deployment export of the static models of every family: ONNX and ``torch.export``.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch's current exporter, built on ``torch.export``; it needs
``onnxscript``), with its graph optimiser on and the weights inside the file (``external_data=False``), so a model
under 2 GB is one self-contained ``model.onnx``; larger models get the ``model.onnx.data`` sidecar the ONNX format
requires. The batch dimension is dynamic. :func:`export_onnx` checks the file with onnxruntime on a batch of another
size against eager PyTorch before keeping it (``pip install 'timm-nas[deploy]'`` installs onnx, onnxscript and
onnxruntime).

Only static models export: a weight-sharing supernet or a search network runs whichever subnet is active, so
extract the subnet first (``supernet.extract(config)``, ``search_network.extract()``).
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

__all__ = ["ONNX_NAME", "check_static", "example_input", "export_program", "export_onnx"]

#: The file name of the ONNX export beside ``model.safetensors``.
ONNX_NAME = "model.onnx"
#: Largest model (bytes of parameters and buffers) written as one ONNX file (protobuf's 2 GB limit, with margin).
SINGLE_FILE_BYTES = 1_800_000_000
#: Largest batch the exported programs accept (the dynamic dimension needs a bound).
MAX_BATCH = 4096


def check_static(model: nn.Module) -> None:
    """Raise ``ValueError`` for a supernet or a search network (they need :meth:`extract` first)."""
    kinds = (("use_subnet", "weight-sharing supernet", "supernet.extract(config)"),
             ("arch_parameters", "DARTS-style search network", "its genotype network (search.darts.export_genotype)"),
             ("complexity_loss", "SPViT search network", "search_network.extract()"))
    for attr, what, how in kinds:
        if hasattr(model, attr):
            raise ValueError(f"{type(model).__name__} is a {what}: ONNX and torch.export need a static model; "
                             f"extract it first ({how})")


def example_input(model: nn.Module, batch_size: int = 2, input_size: Sequence[int] | int | None = None) -> torch.Tensor:
    """A seeded random batch of the model's input size (``(batch, C, H, W)``) on the model's device."""
    from .proxies._registry import input_size_of

    size = input_size_of(model, input_size)  # type: ignore[arg-type]
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, *size, generator=g).to(device)


def _batch_dim() -> Any:
    from torch.export import Dim

    return Dim("batch", min=1, max=MAX_BATCH)


def export_program(model: nn.Module, *, input_size: Sequence[int] | int | None = None,
                   dynamic_batch: bool = True) -> Any:
    """``torch.export.export`` of a static model (eval mode) with a dynamic batch dimension.

    Raises:
        ValueError: for a supernet or a search network.
    """
    check_static(model)
    model = model.eval()
    x = example_input(model, 2, input_size)
    shapes = ({0: _batch_dim()},) if dynamic_batch else None
    return torch.export.export(model, (x,), dynamic_shapes=shapes)


def _modules(*names: str) -> None:
    import importlib.util

    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise ImportError(f"ONNX export needs {missing}: pip install 'timm-nas[deploy]'")


def export_onnx(model: nn.Module, path: str | os.PathLike, *, input_size: Sequence[int] | int | None = None,
                dynamic_batch: bool = True, check: bool = True, atol: float = 1e-4, rtol: float = 1e-4) -> Path:
    """Write a static model to ``path`` as ONNX (one file when the weights fit), atomically.

    Args:
        model: a static model of any family (an extracted subnet, a genotype network, a pruned model).
        path: the ``.onnx`` file.
        input_size: ``(C, H, W)`` or a side (default: the model's input size).
        dynamic_batch: a dynamic batch dimension (else the export's batch of 2 is fixed).
        check: run the file with onnxruntime on a batch of 3 (1 without a dynamic batch) and compare with eager
            PyTorch; a difference beyond ``atol`` + ``rtol`` x |eager| raises and nothing is kept.
        atol, rtol: the check's tolerances.

    Returns:
        ``path``.

    Raises:
        ValueError: for a supernet or a search network, or when the check fails.
        ImportError: without onnx / onnxscript (and onnxruntime when checking).
    """
    check_static(model)
    _modules("onnx", "onnxscript", *(("onnxruntime",) if check else ()))
    path = Path(path)
    model = model.eval()
    x = example_input(model, 2, input_size)
    size = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    staging = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    try:
        out = staging / path.name
        shapes = ({0: _batch_dim()},) if dynamic_batch else None
        # (not under no_grad: torch.export's decomposition of a graph traced there fails for some models)
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its steps; errors carry the details
            torch.onnx.export(model, (x,), str(out), dynamo=True, dynamic_shapes=shapes, optimize=True,
                              external_data=size > SINGLE_FILE_BYTES, verbose=False)
        if check:
            _check(model, out, x if not dynamic_batch else example_input(model, 3, input_size), atol, rtol)
        for p in staging.iterdir():  # model.onnx (and its .data sidecar for a model over 2 GB)
            os.replace(p, path.parent / p.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _check(model: nn.Module, path: Path, x: torch.Tensor, atol: float, rtol: float) -> None:
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.detach().cpu().numpy()})[0]
    with torch.no_grad():
        want = model(x)
    want = (want[0] if isinstance(want, (tuple, list)) else want).detach().float().cpu().numpy()
    if got.shape != want.shape or not np.allclose(got, want, atol=atol, rtol=rtol):
        diff = float(np.abs(got - want).max()) if got.shape == want.shape else f"shape {got.shape} vs {want.shape}"
        raise ValueError(f"the ONNX export of {type(model).__name__} does not match eager PyTorch on onnxruntime "
                         f"(max |diff| {diff}, atol {atol}, rtol {rtol}); nothing was written")
