"""LARS against steps worked out by hand, the warmup-cosine schedule, build_optimizer."""
import math

import pytest
import torch

from repro.optim import LARS, build_optimizer, scale_lr, set_lr, warmup_cosine_lr

F64 = torch.float64


def tensor(values):
    return torch.tensor(values, dtype=F64)


def parameter(values):
    return torch.nn.Parameter(tensor(values))


def lars_step(params_and_grads, **kwargs):
    """One optimizer step on parameters whose gradients are set by hand; returns the optimizer."""
    params = [p for p, _ in params_and_grads]
    optimizer = LARS(params, **kwargs)
    for p, g in params_and_grads:
        p.grad = tensor(g)
    optimizer.step()
    return optimizer


# Worked example for a 2-D weight: p = diag(3, 4) so ||p|| = 5; g = diag(0.6, 0.8) so ||g|| = 1;
# wd = 0.2, eta = 0.02: trust = 0.02 * 5 / (1 + 0.2 * 5 + 1e-8) = 0.05 (up to the 1e-8).
P0, G1, WD, ETA = [[3.0, 0.0], [0.0, 4.0]], [[0.6, 0.0], [0.0, 0.8]], 0.2, 0.02
TRUST = 0.02 * 5 / (2 + 1e-8)


def test_weight_step_clip_not_binding():
    # lr = 0.1: trust / lr = 0.5 < 1 -> d = (g + wd p) * 0.5 = diag(1.2, 1.6) * 0.5 = diag(0.6, 0.8)
    weight = parameter(P0)
    lars_step([(weight, G1)], lr=0.1, weight_decay=WD, eta=ETA)
    scale = TRUST / 0.1
    expected = [[3.0 - 0.1 * 1.2 * scale, 0.0], [0.0, 4.0 - 0.1 * 1.6 * scale]]   # ~ diag(2.94, 3.92)
    torch.testing.assert_close(weight.data, tensor(expected), rtol=0, atol=1e-12)
    assert weight.data[0, 0].item() == pytest.approx(2.94, abs=1e-8)


def test_weight_step_clip_binding():
    # lr = 0.01: trust / lr = 5 -> clipped to 1 -> d = g + wd p = diag(1.2, 1.6)
    weight = parameter(P0)
    lars_step([(weight, G1)], lr=0.01, weight_decay=WD, eta=ETA)
    torch.testing.assert_close(weight.data, tensor([[2.988, 0.0], [0.0, 3.984]]), rtol=0, atol=1e-12)


def test_weight_step_without_clipping_uses_the_raw_trust_ratio():
    # clip_lr=False (solo-learn's code default): d = (g + wd p) * 0.05, whatever the lr
    weight = parameter(P0)
    lars_step([(weight, G1)], lr=0.01, weight_decay=WD, eta=ETA, clip_lr=False)
    expected = [[3.0 - 0.01 * 1.2 * TRUST, 0.0], [0.0, 4.0 - 0.01 * 1.6 * TRUST]]
    torch.testing.assert_close(weight.data, tensor(expected), rtol=0, atol=1e-12)


def test_bias_and_norm_weight_take_a_plain_step():
    # ndim 1 with exclude_bias_n_norm (default): no weight decay, no scaling, d = g
    bias, norm_weight = parameter([1.0, -2.0]), parameter([1.0, 1.0])
    batch_norm = torch.nn.BatchNorm1d(2).double()
    assert batch_norm.weight.ndim == 1           # norm weights are what ndim == 1 catches
    lars_step([(bias, [0.5, 0.5]), (norm_weight, [0.3, -0.1])], lr=0.1, weight_decay=WD, eta=ETA)
    torch.testing.assert_close(bias.data, tensor([0.95, -2.05]), rtol=0, atol=1e-12)
    torch.testing.assert_close(norm_weight.data, tensor([0.97, 1.01]), rtol=0, atol=1e-12)


