"""The one entry point for data: the trainer and the evaluators ask for dataset X, split Y, a view
kind and the training device, and get an epoch-seeded loader of (views, labels) batches.

    loader = build_loader(cfg.data, split="train", views="two", shuffle=True, drop_last=True, seed=0,
                          device=torch.device("cuda"))
    for views, labels in loader.epoch(epoch): ...   # views: list of (N, C, H, W) tensors

View kinds: "two" (two augmented SSL views), "probe" (crop + flip, one view), "eval" (no
augmentation, one view). Batches and their order come from repro.formats.order; each sample's
augmentation draws from repro.seeds.sample_seed(epoch seed, index): a run resumed anywhere sees
exactly the batches an uninterrupted run sees.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from repro.data.augment import AUGMENTATION_SETS, TwoViews, eval_transform, probe_train_transform
from repro.data.datasets import build_dataset, num_classes
from repro.formats.catalog import DATASETS
from repro.formats.order import batch_count, check_sharding, epoch_batches
from repro.seeds import epoch_seed, sample_seed

__all__ = ["AUGMENTATION_SETS", "DATASETS", "Loader", "build_loader", "image_size", "num_classes"]


def image_size(data_cfg) -> int:
    return data_cfg.image_size or DATASETS[data_cfg.dataset].image_size


class SeededSamples(Dataset):
    """Each sample's random augmentation draws from its own seed, a function of (epoch seed,
    index) alone: the same batch comes out whatever the number of workers, the rank, or the point
    where a resumed run starts. torch's global RNG is left as it was."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.epoch_seed = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.epoch_seed, index))
            return self.dataset[index]


class Loader:
    """A dataset plus batching rules; `epoch(e)` gives that epoch's reproducible batches.

    `batch_size` is the global batch (repro.formats.order). device: the training device. Batches
    stay on the host; for a CUDA device they come in page-locked memory, so that the trainer's
    copies to the GPU can be asynchronous.
    """

    def __init__(self, dataset, *, batch_size: int, shuffle: bool, drop_last: bool,
                 num_workers: int, seed: int, device: str | torch.device = "cpu", rank: int = 0,
                 world_size: int = 1):
        check_sharding(batch_size, rank, world_size)
        self.dataset = dataset
        self.samples = SeededSamples(dataset)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.seed = seed
        self.device = torch.device(device)
        self.pin_memory = self.device.type == "cuda"
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return batch_count(len(self.dataset), self.batch_size, self.drop_last)

    def batches(self, epoch: int, start_batch: int = 0) -> list[list[int]]:
        """This rank's sample indices, batch by batch, from global batch `start_batch` on."""
        return [batch.tolist() for batch in epoch_batches(
            len(self.dataset), seed=self.seed, epoch=epoch, shuffle=self.shuffle, drop_last=self.drop_last,
            batch_size=self.batch_size, rank=self.rank, world_size=self.world_size, start_batch=start_batch)]

    def epoch(self, epoch: int, start_batch: int = 0):
        """Batches of epoch `epoch` (from global batch `start_batch`, to resume mid-epoch)."""
        self.samples.epoch_seed = epoch_seed(self.seed, epoch)
        batches = self.batches(epoch, start_batch)
        if not batches:
            return
        loader = DataLoader(self.samples, batch_sampler=batches, num_workers=self.num_workers,
                            pin_memory=self.pin_memory, persistent_workers=False)
        for images, labels in loader:
            views = images if isinstance(images, list) else [images]
            yield views, labels


def build_loader(data_cfg, *, split: str, views: str, shuffle: bool, drop_last: bool, seed: int,
                 device: torch.device, batch_size: int | None = None, subset: int = 0,
                 rank: int = 0, world_size: int = 1):
    """A Loader (or, for two views, the FFCV loader when its file exists) for the training device
    `device`: on CUDA, batches come in pinned memory and FFCV's colour augmentation runs on the
    GPU; on CPU the same code runs there. subset > 0: a fixed random subset of the split."""
    device = torch.device(device)
    size = image_size(data_cfg)
    batch_size = batch_size or data_cfg.batch_size
    if views == "two":
        # FFCV when <root>/ffcv/<dataset>_<split>.beton exists (data.loader), else torchvision;
        # one log line says which. Imported here: numba/ffcv load only when used.
        from repro.data.ffcv_loader import two_view_ffcv_loader
        fast = two_view_ffcv_loader(data_cfg, split=split, shuffle=shuffle, drop_last=drop_last, seed=seed,
                                    batch_size=batch_size, subset=subset, device=device, rank=rank,
                                    world_size=world_size, image_size=size)
        if fast is not None:
            return fast
        transform = TwoViews(data_cfg.augmentations, size, data_cfg.dataset)
    elif views == "probe":
        transform = probe_train_transform(size, data_cfg.dataset)
    elif views == "eval":
        transform = eval_transform(size, data_cfg.dataset)
    else:
        raise ValueError(f"unknown view kind {views!r}: two, probe or eval")
    dataset = build_dataset(data_cfg.dataset, data_cfg.root, split, transform,
                            download=data_cfg.download, subset=subset)
    return Loader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                  num_workers=data_cfg.workers(), seed=seed,
                  device=device, rank=rank, world_size=world_size)
