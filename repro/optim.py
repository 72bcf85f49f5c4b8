"""Optimizers and the learning-rate schedule of the small-dataset recipe (solo-learn's).

LARS ("Large Batch Training of Convolutional Networks", You, Gitman, Ginsburg, 2017, arXiv:1708.03888)
as solo-learn implements it (`solo/utils/lars.py` @9187ea3, from Lightning Bolts) with the options its
configs switch on (`clip_lr: True`, `eta: 0.02`, `exclude_bias_n_norm: True`, momentum 0.9). Per
parameter p with gradient g and weight decay wd:

    trust = eta * ||p|| / (||g|| + wd * ||p|| + eps)          eps = 1e-8
    trust = min(trust / lr, 1)                                 (clip_lr)
    d     = (g + wd * p) * trust
    buf   = d on the first step, else momentum * buf + d       (no dampening)
    p    -= lr * buf                                           (nesterov: lr * (d + momentum * buf))

Exclusions: `LARS`. The schedule (`warmup_cosine_lr`): solo-learn's linear warmup + cosine, with
SGDR restarts for Figure 4; learning rates are given per 256 images (`scale_lr`).
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor

OPTIMIZERS = ("lars", "sgd", "adam")


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling on top of SGD with momentum (solo-learn's variant).

    Defaults are the values of the paper's recipe (solo-learn configs), not solo-learn's code
    defaults (eta 1e-3, no clipping, no exclusion, no momentum). Every group may override any of
    them. The parameters of one group must live on one device. The update (the module docstring)
    uses torch._foreach_* ops and never reads a value back to the host.

    Parameters with ndim == 1 (biases, BatchNorm weights) when `exclude_bias_n_norm`, and parameters
    whose norm or gradient norm is zero, get d = g: neither weight decay nor scaling (as solo-learn).
    A param group with `lars_exclude=True` is plain SGD with momentum (d = g + wd * p for all its
    parameters, like torch.optim.SGD). solo-learn has no such flag: its online classifier group is an
    ordinary LARS group with weight_decay 0 (the classifier weight IS trust-scaled there, its bias is
    not), so the trainer reproduces the paper by leaving the flag off; it exists for ablations.
    """

    def __init__(self, params: Iterable, lr: float, *, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.02, eps: float = 1e-8, clip_lr: bool = True, exclude_bias_n_norm: bool = True,
                 nesterov: bool = False):
        if lr < 0.0:
            raise ValueError(f"invalid learning rate {lr}: must be >= 0")
        if momentum < 0.0:
            raise ValueError(f"invalid momentum {momentum}: must be >= 0")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay {weight_decay}: must be >= 0")
        if nesterov and momentum <= 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, eps=eps, clip_lr=clip_lr,
                        exclude_bias_n_norm=exclude_bias_n_norm, nesterov=nesterov, lars_exclude=False)
        super().__init__(params, defaults)

    def _directions(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
        """The per-parameter step direction d before momentum (new tensors, grads untouched)."""
        weight_decay = group["weight_decay"]
        if group["lars_exclude"]:
            return torch._foreach_add(grads, params, alpha=weight_decay)    # plain SGD, L2 in the gradient
        directions = list(grads)   # excluded by shape: d = g (aliases the gradient, never written)
        adapted = [i for i, p in enumerate(params) if p.ndim != 1 or not group["exclude_bias_n_norm"]]
        if not adapted:
            return directions
        adapted_params = [params[i] for i in adapted]
        adapted_grads = [grads[i] for i in adapted]
        param_norms = torch.stack(torch._foreach_norm(adapted_params))
        grad_norms = torch.stack(torch._foreach_norm(adapted_grads))
        trust = group["eta"] * param_norms / (grad_norms + weight_decay * param_norms + group["eps"])
        if group["clip_lr"]:
            trust = torch.clamp(trust / group["lr"], max=1.0)      # lr == 0 gives inf -> 1, no error
        # zero-norm parameters or gradients: no scaling, no weight decay (as solo-learn)
        active = (param_norms > 0) & (grad_norms > 0)
        scale = torch.where(active, trust, torch.ones_like(trust))
        decay = active.to(trust.dtype) * weight_decay
        adapted_directions = torch._foreach_add(adapted_grads, torch._foreach_mul(adapted_params, list(decay.unbind())))
        torch._foreach_mul_(adapted_directions, list(scale.unbind()))
        for i, d in zip(adapted, adapted_directions):
            directions[i] = d
        return directions

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            directions = self._directions(group, params, grads)
            momentum = group["momentum"]
            if momentum != 0:
                buffers, fresh = [], []
                for p, d in zip(params, directions):
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d.clone()     # first step: buf = d
                        fresh.append(True)
                    else:
                        fresh.append(False)
                    buffers.append(state["momentum_buffer"])
                old = [(b, d) for b, d, new in zip(buffers, directions, fresh) if not new]
                if old:
                    old_buffers, old_directions = [b for b, _ in old], [d for _, d in old]
                    torch._foreach_mul_(old_buffers, momentum)
                    torch._foreach_add_(old_buffers, old_directions)
                if group["nesterov"]:
                    directions = torch._foreach_add(directions, buffers, alpha=momentum)
                else:
                    directions = buffers
            torch._foreach_add_(params, directions, alpha=-group["lr"])
        return loss


def scale_lr(lr: float, batch_size: int) -> float:
    """The linear scaling rule: lr given per 256 images -> lr for `batch_size` images."""
    return lr * batch_size / 256


def warmup_cosine_lr(step: int, *, base_lr: float, total_steps: int, warmup_steps: float,
                     warmup_start_lr: float = 3e-5, min_lr: float = 0.0, restart_steps: int = 0) -> float:
    """Learning rate at optimizer step `step` (0-based), solo-learn's linear warmup + cosine.

    solo-learn's `LinearWarmupCosineAnnealingLR` (stepped every optimizer step) in closed form: linear
    from warmup_start_lr at step 0 to base_lr at step warmup_steps - 1, then
    min_lr + (base_lr - min_lr) * (1 + cos(pi * (step - warmup_steps) / (total_steps - warmup_steps))) / 2,
    which is base_lr again at step warmup_steps and min_lr at total_steps. warmup_start_lr and min_lr
    are not scaled by the batch size. Steps past total_steps stay at min_lr (solo-learn's would rise again).

    restart_steps = R > 0: the cosine restarts every R steps after the warmup (SGDR, Loshchilov &
    Hutter 2017, arXiv:1608.03983, T_mult = 1; torch's CosineAnnealingWarmRestarts(T_0=R,
    eta_min=min_lr) stepped every step): min_lr + (base_lr - min_lr) * (1 + cos(pi * ((step -
    warmup_steps) mod R) / R)) / 2, each cycle from base_lr down towards min_lr; the warmup, if any,
    happens once, at the very start (Figure 4's recipe).
    """
    if step < warmup_steps:
        if warmup_steps <= 1:
            return warmup_start_lr
        return warmup_start_lr + step * (base_lr - warmup_start_lr) / (warmup_steps - 1)
    if restart_steps > 0:
        if step >= total_steps:
            return min_lr
        progress = ((step - warmup_steps) % restart_steps) / restart_steps
        return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    progress = min(1.0, (step - warmup_steps) / max(1.0, total_steps - warmup_steps))
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, step: int, *, total_steps: int, warmup_steps: float,
           warmup_start_lr: float = 3e-5, min_lr: float = 0.0, restart_steps: int = 0) -> float:
    """Set every group's lr for `step` from its own group["base_lr"]; returns the first group's lr.

    Groups with fixed_lr=True keep their base_lr (solo-learn's `static_lr`, e.g. SimSiam's predictor).
    """
    for group in optimizer.param_groups:
        if group.get("fixed_lr"):
            group["lr"] = group["base_lr"]
        else:
            group["lr"] = warmup_cosine_lr(step, base_lr=group["base_lr"], total_steps=total_steps,
                                           warmup_steps=warmup_steps, warmup_start_lr=warmup_start_lr,
                                           min_lr=min_lr, restart_steps=restart_steps)
    return optimizer.param_groups[0]["lr"]


def build_optimizer(name: str, param_groups: list[dict], *, lr: float, weight_decay: float,
                    momentum: float = 0.9, eta: float = 0.02) -> torch.optim.Optimizer:
    """lars | sgd | adam over `param_groups` (dicts that may carry their own lr / weight_decay).

    lr and weight_decay are the defaults for groups that do not set them; each group's lr is
    stored as group["base_lr"] for `set_lr`. Adam ignores momentum and eta, SGD ignores eta.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    groups = [dict(group) for group in param_groups]   # do not mutate the caller's dicts
    if name == "lars":
        optimizer = LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta)
    elif name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        optimizer = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    return optimizer
