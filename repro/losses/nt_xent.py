"""Sample-contrastive InfoNCE losses: SimCLR's NT-Xent and MoCo's queue loss.

SimCLR (Chen, Kornblith, Norouzi, Hinton, 2020, arXiv:2002.05709, eq. 1), averaged over the 2N
anchors of both views, sim = cosine similarity:
    l(i, j) = -log( exp(sim(z_i, z_j)/t) / sum_{k != i} exp(sim(z_i, z_k)/t) )
MoCo (He, Fan, Wu, Xie, Girshick, 2020, arXiv:1911.05722, eq. 1; v2: arXiv:2003.04297), unit-norm
query q and constant keys k:
    L_q = -log( exp(q.k+/t) / (exp(q.k+/t) + sum_{k- in queue} exp(q.k-/t)) )

Defaults: t = 0.2 (solo-learn's CIFAR configs). Deviations from solo-learn: the loss is per process
(no gather of SimCLR's negatives across GPUs; the paper used one GPU); the symmetrised MoCo v2+
loss is the method's, which calls `moco_loss` twice. Sources: docs/sources.md section 3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from repro.losses.shared import at_least_float32, check_shapes, full_precision


@full_precision
def nt_xent_loss(z1: Tensor, z2: Tensor, *, temperature: float = 0.2) -> tuple[Tensor, dict[str, Tensor]]:
    """SimCLR's symmetric 2N-way NT-Xent loss.

    z1, z2: (N, D) projections of two views of the same N images (row i of z1 and of z2 form the
    positive pair). They are L2-normalised here. Returns (loss, terms); terms["positive_cosine"] is
    the mean cosine similarity of the positive pairs.
    """
    check_shapes((z1, z2), ("z1", "z2"), min_batch=2)   # a batch of 2 has the first negatives
    n = z1.shape[0]
    z = F.normalize(at_least_float32(torch.cat([z1, z2])), dim=1)             # (2N, D), unit rows
    logits = z @ z.T / temperature                                  # (2N, 2N)
    # An anchor is never its own negative: remove the self-similarity from the softmax.
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    # Anchor i (view 1) has its positive at i + N, anchor i + N (view 2) at i.
    positives = (torch.arange(2 * n, device=z.device) + n) % (2 * n)
    loss = F.cross_entropy(logits, positives)
    positive_cosine = (z[:n] * z[n:]).sum(dim=1).mean()
    return loss, {"loss": loss.detach(), "positive_cosine": positive_cosine.detach()}


@full_precision
def moco_loss(query: Tensor, key: Tensor, queue: Tensor, *,
              temperature: float = 0.2) -> tuple[Tensor, dict[str, Tensor]]:
    """MoCo's InfoNCE loss of each query against its key (positive) and the queue (negatives).

    query: (N, D) online-encoder projections; key: (N, D) momentum-encoder projections of the other
    view; queue: (K, D) keys of past batches (as kept by `update_queue`). All three are
    L2-normalised here (idempotent for the unit-norm keys MoCo stores); key and queue are detached,
    so gradients reach only the query branch. Use the queue as it was BEFORE this batch's keys are
    enqueued (MoCo's order: loss, then enqueue). Returns (loss, terms) with the mean positive and
    negative cosine similarities for logging.
    """
    check_shapes((query, key), ("query", "key"))
    if queue.dim() != 2 or queue.shape[1] != query.shape[1]:
        raise ValueError(f"queue must be (K, {query.shape[1]}) to match query {tuple(query.shape)}, "
                         f"got {tuple(queue.shape)}")
    q = F.normalize(at_least_float32(query), dim=1)
    k = F.normalize(at_least_float32(key.detach()), dim=1)
    negatives = F.normalize(at_least_float32(queue.detach()), dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)                     # (N, 1)
    negative = q @ negatives.T                                      # (N, K)
    logits = torch.cat([positive, negative], dim=1) / temperature
    # The positive sits in column 0 of every row.
    targets = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    loss = F.cross_entropy(logits, targets)
    terms = {"loss": loss.detach(), "positive_cosine": positive.mean().detach(),
             "negative_cosine": negative.mean().detach()}
    return loss, terms


def update_queue(queue: Tensor, keys: Tensor, ptr: int | Tensor) -> tuple[Tensor, int | Tensor]:
    """Enqueue a batch of keys into MoCo's FIFO ring buffer; returns (new_queue, new_ptr).

    queue: (K, D); keys: (B, D); ptr: index of the OLDEST entry, i.e. the next row to overwrite
    (a Python int or a 0-d long tensor on the queue's device; the new pointer has the same type, so
    a tensor pointer never forces a host sync).

    Order: the keys are written in batch order into rows ptr, ptr+1, ... (wrapping modulo K), the
    pointer moves to (ptr + B) mod K, so `torch.roll(new_queue, -new_ptr, dims=0)` lists the last K
    keys from oldest to newest. K need not be a multiple of B (solo-learn requires it); if B > K
    only the last K keys of the batch are kept. The keys are stored detached and cast to the queue's
    dtype; the input queue is not modified.
    """
    if queue.dim() != 2 or keys.dim() != 2 or keys.shape[1] != queue.shape[1]:
        raise ValueError(f"queue (K, D) and keys (B, D) must share D, got queue {tuple(queue.shape)} "
                         f"and keys {tuple(keys.shape)}")
    size, batch = queue.shape[0], keys.shape[0]
    kept = min(batch, size)
    # Offsets of the kept keys within the batch stream: the last `kept` of the B written.
    offsets = torch.arange(batch - kept, batch, device=queue.device)
    rows = (offsets + ptr) % size
    new_queue = queue.index_copy(0, rows, keys[batch - kept:].detach().to(queue.dtype))
    return new_queue, (ptr + batch) % size
