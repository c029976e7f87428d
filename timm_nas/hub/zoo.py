"""The zoo: every published model, where its weights come from, and their conversion into Hub folders.

The zoo is read from two places that already exist, never from a table of its own: the timm ``default_cfgs`` of
the families (which tags have weights, from which URL or Hub id, under which licence) and the registry files
``registry/<family>.json`` (the paper's reported accuracy, our measured parameters and MACs, notes where they
differ, and the release files that live on Google Drive / Baidu, which timm cannot download).

* :func:`zoo_entries` lists them: one :class:`ZooEntry` per released checkpoint (a timm tag, or a registry
  ``weights`` item for files timm cannot fetch) and, with ``architectures=True``, one per published architecture
  without weights.
* :func:`export_zoo` converts each reachable checkpoint into a Hub folder (:func:`~timm_nas.hub.convert_checkpoint`:
  the family's ``checkpoint_filter_fn``, strict loading, ``config.json`` + ``model.safetensors`` + card), resumable
  (a finished folder is skipped) and atomic (each folder appears complete or not at all), and optionally pushes
  it (:func:`~timm_nas.hub.push`).

Sources, in order: a file in ``checkpoint_dir`` named as in the release (``supernet-tiny.pth``, ``S3-T.pth``,
``cifar10_model.pt``), then the tag's own sources through timm's downloaders (the release URL into timm's /
torch.hub's cache, ``torch.hub.get_dir()/checkpoints``; a Hub id into the Hugging Face cache). Offline, what is in
those caches is used.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ._common import CONFIG_NAME, WEIGHTS_NAME

__all__ = ["Source", "ZooEntry", "zoo_entries", "export_zoo", "is_finished", "ExportResult", "format_table"]

_logger = logging.getLogger(__name__)

#: Tags kept only so that names users already call keep loading; the zoo lists their new names.
_OLD_TAGS = ("in1k", "dist_in1k", "fb_in1k")
#: Tags whose weights are not the family's own models (the SPViT search network's DeiT initialisation).
_NOT_RELEASES = ("fb_in1k_deit_init",)
#: Alternative sources of another tag's weights: ``<model>.<alt>`` is a second way to ``<model>.<main>``.
_ALTERNATIVES = {"ms_in1k_orig": "ms_in1k"}


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one checkpoint can be read: ``kind`` is ``'url'``, ``'hf_hub'`` or ``'drive'`` (a Google Drive /
    Baidu page: only a local copy in ``checkpoint_dir`` can be used); ``file`` is the release file name."""

    kind: str
    location: str
    file: str | None = None


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One published model: a released checkpoint (``sources`` non-empty) or an architecture without weights."""

    name: str                    # 'autoformer_tiny.ms_in1k' (timm name with tag), or the bare model name
    model: str                   # the timm model: 'autoformer_tiny'
    family: str
    registry_key: str | None
    sources: tuple[Source, ...]
    license: str | None
    paper_ids: str | None
    origin_url: str | None
    metrics: Mapping[str, Any]   # the paper's reported accuracy: {'top1': .., 'top5': .., 'dataset': ..}
    params: int | None           # measured (registry), or None
    macs: int | None
    notes: tuple[str, ...] = ()
    base_model: str | None = None  # a Hub id the weights are a copy of (timm's)

    @property
    def has_weights(self) -> bool:
        return bool(self.sources)

    @property
    def folder_name(self) -> str:
        return self.name


# --------------------------------------------------------------------------------------------- reading
def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        m = re.match(r"\s*([\d.]+)", value)
        return float(m.group(1)) if m else None
    return None


def _metrics(family: str, entry: Mapping[str, Any], model: str, tag: str) -> dict[str, Any]:
    """The paper's reported accuracy for this model and tag (top-1 / top-5 in percent, with the dataset)."""
    rep = entry.get("reported") or {}
    if family == "darts":
        kind = "imagenet" if model.endswith("_imagenet") else "cifar10"
        if kind == "cifar10":
            err = _number(rep.get("cifar10_test_error"))
            return {"top1": round(100 - err, 2), "dataset": "cifar10"} if err is not None else {}
        out: dict[str, Any] = {}
        for k in ("top1", "top5"):
            err = _number(rep.get(f"imagenet_{k}_error"))
            if err is not None:
                out[k] = round(100 - err, 2)
        return dict(out, dataset="imagenet-1k") if out else {}
    dist = "dist" in tag
    out = {k: rep[f"{k}_dist" if dist else k] for k in ("top1", "top5")
           if isinstance(rep.get(f"{k}_dist" if dist else k), (int, float))}
    return dict(out, dataset=rep.get("dataset", "imagenet-1k")) if out else {}


