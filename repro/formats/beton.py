"""The FFCV file format of this project: where a split's .beton lives, its manifest, and how a
file is checked without trusting it.

    DATA_DIR/ffcv/<dataset>_<split>.beton        fields "image" (RGB) and "label" (int)
    DATA_DIR/ffcv/<dataset>_<split>.beton.json   the manifest data_prep writes once the file is complete

or, with a cache folder (data.cache_dir, Make's CACHE_DIR: the data folder may be a read-only
mount), the same names under CACHE_DIR/ffcv/. The loader looks in the cache folder first, then
next to the data (files an earlier `make data` wrote there stay usable).

The converters (data_prep/) write files in this format and the FFCV loader (repro.data.ffcv_loader)
reads them; neither defines any of it. Hazards of ffcv on these machines (docs/sources.md section
5): `import ffcv` sets torch's thread count to 1, so every import goes through import_ffcv, which
restores it.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from repro.cli import UserError
from repro.formats.catalog import DATASETS, beton_name

__all__ = ["BETON_FIELDS", "MANIFEST_VERSION", "beton_name", "beton_path", "complete", "expected_manifest",
           "ffcv_dir", "find_beton", "import_ffcv", "inspect_beton", "keep_torch_threads", "manifest_path",
           "rebuild_command", "verified", "write_manifest"]

BETON_FIELDS = ("image", "label")
MANIFEST_VERSION = 1  # raise when the manifest's keys or the fields change: older files then rebuild


def ffcv_dir(root: str | Path, cache_dir: str | Path = "") -> Path:
    """The folder of the FFCV files: CACHE_DIR/ffcv with a cache folder, else DATA_DIR/ffcv."""
    return Path(cache_dir or root) / "ffcv"


def beton_path(root: str | Path, dataset: str, split: str, cache_dir: str | Path = "") -> Path:
    """Where the converters write a split (the cache folder when one is given)."""
    return ffcv_dir(root, cache_dir) / beton_name(dataset, split)


def find_beton(root: str | Path, dataset: str, split: str, cache_dir: str | Path = "") -> Path | None:
    """The split's file the loader reads: in the cache folder, else next to the data; None if neither."""
    candidates = [beton_path(root, dataset, split, cache_dir)] if cache_dir else []
    candidates.append(beton_path(root, dataset, split))
    return next((path for path in candidates if path.is_file()), None)


def complete(path: Path) -> bool:
    """A converter finished `path`: its manifest (written last) is there and names the file's size.
    Cheap (no ffcv import); the loader still inspects the structure when it opens the file."""
    try:
        manifest = json.loads(manifest_path(path).read_text())
        return path.is_file() and manifest.get("bytes") == path.stat().st_size
    except (OSError, ValueError):
        return False


def manifest_path(path: str | Path) -> Path:
    return Path(str(path) + ".json")


def rebuild_command(dataset: str, root: str | Path, split: str | None = None, cache_dir: str | Path = "") -> str:
    """The command that (re)builds a split's .beton (a damaged file is replaced, a good one kept),
    writing into the cache folder when one is given."""
    record = DATASETS.get(dataset)
    if record is None or not record.has_converter:
        return f"(no FFCV converter for dataset {dataset})"
    argv = record.converter_argv(root, [split] if split else None)
    return " ".join(["python", *argv, *(["--out", str(ffcv_dir(root, cache_dir))] if cache_dir else [])])


