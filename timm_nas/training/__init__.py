"""Training and evaluating supernets with timm's own scripts.

Supernets train with timm's ``train.py`` unchanged (``--device-modules timm_nas``; see ``docs/training.md``). This
package holds what train.py does not: reading its checkpoints back into the right supernet, and inherited-weight
evaluation of any subnet on an image folder through timm's data pipeline (``timm-nas eval-subnet``). Running
``validate.py`` and the other timm scripts with our models registered is :mod:`timm_nas.launch`.
"""
from .checkpoint import DATA_ARG_KEYS, TrainCheckpoint, create_model_from_checkpoint, read_train_checkpoint
from .evaluate import create_eval_loader, evaluate_subnet, parse_subnet, subnet_config

__all__ = [
    "DATA_ARG_KEYS",
    "TrainCheckpoint",
    "create_eval_loader",
    "create_model_from_checkpoint",
    "evaluate_subnet",
    "parse_subnet",
    "read_train_checkpoint",
    "subnet_config",
]
