"""Tests of the ten baseline losses (Tables 2-3): agreement with lightly (test-only dependency) where
it has the loss, otherwise with an independent float64 computation from the paper's equations, plus
properties (symmetry, stop-gradient, queue order, EMA centre, fp32 under bf16 autocast).

Convention differences from lightly, compensated explicitly below:
- VICReg: lightly averages the two variance terms, we sum them (paper eq. 6, solo-learn), so
  ours(var_weight=mu) == lightly(mu_param=2 * mu).
- Barlow Twins: solo-learn multiplies the whole loss by scale_loss, lightly has no scale, so
  ours == scale * lightly.
- DINO: lightly's teacher temperature schedule is disabled by passing teacher_temp explicitly.
"""
import dataclasses
import inspect
import itertools

import pytest
import torch
import torch.nn.functional as F

from repro.losses.barlow_twins import barlow_twins_loss, batch_standardise
from repro.losses.corinfomax import CorInfoMaxState, corinfomax_loss, init_corinfomax_state
from repro.losses.dino import dino_loss, update_center
from repro.losses.negative_cosine import byol_loss, negative_cosine_loss, simsiam_loss
from repro.losses.nt_xent import moco_loss, nt_xent_loss, update_queue
from repro.losses.swav import sinkhorn_knopp, swav_loss
from repro.losses.vicreg import vicreg_loss
from repro.losses.wmse import whiten, wmse_loss
from repro.method_args import METHOD_ARGS
from repro.methods import METHODS


@pytest.fixture
def lightly_loss():
    return pytest.importorskip("lightly.loss", reason="lightly (test-only reference) not installed")


def pair(n=16, d=8, requires_grad=False):
    z1, z2 = torch.randn(n, d), torch.randn(n, d)
    return z1.requires_grad_(requires_grad), z2.requires_grad_(requires_grad)


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a).double().reshape(()), torch.as_tensor(b).double().reshape(()),
                          rtol=tol, atol=tol)


# ---------------------------------------------------------------- SimCLR NT-Xent
def test_nt_xent_matches_lightly(lightly_loss):
    z1, z2 = pair(32, 16)
    loss, terms = nt_xent_loss(z1, z2, temperature=0.2)
    assert close(loss, lightly_loss.NTXentLoss(temperature=0.2)(z1, z2))
    assert close(terms["loss"], loss)


def test_nt_xent_closed_form_for_orthonormal_identical_views():
    # Rows of an orthonormal basis, both views equal: the positive logit is 1/t, the 2N - 2
    # negatives (all orthogonal) have logit 0, so every anchor costs -log(e^(1/t) / (e^(1/t) + 2N - 2)).
    n, t = 6, 0.2
    z = torch.linalg.qr(torch.randn(16, 16))[0][:n] * 3.0      # scale must not matter
    loss, _ = nt_xent_loss(z, z.clone(), temperature=t)
    expected = -torch.log(torch.exp(torch.tensor(1 / t)) / (torch.exp(torch.tensor(1 / t)) + 2 * n - 2))
    assert close(loss, expected)


def test_nt_xent_symmetric_and_finite_gradients():
    z1, z2 = pair(requires_grad=True)
    loss, _ = nt_xent_loss(z1, z2)
    assert close(loss, nt_xent_loss(z2, z1)[0])
    loss.backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


# ---------------------------------------------------------------- MoCo
def moco_reference(query, key, queue, t):
    # Eq. 1 of MoCo, one query at a time, float64.
    q = F.normalize(query.double(), dim=1)
    k = F.normalize(key.double(), dim=1)
    negatives = F.normalize(queue.double(), dim=1)
    losses = []
    for i in range(q.shape[0]):
        positive = torch.exp(q[i] @ k[i] / t)
        losses.append(-torch.log(positive / (positive + torch.exp(negatives @ q[i] / t).sum())))
    return torch.stack(losses).mean()


def test_moco_loss_matches_equation_and_blocks_key_and_queue_gradients():
    query, key = pair(8, 16, requires_grad=True)
    queue = torch.randn(40, 16, requires_grad=True)
    loss, terms = moco_loss(query, key, queue, temperature=0.2)
    assert close(loss, moco_reference(query.detach(), key.detach(), queue.detach(), 0.2))
    loss.backward()
    assert key.grad is None and queue.grad is None
    assert torch.isfinite(query.grad).all() and query.grad.abs().sum() > 0
    assert not any(v.requires_grad for v in terms.values())


