"""Atomic file writing: the one way timm-nas replaces a file or a folder.

A file is written to a temporary name beside its destination and renamed into place (``os.replace``, atomic on
POSIX and Windows), so a reader, an interrupted process or a full disk never leaves a half-written file. The file
gets ordinary permissions (``0o666`` less the user's umask, as ``open()`` would give): the temporary file's private
mode is not carried over.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes", "atomic_folder", "sha256_file"]


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Replace the file ``path`` with what ``write(tmp)`` writes to a temporary path beside it.

    ``write`` may call any writer that takes a path (``torch.save``, ``safetensors.torch.save_file``, ...). On any
    error, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = _temporary(path)
    try:
        write(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Replace the file ``path`` with ``text`` (UTF-8), never half-written."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace the file ``path`` with ``data``, never half-written."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_folder(folder: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a fresh folder beside ``folder``, then rename it to ``folder`` (replacing an existing
    one only once the new one is complete). On any error the partial folder is removed and ``folder`` is left as
    it was."""
    folder = Path(folder)
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{folder.name}.partial-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        write(tmp)
        if folder.exists():
            old = parent / f".{folder.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(folder, old)
            try:
                os.replace(tmp, folder)
            except BaseException:
                os.replace(old, folder)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
