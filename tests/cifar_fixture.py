"""Real CIFAR-10 (../shared/data, JPEG) rebuilt in torchvision's on-disk pickle layout, so the tests
go through torchvision's real CIFAR10 loader. The pixels went through JPEG once, so the files'
md5 sums differ from the originals: the fixture lets torchvision's integrity check accept them
(everything else of the loader runs as for a user)."""
from __future__ import annotations

import io
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def read_cifar_jpegs(archive: Path, per_class: dict[str, int]) -> dict[str, tuple[np.ndarray, list[int]]]:
    """{split: (uint8 images N x 32 x 32 x 3, labels)} with the first per_class[split] images of each class."""
    wanted = {split: {c: [] for c in CLASSES} for split in per_class}
    pattern = re.compile(r"(?:^|/)(train|test)/([a-z]+)/([^/]+\.jpg)$")
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            match = pattern.search(member.name)
            if not match or match.group(1) not in per_class:
                continue
            split, cls, _ = match.groups()
            bucket = wanted[split][cls]
            if len(bucket) < per_class[split]:
                data = tar.extractfile(member).read()
                bucket.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    out = {}
    for split, by_class in wanted.items():
        images, labels = [], []
        for label, cls in enumerate(CLASSES):
            images += by_class[cls]
            labels += [label] * len(by_class[cls])
        order = np.random.default_rng(0).permutation(len(labels))  # CIFAR's files are not class-sorted
        out[split] = (np.stack(images)[order], [labels[i] for i in order])
    return out


def write_torchvision_cifar10(root: Path, splits: dict[str, tuple[np.ndarray, list[int]]]) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, images: np.ndarray, labels: list[int]) -> None:
        data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # CIFAR stores CHW rows
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)

    images, labels = splits["train"]
    for i, chunk in enumerate(np.array_split(np.arange(len(labels)), 5)):
        dump(f"data_batch_{i + 1}", images[chunk], [labels[j] for j in chunk])
    dump("test_batch", *splits["test"])
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CLASSES}, f)
    return root
