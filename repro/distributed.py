"""Data-parallel training on PyTorch's own engine, launched by torchrun.

    torchrun --standalone --nproc_per_node=4 -m repro.train repro/configs/imagenet/frossl.yaml
    # two machines, 4 GPUs each (run on both, NODE_RANK=0 and 1):
    torchrun --nnodes=2 --node_rank=$NODE_RANK --nproc_per_node=4 \
             --rdzv_backend=c10d --rdzv_endpoint=$MASTER_ADDR:29500 -m repro.train CONFIG

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them the run is a single process. NCCL on
GPUs, gloo on CPU. The global batch (data.batch_size) is split evenly over the ranks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from repro.cli import UserError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_from_torchrun() -> DistEnv:
    def read(name: str, default: int) -> int:
        value = os.environ.get(name, str(default))
        try:
            return int(value)
        except ValueError:
            raise UserError(f"environment variable {name}={value!r} is not an integer "
                            f"(torchrun sets it; unset it for a single-process run)") from None
    return DistEnv(rank=read("RANK", 0), local_rank=read("LOCAL_RANK", 0), world_size=read("WORLD_SIZE", 1))


def init(env: DistEnv, device: torch.device) -> None:
    """Join the process group (no-op for a single process)."""
    if not env.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slice.

    Every rank computes the same loss of the global batch; DDP then averages the parameter
    gradients over the W ranks. Summing (not just taking) the slice's gradients over ranks makes
    that average equal to the gradient of one process on the whole global batch."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.batch = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        rank = dist.get_rank()
        return grad[rank * ctx.batch:(rank + 1) * ctx.batch]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """(n, ...) on each rank -> (world_size * n, ...) in rank order; identity for one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def all_finite(values: torch.Tensor) -> bool:
    """True on every rank iff the values are finite on every rank (one collective)."""
    flag = torch.isfinite(values).all().to(torch.int32)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
