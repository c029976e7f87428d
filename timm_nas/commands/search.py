"""`timm-nas search tf-tas | evolution | random | regularized-evolution`: architecture search over a space.

The space is a supernet's (``--model``, ``--space`` a preset or a JSON space), or a family's whose architectures are
scored through their own static models (``--space nb201``, ``--space darts``: no supernet). Fitness: top-1 with
inherited weights (``--data-dir``), a training-free proxy (``--proxy``), or a table of accuracies (``--oracle``).

Examples::

    timm-nas search tf-tas --space tiny --out runs/tf-tas-tiny                     # TF-TAS: 8000 x DSS, 3M-23M
    timm-nas search evolution --space tiny --checkpoint supernet-tiny.pth --data-dir /path/to/imagenet \
        --params-min 5 --params-max 6 --out runs/evo-tiny
    timm-nas search random --space small --proxy synflow --candidates 500 --out runs/random-small
    timm-nas search regularized-evolution --space nb201 --oracle nb201_cifar10.csv --candidates 100 --out runs/rea
    torchrun --nproc-per-node 2 -m timm_nas search tf-tas --space tiny --out runs/tf-tas-tiny

Each run writes ``candidates.jsonl`` (appended as candidates are scored), ``best.json``, ``pareto.json``,
``pareto.png`` and ``export/`` (the best subnet, Hub-ready) into ``--out``. Running the same command again on
the same ``--out`` resumes an interrupted search without re-scoring anything; a folder made with different
arguments is refused (``--overwrite`` discards it).
"""
from __future__ import annotations

import argparse
import math
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from ._argtypes import create_model_checked, device_arg, model_args, positive_int, space_arg

__all__ = ["register", "run_cli_search", "search_from_args", "summary_table", "export_best"]

_STRATEGIES = {
    "tf-tas": ("TF-TAS zero-shot search: random candidates inside the constraints ranked by a training-free proxy "
               "(default DSS; Zhou et al., CVPR 2022)"),
    "evolution": ("AutoFormer's evolutionary search (Chen et al., ICCV 2021): fitness = top-1 of the supernet with "
                  "inherited weights on --data-dir, or a --proxy"),
    "random": ("random search: uniform candidates inside the constraints, scored by --data-dir accuracy, a --proxy "
               "or an --oracle table"),
    "regularized-evolution": ("regularized evolution (Real et al., AAAI 2019): tournament selection with aging, as "
                              "NAS-Bench-201's REA baseline; fitness as for evolution"),
}


_EXAMPLES = {
    "tf-tas": """Example (a randomly initialised supernet, no data; about a minute on a CPU):
  timm-nas search tf-tas --space tiny --candidates 50 --out runs/tftas""",
    "evolution": """Examples:
  # fitness = top-1 with inherited weights of a supernet you trained (timm's train.py) or converted
  timm-nas search evolution --space tiny --checkpoint supernet-tiny.pth --data-dir /path/to/imagenet \\
      --params-min 5 --params-max 6 --out runs/evo-tiny
  # fitness = a training-free proxy (no data)
  timm-nas search evolution --space tiny --proxy dss --generations 3 --out runs/evo-dss
  # fitness = a table of accuracies (NAS-Bench-201: architecture string or index, accuracy)
  timm-nas search evolution --space nb201 --oracle nb201_cifar10.csv --population 20 --generations 4 --out runs/evo""",
    "random": """Examples (scored by a training-free proxy, no data; by a table of accuracies, a proxy choosing what to ask):
  timm-nas search random --space small --proxy synflow --candidates 50 --out runs/rnd-small
  timm-nas search random --space nb201 --oracle nb201_cifar10.csv --prefilter nwot --candidates 50 --out runs/rnd""",
    "regularized-evolution": """Example (NAS-Bench-201's REA: population 10, tournament 3, one edge mutated):
  timm-nas search regularized-evolution --space nb201 --oracle nb201_cifar10.csv --candidates 100 --out runs/rea""",
}

