"""The proxy registry: one call signature for every training-free score.

Every proxy is called as ``proxy(model, inputs=None, targets=None, *, config=None, **options) -> float``:

* ``model`` is any ``nn.Module`` (a timm model, a supernet, an extracted subnet);
* ``inputs`` / ``targets`` are an image batch and its labels; proxies that need them build a seeded random
  batch when they are omitted (shape from ``model.pretrained_cfg['input_size']``, ``batch_size`` and ``seed``
  options), proxies that do not (``synflow``, ``dss``, ``params``) ignore them;
* ``config`` is the architecture config to score: with a supernet (a model with ``use_subnet``) the score is
  computed under ``with model.use_subnet(config):``, and ``params`` / ``macs`` use the analytic cost model;
* ``options`` are per-proxy keywords (``train=`` for the mode during scoring, ``mode=`` for DSS, ...).

Scoring never changes the model: its parameters, buffers, ``.grad`` fields, ``requires_grad`` flags and
train/eval mode are the same afterwards (proxies read gradients with ``torch.autograd.grad`` and pass
altered weights, such as synflow's ``|theta|``, through ``torch.func.functional_call``).
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

__all__ = ["ProxySpec", "register_proxy", "get_proxy", "list_proxies", "score", "default_inputs", "scoring_mode"]

ProxyFn = Callable[..., float]


@dataclasses.dataclass(frozen=True)
class ProxySpec:
    """A registered proxy.

    Attributes:
        name: registry name.
        fn: ``fn(model, inputs, targets, *, config, **options) -> float`` with ``inputs`` / ``targets`` already
            resolved (tensors on the model's device, or ``None`` for a data-free proxy).
        uses_data: the proxy reads an input batch (built at random when none is given).
        uses_labels: the proxy reads labels (random labels when none are given).
        default_batch_size: batch size of the random batch built when ``inputs`` is omitted.
        description: one line for ``--help`` and the docs, with the source.
    """

    name: str
    fn: ProxyFn
    uses_data: bool
    uses_labels: bool
    default_batch_size: int
    description: str

    def __call__(self, model: nn.Module, inputs: torch.Tensor | None = None, targets: torch.Tensor | None = None,
                 *, config: Any = None, **options: Any) -> float:
        batch_size = options.pop("batch_size", None)
        seed = options.pop("seed", 0)
        if self.uses_data and inputs is None:
            inputs = default_inputs(model, batch_size or self.default_batch_size, seed=seed,
                                    input_size=options.get("input_size"))
        if self.uses_labels and targets is None:
            targets = default_targets(model, inputs.shape[0], seed=seed)
        device = _device_of(model)
        if inputs is not None:
            inputs = inputs.to(device)
        if targets is not None:
            targets = targets.to(device)
        with _active(model, config):
            return float(self.fn(model, inputs, targets, config=config, **options))


_REGISTRY: dict[str, ProxySpec] = {}


def register_proxy(name: str, *, uses_data: bool = True, uses_labels: bool = False, default_batch_size: int = 8,
                   description: str = "") -> Callable[[ProxyFn], ProxyFn]:
    """Decorator adding ``fn(model, inputs, targets, *, config, **options) -> float`` to the registry."""

    def deco(fn: ProxyFn) -> ProxyFn:
        if name in _REGISTRY:
            raise ValueError(f"proxy {name!r} is already registered")
        _REGISTRY[name] = ProxySpec(name, fn, uses_data, uses_labels, default_batch_size,
                                    description or (fn.__doc__ or "").strip().splitlines()[0])
        return fn

    return deco


def get_proxy(name: str) -> ProxySpec:
    """Look a proxy up by name.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown proxy {name!r}; available proxies: {list_proxies()}") from None


def list_proxies() -> list[str]:
    """Names of the registered proxies, sorted."""
    return sorted(_REGISTRY)


def score(name: str, model: nn.Module, inputs: torch.Tensor | None = None, targets: torch.Tensor | None = None,
          *, config: Any = None, **options: Any) -> float:
    """Score ``model`` (or its subnet ``config``) with the proxy ``name``; see the module docstring."""
    return get_proxy(name)(model, inputs, targets, config=config, **options)


# ------------------------------------------------------------------------------------------------ helpers
def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def input_size_of(model: nn.Module, input_size: tuple[int, int, int] | int | None = None) -> tuple[int, int, int]:
    """``(C, H, W)`` of one input image.

    ``input_size`` if given (an int ``S`` means ``(C, S, S)``), else the fixed image size of a ViT's patch
    embedding (``model.patch_embed.img_size``: a model built with ``img_size=`` keeps timm's 224 px
    ``pretrained_cfg``), else ``model.pretrained_cfg['input_size']``, else ``(3, 224, 224)``.
    """
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    chans = int(size[0]) if size is not None else 3
    proj = getattr(getattr(model, "patch_embed", None), "proj", None)
    if isinstance(getattr(proj, "in_channels", None), int):
        chans = proj.in_channels
    if isinstance(input_size, int):
        return (chans, input_size, input_size)
    if input_size is not None:
        input_size = tuple(int(v) for v in input_size)
        return input_size if len(input_size) == 3 else (chans, *input_size)  # type: ignore[return-value]
    img = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if isinstance(img, int):
        return (chans, img, img)
    if isinstance(img, (tuple, list)) and len(img) == 2:
        return (chans, int(img[0]), int(img[1]))
    if size is not None:
        return tuple(int(v) for v in size)  # type: ignore[return-value]
    return (3, 224, 224)


def default_inputs(model: nn.Module, batch_size: int, *, seed: int = 0,
                   input_size: tuple[int, int, int] | int | None = None) -> torch.Tensor:
    """A standard-normal image batch drawn from a generator seeded with ``seed`` (never the global RNG)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn((batch_size, *input_size_of(model, input_size)), generator=g)


def default_targets(model: nn.Module, batch_size: int, *, seed: int = 0) -> torch.Tensor:
    """Uniform random labels in ``[0, model.num_classes)`` from a generator seeded with ``seed + 1``."""
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if num_classes <= 0:
        raise ValueError("this proxy needs labels: pass targets=..., or give the model a classifier "
                         "(model.num_classes > 0)")
    g = torch.Generator().manual_seed(int(seed) + 1)
    return torch.randint(num_classes, (batch_size,), generator=g)


@contextlib.contextmanager
def _active(model: nn.Module, config: Any) -> Iterator[None]:
    if config is not None and hasattr(model, "use_subnet"):
        with model.use_subnet(config):
            yield
    else:
        yield


@contextlib.contextmanager
def scoring_mode(model: nn.Module, train: bool = False) -> Iterator[None]:
    """Put every module in train or eval mode for the duration and restore each module's own flag after.

    Proxies score in eval mode by default: dropout and drop-path are off, so a score is a deterministic function
    of the weights, and a supernet does not sample a random subnet (its training-mode behaviour).
    """
    modes = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield
    finally:
        for m, flag in modes:
            m.training = flag


def cloned_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Clones of the model's buffers, to pass to ``functional_call`` so that in-place buffer updates during a
    training-mode forward (BatchNorm running statistics, step counters) never reach the model."""
    return {name: b.clone() for name, b in model.named_buffers()}
