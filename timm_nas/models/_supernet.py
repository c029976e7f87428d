"""Family-independent supernet machinery: the active subnet, the sampling policy, the step buffer.

A weight-sharing supernet is an ordinary ``nn.Module`` that can run any subnet of its search space. This module
holds the part that does not depend on the family (AutoFormer, S3, ...):

* the **active subnet** (what eval-mode forwards run; by default the supernet's full weight shape, so the supernet
  is an ordinary model), :meth:`SupernetMixin.use_subnet` to swap it temporarily, and
  :meth:`SupernetMixin.last_arch` (what the most recent forward ran, in any mode);
* the **sampling policy** of training-mode forwards (``'uniform'``, ``'sandwich'`` or ``'fixed'``), drawn from
  :func:`timm_nas.spaces.base.generator_for` ``(seed, step)``, where ``step`` counts training-mode forwards and
  lives in a persistent buffer: a resumed run continues the sequence, DistributedDataParallel broadcasts the
  buffer from rank 0, and every rank draws the same subnet without communication;
* the **zero-gradient tie**: parameters outside the sampled subnet receive a zero gradient instead of ``None``;
* a **load-state-dict pre-hook** that refuses, with an error saying what to do, a checkpoint whose tensors do not fit
  this supernet (another space's weight shapes, another image or patch size, another classifier) before any
  tensor is copied: timm's ``train.py --resume`` / ``--initial-checkpoint`` and ``validate.py --checkpoint`` call
  ``load_state_dict`` directly, so this is where a wrong ``--model-kwargs space=...`` is caught.

Operation (how to slice weights) stays in the family's model; policy (which subnet to run) lives here.

Deviation from the original AutoFormer (microsoft/Cream ``supernet_train.py``): there, parameters of the blocks a
sampled subnet skips get no gradient (``None``), so AdamW leaves them untouched that step. A ``None`` gradient
makes DistributedDataParallel without ``find_unused_parameters=True`` fail, and timm's backward contract expects a
gradient on every parameter, so by default (``unused_grad='zero'``) they get zeros; AdamW's decoupled weight
decay then also decays them that step. ``unused_grad='none'`` restores the original's ``None`` gradients for
single-process training. (The original also reseeds Python's global RNG per epoch to keep ranks in step; here the
generator is explicit and seeded from ``(seed, step)``.)
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn

from ..spaces.base import generator_for

__all__ = ["StepCounterMixin", "SupernetMixin", "SupernetStateDictError", "SAMPLING_POLICIES", "UNUSED_GRAD_MODES"]

#: Training-mode sampling policies: a uniform sample of the space per forward; the sandwich rule (largest,
#: smallest, uniform sample in turn); or always the active subnet.
SAMPLING_POLICIES = ("uniform", "sandwich", "fixed")

#: What parameters outside the sampled subnet receive in backward: zeros (DDP-safe) or ``None`` (the original).
UNUSED_GRAD_MODES = ("zero", "none")

#: Name of the persistent buffer counting training-mode forwards.
STEP_BUFFER = "subnet_step"


class SupernetStateDictError(ValueError, RuntimeError):
    """A state dict whose tensors cannot belong to this supernet (raised by ``load_state_dict``).

    A ``ValueError`` (bad user input, reported as one line by the ``timm-nas`` command) and, like PyTorch's own
    ``load_state_dict`` errors, a ``RuntimeError``, so callers that catch those keep working.
    """


class _ZeroGradTie(torch.autograd.Function):
    """Identity on ``x`` that hands a zero gradient to each extra tensor argument in backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.specs = [(p.shape, p.dtype, p.device) for p in params]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:  # type: ignore[override]
        return (grad, *(torch.zeros(s, dtype=d, device=dev) for s, d, dev in ctx.specs))


class StepCounterMixin:
    """A persistent counter of training-mode forwards, for every model that draws per-step randomness (supernets'
    subnet sampling, SPViT's gate noise) from a generator seeded by ``(seed, step)``.

    The count lives in a persistent long buffer (a resumed run continues the sequence; DistributedDataParallel
    broadcasts buffers from rank 0, so every rank draws alike without communication) with a Python mirror, so a
    training forward needs no host-device sync to read it; the mirror is re-read after ``load_state_dict`` and on
    first use (after DDP's initial broadcast). Call :meth:`init_step_counter` in ``__init__``.
    """

    _step_buffer_name: str
    _step_mirror: int | None

    def init_step_counter(self, buffer: str, device: torch.device | str | None = None) -> None:
        """Register the persistent step buffer ``buffer`` (its name is part of the checkpoint layout)."""
        self._step_buffer_name = buffer
        self._step_mirror = None
        self.register_buffer(buffer, torch.zeros((), dtype=torch.long, device=device), persistent=True)  # type: ignore[attr-defined]
        self.register_load_state_dict_post_hook(_forget_step_mirror)  # type: ignore[attr-defined]

    @property
    def step(self) -> int:
        """Number of training-mode forwards so far (the persistent step buffer)."""
        if self._step_mirror is None:
            buf = getattr(self, self._step_buffer_name)
            self._step_mirror = 0 if buf.is_meta else int(buf)
        return self._step_mirror

    def set_step(self, step: int) -> None:
        """Set the training-forward counter (e.g. to replay a run from a given step)."""
        with torch.no_grad():
            getattr(self, self._step_buffer_name).fill_(int(step))
        self._step_mirror = int(step)

    def advance_step(self) -> int:
        """Return the current step and count one more training forward (in place: no host-device sync)."""
        step = self.step
        self._step_mirror = step + 1
        with torch.no_grad():
            getattr(self, self._step_buffer_name).add_(1)
        return step


