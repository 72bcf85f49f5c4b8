"""Colour augmentations applied per sample to a whole batch, in torch, on the training device.

The FFCV loader crops and flips in its compiled pipeline (repro/data/ffcv_loader.py) and hands over
uint8 crops; this module does the rest of an SSL view, the same steps with the same parameters and
probabilities as the torchvision path (`repro.data.augment.view_transform`, solo-learn's sets):

    ColorJitter(b, c, s, h) with p jitter_prob, the four in a random order per image
    -> grayscale (p grayscale_prob) -> Gaussian blur, sigma ~ U(0.1, 2) px (p blur_prob)
    -> solarization at 128 (p solarize_prob) -> normalise with the dataset's mean/std

Every image draws its own parameters, from uniform numbers the loader hashes from (seed, epoch,
image index, view). They are drawn on the CPU (so a run on CPU and one on GPU draw the same
numbers, and no step waits on the device) and moved to the device with the batch. Values live in [0, 1] floats between steps; PIL works in uint8, so single
pixels differ from the PIL path by rounding, not in distribution. One difference in order: flips
happen earlier, in the crop stage (a flip commutes with every step here).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from repro.formats.augmentations import ViewAugment

# ITU-R 601 luma, as torchvision's rgb_to_grayscale and PIL's convert("L")
LUMA = (0.2989, 0.587, 0.114)
BLUR_SIGMA = (0.1, 2.0)      # pixels, solo-learn's range
# half-width of one of PIL's three box passes: a box of radius l + a, l <= 1 for sigma <= 2; the
# same for every image, so shapes never depend on the draws (no host sync on a GPU)
BOX_RADIUS = 2
SOLARIZE_THRESHOLD = 128 / 255
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


@dataclass
class ViewParams:
    """Per-image random parameters of one view of a batch of n images (CPU tensors)."""
    jitter: torch.Tensor     # (n,) bool: colour jitter applied
    order: torch.Tensor      # (n, 4) long: the jitter steps' order, a permutation of 0..3
    factors: torch.Tensor    # (n, 4) float: brightness, contrast, saturation factors; hue shift
    gray: torch.Tensor       # (n,) bool
    blur: torch.Tensor       # (n,) bool
    sigma: torch.Tensor      # (n,) float, pixels
    solarize: torch.Tensor   # (n,) bool


def _factor_range(strength: float) -> tuple[float, float]:
    """torchvision's ColorJitter range for brightness/contrast/saturation: [max(0, 1 - s), 1 + s]."""
    return max(0.0, 1.0 - strength), 1.0 + strength


# columns of the uniform draws one view of one image consumes
_FACTORS, _ORDER, _JITTER, _GRAY, _BLUR, _SIGMA, _SOLARIZE = slice(0, 4), slice(4, 8), 8, 9, 10, 11, 12
NUM_DRAWS = 13


def draw_params(aug: ViewAugment, uniforms: torch.Tensor) -> ViewParams:
    """One view's parameters from (n, NUM_DRAWS) independent U[0, 1) numbers per image (the
    loader derives them from (seed, epoch, image index, view), so an image's augmentation does not
    depend on its batch, rank or worker). The distributions are those of the torchvision path."""
    if uniforms.shape[1] != NUM_DRAWS:
        raise ValueError(f"expected (n, {NUM_DRAWS}) uniforms, got {tuple(uniforms.shape)}")
    uniforms = uniforms.to(torch.float32)
    b, c, s, h = aug.jitter
    low = torch.tensor([*(_factor_range(v)[0] for v in (b, c, s)), -h])
    high = torch.tensor([*(_factor_range(v)[1] for v in (b, c, s)), h])
    return ViewParams(
        jitter=uniforms[:, _JITTER] < aug.jitter_prob,
        order=torch.argsort(uniforms[:, _ORDER], dim=1),  # a uniform random permutation per image
        factors=low + (high - low) * uniforms[:, _FACTORS],
        gray=uniforms[:, _GRAY] < aug.grayscale_prob,
        blur=uniforms[:, _BLUR] < aug.blur_prob,
        sigma=BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * uniforms[:, _SIGMA],
        solarize=uniforms[:, _SOLARIZE] < aug.solarize_prob,
    )


# ---- the steps: each works in place on a float (n, 3, H, W) batch in [0, 1] --------------------

