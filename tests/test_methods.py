"""The methods of Tables 2-3 around their losses: heads, momentum encoders, queues, prototypes,
schedules, and the one-word switch `method=...` (the losses themselves: test_losses_baselines.py)."""
import copy
import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from repro.cli import UserError
from repro.config import ConfigError, load_config
from repro.experiments.table import TABLE2
from repro.method_args import METHOD_ARGS
from repro.methods import METHODS, build_method, cosine_momentum
from repro.optim import build_optimizer
from tests.conftest import ROOT, crash_after_first_checkpoint

# tiny heads so that a step takes milliseconds; every method's own sizes are in its configs
TINY = ["model.width=8", "model.proj_hidden_dim=32", "model.proj_output_dim=16", "model.pred_hidden_dim=8",
        "data.batch_size=24"]
TINY_LOSS = {"mocov2plus": ["loss.queue_size=48"], "swav": ["loss.queue_size=48", "loss.num_prototypes=20"],
             "dino": ["loss.num_prototypes=20"], "wmse": ["loss.whitening_size=24"]}
BATCH = 24


def tiny_config(method: str, *overrides: str):
    return load_config(ROOT / "repro/configs/demo.yaml",
                       [f"method={method}", "model.in_channels=3", *TINY, *TINY_LOSS.get(method, []), *overrides])


def tiny_method(method: str, *overrides: str):
    torch.manual_seed(0)
    return build_method(tiny_config(method, *overrides))


def views(seed: int = 0, batch: int = BATCH):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 8, 8, generator=g) for _ in range(2)]


