"""A small real end-to-end run of a supernet through timm's training components, built as timm's train.py builds
them (timm 1.0.31): an ImageFolder written here, ``create_dataset`` / ``create_loader`` with RandAugment, random
erasing and ``FastCollateMixup`` (train.py's default prefetcher path) or ``Mixup``, ``ClassificationTask`` /
``LogitDistillationTask``, ``create_optimizer_v2``, ``create_scheduler_v2``, ``ModelEmaV3`` (``task.setup_ema``),
bfloat16 autocast, gradient checkpointing, ``CheckpointSaver``, ``resume_task_checkpoint`` and
``load_task_ema_checkpoint``. Then ``timm-nas eval-subnet`` on the checkpoint it wrote.

train.py itself is not in the timm wheel; the order of calls below mirrors its ``main()`` and ``train_one_epoch``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import FastCollateMixup, Mixup, create_dataset, create_loader, resolve_data_config
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2
from timm.task import ClassificationTask, LogitDistillationTask, load_task_ema_checkpoint, resume_task_checkpoint
from timm.utils import CheckpointSaver, ParseKwargs, unwrap_model

import timm_nas  # noqa: F401  (registers the models)
from timm_nas import cli
from timm_nas.models._supernet import SupernetStateDictError
from timm_nas.spaces.autoformer import AutoFormerSpace
from timm_nas.spaces.base import generator_for

SPACE = dict(embed_dim=[32, 48], depth=[1, 2, 3], num_heads=[1, 2], mlp_ratio=[1.0, 2.0], head_dim=16)
NUM_CLASSES = 3
BATCH = 6
CPU = torch.device("cpu")
#: The original recipe's RandAugment (rand-m9-mstd0.5-inc1) capped at magnitude 9: with Pillow >= 13, timm
#: 1.0.31's PosterizeIncreasing at magnitude 10 asks for 0 bits, which Pillow now refuses (see docs/training.md).
RAND_AUGMENT = "rand-m9-mstd0.5-inc1-mmax9"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """An ImageFolder: 3 colour classes of noisy 32 px images, train (6 per class) and validation (4 per class)."""
    root = tmp_path_factory.mktemp("imagefolder")
    g = torch.Generator().manual_seed(0)
    colours = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200]])
    for split, n in (("train", 6), ("validation", 4)):
        for c in range(NUM_CLASSES):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                noise = torch.randint(-40, 40, (32, 32, 3), generator=g)
                pixels = (colours[c] + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def train_args(seed: int = 5, **overrides) -> argparse.Namespace:
    """The train.py arguments this run uses (train.py's defaults where not named)."""
    model_kwargs = dict(space=SPACE, img_size=32, patch_size=8, sampling="uniform", seed=seed)
    args = dict(model="autoformer_supernet", model_kwargs=model_kwargs, num_classes=NUM_CLASSES, in_chans=None,
                input_size=None, img_size=32, crop_pct=None, mean=None, std=None, interpolation="", gp=None,
                drop=0.0, drop_path=0.1, batch_size=BATCH, opt="adamw", lr=2e-3, weight_decay=0.05, momentum=0.9,
                epochs=2, sched="cosine", warmup_epochs=0, mixup=0.8, cutmix=1.0, smoothing=0.1, reprob=0.25,
                remode="pixel", aa=RAND_AUGMENT, train_interpolation="bicubic", model_ema=True,
                model_ema_decay=0.9, amp=True, amp_dtype="bfloat16", grad_checkpointing=True, prefetcher=True)
    args.update(overrides)
    return argparse.Namespace(**args)


def build(args: argparse.Namespace, data: Path, out: Path | None, resume: Path | None = None,
          teacher: torch.nn.Module | None = None) -> dict:
    """train.py's ``main()`` up to the epoch loop, in its order (resume before EMA, saver last)."""
    model = timm.create_model(
        args.model, pretrained=False, in_chans=3, num_classes=args.num_classes, drop_rate=args.drop,
        drop_path_rate=args.drop_path, drop_block_rate=None, global_pool=args.gp, bn_momentum=None, bn_eps=None,
        scriptable=False, checkpoint_path="", **args.model_kwargs)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(enable=True)
    data_config = resolve_data_config(vars(args), model=model)
    model.to(device=CPU)
    dataset_train = create_dataset("", root=str(data), split="train", is_training=True, class_map="",
                                   download=False, batch_size=args.batch_size, seed=42, repeats=0,
                                   input_img_mode="RGB", input_key=None, target_key=None, num_samples=None)
    dataset_eval = create_dataset("", root=str(data), split="validation", is_training=False, class_map="",
                                  download=False, batch_size=args.batch_size, input_img_mode="RGB")
    common = dict(mean=data_config["mean"], std=data_config["std"], pin_memory=False, img_dtype=torch.float32,
                  device=CPU, distributed=False, use_prefetcher=args.prefetcher)
    mixup_args = dict(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=None, prob=1.0,
                      switch_prob=0.5, mode="batch", label_smoothing=args.smoothing, num_classes=args.num_classes)
    collate_fn = FastCollateMixup(**mixup_args) if args.prefetcher else None
    mixup_fn = None if args.prefetcher else Mixup(**mixup_args)
    loader_train = create_loader(
        dataset_train, input_size=data_config["input_size"], batch_size=args.batch_size, is_training=True,
        no_aug=False, re_prob=args.reprob, re_mode=args.remode, re_count=1, re_split=False, scale=None, ratio=None,
        hflip=0.5, vflip=0.0, color_jitter=0.4, auto_augment=args.aa, num_aug_repeats=0, num_aug_splits=0,
        interpolation=args.train_interpolation, num_workers=0, collate_fn=collate_fn, **common)
    loader_eval = create_loader(dataset_eval, input_size=data_config["input_size"], batch_size=args.batch_size,
                                is_training=False, interpolation=data_config["interpolation"], num_workers=0,
                                crop_pct=data_config["crop_pct"], **common)
    criterion = SoftTargetCrossEntropy()
    if teacher is None:
        task = ClassificationTask(model=model, criterion=criterion, device=CPU, dtype=None, verbose=False)
    else:  # --kd-model-name ... --kd-distill-type logit (train.py passes a name; a module is accepted as well)
        task = LogitDistillationTask(student_model=model, teacher_model=teacher, criterion=criterion,
                                     loss_type="kl", temperature=4.0, device=CPU, dtype=None, verbose=False)
    model = task.get_trainable_module()
    optimizer = create_optimizer_v2(model, **optimizer_kwargs(cfg=args))
    resume_epoch = None
    if resume is not None:
        resume_epoch = resume_task_checkpoint(task, str(resume), optimizer=optimizer, loss_scaler=None,
                                              log_info=False)
    if args.model_ema:
        task.setup_ema(decay=args.model_ema_decay, use_warmup=False, device=None)
        if resume is not None:
            load_task_ema_checkpoint(task, str(resume))
    saver = None
    if out is not None:
        saver = CheckpointSaver(model=model, optimizer=optimizer, args=args, amp_scaler=None, checkpoint_dir=str(out),
                                recovery_dir=str(out), decreasing=False, max_history=2, task=task)
    lr_scheduler, num_epochs = create_scheduler_v2(optimizer, sched=args.sched, num_epochs=args.epochs,
                                                   warmup_epochs=args.warmup_epochs,
                                                   updates_per_epoch=len(loader_train))
    if resume_epoch:
        lr_scheduler.step(resume_epoch)  # train.py: start_epoch = resume_epoch; the schedule catches up
    return dict(model=unwrap_model(model), task=task, optimizer=optimizer, saver=saver, scheduler=lr_scheduler,
                loader_train=loader_train, loader_eval=loader_eval, mixup_fn=mixup_fn, resume_epoch=resume_epoch,
                num_epochs=num_epochs, data_config=data_config)


def amp_autocast():
    return torch.autocast(device_type="cpu", dtype=torch.bfloat16)


def train_one_epoch(parts: dict, epoch: int) -> list:
    """train.py's ``train_one_epoch`` (no accumulation, no clipping); returns the subnet of every step."""
    task, optimizer, loader = parts["task"], parts["optimizer"], parts["loader_train"]
    task.get_trainable_module().train()
    num_updates = epoch * len(loader)
    optimizer.zero_grad()
    subnets = []
    for input, target in loader:
        if parts["mixup_fn"] is not None:
            input, target = parts["mixup_fn"](input, target)
        with amp_autocast():
            loss = task(input, target)["loss"]
        loss.backward()
        optimizer.step()
        num_updates += 1
        optimizer.zero_grad()
        task.update_ema(step=num_updates)
        parts["scheduler"].step_update(num_updates=num_updates)
        subnets.append(parts["model"].last_arch())
    return subnets


def validate(model: torch.nn.Module, loader) -> dict:
    """train.py's ``validate``: eval mode, plain cross-entropy, top-1."""
    model.eval()
    correct = seen = 0
    loss = 0.0
    with torch.no_grad(), amp_autocast():
        for input, target in loader:
            output = model(input).float()
            loss += float(F.cross_entropy(output, target, reduction="sum"))
            correct += int(output.argmax(-1).eq(target).sum())
            seen += target.numel()
    return dict(loss=loss / seen, top1=100.0 * correct / seen)


def file_digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_train_checkpoint_resume_and_eval_subnet(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    args = train_args()
    parts = build(args, data_dir, out)
    model, space = parts["model"], AutoFormerSpace.from_dict(SPACE)
    assert parts["data_config"]["input_size"] == (3, 32, 32)
    subnets = []
    for epoch in range(parts["num_epochs"]):
        subnets += train_one_epoch(parts, epoch)
        metrics = validate(parts["task"].get_eval_model(), parts["loader_eval"])
        assert model.last_arch() == space.full()  # validation runs the active subnet
        ema_metrics = validate(parts["task"].get_eval_model(ema=True), parts["loader_eval"])
        parts["saver"].save_checkpoint(epoch, metric=ema_metrics["top1"])
        parts["scheduler"].step(epoch + 1, ema_metrics["top1"])
    steps = len(subnets)
    assert steps == 2 * 3  # 18 images, batch 6, two epochs
    assert subnets == [space.sample(generator_for(5, s)) for s in range(steps)]  # the seeded policy, one per step
    assert len({c.depth for c in subnets}) > 1
    assert math.isfinite(metrics["loss"]) and math.isfinite(ema_metrics["loss"])
    assert {"last.pth.tar", "checkpoint-0.pth.tar", "checkpoint-1.pth.tar"} <= set(file_digests(out))

    # the checkpoint: model and EMA weights with the step buffer, and train.py's args
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(out / "last.pth.tar", map_location="cpu", weights_only=True)
    assert ckpt["arch"] == "autoformer_supernet" and ckpt["epoch"] == 1
    assert int(ckpt["state_dict"]["subnet_step"]) == steps
    assert int(ckpt["state_dict_ema"]["subnet_step"]) == steps  # ModelEmaV3 copies buffers
    assert ckpt["args"].model_kwargs["space"] == SPACE

    # resume as train.py does: a fresh model, resume_task_checkpoint, then the EMA from the same file
    resumed = build(train_args(), data_dir, None, resume=out / "last.pth.tar")
    assert resumed["resume_epoch"] == 2  # checkpoint version 2: the next epoch
    for a, b in ((parts["model"], resumed["model"]),
                 (parts["task"].get_trainable_module(ema=True), resumed["task"].get_trainable_module(ema=True))):
        sa, sb = unwrap_model(a).state_dict(), unwrap_model(b).state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert resumed["model"].step == steps
    # ... and continues the same subnet sequence with the same updates as the uninterrupted run
    x = torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, NUM_CLASSES, (BATCH,), generator=torch.Generator().manual_seed(4))
    continued = []
    for run in (parts, resumed):
        run["task"].get_trainable_module().train()
        torch.manual_seed(123)  # same drop-path masks in both runs
        for _ in range(2):
            F.cross_entropy(run["task"].get_trainable_module()(x), y).backward()
            run["optimizer"].step()
            run["optimizer"].zero_grad()
            continued.append(run["model"].last_arch())
    assert continued[:2] == continued[2:] == [space.sample(generator_for(5, s)) for s in (steps, steps + 1)]
    sa, sb = parts["model"].state_dict(), resumed["model"].state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

    # bad input before any training: a checkpoint of another space is refused, and nothing in `out` changes
    before = file_digests(out)
    other = train_args(model_kwargs=dict(train_args().model_kwargs, space=dict(SPACE, embed_dim=[32, 64])))
    with pytest.raises(SupernetStateDictError, match=r"does not fit AutoFormerSupernet: shape mismatches"):
        build(other, data_dir, None, resume=out / "last.pth.tar")
    assert file_digests(out) == before

    # inherited-weight evaluation of the trained supernet: the CLI rebuilds it from the checkpoint's args
    sub = {"embed_dim": 40, "depth": 2, "num_heads": [2, 1], "mlp_ratio": [1.5, 2.0]}  # fits, not a choice
    capsys.readouterr()
    assert cli.main(["eval-subnet", "--checkpoint", str(out / "last.pth.tar"), "--subnet", json.dumps(sub),
                     "--data-dir", str(data_dir), "-j", "0", "-b", "4", "--device", "cpu", "--use-ema"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["subnet"] == sub and result["in_space"] is False and result["ema"] is True
    assert result["num_images"] == 12 and 0.0 <= result["top1"] <= 100.0 and result["top5"] == 100.0
    expected = evaluate_reference(parts["task"].get_trainable_module(ema=True).module, sub, parts["loader_eval"])
    assert result["top1"] == pytest.approx(expected["top1"]) and result["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    assert result["params"] == sum(p.numel() for p in model.extract(sub).parameters())


def evaluate_reference(supernet: torch.nn.Module, subnet: dict, loader) -> dict:
    """The subnet as a static model (``extract``) on the eval loader, in float32."""
    static = supernet.extract(subnet).eval()
    correct = seen = 0
    loss = 0.0
    with torch.no_grad():
        for input, target in loader:
            output = static(input)
            loss += float(F.cross_entropy(output, target, reduction="sum"))
            correct += int(output.argmax(-1).eq(target).sum())
            seen += target.numel()
    return dict(loss=loss / seen, top1=100.0 * correct / seen)


def test_loss_decreases_on_a_fixed_batch(data_dir):
    """train.py's no-prefetcher path (``Mixup`` on the batch): repeated steps on one mixed batch, each training a
    sampled subnet, lower the loss of the largest, the smallest and another subnet (the excess over the soft
    targets' entropy at least halves)."""
    args = train_args(seed=1, prefetcher=False, drop_path=0.0, lr=5e-3)
    parts = build(args, data_dir, None)
    model, task, optimizer = parts["model"], parts["task"], parts["optimizer"]
    input, target = next(iter(parts["loader_train"]))
    input, target = parts["mixup_fn"](input, target)
    assert target.shape == (BATCH, NUM_CLASSES) and not torch.equal(target.max(-1).values, torch.ones(BATCH))

    space = model.space
    corners = (space.largest(), space.smallest(), space.sample(generator_for(99, 0)))
    # mixed soft targets cannot be fitted below their own entropy: measure the excess over it (the KL divergence)
    entropy = float(-(target * target.clamp_min(1e-12).log()).sum(-1).mean())

    def losses() -> list:
        model.eval()
        with torch.no_grad():
            out = []
            for cfg in corners:
                with model.use_subnet(cfg):
                    out.append(float(SoftTargetCrossEntropy()(model(input), target)) - entropy)
        return out

    before = losses()
    train_losses = []
    model.train()
    for _ in range(12):
        loss = task(input, target)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        train_losses.append(loss.item())
    after = losses()
    assert all(a < 0.5 * b for a, b in zip(after, before)), (entropy, before, after)
    assert sum(train_losses[-4:]) < sum(train_losses[:4])


def test_logit_distillation_from_a_teacher(data_dir):
    """``--kd-model-name ... --kd-distill-type logit``: the supernet student trains against a teacher's logits."""
    teacher = timm.create_model("resnet10t", pretrained=False, num_classes=NUM_CLASSES)
    parts = build(train_args(seed=2, drop_path=0.0), data_dir, None, teacher=teacher)
    task, model = parts["task"], parts["model"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    task.train()
    input, target = next(iter(parts["loader_train"]))
    result = task(input, target)
    assert torch.isclose(result["loss"], result["task_loss"] + result["kd_loss"])
    kd_grad, = torch.autograd.grad(result["kd_loss"], model.head.weight, retain_graph=True)
    assert kd_grad.abs().sum() > 0  # the teacher's logits pull on the student
    result["loss"].backward()
    parts["optimizer"].step()
    assert model.step == 1 and model.last_arch() is not None
    assert not torch.equal(before["head.weight"], model.state_dict()["head.weight"])
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())  # teacher frozen


@pytest.mark.parametrize("kwargs, error, match", [
    (["seed=abc"], TypeError, r"seed must be an int, got 'abc'"),
    (["seed=1.5"], TypeError, r"seed must be an int, got 1.5"),
    (["sampling=uniformm"], ValueError, r"sampling='uniformm' is not supported; choose one of \['uniform', "
                                        r"'sandwich', 'fixed'\]"),
    (["unused_grad=0"], ValueError, r"unused_grad=0 is not supported"),
    (["space=tinyy"], ValueError, r"unknown AutoFormer space preset 'tinyy'; choose from \['base', 'small', 'tiny'\]"),
    (["space=5"], TypeError, r"space must be a preset name"),
    (["space={'embed_dim': 32, 'depth': [1], 'num_heads': [1], 'mlp_ratio': [1.0]}"], ValueError,
     r"space field embed_dim must be a non-empty list of choices, got 32"),
    (["samplng=fixed"], TypeError, r"unexpected keyword argument 'samplng'"),
])
def test_wrong_model_kwargs_fail_at_create_model(kwargs, error, match, tmp_path):
    """train.py parses ``--model-kwargs`` with timm's ParseKwargs and passes them to ``create_model``, before any
    dataset, optimizer or checkpoint saver exists: the error names the argument and the accepted values."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs)
    model_kwargs = dict(img_size=32, patch_size=8, **parser.parse_args(["--model-kwargs", *kwargs]).model_kwargs)
    model_kwargs.setdefault("space", SPACE)
    out = tmp_path / "run"
    with pytest.raises(error, match=match):
        build(train_args(model_kwargs=model_kwargs), tmp_path / "no-data-needed", out)
    assert not out.exists()
