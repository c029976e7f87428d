"""S3 subnet and space (work in progress)."""
S3Subnet = S3Space = None  # placeholder until the S3 family lands
