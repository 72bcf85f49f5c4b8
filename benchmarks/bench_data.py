"""Data-loading benchmark (`make bench-data`): two-view batches per second from the FFCV path and
from a torchvision + PIL DataLoader, on the same real CIFAR-10 images and the same cores.

    python -m benchmarks.bench_data                      # full CIFAR-10 train split, batch 256
    python -m benchmarks.bench_data --batches 40         # quicker: 40 timed batches per path
    python -m benchmarks.bench_data --root DATA_DIR      # your cifar-10-batches-py instead

(a) FFCV: repro.data.ffcv_loader.FFCVTwoViewLoader on a raw-pixel .beton (data_prep.write_cifar):
    decode + two random resized crops + flips in FFCV's compiled pipeline, colour jitter /
    grayscale / blur per image in torch on the training device (--device, default cpu),
    normalised float views out.
(b) baseline, solo-learn style: torchvision's CIFAR10 dataset with the same two-view PIL
    transforms (repro.data.augment.TwoViews), torch DataLoader(shuffle, drop_last, one worker per
    core). Workers start each epoch (persistent_workers=False, as solo-learn and the trainer).
Both: batch 256, the full CIFAR `symmetric` augmentation set (crop 0.08-1, jitter 0.8/0.8/0.8/0.2
with p 0.8, grayscale 0.2, blur 0.5, flip 0.5). One untimed warm-up epoch each (numba compilation,
worker start-up, page cache), then timed epochs: batches / wall time, worker start-up included.

Without --root the real CIFAR-10 comes from ../shared/data/cifar10-jpeg.tar.gz (development and CI
machines), decoded once into torchvision's pickle layout in a cache folder; the .beton is written
there by the converter in its own process. Printed and saved as JSON with the machine and date.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import platform
import re
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from repro.cli import UserError, run_cli

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "frossl" / "cifar10-bench"
AUGMENTATIONS = "symmetric"  # solo-learn's full CIFAR set (SimCLR, SwAV; FroSSL in the authors' fork)


def cifar_from_archive(archive: Path, cache: Path) -> Path:
    """Decode the JPEG archive's train split once into torchvision's CIFAR-10 pickle layout."""
    folder = cache / "cifar-10-batches-py"
    if (folder / "data_batch_5").is_file():
        return cache
    from PIL import Image

    print(f"decoding {archive} into {folder} (once)", file=sys.stderr)
    pattern = re.compile(r"(?:^|/)train/([a-z]+)/[^/]+\.jpg$")
    images, labels = [], []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            match = pattern.search(member.name)
            if match:
                images.append(np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")))
                labels.append(CLASSES.index(match.group(1)))
    order = np.random.default_rng(0).permutation(len(labels))  # CIFAR's files are not class-sorted
    data = np.stack(images)[order].transpose(0, 3, 1, 2).reshape(len(order), -1)
    labels = [labels[i] for i in order]
    folder.mkdir(parents=True, exist_ok=True)
    for k, chunk in enumerate(np.array_split(np.arange(len(labels)), 5)):
        with open(folder / f"data_batch_{k + 1}", "wb") as f:
            pickle.dump({"data": data[chunk], "labels": [labels[i] for i in chunk]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CLASSES}, f)
    return cache


def cifar_root(root: str | Path | None, cache: Path = DEFAULT_CACHE) -> Path:
    """A folder holding cifar-10-batches-py: the user's, or the real CIFAR-10 decoded from the shared
    archive into `cache` (development and CI machines)."""
    if root:
        root = Path(root)
        if not (root / "cifar-10-batches-py").is_dir():
            raise UserError(f"'{root / 'cifar-10-batches-py'}' not found: pass --root DATA_DIR holding CIFAR-10")
        return root
    if SHARED_CIFAR.exists():
        return cifar_from_archive(SHARED_CIFAR, cache)
    raise UserError(f"no --root given and {SHARED_CIFAR} is absent: pass --root DATA_DIR holding "
                    f"cifar-10-batches-py")


def time_epochs(epochs, warmup: int, timed: int, batches: int, device: torch.device) -> dict:
    """Iterate `epochs(e)` (a fresh iterator per epoch); report the timed epochs' batches/s (on
    CUDA, each epoch's clock stops once the device has finished its queued work)."""

    def finish() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    warm_start = time.perf_counter()
    for e in range(warmup):
        for i, _ in enumerate(epochs(e)):
            if batches and i + 1 >= batches:
                break
    warmup_s = time.perf_counter() - warm_start
    counts, seconds = 0, 0.0
    for e in range(warmup, warmup + timed):
        start = time.perf_counter()
        for i, (views, labels) in enumerate(epochs(e)):
            assert len(views) == 2 and views[0].shape[0] == labels.shape[0]
            counts += 1
            if batches and i + 1 >= batches:
                break
        finish()
        seconds += time.perf_counter() - start
    return {"batches": counts, "seconds": round(seconds, 2), "batches_per_s": round(counts / seconds, 2),
            "images_per_s": round(counts * labels.shape[0] / seconds, 1), "warmup_s": round(warmup_s, 1)}


