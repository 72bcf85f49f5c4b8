"""The FFCV converters (data_prep/): bit-exact round trips, counts, idempotence, partial and damaged
outputs, one-line errors, the subset rule shared with the torchvision path. Files are written by
the converters in a subprocess, as a user runs them; data-dependent tests skip when
../shared/data is absent.
"""
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from repro.data.datasets import build_dataset
from repro.formats.beton import inspect_beton
from tests.cifar_fixture import convert, converted, converted_cifar100, read_beton
from tests.conftest import ROOT, SHARED_CIFAR
from tests.test_data import _write_stl10

pytest.importorskip("ffcv")


@pytest.fixture(scope="module")
def cifar100(tmp_path_factory):
    return converted_cifar100(tmp_path_factory.mktemp("cifar100"))


def test_cifar_round_trip_is_bit_exact_and_conversion_idempotent(cifar100):
    root, images, labels = cifar100
    for split in ("train", "test"):
        path = root / "ffcv" / f"cifar100_{split}.beton"
        back_images, back_labels = read_beton(path)
        assert np.array_equal(back_images, images[split])
        assert np.array_equal(back_labels, labels[split])
        manifest = json.loads((root / "ffcv" / f"cifar100_{split}.beton.json").read_text())
        assert manifest["num_samples"] == len(labels[split]) and manifest["bytes"] == path.stat().st_size
    # a second run keeps the verified files
    path = root / "ffcv" / "cifar100_test.beton"
    mtime = path.stat().st_mtime_ns
    out = converted("write_cifar", "--dataset", "cifar100", "--root", root, "--splits", "test")
    assert "up to date" in out and path.stat().st_mtime_ns == mtime


