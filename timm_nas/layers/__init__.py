"""layers (see DESIGN.md)."""