def test_update_queue_keeps_last_k_keys_in_order():
    size, dim = 10, 3
    queue, ptr = torch.zeros(size, dim), 0
    pushed = []
    for step in range(7):                      # batches of 4 into 10 slots: wraps mid-batch
        keys = torch.arange(step * 4, step * 4 + 4).float()[:, None].repeat(1, dim)
        before, before_values = queue, queue.clone()
        queue, ptr = update_queue(before, keys, ptr)
        assert torch.equal(before, before_values) and ptr == (step + 1) * 4 % size
        pushed.extend(keys[:, 0].tolist())
        held = torch.roll(queue, -ptr, dims=0)[:, 0].tolist()   # oldest -> newest
        expected = pushed[-size:]
        assert held[size - len(expected):] == expected


def test_update_queue_input_untouched_tensor_pointer_and_oversized_batch():
    queue = torch.zeros(5, 2)
    keys = torch.arange(16).float().reshape(8, 2).requires_grad_()
    new_queue, ptr = update_queue(queue, keys, torch.tensor(3))
    assert torch.equal(queue, torch.zeros(5, 2))                  # functional
    assert isinstance(ptr, torch.Tensor) and int(ptr) == (3 + 8) % 5
    assert not new_queue.requires_grad
    assert torch.equal(torch.roll(new_queue, -int(ptr), dims=0), keys[-5:].detach())


# ---------------------------------------------------------------- SwAV / Sinkhorn
def sinkhorn_scaling_vectors(scores, epsilon, iterations):
    # Sinkhorn-Knopp in its u/v form (float64): P = diag(a) E diag(b), alternately matching the
    # prototype marginal 1/K and the sample marginal 1/B; codes = B * P.
    kernel = torch.exp(scores.double() / epsilon)
    b_count, k_count = kernel.shape
    a = torch.ones(b_count, dtype=torch.float64)
    for _ in range(iterations):
        b = (1 / k_count) / (a @ kernel)
        a = (1 / b_count) / (kernel @ b)
    return b_count * a[:, None] * kernel * b[None, :]


def test_sinkhorn_matches_scaling_form_and_lightly(lightly_loss):
    from lightly.loss.swav_loss import sinkhorn
    scores = F.normalize(torch.randn(24, 8), dim=1) @ F.normalize(torch.randn(10, 8), dim=1).T
    codes = sinkhorn_knopp(scores, epsilon=0.05, iterations=3)
    assert torch.allclose(codes.double(), sinkhorn_scaling_vectors(scores, 0.05, 3), rtol=1e-4, atol=1e-6)
    assert torch.allclose(codes, sinkhorn(scores, iterations=3, epsilon=0.05), rtol=1e-4, atol=1e-6)


def test_sinkhorn_marginals():
    scores = torch.randn(30, 6).clamp(-1, 1)
    codes = sinkhorn_knopp(scores, epsilon=0.5, iterations=3)
    assert torch.allclose(codes.sum(dim=1), torch.ones(30), atol=1e-5)      # each sample's code sums to 1
    converged = sinkhorn_knopp(scores, epsilon=0.5, iterations=200)
    assert torch.allclose(converged.sum(dim=0), torch.full((6,), 30 / 6), atol=1e-3)   # equipartition
    assert (converged >= 0).all()


def test_swav_matches_lightly_with_and_without_queue(lightly_loss):
    s1, s2 = pair(16, 12)
    s1, s2 = s1.tanh(), s2.tanh()
    reference = lightly_loss.SwaVLoss(temperature=0.1, sinkhorn_iterations=3, sinkhorn_epsilon=0.05)
    assert close(swav_loss(s1, s2)[0], reference([s1, s2], []))
    queue = (torch.randn(32, 12).tanh(), torch.randn(32, 12).tanh())
    with_queue = swav_loss(s1, s2, queue_scores=queue)[0]
    assert close(with_queue, reference([s1, s2], [], queue_outputs=list(queue)))
    assert not close(with_queue, swav_loss(s1, s2)[0], 1e-3)            # the queue changes the codes


