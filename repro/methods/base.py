"""What every method shares: the backbone, the typed hyper-parameters, progress, the trainer hooks."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from repro.cli import UserError
from repro.distributed import gather_with_grad
from repro.method_args import LossArgs
from repro.models import build_backbone, mlp


def gather_detached(tensor: torch.Tensor) -> torch.Tensor:
    """The global batch of a tensor no gradient flows through (identity for one process)."""
    with torch.no_grad():
        return gather_with_grad(tensor.detach())


def two_layer_projector(in_dim: int, hidden: int, out: int, *, batchnorm: bool) -> nn.Sequential:
    """Linear -> (BN) -> ReLU -> Linear: SimCLR / MoCo v2+ (no BN), BYOL / SwAV / W-MSE (BN)."""
    if batchnorm:
        return mlp(in_dim, hidden, out, num_layers=2)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


class Method(nn.Module):
    """Backbone, hyper-parameters, progress, no-op hooks. Subclasses set `name`, `args_type`,
    `loss_fn` (the loss every forward calls, through `self.loss_fn`) and build their heads."""

    name: str = ""
    args_type: type[LossArgs] = LossArgs   # the record of the config's `loss:` (repro/method_args.py)
    loss_fn: Callable = None
    gathers = False                        # the loss couples the samples of a batch: gathered when train.loss_batch=0

    def __init__(self, cfg):
        super().__init__()
        if type(cfg.loss) is not self.args_type:
            raise UserError(f"method {self.name} takes loss hyper-parameters {self.args_type.__name__}, "
                            f"got {type(cfg.loss).__name__}: load the config with repro.config.load_config")
        self.args = cfg.loss
        self.backbone = build_backbone(cfg.model)
        self.gather = cfg.train.loss_batch == 0 and self.gathers
        self.step, self.epoch, self.total_steps = 0, 0, 1

    def set_progress(self, step: int, steps_per_epoch: int, total_steps: int) -> None:
        self.step, self.epoch, self.total_steps = step, step // steps_per_epoch, total_steps

    def global_batch(self, embeddings: list[torch.Tensor]) -> list[torch.Tensor]:
        """With train.loss_batch=0 under torchrun: every rank's loss sees the global batch (identity alone)."""
        return [gather_with_grad(z) for z in embeddings] if self.gather else embeddings

    def check_two_views(self, views: list[torch.Tensor]) -> None:
        if len(views) != 2:
            raise UserError(f"method {self.name} takes exactly 2 views, got {len(views)}")

    def param_groups(self) -> list[dict]:
        return [{"name": "method", "params": [p for p in self.parameters() if p.requires_grad]}]

    def after_backward(self) -> None:
        pass

    def after_step(self) -> None:
        pass


class TwoViewMethod(Method):
    """Backbone -> projector -> loss_fn(z1, z2, **loss_kwargs()): SimCLR, VICReg, Barlow Twins."""

    gathers = True

    def projector_for(self, cfg) -> nn.Module:
        raise NotImplementedError

    def loss_kwargs(self) -> dict:
        """The loss function's keyword arguments, read from the typed record `self.args`."""
        raise NotImplementedError

    def __init__(self, cfg):
        super().__init__(cfg)
        self.projector = self.projector_for(cfg)

    def forward(self, views: list[torch.Tensor]):
        self.check_two_views(views)
        features = [self.backbone(v) for v in views]
        z1, z2 = self.global_batch([self.projector(f) for f in features])
        loss, terms = self.loss_fn(z1, z2, **self.loss_kwargs())
        return loss, terms, features
