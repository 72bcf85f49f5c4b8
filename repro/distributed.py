"""Data-parallel training on PyTorch's own engine, launched by torchrun.

    torchrun --standalone --nproc_per_node=4 -m repro.train repro/configs/imagenet/frossl.yaml
    # two machines, 4 GPUs each (run on both, NODE_RANK=0 and 1):
    torchrun --nnodes=2 --node_rank=$NODE_RANK --nproc_per_node=4 \
             --rdzv_backend=c10d --rdzv_endpoint=$MASTER_ADDR:29500 -m repro.train CONFIG

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them the run is a single process. NCCL on
GPUs, gloo on CPU. The global batch (data.batch_size) is split evenly over the ranks. With
train.loss_batch=0 (every config but ImageNet's) each loss sees the global batch: the methods gather
their embeddings (`gather_with_grad`) and BatchNorm becomes `GlobalBatchNorm`, so N processes train
what one process on the whole batch trains (tests/test_distributed.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

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


class _SumWithGrad(torch.autograd.Function):
    """all_reduce(SUM) whose backward is the same sum of every rank's gradient (see _GatherWithGrad)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch (every rank's equal slice),
    on any device and backend (torch's SyncBatchNorm takes CUDA only): two differentiable all-reduces
    (sum, then the centred sum of squares), in at least fp32. Outside training or alone: plain BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        world = _world()
        if not self.training or world == 1:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = world * (x.numel() // x.shape[1])
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        mean = _SumWithGrad.apply(xf.sum(dims)) / count
        centred = xf - mean.view(shape)
        var = _SumWithGrad.apply((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_((var * count / (count - 1)).to(self.running_var.dtype), momentum)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def global_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm replaced by a GlobalBatchNorm holding the same parameters and statistics."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        state = module.state_dict()
        new.load_state_dict(state)
        new.train(module.training)
        for name, param in module.named_parameters():   # frozen stays frozen (momentum encoders)
            getattr(new, name).requires_grad_(param.requires_grad)
        return new.to(next(iter(state.values())).device) if state else new
    for name, child in module.named_children():
        module.add_module(name, global_batchnorm(child))
    return module


def all_finite(values: torch.Tensor) -> bool:
    """True on every rank iff the values are finite on every rank (one collective)."""
    flag = torch.isfinite(values).all().to(torch.int32)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
