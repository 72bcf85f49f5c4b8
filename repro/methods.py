"""A method = a backbone, its heads, its loss and any state the loss needs.

Every method exposes the same small interface to the trainer:
    method.set_progress(step, steps_per_epoch, total_steps)   # before the forward of each step
    loss, terms, features = method(views)   # views: list of (N, C, H, W) batches
    method.after_backward()                 # e.g. SwAV/DINO: no update of frozen prototypes
    method.after_step()                     # e.g. the momentum (EMA) encoders' update
    method.param_groups()                   # optimizer groups (fixed lrs...)
`features` are the online backbone's outputs of each view (the online classifier reads them,
detached). Everything a later step depends on (momentum encoders, queues, centres, running
covariances) is a parameter or buffer, so it is in the checkpoint and a resume is exact; the rest
(momentum tau, teacher temperature, queue/freeze epochs) is a function of the step.

Hyper-parameters come from the config's `loss:` mapping: the keyword arguments of the method's loss
function plus the method's own (`extra_args`); an unknown key or a value of the wrong type is an
error that names the key. The sources of each method's layout are cited in its class docstring
(solo-learn @9187ea3 `solo/methods/<method>.py`, which the paper's baselines come from).
"""
from __future__ import annotations

import copy
import inspect
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from repro.cli import UserError
from repro.config import ConfigError
from repro.distributed import gather_with_grad
from repro.losses.barlow_twins import barlow_twins_loss
from repro.losses.corinfomax import CorInfoMaxState, corinfomax_loss
from repro.losses.dino import dino_loss, update_center
from repro.losses.frossl import frossl_loss, frossl_multiview_loss
from repro.losses.negative_cosine import byol_loss, simsiam_loss
from repro.losses.nt_xent import moco_loss, nt_xent_loss, update_queue
from repro.losses.swav import swav_loss
from repro.losses.vicreg import vicreg_loss
from repro.losses.wmse import wmse_loss
from repro.models import build_backbone, mlp


