"""STL-10 -> .beton, raw pixels (lossless), from the binary release (`ROOT/stl10_binary`).

    python -m data_prep.write_stl10 --root DATA_DIR                      # all four splits
    python -m data_prep.write_stl10 --root DATA_DIR --splits train+unlabeled test
    make data DATASET=stl10 DATA_DIR=data

Splits: train (5,000, labels 0-9), test (8,000), unlabeled (100,000, label -1) and
train+unlabeled (105,000: train then unlabeled, the paper's pretraining set; torchvision's order).
The binary files hold uint8 images column-major per channel (N x 3 x 96 x 96, width before
height) and labels 1..10; they are read here with numpy (memory-mapped), as torchvision reads them.
Disk: 96 x 96 x 3 bytes per image, about 2.8 GB for unlabeled and again for train+unlabeled.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_prep.common import choose_splits, common_parser, out_dir_for, write_split
from repro.cli import UserError, run_cli
from repro.formats.catalog import dataset_record

STL10 = dataset_record("stl10")
FOLDER, URL, SIDE = STL10.source_folder, STL10.download_url, STL10.image_size


def read_part(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 3 x 96 x 96 as stored, memory-mapped; labels 0-9, or -1 for unlabeled)."""
    folder = root / FOLDER
    images_file = folder / f"{part}_X.bin"
    if not images_file.is_file():
        raise UserError(f"STL-10 file '{images_file}' not found: extract {URL} into '{root}'")
    size = images_file.stat().st_size
    if size % (3 * SIDE * SIDE):
        raise UserError(f"'{images_file}' has {size} bytes, not a whole number of 96x96 RGB images "
                        f"(truncated?): extract {URL} into '{root}' again")
    images = np.memmap(images_file, dtype=np.uint8, mode="r").reshape(-1, 3, SIDE, SIDE)
    if part == "unlabeled":
        return images, np.full(len(images), -1, dtype=np.int64)
    labels_file = folder / f"{part}_y.bin"
    if not labels_file.is_file():
        raise UserError(f"STL-10 file '{labels_file}' not found: extract {URL} into '{root}'")
    labels = np.fromfile(labels_file, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != len(images):
        raise UserError(f"'{labels_file}' holds {len(labels)} labels for {len(images)} images in '{images_file}'")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise UserError(f"'{labels_file}' holds labels outside 1..10")
    return images, labels


def main(argv: list[str]) -> int:
    parser = common_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    root, out_dir = Path(args.root), out_dir_for(args)
    for split in choose_splits(args.splits, STL10.splits):
        parts = [read_part(root, part) for part in split.split("+")]
        starts = np.cumsum([0] + [len(images) for images, _ in parts])

        def load(i: int, parts=parts, starts=starts):
            k = int(np.searchsorted(starts, i, side="right")) - 1
            images, labels = parts[k]
            return images[i - starts[k]].transpose(2, 1, 0), labels[i - starts[k]]  # C, W, H -> H, W, C

        write_split(dataset="stl10", split=split, out_dir=out_dir, load=load, count=int(starts[-1]),
                    describe=lambda i, split=split: f"stl10 {split} image {i}",
                    image_field={"write_mode": "raw"}, options={"format": "raw"},
                    subset=args.subset, workers=args.workers, force=args.force)
    return 0


if __name__ == "__main__":
    run_cli(main)
