"""One record per dataset: every fact about a dataset lives here and nowhere else.

    from repro.formats.catalog import DATASETS, dataset_record
    record = dataset_record("cifar10")          # UserError naming the choices if unknown
    record.source_folder, record.download_url, record.converter_argv("/data", ["train"])

Image counts and archive sizes are copied from each dataset's own documentation page (the
`documentation` field; CIFAR: https://www.cs.toronto.edu/~kriz/cifar.html, STL-10:
https://cs.stanford.edu/~acoates/stl10/). Only the standard library is imported here, so the
experiment planner and the converters can read the catalog without loading torch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from repro.cli import UserError


def beton_name(dataset: str, split: str) -> str:
    """The FFCV file of one split: the converters write it, the loader looks for it."""
    return f"{dataset}_{split}.beton"


@dataclass(frozen=True)
class DatasetRecord:
    name: str                    # the value of data.dataset
    num_classes: int             # 0: counted from the folder tree (imagefolder)
    image_size: int              # native training side in pixels (images are square after cropping)
    cifar_stem: bool             # the small-image ResNet stem suits it
    splits: tuple[str, ...]      # (): the split folders under the root decide (imagefolder)
    split_sizes: Mapping[str, int] = field(default_factory=dict)  # images per split, documented
    train_split: str | None = None        # the split two-view pretraining reads
    torchvision_class: str | None = None  # name in torchvision.datasets that reads the source
    source_folder: str | None = None      # inside DATA_DIR; its presence means the source is there
    download_url: str | None = None       # the official archive (None: not downloadable)
    archive_size: str | None = None       # the archive's size as the documentation prints it
    raw_pixels: bool = False              # the release stores uncompressed pixels (sizes follow from the counts)
    documentation: str | None = None      # the page the sizes above come from
    converter_module: str | None = None   # data_prep module writing the FFCV files (None: none)
    converter_flags: tuple[str, ...] = ()  # its flags before --root

    def __post_init__(self):
        object.__setattr__(self, "split_sizes", MappingProxyType(dict(self.split_sizes)))

    @property
    def pixel_bytes(self) -> int | None:
        """A raw-pixel release's unpacked size (STL-10's binaries): the images of its splits x side^2 x 3
        bytes (a combined split such as train+unlabeled counted once); None for other releases."""
        if not self.raw_pixels:
            return None
        images = sum(count for split, count in self.split_sizes.items() if "+" not in split)
        return images * self.image_size ** 2 * 3

    @property
    def download_bytes(self) -> int | None:
        """Disk a download takes, the archive plus its unpacked copy: twice the documented archive size;
        without one (STL-10's page gives none), twice pixel_bytes (a compressed archive of raw pixels
        is smaller than they are). None when neither is known."""
        if self.archive_size:
            number, unit = re.fullmatch(r"\s*([\d.]+)\s*([KMG]B)\s*", self.archive_size).groups()
            return 2 * int(float(number) * {"KB": 1e3, "MB": 1e6, "GB": 1e9}[unit])
        return 2 * self.pixel_bytes if self.pixel_bytes else None

    @property
    def has_converter(self) -> bool:
        return self.converter_module is not None

    @property
    def ffcv_train_file(self) -> str | None:
        """The training split's FFCV file, relative to DATA_DIR (None: no converter)."""
        if not self.has_converter or self.train_split is None:
            return None
        return f"ffcv/{beton_name(self.name, self.train_split)}"

    def converter_argv(self, root: str | Path, splits: list[str] | tuple[str, ...] | None = None) -> list[str]:
        """The converter's arguments after the Python executable: ["-m", module, flags..., "--root",
        root, "--splits", ...]; no --splits writes every split."""
        if not self.has_converter:
            raise UserError(f"there is no FFCV converter for dataset {self.name}: use data.loader=torchvision")
        argv = ["-m", self.converter_module, *self.converter_flags, "--root", str(root)]
        return argv + ["--splits", *splits] if splits else argv


_CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
_STL10_PAGE = "https://cs.stanford.edu/~acoates/stl10/"

DATASETS: Mapping[str, DatasetRecord] = MappingProxyType({record.name: record for record in (
    DatasetRecord(
        "cifar10", num_classes=10, image_size=32, cifar_stem=True, splits=("train", "test"),
        split_sizes={"train": 50_000, "test": 10_000}, train_split="train",
        torchvision_class="CIFAR10", source_folder="cifar-10-batches-py",
        download_url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", archive_size="163 MB",
        documentation=_CIFAR_PAGE, converter_module="data_prep.write_cifar",
        converter_flags=("--dataset", "cifar10")),
    DatasetRecord(
        "cifar100", num_classes=100, image_size=32, cifar_stem=True, splits=("train", "test"),
        split_sizes={"train": 50_000, "test": 10_000}, train_split="train",
        torchvision_class="CIFAR100", source_folder="cifar-100-python",
        download_url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", archive_size="161 MB",
        documentation=_CIFAR_PAGE, converter_module="data_prep.write_cifar",
        converter_flags=("--dataset", "cifar100")),
    DatasetRecord(
        # train+unlabeled is the paper's pretraining set: train then unlabeled, torchvision's order.
        # The page states the counts (500 train / 800 test per class, 100,000 unlabeled) but, as
        # read, no archive size: none is written here; the binaries are raw 96x96x3 pixels.
        "stl10", num_classes=10, image_size=96, cifar_stem=False,
        splits=("train", "test", "unlabeled", "train+unlabeled"),
        split_sizes={"train": 5_000, "test": 8_000, "unlabeled": 100_000, "train+unlabeled": 105_000},
        train_split="train+unlabeled", torchvision_class="STL10", source_folder="stl10_binary",
        download_url="http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz", archive_size=None,
        raw_pixels=True, documentation=_STL10_PAGE, converter_module="data_prep.write_stl10"),
    DatasetRecord(
        # any DATA_DIR/<split>/<class>/<image> tree (ImageNet's layout): classes, splits and their
        # sizes come from the folders; downloaded by hand
        "imagefolder", num_classes=0, image_size=224, cifar_stem=False, splits=(), train_split="train",
        torchvision_class="ImageFolder", source_folder="train", converter_module="data_prep.write_imagefolder"),
    DatasetRecord(
        # scikit-learn's bundled 8x8 digits (1,797 images, scikit-learn's load_digits documentation);
        # the 1,297 / 500 split is this project's (repro.data.datasets.Digits)
        "digits", num_classes=10, image_size=8, cifar_stem=True, splits=("train", "test"),
        split_sizes={"train": 1_297, "test": 500}, train_split="train",
        documentation="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html"),
)})


def dataset_record(name: str) -> DatasetRecord:
    """The record of `name`; a UserError naming the choices when there is none."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}") from None
