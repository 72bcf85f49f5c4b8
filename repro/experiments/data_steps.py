"""Data preparation before a target trains: download a missing dataset, write the FFCV file of its
training split into the cache folder (Options.cache: CACHE_DIR, default OUT/cache), so that DATA_DIR
and IMAGENET_DIR may be read-only mounts. What a dataset is (source folder, download URL,
converter, FFCV file) comes from the dataset catalog, repro/formats/catalog.py."""
from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path

from repro.cli import UserError
from repro.experiments.options import Options
from repro.experiments.plan import RunSpec
from repro.experiments.state import read_yaml
from repro.formats.beton import beton_path, complete, ffcv_dir
from repro.formats.catalog import DATASETS, dataset_record

# the Make variable that sets a dataset's data.root (default DATA_DIR)
ROOT_VARIABLE = {"imagenet": "IMAGENET_DIR"}


def planned_datasets(specs: list[RunSpec], opts: Options) -> dict[str, str]:
    """Experiment dataset (a config folder) -> its config's data.dataset (a catalog record); {} when
    nothing is prepared (PREPARE_DATA=none, or data.dataset overridden: the runs read another dataset)."""
    if opts.prepare_data == "none" or any(o.startswith("data.dataset=") for o in opts.overrides):
        return {}
    return {s.dataset: read_yaml(s.config).get("data", {}).get("dataset", s.dataset) for s in specs if s.config.exists()}


def ready_ffcv_file(root: Path, record, opts: Options) -> Path | None:
    """A finished training-split file in the loader's order (repro.formats.beton.find_beton): the
    cache folder first, then next to the data."""
    candidates = (beton_path(root, record.name, record.train_split, opts.cache),
                  beton_path(root, record.name, record.train_split))
    return next((path for path in candidates if complete(path)), None)


def data_steps(specs: list[RunSpec], opts: Options) -> list[tuple[str, list[str] | None]]:
    """(description, command or None) per dataset of the planned runs: download the source if
    absent, write the FFCV file of the training split into the cache folder if ffcv is installed
    and no finished file (complete manifest) is in the cache folder or next to the data."""
    has_ffcv = importlib.util.find_spec("ffcv") is not None
    steps = []
    for dataset, kind in planned_datasets(specs, opts).items():
        record = dataset_record(kind)
        root = Path(opts.data_root(dataset))
        if not (root / record.source_folder).exists():
            if record.download_url is None:
                steps.append((f"data: no {dataset} at {root}/{record.source_folder}: put it there by hand "
                              f"(docs/data.md) or pass {ROOT_VARIABLE.get(dataset, 'DATA_DIR')}=...", None))
                continue
            steps.append((f"data: download {dataset} into {root}",
                          [opts.python, "-m", "repro.experiments", "download", kind, "--data-dir", str(root)]))
        if record.ffcv_train_file is None:
            steps.append((f"data: {dataset} has no FFCV converter: it trains from the torchvision loader", None))
            continue
        ready = ready_ffcv_file(root, record, opts)
        if ready is not None:
            steps.append((f"data: {ready} exists (manifest complete), reused", None))
        elif has_ffcv:
            steps.append((f"data: FFCV file for {dataset} -> {ffcv_dir(root, opts.cache)}",
                          [opts.python, *record.converter_argv(root, [record.train_split]),
                           "--out", str(ffcv_dir(root, opts.cache))]))
        else:
            steps.append((f"data: ffcv not installed: {dataset} trains from the torchvision loader", None))
    return steps


