"""SSL augmentation sets (torchvision transforms on PIL images).

Parameters from solo-learn @9187ea3 `scripts/pretrain/{cifar,stl10,imagenet}/augmentations/`
(docs/sources.md section 3). Every set: RandomResizedCrop (bicubic), ColorJitter with p 0.8, grayscale,
Gaussian blur, solarization, horizontal flip 0.5; they differ as in this table.
Each entry is (view-1 parameters, view-2 parameters).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from PIL import ImageFilter
from torchvision import transforms as T


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


class GaussianBlur:
    """PIL Gaussian blur with sigma ~ U(0.1, 2) pixels, as solo-learn (no kernel-size cut-off, so
    the same transform at every resolution). Draws from torch's RNG, like torchvision's transforms."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, image):
        sigma = self.sigma[0] + (self.sigma[1] - self.sigma[0]) * torch.rand(()).item()
        return image.filter(ImageFilter.GaussianBlur(radius=sigma))

    def __repr__(self) -> str:
        return f"GaussianBlur(sigma={self.sigma})"


def view_transform(aug: ViewAugment, size: int, dataset: str) -> T.Compose:
    mean, std = mean_std(dataset)
    steps = [
        T.RandomResizedCrop(size, scale=aug.crop_scale, interpolation=T.InterpolationMode.BICUBIC),
        T.RandomApply([T.ColorJitter(*aug.jitter)], p=aug.jitter_prob),
    ]
    if aug.grayscale_prob > 0:
        steps.append(T.RandomGrayscale(p=aug.grayscale_prob))
    if aug.blur_prob > 0:
        steps.append(T.RandomApply([GaussianBlur()], p=aug.blur_prob))
    if aug.solarize_prob > 0:
        steps.append(T.RandomSolarize(128, p=aug.solarize_prob))
    if aug.flip_prob > 0:
        steps.append(T.RandomHorizontalFlip(p=aug.flip_prob))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


class TwoViews:
    """Callable returning two independently augmented views of one image."""

    def __init__(self, augment_set: str, size: int, dataset: str):
        first, second = AUGMENTATION_SETS[augment_set]
        self.transforms = (view_transform(first, size, dataset), view_transform(second, size, dataset))

    def __call__(self, image) -> list[torch.Tensor]:
        return [t(image) for t in self.transforms]


def eval_transform(size: int, dataset: str) -> T.Compose:
    """No augmentation. Image folders (ImageNet): resize to 256/224 of `size`, centre crop; the
    fixed-size datasets are used at their native resolution."""
    mean, std = mean_std(dataset)
    steps = []
    if dataset == "imagefolder":
        steps += [T.Resize(int(round(size * 256 / 224)), interpolation=T.InterpolationMode.BICUBIC),
                  T.CenterCrop(size)]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


def probe_train_transform(size: int, dataset: str) -> T.Compose:
    """The linear probe's training augmentation: crop + flip (solo-learn's linear evaluation)."""
    mean, std = mean_std(dataset)
    return T.Compose([T.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                      T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