def test_bias_is_adapted_when_not_excluded():
    # exclude_bias_n_norm=False: p = (3, 4), g = (0.6, 0.8) is the worked example in 1-D
    bias = parameter([3.0, 4.0])
    lars_step([(bias, [0.6, 0.8])], lr=0.1, weight_decay=WD, eta=ETA, exclude_bias_n_norm=False)
    scale = TRUST / 0.1
    torch.testing.assert_close(bias.data, tensor([3.0 - 0.1 * 1.2 * scale, 4.0 - 0.1 * 1.6 * scale]),
                               rtol=0, atol=1e-12)


def test_zero_gradient_and_zero_weight_get_no_decay_and_no_scaling():
    # as solo-learn: the adaptation (and the weight decay with it) needs ||p|| > 0 and ||g|| > 0
    still, zero = parameter([[1.0, 2.0], [3.0, 4.0]]), parameter([[0.0, 0.0], [0.0, 0.0]])
    lars_step([(still, [[0.0, 0.0], [0.0, 0.0]]), (zero, [[1.0, -1.0], [0.5, 0.0]])],
              lr=0.1, weight_decay=WD, eta=ETA)
    torch.testing.assert_close(still.data, tensor([[1.0, 2.0], [3.0, 4.0]]), rtol=0, atol=0)
    torch.testing.assert_close(zero.data, tensor([[-0.1, 0.1], [-0.05, 0.0]]), rtol=0, atol=1e-12)


def test_second_step_uses_momentum():
    weight, bias = parameter(P0), parameter([1.0, -2.0])
    optimizer = lars_step([(weight, G1), (bias, [0.5, 0.5])], lr=0.1, weight_decay=WD, eta=ETA)
    # step 1 (above): d1 = diag(0.6, 0.8) up to the 1e-8; p1 = diag(2.94, 3.92), ||p1|| = 4.9
    d1 = [[1.2 * TRUST / 0.1, 0.0], [0.0, 1.6 * TRUST / 0.1]]
    p1 = [[3.0 - 0.1 * d1[0][0], 0.0], [0.0, 4.0 - 0.1 * d1[1][1]]]
    g2 = [[0.0, 0.6], [0.8, 0.0]]                                   # ||g2|| = 1
    p1_norm = math.sqrt(p1[0][0] ** 2 + p1[1][1] ** 2)
    trust2 = min(ETA * p1_norm / (1.0 + WD * p1_norm + 1e-8) / 0.1, 1.0)
    d2 = [[(g2[i][j] + WD * p1[i][j]) * trust2 for j in range(2)] for i in range(2)]
    buf2 = [[0.9 * d1[i][j] + d2[i][j] for j in range(2)] for i in range(2)]
    expected = [[p1[i][j] - 0.1 * buf2[i][j] for j in range(2)] for i in range(2)]
    weight.grad, bias.grad = tensor(g2), tensor([-0.2, 0.1])
    optimizer.step()
    torch.testing.assert_close(weight.data, tensor(expected), rtol=0, atol=1e-12)
    assert p1_norm == pytest.approx(4.9, abs=1e-6)
    # bias: buf2 = 0.9 * g1 + g2 = (0.25, 0.55); p2 = (0.95, -2.05) - 0.1 * buf2
    torch.testing.assert_close(bias.data, tensor([0.925, -2.105]), rtol=0, atol=1e-12)


def test_nesterov_step():
    # nesterov: p -= lr * (d + momentum * buf); on step 1 buf = d, so p -= lr * 1.9 * d
    bias = parameter([1.0, -2.0])
    lars_step([(bias, [0.5, 0.5])], lr=0.1, weight_decay=WD, eta=ETA, nesterov=True)
    torch.testing.assert_close(bias.data, tensor([1.0 - 0.1 * 1.9 * 0.5, -2.0 - 0.1 * 1.9 * 0.5]),
                               rtol=0, atol=1e-12)


