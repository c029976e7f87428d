"""Architecture configs and search spaces, one file per family (see ``base`` for the shared protocol)."""
from .base import ArchConfig, Space, as_generator, generator_for
from .autoformer import AutoFormerSpace, AutoFormerSubnet
from .darts import DartsSpace, Genotype
from .nb201 import NB201Cell, NB201Space
from .spvit import SPViTArch, SPViTSpace
from .s3 import S3Space, S3Subnet
