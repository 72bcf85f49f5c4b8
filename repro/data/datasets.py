"""Datasets through their real loaders.

- cifar10 / cifar100: torchvision's classes on the original python-pickle files
  (`<root>/cifar-10-batches-py`, `<root>/cifar-100-python`).
- stl10: torchvision's class on the original binary files (`<root>/stl10_binary`); splits
  `train`, `test`, `unlabeled` (label -1) and `train+unlabeled` (the paper's pretraining set).
- imagefolder: any `<root>/<split>/<class>/<image>` tree (ImageNet's layout).
- digits: scikit-learn's bundled 8x8 handwritten digits (1,797 images, ships inside the package,
  so the demo runs offline anywhere); a fixed 1,297 / 500 train/test split.

torchvision downloads CIFAR/STL-10 when `download` is on and the network allows; otherwise a
one-line error says where to put the files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import datasets as tv_datasets

from repro.cli import UserError


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    image_size: int       # native training resolution
    cifar_stem: bool      # the small-image ResNet stem
    splits: tuple[str, ...]


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(10, 32, True, ("train", "test")),
    "cifar100": DatasetInfo(100, 32, True, ("train", "test")),
    "stl10": DatasetInfo(10, 96, False, ("train", "test", "unlabeled", "train+unlabeled")),
    "imagefolder": DatasetInfo(0, 224, False, ()),  # classes and splits come from the folder tree
    "digits": DatasetInfo(10, 8, True, ("train", "test")),
}

_TORCHVISION = {
    "cifar10": (tv_datasets.CIFAR10, "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": (tv_datasets.CIFAR100, "cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    "stl10": (tv_datasets.STL10, "stl10_binary", "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"),
}


class Digits(Dataset):
    """scikit-learn's digits as 8x8 grayscale PIL images (values 0..16 scaled to 0..255)."""

    TRAIN_SIZE = 1297

    def __init__(self, split: str, transform=None):
        from sklearn.datasets import load_digits

        digits = load_digits()
        order = np.random.default_rng(0).permutation(len(digits.target))
        keep = order[: self.TRAIN_SIZE] if split == "train" else order[self.TRAIN_SIZE:]
        self.images = (digits.images[keep] * (255.0 / 16.0)).round().astype(np.uint8)
        self.targets = digits.target[keep].astype(np.int64).tolist()
        self.transform = transform
        self.classes = [str(i) for i in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index], mode="L")
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


def _torchvision_dataset(name: str, root: Path, split: str, transform, download: bool) -> Dataset:
    cls, folder, url = _TORCHVISION[name]
    kwargs = {"split": split} if name == "stl10" else {"train": split == "train"}

    def make(download_now: bool):
        return cls(str(root), transform=transform, download=download_now, **kwargs)

    try:
        return make(False)
    except RuntimeError:
        pass  # files absent or corrupt
    if download:
        try:
            return make(True)
        except Exception as err:  # no network, refused, truncated...: say where the files go
            reason = f" (download failed: {type(err).__name__})"
    else:
        reason = ""
    raise UserError(
        f"{name} not found under '{root / folder}'{reason}: extract {url} into '{root}' "
        f"(or set data.root / DATA_DIR to the folder that holds '{folder}')")


def num_classes(dataset: str, root: str | Path, split: str = "train") -> int:
    info = DATASETS[dataset]
    if dataset == "imagefolder":
        folder = Path(root) / split
        return len([p for p in folder.iterdir() if p.is_dir()]) if folder.is_dir() else 0
    return info.num_classes


def build_dataset(dataset: str, root: str | Path, split: str, transform=None, *,
                  download: bool = False, subset: int = 0) -> Dataset:
    """The dataset `dataset` / `split` yielding (transform(image), label); label -1 = unlabelled.

    subset > 0 keeps a fixed random subset of that many images (seed 0, independent of the run's
    seed, so every method sees the same images).
    """
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    info = DATASETS[dataset]
    root = Path(root)
    if info.splits and split not in info.splits:
        raise UserError(f"dataset {dataset} has no split {split!r}: choose one of {', '.join(info.splits)}")
    if dataset == "digits":
        data = Digits(split, transform)
    elif dataset == "imagefolder":
        folder = root / split
        if not folder.is_dir():
            raise UserError(f"image folder '{folder}' not found: point data.root (DATA_DIR) at a folder "
                            f"holding '{split}/<class>/<image>'")
        try:
            data = tv_datasets.ImageFolder(str(folder), transform=transform)
        except (FileNotFoundError, RuntimeError) as err:
            raise UserError(f"image folder '{folder}' holds no images in class sub-folders ({err})") from None
    else:
        data = _torchvision_dataset(dataset, root, split, transform, download)
    if subset and subset < len(data):
        generator = torch.Generator().manual_seed(0)
        indices = torch.randperm(len(data), generator=generator)[:subset].sort().values.tolist()
        data = Subset(data, indices)
    return data