class SupernetMixin(StepCounterMixin):
    """Active subnet, sampling policy, step buffer and zero-gradient tie for an ``nn.Module`` supernet.

    A family's supernet class derives from ``(SupernetMixin, nn.Module)`` and

    1. calls :meth:`init_supernet` in ``__init__`` (after ``nn.Module.__init__``);
    2. implements :meth:`unused_parameters` (the parameters a given subnet does not touch);
    3. calls :meth:`select_subnet` once at the start of each forward pass and runs the config it returns;
    4. passes one activation of that forward through :meth:`tie_unused`.

    The space object must offer ``config_cls``, ``sample(generator)``, ``largest()``, ``smallest()``, ``fits(cfg)``
    and ``full()`` (the subnet with the supernet's whole weight shape); ``check_fits(cfg)``, if present, is used
    to explain why a config does not fit.
    """

    def init_supernet(
            self,
            space: Any,
            *,
            sampling: str | None = None,
            seed: int | None = None,
            unused_grad: str | None = None,
            subnet: Any = None,
            device: torch.device | str | None = None,
    ) -> None:
        """Set up the supernet state.

        Args:
            space: the search space (also defines the default active subnet, ``space.full()``).
            sampling: training-mode policy, one of :data:`SAMPLING_POLICIES` (default ``'uniform'``).
            seed: seed of the per-step generators (default 0).
            unused_grad: one of :data:`UNUSED_GRAD_MODES` (default ``'zero'``).
            subnet: the initial active subnet (a config or its dict; default ``space.full()``): what eval forwards
                run and ``sampling='fixed'`` trains. It must fit the weights (``space.fits``).
            device: where the step buffer lives (the model's device).

        Raises:
            ValueError: for an unknown ``sampling`` / ``unused_grad`` or a ``subnet`` that does not fit.
            TypeError: if ``seed`` is not an int.
        """
        sampling = "uniform" if sampling is None else sampling
        unused_grad = "zero" if unused_grad is None else unused_grad
        if sampling not in SAMPLING_POLICIES:
            raise ValueError(f"sampling={sampling!r} is not supported; choose one of {list(SAMPLING_POLICIES)}")
        if unused_grad not in UNUSED_GRAD_MODES:
            raise ValueError(f"unused_grad={unused_grad!r} is not supported; choose one of {list(UNUSED_GRAD_MODES)}")
        seed = 0 if seed is None else seed
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self._space = space
        self.sampling = sampling
        self.seed = int(seed)
        self.unused_grad = unused_grad
        self._active = space.full() if subnet is None else self.check_subnet(subnet)
        self._last_subnet = None
        self.init_step_counter(STEP_BUFFER, device=device)
        self.register_load_state_dict_pre_hook(_refuse_foreign_state_dict)

    # ------------------------------------------------------------------------------------------ the subnet
    @property
    def space(self) -> Any:
        """The search space (and weight shape) of this supernet."""
        return self._space

    @property
    def active_subnet(self) -> Any:
        """The subnet eval-mode forwards run (and ``sampling='fixed'`` trains)."""
        return self._active

    def set_active_subnet(self, cfg: Any) -> None:
        """Make ``cfg`` (a config or its dict) the active subnet.

        Raises:
            ValueError: if the supernet's weights cannot run ``cfg``.
        """
        self._active = self.check_subnet(cfg)

    @contextlib.contextmanager
    def use_subnet(self, cfg: Any) -> Iterator[Any]:
        """Context manager: make ``cfg`` the active subnet, restoring the previous one on exit.

        In training mode the sampling policy still decides (use ``sampling='fixed'`` to train the active subnet).

        Yields:
            The subnet as a config object.
        """
        cfg = self.check_subnet(cfg)
        previous = self._active
        self._active = cfg
        try:
            yield cfg
        finally:
            self._active = previous

    def last_arch(self) -> Any:
        """The subnet the most recent forward ran (``None`` before the first forward): in training mode the
        sampled one. The same method as the SPViT search network's."""
        return self._last_subnet

    @property
    def last_subnet(self) -> Any:
        """Deprecated spelling of :meth:`last_arch`."""
        warnings.warn("supernet.last_subnet is deprecated; call supernet.last_arch() (one name across families)",
                      DeprecationWarning, stacklevel=2)
        return self._last_subnet

    def check_subnet(self, cfg: Any) -> Any:
        """Return ``cfg`` as a config object if the supernet's weights can run it (``space.fits``).

        Raises:
            ValueError: naming the field that exceeds the weights.
        """
        cfg = self._space.config_cls.resolve(cfg)
        if not self._space.fits(cfg):
            check = getattr(self._space, "check_fits", None)
            if check is not None:
                check(cfg)  # raises with the precise reason
            raise ValueError(f"{cfg} does not fit this supernet's weights")
        return cfg

    # ------------------------------------------------------------------------------------------- sampling
    def policy_subnet(self, step: int) -> Any:
        """The subnet the sampling policy picks for training-mode forward number ``step`` (pure function)."""
        if self.sampling == "fixed":
            return self._active
        if self.sampling == "sandwich":
            turn = step % 3
            if turn == 0:
                return self._space.largest()
            if turn == 1:
                return self._space.smallest()
        return self._space.sample(generator_for(self.seed, step))

    def select_subnet(self) -> Any:
        """Pick the subnet of the forward pass about to run and record it (:meth:`last_arch`).

        Eval mode: the active subnet. Training mode: the sampling policy's pick for the current step, then the
        step advances (eval forwards do not advance it).
        """
        if self.training:  # type: ignore[attr-defined]
            cfg = self.policy_subnet(self.advance_step())
        else:
            cfg = self._active
        self._last_subnet = cfg
        return cfg

    # ----------------------------------------------------------------------------------------- gradients
    def unused_parameters(self, cfg: Any) -> Sequence[nn.Parameter]:
        """Parameters that subnet ``cfg`` does not touch at all (the family implements this)."""
        raise NotImplementedError

    def tie_unused(self, x: torch.Tensor, cfg: Any) -> torch.Tensor:
        """Return ``x`` unchanged, wired so that parameters unused by ``cfg`` get a zero gradient in backward.

        A no-op with ``unused_grad='none'``, without grad mode, or when every parameter is used.
        """
        if self.unused_grad == "none" or not torch.is_grad_enabled():
            return x
        params = [p for p in self.unused_parameters(cfg) if p.requires_grad]
        if not params:
            return x
        return _ZeroGradTie.apply(x, *params)


