"""The checks before a target starts (repro/experiments/preflight.py): each refusal is one `error:`
line, exit 2, within seconds, with nothing started and nothing written. The machine is simulated
through preflight.PROBES (a full disk, a small /dev/shm, a read-only folder for a root user)."""
import importlib
import os
import socket
import time

import pytest

from repro.cli import run_cli
from repro.experiments.cli import main
from repro.experiments.plan import config_path

preflight = importlib.import_module("repro.experiments.preflight")   # the module, not the function

pytestmark = pytest.mark.skipif(not config_path("cifar10", "frossl").exists(),
                                reason="repro/configs/cifar10/frossl.yaml not written")


def refuse(capsys, *argv):
    """Run `python -m repro.experiments ARGV` in-process: (exit status, stderr lines, seconds)."""
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, list(argv))
    seconds = time.monotonic() - started
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines(), seconds


def table2(tmp_path, *extra):
    return ["table2", "--methods", "frossl", "--datasets", "cifar10", "--out", str(tmp_path / "runs"),
            "--data-dir", str(tmp_path / "data"), *extra]


@pytest.fixture
def cifar_present(tmp_path):
    (tmp_path / "data" / "cifar-10-batches-py").mkdir(parents=True)


def assert_refused(result, *words, tmp_path=None):
    code, lines, seconds = result
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(w in lines[0] for w in words) and "nothing was started" in lines[0], lines[0]
    assert seconds < 10, seconds
    if tmp_path is not None:   # nothing created: no run folder, no cache, no download
        assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) \
            in ([], ["data", "data/cifar-10-batches-py"]), list(tmp_path.rglob("*"))


def test_a_missing_dataset_that_will_not_be_downloaded(tmp_path, capsys):
    result = refuse(capsys, *table2(tmp_path, "--prepare-data", "none"))
    assert_refused(result, f"no cifar10 at {tmp_path}/data/cifar-10-batches-py", "PREPARE_DATA=auto", "DATA_DIR=",
                   tmp_path=tmp_path)


