"""SwAV's swapped-prediction loss with Sinkhorn-Knopp codes.

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, 2020, arXiv:2006.09882:

    eq. 1-2: L(z_t, z_s) = l(z_t, q_s) + l(z_s, q_t),  l(z_t, q_s) = -sum_k q_s^(k) log p_t^(k),
             p_t = softmax(z_t^T C / tau)
    eq. 3-5: codes Q* = Diag(u) exp(C^T Z / eps) Diag(v), by a few Sinkhorn-Knopp iterations

Codes carry no gradient; with a queue, the stored features' scores join the Sinkhorn step and only
the batch's codes are kept. The loss averages the two directions (solo-learn, lightly): half of
eq. 1's sum. Defaults: solo-learn's CIFAR values (tau 0.1, eps 0.05, 3 iterations). Sources:
docs/sources.md section 3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from repro.losses.shared import at_least_float32, check_shapes, full_precision


@torch.no_grad()
@full_precision
def sinkhorn_knopp(scores: Tensor, *, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """Soft codes (B, K) from prototype scores (B, K) (cosine similarities feature x prototype).

    Every iteration makes each prototype's total mass 1/K and then each sample's mass 1/B; the
    result is multiplied by B, so each row (sample) sums to 1 exactly and each column (prototype)
    sums to about B/K (exactly in the limit of many iterations). No gradient flows through it.
    """
    check_shapes((scores,), ("scores",), layout="(batch, prototypes)")
    scores = at_least_float32(scores.detach())
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


@full_precision
def swav_loss(scores1: Tensor, scores2: Tensor, *, temperature: float = 0.1, epsilon: float = 0.05,
              iterations: int = 3,
              queue_scores: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """SwAV loss of two views.

    scores1, scores2: (B, K) prototype scores of view 1 and 2 (normalised features times normalised
    prototypes). queue_scores: optional pair ((Q, K), (Q, K)) of the current prototypes' scores of
    the queued features of view 1 and view 2, used only to compute the codes. Returns (loss, terms)
    with loss = (l(scores2, q1) + l(scores1, q2)) / 2.
    """
    check_shapes((scores1, scores2), ("scores1", "scores2"), layout="(batch, prototypes)")
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
    scores1, scores2 = at_least_float32(scores1), at_least_float32(scores2)
    loss = (_swapped_cross_entropy(codes[0], scores2, temperature)
            + _swapped_cross_entropy(codes[1], scores1, temperature)) / 2
    return loss, {"loss": loss.detach()}
