"""FroSSL loss: agreement with formulas written out here, with lightly's FroSSLLoss, and properties."""
import math

import pytest
import torch

from repro.losses.frossl import (barlow_linear_regime_loss, frobenius_variance, frossl_loss,
                                 frossl_multiview_loss, linear_regime_loss)

# (N, D): N > D uses the D x D Gram matrix, N < D the N x N one
SHAPES = [(16, 8), (6, 10), (7, 7)]


def reference_frossl(z1, z2, invariance_weight=1.0, use_logs=True):
    """docs/sources.md section 2 written independently: the variance term from singular values (no Gram
    matrix at all: ||K / tr K||_F^2 = sum s^4 / (sum s^2)^2), invariance as eq. 5 on unit columns."""
    n, d = z1.shape

    def unit(z):
        centred = z - z.mean(dim=0, keepdim=True)
        return centred / centred.norm(dim=0, keepdim=True)

    u1, u2 = unit(z1), unit(z2)
    invariance = sum(((u1[i] - u2[i]) ** 2).sum() for i in range(n)) / n   # (1/N) ||U1 - U2||_F^2

    def variance(u):
        s = torch.linalg.svdvals(u)
        purity = (s ** 4).sum() / (s ** 2).sum() ** 2
        return torch.log(purity) if use_logs else purity

    return invariance_weight * invariance + variance(u1) + variance(u2)


def random_pair(n, d, dtype=torch.float64):
    z1 = torch.randn(n, d, dtype=dtype) * 3 + 1.5     # not centred, not unit scale
    z2 = z1 + 0.5 * torch.randn(n, d, dtype=dtype)    # correlated second view
    return z1.requires_grad_(), z2.requires_grad_()


@pytest.mark.parametrize("n, d", SHAPES)
@pytest.mark.parametrize("use_logs", [True, False])
def test_value_and_gradient_equal_the_formula(n, d, use_logs):
    z1, z2 = random_pair(n, d)
    loss, terms = frossl_loss(z1, z2, invariance_weight=1.3, use_logs=use_logs)
    expected = reference_frossl(z1, z2, invariance_weight=1.3, use_logs=use_logs)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-9)
    grads = torch.autograd.grad(loss, (z1, z2))
    expected_grads = torch.autograd.grad(expected, (z1, z2))
    for got, want in zip(grads, expected_grads):
        assert want.abs().max() > 1e-6      # the comparison is not vacuous
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(terms["loss"], loss.detach())
    torch.testing.assert_close(terms["invariance"] * 1.3 + terms["variance"], loss.detach())
    torch.testing.assert_close(terms["variance_1"] + terms["variance_2"], terms["variance"])
    assert not any(t.requires_grad for t in terms.values())


def test_no_logs_is_the_sum_without_logs():
    z1, z2 = random_pair(12, 5)
    with_logs = frossl_loss(z1, z2)[1]
    no_logs = frossl_loss(z1, z2, use_logs=False)[1]
    torch.testing.assert_close(no_logs["invariance"], with_logs["invariance"])
    torch.testing.assert_close(no_logs["variance_1"], torch.exp(with_logs["variance_1"]))
    torch.testing.assert_close(no_logs["loss"], no_logs["invariance"] + torch.exp(with_logs["variance_1"])
                               + torch.exp(with_logs["variance_2"]))


@pytest.mark.parametrize("n, d", [(16, 8), (6, 10)])
def test_both_gram_matrices_give_the_same_variance(n, d):
    z = torch.randn(n, d, dtype=torch.float64)
    by_features, by_samples = z.T @ z, z @ z.T             # D x D and N x N, computed here
    for gram in (by_features, by_samples):
        expected = torch.log((gram / torch.trace(gram)).pow(2).sum())
        torch.testing.assert_close(frobenius_variance(z), expected)


def test_loss_is_bounded_as_the_theory_says():
    # purity ||K/trK||_F^2 lies in [1/rank, 1]: log in [-log min(N, D), 0] per view
    z1, z2 = random_pair(32, 8)
    terms = frossl_loss(z1, z2)[1]
    for key in ("variance_1", "variance_2"):
        assert -math.log(8) - 1e-9 <= terms[key].item() <= 0.0


def test_identical_views_have_zero_invariance_and_orthogonal_columns_minimal_variance():
    q, _ = torch.linalg.qr(torch.randn(16, 4, dtype=torch.float64))
    q = q - q.mean(dim=0)                   # centred orthogonal-ish columns
    q, _ = torch.linalg.qr(q)               # re-orthonormalise (stays centred: span unchanged)
    terms = frossl_loss(q, q.clone())[1]
    assert terms["invariance"].item() == pytest.approx(0.0, abs=1e-12)
    assert terms["variance_1"].item() == pytest.approx(-math.log(4), abs=1e-9)


