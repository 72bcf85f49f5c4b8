"""Every seed the project derives, named, in one place.

A run has one user seed (`cfg.seed`). Everything random below it is a function of that seed and
of where the run is (epoch, sample, step, rank), never of how far a process got: a resumed run,
a different worker count or a different number of ranks draws the same numbers. The multipliers
are distinct primes so that no two (seed, epoch) or (seed, step, rank) pairs collide in practice.
Changing any of them changes every augmentation and every result: they are part of the format.
"""
from __future__ import annotations

import numpy as np

_EPOCH_MULTIPLIER = 1_000_003   # seed -> per-epoch seeds
_SAMPLE_MULTIPLIER = 10_000_019  # epoch seed -> per-sample augmentation seeds
_STEP_MULTIPLIER = 1_009        # step -> per-step seeds inside a method (e.g. W-MSE's sub-batches)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's order and augmentations."""
    return seed * _EPOCH_MULTIPLIER + epoch


def sample_seed(epoch_seed_value: int, index: int) -> int:
    """The seed of one sample's augmentations in one epoch (torchvision loader)."""
    return epoch_seed_value * _SAMPLE_MULTIPLIER + index


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed torch's global generator gets before each training step's forward, per rank."""
    return seed * _EPOCH_MULTIPLIER + step * _STEP_MULTIPLIER + rank


def stream_seed(*words: int) -> int:
    """A 64-bit seed from integers (numpy's SeedSequence hashing): distinct streams per purpose
    (the FFCV loader's crop and colour streams)."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1, dtype=np.uint64)[0])