def _measured(family: str, entry: Mapping[str, Any], model: str) -> tuple[int | None, int | None]:
    m = entry.get("measured") or {}
    if family == "darts":
        if model.endswith("_imagenet"):
            return m.get("imagenet_params"), m.get("imagenet_macs_224")
        return m.get("cifar_params"), m.get("cifar_macs_32")
    return m.get("params"), m.get("macs")


def _registry_key(family: str, model: str, entries: Mapping[str, Any]) -> str | None:
    if model in entries:
        return model
    if family == "darts":
        base = re.sub(r"_(cifar|imagenet)$", "", model)
        return base if base in entries else None
    # a supernet's numbers are not the registry's; its architecture's entry is the sized subnet's space
    return None


def _model_cost(model: str) -> tuple[int | None, int | None]:
    import timm

    from ..cost import model_cost

    try:
        params, macs = model_cost(timm.create_model(model, device="meta"))
    except Exception as e:  # a model without cost formulas: the table shows '-'
        _logger.debug("no cost for %s: %s", model, e)
        return None, None
    return int(params), int(macs)


def _cfg_sources(cfg: Mapping[str, Any]) -> list[Source]:
    out = []
    if cfg.get("hf_hub_id"):
        out.append(Source("hf_hub", cfg["hf_hub_id"]))
    if cfg.get("url"):
        out.append(Source("url", cfg["url"], cfg["url"].rsplit("/", 1)[-1]))
    return out


def zoo_entries(architectures: bool = False, pattern: str | None = None) -> list[ZooEntry]:
    """Every released checkpoint of the timm-nas families (and, with ``architectures``, every published
    architecture without weights), read from the ``default_cfgs`` and the registry; no network.

    Args:
        architectures: also list the published architectures that have no released weights.
        pattern: keep the names matching this ``fnmatch`` pattern (``'s3*'``, ``'*.ms_in1k'``).
    """
    import fnmatch

    import timm
    from timm.models import get_pretrained_cfg, model_entrypoint

    from ..family import families
    from ..registry import load_registry

    out: list[ZooEntry] = []
    for fam in families().values():
        try:
            reg = load_registry(fam.name)
        except FileNotFoundError:  # pragma: no cover - every family has a registry file
            reg = {}
        seen_models: set[str] = set()
        names = [n for n in timm.list_models(pretrained=True)
                 if getattr(model_entrypoint(n.split(".")[0]), "__module__", "") == fam.module]
        for name in names:
            model, _, tag = name.partition(".")
            if tag in _OLD_TAGS or tag in _NOT_RELEASES or tag in _ALTERNATIVES:
                continue
            cfg = get_pretrained_cfg(name).to_dict()
            sources = _cfg_sources(cfg)
            alt = next((a for a, main in _ALTERNATIVES.items() if main == tag), None)
            if alt and f"{model}.{alt}" in names:
                sources += _cfg_sources(get_pretrained_cfg(f"{model}.{alt}").to_dict())
            key = _registry_key(fam.name, model, reg)
            entry = reg.get(key, {}) if key else {}
            params, macs = _measured(fam.name, entry, model)
            if params is None:  # a supernet: no registry entry, count the model itself (meta device, no memory)
                params, macs = _model_cost(model)
            # release file names (what --checkpoint-dir is searched for) come from the URLs
            sources = sorted(sources, key=lambda s: s.kind != "url")  # the authors' file first, then the Hub copy
            hub_copy = next((s.location for s in sources if s.kind == "hf_hub"), None)
            out.append(ZooEntry(
                name=name, model=model, family=fam.name, registry_key=key, sources=tuple(sources),
                license=cfg.get("license"), paper_ids=cfg.get("paper_ids"), origin_url=cfg.get("origin_url"),
                metrics=_metrics(fam.name, entry, model, tag), params=params, macs=macs,
                notes=tuple(n for n in entry.get("notes", ()) if n), base_model=hub_copy))
            seen_models.add(model)
        # release files timm cannot download (Google Drive / Baidu): registry "weights" items of kind "drive"
        for key, entry in reg.items():
            for w in entry.get("weights", ()):
                if w.get("kind") != "drive":
                    continue
                model = w["model"]
                params, macs = _measured(fam.name, entry, model)
                out.append(ZooEntry(
                    name=f"{model}.{w['tag']}", model=model, family=fam.name, registry_key=key,
                    sources=(Source("drive", w["where"], w["file"]),), license=w.get("license", entry.get("license")),
                    paper_ids=entry.get("paper_ids"), origin_url=entry.get("origin_url"),
                    metrics=_metrics(fam.name, entry, model, w["tag"]), params=params, macs=macs,
                    notes=tuple(n for n in (*entry.get("notes", ()), w.get("note")) if n)))
                seen_models.add(model)
        if architectures:
            for name in sorted(set(fam.models()) - seen_models):
                if name.split(".")[0] != name or name in (fam.static_entrypoint, fam.weight_sharing_entrypoint,
                                                         *fam.other_static_entrypoints):
                    continue
                key = _registry_key(fam.name, name, reg)
                if key is None:
                    continue  # supernets / search networks of a space: no published numbers
                entry = reg[key]
                cfg = get_pretrained_cfg(name)
                cfg = cfg.to_dict() if cfg is not None else {}
                params, macs = _measured(fam.name, entry, name)
                out.append(ZooEntry(
                    name=name, model=name, family=fam.name, registry_key=key, sources=(),
                    license=cfg.get("license"), paper_ids=cfg.get("paper_ids"), origin_url=cfg.get("origin_url"),
                    metrics=_metrics(fam.name, entry, name, ""), params=params, macs=macs,
                    notes=tuple(n for n in entry.get("notes", ()) if n)))
    if pattern:
        out = [e for e in out if fnmatch.fnmatch(e.name, pattern) or fnmatch.fnmatch(e.model, pattern)]
    return out


