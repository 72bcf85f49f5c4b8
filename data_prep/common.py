"""What the converters share: flags, the write-verify-rename step, the manifest, one-line errors.

Every converter writes `<out>/<dataset>_<split>.beton` (`--out`, default ROOT/ffcv; the experiment
targets pass CACHE_DIR/ffcv so that ROOT may be read-only) plus `<name>.beton.json`, a manifest with
the count, the options and the file size (the format: repro/formats/beton.py). A split is
skipped when its file verifies (structure, count, manifest, same options) and rebuilt otherwise;
a new file is written under a temporary name and renamed when complete, so an interrupted run
never leaves a file that looks finished.

Writing happens in this process (the converters are command-line programs): ffcv's DatasetWriter
forks workers, which deadlock if a Loader in the same process holds numba's compiler lock.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from repro.cli import UserError
from repro.formats.beton import (BETON_FIELDS, beton_name, expected_manifest, ffcv_dir, import_ffcv, inspect_beton,
                                 manifest_path, verified, write_manifest)
from repro.formats.catalog import dataset_record
from repro.formats.order import subset_positions


def common_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--root", required=True, help="folder holding the source dataset (DATA_DIR)")
    parser.add_argument("--out", default=None,
                        help="output folder for .beton files (default: ROOT/ffcv; CACHE_DIR/ffcv keeps ROOT read-only)")
    parser.add_argument("--splits", nargs="+", default=None, help="splits to write (default: all)")
    parser.add_argument("--subset", type=int, default=0,
                        help="write only a fixed random subset of N images per split (seed 0; quick runs)")
    parser.add_argument("--workers", type=int, default=-1, help="writer processes (-1: one per CPU core)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the output verifies")
    return parser


class _Source:
    """Indexable (uint8 HxWx3 image, int label) source for ffcv's writer. A sample that fails to
    load is recorded in an error file and replaced by a 1x1 black image: ffcv's writer waits
    forever for a worker that died, so failures must not kill workers. The run then fails."""

    def __init__(self, load: Callable[[int], tuple[np.ndarray, int]], indices: np.ndarray,
                 describe: Callable[[int], str], error_file: Path):
        self.load, self.indices, self.describe, self.error_file = load, indices, describe, error_file

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = int(self.indices[i])
        try:
            image, label = self.load(index)
            image = np.ascontiguousarray(image, dtype=np.uint8)
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"shape {image.shape}, expected H x W x 3")
            return image, int(label)
        except Exception as err:  # noqa: BLE001 - reported after the write, see class docstring
            with open(self.error_file, "a") as f:
                f.write(f"{self.describe(index)}: {type(err).__name__}: {err}".replace("\n", " ") + "\n")
            return np.zeros((1, 1, 3), np.uint8), -1


def write_split(*, dataset: str, split: str, out_dir: Path, load: Callable[[int], tuple[np.ndarray, int]],
                count: int, describe: Callable[[int], str], image_field: dict, options: dict,
                subset: int = 0, workers: int = -1, force: bool = False) -> Path:
    """Write one split unless a verified file with the same options is there.

    load(i) -> (uint8 H x W x 3, label) for source index i < count; describe(i) names the source
    item in error messages; image_field: RGBImageField arguments; options: recorded in the
    manifest and compared on the next run (with num_samples). A full split whose count differs
    from the catalog's documented size is converted with a warning.
    """
    path = out_dir / beton_name(dataset, split)
    indices = subset_positions(count, subset)
    official = dataset_record(dataset).split_sizes.get(split)
    if official is not None and not subset and count != official:
        print(f"warning: {dataset} {split} has {count:,} images, the official split {official:,}",
              file=sys.stderr)
    expected = expected_manifest(dataset=dataset, split=split, num_samples=len(indices), subset=subset,
                                 options=options)
    out_dir.mkdir(parents=True, exist_ok=True)
    # one writer at a time per file (a POSIX lock, which NFS passes on): the others wait, then find it written
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)
        reason = "--force" if force else verified(path, expected)
        if reason is None:
            print(f"{path}: up to date ({len(indices):,} images), kept")
            return path
        if path.exists():
            print(f"{path}: rebuilding ({reason})")
        # names of this writer alone: several nodes sharing CACHE_DIR never touch each other's files
        own = f"{socket.gethostname()}-{os.getpid()}"
        partial = path.with_name(f"{path.name}.partial-{own}")
        errors = path.with_name(f"{path.name}.errors-{own}")
        manifest_path(path).unlink(missing_ok=True)

        ffcv = import_ffcv()
        from ffcv.fields import IntField, RGBImageField

        print(f"writing {dataset} {split}: {len(indices):,} images -> {path}")
        start = time.perf_counter()
        writer = ffcv.writer.DatasetWriter(
            str(partial), {BETON_FIELDS[0]: RGBImageField(**image_field), BETON_FIELDS[1]: IntField()},
            num_workers=workers if workers > 0 else (os.cpu_count() or 1))
        writer.from_indexed_dataset(_Source(load, indices, describe, errors), chunksize=100)
        if errors.exists() and errors.stat().st_size:
            lines = errors.read_text().splitlines()
            partial.unlink(missing_ok=True)
            raise UserError(f"{len(lines)} image(s) of {dataset} {split} could not be read, first: {lines[0]} "
                            f"(all listed in {errors}); nothing written")
        info = inspect_beton(partial)
        if info["num_samples"] != len(indices):  # the count check
            raise UserError(f"{partial}: {info['num_samples']} samples written, expected {len(indices)}")
        os.replace(partial, path)
        manifest = write_manifest(path, expected, info["labels"], time.perf_counter() - start)
        print(f"{path}: {len(indices):,} images, {manifest['bytes'] / 2**20:.1f} MiB, "
              f"{manifest['seconds']:.0f} s; count check passed")
        return path


def out_dir_for(args) -> Path:
    """The output folder; nothing is ever written under --root when --out points elsewhere."""
    return Path(args.out) if args.out else ffcv_dir(args.root)


def choose_splits(requested: list[str] | None, available: tuple[str, ...]) -> list[str]:
    if not requested:
        return list(available)
    unknown = [s for s in requested if s not in available]
    if unknown:
        raise UserError(f"unknown split(s) {', '.join(unknown)}: choose from {', '.join(available)}")
    return requested
