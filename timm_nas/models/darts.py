"""darts models (work in progress)."""
