"""Opening a dataset for a search or a training run: timm's ``create_dataset``, with the errors a user can act on.

timm and torchvision report a missing or empty dataset with a ``RuntimeError`` deep in their readers ("Found 0
images in subfolders of ...", "Dataset not found or corrupted"); :func:`open_dataset` turns each into one
``ValueError`` / ``FileNotFoundError`` that names the option, the folder, the split and what to do.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["open_dataset", "dataset_num_classes"]


def open_dataset(name: str, root: str | os.PathLike, split: str, *, is_training: bool = False, download: bool = False,
                 option: str = "--data-dir", **kwargs: Any) -> Any:
    """``timm.data.create_dataset(name, root=root, split=split, is_training=..., download=...)``, checked.

    Args:
        name: timm dataset name (``''``: a folder of class folders; ``'torch/cifar10'``, ...).
        root: the dataset root.
        split: the split (a sub-folder of ``root`` for image folders, when it exists).
        is_training, download: passed to timm.
        option: the command-line option that gave ``root`` (for the messages).
        kwargs: more arguments of ``create_dataset``.

    Raises:
        FileNotFoundError: ``root`` does not exist (and nothing is to be downloaded).
        ValueError: the dataset is not there, or holds no images.
    """
    from timm.data import create_dataset

    path = Path(root).expanduser()
    if not path.exists() and not download:
        hint = " (add --download to let torchvision fetch it)" if name.startswith("torch/") else ""
        raise FileNotFoundError(f"{option} {path} does not exist{hint}")
    what = f"dataset {name!r}" if name else "an image folder (one sub-folder per class)"
    try:
        ds = create_dataset(name, root=str(path), split=split, is_training=is_training, download=download, **kwargs)
    except (RuntimeError, FileNotFoundError) as e:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if name.startswith("torch/") and not download:
            raise ValueError(f"{option} {path} does not hold {what} ({text}); add --download to fetch it, or give "
                             "--dataset '' for a folder of class folders") from e
        raise ValueError(f"cannot read {what} from {option} {path} (split {split!r}): {text}") from e
    if len(ds) == 0:
        raise ValueError(f"{option} {path} holds no images for split {split!r} ({what})")
    return ds


def dataset_num_classes(dataset: Any) -> int:
    """Number of classes of a torchvision / timm dataset (``classes``, ``class_to_idx``, the reader's
    ``class_to_idx`` or ``targets``)."""
    for attr in ("classes", "class_to_idx"):
        value = getattr(dataset, attr, None)
        if value:
            return len(value)
    class_to_idx = getattr(getattr(dataset, "reader", None), "class_to_idx", None)  # timm's ImageDataset
    if class_to_idx:
        return len(class_to_idx)
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets):
        return int(max(int(t) for t in targets)) + 1
    raise ValueError("cannot tell the number of classes of the dataset; pass num_classes=")
