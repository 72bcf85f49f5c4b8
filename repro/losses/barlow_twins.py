"""Barlow Twins: drive the cross-correlation of the two views' embeddings to the identity.

"Barlow Twins: Self-Supervised Learning via Redundancy Reduction", J. Zbontar, L. Jing, I. Misra,
Y. LeCun, S. Deny, 2021, arXiv:2103.03230, eq. 1-2:

    L = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2,
    C_ij = sum_b zA_bi zB_bj / (sqrt(sum_b zA_bi^2) sqrt(sum_b zB_bj^2))   for centred z.

As in the authors' code and solo-learn (solo/losses/barlow.py @9187ea3), each view is batch-normed
without affine parameters (per dimension over the batch: mean, BIASED variance, eps 1e-5, exactly
BatchNorm1d(affine=False) in training mode) and C = zA_bn^T zB_bn / N; the whole loss (both terms)
is then multiplied by `scale`. Defaults from solo-learn's CIFAR setting: lambda = 0.0051
(solo/methods/barlow_twins.py default; the paper's ImageNet value is 5e-3) and scale = 0.1
(scripts/pretrain/cifar/barlow.yaml). lightly's BarlowTwinsLoss has no scale: ours = scale * its.
"""
from __future__ import annotations

import torch
from torch import Tensor


def batch_standardise(z: Tensor, eps: float = 1e-5) -> Tensor:
    """(z - mean) / sqrt(biased var + eps) per column, as BatchNorm1d(affine=False).train()."""
    mean = z.mean(dim=0)
    variance = z.var(dim=0, unbiased=False)
    return (z - mean) / torch.sqrt(variance + eps)


def barlow_twins_loss(z1: Tensor, z2: Tensor, *, lambd: float = 0.0051,
                      scale: float = 0.1) -> tuple[Tensor, dict[str, Tensor]]:
    """Barlow Twins loss of two (N, D) projections.

    Returns (loss, terms) with the unscaled terms "invariance" = sum_i (1 - C_ii)^2 and
    "redundancy" = sum_{i != j} C_ij^2; loss = scale * (invariance + lambd * redundancy).
    """
    if z1.dim() != 2 or z1.shape != z2.shape or z1.shape[0] < 2:
        raise ValueError(f"z1, z2 must both be (batch >= 2, dim) with equal shapes, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    with torch.autocast(device_type=z1.device.type, enabled=False):
        correlation = batch_standardise(z1.float()).T @ batch_standardise(z2.float()) / n   # (D, D)
        diagonal = torch.diagonal(correlation)
        invariance = (1 - diagonal).pow(2).sum()
        redundancy = (correlation - torch.diag(diagonal)).pow(2).sum()     # off-diagonal only
        loss = scale * (invariance + lambd * redundancy)
    terms = {"loss": loss.detach(), "invariance": invariance.detach(),
             "redundancy": redundancy.detach()}
    return loss, terms
