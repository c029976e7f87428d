"""argparse ``type=`` converters shared by the sub-commands: a bad value is a one-line usage error."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["count", "json_object", "positive_int", "space_arg"]


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
