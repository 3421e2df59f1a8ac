"""Landscape probes against closed forms on a quadratic loss 0.5 x^T A x, and on a real model."""
import copy

import numpy as np
import pytest
import torch

from binlab.nn.quantize import QuantSpec
from binlab.probes.landscape import (
    ModelLoss,
    curvature,
    hessian_trace,
    interpolate,
    lanczos_eigenvalues,
    random_direction,
    slice_model,
    surface,
    top_eigenvalues,
)
from binlab.training.qat import ptq


@pytest.fixture()
def quadratic():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    lam = np.array([9.0, -6.0, 4.0, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.3, 0.2, 0.1])
    A = torch.tensor(Q @ np.diag(lam) @ Q.T, dtype=torch.float64)
    x = torch.tensor(rng.normal(size=12), dtype=torch.float64, requires_grad=True)
    return A, x, (lambda: 0.5 * x @ A @ x)


def test_power_iteration_matches_eigvalsh(quadratic):
    A, x, loss = quadratic
    ev = np.linalg.eigvalsh(A.numpy())
    by_mag = ev[np.argsort(-np.abs(ev))]
    got = top_eigenvalues(loss, [x], k=3, iters=500, tol=1e-12)
    np.testing.assert_allclose(got, by_mag[:3], rtol=1e-6)


def test_lanczos_matches_eigvalsh_in_few_products(quadratic):
    A, x, loss = quadratic
    ev = np.linalg.eigvalsh(A.numpy())
    by_mag = ev[np.argsort(-np.abs(ev))]
    calls = []
    got = lanczos_eigenvalues(loss, [x], k=2, iters=12, tol=1e-12, callback=lambda *a: calls.append(a))
    np.testing.assert_allclose(got, by_mag[:2], rtol=1e-8)  # a 12-dim Krylov space is all of R^12: exact
    calls.clear()
    got = lanczos_eigenvalues(loss, [x], k=1, iters=12, tol=1e-3)
    assert abs(got[0] - 9.0) < 9e-2
    with torch.no_grad():
        x0 = x.clone()
    lanczos_eigenvalues(loss, [x], k=1, iters=3)
    assert torch.equal(x, x0)
    with pytest.raises(ValueError, match="iters >= 1"):
        lanczos_eigenvalues(loss, [x], k=1, iters=0)


def test_hutchinson_trace_within_three_standard_errors(quadratic):
    A, x, loss = quadratic
    tr, se = hessian_trace(loss, [x], samples=200, seed=1)
    assert se > 0 and abs(tr - float(torch.trace(A))) < 3 * se


def test_2d_slice_of_quadratic_matches_closed_form(quadratic):
    A, x, loss = quadratic
    x0 = x.detach().clone()
    g = torch.Generator().manual_seed(0)
    d1, d2 = torch.randn(12, generator=g, dtype=torch.float64), torch.randn(12, generator=g, dtype=torch.float64)
    a, b = np.linspace(-1, 1, 5), np.linspace(-2, 2, 3)
    out = surface(loss, [x], [d1], [d2], a, b)
    for i, bb in enumerate(b):
        for j, aa in enumerate(a):
            p = x0 + aa * d1 + bb * d2
            assert out["loss"][i, j] == pytest.approx(float(0.5 * p @ A @ p), rel=1e-12)
    assert torch.equal(x.detach(), x0)  # restored bit for bit


def test_filter_normalisation_gives_rows_the_weight_norms():
    w = torch.nn.Parameter(torch.randn(5, 7) * torch.arange(1, 6)[:, None])
    b = torch.nn.Parameter(torch.randn(5))
    d = random_direction([("w", w), ("b", b)], seed=3)
    torch.testing.assert_close(d[0].norm(dim=1), w.detach().norm(dim=1))
    torch.testing.assert_close(d[1].norm(), b.detach().norm())
    assert torch.equal(random_direction([("w", w)], seed=3)[0], d[0])  # seeded


def test_interpolation_endpoints_are_the_two_models(tiny_splits):
    from binlab.presets import get_baseline, get_preset

    model, _ = get_baseline(get_preset("tiny"), tiny_splits)
    spec = QuantSpec.simple("encoder", "xnor")
    before = copy.deepcopy(model.state_dict())
    out = interpolate(model, spec, tiny_splits.val, alphas=[0.0, 0.5, 1.0], rows=200)
    fp_loss, fp_acc = ModelLoss(model, tiny_splits.val, rows=200, ste=False).evaluate()
    q_loss, q_acc = ModelLoss(ptq(model, spec), tiny_splits.val, rows=200, ste=False).evaluate()
    assert out["loss"][0, 0] == pytest.approx(fp_loss, rel=1e-6) and out["accuracy"][0, 0] == fp_acc
    assert out["loss"][0, 2] == pytest.approx(q_loss, rel=1e-4) and out["accuracy"][0, 2] == q_acc
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_model_probes_are_deterministic_and_leave_weights(tiny_splits):
    from binlab.presets import get_baseline, get_preset

    model, _ = get_baseline(get_preset("tiny"), tiny_splits)
    before = copy.deepcopy(model.state_dict())
    spec = QuantSpec.simple("encoder", "xnor")
    s1 = slice_model(model, tiny_splits.val, spec, steps=3, rows=64, seed=5)
    s2 = slice_model(model, tiny_splits.val, spec, steps=3, rows=64, seed=5)
    np.testing.assert_array_equal(s1["loss"], s2["loss"])
    assert s1["loss"].shape == (3, 3)
    c1 = curvature(model, tiny_splits.val, spec, rows=64, iters=5, trace_samples=3, seed=2)
    c2 = curvature(model, tiny_splits.val, spec, rows=64, iters=5, trace_samples=3, seed=2)
    assert c1 == c2 and c1["through_ste"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    # the probe also restores the parameters it perturbs in place
    ml = ModelLoss(model, tiny_splits.val, rows=64, ste=False)
    named = ml.params()
    surface(ml, [p for _, p in named], random_direction(named), None, [-1.0, 1.0])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
