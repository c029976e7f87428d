"""timm models of every family. Importing this package registers them with timm (as timm's own models do)."""
from . import autoformer, darts, s3, spvit  # noqa: F401  (registration is an import side effect)
from . import nb201  # noqa: F401
