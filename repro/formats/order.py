"""Which images an epoch visits, in which batches, on which rank; and the fixed subset rule.

Both loaders (repro.data.Loader on torchvision datasets, repro.data.ffcv_loader on .beton files)
and the converters (data_prep --subset) take their positions from here, so the two loaders see the
same images in the same batches and a converted subset holds the images build_dataset keeps.

An epoch's order is torch.randperm seeded by repro.seeds.epoch_seed(seed, epoch): a function of
(seed, epoch) alone, so a run resumed at any batch sees the batches an uninterrupted run sees.
`batch_size` is always the global batch: with world_size > 1 each rank takes its contiguous
batch_size / world_size slice of every global batch, so the ranks together see exactly the batches
one process would.
"""
from __future__ import annotations

import numpy as np
import torch

from repro.seeds import epoch_seed

SUBSET_SEED = 0  # the subset is independent of the run's seed: every method sees the same images


def check_sharding(batch_size: int, rank: int, world_size: int) -> None:
    """ValueError unless `batch_size` splits evenly over `world_size` ranks and `rank` is one of them."""
    if world_size < 1 or batch_size % world_size:
        raise ValueError(f"global batch {batch_size} is not divisible by world size {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")


def batch_count(num_samples: int, batch_size: int, drop_last: bool) -> int:
    """Global batches per epoch."""
    return num_samples // batch_size if drop_last else -(-num_samples // batch_size)


def epoch_order(num_samples: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The epoch's permutation of positions 0..num_samples-1 (int64; identity without shuffle)."""
    if not shuffle:
        return np.arange(num_samples, dtype=np.int64)
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(num_samples, generator=generator).numpy()


def epoch_batches(num_samples: int, *, seed: int, epoch: int, shuffle: bool, drop_last: bool,
                  batch_size: int, rank: int = 0, world_size: int = 1, start_batch: int = 0) -> list[np.ndarray]:
    """This rank's positions (int64 arrays), batch by batch, from global batch `start_batch` on."""
    check_sharding(batch_size, rank, world_size)
    order = epoch_order(num_samples, seed=seed, epoch=epoch, shuffle=shuffle)
    per_rank = batch_size // world_size
    batches = []
    for b in range(start_batch, batch_count(num_samples, batch_size, drop_last)):
        batch = order[b * batch_size:(b + 1) * batch_size]
        batches.append(batch[rank * per_rank:(rank + 1) * per_rank])
    return batches


def subset_positions(count: int, subset: int) -> np.ndarray:
    """The positions (sorted, int64) of a fixed random subset of `subset` of `count` images: the
    first `subset` of a randperm seeded SUBSET_SEED. subset 0 or >= count: every position."""
    if not subset or subset >= count:
        return np.arange(count, dtype=np.int64)
    generator = torch.Generator().manual_seed(SUBSET_SEED)
    return torch.randperm(count, generator=generator)[:subset].sort().values.numpy()
