"""The ``timm-nas`` command (also ``python -m timm_nas``).

Sub-commands are contributed by the modules in :mod:`timm_nas.commands`; each module has a
``register(sub, search)`` function that adds its parsers to the top-level sub-parsers (``sub``) or to the
``timm-nas search ...`` group (``search``), and sets ``func`` on them to a handler returning an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from .version import __version__

__all__ = ["main", "build_parser", "UsageError"]

_COMMAND_MODULES = (
    "timm_nas.commands.models",
    "timm_nas.commands.hub",
    "timm_nas.commands.search",
    "timm_nas.commands.train",
    "timm_nas.commands.darts",
    "timm_nas.commands.spvit",
    "timm_nas.commands.s3",
    "timm_nas.commands.study",
    "timm_nas.commands.latency",
    "timm_nas.commands.zoo",
    "timm_nas.commands.proxy_bench",
)


class UsageError(Exception):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timm-nas",
        description="Neural Architecture Search for timm models: search, export, convert, train helpers.")
    parser.add_argument("--version", action="version", version=f"timm-nas {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    search_parser = sub.add_parser("search", help="run an architecture search")
    search = search_parser.add_subparsers(dest="strategy", metavar="STRATEGY")
    search_parser.set_defaults(func=lambda args: _missing(search_parser))
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub, search)
    return parser


def _missing(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "forward_unknown_args", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.unknown_args = unknown  # a command that forwards its arguments (`timm-nas study`) reads them here
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except (UsageError, ValueError, KeyError, OSError) as e:
        # OSError: a missing or unwritable file or folder, a full disk, an unreachable download (URLError)
        if args.debug:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        text = " ".join(str(msg).split())  # one line, whatever the message's source
        print(f"timm-nas: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("timm-nas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