@pytest.mark.parametrize("target", ["figure4", "all"])
def test_a_missing_imagenet_folder_stops_figure4_and_all_before_anything(tmp_path, capsys, target):
    if not config_path("imagenet", "frossl").exists():
        pytest.skip("repro/configs/imagenet/frossl.yaml not written")
    result = refuse(capsys, target, "--out", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"))
    assert_refused(result, f"no ImageNet image folder at {tmp_path}/data/imagenet/train", "IMAGENET_DIR=",
                   tmp_path=tmp_path)


def test_an_unwritable_output_folder(tmp_path, capsys, cifar_present, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:   # root writes through the mode bits: simulate the read-only mount instead
        monkeypatch.setattr(preflight.PROBES, "writable", lambda path: path != locked)
    try:
        result = refuse(capsys, *table2(tmp_path)[:-4], "--out", str(locked / "runs"),
                        "--data-dir", str(tmp_path / "data"))
    finally:
        locked.chmod(0o755)
    assert_refused(result, f"OUT={locked}/runs is not writable", "writable OUT=")
    assert list(locked.iterdir()) == []


def test_too_little_shared_memory_names_ipc_host(tmp_path, capsys, cifar_present, monkeypatch):
    monkeypatch.setattr(preflight.PROBES, "shm_bytes", lambda: 64 * 2**20 // 100)   # a sliver of Docker's 64 MB
    result = refuse(capsys, *table2(tmp_path))
    assert_refused(result, "/dev/shm has 1 MB free", "cifar10-frossl-seed0", "--ipc=host", "--shm-size=",
                   tmp_path=tmp_path)


def test_too_little_disk(tmp_path, capsys, cifar_present, monkeypatch):
    monkeypatch.setattr(preflight.PROBES, "free_bytes", lambda path: 10**6)
    result = refuse(capsys, *table2(tmp_path))
    assert_refused(result, "not enough disk", "checkpoints of 1 runs", "0.00 GB free", tmp_path=tmp_path)


def test_shared_memory_need_is_the_loader_arithmetic():
    """torchvision path: processes x workers x prefetched batches x images per process x 2 views x
    3 x side^2 x 4 bytes; FFCV trains from threads, so only rank 0's one-view validation loader."""
    from dataclasses import replace

    from repro.config import load_config
    from repro.experiments.options import Options
    cfg = load_config(config_path("cifar10", "frossl"), ["data.num_workers=4", "data.loader=torchvision"])
    need, how = preflight.shm_need(cfg, Options(gpus=2))
    assert need == 2 * 4 * 2 * (256 // 2) * 2 * 3 * 32 * 32 * 4 and how.startswith("training: ")
    ffcv = replace(cfg, data=replace(cfg.data, loader="ffcv"))
    assert preflight.shm_need(ffcv, Options(gpus=2), evaluate=False)[0] == 1 * 4 * 2 * (256 // 2) * 1 * 3 * 32 * 32 * 4


def test_shared_memory_need_counts_the_imagenet_probe():
    """Figure 4: the probe (one process, batches of 256 at 224 px, one view) needs more than FFCV
    training's batch of 224 / 4 GPUs: the estimate is the probe's, and a run that is not evaluated
    is estimated from its training loader alone."""
    from repro.config import load_config
    from repro.experiments.options import Options
    if not config_path("imagenet", "frossl").exists():
        pytest.skip("repro/configs/imagenet/frossl.yaml not written")
    cfg = load_config(config_path("imagenet", "frossl"), ["data.num_workers=8", "data.loader=ffcv"])
    assert cfg.eval.probe_batch_size == 256 and cfg.data.batch_size == 224
    opts = Options(gpus=4)
    need, how = preflight.shm_need(cfg, opts)
    assert need == 1 * 8 * 2 * 256 * 1 * 3 * 224 * 224 * 4 and how.startswith("probe: "), how   # 2.47 GB
    assert preflight.shm_need(cfg, opts, evaluate=False)[0] == 1 * 8 * 2 * (224 // 4) * 1 * 3 * 224 * 224 * 4


def test_too_little_shared_memory_for_the_imagenet_probe_names_ipc_host(tmp_path, capsys, monkeypatch):
    if not config_path("imagenet", "frossl").exists():
        pytest.skip("repro/configs/imagenet/frossl.yaml not written")
    for split in ("train", "val"):
        (tmp_path / "imagenet" / split).mkdir(parents=True)
    monkeypatch.setattr(preflight.PROBES, "free_bytes", lambda path: 10**12)
    monkeypatch.setattr(preflight.PROBES, "shm_bytes", lambda: 10**9)   # holds FFCV training's 0.54 GB, not the probe
    result = refuse(capsys, "figure4", "--gpus", "4", "--methods", "frossl", "--out", str(tmp_path / "runs"),
                    "--imagenet-dir", str(tmp_path / "imagenet"), "--overrides", "data.num_workers=8 data.loader=ffcv")
    assert_refused(result, "/dev/shm has 1000 MB free", "needs about 2466 MB", "probe: ", "--ipc=host",
                   "--shm-size=5g")


def test_a_plan_that_fits_passes_and_says_what_it_checked(tmp_path, capsys, cifar_present, monkeypatch):
    from repro.experiments.options import Options
    from repro.experiments.plan import plan_runs
    from repro.experiments.table import TABLE2
    monkeypatch.setattr(preflight.PROBES, "free_bytes", lambda path: 10**12)
    monkeypatch.setattr(preflight.PROBES, "shm_bytes", lambda: 10**10)
    opts = Options(out=tmp_path / "runs", data_dir=str(tmp_path / "data"), methods=("frossl",), datasets=("cifar10",))
    planned = preflight.preflight(plan_runs(TABLE2, opts), opts)
    assert [s.name for s in planned] == ["cifar10-frossl-seed0"]
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("# preflight: 1 runs; data: present; disk: about ") and "1000.00 GB free" in line
    assert not (tmp_path / "runs").exists()


def test_an_stl10_download_is_counted_against_the_disk_from_its_pixel_count(tmp_path, capsys, monkeypatch):
    # STL-10's page documents no archive size; its binaries are raw pixels, so the download (archive plus
    # unpacked files) is bounded by twice 113,000 images x 96 x 96 x 3 bytes (train, test, unlabeled)
    from repro.formats.catalog import DATASETS
    assert DATASETS["stl10"].archive_size is None
    assert DATASETS["stl10"].download_bytes == 2 * (5_000 + 8_000 + 100_000) * 96 * 96 * 3
    assert DATASETS["cifar10"].download_bytes == 2 * 163_000_000   # the documented archive size, twice
    assert DATASETS["imagefolder"].download_bytes is None
    monkeypatch.setattr(preflight.PROBES, "free_bytes", lambda path: 5 * 10**9)   # enough for checkpoints only
    monkeypatch.setattr(preflight.PROBES, "shm_bytes", lambda: 10**10)
    result = refuse(capsys, "table2", "--methods", "frossl", "--datasets", "stl10", "--out", str(tmp_path / "runs"),
                    "--data-dir", str(tmp_path / "data"))
    assert_refused(result, "not enough disk", "stl10 download 6.25 GB", "5.00 GB free", tmp_path=tmp_path)


# ---- several machines: the nodes meet at MASTER_ADDR:MASTER_PORT before anything starts ----------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("rank,addr,words", [
    (1, "no-such-node.invalid", ["does not resolve on node 1"]),
    (0, "192.0.2.1", ["not an address of this machine"]),                    # TEST-NET-1: never this machine
    (1, "127.0.0.1", ["node 1 found no node 0 there within 2 s"]),          # nothing listens there
    (0, "127.0.0.1", ["node 0 waited 2 s there, 0 of the 1 other nodes came"]),
])
def test_a_master_addr_the_nodes_cannot_meet_at_stops_each_within_rdzv_timeout(
        rank, addr, words, tmp_path, capsys, cifar_present, monkeypatch):
    monkeypatch.setattr(preflight.PROBES, "free_bytes", lambda path: 10**12)
    monkeypatch.setattr(preflight.PROBES, "shm_bytes", lambda: 10**10)
    monkeypatch.setattr(preflight, "checkpoint_bytes", lambda cfg: 0)   # the timing is the rendezvous's, not torch's import
    port = free_port()
    result = refuse(capsys, *table2(tmp_path, "--nnodes", "2", "--node-rank", str(rank), "--master-addr", addr,
                                    "--master-port", str(port), "--rdzv-timeout", "2"))
    assert_refused(result, f"MASTER_ADDR={addr} MASTER_PORT={port}", *words, "RDZV_TIMEOUT=2", tmp_path=tmp_path)


def test_the_nodes_meet_then_leave_master_port_free_for_torchrun():
    import threading
    from pathlib import Path

    from repro.experiments.options import Options
    port, met = free_port(), {}

    def node(rank):
        preflight.check_rendezvous(Options(out=Path("unused"), nnodes=3, node_rank=rank, master_addr="127.0.0.1",
                                           master_port=port, rdzv_timeout=20))
        met[rank] = time.monotonic()

    threads = [threading.Thread(target=node, args=(rank,)) for rank in (2, 1, 0)]   # node 0 last: the others retry
    for thread in threads:
        thread.start()
        time.sleep(0.3)
    for thread in threads:
        thread.join()
    assert sorted(met) == [0, 1, 2]
    with socket.socket() as listener:   # no SO_REUSEADDR: fails while a connection of node 0's lingers
        listener.bind(("127.0.0.1", port))
