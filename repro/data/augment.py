"""SSL augmentation sets as torchvision transforms on PIL images. The recipes themselves (which
jitter, blur, solarization per view) are data in repro/formats/augmentations.py.
"""
from __future__ import annotations

import torch
from PIL import ImageFilter
from torchvision import transforms as T

from repro.formats.augmentations import AUGMENTATION_SETS, ViewAugment, mean_std  # noqa: F401 (re-exported)


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
