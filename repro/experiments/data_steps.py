"""Data preparation before a target trains: download a missing dataset, write the FFCV file of its
training split. What a dataset is (source folder, download URL, converter, FFCV file) comes from
the dataset catalog, repro/formats/catalog.py."""
from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path

from repro.cli import UserError
from repro.experiments.options import Options
from repro.experiments.plan import RunSpec
from repro.experiments.state import read_yaml
from repro.formats.catalog import DATASETS, dataset_record

# the Make variable that sets a dataset's data.root (default DATA_DIR)
ROOT_VARIABLE = {"imagenet": "IMAGENET_DIR"}


def data_steps(specs: list[RunSpec], opts: Options) -> list[tuple[str, list[str] | None]]:
    """(description, command or None) per dataset of the planned runs: download the source if
    absent, write the FFCV file of the training split if ffcv is installed and the file is absent."""
    if opts.prepare_data == "none" or any(o.startswith("data.dataset=") for o in opts.overrides):
        return []   # data.dataset overridden: the runs read another dataset than the experiment's
    has_ffcv = importlib.util.find_spec("ffcv") is not None
    steps = []
    # experiment dataset (a config folder) -> its config's data.dataset, a catalog record
    datasets = {s.dataset: read_yaml(s.config).get("data", {}).get("dataset", s.dataset)
                for s in specs if s.config.exists()}
    for dataset, kind in datasets.items():
        record = dataset_record(kind)
        root = Path(opts.data_root(dataset))
        if not (root / record.source_folder).exists():
            if record.download_url is None:
                steps.append((f"data: no {dataset} at {root}/{record.source_folder}: put it there by hand "
                              f"(docs/data.md) or pass {ROOT_VARIABLE.get(dataset, 'DATA_DIR')}=...", None))
                continue
            steps.append((f"data: download {dataset} into {root}",
                          [opts.python, "-m", "repro.experiments", "download", kind, "--data-dir", str(root)]))
        beton = record.ffcv_train_file
        if beton is None:
            steps.append((f"data: {dataset} has no FFCV converter: it trains from the torchvision loader", None))
        elif (root / beton).exists():
            steps.append((f"data: {root / beton} exists", None))
        elif has_ffcv:
            steps.append((f"data: FFCV file for {dataset}",
                          [opts.python, *record.converter_argv(root, [record.train_split])]))
        else:
            steps.append((f"data: ffcv not installed: {dataset} trains from the torchvision loader", None))
    return steps


def downloadable() -> list[str]:
    return [name for name, record in DATASETS.items() if record.download_url and record.torchvision_class]


def download(dataset: str, data_dir: str) -> None:
    """torchvision's own download of the training split (the test split's files come with it)."""
    import torchvision
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
