"""FroSSL: Frobenius-norm entropy of each view plus mean squared error between the views.

Skean, Dhakal, Jacobs, Sanchez Giraldo, arXiv:2310.02903, eq. 4-6, normalised as the authors' code:

    L = invariance_weight * ||U1 - U2||_F^2 / N + sum_v log ||K_v / tr K_v||_F^2,   K_v = Zhat_v^T Zhat_v
    Zhat_v = sqrt(D) U_v, U_v = the batch-centred columns of Z_v scaled to unit L2 norm

K is formed as D x D or N x N, whichever is smaller (same non-zero eigenvalues, same norm).
Deviations, none changing the value on healthy inputs: the column norm is sqrt(||z||^2 + eps^2) (a
constant dimension stays finite), the trace stays a tensor (no host sync), the arithmetic runs in
>= float32 under autocast. `use_logs=False`: the "no logs" ablation (trace normalisation kept).
`frossl_multiview_loss`: the V-view form (no centring, lightly's FroSSLLoss). `linear_regime_loss`,
`barlow_linear_regime_loss`: Figure 2's eq. 8 and its Barlow variant. The authors' code, its
history and the derivations: docs/sources.md section 2.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from repro.losses.shared import at_least_float32, check_shapes, full_precision


def unit_columns(z: Tensor, eps: float = 1e-6) -> Tensor:
    """(N, D) -> each column divided by its L2 norm over the batch, sqrt(||col||^2 + eps^2).

    The epsilon keeps a zero column at zero with finite gradients (no 0/0)."""
    return z / torch.sqrt(z.pow(2).sum(dim=0) + eps * eps)


def frobenius_variance(z: Tensor, *, use_logs: bool = True) -> Tensor:
    """log ||K / tr K||_F^2 of K = z^T z (D x D) or z z^T (N x N), whichever is smaller.

    tr K = ||z||_F^2 for both, so the trace is computed without forming K's diagonal."""
    n, d = z.shape
    gram = z.T @ z if d <= n else z @ z.T
    trace = z.pow(2).sum()
    purity = (gram / trace).pow(2).sum()    # in [1/min(N, D), 1]; 1 = full collapse
    return torch.log(purity) if use_logs else purity


@full_precision
def frossl_loss(z1: Tensor, z2: Tensor, *, invariance_weight: float = 1.0, use_logs: bool = True,
                eps: float = 1e-6) -> tuple[Tensor, dict[str, Tensor]]:
    """Two-view FroSSL loss of (N, D) projections z1, z2 (the paper's eq. 6, authors' scaling).

    Returns (loss, terms): loss = invariance_weight * invariance + variance_1 + variance_2, a
    scalar of dtype >= float32; terms holds the detached scalars "loss", "invariance",
    "variance" (the sum over views), "variance_1" and "variance_2".
    """
    check_shapes((z1, z2), ("z1", "z2"), min_batch=2)
    dim = z1.shape[1]
    normalised = []
    for z in (z1, z2):
        z = at_least_float32(z)
        centred = z - z.mean(dim=0)
        normalised.append(math.sqrt(dim) * unit_columns(centred, eps))   # columns of norm sqrt(D)
    invariance = (normalised[0] - normalised[1]).pow(2).mean()
    variance_1 = frobenius_variance(normalised[0], use_logs=use_logs)
    variance_2 = frobenius_variance(normalised[1], use_logs=use_logs)
    variance = variance_1 + variance_2
    loss = invariance_weight * invariance + variance
    terms = {"loss": loss.detach(), "invariance": invariance.detach(), "variance": variance.detach(),
             "variance_1": variance_1.detach(), "variance_2": variance_2.detach()}
    return loss, terms


@full_precision
def frossl_multiview_loss(views: list[Tensor], *, invariance_weight: float = 1.0, use_logs: bool = True,
                          eps: float = 1e-6) -> tuple[Tensor, dict[str, Tensor]]:
    """Multi-view FroSSL loss of V >= 2 (N, D) projections (lightly's FroSSLLoss, no centring).

    loss = invariance_weight * sum_v V * D * MSE(U_v, mean_w U_w) + sum_v log ||K_v / tr K_v||_F^2
    with U_v the view's columns scaled to unit norm. Terms: "loss", "invariance", "variance".
    """
    check_shapes(views, min_batch=2, min_count=2)
    num_views, dim = len(views), views[0].shape[1]
    units = [unit_columns(at_least_float32(z), eps) for z in views]
    mean_view = torch.stack(units).mean(dim=0)
    invariance = sum(num_views * dim * (u - mean_view).pow(2).mean() for u in units)
    variance = sum(frobenius_variance(u, use_logs=use_logs) for u in units)
    loss = invariance_weight * invariance + variance
    terms = {"loss": loss.detach(), "invariance": invariance.detach(), "variance": variance.detach()}
    return loss, terms


@full_precision
def linear_regime_loss(z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 8: ||Z1^T Z1 - I||_F^2 + ||Z2^T Z2 - I||_F^2 + ||Z1 - Z2||_F^2, for (N, d) embeddings.

    The paper leaves the normalisation of Z implicit. Here every term uses Z / sqrt(N), i.e.
    Z^T Z / N is the (uncentred) second-moment matrix E[z z^T], as in the cross-correlation
    E[z z'^T] of Simon et al. (2023) whose Barlow variant Figure 2 compares against, and the last
    term is the mean over samples of ||z1_i - z2_i||^2 (eq. 5). The loss then does not grow with
    the number of samples, and the minimiser has E[z z^T] = I. No centring, no normalisation.
    Terms: "loss", "variance" (the two whitening terms), "invariance".
    """
    check_shapes((z1, z2), ("z1", "z2"), min_batch=2)
    n, d = z1.shape
    z1, z2 = at_least_float32(z1), at_least_float32(z2)
    identity = torch.eye(d, dtype=z1.dtype, device=z1.device)
    variance = (z1.T @ z1 / n - identity).pow(2).sum() + (z2.T @ z2 / n - identity).pow(2).sum()
    invariance = (z1 - z2).pow(2).sum() / n
    loss = variance + invariance
    return loss, {"loss": loss.detach(), "variance": variance.detach(), "invariance": invariance.detach()}


@full_precision
def barlow_linear_regime_loss(z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """||Z1^T Z2 / N - I||_F^2, the Barlow Twins variant of Simon et al. (2023) in Figure 2.

    Same normalisation as `linear_regime_loss` (Z / sqrt(N), no centring). Terms: "loss"."""
    check_shapes((z1, z2), ("z1", "z2"), min_batch=2)
    n, d = z1.shape
    z1, z2 = at_least_float32(z1), at_least_float32(z2)
    identity = torch.eye(d, dtype=z1.dtype, device=z1.device)
    loss = (z1.T @ z2 / n - identity).pow(2).sum()
    return loss, {"loss": loss.detach()}
