"""W-MSE: mean squared error between whitened, unit-normalised embeddings of positive pairs.

Ermolov, Siarohin, Sangineto, Sebe, ICML 2021, arXiv:2007.06346, eq. 4-6 and Sec. 3.1:

    min E[ ||v_i/|v_i| - v_j/|v_j|||^2 ] = 2 - 2 cos(v_i, v_j),   v = W_V (z - mu_V),  W_V = L^-1,
    L L^T = Sigma_V (Cholesky), so each whitened sub-batch has identity covariance.

The batch is split into random sub-batches of `whitening_size` images (one split for all views),
each view of each sub-batch whitened on its own (covariance / (m - 1), shrinkage eps, fp32); the
loss is averaged over view pairs and `whitening_iterations` splits. Defaults: solo-learn's CIFAR
values (whitening_size 128, 1 iteration). `stop_gradient_second=True` detaches the second view of
each pair as solo-learn does (the Table 2 configs set it); the default is the authors' symmetric
loss. Sources: docs/sources.md section 3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from repro.losses.shared import at_least_float32, check_shapes, full_precision


@full_precision
def whiten(x: Tensor, eps: float = 0.0) -> Tensor:
    """Cholesky-whiten x over its second-to-last dimension: (..., m, D) -> (..., m, D).

    Output = (x - mean) L^-T with L L^T = (1 - eps) Cov + eps I, Cov = centred^T centred / (m - 1):
    its sample covariance is the identity (for eps = 0). Leading dimensions are independent batches.
    """
    if x.dim() < 2:
        raise ValueError(f"x must be (..., samples, dim), got {tuple(x.shape)}")
    m, d = x.shape[-2], x.shape[-1]
    x = at_least_float32(x)
    centred = x - x.mean(dim=-2, keepdim=True)
    covariance = centred.transpose(-2, -1) @ centred / (m - 1)
    identity = torch.eye(d, dtype=x.dtype, device=x.device)
    # cholesky_ex: no error check, hence no device-to-host sync; a singular sub-batch
    # covariance gives NaN (caught by the trainer's finiteness check) instead of raising.
    cholesky = torch.linalg.cholesky_ex((1 - eps) * covariance + eps * identity).L
    # L^-1 applied to every sample: solve L y = x^T rather than forming the inverse.
    whitened = torch.linalg.solve_triangular(cholesky, centred.transpose(-2, -1), upper=False)
    return whitened.transpose(-2, -1)


def wmse_loss(views: list[Tensor], *, whitening_size: int = 128, whitening_iterations: int = 1,
              eps: float = 0.0, generator: torch.Generator | None = None,
              stop_gradient_second: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """W-MSE loss of V >= 2 views, each (N, D) with row i of every view from the same image.

    generator: source of the random sub-batch split; None draws from torch's default generator of
    the views' device (on CPU exactly the authors' `torch.randperm(N)`). A generator on another
    device than the views costs a small copy of the permutation (a host sync for CPU -> GPU).
    Returns (loss, terms); loss = mean over splits and view pairs of 2 - 2 mean_i cos(w_i, w'_i).
    """
    check_shapes(views, min_count=2)
    n, d = views[0].shape
    if whitening_size < 2 or n % whitening_size != 0:
        raise ValueError(f"batch {n} must be a multiple of whitening_size {whitening_size} (>= 2)")
    if eps == 0.0 and whitening_size <= d:
        raise ValueError(f"whitening_size {whitening_size} must exceed the embedding dim {d} for a "
                         "full-rank sub-batch covariance (or use eps > 0)")
    stacked = torch.stack(views)                                        # (V, N, D)
    num_views = stacked.shape[0]
    pair_losses = []
    for _ in range(whitening_iterations):
        perm_device = generator.device if generator is not None else stacked.device
        perm = torch.randperm(n, generator=generator, device=perm_device).to(stacked.device)
        # (V, N/size, size, D): the same random partition for every view, whitened per block.
        blocks = stacked[:, perm].reshape(num_views, n // whitening_size, whitening_size, d)
        whitened = whiten(blocks, eps).reshape(num_views, n, d)         # rows aligned across views
        whitened = F.normalize(whitened, dim=-1)
        for i in range(num_views - 1):
            for j in range(i + 1, num_views):
                second = whitened[j].detach() if stop_gradient_second else whitened[j]
                pair_losses.append(2 - 2 * (whitened[i] * second).sum(dim=-1).mean())
    loss = torch.stack(pair_losses).mean()
    return loss, {"loss": loss.detach()}
