"""Predictor-based methods without negatives, negative cosine loss: SimSiam (stop-gradient) and
BYOL (momentum target)."""
from __future__ import annotations

import torch
from torch import nn

from repro.losses.negative_cosine import byol_loss, simsiam_loss
from repro.method_args import BYOLArgs, LossArgs, SimSiamArgs
from repro.methods.base import Method, projector
from repro.methods.momentum import MomentumMethod, momentum_copy


class SimSiam(Method):
    """SimSiam (Chen & He, 2021), solo-learn's layout: projector Linear(no bias)-BN-ReLU x2,
    Linear-BN(no affine) (its last bias frozen: BN removes it); predictor Linear(no bias)-BN-ReLU-
    Linear (2048 -> 512 -> 2048); stop-gradient on the projections; the predictor's lr is fixed
    (not scheduled)."""

    name = "simsiam"
    args_type = SimSiamArgs
    loss_fn = staticmethod(simsiam_loss)

    def __init__(self, cfg):
        super().__init__(cfg)
        width, hidden, out = self.backbone.num_features, cfg.model.proj_hidden_dim, cfg.model.proj_output_dim
        self.projector = nn.Sequential(
            nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, out), nn.BatchNorm1d(out, affine=False))
        self.projector[6].bias.requires_grad_(False)
        pred_hidden = cfg.model.pred_hidden_dim or 512
        self.predictor = nn.Sequential(nn.Linear(out, pred_hidden, bias=False), nn.BatchNorm1d(pred_hidden),
                                       nn.ReLU(inplace=True), nn.Linear(pred_hidden, out))

    def forward(self, views: list[torch.Tensor]):
        features = [self.backbone(v) for v in views]
        z1, z2 = (self.projector(f) for f in features)
        loss, terms = self.loss_fn(self.predictor(z1), self.predictor(z2), z1, z2, **self.loss_kwargs)
        return loss, terms, features

    def param_groups(self) -> list[dict]:
        predictor = set(self.predictor.parameters())
        rest = [p for p in self.parameters() if p.requires_grad and p not in predictor]
        return [{"name": "method", "params": rest},
                {"name": "predictor", "params": list(self.predictor.parameters()), "fixed_lr": True}]


class BYOL(MomentumMethod):
    """BYOL (Grill et al., 2020): projector and predictor Linear-BN-ReLU-Linear (4096 -> 256), a
    momentum backbone + projector (tau 0.99 -> 1.0 along a cosine), loss 2 - 2 cos(p, target of the
    other view) summed over both directions."""

    name = "byol"
    args_type = BYOLArgs
    loss_args_type = LossArgs   # byol_loss takes no hyper-parameter
    loss_fn = staticmethod(byol_loss)
    projector_layers = 2
    momentum_pairs = (("backbone", "momentum_backbone"), ("projector", "momentum_projector"))

    def __init__(self, cfg):
        super().__init__(cfg)
        hidden, out = cfg.model.proj_hidden_dim, cfg.model.proj_output_dim
        self.projector = self.default_projector(cfg)
        self.predictor = projector(out, cfg.model.pred_hidden_dim or hidden, out, layers=2)
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)

    def forward(self, views: list[torch.Tensor]):
        features = [self.backbone(v) for v in views]
        p1, p2 = (self.predictor(self.projector(f)) for f in features)
        with torch.no_grad():
            t1, t2 = (self.momentum_projector(self.momentum_backbone(v)) for v in views)
        loss, terms = self.loss_fn(p1, p2, t1, t2, **self.loss_kwargs)
        terms["tau"] = torch.full((), self.momentum(), device=loss.device)
        return loss, terms, features