def _mask(compare, a: torch.Tensor, b) -> torch.Tensor:
    """compare(a, b) as a 0/1 float tensor, written directly as floats (a bool tensor and
    torch.where are several times slower on CPU)."""
    return compare(a, b, out=torch.empty_like(a))


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(n, 3, ...) -> (n, 1, ...) grayscale, torchvision's sum in its order, element by element. Not a
    matrix product: BLAS kernels may fuse multiply-adds and block by batch size, so an image's gray
    level would depend on the CPU and on which batch (which rank's half) it is in."""
    r, g, b = x.unbind(1)
    return (r * LUMA[0]).add_(g * LUMA[1]).add_(b * LUMA[2]).unsqueeze(1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return x.mul_(factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean gray level (a linear function: the luma of the channel means)."""
    mean = _luma(x.mean(dim=(2, 3))).view(-1, 1, 1, 1)
    f = factor.view(-1, 1, 1, 1)
    return x.mul_(f).add_((1 - f) * mean).clamp_(0, 1)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's own grayscale version."""
    f = factor.view(-1, 1, 1, 1)
    gray = _luma(x).mul_(1 - f)
    return x.mul_(f).add_(gray).clamp_(0, 1)


# HSV -> RGB for unit saturation and value, per channel: clamp(slope * |H - centre| + offset, 0, 1)
# with the hue H in sectors [0, 6) (R: |H - 3| - 1, G: 2 - |H - 2|, B: 2 - |H - 4|)
_HUE_CENTRE, _HUE_SLOPE, _HUE_OFFSET = (3.0, 2.0, 4.0), (1.0, -1.0, -1.0), (-1.0, 2.0, 2.0)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue by `shift` turns, keeping saturation and value.

    The hue sector as torchvision's _rgb2hsv; back to RGB as min + chroma * pure_colour(H), with
    chroma = max - min and the piecewise-linear pure colour of hue H. Equal to torchvision's
    adjust_hue up to float rounding, with fewer passes over the batch (no remainder on 3 channels).
    """
    r, g, b = x.unbind(1)
    value = torch.maximum(torch.maximum(r, g), b)
    low = torch.minimum(torch.minimum(r, g), b)
    chroma = value - low
    # sector * chroma: g - b where red is the max, b - r + 2C where green is, r - g + 4C otherwise;
    # selected with 0/1 float masks (torch.where on bool masks is several times slower on CPU)
    red_max = _mask(torch.ge, r, value)
    green_max = _mask(torch.ge, g, value).mul_(1 - red_max)
    sector = (r - g).add_(chroma, alpha=4)
    sector.addcmul_(green_max, (b + g).sub_(r, alpha=2).sub_(chroma, alpha=2))
    sector.addcmul_(red_max, (g * 2).sub_(b).sub_(r).sub_(chroma, alpha=4))
    sector = sector.div_(chroma.clamp_min(1e-12)).add_(6 * shift.view(-1, 1, 1))
    sector = sector.sub_(torch.floor(sector / 6).mul_(6)).unsqueeze(1)        # wrap to [0, 6)
    centre, slope, offset = (x.new_tensor(v).view(1, 3, 1, 1) for v in (_HUE_CENTRE, _HUE_SLOPE, _HUE_OFFSET))
    colour = (sector - centre).abs_().mul_(slope).add_(offset).clamp_(0, 1)   # (n, 3, H, W)
    return torch.addcmul(low.unsqueeze(1), chroma.unsqueeze(1), colour, out=x)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    return x.copy_(_luma(x).expand_as(x))


def pil_box_radius(sigma: torch.Tensor, passes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL's GaussianBlur(radius=sigma) is `passes` box blurs of fractional radius l + a whose
    variances add up to sigma^2 (PIL's _gaussian_blur_radius, after Gwosdek et al. 2011).
    Returns (l, a) per image."""
    variance = sigma.square() / passes
    length = torch.sqrt(12 * variance + 1)
    whole = torch.floor((length - 1) / 2)
    frac = (2 * whole + 1) * (whole * (whole + 1) - 3 * variance) / (6 * (variance - (whole + 1).square()))
    return whole, frac


def blur_matrices(sigma: torch.Tensor, size: int, passes: int = 3) -> torch.Tensor:
    """(n, size, size) matrices M with blurred = M @ signal along one axis: PIL's box passes, each
    with the edge pixels replicated, composed (M = B^passes)."""
    whole, frac = pil_box_radius(sigma.to(torch.float64), passes)
    radius = BOX_RADIUS
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=sigma.device)
    distance = offsets.abs().view(1, -1)
    weights = torch.where(distance <= whole.view(-1, 1), 1.0,
                          torch.where(distance == whole.view(-1, 1) + 1, frac.view(-1, 1), 0.0))
    weights = weights / (2 * whole + 1 + 2 * frac).view(-1, 1)                # (n, 2 * radius + 1)
    n = weights.shape[0]
    source = (torch.arange(size, device=sigma.device).view(-1, 1)
              + torch.arange(-radius, radius + 1, device=sigma.device).view(1, -1)).clamp_(0, size - 1)
    box = torch.zeros(n, size, size, dtype=torch.float64, device=sigma.device)
    box.scatter_add_(2, source.expand(n, -1, -1), weights.view(n, 1, -1).expand(-1, size, -1))
    matrix = box
    for _ in range(passes - 1):
        matrix = torch.bmm(box, matrix)
    return matrix


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """PIL's Gaussian blur, each image its own sigma (pixels): the same box passes and edge
    replication (blur_matrices), applied as two batched matrix products, vertical then horizontal
    (faster than grouped convolutions at CIFAR/STL sizes). PIL rounds to uint8 between its passes:
    single levels differ."""
    n, channels, height, width = x.shape
    rows = blur_matrices(sigma, height).to(x.dtype)                          # (n, H, H)
    cols = blur_matrices(sigma, width).to(x.dtype) if width != height else rows
    # vertical: (n, H, H) @ (n, H, C*W); horizontal: (n, C*H, W) @ (n, W, W)^T
    y = torch.bmm(rows, x.permute(0, 2, 1, 3).reshape(n, height, channels * width))
    y = y.view(n, height, channels, width).permute(0, 2, 1, 3).reshape(n, channels * height, width)
    y = torch.bmm(y, cols.transpose(1, 2))
    return x.copy_(y.view(n, channels, height, width))


def solarize(x: torch.Tensor) -> torch.Tensor:
    """Invert values >= 128/255: x + mask * (1 - 2x)."""
    mask = _mask(torch.ge, x, SOLARIZE_THRESHOLD)
    return x.addcmul_(mask, (x * -2).add_(1))


_JITTER_STEPS = {BRIGHTNESS: adjust_brightness, CONTRAST: adjust_contrast,
                 SATURATION: adjust_saturation, HUE: adjust_hue}


def _apply_to(x: torch.Tensor, mask: torch.Tensor, step, *args: torch.Tensor) -> None:
    """x[mask] = step(x[mask], *args[mask]); the mask lives on the CPU, so building the index
    costs the device nothing (no host sync)."""
    index = mask.nonzero().squeeze(1)
    if index.numel() == 0:
        return
    if index.numel() == x.shape[0]:
        step(x, *(a.to(x.device, non_blocking=True) for a in args))
        return
    device_index = index.to(x.device, non_blocking=True)
    subset = x.index_select(0, device_index)
    step(subset, *(a[index].to(x.device, non_blocking=True) for a in args))
    x.index_copy_(0, device_index, subset)


def apply_view(x: torch.Tensor, aug: ViewAugment, params: ViewParams) -> torch.Tensor:
    """Colour steps of one view, in place on float (n, 3, H, W) in [0, 1]."""
    enabled = [strength > 0 for strength in aug.jitter]  # ColorJitter skips a zero-strength step
    for position in range(4):
        for step in range(4):
            if enabled[step]:
                mask = params.jitter & (params.order[:, position] == step)
                _apply_to(x, mask, _JITTER_STEPS[step], params.factors[:, step].contiguous())
    if aug.grayscale_prob > 0:
        _apply_to(x, params.gray, to_grayscale)
    if aug.blur_prob > 0:
        _apply_to(x, params.blur, gaussian_blur, params.sigma)
    if aug.solarize_prob > 0:
        _apply_to(x, params.solarize, solarize)
    return x


class BatchAugment:
    """uint8 crops (n, H, W, 3), any device -> normalised float (n, 3, H, W) with one view's
    colour augmentations, each image its own parameters (from `uniforms`, see draw_params)."""

    def __init__(self, aug: ViewAugment, mean: tuple[float, ...], std: tuple[float, ...]):
        self.aug = aug
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(std).view(1, -1, 1, 1)

    def __call__(self, crops: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        params = draw_params(self.aug, uniforms)
        x = crops.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        x.mul_(1 / 255)
        apply_view(x, self.aug, params)
        return x.sub_(self.mean.to(x.device)).mul_(self.inv_std.to(x.device))