@pytest.mark.parametrize("weight", [1.0, 1.4])
def test_equals_lightly_on_centred_inputs(weight):
    from lightly.loss import FroSSLLoss

    for n, d in [(16, 8), (6, 10)]:
        z1, z2 = (z.detach() for z in random_pair(n, d))
        z1, z2 = z1 - z1.mean(dim=0), z2 - z2.mean(dim=0)
        ours = frossl_loss(z1, z2, invariance_weight=weight)[0]
        theirs = FroSSLLoss(invariance_weight=weight)([z1, z2])
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


def test_differs_from_lightly_on_uncentred_inputs():
    # the two-view paper form centres; lightly's multi-view form does not: they must differ here
    from lightly.loss import FroSSLLoss

    z1, z2 = (z.detach() for z in random_pair(16, 8))
    assert abs(frossl_loss(z1, z2)[0].item() - FroSSLLoss()([z1, z2]).item()) > 1e-3


@pytest.mark.parametrize("num_views", [2, 3, 4])
def test_multiview_equals_lightly(num_views):
    from lightly.loss import FroSSLLoss

    views = [torch.randn(10, 6, dtype=torch.float64) + 0.7 for _ in range(num_views)]
    ours = frossl_multiview_loss(views, invariance_weight=1.2)[0]
    theirs = FroSSLLoss(invariance_weight=1.2)(views)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


def test_multiview_with_two_centred_views_equals_the_two_view_loss():
    for n, d in [(16, 8), (6, 10)]:
        z1, z2 = (z.detach() for z in random_pair(n, d))
        z1, z2 = z1 - z1.mean(dim=0), z2 - z2.mean(dim=0)
        two_view = frossl_loss(z1, z2)[1]
        multi_view = frossl_multiview_loss([z1, z2])[1]
        for key in ("loss", "invariance", "variance"):
            torch.testing.assert_close(multi_view[key], two_view[key], rtol=1e-9, atol=1e-9)


def test_symmetric_in_the_views():
    z1, z2 = random_pair(12, 6)
    torch.testing.assert_close(frossl_loss(z1, z2)[0], frossl_loss(z2, z1)[0], rtol=1e-12, atol=1e-12)