def _three_steps(optimizer, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        optimizer.step()


def test_lars_exclude_group_is_sgd_with_momentum():
    torch.manual_seed(1)
    init = [torch.randn(4, 3, dtype=F64), torch.randn(4, dtype=F64)]
    grads = [[torch.randn(4, 3, dtype=F64), torch.randn(4, dtype=F64)] for _ in range(3)]
    ours = [torch.nn.Parameter(t.clone()) for t in init]
    reference = [torch.nn.Parameter(t.clone()) for t in init]
    _three_steps(LARS([{"params": ours, "lars_exclude": True}], lr=0.05, weight_decay=0.01, eta=ETA), ours, grads)
    _three_steps(torch.optim.SGD(reference, lr=0.05, momentum=0.9, weight_decay=0.01), reference, grads)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a.data, b.data, rtol=1e-12, atol=1e-12)
    # and it really differs from the adapted update
    adapted = [torch.nn.Parameter(t.clone()) for t in init]
    _three_steps(LARS(adapted, lr=0.05, weight_decay=0.01, eta=ETA), adapted, grads)
    assert (adapted[0].data - reference[0].data).abs().max() > 1e-3


def test_groups_keep_their_own_settings():
    # one adapted group and one excluded group in the same optimizer
    weight, other = parameter(P0), parameter(P0)
    optimizer = LARS([{"params": [weight]}, {"params": [other], "lars_exclude": True, "weight_decay": 0.0}],
                     lr=0.1, weight_decay=WD, eta=ETA)
    weight.grad, other.grad = tensor(G1), tensor(G1)
    optimizer.step()
    assert weight.data[0, 0].item() == pytest.approx(2.94, abs=1e-8)
    torch.testing.assert_close(other.data, tensor([[2.94, 0.0], [0.0, 3.92]]), rtol=0, atol=1e-12)


def test_parameters_without_gradient_are_untouched():
    used, unused = parameter([[1.0, 2.0]]), parameter([[5.0, 6.0]])
    optimizer = LARS([used, unused], lr=0.1, weight_decay=WD)
    used.grad = tensor([[0.1, 0.1]])
    optimizer.step()
    torch.testing.assert_close(unused.data, tensor([[5.0, 6.0]]), rtol=0, atol=0)
    assert "momentum_buffer" not in optimizer.state[unused]


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(2)
    init = torch.randn(5, 3, dtype=F64)
    grads = [[torch.randn(5, 3, dtype=F64)] for _ in range(3)]
    straight = [torch.nn.Parameter(init.clone())]
    _three_steps(LARS(straight, lr=0.1, weight_decay=1e-4), straight, grads)
    resumed = [torch.nn.Parameter(init.clone())]
    first = LARS(resumed, lr=0.1, weight_decay=1e-4)
    _three_steps(first, resumed, grads[:2])
    second = LARS(resumed, lr=0.1, weight_decay=1e-4)
    second.load_state_dict(first.state_dict())
    _three_steps(second, resumed, grads[2:])
    torch.testing.assert_close(resumed[0].data, straight[0].data, rtol=0, atol=0)


def test_lars_step_reads_nothing_back_from_the_device():
    # fake tensors carry no data: a .item() or a value-dependent branch in step() would raise
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        weight, bias = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(4))
        optimizer = LARS([{"params": [weight, bias]}, {"params": [], "lars_exclude": True}],
                         lr=0.1, weight_decay=1e-4)
        for _ in range(2):
            weight.grad, bias.grad = torch.randn(4, 3), torch.randn(4)
            optimizer.step()
        with pytest.raises(Exception):       # the check has teeth
            weight.sum().item()


# ---- schedule -----------------------------------------------------------------------------

SCHEDULE = dict(base_lr=0.6, total_steps=1000, warmup_steps=101, warmup_start_lr=3e-5, min_lr=1e-3)


def test_schedule_end_points():
    assert warmup_cosine_lr(0, **SCHEDULE) == pytest.approx(3e-5, rel=1e-12)
    assert warmup_cosine_lr(101, **SCHEDULE) == pytest.approx(0.6, rel=1e-12)
    assert warmup_cosine_lr(100, **SCHEDULE) == pytest.approx(0.6, rel=1e-12)   # solo-learn: W - 1 steps
    assert warmup_cosine_lr(1000, **SCHEDULE) == pytest.approx(1e-3, rel=1e-12)
    assert warmup_cosine_lr(5000, **SCHEDULE) == pytest.approx(1e-3, rel=1e-12)


