"""The search folder: the run's arguments, the resumable candidate log, and the result files.

Layout of an output folder::

    run.json           the arguments that define the search (strategy, space, scorer, constraints, seed, ...)
    candidates.jsonl   one JSON record per scored candidate, appended (and flushed) as each one finishes
    best.json          the best candidate                      \\
    pareto.json        Pareto fronts: score vs params / MACs    > written at the end
    pareto.png         the same as a plot (needs matplotlib)   /
    export/            the best subnet as a Hub-ready folder (the CLI)

Resuming: a search started again with the same folder and the same arguments replays its strategy with the
logged scores instead of scoring again (strategies are deterministic functions of the seed and the scores), so
it re-scores nothing and ends exactly where an uninterrupted run ends. A folder made with different arguments is
refused before anything is written. A record cut short by a kill (a partial last line) is dropped.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from .._io import atomic_write_text

__all__ = ["SearchFolder", "config_key", "atomic_write_text", "RUN_FILE", "LOG_FILE", "OUTPUTS"]

RUN_FILE = "run.json"
LOG_FILE = "candidates.jsonl"
#: Every file or folder a search writes (``overwrite=True`` removes exactly these).
OUTPUTS = (RUN_FILE, LOG_FILE, "best.json", "pareto.json", "pareto.png", "export")
#: Format version of run.json / candidates.jsonl.
FORMAT = 1
#: How to discard a previous search, in the library's words and the CLI's (its errors reach both).
OVERWRITE_HINT = "pass overwrite=True (--overwrite)"


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


class SearchFolder:
    """An output folder of one search.

    Args:
        path: the folder (created on :meth:`start` if missing).
        arguments: everything that defines the search's result, JSON-native; compared on resume.
        overwrite: discard an existing search in the folder instead of resuming it.
    """

    def __init__(self, path: str | os.PathLike, arguments: Mapping[str, Any], *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.arguments = _normalise(dict(arguments))
        self.overwrite = overwrite
        self._log_handle: Any = None
        self._good_bytes: int | None = None

    # ------------------------------------------------------------------------------------------ checking
    def check(self) -> dict[str, dict[str, Any]]:
        """Validate the folder without writing anything; return the logged records by :func:`config_key`.

        Raises:
            ValueError: if the folder holds a search made with different arguments, or other files, and
                ``overwrite`` is off; or if its log is unreadable.
        """
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"output path {self.path} exists and is not a folder")
        if not self.path.is_dir() or self.overwrite:
            return {}
        run = self.path / RUN_FILE
        if not run.is_file():
            if any(self.path.iterdir()):
                raise ValueError(f"output folder {self.path} is not empty and holds no search ({RUN_FILE}); "
                                 f"choose another output folder, or {OVERWRITE_HINT} to replace the search outputs "
                                 "there")
            return {}
        try:
            previous = json.loads(run.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read {run}: {e}; {OVERWRITE_HINT} to start the search afresh") from e
        old_args = previous.get("arguments", {}) if isinstance(previous, dict) else {}
        if old_args != self.arguments:
            diff = "; ".join(_diff(old_args, self.arguments)[:6])
            raise ValueError(f"resume folder {self.path} was made with different arguments ({diff}); use another "
                             f"output folder, rerun with the same arguments to resume, or {OVERWRITE_HINT} to start "
                             "afresh")
        return self._read_log()

    def _read_log(self) -> dict[str, dict[str, Any]]:
        path = self.path / LOG_FILE
        records: dict[str, dict[str, Any]] = {}
        if not path.is_file():
            self._good_bytes = 0
            return records
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1  # bytes after the last newline: a record cut short by a kill
        self._good_bytes = end
        for n, line in enumerate(data[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                records[config_key(rec["config"])] = rec
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n} is not a candidate record ({e}); {OVERWRITE_HINT} to start afresh") from e
        return records

    # ------------------------------------------------------------------------------------------- writing
    def start(self) -> None:
        """Create the folder, record the arguments (new search) and open the log for appending."""
        if self.overwrite and self.path.is_dir():
            for name in OUTPUTS:
                target = self.path / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            self._good_bytes = 0
        self.path.mkdir(parents=True, exist_ok=True)
        run = self.path / RUN_FILE
        if not run.is_file():
            atomic_write_text(run, json.dumps({"format": FORMAT, "arguments": self.arguments}, indent=1) + "\n")
        log = self.path / LOG_FILE
        if self._good_bytes is not None and log.is_file() and log.stat().st_size > self._good_bytes:
            with open(log, "r+b") as f:  # drop a partial last record before appending
                f.truncate(self._good_bytes)
        self._log_handle = open(log, "a", encoding="utf-8")

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one candidate record and flush it to the OS (a killed process loses nothing it logged)."""
        if self._log_handle is None:
            raise RuntimeError("SearchFolder.start() must be called before append()")
        self._log_handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._log_handle.flush()

    def write_json(self, name: str, data: Any) -> Path:
        """Write ``name`` atomically as indented JSON."""
        path = self.path / name
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")
        return path

    def close(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> "SearchFolder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
