"""Negative cosine similarity with a stop-gradient target, the loss of BYOL and SimSiam.

BYOL (Grill et al., 2020, arXiv:2006.07733, eq. 2), p the online prediction, z' the target
network's projection, the two directions SUMMED:      L = (2 - 2 cos(p1, z2')) + (2 - 2 cos(p2, z1'))
SimSiam (Chen, He, 2021, arXiv:2011.10566, eq. 1-4), D(p, z) = -cos(p, stopgrad(z)), AVERAGED:
                                                      L = D(p1, z2) / 2 + D(p2, z1) / 2
BYOL's loss is 4 + 4 x SimSiam's, with 4x the gradients; both are kept as the papers and solo-learn
write them, so solo-learn's learning rates apply unchanged. Sources: docs/sources.md section 3.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from repro.losses.shared import at_least_float32, check_shapes, full_precision


@full_precision
def _mean_cosine(p: Tensor, z: Tensor) -> Tensor:
    # Mean over the batch of cos(p_i, z_i), with z a constant (stop-gradient), in fp32.
    return F.cosine_similarity(at_least_float32(p), at_least_float32(z.detach()), dim=1).mean()


def negative_cosine_loss(p: Tensor, z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """-mean_i cos(p_i, stopgrad(z_i)) for (N, D) predictions p and targets z; range [-1, 1]."""
    check_shapes((p, z), ("p", "z"))
    loss = -_mean_cosine(p, z)
    return loss, {"loss": loss.detach()}


def simsiam_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """SimSiam's symmetric loss D(p1, z2)/2 + D(p2, z1)/2 (p: predictor outputs, z: projections)."""
    check_shapes((p1, z2), ("p1", "z2"))
    check_shapes((p2, z1), ("p2", "z1"))
    loss = -(_mean_cosine(p1, z2) + _mean_cosine(p2, z1)) / 2
    return loss, {"loss": loss.detach()}


def byol_loss(p1: Tensor, p2: Tensor, target1: Tensor, target2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """BYOL's symmetric loss (2 - 2 cos(p1, target2)) + (2 - 2 cos(p2, target1)); range [0, 8].

    p1, p2: online predictions of views 1 and 2; target1, target2: target-network projections of
    views 1 and 2 (detached here). terms["mean_cosine"] is the average of the two cosines.
    """
    check_shapes((p1, target2), ("p1", "target2"))
    check_shapes((p2, target1), ("p2", "target1"))
    cos_12, cos_21 = _mean_cosine(p1, target2), _mean_cosine(p2, target1)
    loss = (2 - 2 * cos_12) + (2 - 2 * cos_21)
    return loss, {"loss": loss.detach(), "mean_cosine": ((cos_12 + cos_21) / 2).detach()}