@contextlib.contextmanager
def accept_rebuilt_cifar():
    """While open: the files decoded from the JPEG archive, which are not the originals, pass
    torchvision's md5 check (checked when a dataset is constructed); everything else runs as for a
    user. Restored on exit, so nothing else in the process is affected."""
    from torchvision import datasets

    saved = datasets.CIFAR10._check_integrity, datasets.cifar.check_integrity
    datasets.CIFAR10._check_integrity = lambda self: True
    datasets.cifar.check_integrity = lambda *args, **kwargs: True
    try:
        yield
    finally:
        datasets.CIFAR10._check_integrity, datasets.cifar.check_integrity = saved


def write_cifar_beton(root: Path) -> Path:
    """<root>/ffcv/cifar10_train.beton through the project's converter (idempotent: a verified file
    is kept), in its own process (ffcv's writer forks; see data_prep/common.py)."""
    from repro.formats.beton import beton_path
    from repro.formats.catalog import dataset_record

    result = subprocess.run([sys.executable, *dataset_record("cifar10").converter_argv(root, ["train"])],
                            cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        raise UserError(f"converting CIFAR-10 failed: {result.stderr.strip().splitlines()[-1]}")
    return beton_path(root, "cifar10", "train")


def torchvision_epochs(root: Path, batch_size: int, workers: int, device: torch.device):
    from torch.utils.data import DataLoader
    from torchvision import datasets

    from repro.data.augment import TwoViews

    with accept_rebuilt_cifar():
        dataset = datasets.CIFAR10(str(root), train=True, transform=TwoViews(AUGMENTATIONS, 32, "cifar10"))

    def epochs(epoch: int):
        generator = torch.Generator().manual_seed(epoch)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                            generator=generator, persistent_workers=False, pin_memory=device.type == "cuda")
        # on the training device, as the FFCV path's views are
        return (([v.to(device, non_blocking=True) for v in views], labels.to(device, non_blocking=True))
                for views, labels in loader)
    return epochs, len(dataset)


def ffcv_epochs(root: Path, batch_size: int, workers: int, device: torch.device):
    from repro.data.ffcv_loader import FFCVTwoViewLoader

    path = write_cifar_beton(root)
    loader = FFCVTwoViewLoader(path, dataset="cifar10", augmentations=AUGMENTATIONS, image_size=32,
                               batch_size=batch_size, seed=0, num_workers=workers, device=device)
    return loader.epoch, len(loader.dataset)


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version

    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "ffcv": version("ffcv"),
            "numba": version("numba"), "pillow": version("pillow"), "torchvision": version("torchvision")}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--root", default=None,
                        help="folder holding cifar-10-batches-py (default: decoded from the shared archive)")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE),
                        help="where the archive is decoded when --root is not given")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="DataLoader workers and FFCV threads (default: one per core)")
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per path")
    parser.add_argument("--batches", type=int, default=0, help="cap on batches per epoch (0: whole epochs)")
    parser.add_argument("--device", default="cpu",
                        help="training device: FFCV's colour augmentation runs there; pinned batches on cuda")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_data.json"))
    args = parser.parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UserError(f"--device {args.device}: not a torch device (cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: no CUDA device visible here; use --device cpu")

    root = cifar_root(args.root, Path(args.cache))

    load_before = os.getloadavg()
    results = {}
    for name, build in (("ffcv", ffcv_epochs), ("torchvision_pil", torchvision_epochs)):
        epochs, images = build(root, args.batch_size, args.workers, device)
        print(f"{name}: {images:,} images, {args.warmup_epochs} warm-up + {args.epochs} timed epoch(s)",
              file=sys.stderr)
        results[name] = time_epochs(epochs, args.warmup_epochs, args.epochs, args.batches, device)
        print(f"{name:16s} {results[name]['batches_per_s']:8.2f} two-view batches/s "
              f"({results[name]['images_per_s']:,.0f} images/s)")
    ratio = results["ffcv"]["batches_per_s"] / results["torchvision_pil"]["batches_per_s"]
    print(f"ratio ffcv / torchvision+PIL: {ratio:.1f}x (goal >= 5 on a 2-core CPU machine)")
    report = {
        "benchmark": "two-view batches per second, FFCV path vs torchvision+PIL DataLoader",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.bench_data", *argv]),
        "machine": machine(), "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "settings": {"images": "real CIFAR-10 train split (50,000) unless --root says otherwise",
                     "batch_size": args.batch_size, "augmentations": AUGMENTATIONS, "views": 2,
                     "workers": args.workers, "device": str(device), "warmup_epochs": args.warmup_epochs,
                     "timed_epochs": args.epochs, "batch_cap": args.batches},
        "results": results, "ratio": round(ratio, 2),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