# ---------------------------------------------------------------------------------------------- export
def is_finished(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a finished export: a ``config.json`` naming an architecture, and its weights."""
    folder = Path(folder)
    try:
        cfg = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and bool(cfg.get("architecture")) and (folder / WEIGHTS_NAME).is_file()


@dataclasses.dataclass
class ExportResult:
    """What :func:`export_zoo` did with one entry: ``status`` is ``'done'``, ``'skipped'`` or
    ``'unreachable'``; ``detail`` says why (or where the weights came from); ``url`` after a push."""

    name: str
    status: str
    detail: str
    folder: Path | None = None
    url: str | None = None

    def line(self) -> str:
        return f"{self.name}: {self.status} ({self.detail})" + (f" -> {self.url}" if self.url else "")


def _fetch(source: Source, checkpoint_dir: Path | None) -> tuple[Path | None, str]:
    """A local path for ``source`` (``(None, why not)`` when unreachable)."""
    if checkpoint_dir is not None and source.file:
        local = checkpoint_dir / source.file
        if local.is_file():
            return local, f"local file {local}"
    if source.kind == "drive":
        where = f"no {source.file} in {checkpoint_dir}" if checkpoint_dir else "no --checkpoint-dir given"
        return None, f"{where}; download it from {source.location}"
    if source.kind == "url":
        from timm.models._hub import download_cached_file

        try:
            return Path(download_cached_file(source.location, check_hash=False, progress=False)), source.location
        except Exception as e:  # URLError, HTTPError, OSError: offline or gone
            return None, f"{source.location}: {type(e).__name__}: {e}"
    if source.kind == "hf_hub":
        from huggingface_hub import hf_hub_download

        errors = []
        for filename in (WEIGHTS_NAME, "pytorch_model.bin"):
            try:
                return Path(hf_hub_download(source.location, filename=filename)), f"hf-hub:{source.location}"
            except Exception as e:  # offline, missing file or repo
                errors.append(f"{filename}: {type(e).__name__}")
        return None, f"hf-hub:{source.location}: {', '.join(errors)}"
    return None, f"unknown source kind {source.kind!r}"  # pragma: no cover


def _card(entry: ZooEntry, origin: str) -> dict[str, Any]:
    desc = (f"`{entry.model}` with the released weights of {entry.paper_ids or 'the authors'} "
            f"({entry.origin_url or 'the authors'}), converted with timm-nas.")
    notes = list(entry.notes)
    if entry.params is not None:
        notes.append(f"Measured here: {entry.params:,} parameters"
                     + (f", {entry.macs / 1e9:.3f} GMACs" if entry.macs else "") + ".")
    if entry.license == "other":
        notes.append("Licence: the source repository allows non-commercial testing and evaluation only.")
    elif entry.license is None:
        notes.append("Licence: the source repository states none.")
    card: dict[str, Any] = {
        "name": entry.name,
        "description": desc,
        "license": entry.license or "unknown",
        "provenance": {"weights": origin, "release": entry.origin_url or "", "paper": entry.paper_ids or "",
                       "timm_name": entry.name},
        "notes": "\n".join(f"- {n}" for n in notes) or None,
    }
    if entry.metrics:
        card["metrics"] = dict(entry.metrics)
        card["datasets"] = [entry.metrics["dataset"]]
    if entry.base_model and origin.startswith("hf-hub:"):
        card["base_model"] = [entry.base_model]
    return {k: v for k, v in card.items() if v is not None}


def export_zoo(out: str | os.PathLike, *, checkpoint_dir: str | os.PathLike | None = None,
               pattern: str | None = None, push_to: str | None = None, overwrite: bool = False,
               report: Callable[[ExportResult], None] | None = None, progress: bool = True) -> list[ExportResult]:
    """Convert every reachable released checkpoint into a Hub folder ``out/<name>`` (and push it).

    Args:
        out: the folder that receives one sub-folder per model (named as the timm tag, ``autoformer_tiny.ms_in1k``).
        checkpoint_dir: local copies of the release files, named as in the release (the only way to the files
            on Google Drive / Baidu, e.g. DARTS's ``cifar10_model.pt``).
        pattern: only the models matching this ``fnmatch`` pattern.
        push_to: a Hub namespace: each folder is pushed to ``<push_to>/<name>``.
        overwrite: redo finished folders (default: skip them, so an interrupted run resumes).
        report: called with each result as it is known (the command prints one line per model).
        progress: show a tqdm progress bar.

    Returns:
        One :class:`ExportResult` per model.
    """
    from tqdm.auto import tqdm

    from .convert import convert_checkpoint
    from .push import push

    out = Path(out)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt_dir is not None and not ckpt_dir.is_dir():
        raise FileNotFoundError(f"--checkpoint-dir {ckpt_dir} is not a folder")
    entries = [e for e in zoo_entries(pattern=pattern) if e.has_weights]
    if not entries:
        raise ValueError(f"no released checkpoint matches {pattern!r}; see `timm-nas zoo list`")
    results: list[ExportResult] = []
    bar = tqdm(entries, desc="zoo export", unit="model", disable=not progress)
    for entry in bar:
        bar.set_postfix_str(entry.name)
        folder = out / entry.folder_name
        if is_finished(folder) and not overwrite:
            result = ExportResult(entry.name, "skipped", "already exported", folder)
        else:
            result = _export_one(entry, folder, ckpt_dir, convert_checkpoint)
        if push_to and result.status in ("done", "skipped") and result.folder is not None:
            try:
                result.url = push(result.folder, f"{push_to}/{entry.folder_name}")
            except (RuntimeError, ValueError) as e:
                result = ExportResult(entry.name, "unreachable", f"push failed: {e}", result.folder)
        results.append(result)
        if report is not None:
            report(result)
    return results


def _export_one(entry: ZooEntry, folder: Path, ckpt_dir: Path | None,
                convert_checkpoint: Callable[..., Path]) -> ExportResult:
    why = []
    for source in entry.sources:
        path, origin = _fetch(source, ckpt_dir)
        if path is None:
            why.append(origin)
            continue
        # convert_checkpoint writes through an atomic folder: an interrupted run leaves no half-written folder
        convert_checkpoint(entry.family, path, folder, model_name=entry.model, overwrite=True,
                           card=_card(entry, origin))
        return ExportResult(entry.name, "done", f"from {origin}", folder)
    return ExportResult(entry.name, "unreachable", "; ".join(why) or "no source")


def format_table(entries: Iterable[ZooEntry]) -> str:
    """The ``zoo list`` table: name, weight source, licence, reported accuracy, measured params and MACs."""
    rows = [("model", "weights", "licence", "top-1 (paper)", "params", "MACs")]
    for e in entries:
        if e.sources:
            src = " | ".join(("hf-hub:" + s.location) if s.kind == "hf_hub" else
                             (s.location if s.kind == "url" else f"{s.file} (manual download: {s.location})")
                             for s in e.sources)
        else:
            src = "none (architecture only)"
        acc = (f"{e.metrics['top1']} ({e.metrics['dataset']})" if e.metrics.get("top1") is not None else "-")
        params = f"{e.params / 1e6:.2f}M" if e.params else "-"
        macs = f"{e.macs / 1e9:.3f}G" if e.macs else "-"
        rows.append((e.name, src, e.license or "none stated", acc, params, macs))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows)
