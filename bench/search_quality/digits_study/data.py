"""scikit-learn's bundled handwritten digits as a timm-compatible dataset.

The data: 1,797 grey-scale 8x8 images of the digits 0-9 with pixel values 0-16 (the UCI "Optical Recognition of
Handwritten Digits" test set, shipped inside scikit-learn as ``sklearn.datasets.load_digits``; no download).

What this module adds:

* a fixed **stratified split** into train / val / test (60 / 20 / 20 %, scikit-learn's ``train_test_split`` with a
  fixed ``random_state``; the same split on every machine and every run);
* **upsampling** to ``img_size`` x ``img_size`` (bilinear, 32 by default) and 3 channels, quantised to 8 bits, so
  the images are ordinary RGB images;
* :class:`DigitsDataset`, a map-style dataset that behaves like timm's ``ImageDataset``: it yields ``(PIL image,
  class index)`` through a settable ``transform`` attribute, so ``timm.data.create_loader`` works on it unchanged;
* :func:`write_image_folder`, which writes the split as an ImageFolder tree (``root/{train,val,test}/<digit>/*.png``)
  for the ``timm-nas search ... --data-dir`` commands and timm's ``train.py`` / ``validate.py``;
* :meth:`DigitsData.tensors`, the same images as normalised tensors in memory (the fast path the study's training
  loops use; numerically equal to what ``create_loader``'s eval transform produces from :class:`DigitsDataset`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

__all__ = [
    "SPLITS",
    "SPLIT_FRACTIONS",
    "SPLIT_SEED",
    "NUM_CLASSES",
    "DigitsData",
    "DigitsDataset",
    "load_digits_data",
    "write_image_folder",
]

#: Split names, in the order the images are assigned.
SPLITS = ("train", "val", "test")
#: Fractions of the 1,797 images per split (stratified by class).
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
#: ``random_state`` of the split: fixed, so every run and machine sees the same split.
SPLIT_SEED = 0
#: The digits 0-9.
NUM_CLASSES = 10
#: Largest pixel value of the original 8x8 images (each pixel counts the set pixels of a 4x4 block of a 32x32 bitmap).
_MAX_PIXEL = 16.0


def _require_sklearn() -> Any:
    try:
        import sklearn.datasets
        import sklearn.model_selection
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("the study needs scikit-learn: pip install 'timm-nas[study]'") from e
    return sklearn


@dataclasses.dataclass(frozen=True)
class DigitsData:
    """The split, upsampled digits.

    Attributes:
        images: ``split -> uint8 tensor (N, 3, img_size, img_size)``.
        targets: ``split -> int64 tensor (N,)``.
        indices: ``split -> list of indices`` into ``sklearn.datasets.load_digits()`` (provenance of every image).
        img_size: side of the upsampled images.
        mean, std: per-channel statistics of the training split in [0, 1] units (the normalisation of every split).
    """

    images: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]
    indices: dict[str, list[int]]
    img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __len__(self) -> int:
        return sum(len(t) for t in self.targets.values())

    def _check(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not allowed; allowed values: {list(SPLITS)}")

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, targets)`` of a split: float32 ``(N, 3, S, S)`` normalised with :attr:`mean` / :attr:`std`,
        and int64 labels. Equal to timm's eval transform (``ToTensor`` + ``Normalize``) applied to the PIL
        images of :class:`DigitsDataset`."""
        self._check(split)
        x = self.images[split].to(torch.float32) / 255.0
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std, self.targets[split].clone()

    def counts(self) -> dict[str, int]:
        """Images per split."""
        return {s: int(len(self.targets[s])) for s in SPLITS}

    def data_config(self) -> dict[str, Any]:
        """A timm data config (``input_size``, ``mean``, ``std``, ``interpolation``, ``crop_pct``) for
        ``timm.data.create_loader`` / ``create_transform`` on these images."""
        return {"input_size": (3, self.img_size, self.img_size), "mean": self.mean, "std": self.std,
                "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center"}

    def describe(self) -> dict[str, Any]:
        """JSON-native description of the data (for reports and search records)."""
        return {"dataset": "sklearn.datasets.load_digits", "images": len(self), "classes": NUM_CLASSES,
                "split": dict(zip(SPLITS, SPLIT_FRACTIONS)), "split_seed": SPLIT_SEED, "stratified": True,
                "counts": self.counts(), "img_size": self.img_size, "channels": 3,
                "upsampling": "bilinear from 8x8, quantised to uint8",
                "mean": list(self.mean), "std": list(self.std)}


def _upsample(raw: torch.Tensor, img_size: int) -> torch.Tensor:
    """``(N, 8, 8)`` values 0-16 -> uint8 ``(N, 3, S, S)``."""
    x = (raw.to(torch.float32) / _MAX_PIXEL).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    if img_size != x.shape[-1]:
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    x = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return x.expand(-1, 3, -1, -1).contiguous()  # (N, 3, S, S): grey replicated to RGB