def test_swav_codes_carry_no_gradient_and_loss_is_symmetric():
    s1, s2 = pair(16, 12, requires_grad=True)
    t = 0.1
    loss, _ = swav_loss(s1, s2, temperature=t)
    assert close(loss, swav_loss(s2, s1, temperature=t)[0])
    loss.backward()
    # With codes as constants, d/ds1 of -mean(q2 . log softmax(s1/t)) / 2 is (softmax(s1/t) - q2) / (2 t B).
    q2 = sinkhorn_scaling_vectors(s2.detach(), 0.05, 3).float()
    expected = (torch.softmax(s1.detach() / t, dim=1) - q2) / (2 * t * s1.shape[0])
    assert torch.allclose(s1.grad, expected, atol=1e-5)


# ---------------------------------------------------------------- DINO
def test_dino_matches_lightly_and_center_update(lightly_loss):
    p = 20
    student = [torch.randn(8, p) for _ in range(4)]             # 2 global + 2 extra crops
    teacher = [torch.randn(8, p) for _ in range(2)]
    center = torch.randn(p) * 0.1
    reference = lightly_loss.DINOLoss(output_dim=p, warmup_teacher_temp=0.07, teacher_temp=0.07,
                                      student_temp=0.1, center_momentum=0.9)
    reference.center.copy_(center.view(1, 1, p))
    expected = reference(teacher, student, teacher_temp=0.07)
    assert close(dino_loss(student, teacher, center)[0], expected)
    assert torch.allclose(update_center(center, teacher, momentum=0.9), reference.center.view(p), atol=1e-6)


def test_update_center_is_the_ema_formula():
    center = torch.randn(1, 5)
    teacher = [torch.randn(4, 5), torch.randn(4, 5)]
    new = update_center(center, teacher, momentum=0.9)
    assert new.shape == center.shape
    assert torch.allclose(new, 0.9 * center + 0.1 * torch.cat(teacher).mean(dim=0), atol=1e-6)


def test_dino_teacher_gets_no_gradient_and_view_order_does_not_matter():
    s1, s2 = pair(8, 10, requires_grad=True)
    t1, t2 = pair(8, 10, requires_grad=True)
    center = torch.randn(10, requires_grad=True)
    loss, terms = dino_loss([s1, s2], [t1, t2], center)
    assert close(loss, dino_loss([s2, s1], [t2, t1], center)[0])
    loss.backward()
    assert t1.grad is None and t2.grad is None and center.grad is None
    assert torch.isfinite(s1.grad).all() and s1.grad.abs().sum() > 0
    assert 0 < terms["teacher_entropy"] < torch.log(torch.tensor(10.0))


# ---------------------------------------------------------------- BYOL / SimSiam
def test_negative_cosine_matches_lightly_with_stop_gradient(lightly_loss):
    p, z = pair(12, 6, requires_grad=True)
    loss, _ = negative_cosine_loss(p, z)
    assert close(loss, lightly_loss.NegativeCosineSimilarity()(p, z.detach()))
    loss.backward()
    assert z.grad is None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_byol_is_the_squared_distance_form_and_an_affine_map_of_simsiam():
    p1, p2 = pair(12, 6, requires_grad=True)
    t1, t2 = pair(12, 6, requires_grad=True)
    loss, _ = byol_loss(p1, p2, t1, t2)
    # BYOL eq. 2: mean ||p/|p| - z/|z|||^2, summed over both directions.
    def distance(a, b):
        return (F.normalize(a.detach(), dim=1) - F.normalize(b.detach(), dim=1)).pow(2).sum(1).mean()
    assert close(loss, distance(p1, t2) + distance(p2, t1))
    simsiam, _ = simsiam_loss(p1, p2, t1, t2)
    assert close(loss, 4 + 4 * simsiam)
    assert close(simsiam, simsiam_loss(p2, p1, t2, t1)[0])                 # symmetric
    loss.backward()
    assert t1.grad is None and t2.grad is None and p1.grad.abs().sum() > 0


# ---------------------------------------------------------------- VICReg
def test_vicreg_matches_lightly_with_summed_variance(lightly_loss):
    z1, z2 = pair(32, 16)
    z1 = z1 * 0.5                                  # std < 1 so the variance hinge is active
    loss, terms = vicreg_loss(z1, z2)
    # lightly averages the two views' variance terms; we sum them (paper eq. 6): double its mu.
    reference = lightly_loss.VICRegLoss(lambda_param=25.0, mu_param=50.0, nu_param=1.0, eps=1e-4)
    assert close(loss, reference(z1, z2))
    assert terms["variance"] > 0


