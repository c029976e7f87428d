"""spvit models (work in progress)."""
