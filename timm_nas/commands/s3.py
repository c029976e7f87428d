"""`timm-nas search s3-space`: S3's search of the search space (E-T error + space evolution), then an optional
architecture search inside the final space.

Examples::

    # two updates of the 'tiny' preset from a supernet trained with timm's train.py, 100 architectures per step
    timm-nas search s3-space --space tiny --checkpoint supernet.pth --data-dir /data/imagenet --eval-split validation \\
        --subset-per-class 10 --iterations 2 --num-samples 100 --params-max 30 --out runs/s3-space

    # train the first supernet here (few steps, small data) and search the final space with AutoFormer's evolution
    timm-nas search s3-space --space space.json --img-size 32 --num-classes 10 --data-dir data --train-steps 500 \\
        --finetune-steps 100 --iterations 1 --num-samples 50 --search-generations 5 --out runs/s3-small

``--out`` is a run folder (``timm_nas.search.log``): ``run.json``, ``space_evolution.jsonl`` (one line per step: the
space, its E-T error, the per-subspace fits and the next space), ``step_<t>.jsonl`` (each sampled architecture with
its error and cost), ``supernet_<t>.safetensors``, ``space_evolution.png``, ``final_space.json``, ``best.json`` and,
with ``--search-generations``, ``search/`` (the evolution's run folder: ``candidates.jsonl``, ``best.json``,
``pareto.*``, ``export/`` with the best subnet, Hub-ready). The same command on the same ``--out`` resumes after the
last completed step; on a finished run it changes nothing.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._argtypes import HelpFormatter, count, device_arg, positive_int, space_arg

__all__ = ["register", "run_s3_space"]


def register(sub: argparse._SubParsersAction, search: argparse._SubParsersAction) -> None:
    """Add ``timm-nas search s3-space``."""
    from ..search.space_evolution import NUM_SAMPLES, TOP_K
    from ..spaces.s3 import DIMENSIONS

    p = search.add_parser(
        "s3-space", help="S3: evolve a search space by its E-T error, then search inside it",
        description="S3 (Chen et al., NeurIPS 2021): estimate the E-T error of an S3 space with its supernet's "
                    "inherited weights, fit E-T error against every stage x dimension choice and shift the choices "
                    "against the slope; repeat. Optionally run AutoFormer's evolutionary search in the final space.",
        epilog="""Example (a supernet trained with timm's train.py; two updates of the tiny preset):
  timm-nas search s3-space --space tiny --checkpoint supernet.pth --data-dir /path/to/imagenet \\
      --subset-per-class 10 --iterations 2 --num-samples 100 --params-max 30 --out runs/s3-space""",
        formatter_class=HelpFormatter)
    m = p.add_argument_group("supernet")
    m.add_argument("--space", default="tiny", help="initial space: a preset (tiny, small, base), a JSON object or a "
                                                  ".json file")
    m.add_argument("--img-size", type=positive_int, default=224, help="input image side")
    m.add_argument("--patch-size", type=positive_int, default=4, help="patch side")
    m.add_argument("--num-classes", type=positive_int, default=1000, help="classifier width")
    m.add_argument("--checkpoint", default=None,
                   help="initial supernet weights (ours, or any S3 checkpoint; shared weights are inherited)")
    m.add_argument("--device", type=device_arg, default=None,
                   help="cpu, cuda, ... (default: cuda when available)")

    d = p.add_argument_group("data (timm create_dataset / create_loader)")
    d.add_argument("--data-dir", required=True, help="dataset root")
    d.add_argument("--dataset", default="", help="timm dataset name (default: a folder of class folders)")
    d.add_argument("--train-split", default="train", help="split the supernet trains on")
    d.add_argument("--eval-split", default="validation",
                   help="split the E-T error is measured on (the paper: ImageNet validation)")
    d.add_argument("--subset-per-class", type=count, default=0,
                   help="evaluate on this many images per class (0: all)")
    d.add_argument("--batch-size", type=positive_int, default=64, help="batch size")
    d.add_argument("--workers", type=count, default=4, help="data loader workers")

    t = p.add_argument_group("supernet training between updates (AdamW, cross-entropy)")
    t.add_argument("--train-steps", type=count, default=0, help="steps for the first space's supernet")
    t.add_argument("--finetune-steps", type=count, default=0, help="steps after each update (weights inherited)")
    t.add_argument("--lr", type=float, default=5e-4, help="learning rate")
    t.add_argument("--weight-decay", type=float, default=0.05, help="weight decay")

    e = p.add_argument_group("space evolution")
    e.add_argument("--iterations", type=count, default=2, help="space updates (the paper's ablation: A -> B -> C)")
    e.add_argument("--num-samples", type=positive_int, default=NUM_SAMPLES, help="architectures per E-T error")
    e.add_argument("--top-k", type=positive_int, default=TOP_K, help="architectures averaged by Q_t")
    e.add_argument("--tau", type=float, default=0.5, help="slope threshold, E-T error points per lattice step")
    e.add_argument("--max-steps", type=count, default=1, help="most lattice steps per update")
    e.add_argument("--block-value", choices=("mean", "any"), default="mean",
                   help="how per-block windows / MLP ratios assign an architecture to choices")
    e.add_argument("--dims", nargs="+", choices=DIMENSIONS, default=list(DIMENSIONS), help="dimensions that evolve")
    e.add_argument("--no-final-eval", action="store_true", help="do not train and evaluate the final space")

    c = p.add_argument_group("constraints (analytic cost model)")
    c.add_argument("--params-min", type=float, default=None, help="minimum parameters, millions")
    c.add_argument("--params-max", type=float, default=None, help="maximum parameters, millions")
    c.add_argument("--macs-min", type=float, default=None, help="minimum MACs of one image, G")
    c.add_argument("--macs-max", type=float, default=None, help="maximum MACs of one image, G")
    c.add_argument("--latency-min", type=float, default=None, help="minimum predicted latency, ms (--latency-table)")
    c.add_argument("--latency-max", type=float, default=None, help="maximum predicted latency, ms (--latency-table)")
    c.add_argument("--latency-table", default=None,
                   help="latency table of this device (timm-nas latency build); it must cover the evolved spaces")

    s = p.add_argument_group("architecture search in the final space (timm_nas.search.EvolutionSearch)")
    s.add_argument("--search-generations", type=count, default=0, help="generations (0: no search)")
    s.add_argument("--search-population", type=positive_int, default=50, help="population")

    r = p.add_argument_group("run")
    r.add_argument("--seed", type=int, default=0, help="seed of the samples and of the supernet's init")
    r.add_argument("--out", required=True, help="output folder (resumed when it holds the same run)")
    r.add_argument("--overwrite", action="store_true", help="discard a previous run in --out")
    r.add_argument("--overwrite-export", action="store_true",
                   help="replace --out/search/export even if it holds files the search did not write")
    r.add_argument("--no-plot", action="store_true", help="do not draw space_evolution.png")
    r.add_argument("--onnx", action="store_true", help="also export the searched subnet as model.onnx")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_s3_space)


def _space(text: str) -> Any:
    from ..spaces.s3 import S3Space

    return S3Space.resolve(space_arg(text))


def _scale(value: float | None, unit: float) -> float | None:
    return None if value is None else value * unit


def run_s3_space(args: argparse.Namespace) -> int:
    """The handler of ``timm-nas search s3-space``."""
    import timm
    import torch

    from .._checkpoint import load_checkpoint_file, unwrap_state_dict
    from ..models.s3 import to_timm_layout
    from ..search import Constraints
    from ..search.space_evolution import SpaceEvolution, evaluate_errors, evolve_space, train_supernet

    space = _space(args.space)
    data_dir = Path(args.data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder not found: {data_dir}")
    if args.checkpoint is not None and not Path(args.checkpoint).expanduser().is_file():
        raise FileNotFoundError(f"checkpoint file not found: {args.checkpoint}")
    cost_kwargs = dict(num_classes=args.num_classes, img_size=args.img_size, patch_size=args.patch_size)
    constraints = Constraints(_scale(args.params_min, 1e6), _scale(args.params_max, 1e6), _scale(args.macs_min, 1e9),
                              _scale(args.macs_max, 1e9), cost_kwargs=cost_kwargs, latency_min=args.latency_min,
                              latency_max=args.latency_max, latency_table=args.latency_table)
    settings = SpaceEvolution(num_samples=args.num_samples, top_k=args.top_k, tau=args.tau, max_steps=args.max_steps,
                              block_value=args.block_value, dims=tuple(args.dims), constraints=constraints,
                              seed=args.seed)
    from ..search.distributed import Dist

    dist = Dist.from_env()  # under torchrun: the E-T error's architectures are scored across the processes
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None and dist.world_size > 1:
        device = torch.device("cuda", dist.local_rank)
    out = Path(args.out).expanduser()

    def make_supernet(s: Any) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            model = timm.create_model("s3_supernet", space=s.to_dict(), img_size=args.img_size,
                                      patch_size=args.patch_size, num_classes=args.num_classes, seed=args.seed)
        return model.to(device)

    probe = make_supernet(space).eval()  # checks the space at this input size before any data is read
    constraints.check_latency_table(probe)
    train_data = _train_dataset(probe, data_dir, args) if (args.train_steps or args.finetune_steps) else None
    eval_loader, eval_data = _eval_loader(probe, data_dir, args, device)

    def train(model: Any, t: int) -> None:
        steps = args.train_steps if t == 0 else args.finetune_steps
        if steps:
            loader = _train_batches(train_data, args, steps, t)
            losses = train_supernet(model, loader, steps, lr=args.lr, weight_decay=args.weight_decay, device=device)
            if dist.is_main:
                print(f"step {t}: trained the supernet {steps} steps, last loss {losses[-1]:.4f}")

    initial = None
    weights: dict[str, Any] = {"random_init_seed": args.seed}
    if args.checkpoint is not None:
        path = Path(args.checkpoint).expanduser().resolve()
        initial = to_timm_layout(unwrap_state_dict(load_checkpoint_file(path)))
        weights = {"checkpoint": str(path), "bytes": path.stat().st_size}
    arguments = {"model_args": {"img_size": args.img_size, "patch_size": args.patch_size,
                                "num_classes": args.num_classes},
                 "weights": weights, "eval_data": eval_data,
                 "training": {"train_split": args.train_split, "train_steps": args.train_steps,
                              "finetune_steps": args.finetune_steps, "lr": args.lr, "weight_decay": args.weight_decay,
                              "batch_size": args.batch_size}}
    progress = not args.no_progress
    result = evolve_space(space, iterations=args.iterations, make_supernet=make_supernet, train=train,
                          evaluate=lambda model, cfgs: evaluate_errors(model, cfgs, eval_loader, device,
                                                                       progress=progress),
                          settings=settings, out=out, initial_state=initial, evaluate_final=not args.no_final_eval,
                          overwrite=args.overwrite, plot=not args.no_plot, arguments=arguments, progress=progress,
                          dist=dist)
    if not dist.is_main:
        if args.search_generations:
            _search_final(result, make_supernet, eval_loader, constraints, args, device, out)
        return 0
    for rec in result.steps:
        q = rec["et_error"]
        moved = [f"s{f['stage']}.{f['dim']}: {f['choices']} -> {f['new_choices']}" for f in rec["fits"]
                 if f["steps"]]
        print(f"step {rec['step']}: E-T error {q['q']:.3f} (Q_e {q['q_e']:.3f}, Q_t {q['q_t']:.3f}, "
              f"{q['n']} architectures)" + (f"; moved {', '.join(moved)}" if moved else ""))
    print(f"final space: {out / 'final_space.json'}; log {out / 'space_evolution.jsonl'}")

    if args.search_generations:
        _search_final(result, make_supernet, eval_loader, constraints, args, device, out)
    return 0


def _train_dataset(model: Any, data_dir: Path, args: argparse.Namespace) -> Any:
    from timm.data import create_transform, resolve_data_config

    from ..training.data import open_dataset

    ds = open_dataset(args.dataset, data_dir, args.train_split, is_training=True)
    cfg = resolve_data_config(model=model)
    ds.transform = create_transform((3, args.img_size, args.img_size), is_training=True,
                                    interpolation=cfg["interpolation"], mean=cfg["mean"], std=cfg["std"])
    return ds


def _train_batches(dataset: Any, args: argparse.Namespace, steps: int, t: int) -> Any:
    """``steps`` shuffled training batches for space-evolution step ``t``: passes over the data in seeded orders,
    every item's augmentation seeded by its place (the same batches for any --workers, and after a resume)."""
    import torch

    from ..search._rng import seeded_loader
    from ..spaces.base import generator_for

    n = len(dataset)
    per_pass = max(n // args.batch_size, 1)
    batches: list[list[int]] = []
    for p in range(-(-steps // per_pass)):
        order = torch.randperm(n, generator=generator_for(args.seed, t * 100_003 + p)).tolist()
        batches += [order[i * args.batch_size:(i + 1) * args.batch_size] for i in range(per_pass)]
    return seeded_loader(dataset, batches[:steps], seed=args.seed, stream=t, workers=args.workers)


def _eval_loader(model: Any, data_dir: Path, args: argparse.Namespace, device: Any) -> Any:
    from ..search import build_eval_loader

    return build_eval_loader(model, data_dir, dataset=args.dataset, split=args.eval_split,
                             subset_per_class=args.subset_per_class or None, seed=args.seed,
                             batch_size=args.batch_size, workers=args.workers, device=device)


def _search_final(result: Any, make_supernet: Any, loader: Any, constraints: Any, args: argparse.Namespace,
                  device: Any, out: Path) -> None:
    """AutoFormer's evolutionary search inside the final space (the supernet of the last evaluated step), then
    the best subnet exported Hub-ready."""
    from ..search import AccuracyScorer, EvolutionSearch, run_search
    from ..search.space_evolution import inherit_weights
    from .search import _EXPORT_STATUS, export_best

    supernet = make_supernet(result.space)
    inherit_weights(supernet, result.state_dict)  # identical shapes unless --no-final-eval left the space untrained
    supernet.eval()
    population = args.search_population
    strategy = EvolutionSearch(result.space, constraints, seed=args.seed, population=population,
                               topk=max(1, population // 5), generations=args.search_generations,
                               mutations=population // 2, crossovers=population // 2)
    from ..search import Dist

    dist = Dist.from_env()
    found = run_search(strategy, AccuracyScorer(supernet, loader, device=device), out=out / "search", dist=dist,
                       arguments={"model": "s3_supernet", "weights": "the space evolution's last supernet (../)"},
                       overwrite=args.overwrite,
                       replace_changed_export=args.overwrite_export, plot=not args.no_plot)
    if not dist.is_main:
        return
    best = found.best
    print(f"search in the final space: best top-1 {best.score:.3f}% with {best.params / 1e6:.2f}M params"
          + ("" if found.scored else " (a finished search: nothing to do)"))
    provenance = {
        "method": "S3 space evolution + AutoFormer evolutionary search", "supernet": "s3_supernet",
        "space": result.space.to_dict(), "seed": args.seed,
        "constraints": {k: v for k, v in constraints.to_dict().items() if k != "cost_kwargs"},
        "weights": "inherited from the last supernet of the space evolution", **constraints.latency_record(best.config)}
    folder, status = found.folder.export(lambda f: export_best(supernet, found, f, provenance=provenance,
                                                               onnx=args.onnx))
    print(_EXPORT_STATUS[status].format(folder=folder))
