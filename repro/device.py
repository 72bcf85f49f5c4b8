"""Where the tensors live and which performance switches are on: one place for every entry point.

    setup = DeviceSetup.from_config(cfg, env)      # device, bf16 autocast, channels-last
    setup.apply_backend_settings()                 # cudnn.benchmark on CUDA
    model = setup.module(model)                    # moved, channels-last where on
    views, labels = setup.batch(views, labels)     # non_blocking copies, channels-last images
    with setup.autocast():
        loss = model(views)

The defaults are the GPU recipe: `train.precision=auto` is bf16 autocast on CUDA and fp32 on CPU;
`model.channels_last=auto` is on for CUDA and for the CPU (where the convolutions measured
as fast or faster: `python -m benchmarks.bench_memory_format`, README "Performance"), so CPU runs and
the CPU tests take the memory format of a GPU run. bf16 asked for explicitly (`train.precision=bf16`)
is honoured on CPU too, so the CPU tests can run the exact switches a GPU run takes
(tests/test_device.py). No other module tests the device type to decide a performance switch.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

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


@dataclass(frozen=True)
class DeviceSetup:
    device: torch.device
    bf16: bool             # autocast to bfloat16 around forwards (losses keep their norm math in fp32)
    channels_last: bool    # NHWC memory format for the model's 4-D weights and every image batch

    @classmethod
    def create(cls, device: str | torch.device = "auto", *, precision: str = "auto", channels_last="auto",
               env: DistEnv = DistEnv()) -> "DeviceSetup":
        if not isinstance(device, torch.device):
            device = resolve_device(device, env)
        return cls(device, use_bf16(device, precision), use_channels_last(device, channels_last))

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

    def module(self, module: nn.Module) -> nn.Module:
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