def test_invariant_to_shift_and_scale_of_each_dimension():
    # centring + column normalisation: per-dimension affine maps with positive scale change nothing
    z1, z2 = (z.detach() for z in random_pair(12, 6))
    scale, shift = torch.rand(6, dtype=torch.float64) * 5 + 0.1, torch.randn(6, dtype=torch.float64) * 10
    torch.testing.assert_close(frossl_loss(z1 * scale + shift, z2 * scale - shift)[0], frossl_loss(z1, z2)[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_collapsed_dimension_gives_finite_value_and_gradients(dtype):
    z1, z2 = (z.detach().to(dtype) for z in random_pair(16, 8))
    z1[:, 3] = 2.5      # one constant (collapsed) dimension in view 1
    z2[:, 3] = 2.5      # and in view 2
    z2[:, 5] = -1.0     # another only in view 2
    z1.requires_grad_(), z2.requires_grad_()
    for fn in (lambda: frossl_loss(z1, z2)[0], lambda: frossl_loss(z1, z2, use_logs=False)[0],
               lambda: frossl_multiview_loss([z1, z2])[0]):
        loss = fn()
        grads = torch.autograd.grad(loss, (z1, z2))
        assert torch.isfinite(loss)
        assert all(torch.isfinite(g).all() for g in grads)


def test_autocast_bf16_on_cpu_returns_float32():
    layer = torch.nn.Linear(5, 8)
    x1, x2 = torch.randn(16, 5), torch.randn(16, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z1, z2 = layer(x1), layer(x2)
        assert z1.dtype == torch.bfloat16       # the test exercises the low-precision path
        loss, terms = frossl_loss(z1, z2)
        multi = frossl_multiview_loss([z1, z2, z1])[0]
    assert loss.dtype == torch.float32 and multi.dtype == torch.float32
    assert terms["invariance"].dtype == torch.float32
    # same value as the float32 computation on the same (bf16-rounded) inputs
    torch.testing.assert_close(loss, frossl_loss(z1.float(), z2.float())[0])
    loss.backward()
    assert torch.isfinite(layer.weight.grad).all()


@pytest.mark.parametrize("z1_shape, z2_shape", [((8,), (8,)), ((8, 4), (8, 5)), ((1, 4), (1, 4)),
                                                 ((8, 4), (7, 4)), ((2, 3, 4), (2, 3, 4))])
def test_bad_shapes_are_named(z1_shape, z2_shape):
    z1, z2 = torch.randn(z1_shape), torch.randn(z2_shape)
    for fn in (frossl_loss, linear_regime_loss, barlow_linear_regime_loss):
        with pytest.raises(ValueError) as err:
            fn(z1, z2)
        assert str(tuple(z1_shape)) in str(err.value) and str(tuple(z2_shape)) in str(err.value)
    if len(z1_shape) == 2 and z1_shape[0] >= 2:   # view 0 valid: the error must name view 2
        with pytest.raises(ValueError) as err:
            frossl_multiview_loss([z1, z1, z2])
        assert f"view 2 has shape {tuple(z2_shape)}" in str(err.value)


def test_multiview_needs_two_views():
    with pytest.raises(ValueError, match="at least 2 views, got 1"):
        frossl_multiview_loss([torch.randn(8, 4)])


def test_no_host_sync():
    # fake tensors carry no data: any .item(), bool(tensor) or value-dependent branch raises
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        z1, z2 = torch.randn(8, 4, requires_grad=True), torch.randn(8, 4, requires_grad=True)
        for loss, _ in (frossl_loss(z1, z2), frossl_loss(z1, z2, use_logs=False),
                        frossl_multiview_loss([z1, z2, z1]), linear_regime_loss(z1, z2),
                        barlow_linear_regime_loss(z1, z2)):
            loss.backward()
        with pytest.raises(Exception):       # the check has teeth
            z1.sum().item()


@pytest.mark.parametrize("use_logs", [True, False])
def test_fullgraph_capture_has_no_graph_break(use_logs):
    # Dynamo with fullgraph=True raises on any graph break (a .item(), a data-dependent branch);
    # the aot_eager backend traces forward and backward without inductor's slow code generation
    torch._dynamo.reset()
    compiled = torch.compile(frossl_loss, fullgraph=True, dynamic=False, backend="aot_eager")
    z1, z2 = torch.randn(8, 4, requires_grad=True), torch.randn(8, 4, requires_grad=True)
    loss, terms = compiled(z1, z2, invariance_weight=1.0, use_logs=use_logs)
    eager, eager_terms = frossl_loss(z1, z2, use_logs=use_logs)
    torch.testing.assert_close(loss, eager)
    torch.testing.assert_close(terms["variance"], eager_terms["variance"])
    torch.testing.assert_close(torch.autograd.grad(loss, z1)[0], torch.autograd.grad(eager, z1)[0])


@pytest.mark.slow
def test_torch_compile_inductor_matches_eager():
    # the trainer's path (train.compile=true); ~15 s of code generation on two CPU cores
    torch._dynamo.reset()
    compiled = torch.compile(frossl_loss, fullgraph=True, dynamic=False)
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    loss, terms = compiled(z1, z2, invariance_weight=1.0, use_logs=True)
    eager, eager_terms = frossl_loss(z1, z2)
    torch.testing.assert_close(loss, eager)
    torch.testing.assert_close(terms["variance"], eager_terms["variance"])


# ---- the linear-regime objectives of Figure 2 ------------------------------------------------

def test_linear_regime_loss_equals_eq8():
    n, d = 20, 3
    z1, z2 = torch.randn(n, d, dtype=torch.float64), torch.randn(n, d, dtype=torch.float64)
    # second-moment matrices as averages of per-sample outer products
    m1 = sum(torch.outer(z1[i], z1[i]) for i in range(n)) / n
    m2 = sum(torch.outer(z2[i], z2[i]) for i in range(n)) / n
    off_identity = sum(((m - torch.eye(d, dtype=torch.float64)) ** 2).sum() for m in (m1, m2))
    invariance = sum(((z1[i] - z2[i]) ** 2).sum() for i in range(n)) / n
    loss, terms = linear_regime_loss(z1, z2)
    torch.testing.assert_close(loss, off_identity + invariance)
    torch.testing.assert_close(terms["invariance"], invariance)


def test_linear_regime_minimum_is_whitened_identical_views():
    n, d = 32, 4
    q, _ = torch.linalg.qr(torch.randn(n, d, dtype=torch.float64))
    z = math.sqrt(n) * q                     # Z^T Z / N = I
    assert linear_regime_loss(z, z.clone())[0].item() == pytest.approx(0.0, abs=1e-10)
    assert barlow_linear_regime_loss(z, z.clone())[0].item() == pytest.approx(0.0, abs=1e-10)
    # a scaled copy is not a minimum of either
    assert linear_regime_loss(2 * z, 2 * z)[0].item() > 1.0
    assert barlow_linear_regime_loss(2 * z, 2 * z)[0].item() > 1.0


def test_barlow_linear_regime_loss_equals_its_formula():
    n, d = 20, 3
    z1, z2 = torch.randn(n, d, dtype=torch.float64), torch.randn(n, d, dtype=torch.float64)
    cross = sum(torch.outer(z1[i], z2[i]) for i in range(n)) / n
    expected = sum((cross[i, j] - (1.0 if i == j else 0.0)) ** 2 for i in range(d) for j in range(d))
    torch.testing.assert_close(barlow_linear_regime_loss(z1, z2)[0], expected)


def test_linear_regime_losses_run_in_float32_under_autocast():
    z1, z2 = torch.randn(16, 4).bfloat16(), torch.randn(16, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear_regime_loss(z1, z2)[0].dtype == torch.float32
        assert barlow_linear_regime_loss(z1, z2)[0].dtype == torch.float32
