"""CIFAR-10 for `repro.gpu_check`, from whatever the user has, in the two forms its commands read.

- The trainer (`python -m repro.train`) reads an image folder (`data.dataset=imagefolder` at 32 px
  with the CIFAR stem) or torchvision's original files (`data.dataset=cifar10`). The JPEG archive
  (../shared/data/cifar10-jpeg.tar.gz's layout: train/<class>/*.jpg, test/<class>/*.jpg) is
  unpacked as an image folder: torchvision's CIFAR10 class insists on the original files' md5
  sums, which pixels decoded from JPEG cannot match, whereas the image-folder path runs unmodified.
- The step benchmark (`python -m benchmarks.bench_step --root`) reads cifar-10-batches-py; it is
  written from the image folder (the benchmark accepts such rebuilt files), or, without any data,
  filled with random pixels (synthetic_data: a step costs the same whatever the pixels).
Everything goes under `dest` and is reused on the next run (a `.complete` marker per folder).
"""
from __future__ import annotations

import io
import pickle
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from repro.cli import UserError
from repro.formats.catalog import dataset_record

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEMBER = re.compile(r"(?:^|/)(train|test)/([^/]+)/([^/]+\.(?:png|jpe?g))$", re.IGNORECASE)


@dataclass(frozen=True)
class DataSource:
    kind: str                  # "archive", "imagefolder", "cifar10" or "synthetic"
    train_overrides: tuple     # trainer key=value pairs that point it at the data
    convert_args: tuple        # `python ARGS` that writes the FFCV training file
    cifar_pickles: Path        # folder holding cifar-10-batches-py (the benchmark's --root)
    images: dict               # {split: count} the trainer will see

    def describe(self) -> dict:
        return {"kind": self.kind, "train_overrides": list(self.train_overrides),
                "bench_root": str(self.cifar_pickles), "images": self.images}


def unpack_archive(archive: Path, folder: Path, per_class: dict) -> Path:
    """The archive's train/ and test/ images into folder/<split>/<class>/ (at most per_class[split]
    per class when > 0)."""
    if (folder / ".complete").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    counts: dict = {}
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                match = MEMBER.search(member.name)
                if not member.isfile() or not match:
                    continue
                split, cls, name = match.groups()
                if cls in (".", "..") or name in (".", ".."):
                    continue
                limit = per_class.get(split, 0)
                key = (split, cls)
                if limit and counts.get(key, 0) >= limit:
                    continue
                counts[key] = counts.get(key, 0) + 1
                target = folder / split / cls / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UserError(f"cannot read the archive '{archive}' ({err}): pass the CIFAR-10 JPEG archive "
                        f"(train/<class>/*.jpg inside) or its unpacked folder") from None
    if not any(k[0] == "train" for k in counts) or not any(k[0] == "test" for k in counts):
        raise UserError(f"'{archive}' holds no train/<class>/ and test/<class>/ images: pass the CIFAR-10 "
                        f"JPEG archive (as ../shared/data/cifar10-jpeg.tar.gz)")
    (folder / ".complete").write_text("")
    return folder


def subset_folder(source: Path, folder: Path, per_class: dict) -> Path:
    """A copy of at most per_class[split] images per class of an image folder (dry mode)."""
    if (folder / ".complete").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for split, limit in per_class.items():
        for class_dir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            (folder / split / class_dir.name).mkdir(parents=True, exist_ok=True)
            for image in sorted(class_dir.iterdir())[:limit]:
                shutil.copy2(image, folder / split / class_dir.name / image.name)
    (folder / ".complete").write_text("")
    return folder


def write_pickles(image_folder: Path, root: Path) -> Path:
    """root/cifar-10-batches-py (5 train batches, test_batch, batches.meta) from an image folder,
    images in a seeded random order (CIFAR's files are not class-sorted)."""
    folder = root / "cifar-10-batches-py"
    if (root / ".complete").is_file():
        return root
    import numpy as np
    from PIL import Image

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        classes = sorted(p.name for p in (image_folder / split).iterdir() if p.is_dir())
        images, labels = [], []
        for label, cls in enumerate(classes):
            for path in sorted((image_folder / split / cls).iterdir()):
                with Image.open(io.BytesIO(path.read_bytes())) as image:
                    images.append(np.asarray(image.convert("RGB").resize((32, 32))))
                labels.append(label)
        order = np.random.default_rng(0).permutation(len(labels))
        data = np.stack(images)[order].transpose(0, 3, 1, 2).reshape(len(order), -1)  # CHW rows, uint8
        write_batches(folder, split, data, [labels[i] for i in order])
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": classes}, f)
    (root / ".complete").write_text("")
    return root