def test_vicreg_terms_vanish_where_the_paper_says():
    # Columns of a scaled orthogonal (centred) design: unit-plus std, zero covariance, equal views.
    centred = torch.randn(32, 8)
    centred = centred - centred.mean(0)
    # Orthonormal columns spanning centred data stay centred; scaled to std 2, uncorrelated.
    z = torch.linalg.qr(centred)[0] * 2 * 31 ** 0.5
    loss, terms = vicreg_loss(z, z.clone())
    assert terms["invariance"] == 0 and terms["variance"] == 0
    assert terms["covariance"] < 1e-8
    z1, z2 = pair(requires_grad=True)
    loss, _ = vicreg_loss(z1, z2)
    assert close(loss, vicreg_loss(z2, z1)[0])
    loss.backward()
    assert torch.isfinite(z1.grad).all()


# ---------------------------------------------------------------- Barlow Twins
def test_barlow_matches_lightly_times_scale(lightly_loss):
    z1, z2 = pair(32, 16)
    loss, _ = barlow_twins_loss(z1, z2, lambd=0.0051, scale=0.1)
    assert close(loss, 0.1 * lightly_loss.BarlowTwinsLoss(lambda_param=0.0051)(z1, z2))


def test_barlow_standardisation_is_affine_free_batchnorm_and_loss_is_symmetric():
    z1, z2 = pair(16, 6, requires_grad=True)
    bn = torch.nn.BatchNorm1d(6, affine=False, eps=1e-5).train()
    assert torch.allclose(batch_standardise(z1), bn(z1), atol=1e-5)
    loss, terms = barlow_twins_loss(z1, z2)
    assert close(loss, barlow_twins_loss(z2, z1)[0])
    # independent: cross-correlation from the definition, float64
    a = (z1.detach().double() - z1.detach().double().mean(0)) / z1.detach().double().std(0, unbiased=False)
    b = (z2.detach().double() - z2.detach().double().mean(0)) / z2.detach().double().std(0, unbiased=False)
    c = a.T @ b / 16
    off = c - torch.diag(torch.diag(c))
    assert close(terms["invariance"], ((1 - torch.diag(c)) ** 2).sum(), 1e-3)
    assert close(terms["redundancy"], (off ** 2).sum(), 1e-3)
    loss.backward()
    assert torch.isfinite(z1.grad).all()


# ---------------------------------------------------------------- W-MSE
def test_whiten_gives_identity_covariance_and_is_the_inverse_cholesky_factor():
    x = torch.randn(40, 6) @ torch.randn(6, 6) + 3.0
    w = whiten(x)
    assert torch.allclose(w.mean(0), torch.zeros(6), atol=1e-4)
    assert torch.allclose(w.T @ w / 39, torch.eye(6), atol=1e-3)
    centred = x.double() - x.double().mean(0)
    factor = torch.linalg.cholesky(centred.T @ centred / 39)
    assert torch.allclose(w.double(), centred @ torch.linalg.inv(factor).T, atol=1e-3)


def wmse_reference(views, size, perm):
    # Eq. 4-6 with the authors' partition: whiten each block of each view, then 2 - 2 cos, float64.
    whitened = []
    for view in views:
        out = torch.empty_like(view, dtype=torch.float64)
        for block in perm.view(-1, size):
            x = view[block].double()
            centred = x - x.mean(0)
            factor = torch.linalg.cholesky(centred.T @ centred / (size - 1))
            out[block] = centred @ torch.linalg.inv(factor).T
        whitened.append(F.normalize(out, dim=1))
    losses = [2 - 2 * (whitened[i] * whitened[j]).sum(1).mean()
              for i, j in itertools.combinations(range(len(views)), 2)]
    return torch.stack(losses).mean()


def test_wmse_matches_equation_with_the_same_partition():
    views = [torch.randn(64, 8) for _ in range(3)]
    loss, _ = wmse_loss(views, whitening_size=16, generator=torch.Generator().manual_seed(7))
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(7))
    assert close(loss, wmse_reference(views, 16, perm), 1e-4)


