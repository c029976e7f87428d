"""CLI sub-commands, one module per area (see :mod:`timm_nas.cli`)."""
