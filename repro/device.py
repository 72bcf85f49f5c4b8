"""Where the tensors live and which performance switches are on: one place for every entry point.

    setup = DeviceSetup.from_config(cfg, env)      # device, bf16 autocast, channels-last
    setup.apply_backend_settings()                 # cudnn.benchmark on CUDA
    model = setup.module(model)                    # moved, channels-last where on
    views, labels = setup.batch(views, labels)     # non_blocking copies, channels-last images
    with setup.autocast():
        loss = model(views)

The defaults are the GPU recipe: `train.precision=auto` is bf16 autocast on CUDA and fp32 on CPU;
`model.channels_last=auto` is on for CUDA and for the CPU (as fast or faster there: docs/performance.md),
except for models that oneDNN's channels-last backward mishandles on the CPU (`strided_pointwise_hazard`:
`setup.for_model(model)` turns it off under `auto` and refuses an explicit `true`). An explicit
`train.precision=bf16` is honoured on CPU too, so the CPU tests can run a GPU run's exact switches
(tests/test_device.py). No other module tests the device type to decide a performance switch.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
from torch import nn

from repro.cli import UserError
from repro.distributed import DistEnv

PRECISIONS = ("auto", "fp32", "bf16")
CHANNELS_LAST = ("auto", True, False)


def resolve_device(name: str, env: DistEnv = DistEnv()) -> torch.device:
    """`auto` -> CUDA when visible, else CPU; `cuda` -> the GPU of this process's LOCAL_RANK under torchrun."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type != "cuda":
        return device
    visible = torch.cuda.device_count()
    if visible == 0:
        raise UserError(f"device={name} but no CUDA GPU is visible: use device=cpu or device=auto")
    if env.distributed:
        if env.local_rank >= visible:
            raise UserError(f"{env.world_size} processes on this machine need {env.local_rank + 1}+ GPUs "
                            f"but {visible} are visible: lower GPUS (or --nproc_per_node) to {visible}")
        device = torch.device("cuda", env.local_rank)
    return device


def use_bf16(device: torch.device, precision: str) -> bool:
    """bf16 autocast: asked for (any device), or `auto` on CUDA."""
    if precision not in PRECISIONS:
        raise UserError(f"train.precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def use_channels_last(device: torch.device, setting) -> bool:
    """Channels-last memory format: True (any device), False, or `auto` (CUDA and CPU, where convolutions
    gain; any other device type keeps NCHW)."""
    if setting not in CHANNELS_LAST:
        raise UserError(f"model.channels_last={setting!r}: choose auto, true or false")
    return setting is True or (setting == "auto" and device.type in ("cuda", "cpu"))


# oneDNN's 1x1 convolution with stride > 1 on channels-last (nhwc) inputs with fewer input channels
# than its channel block (16 with AVX-512, 8 with AVX2) writes past its workspace in the backward
# pass (uxlfoundation/oneDNN#6035: wrong weight gradients, hangs or crashes). Seen here with torch
# 2.14.1 on a Xeon with AVX-512: a segfault or "corrupted double-linked list" in the first backward
# of the width-8 ResNet18 at 224 px (layer2's downsample, 8 input channels at 56 px); NCHW and
# widths >= 16 are not affected. ResNet18's strided 1x1 convolutions have width, 2x and 4x width
# input channels.
SAFE_POINTWISE_CHANNELS = 16


def strided_pointwise_hazard(model: nn.Module) -> str | None:
    """The first layer of `model` that oneDNN's channels-last CPU backward is known to mishandle (a 1x1
    convolution with stride > 1 and fewer than 16 input channels), as 'name (C input channels)'."""
    for name, layer in model.named_modules():
        if (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and max(layer.stride) > 1
                and layer.in_channels < SAFE_POINTWISE_CHANNELS):
            return f"{name} ({layer.in_channels} input channels)"
    return None


@dataclass(frozen=True)
class DeviceSetup:
    device: torch.device
    bf16: bool             # autocast to bfloat16 around forwards (losses keep their norm math in fp32)
    channels_last: bool    # NHWC memory format for the model's 4-D weights and every image batch
    channels_last_asked: bool = False   # model.channels_last=true (not `auto`): for_model refuses rather than drops it

    @classmethod
    def create(cls, device: str | torch.device = "auto", *, precision: str = "auto", channels_last="auto",
               env: DistEnv = DistEnv()) -> "DeviceSetup":
        if not isinstance(device, torch.device):
            device = resolve_device(device, env)
        return cls(device, use_bf16(device, precision), use_channels_last(device, channels_last),
                   channels_last_asked=channels_last is True)

    @classmethod
    def from_config(cls, cfg, env: DistEnv = DistEnv(), device: str | None = None) -> "DeviceSetup":
        """cfg.device (or `device`, e.g. evaluate's --device), train.precision, model.channels_last."""
        return cls.create(device or cfg.device, precision=cfg.train.precision,
                          channels_last=cfg.model.channels_last, env=env)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def apply_backend_settings(self) -> None:
        """cudnn.benchmark: picks the fastest convolution algorithm per shape (fixed shapes here)."""
        if self.cuda:
            torch.backends.cudnn.benchmark = True

    def autocast(self):
        """A fresh autocast context (bf16) or a no-op one (fp32)."""
        if not self.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def for_model(self, model: nn.Module) -> "DeviceSetup":
        """This setup for training `model`: on the CPU, channels-last is dropped under `auto` (with a
        one-line note) and refused when asked for, where `strided_pointwise_hazard` finds a layer (the
        fault is in the backward pass: evaluation's forward-only passes keep channels-last)."""
        layer = strided_pointwise_hazard(model) if self.channels_last and self.device.type == "cpu" else None
        if layer is None:
            return self
        if self.channels_last_asked:
            raise UserError(f"model.channels_last=true on the CPU: {layer} is a strided 1x1 convolution with fewer "
                            f"than {SAFE_POINTWISE_CHANNELS} input channels, whose channels-last backward oneDNN "
                            f"mishandles (uxlfoundation/oneDNN#6035: crashes or wrong gradients): use "
                            f"model.channels_last=auto or false, or model.width>={SAFE_POINTWISE_CHANNELS}")
        print(f"device: NCHW on the CPU for this model (model.channels_last=auto): {layer} would take oneDNN's "
              f"faulty channels-last backward (uxlfoundation/oneDNN#6035)", file=sys.stderr)
        return replace(self, channels_last=False)

    def module(self, module: nn.Module) -> nn.Module:
        """`module` on the device, channels-last where on (a model that will be trained: `for_model` first)."""
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) batch on the device, channels-last where on (the values are unchanged)."""
        images = images.to(self.device, non_blocking=True)
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def labels(self, labels: torch.Tensor) -> torch.Tensor:
        return labels.to(self.device, non_blocking=True)

    def batch(self, views: list[torch.Tensor], labels: torch.Tensor):
        return [self.images(v) for v in views], self.labels(labels)

    def synchronize(self) -> None:
        """Wait for queued GPU work (timing); nothing to wait for on CPU."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
