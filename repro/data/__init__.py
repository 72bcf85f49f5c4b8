"""The one entry point for data: the trainer and the evaluators ask for dataset X, split Y, and a
view kind, and get an epoch-seeded loader of (views, labels) batches.

    loader = build_loader(cfg.data, split="train", views="two", shuffle=True, drop_last=True, seed=0)
    for views, labels in loader.epoch(epoch): ...   # views: list of (N, C, H, W) tensors

View kinds: "two" (two augmented SSL views), "probe" (crop + flip, one view), "eval" (no
augmentation, one view). Each epoch's order and augmentations are a function of (seed, epoch)
alone, so a run resumed at an epoch boundary sees exactly the batches an uninterrupted run sees.
"""
from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader

from repro.data.augment import AUGMENTATION_SETS, TwoViews, eval_transform, probe_train_transform
from repro.data.datasets import DATASETS, build_dataset, num_classes

__all__ = ["AUGMENTATION_SETS", "DATASETS", "Loader", "build_loader", "epoch_seed", "image_size",
           "num_classes"]


def image_size(data_cfg) -> int:
    return data_cfg.image_size or DATASETS[data_cfg.dataset].image_size


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def default_workers(requested: int) -> int:
    return min(8, os.cpu_count() or 1) if requested < 0 else requested


class Loader:
    """A dataset plus batching rules; `epoch(e)` gives that epoch's reproducible batches."""

    def __init__(self, dataset, *, batch_size: int, shuffle: bool, drop_last: bool,
                 num_workers: int, seed: int, pin_memory: bool = False):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = pin_memory

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int):
        """Batches of epoch `epoch`. With no workers the transforms draw from torch's global RNG,
        so it is seeded here too; workers are seeded from the generator by the DataLoader."""
        seed = epoch_seed(self.seed, epoch)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=self.shuffle,
                            drop_last=self.drop_last, num_workers=self.num_workers,
                            generator=generator, pin_memory=self.pin_memory,
                            persistent_workers=False)
        for images, labels in loader:
            views = images if isinstance(images, list) else [images]
            yield views, labels


def build_loader(data_cfg, *, split: str, views: str, shuffle: bool, drop_last: bool, seed: int,
                 batch_size: int | None = None, subset: int = 0, pin_memory: bool = False) -> Loader:
    """subset > 0: a fixed random subset of the split (see build_dataset)."""
    size = image_size(data_cfg)
    if views == "two":
        transform = TwoViews(data_cfg.augmentations, size, data_cfg.dataset)
    elif views == "probe":
        transform = probe_train_transform(size, data_cfg.dataset)
    elif views == "eval":
        transform = eval_transform(size, data_cfg.dataset)
    else:
        raise ValueError(f"unknown view kind {views!r}: two, probe or eval")
    dataset = build_dataset(data_cfg.dataset, data_cfg.root, split, transform,
                            download=data_cfg.download, subset=subset)
    return Loader(dataset, batch_size=batch_size or data_cfg.batch_size, shuffle=shuffle,
                  drop_last=drop_last, num_workers=default_workers(data_cfg.num_workers), seed=seed,
                  pin_memory=pin_memory)
