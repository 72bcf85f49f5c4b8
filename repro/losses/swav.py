"""SwAV's swapped-prediction loss with Sinkhorn-Knopp codes.

"Unsupervised Learning of Visual Features by Contrasting Cluster Assignments", M. Caron, I. Misra,
J. Mairal, P. Goyal, P. Bojanowski, A. Joulin, 2020, arXiv:2006.09882.

- Eq. 1-2: L(z_t, z_s) = l(z_t, q_s) + l(z_s, q_t), l(z_t, q_s) = -sum_k q_s^(k) log p_t^(k),
  p_t = softmax(z_t^T C / tau): each view predicts the code of the other view.
- Eq. 3-5 (codes): Q* = Diag(u) exp(C^T Z / eps) Diag(v), the entropic optimal transport that splits
  the B samples equally over the K prototypes, approximated by a few Sinkhorn-Knopp iterations
  (alternately normalise rows and columns) and rescaled so that every sample's code sums to 1. Codes
  are computed without gradient. With a queue, the stored features' scores are appended before
  Sinkhorn (better equipartition with small batches) and only the batch's codes are kept.

Defaults from solo-learn's CIFAR config (scripts/pretrain/cifar/swav.yaml @9187ea3 and
solo/methods/swav.py): tau = 0.1, eps = 0.05, 3 iterations. The loss below averages the two
directions (as solo-learn and lightly do), i.e. it is half of eq. 1's sum.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, *, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """Soft codes (B, K) from prototype scores (B, K) (cosine similarities feature x prototype).

    Every iteration makes each prototype's total mass 1/K and then each sample's mass 1/B; the
    result is multiplied by B, so each row (sample) sums to 1 exactly and each column (prototype)
    sums to about B/K (exactly in the limit of many iterations). No gradient flows through it.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (batch, prototypes), got {tuple(scores.shape)}")
    with torch.autocast(device_type=scores.device.type, enabled=False):
        scores = scores.detach().float()
        num_samples, num_prototypes = scores.shape
        # Subtracting the global maximum only rescales exp(.) by a constant, which the first
        # normalisation removes; it keeps exp finite for any score range.
        transport = torch.exp((scores - scores.max()) / epsilon)
        transport = transport / transport.sum()
        for _ in range(iterations):
            transport = transport / (transport.sum(dim=0, keepdim=True) * num_prototypes)
            transport = transport / (transport.sum(dim=1, keepdim=True) * num_samples)
        return transport * num_samples


def _swapped_cross_entropy(codes: Tensor, scores: Tensor, temperature: float) -> Tensor:
    # -mean over samples of sum_k q^(k) log softmax(scores / tau)^(k)
    return -(codes * F.log_softmax(scores / temperature, dim=1)).sum(dim=1).mean()


def swav_loss(scores1: Tensor, scores2: Tensor, *, temperature: float = 0.1, epsilon: float = 0.05,
              iterations: int = 3,
              queue_scores: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """SwAV loss of two views.

    scores1, scores2: (B, K) prototype scores of view 1 and 2 (normalised features times normalised
    prototypes). queue_scores: optional pair ((Q, K), (Q, K)) of the current prototypes' scores of
    the queued features of view 1 and view 2, used only to compute the codes. Returns (loss, terms)
    with loss = (l(scores2, q1) + l(scores1, q2)) / 2.
    """
    if scores1.dim() != 2 or scores1.shape != scores2.shape:
        raise ValueError(f"scores1, scores2 must both be (batch, prototypes) with equal shapes, got "
                         f"{tuple(scores1.shape)} and {tuple(scores2.shape)}")
    if queue_scores is not None:
        if len(queue_scores) != 2 or any(q.dim() != 2 or q.shape[1] != scores1.shape[1]
                                         for q in queue_scores):
            raise ValueError(f"queue_scores must be two (Q, {scores1.shape[1]}) tensors, got shapes "
                             f"{[tuple(q.shape) for q in queue_scores]}")
    batch = scores1.shape[0]
    codes = []
    for view, scores in enumerate((scores1, scores2)):
        if queue_scores is not None:
            scores = torch.cat([scores, queue_scores[view]])
        codes.append(sinkhorn_knopp(scores, epsilon=epsilon, iterations=iterations)[:batch])
    with torch.autocast(device_type=scores1.device.type, enabled=False):
        scores1, scores2 = scores1.float(), scores2.float()
        loss = (_swapped_cross_entropy(codes[0], scores2, temperature)
                + _swapped_cross_entropy(codes[1], scores1, temperature)) / 2
    return loss, {"loss": loss.detach()}
