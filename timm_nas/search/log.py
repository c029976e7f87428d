"""The run folder: one layout, one log and one set of resume and rerun rules for every search.

Every search (``tf-tas``, ``random``, ``evolution``, ``darts``, ``spvit``, ``s3-space``) writes one folder::

    run.json           the identity of the run: its kind and the arguments that define its result
    <log>.jsonl        the append-only log: one JSON record per finished unit of work (a scored candidate, an
                       epoch, a space-evolution step), flushed and synced as each one finishes
    checkpoint files   the state a resume continues from (written atomically: never half-written)
    best.json          the result                                        \\
    pareto.json        Pareto fronts, wherever there is a cost           > written at the end
    pareto.png         the same as a plot (needs matplotlib)            /
    export/            the result as a Hub-ready folder
    export.sha256      what the search wrote into export/ (``sha256sum -c export.sha256`` checks it)

The rules (:class:`RunFolder` implements them once):

- **Identity.** A folder made with other arguments is refused before anything is written (the message lists
  the differences). A non-empty folder without ``run.json`` is refused too, so a search never writes into a
  folder of other files.
- **Resume.** Starting the same run again continues after its last logged unit; a record cut short by a kill is
  dropped, records past the last checkpoint are dropped before the run continues (so no unit is logged twice),
  and temporary files a kill left behind are removed.
- **Rerun.** A finished run started again changes nothing: results are only rewritten when their content
  changes, and ``export/`` only when the export would differ.
- **Extend.** Arguments a kind declares *extendable* (the number of candidates, of generations) may grow: the
  logged units are kept and only the new ones run.
- **The user's files are safe.** ``export/`` is replaced only while it holds exactly what the search wrote
  (checked against ``export.sha256``); a file added or changed there makes the search refuse, naming the files,
  unless ``replace_changed_export`` (``--overwrite-export``) is given. ``overwrite`` (``--overwrite``) discards
  the run's own outputs only.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .._io import atomic_folder, atomic_write, atomic_write_text, sha256_file

__all__ = ["RunFolder", "SearchFolder", "config_key", "atomic_write_text", "RUN_FILE", "LOG_FILE", "OUTPUTS",
           "EXPORT_DIR", "EXPORT_MANIFEST", "ExportChangedError"]

RUN_FILE = "run.json"
LOG_FILE = "candidates.jsonl"
EXPORT_DIR = "export"
EXPORT_MANIFEST = "export.sha256"
#: The files every run folder may hold besides its kind's own (``overwrite`` removes these and the kind's).
OUTPUTS = (RUN_FILE, LOG_FILE, "best.json", "pareto.json", "pareto.png", EXPORT_DIR, EXPORT_MANIFEST)
#: Format version of run.json and the logs.
FORMAT = 1
#: What run.json says about exactness (not part of the run's identity).
DETERMINISM = ("the same arguments give the same files on CPU, for any number of data-loader workers; on GPUs some "
               "CUDA kernels are not deterministic, so runs there agree up to float rounding")
#: How to discard a previous search, in the library's words and the CLI's (its errors reach both).
OVERWRITE_HINT = "pass overwrite=True (--overwrite)"
EXPORT_HINT = "pass replace_changed_export=True (--overwrite-export) to replace them"
#: Names of the temporaries the atomic writers create (removed when a run starts: a kill may leave them).
_TEMPORARY = re.compile(r"^\..+\.([0-9a-f]{12}\.tmp|partial-[0-9a-f]{12}|old-[0-9a-f]{12})$")


class ExportChangedError(FileExistsError):
    """``export/`` holds files the search did not write, or changed ones; the search refuses to replace them."""


def config_key(config: Any) -> str:
    """Canonical string of a config (its dict form with sorted keys): the identity of a candidate."""
    d = config.to_dict() if hasattr(config, "to_dict") else config
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def _normalise(data: Any) -> Any:
    return json.loads(json.dumps(data))


def _diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for each differing argument; nested objects are compared key by key
    (``model_args.patch_size: 8 -> 16``)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            sa, sb = json.dumps(a), json.dumps(b)
            if len(sa) > 40 or len(sb) > 40:
                sa, sb = sa[:37] + "...", sb[:37] + "..."
            out.append(f"{prefix}{key}: {sa} -> {sb}")
    return out


def _get(data: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = data
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _without(data: Mapping[str, Any], dotted: Iterable[str]) -> dict[str, Any]:
    """A deep copy of ``data`` without the (dotted) keys."""
    out = _normalise(dict(data))
    for key in dotted:
        *parents, last = key.split(".")
        cur = out
        for p in parents:
            cur = cur.get(p) if isinstance(cur, dict) else None
        if isinstance(cur, dict):
            cur.pop(last, None)
    return out


def folder_digest(folder: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``folder`` (sorted)."""
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


