"""Any dataset's converter, as the catalog (repro/formats/catalog.py) names it:

    python -m data_prep DATASET --root DATA_DIR [the converter's flags]
    python -m data_prep cifar100 --root data --splits train      # = python -m data_prep.write_cifar --dataset cifar100 ...
"""
from __future__ import annotations

import importlib

from repro.cli import UserError, run_cli
from repro.formats.catalog import DATASETS, dataset_record


def main(argv: list[str]) -> int | None:
    converts = [name for name, record in DATASETS.items() if record.has_converter]
    if not argv or argv[0].startswith("-"):
        raise UserError(f"name the dataset first: python -m data_prep {'|'.join(converts)} --root DATA_DIR")
    record = dataset_record(argv[0])
    if not record.has_converter:
        raise UserError(f"dataset {record.name} has no FFCV converter: choose one of {', '.join(converts)}")
    return importlib.import_module(record.converter_module).main([*record.converter_flags, *argv[1:]])


if __name__ == "__main__":
    run_cli(main)