def step(method, optimizer, x, n: int, steps_per_epoch: int = 10, total: int = 100):
    method.set_progress(n, steps_per_epoch, total)
    loss, terms, features = method(x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    method.after_backward()
    optimizer.step()
    method.after_step()
    return loss, terms, features


def sgd(method, lr=0.05):
    return build_optimizer("sgd", method.param_groups(), lr=lr, weight_decay=0.0)


# ---- the switch: every Table 2 row is a registered method with a config per dataset ---------------

@pytest.mark.parametrize("dataset", TABLE2.datasets)
@pytest.mark.parametrize("row", TABLE2.rows)
def test_every_table2_cell_has_a_config_that_builds(row, dataset):
    path = ROOT / "repro/configs" / dataset / f"{row}.yaml"
    assert path.exists(), f"{path} missing"
    cfg = load_config(path)
    assert cfg.method in METHODS
    method = build_method(cfg)
    assert sum(p.numel() for p in method.backbone.parameters()) > 10_000_000   # a real ResNet18


def test_switching_the_method_is_one_word_and_bad_keys_name_themselves():
    for name in METHODS:
        assert type(tiny_method(name)).name == name
    with pytest.raises(ConfigError, match=r"loss\.lambd.*vicreg.*: .*sim_weight"):
        tiny_config("vicreg", "loss.lambd=0.1")
    with pytest.raises(ConfigError, match=r"loss\.temperature.*expected float"):
        tiny_config("simclr", "loss.temperature=cold")
    with pytest.raises(ConfigError, match="config key 'method' = 'simclr2': choose one of .*vicreg"):
        build_method(tiny_config("simclr2"))


def test_every_method_takes_the_record_the_config_reads_its_loss_section_into():
    assert {name: cls.args_type for name, cls in METHODS.items()} == METHOD_ARGS
    foreign = dataclasses.replace(tiny_config("frossl"), method="vicreg")   # VICReg with FroSSL's record
    with pytest.raises(UserError, match="method vicreg takes loss hyper-parameters VICRegArgs, got FroSSLArgs"):
        build_method(foreign)


def non_default(value):
    """Another value of the default's type: a flipped bool, 1.5 x a float (0.5 for 0); ints (sizes,
    iteration counts) keep their tiny-config values."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, float):
        return value * 1.5 if value else 0.5
    return None


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_config_values_reach_the_loss_through_loss_fn_alone(name, monkeypatch):
    """Replacing `loss_fn` on the class intercepts every loss call of the method (one place to
    wrap it, e.g. for the distributed tests), and each call carries the config's values of the
    record's loss part (test_losses_baselines.py: that part is the loss's signature)."""
    cls = METHODS[name]
    part = cls.loss_args_type or cls.args_type
    changed = {f.name: non_default(f.default) for f in dataclasses.fields(part) if non_default(f.default) is not None}
    tiny = tiny_config(name).loss
    expected = {f.name: changed.get(f.name, getattr(tiny, f.name)) for f in dataclasses.fields(part)}
    real_loss, calls = cls.loss_fn, []

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return real_loss(*args, **kwargs)

    method = tiny_method(name, *(f"loss.{key}={json.dumps(value)}" for key, value in changed.items()))
    monkeypatch.setattr(cls, "loss_fn", staticmethod(recording))
    method.set_progress(0, 10, 100)
    method(views())
    assert calls and all({key: kwargs[key] for key in expected} == expected for kwargs in calls), calls


# ---- properties every method must have --------------------------------------------------------

@pytest.mark.parametrize("name", sorted(METHODS))
def test_finite_gradients_reach_the_backbone_and_frozen_parts_get_none(name):
    method = tiny_method(name)
    method.set_progress(50, 10, 100)   # past every freeze epoch
    loss, terms, features = method(views())
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(v).all() for v in terms.values())
    assert len(features) == 2 and features[0].shape == (BATCH, method.backbone.num_features)
    for pname, p in method.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        else:  # momentum encoders, SimSiam's frozen bias, DINO's fixed last-layer norm
            assert p.grad is None, pname
    assert any(p.grad.abs().sum() > 0 for p in method.backbone.parameters())
    optimised = {id(p) for g in method.param_groups() for p in g["params"]}
    assert optimised == {id(p) for p in method.parameters() if p.requires_grad}


SYMMETRIC = sorted(METHODS)   # every loss of Tables 2-3 is symmetric in its two views


@pytest.mark.parametrize("name", SYMMETRIC)
def test_the_loss_is_symmetric_in_the_two_views(name):
    method = tiny_method(name)
    if name == "mocov2plus":   # the two views' queues hold different keys: give them the same ones
        method.queue[1].copy_(method.queue[0])
    method.set_progress(0, 10, 100)
    x1, x2 = views()
    a, b = copy.deepcopy(method), copy.deepcopy(method)
    torch.manual_seed(1)    # W-MSE's random sub-batches
    loss_12 = a([x1, x2])[0]
    torch.manual_seed(1)
    loss_21 = b([x2, x1])[0]
    assert torch.allclose(loss_12, loss_21, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["byol", "mocov2plus", "dino"])
def test_momentum_encoder_gets_no_gradient_and_follows_the_ema_formula(name):
    method = tiny_method(name, "loss.base_momentum=0.9", "loss.final_momentum=1.0")
    online_name, target_name = method.momentum_pairs[0]
    online, target = getattr(method, online_name), getattr(method, target_name)
    # a copy at init
    assert all(torch.equal(p, q) for p, q in zip(online.parameters(), target.parameters()))
    optimizer = sgd(method, lr=0.5)
    for n in range(3):
        before = [p.detach().clone() for p in target.parameters()]
        step(method, optimizer, views(n), n, total=4)
        tau = 0.9 if n == 0 else 1.0 - 0.1 * (math.cos(math.pi * n / 4) + 1) / 2
        for old, p, q in zip(before, target.parameters(), online.parameters()):
            assert p.grad is None and not p.requires_grad
            assert torch.allclose(p, tau * old + (1 - tau) * q, atol=1e-6)
    assert not all(torch.equal(p, q) for p, q in zip(online.parameters(), target.parameters()))


def test_cosine_momentum_schedule_endpoints():
    assert cosine_momentum(0, 100, 0.99, 1.0) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99, 1.0) == pytest.approx(0.995)
    assert cosine_momentum(100, 100, 0.99, 1.0) == pytest.approx(1.0)


def test_moco_queues_hold_the_last_k_keys_of_each_view_in_order():
    method = tiny_method("mocov2plus", "loss.queue_size=48")   # K = 2 batches
    optimizer = sgd(method)
    keys = []
    for n in range(3):
        x = views(n)
        with torch.no_grad():   # train-mode BatchNorm: the keys depend only on the batch
            keys.append([F.normalize(method.momentum_projector(method.momentum_backbone(v)), dim=1) for v in x])
        step(method, optimizer, x, n)
    assert int(method.queue_ptr) == (3 * BATCH) % 48
    for view in (0, 1):
        oldest_first = torch.roll(method.queue[view], -int(method.queue_ptr), dims=0)
        expected = torch.cat([keys[1][view], keys[2][view]])
        assert torch.allclose(oldest_first, expected, atol=1e-6)


def test_moco_scores_each_query_against_the_other_views_key_and_queue():
    method = tiny_method("mocov2plus")
    method.set_progress(0, 10, 100)
    x = views()
    queue = method.queue.clone()
    loss, _, _ = method(x)
    with torch.no_grad():
        q = [method.projector(method.backbone(v)) for v in x]
        k = [method.momentum_projector(method.momentum_backbone(v)) for v in x]

    def info_nce(query, key, negatives, t=0.2):
        query, key, negatives = (F.normalize(a, dim=1) for a in (query, key, negatives))
        logits = torch.cat([(query * key).sum(1, keepdim=True), query @ negatives.T], dim=1) / t
        return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long))
    expected = (info_nce(q[0], k[1], queue[1]) + info_nce(q[1], k[0], queue[0])) / 2
    assert torch.allclose(loss, expected, atol=1e-5)


def test_swav_queue_newest_first_used_from_its_epoch_and_prototypes_frozen_early():
    method = tiny_method("swav", "loss.queue_size=48", "loss.queue_start_epoch=2", "loss.freeze_prototypes_epochs=1")
    optimizer = sgd(method)
    embeddings = []
    for n, epoch_step in enumerate([0, 5, 10, 20]):   # steps_per_epoch 10: epochs 0, 0, 1, 2
        x = views(n)
        with torch.no_grad():
            embeddings.append(torch.stack([F.normalize(method.projector(method.backbone(v)), dim=1) for v in x]))
        prototypes = method.prototypes.detach().clone()
        method.set_progress(epoch_step, 10, 100)
        queue_before = method.queue.clone()
        if epoch_step == 20:   # the queue enters the codes: the loss differs from the queue-free one
            without = copy.deepcopy(method)
            without.args = dataclasses.replace(without.args, queue_start_epoch=99)
            assert not torch.allclose(method(x)[0], without(x)[0])
            method.queue.copy_(queue_before)   # undo the probe's enqueue
        step(method, optimizer, x, epoch_step)
        frozen = epoch_step < 10
        assert torch.equal(method.prototypes, prototypes) == frozen
    # after 4 batches of 24 in a queue of 48: the last two batches, newest first
    assert torch.allclose(method.queue, torch.cat([embeddings[3], embeddings[2]], dim=1), atol=1e-6)


def test_dino_teacher_temperature_warmup_centre_and_frozen_last_layer():
    method = tiny_method("dino", "loss.warmup_teacher_temperature=0.04", "loss.teacher_temperature=0.07",
                         "loss.warmup_teacher_temperature_epochs=4", "loss.freeze_last_layer_epochs=1",
                         "loss.center_momentum=0.9")
    temps = []
    for epoch in range(6):
        method.set_progress(epoch * 10, 10, 100)
        temps.append(method.teacher_temperature())
    assert temps == pytest.approx([0.04, 0.05, 0.06, 0.07, 0.07, 0.07])
    optimizer = sgd(method)
    x = views()
    last = method.head.last_direction.detach().clone()
    center = method.center.clone()
    with torch.no_grad():
        teacher = torch.cat([method.momentum_head(method.momentum_backbone(v)) for v in x])
    step(method, optimizer, x, 0)
    assert torch.equal(method.head.last_direction, last)          # frozen in epoch 0
    assert torch.allclose(method.center, 0.9 * center + 0.1 * teacher.mean(0), atol=1e-6)
    step(method, optimizer, views(1), 10)
    assert not torch.equal(method.head.last_direction, last)      # learnt from epoch 1


def test_simsiam_predictor_lr_is_fixed_and_projector_bias_before_bn_frozen():
    method = tiny_method("simsiam")
    groups = {g["name"]: g for g in method.param_groups()}
    assert groups["predictor"]["fixed_lr"] and not groups["method"].get("fixed_lr")
    assert not method.projector[6].bias.requires_grad


def test_corinfomax_running_estimates_are_state_that_a_checkpoint_restores():
    method = tiny_method("corinfomax")
    optimizer = sgd(method)
    covariance = method.covariance1.clone()
    step(method, optimizer, views(), 0)
    assert not torch.equal(method.covariance1, covariance)
    restored = tiny_method("corinfomax")
    restored.load_state_dict(method.state_dict())
    assert torch.equal(restored.covariance2, method.covariance2) and restored.mean1.dtype == torch.float64


# ---- every method trains on real CIFAR-10 and resumes exactly ---------------------------------

# the method's own CIFAR-10 config (optimizer, lr, loss hyper-parameters, augmentations), shrunk to a
# ResNet18 of width 16 with small heads and queues: 50 steps of batch 64 on real images
SHRINK = ["model.width=16", "model.proj_hidden_dim=256", "model.proj_output_dim=64", "model.pred_hidden_dim=64",
          "data.num_workers=0", "data.subset=3200", "data.batch_size=64", "optim.epochs=1", "optim.warmup_epochs=0.2",
          "eval.online_eval_every=0", "train.log_every=5"]
SHRINK_LOSS = {
    "mocov2plus": ["loss.queue_size=256"], "swav": ["loss.queue_size=128"],   # the queue enters from epoch 50 (unit-tested above)
    "wmse": ["model.proj_output_dim=16", "loss.whitening_size=64"],
    # measured: within 50 steps the CIFAR settings (teacher momentum 0.9995, centre momentum 0.9,
    # frozen last layer) drift towards the uniform distribution while the centre catches up; a
    # faster teacher and a slower centre show the learning signal at this scale
    "dino": ["loss.num_prototypes=256", "loss.base_momentum=0.99", "loss.center_momentum=0.99",
             "loss.freeze_last_layer_epochs=0"]}
# logging windows (5 steps) before the method's running state is meaningful: MoCo's queue starts as
# random unit vectors (easy negatives), CorInfoMax's covariance estimate starts at the identity
WARM_IN = {"mocov2plus": 1, "corinfomax": 1}
BASELINES = sorted(set(METHODS) - {"frossl"})   # FroSSL: tests/test_train.py


def cifar_method_config(name, root, out_dir, run, *overrides):
    return load_config(ROOT / "repro/configs/cifar10" / f"{name}.yaml",
                       [f"data.root={root}", f"out_dir={out_dir}", f"name={run}", "device=cpu",
                        *SHRINK, *SHRINK_LOSS.get(name, []), *overrides])


# slow (make test-slow): about 90 s of one core per method, 17 minutes for the ten; the default run
# keeps FroSSL's learning on real CIFAR-10 (tests/test_train.py) and every method's cheap checks
# (symmetry, gradients, bit-identical resume on real images below)
@pytest.mark.slow
@pytest.mark.needs_data
@pytest.mark.parametrize("name", BASELINES)
def test_every_method_lowers_its_loss_in_50_steps_on_real_cifar10(name, cifar10_root, accept_rebuilt_cifar, tmp_path):
    from repro.train import train

    cfg = cifar_method_config(name, cifar10_root, tmp_path, "learn")
    summary = train(cfg)
    records = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert summary["steps"] == 50 and len(losses) == 10 and all(math.isfinite(v) for v in losses), losses
    start = losses[WARM_IN.get(name, 0)]
    assert sum(losses[-2:]) / 2 < start, losses


@pytest.mark.needs_data
@pytest.mark.parametrize("name", BASELINES)
def test_every_method_resumes_bit_identically(name, cifar10_root, accept_rebuilt_cifar, tmp_path, monkeypatch):
    """A crash right after the epoch-1 checkpoint, then the same command: the final weights, buffers
    (queues, centres, running covariances) and momentum encoders equal an uninterrupted run's."""
    from repro.train import train

    small = ["model.width=8", "data.subset=96", "data.batch_size=32", "optim.epochs=2"]
    if name == "wmse":
        small.append("loss.whitening_size=32")
    straight = cifar_method_config(name, cifar10_root, tmp_path, "straight", *small)
    train(straight)
    crashing = cifar_method_config(name, cifar10_root, tmp_path, "crashing", *small)
    crash_after_first_checkpoint(crashing, monkeypatch)
    train(crashing)
    a, b = (torch.load(c.run_dir / "checkpoint.pt", weights_only=True) for c in (straight, crashing))
    assert a["step"] == b["step"] == 6
    for part in ("method", "classifier"):
        assert a[part].keys() == b[part].keys()
        differing = [k for k in a[part] if not torch.equal(a[part][k], b[part][k])]
        assert not differing, differing[:5]
