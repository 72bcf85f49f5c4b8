"""What every loss shares: the shape check of its inputs and the full-precision region it runs in."""
from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor


def check_shapes(tensors: Sequence[Tensor], names: str | Sequence[str] = "view", *, min_batch: int = 1,
                 min_count: int = 1, layout: str = "(batch, dim)") -> None:
    """Every tensor 2-D, all of one shape, at least `min_batch` rows and `min_count` tensors; else a
    ValueError naming each tensor's shape. `names`: one name per tensor, or a prefix ("view" ->
    "view 0", "view 1", ...). Shapes only: a value check would force a device-to-host sync."""
    if len(tensors) < min_count:
        raise ValueError(f"need at least {min_count} views, got {len(tensors)}")
    if isinstance(names, str):
        names = [f"{names} {index}" for index in range(len(tensors))]
    first = tensors[0].shape if len(tensors) else None
    if any(t.dim() != 2 or t.shape != first or t.shape[0] < min_batch for t in tensors):
        batch = "batch" if min_batch <= 1 else f"batch >= {min_batch}"
        shapes = ", ".join(f"{name} has shape {tuple(t.shape)}" for name, t in zip(names, tensors))
        raise ValueError(f"{', '.join(names)} must be {layout.replace('batch', batch, 1)} tensors of one "
                         f"shape: {shapes}")


def at_least_float32(t: Tensor) -> Tensor:
    """fp16/bf16 -> fp32; fp32 and fp64 unchanged (the losses compute in at least fp32; the tests
    compare 1 and 2 processes in fp64, where summation order leaves no trace)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _first_tensor(values) -> Tensor | None:
    for value in values:
        if isinstance(value, Tensor):
            return value
        if isinstance(value, (list, tuple)):
            found = _first_tensor(value)
            if found is not None:
                return found
    return None


def full_precision(loss):
    """Decorator: run `loss` with autocast off on the device of its first tensor argument (a tensor,
    or the first one in a list of views), so bf16/fp16 autocast never lowers its matmuls. The inputs'
    dtypes are left as they are: each loss casts them itself."""
    @functools.wraps(loss)
    def in_full_precision(*args, **kwargs):
        first = _first_tensor(args)
        if first is None:   # no tensor: the loss's own check raises its error
            return loss(*args, **kwargs)
        with torch.autocast(device_type=first.device.type, enabled=False):
            return loss(*args, **kwargs)
    return in_full_precision
