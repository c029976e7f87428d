"""Scale-out with torch.distributed: candidates are sharded across ranks and the scores gathered.

Every rank runs the same (deterministic) strategy and so proposes the same candidates; in each round rank ``r``
scores the ``r``-th of the next ``world_size`` unscored candidates and an ``all_gather_object`` gives every rank
all the scores, so the strategies stay in step without further communication. Only rank 0 writes files. Object
collectives go through a gloo group (CPU), whatever backend the default group uses, so the same code runs on
CPU processes and on GPUs (NCCL) alike.

Launch with ``torchrun --nproc-per-node N -m timm_nas search ...``: the environment variables torchrun sets
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ...) are read by :meth:`Dist.from_env`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.distributed as dist

__all__ = ["Dist"]


@dataclasses.dataclass
class Dist:
    """This process's place in a (possibly single-process) group.

    Attributes:
        rank: this process's rank.
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        group: the process group used for object collectives (``None`` when single-process).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, backend: str | None = None) -> "Dist":
        """Join the group described by torchrun's environment (or the one already initialised).

        Single process (no ``WORLD_SIZE`` > 1 and no initialised group): rank 0 of 1, nothing initialised.
        ``backend`` defaults to ``nccl`` when CUDA is available, else ``gloo``.
        """
        if not dist.is_available():
            return cls()
        if not dist.is_initialized():
            if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
                return cls()
            if backend is None:
                backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)
        return cls.from_group()

    @classmethod
    def from_group(cls) -> "Dist":
        """Describe the already-initialised default group."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        world = dist.get_world_size()
        if world == 1:
            return cls()
        group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return cls(rank=dist.get_rank(), world_size=world, local_rank=local, group=group or dist.group.WORLD)

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src, group=self.group)
        return box[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier(group=self.group)

    def check(self, action: Callable[[], Any], *, src: int = 0) -> Any:
        """Run ``action`` on rank ``src`` only and hand its result to every rank; an exception it raises is
        raised on every rank (as ``ValueError`` with the same message elsewhere), so no rank waits forever in the
        next collective. Used for the checks of a run folder, which only rank 0 reads."""
        if self.rank == src:
            try:
                status: tuple[str, Any] = ("ok", action())
            except Exception as e:
                if self.world_size == 1:
                    raise
                self.broadcast(("error", f"{type(e).__name__}\0{e}"), src=src)
                raise
        else:
            status = ("ok", None)
        status = self.broadcast(status, src=src)
        if status[0] == "error":
            kind, _, message = status[1].partition("\0")
            raise ValueError(message)
        return status[1]

    # ----------------------------------------------------------------------------------- tensor collectives
    # (on the default group: NCCL tensors on GPUs, gloo on CPUs)
    def all_reduce_mean(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The tensors averaged over ranks (one flat all-reduce); the tensors themselves in a single process."""
        tensors = list(tensors)
        if self.world_size == 1 or not tensors:
            return tensors
        flat = torch.cat([t.detach().reshape(-1) for t in tensors]).clone()
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(self.world_size)
        out, offset = [], 0
        for t in tensors:
            out.append(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()
        return out

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over ranks (a copy; the tensor itself in a single process)."""
        if self.world_size == 1:
            return tensor
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_tensors(self, tensors: Iterable[torch.Tensor], src: int = 0) -> None:
        """Make every rank's tensors (in place) equal to rank ``src``'s."""
        if self.world_size == 1:
            return
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=src)
