"""SPViT architecture config (work in progress)."""
SPViTArch = None  # placeholder until the SPViT family lands
