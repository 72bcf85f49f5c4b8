"""What every method shares: the backbone, the typed hyper-parameters, progress, the trainer hooks."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from repro.cli import UserError
from repro.distributed import gather_with_grad
from repro.method_args import LossArgs, loss_kwargs
from repro.models import build_backbone, mlp


def gather_detached(tensor: torch.Tensor) -> torch.Tensor:
    """The global batch of a tensor no gradient flows through (identity for one process)."""
    with torch.no_grad():
        return gather_with_grad(tensor.detach())


def projector(in_dim: int, hidden: int, out: int, *, layers: int = 3, batchnorm: bool = True) -> nn.Sequential:
    """(Linear -> BN -> ReLU) x (layers - 1), then Linear: FroSSL / VICReg / Barlow Twins / CorInfoMax
    (3 layers), BYOL / SwAV / W-MSE (2); without BN (Linear -> ReLU -> Linear): SimCLR / MoCo v2+."""
    if batchnorm:
        return mlp(in_dim, hidden, out, num_layers=layers)
    if layers != 2:
        raise ValueError(f"a projector without BatchNorm has 2 layers, got {layers}")
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


class Method(nn.Module):
    """Backbone, hyper-parameters, progress, no-op hooks. Subclasses set `name`, `args_type`,
    `loss_fn` (the loss every forward calls, through `self.loss_fn`, with `**self.loss_kwargs`) and
    build their heads (`default_projector` unless their own)."""

    name: str = ""
    args_type: type[LossArgs] = LossArgs   # the record of the config's `loss:` (repro/method_args.py)
    loss_args_type: type[LossArgs] | None = None   # its part that is loss_fn's keyword arguments; None: all of it
    loss_fn: Callable = None
    gathers = False                        # the loss couples the samples of a batch: gathered when train.loss_batch=0
    projector_layers, projector_batchnorm = 3, True   # `default_projector`'s layout

    def __init__(self, cfg):
        super().__init__()
        if type(cfg.loss) is not self.args_type:
            raise UserError(f"method {self.name} takes loss hyper-parameters {self.args_type.__name__}, "
                            f"got {type(cfg.loss).__name__}: load the config with repro.config.load_config")
        self.args = cfg.loss
        self.loss_kwargs = loss_kwargs(cfg.loss, self.loss_args_type or self.args_type)
        self.backbone = build_backbone(cfg.model)
        self.gather = cfg.train.loss_batch == 0 and self.gathers
        self.step, self.epoch, self.total_steps = 0, 0, 1

    def default_projector(self, cfg) -> nn.Sequential:
        """Backbone features -> model.proj_hidden_dim -> model.proj_output_dim (`projector`)."""
        return projector(self.backbone.num_features, cfg.model.proj_hidden_dim, cfg.model.proj_output_dim,
                         layers=self.projector_layers, batchnorm=self.projector_batchnorm)

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
    """Backbone -> default projector -> loss_fn(z1, z2, **loss_kwargs): SimCLR, VICReg, Barlow Twins."""

    gathers = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.projector = self.default_projector(cfg)

    def forward(self, views: list[torch.Tensor]):
        self.check_two_views(views)
        features = [self.backbone(v) for v in views]
        z1, z2 = self.global_batch([self.projector(f) for f in features])
        loss, terms = self.loss_fn(z1, z2, **self.loss_kwargs)
        return loss, terms, features