def _static_family(args: argparse.Namespace) -> Any:
    """The family ``--space`` names when it is searched through its static models (nb201, darts), else ``None``."""
    from ..family import families

    fam = families().get(str(args.space).strip().lower())
    if fam is None or fam.space is None or fam.weight_sharing_arg is not None:
        return None
    return fam


def _add_common(p: argparse.ArgumentParser, strategy: str) -> None:
    from ..search.zero_shot import TF_TAS_CANDIDATES, TF_TAS_PARAMS

    g = p.add_argument_group("supernet")
    g.add_argument("--model", default="autoformer_supernet",
                   help="supernet model name (default: autoformer_supernet)")
    g.add_argument("--space", default="tiny",
                   help="search space: a preset of --model (tiny, small, base), a JSON object, a .json file, or a "
                        "family searched through its static models, with no supernet (nb201, darts) (default: tiny)")
    g.add_argument("--img-size", type=positive_int, default=None, help="input image size (default: the model's)")
    g.add_argument("--num-classes", type=positive_int, default=None,
                   help="classifier width (default: the model's, 1000)")
    g.add_argument("--model-args", default=None,
                   help="more supernet arguments as a JSON object or .json file, e.g. '{\"patch_size\": 8}'; they "
                        "reach the exported subnet too")
    w = g.add_mutually_exclusive_group()
    w.add_argument("--pretrained", action="store_true", help="load the supernet's released weights")
    w.add_argument("--checkpoint", default=None, help="load supernet weights from a file (original .pth or ours)")
    g.add_argument("--device", type=device_arg, default=None,
                   help="cpu, cuda, cuda:1, ... (default: cuda when available)")

    s = p.add_argument_group("scoring")
    default_proxy = "dss" if strategy == "tf-tas" else None
    s.add_argument("--proxy", default=default_proxy,
                   help="training-free proxy to score with (timm-nas search proxies lists them)"
                        + (" (default: dss)" if default_proxy else ""))
    s.add_argument("--dss-mode", choices=("reference", "paper"), default="reference",
                   help="DSS as the released TF-TAS code computes it (reference) or as the paper describes it")
    s.add_argument("--proxy-batch-size", type=positive_int, default=None,
                   help="batch size of the seeded random batch of data-dependent proxies (snip, jacov, ...)")
    if strategy != "tf-tas":
        s.add_argument("--data-dir", default=None,
                       help="score by top-1 accuracy with inherited weights on this dataset (timm create_dataset)")
        s.add_argument("--dataset", default="", help="timm dataset name (default: a folder of class folders)")
        s.add_argument("--split", default="train", help="dataset split (default: train, as the original)")
        s.add_argument("--subset-per-class", type=int, default=100,
                       help="images per class, the original's subImageNet (default 100; 0 = all)")
        s.add_argument("--batch-size", type=positive_int, default=64, help="evaluation batch size (default 64)")
        s.add_argument("--workers", type=int, default=4, help="data loader workers (default 4)")
        s.add_argument("--oracle", default=None, metavar="TABLE",
                       help="score by looking architectures up in a table of accuracies: CSV (arch|index, accuracy) "
                            "or JSON (timm-nas proxy-bench reads the same); an architecture it lacks scores nan")
    if strategy in ("random", "regularized-evolution"):
        s.add_argument("--prefilter", default=None, metavar="PROXY",
                       help="a training-free proxy choosing what the scorer is asked: each candidate is the proxy's "
                            "best of --prefilter-pool draws (random) or children (regularized-evolution)")
        s.add_argument("--prefilter-pool", type=positive_int, default=10, help="draws per candidate (default 10)")

    c = p.add_argument_group("constraints (analytic cost model)")
    lo, hi = (TF_TAS_PARAMS[0] / 1e6, TF_TAS_PARAMS[1] / 1e6) if strategy == "tf-tas" else (None, None)
    c.add_argument("--params-min", type=float, default=lo,
                   help="minimum parameters, millions" + (f" (default {lo:g}, TF-TAS)" if lo is not None else ""))
    c.add_argument("--params-max", type=float, default=hi,
                   help="maximum parameters, millions" + (f" (default {hi:g}, TF-TAS)" if hi is not None else ""))
    c.add_argument("--macs-min", type=float, default=None, help="minimum MACs of one image, G")
    c.add_argument("--macs-max", type=float, default=None, help="maximum MACs of one image, G")
    c.add_argument("--latency-min", type=float, default=None, help="minimum predicted latency, ms (--latency-table)")
    c.add_argument("--latency-max", type=float, default=None, help="maximum predicted latency, ms (--latency-table)")
    c.add_argument("--latency-table", default=None, help="latency table of this device (timm-nas latency build)")

    r = p.add_argument_group("run")
    if strategy != "evolution":
        default_n = TF_TAS_CANDIDATES if strategy == "tf-tas" else 100
        r.add_argument("--candidates", type=positive_int, default=default_n,
                       help=f"number of candidates to score (default {default_n})")
    r.add_argument("--seed", type=int, default=0, help="seed of every draw and of the supernet's init (default 0)")
    r.add_argument("--out", required=True, help="output folder (resumed when it holds the same search)")
    r.add_argument("--overwrite", action="store_true", help="discard a previous search in --out")
    r.add_argument("--overwrite-export", action="store_true",
                   help="replace --out/export even if it holds files the search did not write (refused otherwise)")
    r.add_argument("--top", type=positive_int, default=10, help="rows of the summary table (default 10)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--no-export", action="store_true", help="do not export the best subnet")
    r.add_argument("--onnx", action="store_true", help="also export model.onnx (pip install 'timm-nas[deploy]')")
    r.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="push the exported subnet to this Hub repo")
    r.add_argument("--private", action="store_true", help="create the Hub repo private")


