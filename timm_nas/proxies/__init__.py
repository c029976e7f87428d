"""proxies (see DESIGN.md)."""
