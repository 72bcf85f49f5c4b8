"""Read-only data: a CIFAR-10 target trains from a data folder it may not write to; the FFCV file
is written to, and read from, the cache folder (data.cache_dir, CACHE_DIR), and is reused there.

Permissions are removed from the data folder (chmod a-w). Root ignores permissions, so the test
does not rely on a write failing: it asserts that the set of files under the data folder, with
their sizes, modes and modification times, is the same after the target as before, and that the
FFCV file and its manifest are in the cache folder. The data are synthetic CIFAR-10 pickles in
torchvision's layout (their md5 differs from the release's): the subprocesses get a
sitecustomize.py that switches off torchvision's CIFAR integrity check, and nothing else.
"""
import stat
from pathlib import Path

import numpy as np
import pytest

from repro.experiments.options import Options
from repro.experiments.run import run_target
from repro.experiments.table import TABLE2
from repro.formats.beton import beton_path, find_beton, rebuild_command
from tests.cifar_fixture import write_torchvision_cifar10
from tests.conftest import ROOT
from tests.integrity_shim import CIFAR, write_shim

TINY = ("model.width=8", "model.proj_hidden_dim=32", "model.proj_output_dim=16", "data.batch_size=16",
        "data.num_workers=0", "device=cpu", "train.log_every=1", "eval.probe_epochs=1", "eval.probe_batch_size=16",
        "eval.knn_k=5", "eval.online_eval_every=0")

def snapshot(folder: Path) -> dict[str, tuple]:
    """Every path under `folder` with (size, mode, mtime in ns): what a write would change."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mode, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def set_writable(folder: Path, writable: bool) -> None:
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def tiny_cifar10(root: Path) -> Path:
    rng = np.random.default_rng(0)
    splits = {split: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), [i % 10 for i in range(n)])
              for split, n in (("train", 64), ("test", 20))}
    return write_torchvision_cifar10(root, splits)


def test_lookup_order_is_the_cache_folder_then_next_to_the_data(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    assert find_beton(data, "cifar10", "train", cache) is None
    beside = beton_path(data, "cifar10", "train")
    beside.parent.mkdir(parents=True)
    beside.touch()
    assert find_beton(data, "cifar10", "train", cache) == beside      # a file an earlier `make data` wrote
    cached = beton_path(data, "cifar10", "train", cache)
    assert cached == cache / "ffcv" / "cifar10_train.beton"
    cached.parent.mkdir(parents=True)
    cached.touch()
    assert find_beton(data, "cifar10", "train", cache) == cached
    assert rebuild_command("cifar10", data, "train", cache).endswith(f"--root {data} --splits train --out {cache}/ffcv")


def test_cifar_target_with_a_read_only_data_folder_writes_the_ffcv_file_to_the_cache(tmp_path, monkeypatch, capfd):
    pytest.importorskip("ffcv")
    if not (ROOT / "repro/configs/cifar10/frossl.yaml").exists():
        pytest.skip("the CIFAR-10 FroSSL config is not written")
    data, cache, out = tmp_path / "data", tmp_path / "cache", tmp_path / "runs"
    tiny_cifar10(data)
    monkeypatch.setenv("PYTHONPATH", write_shim(tmp_path / "shim", CIFAR))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    opts = Options(out=out, data_dir=str(data), cache_dir=str(cache), methods=("frossl",), datasets=("cifar10",),
                   epochs=1, probe="cached", overrides=TINY)
    set_writable(data, False)
    before = snapshot(data)
    try:
        run_target(TABLE2, opts)
        output = capfd.readouterr()
        assert snapshot(data) == before                           # nothing created or changed in the data folder
        beton = cache / "ffcv" / "cifar10_train.beton"
        assert beton.is_file() and (cache / "ffcv" / "cifar10_train.beton.json").is_file()
        assert f"data: FFCV two-view loader for cifar10 train: {beton}" in output.err
        runs = list(out.glob("cifar10-frossl-seed0*"))
        assert len(runs) == 1, output.out[-2000:] + output.err[-2000:]
        run = runs[0]
        assert (run / "pretrain.json").is_file() and (run / "eval_cached.json").is_file()

        # a second target run reuses the verified file: no converter, the file untouched
        written = beton.stat().st_mtime_ns
        run_target(TABLE2, Options(**{**opts.__dict__, "dry_run": True}))
        output = capfd.readouterr()
        assert f"# data: {beton} exists (manifest complete), reused" in output.out
        assert "data_prep" not in output.out and beton.stat().st_mtime_ns == written
    finally:
        set_writable(data, True)
