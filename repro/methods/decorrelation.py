"""Methods whose loss reads statistics of the whole batch of embeddings (gathered across processes
when train.loss_batch=0): FroSSL, VICReg, Barlow Twins, W-MSE, CorInfoMax."""
from __future__ import annotations

import torch

from repro.losses.barlow_twins import barlow_twins_loss
from repro.losses.corinfomax import CorInfoMaxState, corinfomax_loss
from repro.losses.frossl import frossl_loss, frossl_multiview_loss
from repro.losses.vicreg import vicreg_loss
from repro.losses.wmse import wmse_loss
from repro.method_args import BarlowTwinsArgs, CorInfoMaxArgs, CorInfoMaxLossArgs, FroSSLArgs, VICRegArgs, WMSEArgs
from repro.methods.base import Method, TwoViewMethod


class FroSSL(Method):
    """FroSSL (Skean et al.): ResNet backbone, 3-layer projector, the FroSSL objective.

    Two views use the paper's two-view loss (`loss_fn`); more views use the multi-view form.
    """

    name = "frossl"
    args_type = FroSSLArgs
    loss_fn = staticmethod(frossl_loss)
    multiview_loss_fn = staticmethod(frossl_multiview_loss)
    gathers = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.projector = self.default_projector(cfg)

    def forward(self, views: list[torch.Tensor]):
        # each view through the network separately: BatchNorm statistics per view, as in solo-learn
        features = [self.backbone(v) for v in views]
        embeddings = self.global_batch([self.projector(f) for f in features])
        if len(embeddings) == 2:
            loss, terms = self.loss_fn(*embeddings, **self.loss_kwargs)
        else:
            loss, terms = self.multiview_loss_fn(embeddings, **self.loss_kwargs)
        return loss, terms, features


class VICReg(TwoViewMethod):
    """VICReg (Bardes et al., 2022): 3-layer projector (Linear-BN-ReLU x2, Linear; 2048-2048-2048),
    invariance / variance / covariance weighted 25 / 25 / 1."""

    name = "vicreg"
    args_type = VICRegArgs
    loss_fn = staticmethod(vicreg_loss)


class BarlowTwins(TwoViewMethod):
    """Barlow Twins (Zbontar et al., 2021): 3-layer projector, cross-correlation of the batch-
    standardised embeddings (BatchNorm1d without affine, inside the loss), lambda and scale."""

    name = "barlow_twins"
    args_type = BarlowTwinsArgs
    loss_fn = staticmethod(barlow_twins_loss)


class WMSE(Method):
    """W-MSE (Ermolov et al., 2021): projector Linear-BN-ReLU-Linear (1024 -> 64), Cholesky
    whitening of random sub-batches of `whitening_size`, MSE of the normalised whitened views. The
    sub-batch split draws from torch's generator, which the trainer seeds from (seed, rank, step)."""

    name = "wmse"
    args_type = WMSEArgs
    loss_fn = staticmethod(wmse_loss)
    gathers = True
    projector_layers = 2

    def __init__(self, cfg):
        super().__init__(cfg)
        self.projector = self.default_projector(cfg)

    def forward(self, views: list[torch.Tensor]):
        features = [self.backbone(v) for v in views]
        embeddings = self.global_batch([self.projector(f) for f in features])
        loss, terms = self.loss_fn(embeddings, **self.loss_kwargs)
        return loss, terms, features


class CorInfoMax(Method):
    """CorInfoMax (Ozsoy et al., 2022): 3-layer projector, log-determinant of running covariance
    estimates of each view plus alpha times the MSE; the running means and covariances are buffers
    (float64), updated by every forward."""

    name = "corinfomax"
    args_type = CorInfoMaxArgs
    loss_args_type = CorInfoMaxLossArgs
    loss_fn = staticmethod(corinfomax_loss)
    gathers = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.projector = self.default_projector(cfg)
        dim = cfg.model.proj_output_dim
        for view in (1, 2):
            self.register_buffer(f"mean{view}", torch.zeros(dim, dtype=torch.float64))
            self.register_buffer(f"covariance{view}", self.args.initial_scale * torch.eye(dim, dtype=torch.float64))

    def forward(self, views: list[torch.Tensor]):
        features = [self.backbone(v) for v in views]
        z1, z2 = self.global_batch([self.projector(f) for f in features])
        state = CorInfoMaxState(self.mean1, self.covariance1, self.mean2, self.covariance2)
        loss, terms, new_state = self.loss_fn(z1, z2, state, **self.loss_kwargs)
        with torch.no_grad():
            for buffer, value in zip(state, new_state):
                buffer.copy_(value)
        return loss, terms, features
