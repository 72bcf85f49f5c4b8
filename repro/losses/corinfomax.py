"""CorInfoMax: log-determinant of running covariance estimates plus a weighted MSE.

Ozsoy, Hamdan, Arik, Yuret, Erdogan, NeurIPS 2022, arXiv:2209.07999 (FroSSL paper eq. 7), exactly
as the authors' code and the FroSSL fork compute it, with z_v = z_v / ||z_v|| per row:

    mu_v = m_mu mu_v_prev + (1 - m_mu) mean_batch(z_v)
    R_v  = m_R R_v_prev + (1 - m_R) (z_v - mu_v)^T (z_v - mu_v) / N
    loss = -(logdet(R_1 + eps I) + logdet(R_2 + eps I)) / D + alpha * mean((z1 - z2)^2)

Gradients flow through mu_v and R_v; their detached values are the next step's state, which starts
at mu = 0, R = R_ini I (`init_corinfomax_state`). The covariance side runs in float64, as both codes.
Defaults: the fork's CIFAR-10 config (alpha 250, momenta 0.01, eps 1e-6, R_ini 1). The codes'
names for these and the other datasets' values: docs/sources.md section 3.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from repro.losses.shared import at_least_float32, check_shapes, full_precision


class CorInfoMaxState(NamedTuple):
    """Running estimates per view: means (D,) and covariances (D, D), float64, no gradient."""
    mean1: Tensor
    covariance1: Tensor
    mean2: Tensor
    covariance2: Tensor


def init_corinfomax_state(dim: int, *, initial_scale: float = 1.0,
                          device: torch.device | str | None = None) -> CorInfoMaxState:
    """mu = 0 and R = initial_scale * I (the codes' R_ini = 1.0) for both views."""
    mean = torch.zeros(dim, dtype=torch.float64, device=device)
    covariance = initial_scale * torch.eye(dim, dtype=torch.float64, device=device)
    return CorInfoMaxState(mean, covariance, mean.clone(), covariance.clone())


def _running_covariance(z: Tensor, mean_prev: Tensor, covariance_prev: Tensor, mean_momentum: float,
                        covariance_momentum: float) -> tuple[Tensor, Tensor]:
    z = z.double()
    mean = mean_momentum * mean_prev + (1 - mean_momentum) * z.mean(dim=0)
    centred = z - mean
    covariance = (covariance_momentum * covariance_prev
                  + (1 - covariance_momentum) * centred.T @ centred / z.shape[0])
    return mean, covariance


@full_precision
def corinfomax_loss(z1: Tensor, z2: Tensor, state: CorInfoMaxState, *, alpha: float = 250.0,
                    eps: float = 1e-6, mean_momentum: float = 0.01, covariance_momentum: float = 0.01,
                    normalize: bool = True) -> tuple[Tensor, dict[str, Tensor], CorInfoMaxState]:
    """CorInfoMax loss of two (N, D) projections given the previous running estimates.

    Returns (loss, terms, new_state): terms hold "covariance" (the -logdet term / D) and
    "invariance" (the unweighted MSE); new_state is detached, to pass to the next call.
    normalize=True L2-normalises the rows first, as every CorInfoMax config does.
    """
    check_shapes((z1, z2), ("z1", "z2"))
    d = z1.shape[1]
    if any(m.shape != (d,) for m in (state.mean1, state.mean2)) or any(
            r.shape != (d, d) for r in (state.covariance1, state.covariance2)):
        raise ValueError(f"state must hold ({d},) means and ({d}, {d}) covariances for z {tuple(z1.shape)}, "
                         f"got {[tuple(t.shape) for t in state]}")
    z1, z2 = at_least_float32(z1), at_least_float32(z2)
    if normalize:
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    mean1, covariance1 = _running_covariance(z1, state.mean1, state.covariance1, mean_momentum,
                                             covariance_momentum)
    mean2, covariance2 = _running_covariance(z2, state.mean2, state.covariance2, mean_momentum,
                                             covariance_momentum)
    ridge = eps * torch.eye(d, dtype=torch.float64, device=z1.device)
    covariance_term = -(torch.logdet(covariance1 + ridge) + torch.logdet(covariance2 + ridge)) / d
    invariance = F.mse_loss(z1, z2)
    loss = covariance_term.to(invariance.dtype) + alpha * invariance
    new_state = CorInfoMaxState(mean1.detach(), covariance1.detach(), mean2.detach(), covariance2.detach())
    terms = {"loss": loss.detach(), "covariance": covariance_term.detach().float(),
             "invariance": invariance.detach()}
    return loss, terms, new_state