class RunFolder:
    """The output folder of one search run (see the module's description for the layout and the rules).

    Args:
        path: the folder (created on :meth:`start` if missing).
        arguments: everything that defines the run's result, JSON-native; compared when the run starts again.
        kind: the kind of search (``'tf-tas'``, ``'darts'``, ...), recorded in ``run.json``.
        log_name: the file name of the append-only log.
        overwrite: discard a previous run in the folder (its outputs only) instead of resuming it.
        extendable: dotted keys of ``arguments`` that may grow between runs (``'search.num_candidates'``).
        outputs: the kind's own files and folders besides :data:`OUTPUTS` (``overwrite`` removes them; glob
            patterns such as ``'step_*.jsonl'`` are allowed).
        legacy: files whose presence marks a folder written before ``run.json`` existed by this kind of search;
            such a folder is adopted (resumed) instead of refused.
        replace_changed_export: replace (or, with ``overwrite``, remove) an ``export/`` that holds files the
            search did not write; without it such a folder is refused (:class:`ExportChangedError`).
    """

    def __init__(self, path: str | os.PathLike, arguments: Mapping[str, Any], *, kind: str = "search",
                 log_name: str = LOG_FILE, overwrite: bool = False, extendable: Sequence[str] = (),
                 outputs: Sequence[str] = (), legacy: Sequence[str] = (),
                 replace_changed_export: bool = False) -> None:
        self.path = Path(path)
        self.arguments = _normalise(dict(arguments))
        self.kind = kind
        self.log_name = log_name
        self.overwrite = overwrite
        self.extendable = tuple(extendable)
        self.outputs = tuple(OUTPUTS) + (log_name,) + tuple(outputs)
        self.legacy = tuple(legacy)
        self.replace_changed_export = replace_changed_export
        self.previous: dict[str, Any] | None = None  # run.json's arguments when the folder holds this run
        self._log_handle: Any = None
        self._good_bytes: int | None = None
        self._records: list[dict[str, Any]] = []

    @property
    def log_path(self) -> Path:
        return self.path / self.log_name

    # ------------------------------------------------------------------------------------------ checking
    def check(self) -> list[dict[str, Any]]:
        """Validate the folder without writing anything; return the logged records, in order.

        Raises:
            ValueError: if the folder holds a run made with other arguments (or shrinks an extendable one), or
                other files, and ``overwrite`` is off; or if its log is unreadable.
        """
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"output path {self.path} exists and is not a folder")
        if not self.path.is_dir() or self.overwrite:
            if self.overwrite and self.path.is_dir():
                self.check_export()  # --overwrite never removes files the user put into export/
            self._good_bytes = 0
            return []
        run = self.path / RUN_FILE
        if not run.is_file():
            if self.legacy and any((self.path / name).exists() for name in self.legacy):
                return self._read_log()  # a folder of this kind from before run.json: adopted
            if any(p for p in self.path.iterdir() if not _TEMPORARY.match(p.name)):
                raise ValueError(f"output folder {self.path} is not empty and holds no search ({RUN_FILE}); "
                                 f"choose another output folder, or {OVERWRITE_HINT} to replace the search outputs "
                                 "there")
            return []
        try:
            previous = json.loads(run.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read {run}: {e}; {OVERWRITE_HINT} to start the search afresh") from e
        old_args = previous.get("arguments", {}) if isinstance(previous, dict) else {}
        old_kind = previous.get("kind", self.kind) if isinstance(previous, dict) else self.kind
        if old_kind != self.kind:
            raise ValueError(f"{self.path} holds a {old_kind} run, not a {self.kind} run; use another output folder "
                             f"or {OVERWRITE_HINT} to replace it")
        if _without(old_args, self.extendable) != _without(self.arguments, self.extendable):
            diff = "; ".join(_diff(old_args, self.arguments)[:6])
            raise ValueError(f"resume folder {self.path} was made with different arguments ({diff}); use another "
                             f"output folder, rerun with the same arguments to resume, or {OVERWRITE_HINT} to start "
                             "afresh")
        for key in self.extendable:
            old, new = _get(old_args, key), _get(self.arguments, key)
            if isinstance(old, (int, float)) and isinstance(new, (int, float)) and new < old:
                raise ValueError(f"{self.path} holds a run with {key.split('.')[-1]}={old}; it can be extended (a "
                                 f"larger value) but not shortened to {new}: rerun with {old} or more, use another "
                                 f"output folder, or {OVERWRITE_HINT} to start afresh")
        self.previous = old_args
        return self._read_log()

    def _read_log(self) -> list[dict[str, Any]]:
        path = self.log_path
        self._records = []
        if not path.is_file():
            self._good_bytes = 0
            return []
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1  # bytes after the last newline: a record cut short by a kill
        self._good_bytes = end
        for n, line in enumerate(data[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n} is not a log record ({e}); {OVERWRITE_HINT} to start afresh") from e
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{n} is not a log record (a JSON object); {OVERWRITE_HINT} to start afresh")
            self._records.append(rec)
        return list(self._records)

    @property
    def extended(self) -> dict[str, tuple[Any, Any]]:
        """The extendable arguments that grew since the folder's run: ``key -> (old, new)``."""
        if self.previous is None:
            return {}
        return {k: (_get(self.previous, k), _get(self.arguments, k)) for k in self.extendable
                if _get(self.previous, k) != _get(self.arguments, k)}

    # ------------------------------------------------------------------------------------------- writing
    def start(self, *, keep: int | None = None) -> None:
        """Create the folder, record the run (``run.json``), remove temporaries a kill left, and open the log.

        Args:
            keep: keep only the first ``keep`` log records (those the resumed state holds); later records, and
                a record cut short by a kill, are dropped, so nothing is logged twice.
        """
        if self.overwrite and self.path.is_dir():
            self._discard()
            self._good_bytes = 0
            self._records = []
        self.path.mkdir(parents=True, exist_ok=True)
        for p in self.path.iterdir():
            if _TEMPORARY.match(p.name):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        run = self.path / RUN_FILE
        if not run.is_file() or self.extended:
            import torch

            from ..version import __version__

            atomic_write_text(run, json.dumps({"format": FORMAT, "kind": self.kind, "arguments": self.arguments,
                                               "determinism": DETERMINISM,
                                               "versions": {"timm_nas": __version__, "torch": torch.__version__}},
                                              indent=1) + "\n")
        log = self.log_path
        if keep is not None and keep < len(self._records):
            self._records = self._records[:keep]
            atomic_write_text(log, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in self._records))
        elif self._good_bytes is not None and log.is_file() and log.stat().st_size > self._good_bytes:
            with open(log, "r+b") as f:  # drop a partial last record before appending
                f.truncate(self._good_bytes)
        self._log_handle = open(log, "a", encoding="utf-8")

    def _discard(self) -> None:
        """Remove the run's outputs (``overwrite``; :meth:`check` refused a changed ``export/``)."""
        for pattern in self.outputs:
            for target in self.path.glob(pattern):
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record and sync it to disk (a killed process loses nothing it logged)."""
        if self._log_handle is None:
            raise RuntimeError("RunFolder.start() must be called before append()")
        self._log_handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._log_handle.flush()
        os.fsync(self._log_handle.fileno())
        self._records.append(_normalise(dict(record)))

    def records_until(self, records: Sequence[Mapping[str, Any]], done: int,
                      key: str = "epoch") -> list[dict[str, Any]]:
        """The log records of units ``0 .. done - 1`` (by ``key``), those a checkpoint after unit ``done - 1``
        holds; later ones (logged before a kill stopped the checkpoint) are left out.

        Raises:
            ValueError: the log lacks one of those units.
        """
        kept = [dict(r) for r in records if r.get(key, -1) < done]
        if [r.get(key) for r in kept] != list(range(done)):
            raise ValueError(f"{self.log_path} does not hold {key}s 0..{done - 1} of the checkpoint; "
                             f"{OVERWRITE_HINT} to start afresh")
        return kept

    @property
    def records(self) -> list[dict[str, Any]]:
        """The log's records (as read, plus those appended since)."""
        return list(self._records)

    def write_json(self, name: str, data: Any) -> Path:
        """Write ``name`` atomically as indented JSON; a file with the same content is left untouched."""
        return self.write_text(name, json.dumps(data, indent=1) + "\n")

    def write_text(self, name: str, text: str) -> Path:
        """Write ``name`` atomically; a file with the same content is left untouched."""
        path = self.path / name
        try:
            if path.read_text(encoding="utf-8") == text:
                return path
        except (OSError, UnicodeDecodeError):
            pass
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def save_checkpoint(self, name: str, payload: Mapping[str, Any]) -> Path:
        """``torch.save`` ``payload`` to ``name`` atomically (a kill mid-write leaves the previous checkpoint)."""
        import torch

        return atomic_write(self.path / name, lambda tmp: torch.save(dict(payload), tmp))

    def save_tensors(self, name: str, tensors: Mapping[str, Any]) -> Path:
        """Write ``tensors`` as safetensors to ``name`` atomically."""
        from safetensors.torch import save_file

        data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        return atomic_write(self.path / name, lambda tmp: save_file(data, str(tmp)))

    # -------------------------------------------------------------------------------------------- export
    def check_export(self) -> None:
        """Raise :class:`ExportChangedError` if ``export/`` holds files the search did not write (or changed
        ones), unless ``replace_changed_export``."""
        changed = self._export_changes()
        if changed and not self.replace_changed_export:
            names = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            raise ExportChangedError(f"{self.path / EXPORT_DIR} holds files this search did not write or that "
                                     f"changed since ({names}); move them elsewhere, or {EXPORT_HINT}")

    def _export_changes(self) -> list[str]:
        export = self.path / EXPORT_DIR
        if not export.exists():
            return []
        if export.is_symlink() or not export.is_dir():
            return [EXPORT_DIR]
        written = self._manifest()
        now = folder_digest(export)
        return sorted(f"{EXPORT_DIR}/{k}" for k in set(now) | set(written) if now.get(k) != written.get(k)
                      and k in now)

    def _manifest(self) -> dict[str, str]:
        path = self.path / EXPORT_MANIFEST
        out: dict[str, str] = {}
        if not path.is_file():
            return out
        for line in path.read_text(encoding="utf-8").splitlines():
            digest, _, name = line.partition("  ")
            if name.startswith(f"{EXPORT_DIR}/"):
                out[name[len(EXPORT_DIR) + 1:]] = digest
        return out

    def export(self, write: Callable[[Path], Any]) -> tuple[Path, str]:
        """Write the export with ``write(folder)`` (e.g. ``lambda f: hub.export(model, f, card=...)``).

        The export is built beside the run folder first; then ``export/`` is left alone when it already holds the
        same files (``'unchanged'``), created (``'written'``) or replaced when it holds exactly what the search
        wrote before (``'replaced'``). Files the user added or changed there make it raise
        :class:`ExportChangedError` before anything changes, unless ``replace_changed_export``.

        Returns:
            ``(path of export/, status)``.
        """
        target = self.path / EXPORT_DIR
        box = self.path / f".{EXPORT_DIR}.partial-{uuid.uuid4().hex[:12]}"
        staging = box / EXPORT_DIR  # built under its final name (an export's card is named after its folder)
        try:
            box.mkdir(parents=True)
            write(staging)
            new = folder_digest(staging)
            current = folder_digest(target) if target.is_dir() and not target.is_symlink() else None
            intact = current is not None and all(current.get(k) == h for k, h in new.items())
            if current is not None and (current == new or (intact and self._manifest() == new)):
                status = "unchanged"  # what the search wrote is there (the user's own extra files stay)
            else:
                self.check_export()
                status = "replaced" if target.exists() else "written"
                atomic_folder(target, lambda tmp: _move_contents(staging, tmp))
        finally:
            shutil.rmtree(box, ignore_errors=True)
        self.write_text(EXPORT_MANIFEST, "".join(f"{h}  {EXPORT_DIR}/{k}\n" for k, h in new.items()))
        return target, status

    def export_with(self, options: Mapping[str, Any], write: Callable[..., Any]) -> tuple[Path, str]:
        """A search's export step: ``options`` are its export keywords (``folder``, default ``export/``;
        ``push_to`` / ``private`` / ``token`` for :func:`timm_nas.hub.push`; the rest go to ``write(folder,
        **rest)``). Into ``export/`` it goes through :meth:`export` (the user's files stay safe); elsewhere it is
        written directly. Returns ``(folder, status)``."""
        kwargs = dict(options)
        target = Path(kwargs.pop("folder", self.path / EXPORT_DIR))
        push_to, private, token = kwargs.pop("push_to", None), kwargs.pop("private", False), kwargs.pop("token", None)
        ours = target.resolve() == (self.path / EXPORT_DIR).resolve()
        if ours:
            kwargs.pop("overwrite", None)
            path, status = self.export(lambda f: write(f, **kwargs))
        else:
            path, status = Path(write(target, **kwargs)), "written"
        if push_to:
            from .. import hub

            hub.push(path, push_to, private=private, token=token)
            if ours:
                self.record_export()  # the pushed card names its repo
        return path, status

    def record_export(self) -> None:
        """Record ``export/`` as it is now as the search's own (after a step of the search changed it, such as a
        push pointing the card at its repo)."""
        digest = folder_digest(self.path / EXPORT_DIR)
        self.write_text(EXPORT_MANIFEST, "".join(f"{h}  {EXPORT_DIR}/{k}\n" for k, h in digest.items()))

    def close(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _move_contents(src: Path, dst: Path) -> None:
    for p in src.iterdir():
        os.replace(p, dst / p.name)


class SearchFolder(RunFolder):
    """The run folder of a candidate search (``tf-tas``, ``random``, ``evolution``): the log is
    ``candidates.jsonl``, one record per scored candidate; :meth:`check` returns the records by
    :func:`config_key` (how the engine replays them)."""

    def __init__(self, path: str | os.PathLike, arguments: Mapping[str, Any], *, overwrite: bool = False,
                 kind: str = "search", extendable: Sequence[str] = (), replace_changed_export: bool = False) -> None:
        super().__init__(path, arguments, kind=kind, log_name=LOG_FILE, overwrite=overwrite, extendable=extendable,
                         replace_changed_export=replace_changed_export)

    def check(self) -> dict[str, dict[str, Any]]:  # type: ignore[override]
        """Validate the folder without writing anything; return the logged records by :func:`config_key`."""
        out = {}
        for n, rec in enumerate(super().check(), 1):
            try:
                out[config_key(rec["config"])] = rec
            except (KeyError, TypeError) as e:
                raise ValueError(f"{self.log_path}:{n} is not a candidate record ({e}); {OVERWRITE_HINT} to start "
                                 "afresh") from e
        return out
