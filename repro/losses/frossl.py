"""FroSSL: Frobenius-norm entropy of each view plus mean squared error between the views.

"FroSSL: Frobenius Norm Minimization for Self-Supervised Learning", O. Skean, A. Dhakal, N. Jacobs,
L. Sanchez Giraldo, 2023/2024, arXiv:2310.02903, eq. 4-6:

    L = log ||Z1^T Z1||_F^2 + log ||Z2^T Z2||_F^2 + (1/N) sum_i ||z1_i - z2_i||^2

with the normalisation of the authors' code (OFSkean/FroSSL `solo/losses/frossl.py`
`frossl_loss_func` @e841c57; the same computation as `searmse_loss_func` in the fork's first FroSSL
code, 2698b42 of 2023-12-20, which its training method called then; from 2024-01-24 the method
calls the multi-view form below instead. docs/sources.md section 2):
  * every embedding dimension is centred over the batch and scaled to L2 norm sqrt(D) over the
    batch (Zhat = sqrt(D) U, U with unit-norm columns);
  * invariance = mean squared error over the N*D entries of Zhat1 - Zhat2 = ||U1 - U2||_F^2 / N;
  * variance term of a view = log ||K / tr K||_F^2 with K = Zhat^T Zhat (D x D) or Zhat Zhat^T
    (N x N): both have the same non-zero eigenvalues, hence the same Frobenius norm (eq. 2), and
    the smaller one is computed. The choice depends on shapes only.
After column normalisation tr K = ||Zhat||_F^2 = D^2 is a constant, so dividing by it shifts the
log term by a constant and leaves the gradients unchanged.

Differences from the authors' code, none of which changes the value on healthy inputs:
  * the column norm is sqrt(sum z^2 + eps^2) instead of the plain norm (the code divides by
    the std and then by the norm with no epsilon: a collapsed, constant dimension gives NaN);
    with eps = 1e-6 the difference is a relative 1e-12 / (2 ||z_col||^2);
  * the trace is a tensor (the code @e841c57 calls `trace(K).item()`: a device-to-host sync every
    step and a graph break under torch.compile);
  * the norm arithmetic always runs in at least float32, also under autocast.

`use_logs=False` is the "no logs" ablation of Tables 2 and 3: the same terms, the variance term
||K / tr K||_F^2 instead of its logarithm (the trace normalisation is kept: without it the
variance term would scale like D^3 and swamp the invariance term).

`frossl_multiview_loss` is the V-view form of the later paper version, as in the authors'
`multiview_frossl_loss_func` and lightly's `FroSSLLoss`: unit-norm columns WITHOUT centring,
invariance = sum_v V * D * MSE(U_v, mean_w U_w), variance = sum_v log ||K_v / tr K_v||_F^2.
For V = 2 its invariance equals the two-view one (U1 - mean = (U1 - U2) / 2, so
2 * 2D * ||U1 - U2||^2 / (4 N D) = ||U1 - U2||^2 / N); it differs only by not centring.

`linear_regime_loss` (eq. 8) and `barlow_linear_regime_loss` (the Barlow Twins variant of Simon
et al. 2023) are the linear-network objectives of Figure 2; see their docstrings for the
normalisation.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_pair(z1: Tensor, z2: Tensor) -> None:
    # shapes only: value checks would force a device-to-host sync
    if z1.dim() != 2 or z1.shape != z2.shape or z1.shape[0] < 2:
        raise ValueError(f"z1, z2 must both be (batch >= 2, dim) with equal shapes, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")


def _at_least_float32(z: Tensor) -> Tensor:
    """fp16/bf16 -> fp32; fp32 and fp64 unchanged (tests run in fp64)."""
    return z.to(torch.promote_types(z.dtype, torch.float32))


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


def frossl_loss(z1: Tensor, z2: Tensor, *, invariance_weight: float = 1.0, use_logs: bool = True,
                eps: float = 1e-6) -> tuple[Tensor, dict[str, Tensor]]:
    """Two-view FroSSL loss of (N, D) projections z1, z2 (the paper's eq. 6, authors' scaling).

    Returns (loss, terms): loss = invariance_weight * invariance + variance_1 + variance_2, a
    scalar of dtype >= float32; terms holds the detached scalars "loss", "invariance",
    "variance" (the sum over views), "variance_1" and "variance_2".
    """
    _check_pair(z1, z2)
    dim = z1.shape[1]
    with torch.autocast(device_type=z1.device.type, enabled=False):
        normalised = []
        for z in (z1, z2):
            z = _at_least_float32(z)
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


def frossl_multiview_loss(views: list[Tensor], *, invariance_weight: float = 1.0, use_logs: bool = True,
                          eps: float = 1e-6) -> tuple[Tensor, dict[str, Tensor]]:
    """Multi-view FroSSL loss of V >= 2 (N, D) projections (lightly's FroSSLLoss, no centring).

    loss = invariance_weight * sum_v V * D * MSE(U_v, mean_w U_w) + sum_v log ||K_v / tr K_v||_F^2
    with U_v the view's columns scaled to unit norm. Terms: "loss", "invariance", "variance".
    """
    if len(views) < 2:
        raise ValueError(f"need at least 2 views, got {len(views)}")
    first = views[0]
    for index, z in enumerate(views):
        if z.dim() != 2 or z.shape != first.shape or z.shape[0] < 2:
            raise ValueError(f"every view must be (batch >= 2, dim) with the shape of view 0 "
                             f"{tuple(first.shape)}; view {index} has shape {tuple(z.shape)}")
    num_views, dim = len(views), first.shape[1]
    with torch.autocast(device_type=first.device.type, enabled=False):
        units = [unit_columns(_at_least_float32(z), eps) for z in views]
        mean_view = torch.stack(units).mean(dim=0)
        invariance = sum(num_views * dim * (u - mean_view).pow(2).mean() for u in units)
        variance = sum(frobenius_variance(u, use_logs=use_logs) for u in units)
        loss = invariance_weight * invariance + variance
    terms = {"loss": loss.detach(), "invariance": invariance.detach(), "variance": variance.detach()}
    return loss, terms


def linear_regime_loss(z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 8: ||Z1^T Z1 - I||_F^2 + ||Z2^T Z2 - I||_F^2 + ||Z1 - Z2||_F^2, for (N, d) embeddings.

    The paper leaves the normalisation of Z implicit. Here every term uses Z / sqrt(N), i.e.
    Z^T Z / N is the (uncentred) second-moment matrix E[z z^T], as in the cross-correlation
    E[z z'^T] of Simon et al. (2023) whose Barlow variant Figure 2 compares against, and the last
    term is the mean over samples of ||z1_i - z2_i||^2 (eq. 5). The loss then does not grow with
    the number of samples, and the minimiser has E[z z^T] = I. No centring, no normalisation.
    Terms: "loss", "variance" (the two whitening terms), "invariance".
    """
    _check_pair(z1, z2)
    n, d = z1.shape
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z1, z2 = _at_least_float32(z1), _at_least_float32(z2)
        identity = torch.eye(d, dtype=z1.dtype, device=z1.device)
        variance = (z1.T @ z1 / n - identity).pow(2).sum() + (z2.T @ z2 / n - identity).pow(2).sum()
        invariance = (z1 - z2).pow(2).sum() / n
        loss = variance + invariance
    return loss, {"loss": loss.detach(), "variance": variance.detach(), "invariance": invariance.detach()}


def barlow_linear_regime_loss(z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """||Z1^T Z2 / N - I||_F^2, the Barlow Twins variant of Simon et al. (2023) in Figure 2.

    Same normalisation as `linear_regime_loss` (Z / sqrt(N), no centring). Terms: "loss"."""
    _check_pair(z1, z2)
    n, d = z1.shape
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z1, z2 = _at_least_float32(z1), _at_least_float32(z2)
        identity = torch.eye(d, dtype=z1.dtype, device=z1.device)
        loss = (z1.T @ z2 / n - identity).pow(2).sum()
    return loss, {"loss": loss.detach()}