def load_digits_data(img_size: int = 32) -> DigitsData:
    """Load the digits, split them (fixed, stratified) and upsample them to ``img_size``.

    Args:
        img_size: side of the output images (8 keeps the original resolution).

    Raises:
        ValueError: if ``img_size`` is smaller than 8.
        ImportError: without scikit-learn.
    """
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 8:
        raise ValueError(f"img_size must be an int of at least 8 (the digits are 8x8), got {img_size!r}")
    sk = _require_sklearn()
    bunch = sk.datasets.load_digits()
    raw = torch.as_tensor(bunch.images, dtype=torch.float32)  # (1797, 8, 8)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    all_idx = list(range(len(labels)))
    frac_train, frac_val, frac_test = SPLIT_FRACTIONS
    split = sk.model_selection.train_test_split
    train_idx, rest = split(all_idx, train_size=frac_train, stratify=labels.numpy(), random_state=SPLIT_SEED)
    rest_labels = labels[torch.as_tensor(rest)].numpy()
    val_idx, test_idx = split(rest, train_size=frac_val / (frac_val + frac_test), stratify=rest_labels,
                              random_state=SPLIT_SEED)
    indices = {"train": [int(i) for i in train_idx], "val": [int(i) for i in val_idx],
               "test": [int(i) for i in test_idx]}
    up = _upsample(raw, img_size)
    images = {s: up[torch.as_tensor(indices[s])] for s in SPLITS}
    targets = {s: labels[torch.as_tensor(indices[s])] for s in SPLITS}
    train = images["train"].to(torch.float64) / 255.0
    mean = tuple(float(v) for v in train.mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in train.std(dim=(0, 2, 3)))
    return DigitsData(images, targets, indices, img_size, mean, std)  # type: ignore[arg-type]


class DigitsDataset(torch.utils.data.Dataset):
    """One split of the digits as a timm-style image dataset.

    Like timm's ``ImageDataset``, item ``i`` is ``(transform(PIL image), target_transform(label))`` and
    ``transform`` is a plain attribute, which ``timm.data.create_loader`` sets::

        data = load_digits_data(32)
        ds = DigitsDataset(data, 'val')
        loader = timm.data.create_loader(ds, input_size=(3, 32, 32), batch_size=64, use_prefetcher=False,
                                         device=torch.device('cpu'), **{k: v for k, v in
                                         data.data_config().items() if k in ('mean', 'std', 'crop_pct')})

    Args:
        data: the loaded digits (default: :func:`load_digits_data` at 32 px).
        split: ``'train'``, ``'val'`` or ``'test'``.
        transform: applied to the PIL image (default: none, the PIL image is returned).
        target_transform: applied to the class index.
    """

    def __init__(self, data: DigitsData | None = None, split: str = "train", *,
                 transform: Callable | None = None, target_transform: Callable | None = None) -> None:
        self.data = data if data is not None else load_digits_data()
        self.data._check(split)
        self.split = split
        self.transform = transform
        self.target_transform = target_transform
        self._images = self.data.images[split]
        self.targets = [int(t) for t in self.data.targets[split]]
        self.classes = [str(c) for c in range(NUM_CLASSES)]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        from PIL import Image

        img = Image.fromarray(self._images[index].permute(1, 2, 0).numpy())  # (H, W, 3) uint8: RGB
        target: Any = self.targets[index]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def filename(self, index: int, basename: bool = False, absolute: bool = False) -> str:
        """A stable name for image ``index`` (timm datasets offer ``filename``): its index in ``load_digits``."""
        name = f"digits_{self.data.indices[self.split][index]:04d}.png"
        return name if basename else f"{self.split}/{self.targets[index]}/{name}"

    def filenames(self, basename: bool = False, absolute: bool = False) -> list[str]:
        return [self.filename(i, basename) for i in range(len(self))]


def write_image_folder(root: str | os.PathLike, data: DigitsData | None = None) -> Path:
    """Write the split as an ImageFolder tree: ``root/{train,val,test}/<digit>/digits_<index>.png``.

    ``timm.data.create_dataset('', root=root, split='val')`` then reads the validation split with class ``k`` at
    index ``k`` (the folders sort as ``0`` ... ``9``), and ``timm-nas search evolution --data-dir root --split val``
    scores candidates on it. A ``digits.json`` beside the folders describes the split. Existing files of the same
    names are overwritten; other files are left alone.

    Args:
        root: the folder to write (created if needed).
        data: the loaded digits (default: :func:`load_digits_data` at 32 px).

    Returns:
        ``root`` as a ``Path``.
    """
    data = data if data is not None else load_digits_data()
    root = Path(root)
    for split in SPLITS:
        ds = DigitsDataset(data, split)
        for c in ds.classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(len(ds)):
            img, _ = ds[i]  # a PIL image: the dataset has no transform
            img.save(root / ds.filename(i))
    (root / "digits.json").write_text(json.dumps(data.describe(), indent=1) + "\n", encoding="utf-8")
    return root