def _refuse_foreign_state_dict(
        module: nn.Module,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
) -> None:
    """``load_state_dict`` pre-hook: raise :class:`SupernetStateDictError` before anything is copied when a tensor's
    shape differs from this supernet's.

    PyTorch refuses such a checkpoint anyway (a size mismatch is an error even with ``strict=False``), with a
    ``RuntimeError`` that lists sizes; this says why (another space, image size, patch size or classifier) and what
    to do. Missing or unexpected keys alone (e.g. another ``super_depth`` with equal widths) are left to PyTorch's
    ``strict`` check: PyTorch always calls this hook with ``strict=True``, so the hook cannot know the caller's
    choice.
    """
    own = module.state_dict(keep_vars=True)
    mismatched = []
    for key, value in state_dict.items():
        name = key[len(prefix):] if key.startswith(prefix) else None
        if name in own and hasattr(value, "shape") and tuple(value.shape) != tuple(own[name].shape):
            mismatched.append(f"{name}: checkpoint {tuple(value.shape)} vs model {tuple(own[name].shape)}")
    if not mismatched:
        return
    more = f" and {len(mismatched) - 5} more" if len(mismatched) > 5 else ""
    space = module.space  # type: ignore[attr-defined]
    space_desc = space.to_dict() if hasattr(space, "to_dict") else space
    raise SupernetStateDictError(
        f"this checkpoint does not fit {type(module).__name__}: shape mismatches {mismatched[:5]}{more}. It was "
        "saved by a supernet with other weight shapes: another search space, image size, patch size, in_chans or "
        f"num_classes. This model's space is {space_desc}. Create the model with the checkpoint's arguments: "
        "timm.create_model(name, space=..., img_size=..., num_classes=...) with the values it was saved with (in "
        "timm's train.py / validate.py: the same --model, --model-kwargs, --num-classes and --img-size; a train.py "
        "checkpoint records them under 'args').")


def _forget_step_mirror(module: nn.Module, incompatible_keys: Any) -> None:
    """After ``load_state_dict`` (e.g. a resume) re-read the step from the loaded buffer."""
    module._step_mirror = None  # type: ignore[attr-defined]
