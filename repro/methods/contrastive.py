"""Sample-contrastive methods: SimCLR (negatives from the batch), MoCo v2+ (negatives from queues)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from repro.losses.nt_xent import moco_loss, nt_xent_loss, update_queue
from repro.method_args import MoCoV2PlusArgs, MoCoV2PlusLossArgs, SimCLRArgs
from repro.methods.base import TwoViewMethod, gather_detached
from repro.methods.momentum import MomentumMethod, momentum_copy


class SimCLR(TwoViewMethod):
    """SimCLR (Chen et al., 2020): projector Linear-ReLU-Linear (2048 -> 256 on CIFAR), NT-Xent.
    Negatives are the other images of the batch (of the global batch with train.loss_batch=0)."""

    name = "simclr"
    args_type = SimCLRArgs
    loss_fn = staticmethod(nt_xent_loss)
    projector_layers, projector_batchnorm = 2, False


class MoCoV2Plus(MomentumMethod):
    """MoCo v2+ (Chen et al., 2020, symmetric as in solo-learn): projector Linear-ReLU-Linear
    (2048 -> 256), a momentum backbone + projector, one queue of past keys per view; the query of
    view 1 is scored against view 2's key and the view-2 queue (and vice versa), then the batch's
    keys (of the global batch under torchrun) are enqueued."""

    name = "mocov2plus"
    args_type = MoCoV2PlusArgs
    loss_args_type = MoCoV2PlusLossArgs
    loss_fn = staticmethod(moco_loss)
    projector_layers, projector_batchnorm = 2, False
    momentum_pairs = (("backbone", "momentum_backbone"), ("projector", "momentum_projector"))

    def __init__(self, cfg):
        super().__init__(cfg)
        out = cfg.model.proj_output_dim
        self.projector = self.default_projector(cfg)
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)
        # (2 views, queue_size, out) unit-norm keys; random until real keys replace them
        self.register_buffer("queue", F.normalize(torch.randn(2, self.args.queue_size, out), dim=-1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def forward(self, views: list[torch.Tensor]):
        self.check_two_views(views)
        features = [self.backbone(v) for v in views]
        q1, q2 = (self.projector(f) for f in features)
        with torch.no_grad():
            k1, k2 = (self.momentum_projector(self.momentum_backbone(v)) for v in views)
        loss12, terms = self.loss_fn(q1, k2, self.queue[1], **self.loss_kwargs)
        loss21, _ = self.loss_fn(q2, k1, self.queue[0], **self.loss_kwargs)
        loss = (loss12 + loss21) / 2
        with torch.no_grad():  # after the loss: this batch's keys are negatives from the next step on
            keys = torch.stack([F.normalize(gather_detached(k), dim=-1) for k in (k1, k2)])
            ptr = self.queue_ptr
            for view in (0, 1):
                new_queue, new_ptr = update_queue(self.queue[view], keys[view], ptr)
                self.queue[view].copy_(new_queue)
            self.queue_ptr.copy_(new_ptr)
        terms = {**terms, "loss": loss.detach(), "tau": torch.full((), self.momentum(), device=loss.device)}
        return loss, terms, features
