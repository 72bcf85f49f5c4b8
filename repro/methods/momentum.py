"""Momentum (EMA) encoders: the tau schedule, the parameter update, the frozen copy."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from repro.methods.base import Method


def cosine_momentum(step: int, total_steps: int, base: float, final: float) -> float:
    """EMA coefficient at `step`: base at step 0, rising along a half cosine to final at the end
    (BYOL eq. of section 3.2; solo-learn's MomentumUpdater)."""
    return final - (final - base) * (math.cos(math.pi * step / max(total_steps, 1)) + 1) / 2


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, parameter by parameter (buffers untouched)."""
    target_params, online_params = list(target.parameters()), list(online.parameters())
    torch._foreach_mul_(target_params, tau)
    torch._foreach_add_(target_params, online_params, alpha=1 - tau)


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of `module` that only the EMA update changes."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


class MomentumMethod(Method):
    """A method with EMA copies of some online modules; tau follows `cosine_momentum` from
    `args.base_momentum` to `args.final_momentum` (every momentum record has both)."""

    momentum_pairs: tuple[tuple[str, str], ...] = ()   # (online attribute, momentum attribute)

    def momentum(self) -> float:
        return cosine_momentum(self.step, self.total_steps, self.args.base_momentum, self.args.final_momentum)

    def after_step(self) -> None:
        tau = self.momentum()
        for online, target in self.momentum_pairs:
            ema_update(getattr(self, target), getattr(self, online), tau)
