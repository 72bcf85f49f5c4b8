"""W-MSE: mean squared error between whitened, unit-normalised embeddings of positive pairs.

"Whitening for Self-Supervised Representation Learning", A. Ermolov, A. Siarohin, E. Sangineto,
N. Sebe, 2021 (ICML), arXiv:2007.06346, eq. 4-6 and Sec. 3.1:

    min E[ ||v_i/|v_i| - v_j/|v_j|||^2 ] = 2 - 2 cos(v_i, v_j),   v = Whitening(z) = W_V (z - mu_V),
    W_V^T W_V = Sigma_V^-1, W_V = L^-1 from the Cholesky factorisation Sigma_V = L L^T,

so each whitened sub-batch has identity covariance. The batch is split into random sub-batches of
`whitening_size` images (the same split for every view), each view of each sub-batch is whitened
separately, and the loss is averaged over all view pairs and over `whitening_iterations` random
splits.

Details checked against the authors' code (htdt/self-supervised @d9662c8, methods/whitening.py,
methods/w_mse.py) and solo-learn (solo/utils/whitening.py, solo/methods/wmse.py @9187ea3):
covariance divided by (m - 1); shrinkage Sigma <- (1 - eps) Sigma + eps I with eps = 0 by default;
whitening in fp32; sub-batches are a random partition (randperm reshaped to (-1, size)), so the
batch must be a multiple of the sub-batch size. Defaults from solo-learn's CIFAR config
(scripts/pretrain/cifar/wmse.yaml): whitening_size 128, 1 iteration.

One difference between the two codes: solo-learn's `wmse_loss_func` (simplified form) detaches the
second view of every pair, the authors' code does not. This function's default is the authors'
symmetric loss; `stop_gradient_second=True` gives solo-learn's, which the Table 2 configs set (the
paper quotes solo-learn's W-MSE numbers).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def whiten(x: Tensor, eps: float = 0.0) -> Tensor:
    """Cholesky-whiten x over its second-to-last dimension: (..., m, D) -> (..., m, D).

    Output = (x - mean) L^-T with L L^T = (1 - eps) Cov + eps I, Cov = centred^T centred / (m - 1):
    its sample covariance is the identity (for eps = 0). Leading dimensions are independent batches.
    """
    if x.dim() < 2:
        raise ValueError(f"x must be (..., samples, dim), got {tuple(x.shape)}")
    m, d = x.shape[-2], x.shape[-1]
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
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
    if len(views) < 2 or any(v.dim() != 2 or v.shape != views[0].shape for v in views):
        raise ValueError(f"views must be >= 2 equal (batch, dim) tensors, got shapes "
                         f"{[tuple(v.shape) for v in views]}")
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