def _add_evolution(p: argparse.ArgumentParser) -> None:
    e = p.add_argument_group("evolution (defaults: microsoft/Cream AutoFormer/evolution.py)")
    e.add_argument("--population", type=positive_int, default=50, help="population size (50)")
    e.add_argument("--topk", type=positive_int, default=10, help="parents kept across generations (10)")
    e.add_argument("--generations", type=int, default=20, help="generations (20)")
    e.add_argument("--mutations", type=int, default=25, help="mutations per generation (25)")
    e.add_argument("--crossovers", type=int, default=25, help="crossovers per generation (25)")
    e.add_argument("--m-prob", type=float, default=0.2, help="per-layer mutation probability (0.2)")
    e.add_argument("--s-prob", type=float, default=0.4, help="depth / embed-dim mutation probability (0.4)")


def _add_regularized_evolution(p: argparse.ArgumentParser) -> None:
    e = p.add_argument_group("regularized evolution (defaults: NAS-Bench-201's REA)")
    e.add_argument("--population", type=positive_int, default=10, help="population size (10)")
    e.add_argument("--sample-size", type=positive_int, default=3, help="tournament size (3)")
    e.add_argument("--m-prob", type=float, default=0.0,
                   help="per-choice mutation probability (0: the spaces that guarantee a change, NAS-Bench-201's, "
                        "mutate one edge; AutoFormer's and DARTS's need e.g. --m-prob 0.2 --s-prob 0.4)")
    e.add_argument("--s-prob", type=float, default=0.0, help="structural mutation probability (0)")


_RUN_FOLDER = ("--out is a run folder: the same command resumes an interrupted search, changes nothing on a finished "
               "one, and extends it with more candidates / generations. The same command and --seed give the same "
               "result with any --workers and any number of torchrun processes (on GPUs up to float rounding: some "
               "CUDA kernels are not deterministic).")