def test_schedule_interior_values():
    # half-way through the warmup (step 50 of 0..100) and half-way through the cosine
    assert warmup_cosine_lr(50, **SCHEDULE) == pytest.approx((3e-5 + 0.6) / 2, rel=1e-12)
    assert warmup_cosine_lr(101 + (1000 - 101) / 2, **SCHEDULE) == pytest.approx((0.6 + 1e-3) / 2, rel=1e-12)
    quarter = 101 + (1000 - 101) / 4
    assert warmup_cosine_lr(quarter, **SCHEDULE) == pytest.approx(
        1e-3 + (0.6 - 1e-3) * (1 + math.sqrt(0.5)) / 2, rel=1e-12)


def test_schedule_shape():
    lrs = [warmup_cosine_lr(step, **SCHEDULE) for step in range(1001)]
    warmup, decay = lrs[:101], lrs[101:]
    assert all(b > a for a, b in zip(warmup, warmup[1:]))          # strictly increasing warmup
    assert all(b < a for a, b in zip(decay, decay[1:]))            # strictly decreasing after it
    assert max(lrs) == pytest.approx(0.6, rel=1e-12)


def test_schedule_without_warmup_starts_at_base_lr():
    assert warmup_cosine_lr(0, base_lr=0.3, total_steps=10, warmup_steps=0) == pytest.approx(0.3)
    assert warmup_cosine_lr(10, base_lr=0.3, total_steps=10, warmup_steps=0) == pytest.approx(0.0, abs=1e-15)


def test_set_lr_uses_each_groups_base_lr_and_keeps_fixed_groups():
    backbone, classifier, predictor = (torch.nn.Parameter(torch.zeros(2, 2)) for _ in range(3))
    optimizer = build_optimizer("sgd", [{"params": [backbone]},
                                        {"params": [classifier], "lr": 0.1},
                                        {"params": [predictor], "lr": 0.05, "fixed_lr": True}],
                                lr=0.4, weight_decay=0.0)
    schedule = dict(total_steps=100, warmup_steps=10, warmup_start_lr=3e-5, min_lr=0.0)
    assert set_lr(optimizer, 0, **schedule) == pytest.approx(3e-5)       # returns the first group's lr
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([3e-5, 3e-5, 0.05])
    optimizer.param_groups[2]["lr"] = 123.0      # a fixed group is reset to its base_lr
    set_lr(optimizer, 40, **schedule)
    backbone_lr, classifier_lr, predictor_lr = (g["lr"] for g in optimizer.param_groups)
    assert backbone_lr == pytest.approx(0.4 * (1 + math.cos(math.pi * 30 / 90)) / 2)
    assert backbone_lr / classifier_lr == pytest.approx(4.0)
    assert predictor_lr == 0.05
    assert [g["base_lr"] for g in optimizer.param_groups] == [0.4, 0.1, 0.05]   # never overwritten


def _old_warmup_cosine(step, *, base_lr, total_steps, warmup_steps, warmup_start_lr, min_lr):
    """The schedule as it was before restart_steps existed, written out again (the reference)."""
    if step < warmup_steps:
        return warmup_start_lr + step * (base_lr - warmup_start_lr) / (warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / max(1.0, total_steps - warmup_steps))
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def test_no_restarts_is_bit_identical_to_the_single_cosine():
    for step in range(1200):
        reference = _old_warmup_cosine(step, **SCHEDULE)
        assert warmup_cosine_lr(step, **SCHEDULE) == reference
        assert warmup_cosine_lr(step, **SCHEDULE, restart_steps=0) == reference


