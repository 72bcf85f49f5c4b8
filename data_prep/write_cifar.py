"""CIFAR-10 / CIFAR-100 -> .beton, raw pixels (lossless: read back bit for bit).

    python -m data_prep.write_cifar --dataset cifar10 --root DATA_DIR      # -> DATA_DIR/ffcv/
    make data DATASET=cifar10 DATA_DIR=data

Reads torchvision's on-disk files (`ROOT/cifar-10-batches-py`, `ROOT/cifar-100-python`, the
python-pickle release) directly, the same arrays torchvision's CIFAR10/CIFAR100 classes load, in
the same order. Files whose md5 differs from the official release are converted with a warning.
Writes cifar10_train.beton (50,000) and cifar10_test.beton (10,000); the same for cifar100.
"""
from __future__ import annotations

import hashlib
import pickle
import sys
from pathlib import Path

import numpy as np

from data_prep.common import choose_splits, common_parser, out_dir_for, write_split
from repro.cli import UserError, run_cli
from repro.formats.catalog import dataset_record

# files per split with their official md5 (torchvision's lists) and the label key; the folder, URL
# and split sizes are the catalog's
LAYOUT = {
    "cifar10": ("labels", {
        "train": [("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                  ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                  ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                  ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                  ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb")],
        "test": [("test_batch", "40351d587109b95175f43aff81a1287e")]}),
    "cifar100": ("fine_labels", {
        "train": [("train", "16019d7e3df5f24257cddd939b257f8d")],
        "test": [("test", "f0ef6b0ae62326f3e7ffdfab6717acfc")]}),
}


def read_split(root: Path, dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N x 32 x 32 x 3 images, int64 labels) as torchvision's CIFAR classes load them."""
    label_key, files = LAYOUT[dataset]
    record = dataset_record(dataset)
    folder, url = record.source_folder, record.download_url
    images, labels = [], []
    for name, md5 in files[split]:
        path = root / folder / name
        if not path.is_file():
            raise UserError(f"{dataset} file '{path}' not found: extract {url} into '{root}'")
        raw = path.read_bytes()
        if hashlib.md5(raw).hexdigest() != md5:
            print(f"warning: '{path}' differs from the official release (md5); converting it as is",
                  file=sys.stderr)
        try:
            entry = pickle.loads(raw, encoding="latin1")
            data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            target = np.asarray(entry[label_key], dtype=np.int64)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means a damaged file
            raise UserError(f"'{path}' is not a CIFAR pickle ({type(err).__name__}: {err}): "
                            f"extract {url} into '{root}' again") from None
        if len(data) != len(target):
            raise UserError(f"'{path}' holds {len(data)} images but {len(target)} labels")
        images.append(data.transpose(0, 2, 3, 1))  # CHW rows -> HWC, as torchvision
        labels.append(target)
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def main(argv: list[str]) -> int:
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(LAYOUT))
    args = parser.parse_args(argv)
    root, out_dir = Path(args.root), out_dir_for(args)
    for split in choose_splits(args.splits, dataset_record(args.dataset).splits):
        images, labels = read_split(root, args.dataset, split)
        write_split(dataset=args.dataset, split=split, out_dir=out_dir,
                    load=lambda i, images=images, labels=labels: (images[i], labels[i]),
                    count=len(labels), describe=lambda i, split=split: f"{args.dataset} {split} image {i}",
                    image_field={"write_mode": "raw"}, options={"format": "raw"},
                    subset=args.subset, workers=args.workers, force=args.force)
    return 0


if __name__ == "__main__":
    run_cli(main)