def register(sub: argparse._SubParsersAction, search: argparse._SubParsersAction) -> None:
    """Add ``timm-nas search tf-tas|evolution|random`` and ``timm-nas search proxies``."""
    for name, text in _STRATEGIES.items():
        p = search.add_parser(name, help=text.split(":")[0], description=f"{text}. {_RUN_FOLDER}",
                              epilog=_EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(p, name)
        if name == "evolution":
            _add_evolution(p)
        if name == "regularized-evolution":
            _add_regularized_evolution(p)
        p.set_defaults(func=run_cli_search, search_strategy=name)
    p = search.add_parser("proxies", help="list the training-free proxies",
                          description="List the training-free proxies that --proxy accepts, with their sources.",
                          epilog="Example:\n  timm-nas search proxies", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=_list_proxies)


def _list_proxies(args: argparse.Namespace) -> int:
    from ..proxies import get_proxy, list_proxies

    for name in list_proxies():
        print(f"{name:10s} {get_proxy(name).description}")
    return 0


# ---------------------------------------------------------------------------------------------- validation
def _scale(value: float | None, unit: float) -> float | None:
    return None if value is None else value * unit


def _validate(args: argparse.Namespace) -> None:
    """Checks that need no model: done before anything is built or written."""
    from ..proxies import get_proxy

    data_dir = getattr(args, "data_dir", None)
    oracle = getattr(args, "oracle", None)
    family = _static_family(args)
    if args.search_strategy != "tf-tas":
        given = [o for o, v in (("--data-dir", data_dir), ("--proxy", args.proxy), ("--oracle", oracle))
                 if v is not None]
        if not given:
            raise ValueError(f"timm-nas search {args.search_strategy} needs a scorer: --data-dir DIR (top-1 of the "
                             "supernet with inherited weights), --proxy NAME or --oracle TABLE")
        if len(given) > 1:
            raise ValueError(f"give one scorer, not {' and '.join(given)}")
        if data_dir is not None and family is not None:
            raise ValueError(f"--space {family.name} searches the family's static models, with no supernet to "
                             "inherit weights from: score with --oracle TABLE or --proxy NAME, not --data-dir")
        if data_dir is not None and not Path(data_dir).expanduser().is_dir():
            raise FileNotFoundError(f"data folder not found: {data_dir}")
        if oracle is not None and not Path(oracle).expanduser().is_file():
            raise FileNotFoundError(f"--oracle table not found: {oracle}")
        if args.subset_per_class < 0:
            raise ValueError(f"--subset-per-class must be >= 0, got {args.subset_per_class}")
    elif family is not None:
        raise ValueError(f"TF-TAS searches a supernet's space (--space tiny|small|base); for --space {family.name} "
                         f"use timm-nas search random --space {family.name} --proxy NAME")
    if args.proxy is not None:
        get_proxy(args.proxy)
    if getattr(args, "prefilter", None) is not None:
        get_proxy(args.prefilter)
    if family is not None:
        dropped = [o for o, v in (("--pretrained", args.pretrained), ("--checkpoint", args.checkpoint)) if v]
        if dropped:
            raise ValueError(f"--space {family.name} has no supernet: {' and '.join(dropped)} do not apply")
    _constraints(args)  # an empty window fails here, before the model is built
    if args.checkpoint is not None and not Path(args.checkpoint).expanduser().is_file():
        raise FileNotFoundError(f"checkpoint file not found: {args.checkpoint}")
    if args.push_to_hub is not None and args.no_export:
        raise ValueError("--push-to-hub pushes the export: it cannot be combined with --no-export")
    if args.onnx and args.no_export:
        raise ValueError("--onnx is part of the export: it cannot be combined with --no-export")


def _constraints(args: argparse.Namespace, cost_kwargs: dict[str, Any] | None = None) -> Any:
    from ..search import Constraints

    return Constraints(_scale(args.params_min, 1e6), _scale(args.params_max, 1e6), _scale(args.macs_min, 1e9),
                       _scale(args.macs_max, 1e9), cost_kwargs=cost_kwargs or {}, latency_min=args.latency_min,
                       latency_max=args.latency_max, latency_table=args.latency_table)


def _build_supernet(args: argparse.Namespace, device: Any) -> Any:
    import timm
    import torch

    from .. import models  # noqa: F401  (registration)

    if not timm.is_model(args.model):
        supernets = [n for n in timm.list_models("*supernet*")]
        raise ValueError(f"unknown model {args.model!r}; supernets: {supernets}")
    kwargs: dict[str, Any] = {"space": space_arg(args.space)}
    if args.img_size is not None:
        kwargs["img_size"] = args.img_size
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    extra = model_args(args.model_args)
    twice = sorted(set(extra) & (set(kwargs) | {"pretrained"}))
    if twice:
        raise ValueError(f"--model-args sets {twice}: use the options --space / --img-size / --num-classes / "
                         "--pretrained for these")
    kwargs.update(extra)
    name = args.model
    if args.pretrained and isinstance(kwargs.get("space"), str) and timm.is_model(f"{name}_{kwargs['space']}"):
        name = f"{name}_{kwargs['space']}"  # the preset's released supernet (e.g. autoformer_supernet_tiny)
        kwargs.pop("space")
    # The supernet's random init (TF-TAS scores a randomly initialised supernet) is seeded, without leaving the
    # global generator changed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        try:
            model = create_model_checked(name, pretrained=args.pretrained, **kwargs)
        except TypeError as e:
            raise ValueError(f"{args.model} does not take these arguments ({e}); is it a supernet?") from e
    if not (hasattr(model, "use_subnet") and hasattr(model, "space")):
        raise ValueError(f"{args.model} is not a supernet (it has no search space / use_subnet); "
                         "choose a *_supernet model")
    if args.checkpoint is not None:
        load = getattr(model, "load_pretrained", None)
        if load is not None:
            load(str(Path(args.checkpoint).expanduser()))
        else:
            from timm.models import load_checkpoint

            load_checkpoint(model, str(Path(args.checkpoint).expanduser()), strict=True)
    return model.to(device).eval()


def _weights_arg(args: argparse.Namespace) -> dict[str, Any]:
    if args.checkpoint is not None:
        path = Path(args.checkpoint).expanduser().resolve()
        return {"checkpoint": str(path), "bytes": path.stat().st_size}
    if args.pretrained:
        return {"pretrained": True}
    return {"random_init_seed": args.seed}


def _device(args: argparse.Namespace, dist: Any) -> Any:
    import torch

    name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and dist.world_size > 1:
        device = torch.device("cuda", dist.local_rank)
    return device


# --------------------------------------------------------------------------------------------------- output
def _fmt_score(v: float) -> str:
    if math.isnan(v):
        return "nan"
    return f"{v:.6g}"


def _fmt_config(cfg: Any, width: int = 64) -> str:
    parts = []
    for k, v in cfg.to_dict().items():
        if isinstance(v, list):
            flat = ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
            parts.append(f"{k}=[{flat}]")
        else:
            parts.append(f"{k}={v}")
    text = " ".join(parts)
    return text if len(text) <= width else text[:width - 3] + "..."


def summary_table(result: Any, top: int = 10) -> str:
    """The ``top`` best candidates as a text table."""
    rows = [("rank", "cand", "score", "params(M)", "MACs(G)", "origin", "architecture")]
    for r, c in enumerate(result.top(top), 1):
        rows.append((str(r), str(c.index), _fmt_score(c.score), f"{c.params / 1e6:.2f}", f"{c.macs / 1e9:.3f}",
                     c.origin if c.generation is None else f"{c.origin}@{c.generation}", _fmt_config(c.config)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class _Progress:
    """Progress on stderr (rank 0 only): a tqdm bar with candidates/s and the best score so far, or, without
    tqdm, one line every 10 seconds."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar: Any = None
        self.enabled = enabled
        self.total = total
        self.done = 0
        self.best = -math.inf
        self.reused = 0
        self.start = self.last = time.monotonic()
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, unit="cand", dynamic_ncols=True, file=sys.stderr, desc="search")

    def __call__(self, cand: Any, reused: bool) -> None:
        if not math.isnan(cand.score):
            self.best = max(self.best, cand.score)
        self.reused += bool(reused)
        self.done += 1
        if self.bar is not None:
            post = {"best": _fmt_score(self.best)}
            if self.reused:
                post["from log"] = self.reused
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(1)
        elif self.enabled and (time.monotonic() - self.last > 10 or self.done == self.total):
            self.last = now = time.monotonic()
            rate = (self.done - self.reused) / max(now - self.start, 1e-9)
            print(f"search: {self.done}/{self.total} candidates, {rate:.2f} cand/s, best {_fmt_score(self.best)}",
                  file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------------------------ run
def run_cli_search(args: argparse.Namespace) -> int:
    """The handler of ``timm-nas search tf-tas|evolution|random``."""
    search_from_args(args)
    return 0


def search_from_args(args: argparse.Namespace) -> tuple[Any, Any, Path | None]:
    """Run the search the parsed arguments describe; print the summary and export on rank 0.

    Returns:
        ``(result, supernet, export_folder)``; ``export_folder`` is ``None`` with ``--no-export`` and on ranks
        other than 0.
    """
    from ..cli import UsageError
    from ..proxies.zero_cost import cost_kwargs
    from ..search import (AccuracyScorer, Dist, EvolutionSearch, OracleScorer, ProxyScorer, RandomSearch,
                          RegularizedEvolution, ZeroShotSearch, build_eval_loader, proxy_prefilter, run_search)

    _validate(args)
    out = Path(args.out).expanduser()
    dist = Dist.from_env()
    device = _device(args, dist)
    family = _static_family(args)
    if family is None:
        supernet = _build_supernet(args, device)
        space, cost_model = supernet.space, supernet
        arguments = {"model": args.model, "weights": _weights_arg(args), "model_args": supernet_args(supernet)}
    else:  # the family's own static models: no supernet
        supernet, space = None, family.space()
        static_args = _static_model_args(args, family)
        cost_model = _build_static(family, space.sample(0), static_args, args.seed)
        arguments = {"family": family.name, "model": family.static_entrypoint, "model_args": static_args}
    constraints = _constraints(args, cost_kwargs(cost_model))
    constraints.check_latency_table(cost_model)
    constraints.check_space(space)

    def proxy_scorer(name: str) -> Any:
        if family is not None:
            return proxy_prefilter(family.name, name, model_args=static_args, seed=args.seed,
                                   batch_size=args.proxy_batch_size, device=device)
        options = {"mode": args.dss_mode} if name == "dss" else {}
        return ProxyScorer(supernet, name, batch_size=args.proxy_batch_size, seed=args.seed, **options)

    data_dir = getattr(args, "data_dir", None)
    if data_dir is not None:
        loader, data = build_eval_loader(supernet, Path(data_dir).expanduser(), dataset=args.dataset, split=args.split,
                                         subset_per_class=args.subset_per_class or None, seed=args.seed,
                                         batch_size=args.batch_size, workers=args.workers, device=device)
        scorer: Any = AccuracyScorer(supernet, loader, device=device, describe=data)
    elif getattr(args, "oracle", None) is not None:
        scorer = OracleScorer(Path(args.oracle).expanduser(), space.config_cls, missing="nan")
    else:
        scorer = proxy_scorer(args.proxy)
    prefilter = proxy_scorer(args.prefilter) if getattr(args, "prefilter", None) else None

    if args.search_strategy == "evolution":
        strategy: Any = EvolutionSearch(space, constraints, seed=args.seed, population=args.population,
                                        topk=args.topk, generations=args.generations, mutations=args.mutations,
                                        crossovers=args.crossovers, m_prob=args.m_prob, s_prob=args.s_prob)
    elif args.search_strategy == "tf-tas":
        strategy = ZeroShotSearch(space, num_candidates=args.candidates, constraints=constraints, seed=args.seed)
    elif args.search_strategy == "regularized-evolution":
        strategy = RegularizedEvolution(space, num_candidates=args.candidates, population=args.population,
                                        sample_size=args.sample_size, constraints=constraints, seed=args.seed,
                                        m_prob=args.m_prob, s_prob=args.s_prob, prefilter=prefilter,
                                        prefilter_pool=args.prefilter_pool)
    else:
        strategy = RandomSearch(space, num_candidates=args.candidates, constraints=constraints, seed=args.seed,
                                prefilter=prefilter, prefilter_pool=args.prefilter_pool)

    progress = _Progress(strategy.expected_candidates(), enabled=dist.is_main and not args.no_progress)
    try:
        result = run_search(strategy, scorer, out=out, arguments=arguments, overwrite=args.overwrite, dist=dist,
                            callback=progress, replace_changed_export=args.overwrite_export)
    finally:
        progress.close()
    if not dist.is_main:
        return result, supernet, None

    best = result.best
    if result.scored == 0:
        print(f"{strategy.name}: {out} holds this finished search ({len(result.candidates)} candidates); nothing to "
              "do")
    else:
        print(f"{strategy.name}: {len(result.candidates)} candidates ({result.scored} scored now, "
              f"{result.reused} from the log of an earlier run) in {out}")
    print(summary_table(result, args.top))
    print(f"best: candidate {best.index}, score {_fmt_score(best.score)}, {best.params / 1e6:.2f}M params, "
          f"{best.macs / 1e9:.3f}G MACs")
    latency = constraints.latency_record(best.config)
    if latency:
        print(f"predicted latency of the best: {latency['latency_ms']:.2f} ms on {latency['latency_device']}")
        _add_to_json(result.folder, "best.json", latency)
    print(f"results: {out / 'candidates.jsonl'}, {out / 'best.json'}, {out / 'pareto.json'}"
          + (f", {out / 'pareto.png'}" if (out / 'pareto.png').is_file() else ""))
    folder = None
    if not args.no_export:
        provenance = {
            "method": _METHOD_NAMES[args.search_strategy],
            **({"supernet": args.model} if family is None else {"family": family.name}),
            "space": args.space if not args.space.strip().startswith("{") else space.to_dict(),
            "constraints": {k: v for k, v in constraints.to_dict().items() if k != "cost_kwargs"},
            "seed": args.seed, "scorer": scorer.describe(),
            "weights": _weights_arg(args) if family is None else {"random_init_seed": args.seed}, **latency}
        if prefilter is not None:
            provenance["prefilter"] = {**prefilter.describe(), "pool": args.prefilter_pool}
        folder, status = result.folder.export(lambda f: export_best(
            supernet, result, f, provenance=provenance, onnx=args.onnx, family=family,
            model_args=None if family is None else static_args))
        print(_EXPORT_STATUS[status].format(folder=folder))
        if args.push_to_hub:
            from .. import hub

            try:
                url = hub.push(folder, args.push_to_hub, private=args.private)
            except RuntimeError as e:  # the Hub's message spans lines: keep the error to one
                raise UsageError(" ".join(str(e).split())) from e
            result.folder.record_export()  # the pushed card names its repo
            print(f"pushed to {url}")
    return result, supernet, folder


_EXPORT_STATUS = {"written": "exported the best subnet to {folder}",
                  "replaced": "exported the best subnet to {folder} (replacing the earlier export)",
                  "unchanged": "{folder} already holds this export: left unchanged"}


def _add_to_json(folder: Any, name: str, fields: dict[str, Any]) -> None:
    """Add ``fields`` to the JSON object in ``folder/name`` (the predicted latency of ``best.json``)."""
    import json

    data = json.loads((folder.path / name).read_text(encoding="utf-8"))
    folder.write_json(name, {**data, **fields})


_METHOD_NAMES = {"tf-tas": "TF-TAS zero-shot search", "evolution": "AutoFormer evolutionary search",
                 "random": "random search", "regularized-evolution": "regularized evolution"}


def _static_model_args(args: argparse.Namespace, family: Any) -> dict[str, Any]:
    """The static model's arguments besides the architecture (``--img-size``, ``--num-classes``, ``--model-args``)
    of a family searched without a supernet."""
    kwargs: dict[str, Any] = model_args(args.model_args)
    for option, name in (("--img-size", "img_size"), ("--num-classes", "num_classes")):
        value = getattr(args, name)
        if value is not None:
            if name in kwargs:
                raise ValueError(f"--model-args sets {name!r}: use {option} for it")
            kwargs[name] = value
    if family.arch_arg in kwargs:
        raise ValueError(f"--model-args sets {family.arch_arg!r}, the architecture the search chooses")
    return kwargs


def _build_static(family: Any, config: Any, kwargs: dict[str, Any], seed: int) -> Any:
    """The family's static model of ``config``, initialised from ``seed`` (the global generator left unchanged)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return create_model_checked(family.static_entrypoint, **{family.arch_arg: config.to_dict(), **kwargs})
        except TypeError as e:
            raise ValueError(f"{family.static_entrypoint} does not take these --model-args ({e})") from e


def supernet_args(supernet: Any) -> dict[str, Any]:
    """The supernet's constructor arguments that shape scores and subnets (space, image and patch size, classes,
    ...), JSON-native: a resumed search must be the same search."""
    args: dict[str, Any] = {"space": supernet.space.to_dict()}
    subnet_args = getattr(supernet, "static_model_args", None)
    if callable(subnet_args):  # every argument its static subnets are built with
        args.update((k, v) for k, v in subnet_args().items() if k != "subnet")
        return args
    size = getattr(getattr(supernet, "patch_embed", None), "img_size", None)
    if size is not None:
        args["img_size"] = list(size) if isinstance(size, tuple) else size
    args["num_classes"] = getattr(supernet, "num_classes", None)
    return args


def export_best(supernet: Any, result: Any, folder: Path, *, provenance: dict[str, Any], onnx: bool = False,
                family: Any = None, model_args: dict[str, Any] | None = None) -> Path:
    """Extract the best subnet (inherited weights) and export it with :func:`timm_nas.hub.export` into ``folder``
    (replacing an earlier export there); a search's CLI calls it through its run folder's
    :meth:`~timm_nas.search.log.RunFolder.export`, which keeps the user's files safe.

    Without a supernet (``supernet=None``, a ``family`` searched through its static models) the export is the
    family's static model of the best architecture with ``model_args``, initialised from the provenance's seed.
    """
    from .. import hub

    best = result.best
    method = provenance.get("method", result.strategy)
    if supernet is None:
        if family is None:
            raise TypeError("export_best(supernet=None) needs family=")
        model = _build_static(family, best.config, dict(model_args or {}), int(provenance.get("seed", 0))).eval()
        description = (f"Architecture found by {method} with timm-nas. The search scored the architecture, not these "
                       "weights: they are a random initialisation, to be trained before use.")
    else:
        model = supernet.extract(best.config).eval()
        description = (f"Subnet found by {method} with timm-nas. Weights are the supernet's, sliced to this "
                       "architecture" + (" (a randomly initialised supernet: train or fine-tune before use)."
                                         if "random_init_seed" in provenance.get("weights", {}) else "."))
    card = {
        "description": textwrap.fill(description, 200),
        "provenance": {**provenance, "score": best.score, "candidate": best.index,
                       "candidates": len(result.candidates), "params": best.params, "macs": best.macs},
    }
    return hub.export(model, folder, card=card, overwrite=True, onnx=onnx)