def test_wmse_matches_lightly(lightly_loss):
    z1, z2 = pair(64, 8)
    torch.manual_seed(3)
    loss, _ = wmse_loss([z1, z2], whitening_size=32)
    torch.manual_seed(3)
    reference = lightly_loss.WMSELoss(embedding_dim=8, w_size=32, w_iter=1, eps=0.0, num_samples=2)
    assert close(loss, reference(torch.cat([z1, z2])), 1e-4)


def test_wmse_gradients_symmetry_and_solo_learn_stop_gradient():
    z1, z2 = pair(32, 4, requires_grad=True)
    seeded = lambda: torch.Generator().manual_seed(1)
    loss, _ = wmse_loss([z1, z2], whitening_size=16, generator=seeded())
    assert close(loss, wmse_loss([z2, z1], whitening_size=16, generator=seeded())[0], 1e-4)
    loss.backward()
    assert torch.isfinite(z1.grad).all() and z2.grad.abs().sum() > 0
    z1.grad = z2.grad = None
    wmse_loss([z1, z2], whitening_size=16, generator=seeded(), stop_gradient_second=True)[0].backward()
    assert z1.grad.abs().sum() > 0 and (z2.grad is None or not z2.grad.any())
    with pytest.raises(ValueError, match="multiple of whitening_size"):
        wmse_loss([z1, z2], whitening_size=24)


# ---------------------------------------------------------------- CorInfoMax
def corinfomax_reference(z1, z2, state, alpha, eps, m_mu, m_r):
    # The CorInfoMax objective written out in float64; log det via eigenvalues.
    d = z1.shape[1]
    z1, z2 = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
    new, cov_term = [], 0
    for z, mean_prev, cov_prev in ((z1, state.mean1, state.covariance1), (z2, state.mean2, state.covariance2)):
        mean = m_mu * mean_prev + (1 - m_mu) * z.mean(0)
        cov = m_r * cov_prev + (1 - m_r) * (z - mean).T @ (z - mean) / z.shape[0]
        eigenvalues = torch.linalg.eigvalsh(cov + eps * torch.eye(d, dtype=torch.float64))
        cov_term = cov_term - torch.log(eigenvalues).sum() / d
        new += [mean, cov]
    return cov_term + alpha * ((z1 - z2) ** 2).mean(), new


def test_corinfomax_matches_equations_over_several_steps():
    state = init_corinfomax_state(6)
    reference_state = state
    for _ in range(3):
        z1, z2 = pair(16, 6, requires_grad=True)
        # Non-default settings so that each one is seen to take effect.
        loss, terms, state = corinfomax_loss(z1, z2, state, alpha=100.0, eps=0.05, mean_momentum=0.3,
                                             covariance_momentum=0.6)
        expected, new = corinfomax_reference(z1.detach(), z2.detach(), reference_state,
                                             100.0, 0.05, 0.3, 0.6)
        reference_state = CorInfoMaxState(*new)
        assert close(loss, expected)
        for ours, theirs in zip(state, reference_state):
            assert not ours.requires_grad and torch.allclose(ours, theirs, atol=1e-6)  # fp32 normalisation


def test_corinfomax_gradient_flows_through_running_mean_and_is_symmetric():
    state = init_corinfomax_state(5)
    state = corinfomax_loss(*pair(16, 5), state)[2]
    z1, z2 = pair(16, 5, requires_grad=True)
    loss, _, _ = corinfomax_loss(z1, z2, state)
    swapped = CorInfoMaxState(state.mean2, state.covariance2, state.mean1, state.covariance1)
    assert close(loss, corinfomax_loss(z2, z1, swapped)[0])
    loss.backward()
    a, b = z1.detach().double().requires_grad_(), z2.detach().double().requires_grad_()
    corinfomax_reference(a, b, state, 250.0, 1e-6, 0.01, 0.01)[0].backward()
    assert torch.allclose(z1.grad.double(), a.grad, atol=1e-5)


