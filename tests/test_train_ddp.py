"""Two-process DistributedDataParallel training of a supernet, started with torchrun (gloo, CPU).

The model is wrapped as timm's train.py wraps it (``ClassificationTask.prepare_distributed(...,
broadcast_buffers=True)``: DDP without ``find_unused_parameters``; ``device_ids=None`` because this is a CPU module,
where train.py's ``[device]`` is only accepted by DDP for GPU modules). Each rank trains on its own data
while the sampled subnet, including its depth, changes between steps. Afterwards both ranks must have run the same
subnets and hold bitwise identical parameters, and those parameters must equal a single-process run on the
concatenated batches (DDP's gradient average of a mean loss is the full-batch gradient).

This file is also the worker: torchrun runs it as a script (``python -m torch.distributed.run --nproc_per_node 2
--standalone tests/test_train_ddp.py OUT_DIR``).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

#: A tiny space with three depths, so that DDP sees blocks drop in and out of the graph between steps.
SPACE = dict(embed_dim=[32, 48], depth=[1, 2, 3], num_heads=[1, 2], mlp_ratio=[1.0, 2.0], head_dim=16)
STEPS = 6
BATCH = 4
SEED = 11


def _model() -> torch.nn.Module:
    import timm

    import timm_nas  # noqa: F401

    # train.py's create_model arguments (drop path off: the single-process reference must see the same masks)
    return timm.create_model("autoformer_supernet", pretrained=False, in_chans=3, num_classes=3, drop_rate=0.0,
                             drop_path_rate=0.0, drop_block_rate=None, global_pool=None, bn_momentum=None,
                             bn_eps=None, scriptable=False, checkpoint_path="", space=SPACE, img_size=32, patch_size=8,
                             sampling="uniform", seed=SEED)


def _batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(BATCH, 3, 32, 32, generator=g), torch.randint(0, 3, (BATCH,), generator=g)


def _optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    # SGD: AdamW would amplify float rounding of near-zero gradients (DDP sums in another order than one process)
    return create_optimizer_v2(model, opt="sgd", lr=0.1, momentum=0.9, weight_decay=0.05)


def _digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def _worker(out_dir: Path) -> None:
    import torch.distributed as dist
    from timm.task import ClassificationTask
    from timm.utils import unwrap_model

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cpu")
    torch.manual_seed(100 + rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model = _model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    task = ClassificationTask(model=model, criterion=torch.nn.CrossEntropyLoss(), device=device, verbose=False)
    optimizer = _optimizer(task.get_trainable_module())
    # train.py passes device_ids=[device]; DDP accepts that only for GPU modules, a CPU module needs None
    task.prepare_distributed(device_ids=None, broadcast_buffers=True)
    ddp = task.get_trainable_module()
    assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel) and not ddp.find_unused_parameters
    ddp.train()
    subnets, losses = [], []
    for step in range(STEPS):
        x, y = _batch(step, rank)
        loss = task(x, y)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        subnets.append(model.last_arch().to_dict())
        losses.append(float(loss))
    result = dict(rank=rank, world=world, subnets=subnets, losses=losses, step=model.step,
                  digest=_digest(unwrap_model(ddp)))
    if rank == 0:
        # single-process reference from rank 0's initial weights on both ranks' batches together
        ref = _model()
        ref.load_state_dict(initial)
        ref.train()
        ref_opt = _optimizer(ref)
        for step in range(STEPS):
            xs, ys = zip(*(_batch(step, r) for r in range(world)))
            torch.nn.functional.cross_entropy(ref(torch.cat(xs)), torch.cat(ys)).backward()
            ref_opt.step()
            ref_opt.zero_grad()
        ours = dict(unwrap_model(ddp).named_parameters())
        result["max_diff_vs_single_process"] = max(
            float((p.detach() - ours[n].detach()).abs().max()) for n, p in ref.named_parameters())
        result["moved_from_initial"] = max(
            float((p.detach() - initial[n]).abs().max()) for n, p in ours.items())
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_ddp_with_changing_depth(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    # --standalone: a local rendezvous on a free port, so parallel test runs do not collide
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).resolve()), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    # both ranks ran the same subnets, and the depth changed between steps
    assert r0["subnets"] == r1["subnets"]
    depths = [s["depth"] for s in r0["subnets"]]
    assert len(set(depths)) == 3 and any(a != b for a, b in zip(depths, depths[1:])), depths
    assert r0["step"] == r1["step"] == STEPS
    # the ranks saw different data but hold identical parameters (and buffers)
    assert r0["losses"] != r1["losses"]
    assert r0["digest"] == r1["digest"]
    # ... which are DDP's average: equal to one process training on both ranks' batches
    assert r0["moved_from_initial"] > 1e-3
    assert r0["max_diff_vs_single_process"] < 1e-6, r0["max_diff_vs_single_process"]


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
