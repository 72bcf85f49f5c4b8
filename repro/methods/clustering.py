"""Methods that score embeddings against learnt prototypes: SwAV (Sinkhorn codes, swapped
prediction) and DINO (self-distillation from an EMA teacher)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from repro.losses.dino import dino_loss, update_center
from repro.losses.swav import swav_loss
from repro.method_args import DINOArgs, DINOLossArgs, SwAVArgs, SwAVLossArgs
from repro.methods.base import Method, gather_detached
from repro.methods.momentum import MomentumMethod, momentum_copy


class SwAV(Method):
    """SwAV (Caron et al., 2020): projector Linear-BN-ReLU-Linear (2048 -> 128), L2-normalised
    embeddings scored against L2-normalised prototypes (solo-learn's weight-normed layer with its
    norm fixed to 1), Sinkhorn-Knopp codes, swapped prediction. A queue of each view's past
    embeddings (newest first) is filled from the start and used for the codes from
    `queue_start_epoch`; the prototypes get no update during the first `freeze_prototypes_epochs`.
    Sinkhorn's codes couple the batch: its embeddings (and so the queue) are the global batch's."""

    name = "swav"
    args_type = SwAVArgs
    loss_args_type = SwAVLossArgs
    loss_fn = staticmethod(swav_loss)
    gathers = True
    projector_layers = 2

    def __init__(self, cfg):
        super().__init__(cfg)
        out = cfg.model.proj_output_dim
        self.projector = self.default_projector(cfg)
        self.prototypes = nn.Parameter(torch.empty(self.args.num_prototypes, out))
        nn.init.kaiming_uniform_(self.prototypes, a=math.sqrt(5))   # nn.Linear's initialisation
        self.register_buffer("queue", torch.zeros(2, self.args.queue_size, out))   # (views, size, out)

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        return z @ F.normalize(self.prototypes, dim=1).T

    def forward(self, views: list[torch.Tensor]):
        self.check_two_views(views)
        features = [self.backbone(v) for v in views]
        z1, z2 = self.global_batch([F.normalize(self.projector(f), dim=1) for f in features])
        a = self.args
        queue_scores = None
        if a.queue_size > 0 and self.epoch >= a.queue_start_epoch:
            with torch.no_grad():
                queue_scores = (self.scores(self.queue[0]), self.scores(self.queue[1]))
        loss, terms = self.loss_fn(self.scores(z1), self.scores(z2), queue_scores=queue_scores, **self.loss_kwargs)
        if a.queue_size > 0:
            with torch.no_grad():  # shift the queue by one batch, newest embeddings first
                batch = min(z1.shape[0], a.queue_size)
                shifted = torch.cat([torch.stack([z1, z2])[:, :batch], self.queue[:, :a.queue_size - batch]], dim=1)
                self.queue.copy_(shifted)
        return loss, terms, features

    def after_backward(self) -> None:
        if self.epoch < self.args.freeze_prototypes_epochs:
            self.prototypes.grad = None   # no step at all (momentum, weight decay) for the prototypes


class DINOHead(nn.Module):
    """solo-learn's DINO head: MLP (Linear-(BN)-GELU x2, Linear to the bottleneck), L2
    normalisation, then a weight-normed linear layer to the prototypes (its norm fixed to 1 with
    norm_last_layer, learnt otherwise). The MLP is `projector` (the embedding Figure 3 tracks)."""

    def __init__(self, in_dim: int, hidden: int, bottleneck: int, num_prototypes: int, *, use_bn: bool,
                 norm_last_layer: bool):
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(2):
            layers += [nn.Linear(dim, hidden)] + ([nn.BatchNorm1d(hidden)] if use_bn else []) + [nn.GELU()]
            dim = hidden
        layers.append(nn.Linear(dim, bottleneck))
        self.projector = nn.Sequential(*layers)
        for m in self.projector.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_direction = nn.Parameter(torch.empty(num_prototypes, bottleneck))
        nn.init.kaiming_uniform_(self.last_direction, a=math.sqrt(5))
        self.last_norm = nn.Parameter(torch.ones(num_prototypes, 1), requires_grad=not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.projector(x), dim=-1)
        return x @ (self.last_norm * F.normalize(self.last_direction, dim=1)).T


class DINO(MomentumMethod):
    """DINO (Caron et al., 2021): student and EMA teacher (backbone + DINO head), teacher outputs
    centred (centre EMA `center_momentum` over the global batch) and sharpened (teacher temperature,
    linearly warmed up from `warmup_teacher_temperature` over its epochs), cross-entropy between the
    teacher's view and the student's other view; the last layer frozen for the first epochs."""

    name = "dino"
    args_type = DINOArgs
    loss_args_type = DINOLossArgs
    loss_fn = staticmethod(dino_loss)
    momentum_pairs = (("backbone", "momentum_backbone"), ("head", "momentum_head"))

    def __init__(self, cfg):
        super().__init__(cfg)
        self.head = DINOHead(self.backbone.num_features, cfg.model.proj_hidden_dim, cfg.model.proj_output_dim,
                             self.args.num_prototypes, use_bn=self.args.use_bn_in_head,
                             norm_last_layer=self.args.norm_last_layer)
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_head = momentum_copy(self.head)
        self.register_buffer("center", torch.zeros(1, self.args.num_prototypes))

    @property
    def projector(self) -> nn.Module:   # the embedding before the prototypes (Figure 3's tracking)
        return self.head.projector

    def teacher_temperature(self) -> float:
        warmup, final = self.args.warmup_teacher_temperature, self.args.teacher_temperature
        epochs = self.args.warmup_teacher_temperature_epochs
        if self.epoch >= epochs:
            return final
        return warmup + (final - warmup) * self.epoch / max(epochs - 1, 1)

    def forward(self, views: list[torch.Tensor]):
        features = [self.backbone(v) for v in views]
        student = [self.head(f) for f in features]
        with torch.no_grad():
            teacher = [self.momentum_head(self.momentum_backbone(v)) for v in views[:2]]
        loss, terms = self.loss_fn(student, teacher, self.center, teacher_temperature=self.teacher_temperature(),
                                   **self.loss_kwargs)
        with torch.no_grad():
            self.center.copy_(update_center(self.center, [gather_detached(t) for t in teacher],
                                            momentum=self.args.center_momentum))
        terms["tau"] = torch.full((), self.momentum(), device=loss.device)
        return loss, terms, features

    def after_backward(self) -> None:
        if self.epoch < self.args.freeze_last_layer_epochs:
            self.head.last_direction.grad = None
            self.head.last_norm.grad = None