@pytest.mark.parametrize("warmup_steps", [0, 7])
def test_restarts_follow_torchs_cosine_annealing_warm_restarts(warmup_steps):
    # torch's SGDR (T_mult = 1) stepped once per optimizer step after the warmup is the oracle
    base_lr, min_lr, restart, total = 0.02, 1e-4, 15, 100 + warmup_steps
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=base_lr)
    oracle = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=restart, eta_min=min_lr)
    ours = dict(base_lr=base_lr, total_steps=total, warmup_steps=warmup_steps, warmup_start_lr=3e-5,
                min_lr=min_lr, restart_steps=restart)
    restarts = 0
    for step in range(warmup_steps, total):
        assert warmup_cosine_lr(step, **ours) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        restarts += warmup_cosine_lr(step, **ours) == pytest.approx(base_lr, rel=1e-12)
        optimizer.step()
        oracle.step()
    assert restarts == 7                    # steps 0, 15, ..., 90 after the warmup: 100 / 15 cycles, started
    # the warmup happens once, at the start, exactly as without restarts
    for step in range(warmup_steps):
        assert warmup_cosine_lr(step, **ours) == warmup_cosine_lr(step, **{**ours, "restart_steps": 0})
    assert warmup_cosine_lr(total, **ours) == min_lr and warmup_cosine_lr(total + 5, **ours) == min_lr


def test_restart_cycle_values_written_out():
    # one cycle of 4 steps, no warmup: base, mid-way above, half, mid-way below, then base again
    lrs = [warmup_cosine_lr(step, base_lr=1.0, total_steps=12, warmup_steps=0, min_lr=0.0, restart_steps=4)
           for step in range(12)]
    cycle = [1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2]
    assert lrs == pytest.approx(cycle * 3, rel=1e-12, abs=1e-15)


def test_set_lr_passes_restart_steps_to_every_scheduled_group():
    backbone, classifier = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = build_optimizer("sgd", [{"params": [backbone]}, {"params": [classifier], "lr": 0.1}],
                                lr=0.4, weight_decay=0.0)
    schedule = dict(total_steps=100, warmup_steps=0, warmup_start_lr=3e-5, min_lr=0.0)
    assert set_lr(optimizer, 30, **schedule, restart_steps=30) == pytest.approx(0.4)     # a restart
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.1)
    assert set_lr(optimizer, 30, **schedule) == pytest.approx(0.4 * (1 + math.cos(math.pi * 0.3)) / 2)


def test_scale_lr():
    assert scale_lr(0.3, 256) == pytest.approx(0.3)
    assert scale_lr(0.3, 512) == pytest.approx(0.6)
    assert scale_lr(0.1, 64) == pytest.approx(0.025)


# ---- build_optimizer -----------------------------------------------------------------------

def test_build_optimizer_rejects_unknown_names():
    with pytest.raises(ValueError) as err:
        build_optimizer("rmsprop", [{"params": [torch.nn.Parameter(torch.zeros(1))]}], lr=0.1, weight_decay=0.0)
    message = str(err.value)
    assert "rmsprop" in message and all(name in message for name in ("lars", "sgd", "adam"))


@pytest.mark.parametrize("name, cls", [("lars", LARS), ("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)])
def test_build_optimizer_groups(name, cls):
    weight, head = torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(2, 3))
    head_group = {"name": "classifier", "params": [head], "lr": 0.025, "weight_decay": 0.0}
    optimizer = build_optimizer(name, [{"params": [weight]}, head_group], lr=0.6, weight_decay=1e-6,
                                momentum=0.85, eta=0.03)
    assert type(optimizer) is cls
    body, classifier = optimizer.param_groups
    assert (body["lr"], body["base_lr"], body["weight_decay"]) == (0.6, 0.6, 1e-6)
    assert (classifier["lr"], classifier["base_lr"], classifier["weight_decay"]) == (0.025, 0.025, 0.0)
    assert classifier["name"] == "classifier"
    assert "base_lr" not in head_group                  # the caller's dict is not modified
    if name == "lars":
        assert body["momentum"] == 0.85 and body["eta"] == 0.03
        assert body["clip_lr"] and body["exclude_bias_n_norm"] and not body["lars_exclude"]
    elif name == "sgd":
        assert body["momentum"] == 0.85
    else:
        assert "momentum" not in body
