"""A method = a backbone, its heads, its loss and any state the loss needs.

Every method exposes the same small interface to the trainer:
    loss, terms, features = method(views)   # views: list of (N, C, H, W) batches
    method.param_groups()                   # optimizer groups (LARS exclusions, fixed lrs...)
    method.after_step(step, total_steps)    # momentum encoders, queues... (no-op for FroSSL)
`features` are the backbone outputs of each view (the online classifier reads them, detached).
Loss arguments come from the config's `loss:` mapping and are checked against the loss
function's keyword arguments, so a typo is an error that names the key.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from repro.cli import UserError
from repro.config import ConfigError
from repro.losses.frossl import frossl_loss, frossl_multiview_loss
from repro.models import build_backbone, mlp


def loss_arguments(loss_fn: Callable) -> dict[str, object]:
    """Keyword-only arguments of a loss function and their defaults."""
    return {p.name: p.default for p in inspect.signature(loss_fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_arguments(loss_fn: Callable, args: dict, method: str) -> None:
    allowed = loss_arguments(loss_fn)
    for key, value in args.items():
        if key not in allowed:
            raise ConfigError(f"unknown config key 'loss.{key}' for method {method} "
                            f"(valid: {', '.join(sorted(allowed)) or 'none'})")
        default = allowed[key]
        expected = float if isinstance(default, float) else type(default)
        ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if default is not None and not ok:
            raise ConfigError(f"config key 'loss.{key}' = {value!r}: expected {expected.__name__}")


class FroSSL(nn.Module):
    """FroSSL (Skean et al.): ResNet backbone, 3-layer projector, the FroSSL objective.

    Two views use the paper's two-view loss; more views use the multi-view form.
    """

    loss_fn = staticmethod(frossl_loss)

    def __init__(self, cfg):
        super().__init__()
        self.backbone = build_backbone(cfg.model)
        self.projector = mlp(self.backbone.num_features, cfg.model.proj_hidden_dim,
                             cfg.model.proj_output_dim, num_layers=3)
        self.loss_args = dict(cfg.loss)

    @classmethod
    def check_loss_args(cls, args: dict) -> None:
        check_arguments(cls.loss_fn, args, "frossl")

    def forward(self, views: list[torch.Tensor]):
        # each view through the network separately: BatchNorm statistics per view, as in solo-learn
        features = [self.backbone(v) for v in views]
        embeddings = [self.projector(f) for f in features]
        if len(embeddings) == 2:
            loss, terms = frossl_loss(*embeddings, **self.loss_args)
        else:
            loss, terms = frossl_multiview_loss(embeddings, **self.loss_args)
        return loss, terms, features

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.parameters())}]

    def after_step(self, step: int, total_steps: int) -> None:
        pass


METHODS: dict[str, type[nn.Module]] = {
    "frossl": FroSSL,
}


def build_method(cfg) -> nn.Module:
    if cfg.method not in METHODS:
        raise UserError(f"unknown method {cfg.method!r}: choose one of {', '.join(METHODS)}")
    return METHODS[cfg.method](cfg)
