"""Barlow Twins: drive the cross-correlation of the two views' embeddings to the identity.

Zbontar, Jing, Misra, LeCun, Deny, 2021, arXiv:2103.03230, eq. 1-2:

    L = scale * (sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2),   C = zA_bn^T zB_bn / N

with each view batch-normed without affine parameters (biased variance, eps 1e-5), as the authors'
code and solo-learn. `scale` is solo-learn's (lightly's BarlowTwinsLoss has none); defaults are
solo-learn's CIFAR values, lambda 0.0051 and scale 0.1. Sources: docs/sources.md section 3.
"""
from __future__ import annotations

import torch
from torch import Tensor

from repro.losses.shared import at_least_float32, check_shapes, full_precision


def batch_standardise(z: Tensor, eps: float = 1e-5) -> Tensor:
    """(z - mean) / sqrt(biased var + eps) per column, as BatchNorm1d(affine=False).train()."""
    mean = z.mean(dim=0)
    variance = z.var(dim=0, unbiased=False)
    return (z - mean) / torch.sqrt(variance + eps)


@full_precision
def barlow_twins_loss(z1: Tensor, z2: Tensor, *, lambd: float = 0.0051,
                      scale: float = 0.1) -> tuple[Tensor, dict[str, Tensor]]:
    """Barlow Twins loss of two (N, D) projections.

    Returns (loss, terms) with the unscaled terms "invariance" = sum_i (1 - C_ii)^2 and
    "redundancy" = sum_{i != j} C_ij^2; loss = scale * (invariance + lambd * redundancy).
    """
    check_shapes((z1, z2), ("z1", "z2"), min_batch=2)
    n = z1.shape[0]
    correlation = batch_standardise(at_least_float32(z1)).T @ batch_standardise(at_least_float32(z2)) / n   # (D, D)
    diagonal = torch.diagonal(correlation)
    invariance = (1 - diagonal).pow(2).sum()
    redundancy = (correlation - torch.diag(diagonal)).pow(2).sum()     # off-diagonal only
    loss = scale * (invariance + lambd * redundancy)
    terms = {"loss": loss.detach(), "invariance": invariance.detach(),
             "redundancy": redundancy.detach()}
    return loss, terms
