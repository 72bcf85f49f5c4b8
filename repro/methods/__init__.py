"""A method = a backbone, its heads, its loss and any state the loss needs; the same interface for all:
    method.set_progress(step, steps_per_epoch, total_steps)   # before the forward of each step
    loss, terms, features = method(views)   # views: list of (N, C, H, W) batches
    method.after_backward()                 # e.g. SwAV/DINO: no update of frozen prototypes
    method.after_step()                     # e.g. the momentum (EMA) encoders' update
    method.param_groups()                   # optimizer groups (fixed lrs...)
`features` are the online backbone's outputs of each view (the online classifier reads them,
detached). State a later step reads (momentum encoders, queues, centres, running covariances) is a
parameter or buffer, so a resume is exact; the rest (tau, teacher temperature, queue/freeze epochs)
is a function of the step. Hyper-parameters: `cfg.loss`, the method's record (repro/method_args.py),
its loss part passed whole to `self.loss_fn`. Layouts: solo-learn @9187ea3 `solo/methods/<method>.py`,
cited per class. Modules: base (Method, TwoViewMethod, projectors), momentum, decorrelation (FroSSL,
VICReg, Barlow Twins, W-MSE, CorInfoMax), contrastive (SimCLR, MoCo v2+), siamese (SimSiam, BYOL),
clustering (SwAV, DINO). Adding one: docs/methods.md.
"""
from __future__ import annotations

from repro.cli import UserError
from repro.methods.base import Method, TwoViewMethod
from repro.methods.clustering import DINO, SwAV
from repro.methods.contrastive import MoCoV2Plus, SimCLR
from repro.methods.decorrelation import WMSE, BarlowTwins, CorInfoMax, FroSSL, VICReg
from repro.methods.momentum import MomentumMethod, cosine_momentum, ema_update, momentum_copy
from repro.methods.siamese import BYOL, SimSiam

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (
    FroSSL, SimCLR, SwAV, MoCoV2Plus, SimSiam, BYOL, DINO, VICReg, BarlowTwins, WMSE, CorInfoMax)}

__all__ = ["METHODS", "Method", "MomentumMethod", "TwoViewMethod", "build_method", "cosine_momentum", "ema_update",
           "momentum_copy", *(cls.__name__ for cls in METHODS.values())]


def build_method(cfg) -> Method:
    """The method `cfg.method` built from the config; its hyper-parameters are the typed `cfg.loss`."""
    if cfg.method not in METHODS:
        raise UserError(f"unknown method {cfg.method!r}: choose one of {', '.join(METHODS)}")
    return METHODS[cfg.method](cfg)