@contextlib.contextmanager
def keep_torch_threads():
    """ffcv sets torch's intra-op thread count as a side effect (import, Loader, each epoch)."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def import_ffcv():
    """ffcv, imported with torch's thread count kept and its import-time warnings silenced."""
    with keep_torch_threads(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import ffcv  # noqa: F401
        import ffcv.loader  # noqa: F401
    return ffcv


def inspect_beton(path: str | Path, rebuild: str = "") -> dict:
    """Check a .beton's structure without trusting it; return {'num_samples', 'labels',
    'max_height', 'max_width'}. UserError naming the file (and `rebuild`, the command) otherwise.

    Catches truncation (the allocation table or a sample's data past the end of the file), a
    garbled header or metadata, and a manifest that disagrees with the file. Cannot see flipped
    bits inside pixel data (no checksum over the data: too slow for ImageNet).
    """
    path = Path(path)
    hint = f": rebuild it with `{rebuild}`" if rebuild else ""

    def corrupt(reason: str) -> UserError:
        return UserError(f"'{path}' is truncated or corrupt ({reason}){hint}")

    if not path.is_file():
        raise UserError(f"'{path}' not found{hint.replace('rebuild', 'build')}")
    import_ffcv()
    from ffcv.types import ALLOC_TABLE_TYPE, CURRENT_VERSION, FieldDescType, HeaderType, get_handlers, \
        get_metadata_type
    from ffcv.utils import decode_null_terminated_string

    size = path.stat().st_size
    if size < HeaderType.itemsize:
        raise corrupt(f"{size} bytes, shorter than the header")
    header = np.fromfile(path, dtype=HeaderType, count=1)[0]
    if header["version"] != CURRENT_VERSION:
        raise corrupt(f"format version {header['version']}, expected {CURRENT_VERSION}")
    num_samples, num_fields = int(header["num_samples"]), int(header["num_fields"])
    page_size, table_at = int(header["page_size"]), int(header["alloc_table_ptr"])
    if not 0 < num_fields <= 16 or page_size <= 0 or page_size & (page_size - 1):
        raise corrupt(f"garbled header: {num_fields} fields, page size {page_size}")
    descriptors_at = HeaderType.itemsize
    metadata_at = descriptors_at + num_fields * FieldDescType.itemsize
    if metadata_at > size:
        raise corrupt("ends inside the field descriptors")
    descriptors = np.fromfile(path, dtype=FieldDescType, count=num_fields, offset=descriptors_at)
    try:
        handlers = get_handlers(descriptors)
    except (KeyError, ValueError) as err:
        raise corrupt(f"unknown field type ({err})") from None
    names = [decode_null_terminated_string(d["name"]) for d in descriptors]
    if tuple(names) != BETON_FIELDS:
        raise corrupt(f"fields {names}, expected {list(BETON_FIELDS)}")
    metadata_type = get_metadata_type(handlers)
    data_at = metadata_at + num_samples * metadata_type.itemsize
    if not data_at <= table_at <= size:
        raise corrupt(f"allocation table at byte {table_at}, file has {size} (data region from {data_at})")
    if (size - table_at) % ALLOC_TABLE_TYPE.itemsize:
        raise corrupt("the allocation table is cut short")
    metadata = np.fromfile(path, dtype=metadata_type, count=num_samples, offset=metadata_at)
    table = np.fromfile(path, dtype=ALLOC_TABLE_TYPE, offset=table_at)
    images, labels = metadata["f0"], metadata["f1"]
    if len(table) != num_samples:
        raise corrupt(f"{len(table)} allocations for {num_samples} samples")
    if num_samples:
        ends = table["ptr"] + table["size"]
        if table["ptr"].min() < data_at or ends.max() > table_at:
            raise corrupt("sample data outside the data region")
        if not np.isin(images["data_ptr"], table["ptr"]).all():
            raise corrupt("an image points at no allocation")
        if images["mode"].max() > 1 or images["width"].min() == 0 or images["height"].min() == 0:
            raise corrupt("garbled image metadata")
    manifest_file = manifest_path(path)
    if manifest_file.is_file():
        try:
            manifest = json.loads(manifest_file.read_text())
        except json.JSONDecodeError:
            raise corrupt(f"unreadable manifest '{manifest_file}'") from None
        if manifest.get("bytes") != size or manifest.get("num_samples") != num_samples:
            raise corrupt(f"{size} bytes / {num_samples} samples, its manifest says "
                          f"{manifest.get('bytes')} / {manifest.get('num_samples')}")
    return {"num_samples": num_samples, "labels": np.asarray(labels).copy(),
            "max_height": int(images["height"].max()) if num_samples else 0,
            "max_width": int(images["width"].max()) if num_samples else 0}


# ---- the manifest ----------------------------------------------------------------------------------

def expected_manifest(*, dataset: str, split: str, num_samples: int, subset: int, options: dict) -> dict:
    """The manifest keys a file must carry to be reused: format version, what was converted, how."""
    return {"manifest_version": MANIFEST_VERSION, "dataset": dataset, "split": split,
            "num_samples": int(num_samples), "subset": subset, **options}


def verified(path: Path, expected: dict) -> str | None:
    """None when `path` is a complete file made with these options (expected_manifest); else why not."""
    if not path.exists():
        return "absent"
    try:
        info = inspect_beton(path)
    except UserError as err:
        return str(err)
    manifest_file = manifest_path(path)
    if not manifest_file.is_file():
        return "no manifest (unfinished or foreign file)"
    manifest = json.loads(manifest_file.read_text())
    if any(manifest.get(key) != value for key, value in expected.items() if key != "num_samples"):
        return "written with other options"
    if info["num_samples"] != expected["num_samples"]:
        return f"{info['num_samples']} samples, expected {expected['num_samples']}"
    return None


def write_manifest(path: Path, expected: dict, labels: np.ndarray, seconds: float) -> dict:
    """Write `path`'s manifest atomically (temporary file, rename): the expected keys, the file's
    size in bytes, the count per label, when and how long (seconds) the write took."""
    values, counts = np.unique(labels, return_counts=True)
    manifest = {**expected, "bytes": path.stat().st_size,
                "labels": {str(k): int(v) for k, v in zip(values, counts)},
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(seconds, 1)}
    temp = manifest_path(path).with_suffix(".tmp")
    temp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(temp, manifest_path(path))
    return manifest
