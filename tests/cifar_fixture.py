"""CIFAR data for the tests.

Real CIFAR-10 (../shared/data, JPEG) rebuilt in torchvision's on-disk pickle layout, so the tests
go through torchvision's real CIFAR10 loader. The pixels went through JPEG once, so the files'
md5 sums differ from the originals: the fixture lets torchvision's integrity check accept them
(everything else of the loader runs as for a user).

A synthetic CIFAR-100 (noise images, then coordinate-encoded ones) converted to .beton by the
project's converter, run in a subprocess as a user runs it (ffcv's writer forks and must not run
in a process that holds a compiled Loader).
"""
from __future__ import annotations

import io
import pickle
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from repro.formats.beton import import_ffcv, keep_torch_threads

ROOT = Path(__file__).resolve().parents[1]

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


# ---- synthetic CIFAR-100 through the converter -----------------------------------------------------

NOISE, COORDS = 256, 256  # synthetic CIFAR-100 train split: noise images, then coordinate images


def convert(module: str, *args) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", f"data_prep.{module}", *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    return result


def converted(module: str, *args) -> str:
    result = convert(module, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def read_beton(path) -> tuple[np.ndarray, np.ndarray]:
    """Every image and label, in file order, through ffcv's plain decoder (equal-size images)."""
    ffcv = import_ffcv()
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import OrderOption

    with keep_torch_threads():
        loader = ffcv.loader.Loader(str(path), batch_size=500, num_workers=1, order=OrderOption.SEQUENTIAL,
                                    drop_last=False, pipelines={"image": [SimpleRGBImageDecoder()],
                                                                "label": [IntDecoder()]})
        batches = [(images.copy(), labels.copy().ravel()) for images, labels in loader]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def coordinate_image() -> np.ndarray:
    """R encodes the column, G the row (8 levels apart), B constant: a crop's box can be read off."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return np.stack([cols * 8 + 4, rows * 8 + 4, np.full_like(rows, 128)], axis=-1).astype(np.uint8)


def write_cifar100(root, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> None:
    """Files in torchvision's CIFAR-100 pickle layout."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        data = images[split].transpose(0, 3, 1, 2).reshape(len(images[split]), -1)
        with open(folder / split, "wb") as f:
            pickle.dump({"data": data, "fine_labels": labels[split].tolist(),
                         "coarse_labels": (labels[split] // 5).tolist()}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)]}, f)


def converted_cifar100(root: Path) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A synthetic CIFAR-100 in torchvision's layout under `root`, converted: (root, images, labels)."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(NOISE, 32, 32, 3), dtype=np.uint8)
    images = {"train": np.concatenate([noise, np.repeat(coordinate_image()[None], COORDS, axis=0)]),
              "test": rng.integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)}
    labels = {split: rng.integers(0, 100, size=len(images[split])) for split in images}
    write_cifar100(root, images, labels)
    converted("write_cifar", "--dataset", "cifar100", "--root", root)
    return root, images, labels
