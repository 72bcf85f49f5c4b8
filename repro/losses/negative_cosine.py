"""Negative cosine similarity with a stop-gradient target, the loss of BYOL and SimSiam.

BYOL -- "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", J.-B. Grill et al.,
2020, arXiv:2006.07733, eq. 2: L = ||p_n - z'_n||^2 = 2 - 2 cos(p, z') for the unit-normalised
online prediction p_n and target projection z'_n (target = EMA network, no gradient), symmetrised
by SUMMING the two directions (L_total = L + L~).

SimSiam -- "Exploring Simple Siamese Representation Learning", X. Chen, K. He, 2021,
arXiv:2011.10566, eq. 1-4: D(p, z) = -cos(p, stopgrad(z)), symmetrised by AVERAGING:
L = D(p1, z2)/2 + D(p2, z1)/2.

The two forms differ by an affine map: per direction, 2 - 2 cos = 2 + 2 D, so BYOL's summed loss is
4 + 4 * (SimSiam's averaged loss) and its gradients are 4 times larger -- which matters for the
learning rate. solo-learn (solo/losses/byol.py, solo/methods/byol.py @9187ea3) uses exactly the
papers' forms: BYOL sums 2 - 2 cos over both directions, SimSiam averages -cos. `byol_loss` and
`simsiam_loss` below reproduce those, so solo-learn's learning rates apply unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_pair(a: Tensor, b: Tensor, names: str) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"{names} must both be (batch, dim) with equal shapes, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")


def _mean_cosine(p: Tensor, z: Tensor) -> Tensor:
    # Mean over the batch of cos(p_i, z_i), with z a constant (stop-gradient), in fp32.
    with torch.autocast(device_type=p.device.type, enabled=False):
        return F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()


def negative_cosine_loss(p: Tensor, z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """-mean_i cos(p_i, stopgrad(z_i)) for (N, D) predictions p and targets z; range [-1, 1]."""
    _check_pair(p, z, "p, z")
    loss = -_mean_cosine(p, z)
    return loss, {"loss": loss.detach()}


def simsiam_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """SimSiam's symmetric loss D(p1, z2)/2 + D(p2, z1)/2 (p: predictor outputs, z: projections)."""
    for a, b, names in ((p1, z2, "p1, z2"), (p2, z1, "p2, z1")):
        _check_pair(a, b, names)
    loss = -(_mean_cosine(p1, z2) + _mean_cosine(p2, z1)) / 2
    return loss, {"loss": loss.detach()}


def byol_loss(p1: Tensor, p2: Tensor, target1: Tensor, target2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """BYOL's symmetric loss (2 - 2 cos(p1, target2)) + (2 - 2 cos(p2, target1)); range [0, 8].

    p1, p2: online predictions of views 1 and 2; target1, target2: target-network projections of
    views 1 and 2 (detached here). terms["mean_cosine"] is the average of the two cosines.
    """
    for a, b, names in ((p1, target2, "p1, target2"), (p2, target1, "p2, target1")):
        _check_pair(a, b, names)
    cos_12, cos_21 = _mean_cosine(p1, target2), _mean_cosine(p2, target1)
    loss = (2 - 2 * cos_12) + (2 - 2 * cos_21)
    return loss, {"loss": loss.detach(), "mean_cosine": ((cos_12 + cos_21) / 2).detach()}
