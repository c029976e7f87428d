"""s3 models (work in progress)."""