# ---------------------------------------------------------------- shared conventions
LOSSES = {
    "nt_xent": lambda z1, z2: nt_xent_loss(z1, z2),
    "moco": lambda z1, z2: moco_loss(z1, z2, torch.flip(z2, dims=(0,))),
    "swav": lambda z1, z2: swav_loss(z1.tanh(), z2.tanh()),
    "dino": lambda z1, z2: dino_loss([z1, z2], [z2, z1], torch.zeros(z1.shape[1])),
    "negative_cosine": lambda z1, z2: negative_cosine_loss(z1, z2),
    "byol": lambda z1, z2: byol_loss(z1, z2, z2, z1),
    "vicreg": lambda z1, z2: vicreg_loss(z1, z2),
    "barlow": lambda z1, z2: barlow_twins_loss(z1, z2),
    "wmse": lambda z1, z2: wmse_loss([z1, z2], whitening_size=32, generator=torch.Generator().manual_seed(0)),
    "corinfomax": lambda z1, z2: corinfomax_loss(z1, z2, init_corinfomax_state(z1.shape[1]))[:2],
}


@pytest.mark.parametrize("name", LOSSES)
def test_fp32_under_bf16_autocast_and_detached_terms(name):
    z1, z2 = pair(32, 24)
    loss, terms = LOSSES[name](z1, z2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_loss, _ = LOSSES[name](z1, z2)
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert close(autocast_loss, loss, 1e-5)              # bf16 matmuls would be off by ~1e-2
    assert "loss" in terms and all(not v.requires_grad and v.shape == () for v in terms.values())


@pytest.mark.parametrize("call", [
    lambda: nt_xent_loss(torch.randn(4, 3), torch.randn(5, 3)),
    lambda: moco_loss(torch.randn(4, 3), torch.randn(4, 3), torch.randn(7, 2)),
    lambda: swav_loss(torch.randn(4, 3), torch.randn(4, 5)),
    lambda: dino_loss([torch.randn(4, 3)] * 2, [torch.randn(4, 3)], torch.zeros(5)),
    lambda: negative_cosine_loss(torch.randn(4, 3), torch.randn(4, 2)),
    lambda: vicreg_loss(torch.randn(4, 3), torch.randn(5, 3)),
    lambda: barlow_twins_loss(torch.randn(4, 3), torch.randn(4, 2)),
    lambda: corinfomax_loss(torch.randn(4, 3), torch.randn(4, 3), init_corinfomax_state(2)),
])
def test_shape_errors_name_the_shapes(call):
    with pytest.raises(ValueError, match=r"\(\d+, \d+\)"):
        call()


# ---------------------------------------------------------------- the config's records
# keyword arguments a method computes itself: the queue's scores (SwAV), the random source (W-MSE),
# the scheduled teacher temperature (DINO: from its record's teacher_temperature and warm-up)
SET_BY_THE_METHOD = {"swav": {"queue_scores"}, "wmse": {"generator"}, "dino": {"teacher_temperature"}}


@pytest.mark.parametrize("name", sorted(METHOD_ARGS))
def test_each_loss_part_of_a_record_is_its_loss_signature_with_the_same_defaults(name):
    """A method passes its record's loss part whole (`loss_fn(..., **self.loss_kwargs)`): that part
    (`loss_args_type`; the whole record unless the method needs more) has exactly its loss
    function's keyword arguments as fields, bar those the method computes, so a field added to one
    and not the other fails here. The defaults agree too: a loss function called without an
    argument (as the Figure 2 and distributed code do) computes what a config silent on it computes."""
    cls = METHODS[name]
    part = cls.loss_args_type or cls.args_type
    assert issubclass(cls.args_type, part)
    loss_defaults = {f.name: f.default for f in dataclasses.fields(part)}
    record_defaults = {f.name: f.default for f in dataclasses.fields(cls.args_type)}
    computed = SET_BY_THE_METHOD.get(name, set())
    for fn in [cls.loss_fn] + ([cls.multiview_loss_fn] if hasattr(cls, "multiview_loss_fn") else []):
        keywords = {p.name: p.default for p in inspect.signature(fn).parameters.values()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert set(loss_defaults) == set(keywords) - computed, (name, fn.__name__)
        assert loss_defaults == {key: keywords[key] for key in loss_defaults}, (name, fn.__name__)
        # the method's own fields are none of its loss's arguments, but for one it schedules (DINO)
        assert (set(record_defaults) - set(loss_defaults)) & set(keywords) <= computed, (name, fn.__name__)
        assert all(keywords[key] == record_defaults[key] for key in computed & set(record_defaults))