def loss_arguments(loss_fn: Callable) -> dict[str, object]:
    """Keyword-only arguments of a loss function and their defaults."""
    return {p.name: p.default for p in inspect.signature(loss_fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_arguments(allowed: dict[str, object], args: dict, method: str) -> None:
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


def cosine_momentum(step: int, total_steps: int, base: float, final: float) -> float:
    """EMA coefficient at `step`: base at step 0, rising along a half cosine to final at the end
    (BYOL eq. of section 3.2; solo-learn's MomentumUpdater)."""
    return final - (final - base) * (math.cos(math.pi * step / max(total_steps, 1)) + 1) / 2


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, parameter by parameter (buffers untouched)."""
    target_params, online_params = list(target.parameters()), list(online.parameters())
    torch._foreach_mul_(target_params, tau)
    torch._foreach_add_(target_params, online_params, alpha=1 - tau)


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of `module` that only the EMA update changes."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


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
    """Backbone, hyper-parameters, progress, no-op hooks. Subclasses set `loss_fn` and build heads."""

    loss_fn: Callable = None            # its keyword arguments are hyper-parameters (config `loss:`)
    internal: tuple[str, ...] = ()      # keyword arguments the method passes itself (not config keys)
    extra_args: dict[str, object] = {}  # the method's own hyper-parameters and their defaults
    gathers = False                     # the loss uses batch statistics: train.gather_embeddings applies

    def __init__(self, cfg):
        super().__init__()
        self.args = {**self.arguments(), **cfg.loss}
        self.loss_kwargs = {k: self.args[k] for k in loss_arguments(self.loss_fn) if k not in self.internal}
        self.backbone = build_backbone(cfg.model)
        self.gather = cfg.train.gather_embeddings and self.gathers
        self.step, self.epoch, self.total_steps = 0, 0, 1

    @classmethod
    def arguments(cls) -> dict[str, object]:
        loss_args = {k: v for k, v in loss_arguments(cls.loss_fn).items() if k not in cls.internal}
        return {**loss_args, **cls.extra_args}

    @classmethod
    def check_loss_args(cls, args: dict) -> None:
        check_arguments(cls.arguments(), args, cls.name)

    def set_progress(self, step: int, steps_per_epoch: int, total_steps: int) -> None:
        self.step, self.epoch, self.total_steps = step, step // steps_per_epoch, total_steps

    def global_batch(self, embeddings: list[torch.Tensor]) -> list[torch.Tensor]:
        """With train.gather_embeddings under torchrun: every rank's loss sees the global batch."""
        return [gather_with_grad(z) for z in embeddings] if self.gather else embeddings

    def param_groups(self) -> list[dict]:
        return [{"name": "method", "params": [p for p in self.parameters() if p.requires_grad]}]

    def after_backward(self) -> None:
        pass

    def after_step(self) -> None:
        pass


class MomentumMethod(Method):
    """A method with EMA copies of some online modules; tau follows `cosine_momentum`."""

    extra_args = {"base_momentum": 0.99, "final_momentum": 1.0}
    momentum_pairs: tuple[tuple[str, str], ...] = ()   # (online attribute, momentum attribute)

    def momentum(self) -> float:
        return cosine_momentum(self.step, self.total_steps, self.args["base_momentum"],
                               self.args["final_momentum"])

    def after_step(self) -> None:
        tau = self.momentum()
        for online, target in self.momentum_pairs:
            ema_update(getattr(self, target), getattr(self, online), tau)


class FroSSL(Method):
    """FroSSL (Skean et al.): ResNet backbone, 3-layer projector, the FroSSL objective.

    Two views use the paper's two-view loss; more views use the multi-view form.
    """

    name = "frossl"
    loss_fn = staticmethod(frossl_loss)
    gathers = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.projector = mlp(self.backbone.num_features, cfg.model.proj_hidden_dim,
                             cfg.model.proj_output_dim, num_layers=3)

    def forward(self, views: list[torch.Tensor]):
        # each view through the network separately: BatchNorm statistics per view, as in solo-learn
        features = [self.backbone(v) for v in views]
        embeddings = self.global_batch([self.projector(f) for f in features])
        if len(embeddings) == 2:
            loss, terms = frossl_loss(*embeddings, **self.loss_kwargs)
        else:
            loss, terms = frossl_multiview_loss(embeddings, **self.loss_kwargs)
        return loss, terms, features


class TwoViewMethod(Method):
    """Backbone -> projector -> loss_fn(z1, z2, **hyper-parameters): SimCLR, VICReg, Barlow Twins."""

    gathers = True

    def projector_for(self, cfg) -> nn.Module:
        raise NotImplementedError

    def __init__(self, cfg):
        super().__init__(cfg)
        self.projector = self.projector_for(cfg)

    def forward(self, views: list[torch.Tensor]):
        if len(views) != 2:
            raise UserError(f"method {self.name} takes exactly 2 views, got {len(views)}")
        features = [self.backbone(v) for v in views]
        z1, z2 = self.global_batch([self.projector(f) for f in features])
        loss, terms = self.loss_fn(z1, z2, **self.loss_kwargs)
        return loss, terms, features


class SimCLR(TwoViewMethod):
    """SimCLR (Chen et al., 2020): projector Linear-ReLU-Linear (2048 -> 256 on CIFAR), NT-Xent.
    Negatives are the other images of the batch (of the global batch with train.gather_embeddings)."""

    name = "simclr"
    loss_fn = staticmethod(nt_xent_loss)

    def projector_for(self, cfg):
        return two_layer_projector(self.backbone.num_features, cfg.model.proj_hidden_dim,
                                   cfg.model.proj_output_dim, batchnorm=False)


class VICReg(TwoViewMethod):
    """VICReg (Bardes et al., 2022): 3-layer projector (Linear-BN-ReLU x2, Linear; 2048-2048-2048),
    invariance / variance / covariance weighted 25 / 25 / 1."""

    name = "vicreg"
    loss_fn = staticmethod(vicreg_loss)

    def projector_for(self, cfg):
        return mlp(self.backbone.num_features, cfg.model.proj_hidden_dim, cfg.model.proj_output_dim, num_layers=3)


class BarlowTwins(TwoViewMethod):
    """Barlow Twins (Zbontar et al., 2021): 3-layer projector, cross-correlation of the batch-
    standardised embeddings (BatchNorm1d without affine, inside the loss), lambda and scale."""

    name = "barlow_twins"
    loss_fn = staticmethod(barlow_twins_loss)

    def projector_for(self, cfg):
        return mlp(self.backbone.num_features, cfg.model.proj_hidden_dim, cfg.model.proj_output_dim, num_layers=3)


class WMSE(Method):
    """W-MSE (Ermolov et al., 2021): projector Linear-BN-ReLU-Linear (1024 -> 64), Cholesky
    whitening of random sub-batches of `whitening_size`, MSE of the normalised whitened views. The
    sub-batch split draws from torch's generator, which the trainer seeds from (seed, rank, step)."""

    name = "wmse"
    loss_fn = staticmethod(wmse_loss)
    internal = ("generator",)
    gathers = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.projector = two_layer_projector(self.backbone.num_features, cfg.model.proj_hidden_dim,
                                             cfg.model.proj_output_dim, batchnorm=True)

    def forward(self, views: list[torch.Tensor]):
        features = [self.backbone(v) for v in views]
        embeddings = self.global_batch([self.projector(f) for f in features])
        loss, terms = wmse_loss(embeddings, **self.loss_kwargs)
        return loss, terms, features


class CorInfoMax(Method):
    """CorInfoMax (Ozsoy et al., 2022): 3-layer projector, log-determinant of running covariance
    estimates of each view plus alpha times the MSE; the running means and covariances are buffers
    (float64), updated by every forward."""

    name = "corinfomax"
    loss_fn = staticmethod(corinfomax_loss)
    extra_args = {"initial_scale": 1.0}
    gathers = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.projector = mlp(self.backbone.num_features, cfg.model.proj_hidden_dim, cfg.model.proj_output_dim,
                             num_layers=3)
        dim = cfg.model.proj_output_dim
        for view in (1, 2):
            self.register_buffer(f"mean{view}", torch.zeros(dim, dtype=torch.float64))
            self.register_buffer(f"covariance{view}",
                                 self.args["initial_scale"] * torch.eye(dim, dtype=torch.float64))

    def forward(self, views: list[torch.Tensor]):
        features = [self.backbone(v) for v in views]
        z1, z2 = self.global_batch([self.projector(f) for f in features])
        state = CorInfoMaxState(self.mean1, self.covariance1, self.mean2, self.covariance2)
        loss, terms, new_state = corinfomax_loss(z1, z2, state, **self.loss_kwargs)
        with torch.no_grad():
            for buffer, value in zip(state, new_state):
                buffer.copy_(value)
        return loss, terms, features


class SimSiam(Method):
    """SimSiam (Chen & He, 2021), solo-learn's layout: projector Linear(no bias)-BN-ReLU x2,
    Linear-BN(no affine) (its last bias frozen: BN removes it); predictor Linear(no bias)-BN-ReLU-
    Linear (2048 -> 512 -> 2048); stop-gradient on the projections; the predictor's lr is fixed
    (not scheduled)."""

    name = "simsiam"
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
        loss, terms = simsiam_loss(self.predictor(z1), self.predictor(z2), z1, z2)
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
    loss_fn = staticmethod(byol_loss)
    momentum_pairs = (("backbone", "momentum_backbone"), ("projector", "momentum_projector"))

    def __init__(self, cfg):
        super().__init__(cfg)
        width, hidden, out = self.backbone.num_features, cfg.model.proj_hidden_dim, cfg.model.proj_output_dim
        self.projector = two_layer_projector(width, hidden, out, batchnorm=True)
        self.predictor = two_layer_projector(out, cfg.model.pred_hidden_dim or hidden, out, batchnorm=True)
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)

    def forward(self, views: list[torch.Tensor]):
        features = [self.backbone(v) for v in views]
        p1, p2 = (self.predictor(self.projector(f)) for f in features)
        with torch.no_grad():
            t1, t2 = (self.momentum_projector(self.momentum_backbone(v)) for v in views)
        loss, terms = byol_loss(p1, p2, t1, t2)
        terms["tau"] = torch.full((), self.momentum(), device=loss.device)
        return loss, terms, features


class MoCoV2Plus(MomentumMethod):
    """MoCo v2+ (Chen et al., 2020, symmetric as in solo-learn): projector Linear-ReLU-Linear
    (2048 -> 256), a momentum backbone + projector, one queue of past keys per view; the query of
    view 1 is scored against view 2's key and the view-2 queue (and vice versa), then the batch's
    keys (of the global batch under torchrun) are enqueued."""

    name = "mocov2plus"
    loss_fn = staticmethod(moco_loss)
    extra_args = {**MomentumMethod.extra_args, "queue_size": 65536, "final_momentum": 0.999}
    momentum_pairs = (("backbone", "momentum_backbone"), ("projector", "momentum_projector"))

    def __init__(self, cfg):
        super().__init__(cfg)
        width, hidden, out = self.backbone.num_features, cfg.model.proj_hidden_dim, cfg.model.proj_output_dim
        self.projector = two_layer_projector(width, hidden, out, batchnorm=False)
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)
        self.register_buffer("queue", F.normalize(torch.randn(2, self.args["queue_size"], out), dim=-1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def forward(self, views: list[torch.Tensor]):
        if len(views) != 2:
            raise UserError(f"method {self.name} takes exactly 2 views, got {len(views)}")
        features = [self.backbone(v) for v in views]
        q1, q2 = (self.projector(f) for f in features)
        with torch.no_grad():
            k1, k2 = (self.momentum_projector(self.momentum_backbone(v)) for v in views)
        loss12, terms = moco_loss(q1, k2, self.queue[1], **self.loss_kwargs)
        loss21, _ = moco_loss(q2, k1, self.queue[0], **self.loss_kwargs)
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


class SwAV(Method):
    """SwAV (Caron et al., 2020): projector Linear-BN-ReLU-Linear (2048 -> 128), L2-normalised
    embeddings scored against L2-normalised prototypes (solo-learn's weight-normed layer with its
    norm fixed to 1), Sinkhorn-Knopp codes, swapped prediction. A queue of each view's past
    embeddings (newest first) is filled from the start and used for the codes from
    `queue_start_epoch`; the prototypes get no update during the first `freeze_prototypes_epochs`."""

    name = "swav"
    loss_fn = staticmethod(swav_loss)
    internal = ("queue_scores",)
    extra_args = {"num_prototypes": 3000, "queue_size": 3840, "queue_start_epoch": 50, "freeze_prototypes_epochs": 1}

    def __init__(self, cfg):
        super().__init__(cfg)
        out = cfg.model.proj_output_dim
        self.projector = two_layer_projector(self.backbone.num_features, cfg.model.proj_hidden_dim, out,
                                             batchnorm=True)
        self.prototypes = nn.Parameter(torch.empty(self.args["num_prototypes"], out))
        nn.init.kaiming_uniform_(self.prototypes, a=math.sqrt(5))   # nn.Linear's initialisation
        self.register_buffer("queue", torch.zeros(2, self.args["queue_size"], out))

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        return z @ F.normalize(self.prototypes, dim=1).T

    def forward(self, views: list[torch.Tensor]):
        if len(views) != 2:
            raise UserError(f"method {self.name} takes exactly 2 views, got {len(views)}")
        features = [self.backbone(v) for v in views]
        z1, z2 = (F.normalize(self.projector(f), dim=1) for f in features)
        queue_scores = None
        if self.args["queue_size"] > 0 and self.epoch >= self.args["queue_start_epoch"]:
            with torch.no_grad():
                queue_scores = (self.scores(self.queue[0]), self.scores(self.queue[1]))
        loss, terms = swav_loss(self.scores(z1), self.scores(z2), queue_scores=queue_scores, **self.loss_kwargs)
        if self.args["queue_size"] > 0:
            with torch.no_grad():  # shift the queue by one batch, newest embeddings first
                batch = min(z1.shape[0], self.args["queue_size"])
                shifted = torch.cat([torch.stack([z1, z2])[:, :batch], self.queue[:, :self.args["queue_size"] - batch]],
                                    dim=1)
                self.queue.copy_(shifted)
        return loss, terms, features

    def after_backward(self) -> None:
        if self.epoch < self.args["freeze_prototypes_epochs"]:
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
    loss_fn = staticmethod(dino_loss)
    internal = ("teacher_temperature",)   # set per epoch from the schedule below
    extra_args = {"teacher_temperature": 0.07, "warmup_teacher_temperature": 0.04,
                  "warmup_teacher_temperature_epochs": 0, "num_prototypes": 4096, "center_momentum": 0.9,
                  "base_momentum": 0.9995, "final_momentum": 1.0, "freeze_last_layer_epochs": 1,
                  "norm_last_layer": True, "use_bn_in_head": False}
    momentum_pairs = (("backbone", "momentum_backbone"), ("head", "momentum_head"))

    def __init__(self, cfg):
        super().__init__(cfg)
        self.head = DINOHead(self.backbone.num_features, cfg.model.proj_hidden_dim, cfg.model.proj_output_dim,
                             self.args["num_prototypes"], use_bn=self.args["use_bn_in_head"],
                             norm_last_layer=self.args["norm_last_layer"])
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_head = momentum_copy(self.head)
        self.register_buffer("center", torch.zeros(1, self.args["num_prototypes"]))

    @property
    def projector(self) -> nn.Module:   # the embedding before the prototypes (Figure 3's tracking)
        return self.head.projector

    def teacher_temperature(self) -> float:
        warmup, final = self.args["warmup_teacher_temperature"], self.args["teacher_temperature"]
        epochs = self.args["warmup_teacher_temperature_epochs"]
        if self.epoch >= epochs:
            return final
        return warmup + (final - warmup) * self.epoch / max(epochs - 1, 1)

    def forward(self, views: list[torch.Tensor]):
        features = [self.backbone(v) for v in views]
        student = [self.head(f) for f in features]
        with torch.no_grad():
            teacher = [self.momentum_head(self.momentum_backbone(v)) for v in views[:2]]
        loss, terms = dino_loss(student, teacher, self.center, teacher_temperature=self.teacher_temperature(),
                                **self.loss_kwargs)
        with torch.no_grad():
            self.center.copy_(update_center(self.center, [gather_detached(t) for t in teacher],
                                            momentum=self.args["center_momentum"]))
        terms["tau"] = torch.full((), self.momentum(), device=loss.device)
        return loss, terms, features

    def after_backward(self) -> None:
        if self.epoch < self.args["freeze_last_layer_epochs"]:
            self.head.last_direction.grad = None
            self.head.last_norm.grad = None


METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (
    FroSSL, SimCLR, SwAV, MoCoV2Plus, SimSiam, BYOL, DINO, VICReg, BarlowTwins, WMSE, CorInfoMax)}


def build_method(cfg) -> Method:
    if cfg.method not in METHODS:
        raise UserError(f"unknown method {cfg.method!r}: choose one of {', '.join(METHODS)}")
    return METHODS[cfg.method](cfg)
