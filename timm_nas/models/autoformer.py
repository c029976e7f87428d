"""autoformer models (work in progress)."""
