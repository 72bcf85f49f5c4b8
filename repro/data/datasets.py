"""Datasets through their real loaders; which folder, class and URL belong to which dataset is
the catalog's (repro/formats/catalog.py).

- cifar10 / cifar100 / stl10: torchvision's classes on the original files under the root; STL-10's
  `unlabeled` images carry label -1, and `train+unlabeled` is the paper's pretraining set.
- imagefolder: any `<root>/<split>/<class>/<image>` tree (ImageNet's layout).
- digits: scikit-learn's bundled 8x8 handwritten digits (ships inside the package, so the demo
  runs offline anywhere), with a fixed train/test split of this project's.

torchvision downloads CIFAR/STL-10 when `download` is on and the network allows; otherwise a
one-line error says where to put the files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import datasets as tv_datasets

from repro.cli import UserError
from repro.formats.catalog import DatasetRecord, dataset_record
from repro.formats.order import subset_positions


class Digits(Dataset):
    """scikit-learn's digits as 8x8 grayscale PIL images (values 0..16 scaled to 0..255)."""

    TRAIN_SIZE = dataset_record("digits").split_sizes["train"]

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


def _torchvision_dataset(record: DatasetRecord, root: Path, split: str, transform, download: bool) -> Dataset:
    cls = getattr(tv_datasets, record.torchvision_class)
    name, folder, url = record.name, record.source_folder, record.download_url
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
    record = dataset_record(dataset)
    if dataset == "imagefolder":
        folder = Path(root) / split
        return len([p for p in folder.iterdir() if p.is_dir()]) if folder.is_dir() else 0
    return record.num_classes


def build_dataset(dataset: str, root: str | Path, split: str, transform=None, *,
                  download: bool = False, subset: int = 0) -> Dataset:
    """The dataset `dataset` / `split` yielding (transform(image), label); label -1 = unlabelled.

    subset > 0 keeps a fixed random subset of that many images (repro.formats.order.subset_positions:
    the images a converter's --subset writes).
    """
    record = dataset_record(dataset)
    root = Path(root)
    if record.splits and split not in record.splits:
        raise UserError(f"dataset {dataset} has no split {split!r}: choose one of {', '.join(record.splits)}")
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
        data = _torchvision_dataset(record, root, split, transform, download)
    if subset and subset < len(data):
        data = Subset(data, subset_positions(len(data), subset).tolist())
    return data
