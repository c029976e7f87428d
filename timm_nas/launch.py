"""Run one of timm's scripts with timm-nas's models registered.

timm has no plugin discovery: a model exists only once its module is imported. timm's ``train.py`` can import
plugins itself (``--device-modules timm_nas``), but ``validate.py``, ``inference.py`` and ``benchmark.py`` have no
such flag. This launcher imports :mod:`timm_nas` and then runs the given script as ``__main__`` with its arguments,
exactly as ``python <script> <args>`` would (``sys.argv``, ``sys.path[0]`` = the script's folder)::

    python -m timm_nas.launch ~/pytorch-image-models/validate.py --model autoformer_supernet_tiny --checkpoint ...
    timm-nas run-script ~/pytorch-image-models/validate.py ...     # the same through the CLI
    timm-nas validate ~/pytorch-image-models ...                  # a checkout folder: its validate.py
    torchrun --nproc_per_node 8 -m timm_nas.launch ~/pytorch-image-models/train.py ...

The scripts are not part of the timm wheel: take them from a checkout of https://github.com/huggingface/pytorch-image-models
at the tag of the installed timm version (``git checkout v$(python -c "import timm; print(timm.__version__)")``).
timm-nas never ships a copy of them.
"""
from __future__ import annotations

import logging
import os
import runpy
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["TIMM_SCRIPTS", "resolve_script", "run_script", "main"]

_logger = logging.getLogger(__name__)

#: The scripts at the top of a timm checkout that build models by name.
TIMM_SCRIPTS = ("train.py", "validate.py", "inference.py", "benchmark.py")

_TIMM_REPO = "https://github.com/huggingface/pytorch-image-models"


def resolve_script(script: str | os.PathLike, default_name: str | None = None) -> Path:
    """The script to run: ``script`` itself, or ``default_name`` inside ``script`` when it is a folder.

    Args:
        script: a ``.py`` file, or (with ``default_name``) a timm checkout folder.
        default_name: the file to look for inside a folder, e.g. ``'validate.py'``.

    Raises:
        FileNotFoundError: saying where timm's scripts come from.
    """
    path = Path(script).expanduser()
    if path.is_dir() and default_name is not None:
        path = path / default_name
    if not path.is_file():
        import timm

        name = default_name or path.name or "the script"
        raise FileNotFoundError(
            f"{path} does not exist. timm's {name} is not part of the timm wheel: clone {_TIMM_REPO} "
            f"(git checkout v{timm.__version__}, the installed version) and pass the path of {name} or of the "
            "checkout folder")
    if path.suffix != ".py":
        raise ValueError(f"{path} is not a Python script (.py)")
    return path.resolve()


def run_script(script: str | os.PathLike, argv: Sequence[str] = (), default_name: str | None = None) -> int:
    """Import :mod:`timm_nas` (registering its models with timm), then run ``script`` as ``__main__``.

    ``sys.argv`` is ``[script, *argv]``, the script's folder is first on ``sys.path`` and the root logger has no
    handlers (the script configures logging) while it runs; all three are restored afterwards.

    Args:
        script: the script (or, with ``default_name``, a timm checkout folder).
        argv: the script's command-line arguments.
        default_name: the script's file name inside a folder (e.g. ``'validate.py'``).

    Returns:
        The script's exit status (0 when it returns normally; ``SystemExit`` codes are passed on).
    """
    path = resolve_script(script, default_name)
    import timm_nas  # noqa: F401  (registers the models with timm)

    _logger.info("running %s with timm-nas models registered: %s", path, " ".join(argv))
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(path), *argv]
    sys.path.insert(0, str(path.parent))
    # the script sets up logging itself (timm's scripts call setup_default_logging): without this, a handler left
    # by a caller (e.g. the timm-nas command's basicConfig) would print every record twice
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers.clear()
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as e:  # argparse errors, sys.exit(...) at the end of a script
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return e.code
        _logger.error("%s exited: %s", path.name, e.code)
        return 1
    finally:
        sys.argv[:] = saved_argv
        sys.path[:] = saved_path
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m timm_nas.launch SCRIPT [ARGS ...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stderr.write(f"usage: python -m timm_nas.launch SCRIPT [ARGS ...]\n\n{__doc__}")
        return 0 if argv else 2
    try:
        path = resolve_script(argv[0])
    except (FileNotFoundError, ValueError) as e:  # errors inside the script keep their tracebacks
        sys.stderr.write(f"timm_nas.launch: error: {e}\n")
        return 2
    return run_script(path, argv[1:])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
