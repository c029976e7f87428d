"""`timm-nas` sub-commands: models (none yet)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, search: argparse._SubParsersAction) -> None:
    """Add this module's parsers (none yet)."""
