"""argparse helpers shared by the sub-commands: ``type=`` converters (a bad value is a one-line usage error), the
``--model-args`` reader, and deprecated aliases of renamed options."""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["count", "json_object", "positive_int", "space_arg", "model_args", "kv_pairs", "DeprecatedAlias",
           "add_renamed", "HelpFormatter", "device_arg", "create_model_checked", "add_run_folder_options"]


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _int_at_least(text, 1, "a positive integer")


def count(text: str) -> int:
    """An integer >= 0."""
    return _int_at_least(text, 0, "a non-negative integer")


def device_arg(text: str) -> str:
    """A ``--device`` value torch understands and this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; e.g. cpu, cuda, cuda:1, mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine (torch "
                                             f"{torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA "
                                             "device(s)")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine; use --device cpu")
    return text


def create_model_checked(name: str, pretrained: bool = False, **kwargs: Any) -> Any:
    """``timm_nas.create_model`` for a command: an unknown name, a model without released weights and a download
    that fails (offline) each become one error line saying what to do."""
    import difflib

    import timm

    from .._factory import create_model

    if ":" not in name and not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ValueError(f"unknown model {name!r}" + (f"; did you mean {close}?" if close else "") +
                         " (timm-nas zoo lists the published models)")
    try:
        return create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as e:
        if "No pretrained weights exist" not in str(e):
            raise
        family = name.split(".")[0].rsplit("_", 1)[0]
        with_weights = sorted({n.split(".")[0] for n in timm.list_models(f"{family}*", pretrained=True)})
        raise ValueError(f"{name} has no released weights" + (f"; models with weights: {with_weights}" if
                                                               with_weights else "") +
                         "; or load a file with --checkpoint") from None
    except OSError as e:  # urllib's URLError, huggingface_hub's connection and cache errors
        raise OSError(f"cannot download the weights of {name} ({type(e).__name__}: {e}); without network access, "
                      "download the file elsewhere and pass --checkpoint FILE") from e


def add_run_folder_options(p: argparse.ArgumentParser) -> None:
    """The run-folder options of a training search (``timm_nas.search.log``): ``--overwrite`` (old spelling
    ``--no-resume``), ``--overwrite-export`` and ``--onnx``."""
    p.add_argument("--overwrite", "--no-resume", dest="overwrite", action="store_true",
                   help="discard a previous run in --out (its outputs only) and start afresh")
    p.add_argument("--overwrite-export", action="store_true",
                   help="replace --out/export even if it holds files the search did not write (refused otherwise)")
    p.add_argument("--onnx", action="store_true", help="also export model.onnx (pip install 'timm-nas[deploy]')")


def json_object(value: str | None, what: str) -> dict[str, Any]:
    """A JSON object given inline (``'{...}'``) or as the path of a ``.json`` file; ``{}`` when ``value`` is None.
    ``what`` names the option in the error messages."""
    if value is None:
        return {}
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{what}: {value!r} is neither a JSON object nor an existing .json file")
        text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def space_arg(text: str, what: str = "--space") -> str | dict[str, Any]:
    """A search-space option: a preset name (returned as given, stripped), a JSON object, or a ``.json`` file
    holding one. The family's ``Space.resolve`` turns either form into a space."""
    stripped = text.strip()
    if stripped.startswith("{") or stripped.endswith(".json"):
        if stripped.endswith(".json") and not Path(stripped).expanduser().is_file():
            raise FileNotFoundError(f"{what} file not found: {Path(stripped).expanduser()}")
        return json_object(stripped, what)
    return stripped


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with each option's default and the description / epilog (the command's example) printed as written.

    The default is added once: not when the help already states it, and not for required options, flags and
    options without a default (``None`` / empty)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or action.required or action.default in (None, False, "", argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def model_args(value: str | dict[str, Any] | None, what: str = "--model-args") -> dict[str, Any]:
    """The ``--model-args`` option: model arguments as a JSON object given inline or as a ``.json`` file holding one
    (``{}`` when absent). A dict (what a deprecated ``k=v`` alias stored) passes through."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    stripped = value.strip()
    if not stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            pass  # not JSON: a file name
        else:
            raise ValueError(f"{what} must be a JSON object of model arguments (or a .json file holding one), e.g. "
                             f"'{{\"patch_size\": 8}}'; got a JSON {type(data).__name__}: {stripped!r}")
    return json_object(stripped, what)


def kv_pairs(values: Sequence[str], what: str = "--model-kwargs") -> dict[str, Any]:
    """``k=v`` words as timm's ``train.py --model-kwargs`` reads them: values literal-evaluated, else strings."""
    out: dict[str, Any] = {}
    for word in values:
        if not word:
            continue
        key, sep, text = word.partition("=")
        if not sep or not key:
            raise argparse.ArgumentError(None, f"{what}: expected key=value, got {word!r}")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


class DeprecatedAlias(argparse.Action):
    """The old spelling of a renamed option: stores into the new option's ``dest`` and prints one deprecation line
    to stderr. Keyword arguments: ``new`` (the new spelling), ``parse`` (optional: turns the given values into the
    stored value, e.g. :func:`kv_pairs`)."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str,
                 parse: Callable[[Any], Any] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("help", argparse.SUPPRESS)
        kwargs.setdefault("default", argparse.SUPPRESS)  # the new option sets the default
        super().__init__(option_strings, dest, **kwargs)
        self.new = new
        self.parse = parse

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated and will be removed in the next release; "
              f"use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, self.parse(values) if self.parse is not None else values)


def add_renamed(parser: Any, new: str, old: str, *, required: bool = False, old_kwargs: dict[str, Any] | None = None,
                **kwargs: Any) -> argparse.Action:
    """Add option ``new`` (``add_argument`` keyword arguments in ``kwargs``) and its deprecated spelling ``old``.

    Both share one ``dest`` and exclude each other; ``required`` asks for one of them. ``old_kwargs`` (e.g.
    ``nargs``, ``parse``) applies to the old spelling only, for an old form that reads its values differently.
    Returns the new option's action.
    """
    group = parser.add_mutually_exclusive_group(required=required)
    action = group.add_argument(new, **kwargs)
    alias = {k: kwargs[k] for k in ("type", "nargs", "metavar", "choices") if k in kwargs}
    alias.update(old_kwargs or {})
    group.add_argument(old, dest=action.dest, action=DeprecatedAlias, new=new, **alias)
    return action
