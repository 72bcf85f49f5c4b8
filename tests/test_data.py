from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from repro.cli import UserError
from repro.config import load_config
from repro.data import build_loader
from repro.data.datasets import build_dataset

CPU = torch.device("cpu")


def test_digits_split_is_fixed_and_disjoint():
    train, test = build_dataset("digits", "unused", "train"), build_dataset("digits", "unused", "test")
    assert (len(train), len(test)) == (1297, 500)
    image, label = train[0]
    assert image.size == (8, 8) and image.mode == "L" and 0 <= label <= 9
    train_pixels = {train.images[i].tobytes() for i in range(len(train))}
    # the split is a partition of scikit-learn's 1,797 images (duplicates aside)
    assert sum(test.images[i].tobytes() in train_pixels for i in range(len(test))) < 5
    assert sorted(set(train.targets)) == list(range(10))


def _write_stl10(root, n_train=6, n_test=4, n_unlabeled=5):
    """Files in STL-10's real binary layout: uint8 images stored column-major per channel,
    labels 1..10 as uint8."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {}
    for split, n in [("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)]:
        hwc = rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)
        images[split] = hwc
        hwc.transpose(0, 3, 2, 1).tofile(folder / f"{split}_X.bin")  # N, C, W, H on disk
        if split != "unlabeled":
            (np.arange(n) % 10 + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    (folder / "fold_indices.txt").write_text(" ".join(str(i) for i in range(n_train)) + "\n")
    return images


def test_stl10_binary_files_through_torchvision(tmp_path, monkeypatch):
    # the written files are not the originals, so torchvision's md5 check is bypassed here only
    monkeypatch.setattr(torchvision.datasets.STL10, "_check_integrity", lambda self: True)
    images = _write_stl10(tmp_path)
    train = build_dataset("stl10", tmp_path, "train")
    unlabeled = build_dataset("stl10", tmp_path, "unlabeled")
    both = build_dataset("stl10", tmp_path, "train+unlabeled")
    assert (len(train), len(unlabeled), len(both)) == (6, 5, 11)
    assert [train[i][1] for i in range(6)] == [i % 10 for i in range(6)]
    assert {unlabeled[i][1] for i in range(5)} == {-1}
    assert [both[i][1] for i in range(11)] == [i % 10 for i in range(6)] + [-1] * 5
    image, _ = train[3]
    assert np.array_equal(np.asarray(image), images["train"][3])  # pixels land where they belong


def _write_image_folder(root, classes=("cat", "dog"), per_class=6, size=40):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(size, size + 4, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")


def test_image_folder_two_views(tmp_path):
    _write_image_folder(tmp_path)
    cfg = load_config(None, [f"data.root={tmp_path}", "data.dataset=imagefolder", "data.image_size=32",
                             "data.num_workers=0", "data.batch_size=4", "data.augmentations=imagenet_simclr"])
    loader = build_loader(cfg.data, device=CPU, split="train", views="two", shuffle=True, drop_last=True,
                          seed=0)
    assert len(loader) == 3
    (view1, view2), labels = next(iter(loader.epoch(0)))
    assert view1.shape == view2.shape == (4, 3, 32, 32)
    assert not torch.equal(view1, view2)
    assert set(labels.tolist()) <= {0, 1}
    evaluation = build_loader(cfg.data, device=CPU, split="val", views="eval", shuffle=False, drop_last=False,
                              seed=0)
    (images,), _ = next(iter(evaluation.epoch(0)))
    assert images.shape == (4, 3, 32, 32)


def test_epochs_are_reproducible_and_distinct():
    cfg = load_config(None, ["data.dataset=digits", "data.augmentations=digits", "data.num_workers=0",
                             "data.batch_size=16", "model.in_channels=1"])
    loader = build_loader(cfg.data, device=CPU, split="train", views="two", shuffle=True, drop_last=True,
                          seed=3)
    first = next(iter(loader.epoch(5)))
    again = next(iter(loader.epoch(5)))
    other = next(iter(loader.epoch(6)))
    assert all(torch.equal(a, b) for a, b in zip(first[0], again[0]))
    assert torch.equal(first[1], again[1])
    assert not torch.equal(first[0][0], other[0][0])


def test_missing_dataset_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError) as err:
        build_dataset("cifar10", tmp_path / "nowhere", "train", download=False)
    message = str(err.value)
    assert "cifar-10-batches-py" in message and "\n" not in message
    with pytest.raises(UserError, match="image folder"):
        build_dataset("imagefolder", tmp_path / "nowhere", "train")
    with pytest.raises(UserError, match="no split"):
        build_dataset("cifar10", tmp_path, "validation")


def test_real_cifar10_through_torchvision(cifar10_root, accept_rebuilt_cifar):
    train = build_dataset("cifar10", cifar10_root, "train")
    test = build_dataset("cifar10", cifar10_root, "test")
    assert (len(train), len(test)) == (5000, 1000)
    assert sorted(set(train.targets)) == list(range(10))
    image, _ = train[0]
    assert image.size == (32, 32)
    subset = build_dataset("cifar10", cifar10_root, "train", subset=300)
    assert len(subset) == 300


def _digits_loader(**kwargs):
    cfg = load_config(None, ["data.dataset=digits", "data.augmentations=digits", "data.num_workers=0",
                             "data.batch_size=16", "model.in_channels=1"])
    args = dict(split="train", views="two", shuffle=True, drop_last=True, seed=1)
    args.update(kwargs)
    return build_loader(cfg.data, device=CPU, **args)


def test_resuming_mid_epoch_gives_the_same_batches():
    loader = _digits_loader()
    full = list(loader.epoch(2))
    tail = list(loader.epoch(2, start_batch=5))
    assert len(tail) == len(full) - 5
    for (views_a, labels_a), (views_b, labels_b) in zip(full[5:], tail):
        assert torch.equal(labels_a, labels_b)
        assert all(torch.equal(a, b) for a, b in zip(views_a, views_b))


def test_worker_count_does_not_change_the_batches():
    loader = _digits_loader()
    main_process = next(iter(loader.epoch(0)))
    loader.num_workers = 2
    workers = next(iter(loader.epoch(0)))
    assert all(torch.equal(a, b) for a, b in zip(main_process[0], workers[0]))


def test_ranks_see_disjoint_shards_that_cover_each_global_batch():
    single = _digits_loader()
    ranks = [_digits_loader(rank=r, world_size=2) for r in range(2)]
    for b, whole in enumerate(single.batches(4)):
        halves = [r.batches(4)[b] for r in ranks]
        assert len(halves[0]) == len(halves[1]) == 8
        assert not set(halves[0]) & set(halves[1])
        assert halves[0] + halves[1] == whole
    # and the augmented pixels agree with the single-process batch
    (whole_views, _), = [next(iter(single.epoch(4)))]
    (first_half, _), = [next(iter(ranks[0].epoch(4)))]
    assert torch.equal(whole_views[0][:8], first_half[0])
    with pytest.raises(ValueError, match="not divisible"):
        _digits_loader(batch_size=15, world_size=2)
