"""numba kernels of the FFCV crop stage (repro/data/ffcv_loader.py): a counter-based random
stream, torchvision's RandomResizedCrop sampling, and PIL's bicubic resampling.

All functions are plain numba njit functions, callable from Python too (the tests do).
cache=True keeps the compiled code on disk between processes.
"""
from __future__ import annotations

import numpy as np
from numba import njit

# splitmix64 (Steele, Lea, Flood 2014): a bijective 64-bit mixer; uniform(key, i) hashes a counter
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_53 = 9007199254740992.0
_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes, then falls back to a central crop
_BICUBIC_A = -0.5  # PIL's bicubic (Keys) coefficient
_BICUBIC_SUPPORT = 2.0


@njit(cache=True, nogil=True)
def mix64(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def sample_key(epoch_key, index, view):
    """The key of one view of one image: a hash of (epoch key, dataset index, view)."""
    return mix64(epoch_key + mix64(np.uint64(index) * np.uint64(8) + np.uint64(view) + np.uint64(1)))


@njit(cache=True, nogil=True)
def uniform(key, counter):
    """The counter-th U[0, 1) number of the stream `key` (53 random bits)."""
    z = mix64(key + (np.uint64(counter) + np.uint64(1)) * _GOLDEN)
    return np.float64(z >> np.uint64(11)) / _TWO_POW_53


@njit(cache=True, nogil=True)
def random_resized_crop(key, height, width, scale_low, scale_high, log_ratio_low, log_ratio_high):
    """torchvision RandomResizedCrop.get_params: (top, left, h, w). Draws 4 numbers per attempt
    (counters 0..39)."""
    area = height * width
    for attempt in range(_ATTEMPTS):
        target_area = area * (scale_low + (scale_high - scale_low) * uniform(key, 4 * attempt))
        aspect = np.exp(log_ratio_low + (log_ratio_high - log_ratio_low) * uniform(key, 4 * attempt + 1))
        w = int(round(np.sqrt(target_area * aspect)))
        h = int(round(np.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(uniform(key, 4 * attempt + 2) * (height - h + 1))
            left = int(uniform(key, 4 * attempt + 3) * (width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < np.exp(log_ratio_low):
        w = width
        h = int(round(w / np.exp(log_ratio_low)))
    elif in_ratio > np.exp(log_ratio_high):
        h = height
        w = int(round(h * np.exp(log_ratio_high)))
    else:
        w = width
        h = height
    return (height - h) // 2, (width - w) // 2, h, w


@njit(cache=True, nogil=True)
def _bicubic(x):
    x = abs(x)
    if x < 1.0:
        return ((_BICUBIC_A + 2.0) * x - (_BICUBIC_A + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * _BICUBIC_A
    return 0.0


@njit(cache=True, nogil=True)
def resample_taps(in_size, out_size):
    """PIL's precompute_coeffs for the bicubic filter: per output pixel the first input pixel, the
    number of taps and their normalised weights. Downscaling widens the filter (antialiasing)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = _BICUBIC_SUPPORT * filterscale
    max_taps = int(np.ceil(support)) * 2 + 1
    first = np.empty(out_size, np.int64)
    count = np.empty(out_size, np.int64)
    weights = np.zeros((out_size, max_taps), np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        total = 0.0
        for x in range(xmax - xmin):
            w = _bicubic((x + xmin - center + 0.5) / filterscale)
            weights[xx, x] = w
            total += w
        if total != 0.0:
            for x in range(xmax - xmin):
                weights[xx, x] /= total
        first[xx] = xmin
        count[xx] = xmax - xmin
    return first, count, weights


@njit(cache=True, nogil=True)
def _to_uint8(value):
    value = np.floor(value + 0.5)
    if value < 0.0:
        return np.uint8(0)
    if value > 255.0:
        return np.uint8(255)
    return np.uint8(value)


@njit(cache=True, nogil=True)
def resized_crop(image, top, left, height, width, flip, out):
    """PIL's crop((left, top, left + width, top + height)).resize(out size, BICUBIC), optionally
    mirrored, into out (H, W, 3) uint8. Horizontal pass first, uint8 in between, as PIL does when
    upsampling (when downsampling, recent Pillow sometimes runs the vertical pass first)."""
    out_height, out_width = out.shape[0], out.shape[1]
    first_x, count_x, weights_x = resample_taps(width, out_width)
    first_y, count_y, weights_y = resample_taps(height, out_height)
    rows = np.empty((height, out_width, 3), np.uint8)
    for y in range(height):
        source = image[top + y]
        for xx in range(out_width):
            acc0 = acc1 = acc2 = 0.0
            x0 = left + first_x[xx]
            for t in range(count_x[xx]):
                w = weights_x[xx, t]
                acc0 += w * source[x0 + t, 0]
                acc1 += w * source[x0 + t, 1]
                acc2 += w * source[x0 + t, 2]
            rows[y, xx, 0] = _to_uint8(acc0)
            rows[y, xx, 1] = _to_uint8(acc1)
            rows[y, xx, 2] = _to_uint8(acc2)
    for yy in range(out_height):
        y0 = first_y[yy]
        for xx in range(out_width):
            acc0 = acc1 = acc2 = 0.0
            for t in range(count_y[yy]):
                w = weights_y[yy, t]
                acc0 += w * rows[y0 + t, xx, 0]
                acc1 += w * rows[y0 + t, xx, 1]
                acc2 += w * rows[y0 + t, xx, 2]
            target = out_width - 1 - xx if flip else xx
            out[yy, target, 0] = _to_uint8(acc0)
            out[yy, target, 1] = _to_uint8(acc1)
            out[yy, target, 2] = _to_uint8(acc2)


@njit(cache=True, nogil=True)
def crop_views(image, epoch_key, index, views, log_ratio, out):
    """One random resized crop (+ flip) per view of one image into out (views, S, S, 3).
    views: (V, 3) rows of (scale_low, scale_high, flip_prob)."""
    height, width = image.shape[0], image.shape[1]
    for v in range(views.shape[0]):
        key = sample_key(epoch_key, index, v)
        top, left, h, w = random_resized_crop(key, height, width, views[v, 0], views[v, 1],
                                              log_ratio[0], log_ratio[1])
        flip = uniform(key, 4 * _ATTEMPTS) < views[v, 2]
        resized_crop(image, top, left, h, w, flip, out[v])
