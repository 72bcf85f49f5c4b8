"""VICReg: variance-invariance-covariance regularisation.

Bardes, Ponce, LeCun, ICLR 2022, arXiv:2105.04906, eq. 1-6:

    l(Z, Z') = lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]
    s = (1/N) sum_i ||z_i - z'_i||^2 / D   (mean squared error over all N*D entries, as coded)
    v(Z) = (1/D) sum_j max(0, 1 - sqrt(Var(z^j) + eps))            (unbiased variance)
    c(Z) = (1/D) sum_{i != j} C(Z)_ij^2,  C(Z) = centred Z^T Z / (N - 1)

Defaults lambda = mu = 25, nu = 1, eps = 1e-4 (the paper's and solo-learn's). The variance term
is v(Z) + v(Z') as in eq. 6 and solo-learn; the authors' code and lightly halve it. Sources:
docs/sources.md section 3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from repro.losses.shared import at_least_float32, check_shapes, full_precision


def invariance_term(z1: Tensor, z2: Tensor) -> Tensor:
    """Mean squared error over all entries."""
    return F.mse_loss(z1, z2)


def variance_term(z: Tensor, eps: float = 1e-4) -> Tensor:
    """Mean over dimensions of the hinge max(0, 1 - std), std over the batch (unbiased)."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1 - std).mean()


def covariance_term(z: Tensor) -> Tensor:
    """Sum of squared off-diagonal covariances divided by the dimension."""
    n, d = z.shape
    centred = z - z.mean(dim=0)
    covariance = centred.T @ centred / (n - 1)
    off_diagonal = covariance - torch.diag(torch.diagonal(covariance))
    return off_diagonal.pow(2).sum() / d


@full_precision
def vicreg_loss(z1: Tensor, z2: Tensor, *, sim_weight: float = 25.0, var_weight: float = 25.0,
                cov_weight: float = 1.0, eps: float = 1e-4) -> tuple[Tensor, dict[str, Tensor]]:
    """VICReg loss of two (N, D) projections; returns (loss, terms) with the unweighted terms."""
    check_shapes((z1, z2), ("z1", "z2"), min_batch=2)
    z1, z2 = at_least_float32(z1), at_least_float32(z2)
    invariance = invariance_term(z1, z2)
    variance = variance_term(z1, eps) + variance_term(z2, eps)
    covariance = covariance_term(z1) + covariance_term(z2)
    loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance
    terms = {"loss": loss.detach(), "invariance": invariance.detach(),
             "variance": variance.detach(), "covariance": covariance.detach()}
    return loss, terms
