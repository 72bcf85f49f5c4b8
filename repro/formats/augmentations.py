"""The named augmentation recipes (pure data, no torch): each set is (view-1 parameters, view-2
parameters), and the normalisation statistics per dataset. The transforms that apply them are in
repro/data/augment.py (PIL, torchvision loader) and repro/data/gpu_augment.py (batched, FFCV loader);
the config loader checks `data.augmentations` against these names without importing either.

Parameters from solo-learn @9187ea3 `scripts/pretrain/{cifar,stl10,imagenet}/augmentations/`
(docs/sources.md section 3). Every set: RandomResizedCrop (bicubic), ColorJitter with p 0.8, grayscale,
Gaussian blur, solarization, horizontal flip 0.5; they differ as in this table.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ViewAugment:
    crop_scale: tuple[float, float] = (0.08, 1.0)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.0
    solarize_prob: float = 0.0
    flip_prob: float = 0.5


_SYMMETRIC = ViewAugment(jitter=(0.8, 0.8, 0.8, 0.2), blur_prob=0.5)
_SYMMETRIC_WEAK = ViewAugment(jitter=(0.4, 0.4, 0.4, 0.1), blur_prob=0.5)
_ASYMMETRIC = ViewAugment(jitter=(0.4, 0.4, 0.2, 0.1))

AUGMENTATION_SETS: dict[str, tuple[ViewAugment, ViewAugment]] = {
    # SimCLR, SwAV, FroSSL on CIFAR (solo-learn's original, random crop on)
    "symmetric": (_SYMMETRIC, _SYMMETRIC),
    # MoCo v2+, SimSiam; FroSSL on STL-10
    "symmetric_weak": (_SYMMETRIC_WEAK, _SYMMETRIC_WEAK),
    # STL-10 "symmetric" of solo-learn: strong jitter, no blur
    "symmetric_noblur": (replace(_SYMMETRIC, blur_prob=0.0),) * 2,
    # BYOL, DINO, Barlow Twins, CorInfoMax: solarization only on the second view
    "asymmetric": (_ASYMMETRIC, replace(_ASYMMETRIC, solarize_prob=0.2)),
    "vicreg": (replace(_ASYMMETRIC, crop_scale=(0.2, 1.0), solarize_prob=0.1),) * 2,
    "wmse": (ViewAugment(crop_scale=(0.2, 1.0), jitter=(0.8, 0.8, 0.8, 0.2)),) * 2,
    # ImageNet / SimCLR set (Figure 4)
    "imagenet_simclr": (_SYMMETRIC, _SYMMETRIC),
    # the CPU demo on 8x8 grayscale digits: crops and brightness/contrast only (no colour to
    # jitter, no flips: a mirrored digit is another symbol)
    "digits": (ViewAugment(crop_scale=(0.3, 1.0), jitter=(0.4, 0.4, 0.0, 0.0), grayscale_prob=0.0,
                           flip_prob=0.0),) * 2,
}

# Normalisation statistics (solo-learn@9187ea3 solo/data/pretrain_dataloader.py): CIFAR's own,
# CIFAR-10's (rounded) for STL-10 as solo-learn does, ImageNet's for the rest.
MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4914, 0.4823, 0.4466), (0.247, 0.243, 0.261)),
    "digits": ((0.5,), (0.5,)),
}
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def mean_std(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return MEAN_STD.get(dataset, IMAGENET_MEAN_STD)
