"""Shared test fixtures. Tests run on CPU; data-dependent tests skip with a reason when
../shared/data is absent (as it is on a user's machine)."""
import os
import signal
from pathlib import Path

import pytest
import torch

from repro.cli import restore_signals

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"

# Intra-op threads: the cores shared among pytest-xdist's workers, at most 2 per process, so that
# parallel workers do not oversubscribe the machine ...
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
torch.set_num_threads(THREADS)
# ... and the same for every process a test starts (trainers, make targets, converters): without it
# each takes all the cores beside the other workers, and oversubscribed OpenMP threads wait on each
# other (seconds per step instead of milliseconds for the tiny models: tests/test_targets_e2e.py).
os.environ["OMP_NUM_THREADS"] = str(THREADS)


def pytest_configure(config):
    # registered here rather than in pyproject.toml (the suite runs with --strict-markers)
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (tests/test_cuda.py, run by `make gpu-check`); "
                            "each skips with a reason without one")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _default_stop_signals():
    """Every test starts with Python's default stop-signal handlers, however pytest was started: a
    background job of a script inherits SIGINT ignored, `nohup` SIGHUP ignored (and both pass that on
    to the processes a test starts). tests/test_signals.py tests those starts on purpose."""
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL,
                signal.SIGHUP: signal.SIG_DFL}
    previous = {sig: signal.signal(sig, handler) for sig, handler in defaults.items()}
    yield
    restore_signals(previous)


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory):
    """A small real CIFAR-10 (500 train + 100 test images per class) in torchvision's layout."""
    if not SHARED_CIFAR.exists():
        pytest.skip(f"real CIFAR-10 not available at {SHARED_CIFAR} (only on development/CI machines)")
    from tests.cifar_fixture import read_cifar_jpegs, write_torchvision_cifar10

    root = tmp_path_factory.mktemp("cifar10")
    write_torchvision_cifar10(root, read_cifar_jpegs(SHARED_CIFAR, {"train": 500, "test": 100}))
    return root


@pytest.fixture
def accept_rebuilt_cifar(monkeypatch):
    """torchvision checks the original files' md5; the rebuilt (JPEG-decoded) files differ."""
    import torchvision.datasets.cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: True)


def crash_after_first_checkpoint(cfg, monkeypatch) -> None:
    """Train `cfg` until its first checkpoint is written, then die as a crash would (the checkpoint
    stays on disk); the caller then re-runs train(cfg) to resume."""
    from repro import train as train_module

    real_save = train_module.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        raise KeyboardInterrupt("simulated crash after the first checkpoint")

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(cfg)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