def write_batches(folder: Path, split: str, data, labels: list) -> None:
    """One split's rows (N x 3072 uint8, CHW) as CIFAR's pickles: 5 train batches or test_batch."""
    import numpy as np

    chunks = np.array_split(np.arange(len(labels)), 5) if split == "train" else [np.arange(len(labels))]
    for k, chunk in enumerate(chunks):
        name = f"data_batch_{k + 1}" if split == "train" else "test_batch"
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data[chunk], "labels": [labels[i] for i in chunk]}, f)


def synthetic_data(dest: Path, images: dict) -> DataSource:
    """Random 32 px images with random labels as cifar-10-batches-py under dest: what the step
    benchmark reads when no data is given. The trainer is not pointed at them (no overrides)."""
    import numpy as np

    root = dest / f"synthetic-{images['train']}x{images['test']}"
    if not (root / ".complete").is_file():
        folder = root / "cifar-10-batches-py"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for split, count in images.items():
            data = rng.integers(0, 256, (count, 3 * 32 * 32), dtype=np.uint8)
            write_batches(folder, split, data, rng.integers(0, len(CLASSES), count).tolist())
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({"label_names": CLASSES}, f)
        (root / ".complete").write_text("")
    return DataSource("synthetic", (), (), root, dict(images))


def count_images(folder: Path) -> dict:
    return {split: sum(1 for p in (folder / split).glob("*/*") if p.is_file()) for split in ("train", "test")}


def prepare_data(path: Path, dest: Path, per_class: dict) -> DataSource:
    """The DataSource for `path`: a .tar.gz/.tgz/.tar archive, an image folder with train/ and
    test/, or a folder holding (or being) cifar-10-batches-py. per_class > 0 keeps that many images
    per class and split (dry mode)."""
    path = Path(path).resolve()
    tiny = any(per_class.values())
    suffix = f"-{per_class.get('train', 0)}x{per_class.get('test', 0)}" if tiny else ""   # per-class counts
    dest.mkdir(parents=True, exist_ok=True)
    batches = next((p for p in (path / "cifar-10-batches-py", path) if (p / "data_batch_1").is_file()), None)
    if batches is not None:
        root = batches.parent
        subset = per_class.get("train", 0) * len(CLASSES)
        overrides = ("data.dataset=cifar10", f"data.root={root}", "data.download=false") + \
            ((f"data.subset={subset}",) if subset else ())
        convert = tuple(dataset_record("cifar10").converter_argv(root, ["train"]))
        return DataSource("cifar10", overrides, convert, root, {"train": subset or 50_000, "test": 10_000})
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        folder, kind = unpack_archive(path, dest / f"cifar10-jpeg{suffix}", per_class), "archive"
    elif path.is_dir() and (path / "train").is_dir() and (path / "test").is_dir():
        folder = subset_folder(path, dest / f"cifar10-jpeg{suffix}", per_class) if tiny else path
        kind = "imagefolder"
    else:
        raise UserError(f"--data '{path}' is neither the CIFAR-10 JPEG archive (.tar.gz), an image folder "
                        f"with train/ and test/, nor a folder holding cifar-10-batches-py")
    pickles = write_pickles(folder, dest / f"cifar10-pickles{suffix}")
    # 32 px with the CIFAR stem as the cifar10 config; the image folder is normalised with
    # ImageNet's statistics (repro/data/augment.py), the only difference from the CIFAR-10 path
    overrides = ("data.dataset=imagefolder", f"data.root={folder}", "data.image_size=32", "data.download=false")
    convert = tuple(dataset_record("imagefolder").converter_argv(folder, ["train"]))
    return DataSource(kind, overrides, convert, pickles, count_images(folder))
