"""The config's `loss:` section: one frozen dataclass of hyper-parameters per method.

`repro.config` reads `loss:` into the record of the run's `method` with the same typed loader as
every other section (unknown key, wrong type: a one-line ConfigError naming the key); the method
(`repro.methods`) receives the record as `cfg.loss`. This module sits below both and imports
neither torch nor them, so the config never imports the methods.

Every default carries its source. The published per-dataset values live in the configs
(`repro/configs/<dataset>/<row>.yaml`); where a config and a default differ, the config wins and
its header says why. Facts are cited as `docs/sources.md section N`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class LossArgs:
    """Base of the per-method records (no fields): the type of `Config.loss`. A record is its loss
    function's keyword arguments, passed whole; where the method needs more (queues, momentum), the
    loss's part is its own record (`...LossArgs`) and the method's record adds to it."""


def loss_kwargs(args: LossArgs, loss_part: type[LossArgs]) -> dict:
    """`args`'s fields that are `loss_part`'s (a base of its type, or its type): its loss's keyword arguments."""
    return dataclasses.asdict(loss_part(**{f.name: getattr(args, f.name) for f in dataclasses.fields(loss_part)}))


@dataclass(frozen=True)
class FroSSLArgs(LossArgs):
    # the paper weighs the terms equally; the authors' code exposes the weight (docs/sources.md section 1)
    invariance_weight: float = 1.0
    # False: the paper's "no logs" ablation of Tables 2-3 (docs/sources.md section 2)
    use_logs: bool = True
    # column-norm epsilon; the authors' code has none and gives NaN on a collapsed dimension
    # (docs/sources.md section 2); the value is ours, its effect ~1e-12 relative on healthy inputs
    eps: float = 1e-6


@dataclass(frozen=True)
class SimCLRArgs(LossArgs):
    temperature: float = 0.2            # solo-learn's CIFAR config (docs/sources.md section 3)


@dataclass(frozen=True)
class VICRegArgs(LossArgs):
    # invariance / variance / covariance weights 25 / 25 / 1 (docs/sources.md section 3)
    sim_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0
    eps: float = 1e-4                   # inside the variance's square root: Bardes et al. 2022, eq. 1


@dataclass(frozen=True)
class BarlowTwinsArgs(LossArgs):
    lambd: float = 0.0051               # off-diagonal weight, solo-learn CIFAR (docs/sources.md section 3)
    scale: float = 0.1                  # whole-loss factor, solo-learn CIFAR (docs/sources.md section 3)


@dataclass(frozen=True)
class WMSEArgs(LossArgs):
    whitening_size: int = 128           # sub-batch whitened at once (docs/sources.md section 3)
    whitening_iterations: int = 1       # random splits per step (docs/sources.md section 3)
    eps: float = 0.0                    # covariance shrinkage; 0 in Ermolov et al.'s code and solo-learn
    # False: Ermolov et al.'s code (gradients through both views); solo-learn detaches the second
    # view, which every shipped W-MSE config sets (docs/methods.md)
    stop_gradient_second: bool = False


@dataclass(frozen=True)
class CorInfoMaxLossArgs(LossArgs):
    # alpha 250 on CIFAR-10 (1000 on CIFAR-100: the configs), docs/sources.md section 3; the rest
    # from the authors' fork OFSkean/FroSSL@e841c57 solo/methods/corinfomax.py and its configs
    alpha: float = 250.0                # weight of the MSE
    eps: float = 1e-6                   # R + eps I inside the log-determinant
    mean_momentum: float = 0.01         # weight of the old running mean (the fork's la_mu)
    covariance_momentum: float = 0.01   # weight of the old running covariance (la_R)
    normalize: bool = True              # L2-normalise each embedding first (normalize_on)


@dataclass(frozen=True)
class CorInfoMaxArgs(CorInfoMaxLossArgs):
    initial_scale: float = 1.0          # running covariances start at initial_scale * I (R_ini)


@dataclass(frozen=True)
class SimSiamArgs(LossArgs):
    """SimSiam's loss has no hyper-parameter (Chen & He 2021, eq. 1-4)."""


@dataclass(frozen=True)
class BYOLArgs(LossArgs):
    # EMA coefficient tau from base to final along a cosine (docs/sources.md section 3)
    base_momentum: float = 0.99
    final_momentum: float = 1.0


@dataclass(frozen=True)
class MoCoV2PlusLossArgs(LossArgs):
    temperature: float = 0.2            # docs/sources.md section 3


@dataclass(frozen=True)
class MoCoV2PlusArgs(MoCoV2PlusLossArgs):
    queue_size: int = 65536             # MoCo's K (He et al. 2020); solo-learn CIFAR: 32768 (the configs)
    base_momentum: float = 0.99         # tau 0.99 -> 0.999 along a cosine (docs/sources.md section 3)
    final_momentum: float = 0.999


@dataclass(frozen=True)
class SwAVLossArgs(LossArgs):
    # tau, Sinkhorn epsilon and iterations, prototypes, queue and its start epoch: solo-learn's
    # CIFAR setting (docs/sources.md section 3)
    temperature: float = 0.1
    epsilon: float = 0.05
    iterations: int = 3


@dataclass(frozen=True)
class SwAVArgs(SwAVLossArgs):
    num_prototypes: int = 3000
    queue_size: int = 3840              # embeddings kept per view; 0: no queue
    queue_start_epoch: int = 50         # the queue enters the codes from this epoch on
    # solo-learn's argument default (solo/methods/swav.py); its CIFAR config sets 2 (section 3)
    freeze_prototypes_epochs: int = 1


@dataclass(frozen=True)
class DINOLossArgs(LossArgs):
    # student/teacher temperatures, prototypes and teacher momentum: solo-learn CIFAR
    # (docs/sources.md section 3); the rest: solo-learn's defaults (solo/methods/dino.py @9187ea3)
    student_temperature: float = 0.1


@dataclass(frozen=True)
class DINOArgs(DINOLossArgs):
    teacher_temperature: float = 0.07   # after the warm-up (the loss gets the scheduled value)
    warmup_teacher_temperature: float = 0.04
    warmup_teacher_temperature_epochs: int = 0   # 0: the teacher temperature is constant
    num_prototypes: int = 4096
    center_momentum: float = 0.9        # weight of the old centre
    base_momentum: float = 0.9995
    final_momentum: float = 1.0
    freeze_last_layer_epochs: int = 1   # the prototypes layer gets no update in these first epochs
    norm_last_layer: bool = True        # the prototypes' norm fixed to 1
    use_bn_in_head: bool = False


# `method:` -> the record its `loss:` section is read into (the method names of the config)
METHOD_ARGS: dict[str, type[LossArgs]] = {
    "frossl": FroSSLArgs, "simclr": SimCLRArgs, "swav": SwAVArgs, "mocov2plus": MoCoV2PlusArgs,
    "simsiam": SimSiamArgs, "byol": BYOLArgs, "dino": DINOArgs, "vicreg": VICRegArgs,
    "barlow_twins": BarlowTwinsArgs, "wmse": WMSEArgs, "corinfomax": CorInfoMaxArgs,
}
