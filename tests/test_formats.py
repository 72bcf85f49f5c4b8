"""repro/formats: the dataset catalog against the libraries and documentation it summarises, the
epoch order and subset rules against their definitions, and the format layer's independence from
the training-side loaders."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision

from repro.cli import UserError
from repro.config import load_config
from repro.data import build_loader
from repro.data.datasets import build_dataset
from repro.formats.beton import beton_path, inspect_beton, rebuild_command
from repro.formats.catalog import DATASETS, dataset_record
from repro.formats.order import check_sharding, epoch_batches, subset_positions
from tests.conftest import ROOT

# ---- the catalog ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10"])
def test_catalog_sources_are_the_ones_torchvision_reads_and_downloads(name):
    record = dataset_record(name)
    cls = getattr(torchvision.datasets, record.torchvision_class)
    assert cls.base_folder == record.source_folder
    assert cls.url == record.download_url


def test_catalog_split_sizes_add_up_and_digits_match_scikit_learn():
    stl10 = DATASETS["stl10"].split_sizes
    assert stl10["train+unlabeled"] == stl10["train"] + stl10["unlabeled"]
    from sklearn.datasets import load_digits

    digits = DATASETS["digits"].split_sizes
    assert digits["train"] + digits["test"] == len(load_digits().target)
    assert [len(build_dataset("digits", "unused", split)) for split in ("train", "test")] == \
        [digits["train"], digits["test"]]


def test_every_record_names_a_training_split_it_has_and_a_converter_that_imports():
    import importlib

    for record in DATASETS.values():
        assert not record.splits or record.train_split in record.splits, record.name
        if record.has_converter:
            assert importlib.import_module(record.converter_module).main
            assert record.ffcv_train_file == str(beton_path("", record.name, record.train_split))


def test_unknown_dataset_is_a_user_error_naming_the_choices():
    with pytest.raises(UserError, match="choose one of cifar10, cifar100, stl10"):
        dataset_record("mnist")


@pytest.mark.parametrize("name", ["cifar10", "stl10"])
def test_converter_from_the_catalog_names_the_catalogs_source_when_it_is_missing(name, tmp_path):
    record = dataset_record(name)
    result = subprocess.run([sys.executable, *record.converter_argv(tmp_path, [record.train_split])], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert record.download_url in result.stderr and str(tmp_path / record.source_folder) in result.stderr


def test_rebuild_command_is_the_converter_line_or_says_there_is_none(tmp_path):
    assert rebuild_command("stl10", tmp_path, "train+unlabeled") == \
        f"python -m data_prep.write_stl10 --root {tmp_path} --splits train+unlabeled"
    assert rebuild_command("digits", tmp_path, "train") == "(no FFCV converter for dataset digits)"
    with pytest.raises(UserError, match="not found: build it with `python -m data_prep.write_cifar"):
        inspect_beton(tmp_path / "cifar10_train.beton", rebuild_command("cifar10", tmp_path, "train"))


def test_converters_import_the_format_layer_without_the_training_loaders():
    code = ("import sys, data_prep.write_cifar, data_prep.write_stl10, data_prep.write_imagefolder; "
            "print(sorted(m for m in sys.modules if m.startswith('repro.data')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ---- order and subset rules ----------------------------------------------------------------------


def test_epoch_order_is_randperm_seeded_per_epoch_and_sharded_per_rank():
    n, batch, seed, epoch = 103, 16, 7, 4
    expected = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    whole = epoch_batches(n, seed=seed, epoch=epoch, shuffle=True, drop_last=True, batch_size=batch)
    assert [b.tolist() for b in whole] == [expected[i:i + batch] for i in range(0, 6 * batch, batch)]
    halves = [epoch_batches(n, seed=seed, epoch=epoch, shuffle=True, drop_last=True, batch_size=batch,
                            rank=r, world_size=2, start_batch=2) for r in range(2)]
    for b, global_batch in enumerate(whole[2:]):
        assert np.array_equal(np.concatenate([halves[0][b], halves[1][b]]), global_batch)
    kept = epoch_batches(n, seed=seed, epoch=epoch, shuffle=False, drop_last=False, batch_size=batch)
    assert len(kept) == 7 and np.array_equal(np.concatenate(kept), np.arange(n))


def test_sharding_rules():
    check_sharding(64, 3, 4)
    with pytest.raises(ValueError, match="not divisible"):
        check_sharding(64, 0, 3)
    with pytest.raises(ValueError, match="outside world size"):
        check_sharding(64, 4, 4)


def test_subset_is_the_first_of_a_randperm_seeded_zero_sorted():
    expected = sorted(torch.randperm(1000, generator=torch.Generator().manual_seed(0))[:37].tolist())
    assert subset_positions(1000, 37).tolist() == expected
    assert subset_positions(10, 0).tolist() == subset_positions(10, 50).tolist() == list(range(10))
    # the torchvision path keeps exactly these images
    full, subset = build_dataset("digits", "unused", "train"), build_dataset("digits", "unused", "train", subset=37)
    positions = subset_positions(len(full), 37)
    assert [subset[i][1] for i in range(37)] == [full.targets[p] for p in positions]


# ---- the training device -----------------------------------------------------------------------------


def test_loader_pins_memory_exactly_for_a_cuda_device():
    cfg = load_config(None, ["data.dataset=digits", "data.augmentations=digits", "data.num_workers=0",
                             "data.batch_size=16", "model.in_channels=1"])
    args = dict(split="train", views="eval", shuffle=False, drop_last=False, seed=0)
    assert not build_loader(cfg.data, device=torch.device("cpu"), **args).pin_memory
    assert build_loader(cfg.data, device=torch.device("cuda"), **args).pin_memory  # built, not iterated
