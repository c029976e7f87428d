"""DARTS genotypes and space (work in progress)."""
Genotype = DartsSpace = None  # placeholder until the DARTS family lands