def planned_data(specs: list[RunSpec], opts: Options) -> dict:
    """What data_steps will fetch and write, for the plan summary: {"downloads": [text], "by_hand":
    [text], "ffcv_bytes": raw-pixel bytes of the FFCV files to write (images x side^2 x 3, before
    ffcv's page padding), "ffcv_jpeg": [datasets whose file is JPEG, size not estimated]}."""
    has_ffcv = importlib.util.find_spec("ffcv") is not None
    out = {"downloads": [], "by_hand": [], "ffcv_bytes": 0, "ffcv_jpeg": []}
    for dataset, kind in planned_datasets(specs, opts).items():
        record = dataset_record(kind)
        root = Path(opts.data_root(dataset))
        if not (root / record.source_folder).exists():
            if record.download_url is None:
                out["by_hand"].append(f"{dataset} at {root}/{record.source_folder} "
                                      f"({ROOT_VARIABLE.get(dataset, 'DATA_DIR')}=..., docs/data.md)")
                continue
            unpacked = f"; {record.pixel_bytes / 1e9:.2f} GB unpacked" if record.pixel_bytes else ""
            size = record.archive_size or f"(archive size not documented{unpacked})"
            out["downloads"].append(f"{dataset} {size} from {record.download_url} into {root}")
        if record.ffcv_train_file is None or not has_ffcv or ready_ffcv_file(root, record, opts) is not None:
            continue
        images = record.split_sizes.get(record.train_split)
        if images:
            out["ffcv_bytes"] += images * record.image_size ** 2 * 3
        else:
            out["ffcv_jpeg"].append(dataset)
    return out


def downloadable() -> list[str]:
    return [name for name, record in DATASETS.items() if record.download_url and record.torchvision_class]


def check_imagenet(folder: str) -> str:
    """ImageNet is put in place by hand (docs/data.md): FOLDER/train/<class>/<image> and
    FOLDER/val/<class>/<image> with the same class folders, none empty. One line saying what is
    there; a UserError names what is not (e.g. val/ as 50,000 loose images, not sorted by class)."""
    root = Path(folder)
    if not (root / "train").is_dir():
        return (f"ImageNet: no {root}/train: it cannot be downloaded; put train/ and val/ there by hand "
                f"(docs/data.md) for figure4 and all, or pass IMAGENET_DIR=; the other targets do not need it")
    counts = {}
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise UserError(f"ImageNet at {root} has train/ but no {split}/: put the validation images there "
                            f"as {split}/<class>/<image> (docs/data.md)")
        entries = list((root / split).iterdir())
        loose = [e.name for e in entries if e.is_file()]
        if loose:
            raise UserError(f"ImageNet {root}/{split}/ holds {len(loose)} files directly (e.g. {loose[0]}), not in "
                            f"class folders: sort them into {split}/<class>/<image> (docs/data.md)")
        counts[split] = {e.name: sum(1 for _ in e.iterdir()) for e in entries}
        empty = sorted(name for name, n in counts[split].items() if n == 0)
        if empty or not counts[split]:
            raise UserError(f"ImageNet {root}/{split}/ has {len(empty)} empty class folders of {len(counts[split])}"
                            f"{f' (e.g. {empty[0]})' if empty else ''}: copy the images in (docs/data.md)")
    if set(counts["train"]) != set(counts["val"]):
        odd = sorted(set(counts["train"]) ^ set(counts["val"]))
        raise UserError(f"ImageNet at {root}: train/ and val/ have different class folders ({len(odd)} in one only, "
                        f"e.g. {odd[0]}): both need the same classes (docs/data.md)")
    classes = len(counts["train"])
    return (f"ImageNet at {root}: {classes} classes{'' if classes == 1000 else ' (ImageNet-1k has 1000)'}, "
            f"{sum(counts['train'].values())} train and {sum(counts['val'].values())} val images: layout OK")


def download(dataset: str, data_dir: str) -> None:
    """torchvision's own download of the training split (the test split's files come with it);
    ImageNet: its layout checked (check_imagenet), `data_dir` being its folder."""
    import torchvision
    if dataset == "imagenet":
        print(check_imagenet(data_dir), flush=True)
        return
    if dataset not in downloadable():
        raise UserError(f"download {dataset}: only {', '.join(downloadable())} can be downloaded (ImageNet: by hand)")
    record = DATASETS[dataset]
    try:   # CIFAR10/CIFAR100 (train=True) and STL10 (split="train") download by default arguments
        getattr(torchvision.datasets, record.torchvision_class)(data_dir, download=True)
    except (OSError, RuntimeError, EOFError, tarfile.TarError) as err:  # URLError is an OSError
        detail = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        raise UserError(f"download of {dataset} into {data_dir} failed ({detail}): without network, put "
                        f"{record.source_folder}/ (unpacked from {record.download_url}) or that .tar.gz in "
                        f"{data_dir}/ and run again, or set PREPARE_DATA=none if the data is elsewhere") from None