def test_partial_output_is_replaced_not_reused(cifar100, tmp_path):
    root, images, labels = cifar100
    (tmp_path / "cifar-100-python").symlink_to(root / "cifar-100-python")
    out_dir = tmp_path / "ffcv"
    out_dir.mkdir()
    source = (root / "ffcv" / "cifar100_test.beton").read_bytes()
    (out_dir / "cifar100_test.beton").write_bytes(source[: len(source) // 2])  # an interrupted write
    (out_dir / "cifar100_test.beton.json").write_text((root / "ffcv" / "cifar100_test.beton.json").read_text())
    out = converted("write_cifar", "--dataset", "cifar100", "--root", tmp_path, "--splits", "test")
    assert "rebuilding" in out and "truncated or corrupt" in out
    assert np.array_equal(read_beton(out_dir / "cifar100_test.beton")[0], images["test"])
    assert not list(out_dir.glob("*.partial*"))


def test_converter_errors_are_one_line(tmp_path):
    result = convert("write_cifar", "--dataset", "cifar10", "--root", tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "cifar-10-python.tar.gz" in result.stderr
    result = convert("write_stl10", "--root", tmp_path, "--splits", "validation")
    assert result.returncode == 2 and "unknown split" in result.stderr


@pytest.mark.needs_data
def test_real_cifar10_round_trip_is_bit_exact(cifar10_root, tmp_path):
    # written beside, not into, the shared fixture: a .beton there would switch other tests to FFCV
    converted("write_cifar", "--dataset", "cifar10", "--root", cifar10_root, "--out", tmp_path)
    from data_prep.write_cifar import read_split

    for split in ("train", "test"):
        images, labels = read_split(cifar10_root, "cifar10", split)
        back_images, back_labels = read_beton(tmp_path / f"cifar10_{split}.beton")
        assert len(back_labels) == {"train": 5000, "test": 1000}[split]
        assert np.array_equal(back_images, images) and np.array_equal(back_labels, labels)


def test_stl10_binary_files_convert_with_counts_and_unlabeled_minus_one(tmp_path):
    images = _write_stl10(tmp_path, n_train=6, n_test=4, n_unlabeled=5)
    out = converted("write_stl10", "--root", tmp_path)
    assert out.count("count check passed") == 4
    expected = {"train": (images["train"], [i % 10 for i in range(6)]),
                "test": (images["test"], [i % 10 for i in range(4)]),
                "unlabeled": (images["unlabeled"], [-1] * 5),
                "train+unlabeled": (np.concatenate([images["train"], images["unlabeled"]]),
                                    [i % 10 for i in range(6)] + [-1] * 5)}
    for split, (pixels, labels) in expected.items():
        back_images, back_labels = read_beton(tmp_path / "ffcv" / f"stl10_{split}.beton")
        assert back_labels.tolist() == labels, split
        assert np.array_equal(back_images, pixels), split  # column-major files land the right way up


def _smooth_images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Photo-like test images (gradients and blobs): JPEG's PSNR on white noise says little."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        channels = []
        for _ in range(3):
            a, b, c = rng.uniform(-1, 1, 3)
            cx, cy, r = rng.uniform(0.2, 0.8, 3)
            blob = np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (0.05 + 0.1 * r))
            channels.append(0.5 + 0.25 * (a * rows + b * cols) + 0.3 * c * blob)
        out.append((np.clip(np.stack(channels, -1), 0, 1) * 255).round().astype(np.uint8))
    return out


JPEG_MIN_PSNR = 30.0  # dB, quality 90 on photo-like images (ffcv's decoder is not bit-exact either)


def test_image_folder_jpeg_round_trip_within_psnr(tmp_path):
    originals = {}
    for split, n in (("train", 8), ("val", 4)):
        for k, image in enumerate(_smooth_images(n, 48, seed=len(split))):
            cls = "cat" if k % 2 else "dog"
            (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(tmp_path / split / cls / f"{k}.png")
            originals[(split, cls, f"{k}.png")] = image
    out = converted("write_imagefolder", "--root", tmp_path, "--quality", "90")
    assert out.count("count check passed") == 2
    for split in ("train", "val"):
        back_images, back_labels = read_beton(tmp_path / "ffcv" / f"imagefolder_{split}.beton")
        keys = sorted(k for k in originals if k[0] == split)  # ImageFolder's order: class, then file
        source = np.stack([originals[k] for k in keys]).astype(np.float64)
        assert back_labels.tolist() == [0 if k[1] == "cat" else 1 for k in keys]
        mse = ((back_images.astype(np.float64) - source) ** 2).mean(axis=(1, 2, 3))
        psnr = 10 * np.log10(255 ** 2 / mse)
        assert psnr.min() >= JPEG_MIN_PSNR, psnr
    manifest = json.loads((tmp_path / "ffcv" / "imagefolder_train.beton.json").read_text())
    assert (manifest["max_side"], manifest["quality"], manifest["classes"]) == (500, 90, ["cat", "dog"])
    # --max-side shrinks (never enlarges); --subset keeps a fixed subset; new options rebuild
    out = converted("write_imagefolder", "--root", tmp_path, "--splits", "train", "--max-side", "24",
                    "--subset", "5")
    assert "rebuilding (written with other options)" in out
    info = inspect_beton(tmp_path / "ffcv" / "imagefolder_train.beton")
    assert info["num_samples"] == 5 and (info["max_height"], info["max_width"]) == (24, 24)


# slow (make test-slow): all 60,000 real images, ~60 s; the default run converts small image folders
# with the same checks (test_image_folder_jpeg_round_trip_within_psnr, counts, labels, PSNR)
@pytest.mark.slow
@pytest.mark.needs_data
def test_real_cifar10_through_the_image_folder_path(tmp_path):
    if not SHARED_CIFAR.exists():
        pytest.skip(f"real CIFAR-10 not available at {SHARED_CIFAR} (only on development/CI machines)")
    with tarfile.open(SHARED_CIFAR, "r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    out = converted("write_imagefolder", "--root", tmp_path, "--workers", "2")
    assert out.count("count check passed") == 2
    for split, count in (("train", 50_000), ("test", 10_000)):
        manifest = json.loads((tmp_path / "ffcv" / f"imagefolder_{split}.beton.json").read_text())
        assert manifest["num_samples"] == count
        assert manifest["classes"] == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                       "horse", "ship", "truck"]
        assert manifest["labels"] == {str(c): count // 10 for c in range(10)}
        assert inspect_beton(tmp_path / "ffcv" / f"imagefolder_{split}.beton")["num_samples"] == count
    # pixels: the source JPEGs re-encoded at quality 90 come back within the stated PSNR
    from torchvision.datasets import ImageFolder

    back, labels = read_beton(tmp_path / "ffcv" / "imagefolder_test.beton")
    samples = ImageFolder(str(tmp_path / "test")).samples
    assert labels.tolist() == [label for _, label in samples]
    source = np.stack([np.asarray(Image.open(path).convert("RGB")) for path, _ in samples]).astype(np.float64)
    psnr = 10 * np.log10(255 ** 2 / ((back - source) ** 2).mean(axis=(1, 2, 3)))
    assert psnr.min() >= JPEG_MIN_PSNR and np.median(psnr) >= 38, (psnr.min(), np.median(psnr))


def test_subset_holds_the_images_the_torchvision_path_keeps(cifar100, tmp_path, accept_rebuilt_cifar):
    """--subset N and data.subset=N: the same images, in the same order, from one rule."""
    root, _, _ = cifar100
    converted("write_cifar", "--dataset", "cifar100", "--root", root, "--out", tmp_path, "--splits", "train",
              "--subset", "50")
    back_images, back_labels = read_beton(tmp_path / "cifar100_train.beton")
    kept = build_dataset("cifar100", root, "train", subset=50)
    assert len(kept) == len(back_labels) == 50
    assert back_labels.tolist() == [kept[i][1] for i in range(50)]
    assert all(np.array_equal(np.asarray(kept[i][0]), back_images[i]) for i in range(50))


def test_python_m_data_prep_runs_the_catalogs_converter(tmp_path):
    result = convert_any("cifar100", "--root", tmp_path, "--splits", "train")
    assert result.returncode == 2 and "cifar-100-python" in result.stderr  # write_cifar's own error
    result = convert_any("digits", "--root", tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "has no FFCV converter: choose one of cifar10, cifar100, stl10, imagefolder" in result.stderr


def convert_any(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_prep", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_two_nodes_writing_one_file_at_once_end_with_one_verified_file(cifar100, tmp_path):
    """Several nodes run the data step into one shared CACHE_DIR: one writes (under a lock, into a
    temporary name of its own, renamed when complete), the other waits and then finds it up to date."""
    root, _, _ = cifar100
    (tmp_path / "cifar-100-python").symlink_to(root / "cifar-100-python")
    command = [sys.executable, "-m", "data_prep.write_cifar", "--dataset", "cifar100", "--root", str(tmp_path),
               "--splits", "test", "--subset", "32"]
    nodes = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert sum("writing cifar100 test" in out for out in outputs) == 1, outputs
    assert sum("up to date" in out for out in outputs) == 1, outputs
    out_dir = tmp_path / "ffcv"
    assert len(read_beton(out_dir / "cifar100_test.beton")[0]) == 32   # "up to date": its manifest verified it
    assert not list(out_dir.glob("*.partial*")) and not list(out_dir.glob("*.errors*"))
