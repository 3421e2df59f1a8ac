"""Every registered binarizer and estimator against an independent reference written from its paper's
equations (numpy, float64), plus the gradients QAT uses."""
import math

import numpy as np
import pytest
import torch

from binlab.methods import BINARIZERS, Bucket, ReCU, Stochastic, Uniform, glorot_h, optimal_threshold
from binlab.methods.ste import STES, apply_ste
from binlab.nn.quantize import MethodConfig, QuantLinear


def W(seed=0, shape=(6, 40)):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.05, shape).astype(np.float32)
    w[0, :5] = 0.0  # zeros: sign(0) = +1
    return w


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def np_bucket(w, tau, per_channel):
    rows = w if per_channel else w.reshape(1, -1)
    out = np.empty_like(rows, dtype=np.float64)
    for i, r in enumerate(rows.astype(np.float64)):
        t = r.mean() + tau * r.std()
        up = r >= t
        hi = r[up].mean() if up.any() else t
        lo = r[~up].mean() if (~up).any() else t
        out[i] = np.where(up, hi, lo)
    return out.reshape(w.shape)


def np_uniform(w, bits, c):
    half = 2 ** (bits - 1)
    s = c * np.abs(w).max(axis=1, keepdims=True) / half
    return s * (np.clip(np.floor(w / s), -half, half - 1) + 0.5)


def np_xnor(w, per_channel=True):
    """XNOR-Net eqs. 6-7: B = sign(W), alpha = ||W||_1 / n."""
    a = np.abs(w).mean(1, keepdims=True) if per_channel else np.abs(w).mean()
    return np_sign(w) * a


def np_twn(w):
    """TWN §2, per layer: Delta = 0.7 E|W|, alpha = mean |W_i| over |W_i| > Delta."""
    d = 0.7 * np.abs(w).mean()
    keep = np.abs(w) > d
    return np.abs(w)[keep].mean() * np_sign(w) * keep


def np_recu(w, tau):
    """ReCU: per row standardise to std 2 sqrt 2, clamp to the fitted Laplace's tau-quantile, XNOR scale back."""
    w = w.astype(np.float64)
    mu = w.mean(1, keepdims=True)
    sd = w.std(1, ddof=1, keepdims=True) / (2 * np.sqrt(2))
    u = (w - mu) / sd
    q = -np.abs(u).mean() * np.log(2 - 2 * tau)
    uc = np.clip(u, -q, q)
    return np_sign(uc) * np.abs(uc).mean(1, keepdims=True) * sd


def np_onebit(w):
    U, S, Vt = np.linalg.svd(np.abs(w).astype(np.float64))
    approx = S[0] * np.outer(U[:, 0], Vt[0])
    return np_sign(w) * np.abs(approx)


REFS = {
    "sign": np_sign,
    "xnor": np_xnor,
    "bireal": np_xnor,  # forward: eq. 7 is XNOR's scale per channel
    "fda": np_xnor,  # forward: exact sign with the per-row scale
    "bitnet": lambda w: np_sign(w - w.mean()) * np.abs(w).mean(),
    "bitnet158": lambda w: np.abs(w).mean() * np.clip(np.round(w / (np.abs(w).mean() + 1e-8)), -1, 1),
    "twn": np_twn,
    "binarybert": np_twn,  # right after ternary weight splitting, BWN(W1) + BWN(W2) is the TWN value (eqs. 4-7)
    "bibert": lambda w: np.abs(w).mean(1, keepdims=True) * np_sign(w - w.mean(1, keepdims=True)),
    "recu": lambda w: np_recu(w, 0.99),
    "onebit": np_onebit,
    "bucket": lambda w: np_bucket(w, 0.0, True),
}


def calibrated(q, cols: int, seed: int = 0):
    """Give a method that needs data a Hessian 2 X X^T / N from random correlated inputs."""
    if q.needs_calibration:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(cols, 400)) * rng.uniform(0.3, 2, size=(cols, 1))
        q.calibrate(torch.from_numpy(2 * x @ x.T / 400))
    return q


def make(name, w, **options):
    return calibrated(BINARIZERS[name](**options), w.shape[1])


@pytest.mark.parametrize("name", sorted(BINARIZERS))
def test_every_binarizer_basic_contract(name):
    w = W()
    q = make(name, w)(torch.from_numpy(w)) if name != "bucket" else Bucket(tau=0.0)(torch.from_numpy(w))
    assert q.shape == w.shape and torch.isfinite(q).all()
    levels = [len(np.unique(r)) for r in q.numpy()]
    expected_max = {"twn": 3, "binarybert": 3, "bitnet158": 3, "uniform": 256, "pbllm": 40, "billm": 8, "oac": 8, "onebit": w.shape[1], "rtn": 16, "gptq": 16,
                    "arb": w.shape[1], "stbllm": 11, "dbllm": 4, "binarymos": w.shape[1], "fbi": w.shape[1]}.get(name, 2)
    assert max(levels) <= expected_max
    st = BINARIZERS[name]().storage(w.shape)
    sparse = {"stbllm": 0.5}.get(name, 1.0)  # N:M methods store sign bits of the kept weights only
    assert st["codes"] >= sparse * w.size  # at least one bit per (kept) weight is stored
    if name in REFS:
        np.testing.assert_allclose(q.numpy(), REFS[name](w), rtol=1e-5, atol=1e-7)


def test_every_method_has_a_reference_test():
    """A new method must come with a reference here (or a dedicated test below)."""
    dedicated = {"stochastic", "uniform", "pbllm", "billm", "rtn", "gptq", "arb", "stbllm", "oac", "dbllm", "binarymos", "fbi",  # tests/test_lm_track.py
                 "lab"}  # tests/test_lstm.py
    assert set(BINARIZERS) <= set(REFS) | dedicated


def test_options_are_only_those_that_act():
    """Each option changes the output for some input (no dead checkboxes)."""
    w = torch.from_numpy(W(11, (8, 64)) + np.linspace(0, 0.03, 64, dtype=np.float32))
    alt = {"per_channel": lambda v: not v, "tau": lambda v: 0.5 if v is None else (0.9 if v > 0.9 else v + 0.05),
           "tau_start": lambda v: v, "bits": lambda v: 2, "salient": lambda v: 0.3, "seed": lambda v: v + 1, "H": lambda v: 0.01,
           "terms": lambda v: v, "noise": lambda v: v, "shortcut": lambda v: v, "group": lambda v: 16, "act_order": lambda v: not v,
           "percdamp": lambda v: 0.5, "blocksize": lambda v: 16, "metric": lambda v: "magnitude", "gptq": lambda v: not v,
           "high_bits": lambda v: 3, "variant": lambda v: "rc", "iters": lambda v: 0, "n": lambda v: 2, "m": lambda v: 4,
           "blocks": lambda v: 2}
    training_only = {"tau_start", "terms", "noise", "shortcut", "experts"}  # act in QAT (tested below), not on Q(W)
    same_result = {("gptq", "blocksize")}  # GPTQ's lazy batches change the speed, not the result (tested in test_lm_track)
    layer_only = {("onebit", "out_norm")}  # acts on the layer's output, not on Q(W) (test_onebit_layer_equals_the_reference_code)
    for name, cls in BINARIZERS.items():
        for opt, default in cls.defaults().items():
            if opt in training_only or (name, opt) in same_result | layer_only:
                continue
            a, b = calibrated(cls(), 64)(w), calibrated(cls(**{opt: alt[opt](default)}), 64)(w)
            assert not torch.equal(a, b), f"{name}.{opt} does nothing"


@pytest.mark.parametrize("name", ["sign", "xnor", "bireal", "fda", "onebit", "twn", "bitnet158"])
def test_zero_case(name):
    w = torch.from_numpy(W())
    q = BINARIZERS[name]()(w)[0, :5]  # row 0 starts with zeros
    if name in ("twn", "bitnet158"):
        assert torch.all(q == 0)  # ternary: zero is a level
    else:
        assert torch.all(q > 0)  # sign(0) = +1


def test_xnor_per_tensor():
    w = W()
    q = BINARIZERS["xnor"](per_channel=False)(torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(q, np_xnor(w, per_channel=False), rtol=1e-6)


@pytest.mark.parametrize("tau", [-1.0, 0.0, 0.7, 2.5])
@pytest.mark.parametrize("per_channel", [True, False])
def test_bucket_against_numpy(tau, per_channel):
    w = W(1)
    q = Bucket(tau=tau, per_channel=per_channel)(torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(q, np_bucket(w, tau, per_channel), rtol=1e-5, atol=1e-7)


def test_optimal_threshold_is_least_squares():
    rng = np.random.default_rng(3)
    for dist in (rng.normal(0, 1, 57), rng.exponential(1, 80), np.r_[rng.normal(-2, 0.3, 30), rng.normal(1, 0.5, 15)]):
        t = float(optimal_threshold(torch.tensor(dist[None], dtype=torch.float64))[0, 0])

        def sse(th):
            up = dist >= th
            return ((dist[up] - dist[up].mean()) ** 2).sum() + ((dist[~up] - dist[~up].mean()) ** 2).sum() if up.any() and (~up).any() else np.inf
        v = np.sort(dist)
        brute = min(sse((v[k - 1] + v[k]) / 2) for k in range(1, len(v)))
        assert sse(t) == pytest.approx(brute, rel=1e-12)
        assert sse(t) <= ((dist - np_sign(dist) * np.abs(dist).mean()) ** 2).sum() + 1e-9


def test_bucket_default_is_optimal_per_channel():
    w = torch.from_numpy(W(2))
    q = Bucket()(w)
    err_opt = ((q - w) ** 2).sum(1)
    for tau in np.linspace(-2, 2, 41):
        assert torch.all(err_opt <= ((Bucket(tau=float(tau))(w) - w) ** 2).sum(1) + 1e-9)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_uniform_levels_and_clip_search(bits):
    w = W(4)
    q = Uniform(bits=bits)(torch.from_numpy(w)).numpy()
    assert max(len(np.unique(r)) for r in q) <= 2**bits
    err = ((q - w) ** 2).sum(1)
    assert np.all(err <= ((np_uniform(w, bits, 1.0) - w) ** 2).sum(1) + 1e-9)
    cands = [np_uniform(w, bits, c) for c in np.arange(1.0, 0.29, -0.05)]
    for i in range(w.shape[0]):
        assert min(np.abs(c[i] - q[i]).max() for c in cands) < 1e-6


# --------------------------------------------------------------------------------------------
# BinaryConnect's stochastic binarization


def test_stochastic_fresh_noise_and_reproducible_stream():
    w = torch.from_numpy(W(12, (32, 64)))
    s = Stochastic(seed=3)
    a, b = s(w), s(w)
    assert not torch.equal(a, b)  # fresh noise on every call
    assert torch.equal(Stochastic(seed=3)(w), a)  # a fresh instance replays the stream from its seed
    assert not torch.equal(Stochastic(seed=4)(w), a)
    H = glorot_h((32, 64))
    assert set(torch.unique(a).tolist()) <= {H, -H}


def test_stochastic_expectation_matches_closed_form():
    """E[w_b] = H (2 p - 1) with p = clip((w/H + 1)/2, 0, 1), i.e. clip(w, -H, H) (BinaryConnect eqs. 2-3)."""
    H = 0.05
    w = torch.linspace(-0.08, 0.08, 64).reshape(1, 64)
    s = Stochastic(H=H, seed=0)
    n = 10_000
    draws = torch.stack([s(w) for _ in range(n)]).double()  # (n, 1, 64)
    mean = draws.mean(0)[0].numpy()
    p = np.clip((w[0].double().numpy() / H + 1) / 2, 0, 1)
    expect = H * (2 * p - 1)
    se = H * np.sqrt(np.maximum(1 - (2 * p - 1) ** 2, 1e-12) / n)
    assert np.all(np.abs(mean - expect) <= 4.5 * se + 1e-12)  # per weight: a z-test at 4.5 sigma
    assert abs(mean.mean() - expect.mean()) <= 0.01 * H  # the average over weights within 1 % of H


def test_stochastic_streams_are_per_component():
    w = torch.from_numpy(W(15, (16, 16)))
    a, b, c = Stochastic(seed=0), Stochastic(seed=0), Stochastic(seed=0)
    a.bind("layers.0.attn.q"), b.bind("layers.0.attn.k"), c.bind("layers.0.attn.q")
    qa = a(w)
    assert not torch.equal(qa, b(w))  # two layers never share a noise stream
    assert torch.equal(qa, c(w))  # the same component and seed replay the same stream


def test_stochastic_clips_latent_weights_after_a_step():
    lin = torch.nn.Linear(16, 8, bias=False)
    lin.weight.data.fill_(1.0)
    q = QuantLinear.from_linear(lin, MethodConfig("stochastic"))
    q.quantizer.post_step(q.weight)
    assert float(lin.weight.detach().max()) == pytest.approx(glorot_h((8, 16)))


# --------------------------------------------------------------------------------------------
# OneBit's PTQ value (the calibrated LLM-era methods are tested in test_lm_track.py)


def test_onebit_value_vectors_are_the_rank1_of_abs():
    w = W(9, (12, 30))
    q = BINARIZERS["onebit"]()(torch.from_numpy(w)).numpy()
    mag = np.abs(q)
    assert np.linalg.matrix_rank(mag, tol=1e-6) == 1
    np.testing.assert_array_equal(np_sign(q), np_sign(w))


@pytest.mark.parametrize("name,kw,match", [("bucket", {"tau": 5.0}, "tau"), ("uniform", {"bits": 9}, "bits"), ("recu", {"tau": 0.2}, "tau"),
                                           ("recu", {"tau": 1.0}, "tau"), ("pbllm", {"salient": 1.5}, "salient"),
                                           ("stochastic", {"H": -1.0}, "H"), ("fda", {"terms": 0}, "terms")])
def test_bad_options(name, kw, match):
    with pytest.raises(ValueError, match=match):
        BINARIZERS[name](**kw)


# --------------------------------------------------------------------------------------------
# straight-through estimators: closed forms, and the derivative of each smooth proxy

def np_fourier_grad(x, n=10):
    """FDA's gradient with ``n`` terms, from the port of BiBench's FDA layer (tests/reference/fda_ref.py; its n is the last index)."""
    from tests.reference.fda_ref import partial_sum_grad

    return partial_sum_grad(x, n - 1)


def np_fourier(x, n=10):
    from tests.reference.fda_ref import partial_sum

    return partial_sum(x, n - 1)


NP_STE = {
    "identity": lambda x: np.ones_like(x),
    "clipped": lambda x: (np.abs(x) <= 1).astype(x.dtype),
    "approxsign": lambda x: np.where(np.abs(x) <= 1, 2 - 2 * np.abs(x), 0.0),
    "fda": lambda x: np.where(np.abs(x) <= 1, np_fourier_grad(x), 0.0),
    "tanh": lambda x: 2.0 * (1 - np.tanh(2.0 * x) ** 2),
    "onebit": lambda x: 1.001 - np.tanh(x) ** 2,
}


@pytest.mark.parametrize("name", sorted(STES))
def test_ste_gradient_matches_numpy(name):
    x = torch.linspace(-2.5, 2.5, 101, dtype=torch.float64, requires_grad=True)
    q = torch.where(x >= 0, 1.0, -1.0).to(torch.float64)
    g_out = torch.linspace(0.5, 1.5, 101, dtype=torch.float64)
    y = apply_ste(x, q, name)
    assert torch.equal(y.detach(), q)
    y.backward(g_out)
    np.testing.assert_allclose(x.grad.numpy(), g_out.numpy() * NP_STE[name](x.detach().numpy()), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(STES))
def test_ste_gradient_is_the_derivative_of_its_proxy(name):
    """Central differences of Approx(x) equal g(x) wherever the proxy is smooth (away from kinks)."""
    ste = STES[name]
    x = torch.linspace(-2.4, 2.4, 97, dtype=torch.float64)
    kinks = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    x = x[(x[:, None] - kinks[None]).abs().min(1).values > 0.02]
    h = 1e-6
    fd = (ste.forward_proxy(x + h) - ste.forward_proxy(x - h)) / (2 * h)
    np.testing.assert_allclose(fd.numpy(), ste.grad(x).numpy(), rtol=1e-5, atol=1e-5)


def test_fda_estimator_is_bibench_and_stays_positive():
    """The 10-term series and its derivative equal the port of BiBench's FDA (omega = 0.1,
    tests/reference/fda_ref.py); its derivative is positive on the whole |t| <= 1 window (a period of
    4, omega = pi/2, would make it negative for ~44 % of Gaussian weights)."""
    from tests.reference.fda_ref import bibench_grad

    x = np.linspace(-1.5, 1.5, 601)
    np.testing.assert_allclose(STES["fda"].forward_proxy(torch.from_numpy(x)).numpy(), np_fourier(np.clip(x, -1, 1)), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(STES["fda"].grad(torch.from_numpy(x)).numpy(), bibench_grad(x), rtol=1e-12, atol=1e-15)
    inside = np.abs(x) <= 1
    assert (STES["fda"].grad(torch.from_numpy(x)).numpy()[inside] > 0.5).all()
    rng = np.random.default_rng(0)
    w = rng.normal(size=20000)
    t = w / (3 * w.std())
    assert (STES["fda"].grad(torch.from_numpy(t)).numpy()[np.abs(t) <= 1] > 0).all()


# --------------------------------------------------------------------------------------------
# the latent-weight gradient each method's QAT uses, against numpy closed forms


def _qat_backward(name, w, **options):
    """A QuantLinear of ``name`` on weights ``w`` after one backward of ``sum(Q(W) * R)``: (linear, quantized, R)."""
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data = torch.from_numpy(w.copy())
    q = QuantLinear.from_linear(lin, MethodConfig(name, options=options)).train()
    R = torch.from_numpy(np.random.default_rng(8).normal(size=w.shape).astype(np.float32))
    (q.quantized_weight() * R).sum().backward()
    return lin, q, R


def _qat_grad(name, w, **options):
    lin, _, R = _qat_backward(name, w, **options)
    return lin.weight.grad.numpy().astype(np.float64), R.numpy().astype(np.float64)


def _x(w):
    return w / (3 * w.std(axis=1, ddof=1, keepdims=True))


def test_xnor_gradient_has_the_scale_term():
    """XNOR-Net §3.1: dC/dW_i = dC/dW~_i (1/n + alpha 1[|r_i| <= 1])."""
    w = W(7, (5, 33))
    g, R = _qat_grad("xnor", w)
    a = np.abs(w).mean(1, keepdims=True)
    np.testing.assert_allclose(g, R * (1 / 33 + a * (np.abs(_x(w)) <= 1)), rtol=1e-5, atol=1e-8)
    g, R = _qat_grad("xnor", w, per_channel=False)
    np.testing.assert_allclose(g, R * (1 / w.size + np.abs(w).mean() * (np.abs(_x(w)) <= 1)), rtol=1e-5, atol=1e-8)


def test_bireal_gradient_is_magnitude_aware():
    """Bi-Real eq. 8: dW_b/dW ~ (||W||_1 / n) 1[|w| < 1]."""
    w = W(7, (5, 33))
    g, R = _qat_grad("bireal", w)
    np.testing.assert_allclose(g, R * np.abs(w).mean(1, keepdims=True) * (np.abs(_x(w)) <= 1), rtol=1e-5, atol=1e-9)


def test_fda_gradient_is_the_series_derivative():
    w = W(7, (5, 33))
    g, R = _qat_grad("fda", w, noise=False)
    x = _x(w)
    np.testing.assert_allclose(g, R * np.abs(w).mean(1, keepdims=True) * np.where(np.abs(x) <= 1, np_fourier_grad(x), 0), rtol=1e-4, atol=1e-8)
    g4, _ = _qat_grad("fda", w, noise=False, terms=4)
    np.testing.assert_allclose(g4, R * np.abs(w).mean(1, keepdims=True) * np.where(np.abs(x) <= 1, np_fourier_grad(x, n=4), 0), rtol=1e-4, atol=1e-8)


def test_recu_gradient_through_clamp_and_standardisation():
    """ReCU's QAT forward is alpha * (identity-STE sign of the clamped standardised row): its gradient is
    alpha times the derivative of clamp(standardise(w)) -- checked by float64 central differences of a
    numpy version, with alpha and the clamp bound held at their values (both are detached)."""
    w = W(13, (4, 24)).astype(np.float64)
    tau = 0.9
    g, R = _qat_grad("recu", w.astype(np.float32), tau=tau)
    sd0 = w.std(1, ddof=1, keepdims=True) / (2 * np.sqrt(2))
    u0 = (w - w.mean(1, keepdims=True)) / sd0
    Q = -np.abs(u0).mean() * np.log(2 - 2 * tau)
    alpha = np.abs(np.clip(u0, -Q, Q)).mean(1, keepdims=True) * sd0

    def F(v):
        sd = v.std(1, ddof=1, keepdims=True) / (2 * np.sqrt(2))
        return (alpha * np.clip((v - v.mean(1, keepdims=True)) / sd, -Q, Q) * R).sum()

    h = 1e-7
    fd = np.zeros_like(w)
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            e = np.zeros_like(w)
            e[i, j] = h
            fd[i, j] = (F(w + e) - F(w - e)) / (2 * h)
    assert (np.abs(u0) > Q).any()  # some weights are clamped ...
    np.testing.assert_allclose(g, fd, rtol=2e-3, atol=1e-6)
    clamped = np.abs(u0) > Q
    assert np.abs(fd[clamped]).max() < np.abs(fd[~clamped]).max()  # ... and they get less gradient


def test_recu_tau_schedule_is_exponential():
    r = ReCU(tau=0.99, tau_start=0.85)
    vals = []
    for p in (0.0, 0.5, 1.0):
        r.set_progress(p)
        vals.append(r.current_tau)
    A = (0.99 - 0.85) / (math.e - 1)
    assert vals == pytest.approx([0.85, A * math.exp(0.5) + 0.85 - A, 0.99])


def test_fda_gradient_with_noise_adaptation():
    """With the noise module on: dC/dW = alpha (g(t) + lambda e'(t)) (both w.r.t. t = w / (3 std)), e(t) = ReLU(t W1) W2 + 0.1 sin t."""
    w = W(16, (6, 128))
    lin = torch.nn.Linear(128, 6, bias=False)
    lin.weight.data = torch.from_numpy(w.copy())
    q = QuantLinear.from_linear(lin, MethodConfig("fda")).train()
    torch.manual_seed(1)
    torch.nn.init.normal_(q.train_aux.fc2.weight)
    q.quantizer.set_progress(0.25)
    lam = 0.05 * (1 + np.cos(np.pi * 0.25))
    R = np.random.default_rng(17).normal(size=w.shape)
    (q.quantized_weight() * torch.from_numpy(R).float()).sum().backward()
    W1 = q.train_aux.fc1.weight.detach().double().numpy()
    W2 = q.train_aux.fc2.weight.detach().double().numpy()
    x = _x(w.astype(np.float64))
    a = np.abs(w.astype(np.float64)).mean(1, keepdims=True)
    series = np.where(np.abs(x) <= 1, np_fourier_grad(x), 0)
    noise = np.stack([W1.T @ ((W2.T @ (a[i] * lam * R[i])) * (W1 @ x[i] > 0)) for i in range(w.shape[0])]) + 0.1 * np.cos(x) * a * lam * R
    np.testing.assert_allclose(lin.weight.grad.double().numpy(), a * series * R + noise, rtol=2e-3, atol=1e-6)


def test_fda_noise_module_trains_and_fades():
    """FDA §3.2: the noise module enters the QAT forward with weight lambda(p) = 0.05 (1 + cos(pi p)),
    receives gradients, and is gone at the end (pure sign; not counted in the size)."""
    from binlab.runtime.size import model_size

    w = W(14, (6, 128))
    lin = torch.nn.Linear(128, 6, bias=False)
    lin.weight.data = torch.from_numpy(w.copy())
    q = QuantLinear.from_linear(lin, MethodConfig("fda")).train()
    assert q.train_aux is not None
    q.quantizer.set_progress(0.0)
    assert q.quantizer._lambda == pytest.approx(0.1)
    torch.nn.init.normal_(q.train_aux.fc2.weight)
    v = q.quantized_weight()
    v.pow(2).sum().backward()
    assert q.train_aux.fc1.weight.grad is not None and q.train_aux.fc1.weight.grad.abs().sum() > 0
    q.quantizer.set_progress(1.0)
    assert q.quantizer._lambda == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(q.quantized_weight().detach().numpy(), np_xnor(w), rtol=1e-6)
    wrapper = torch.nn.Sequential(q)
    assert {c.name for c in model_size(wrapper).components} == {"0"}  # the noise module is not counted


PAPER_GRADIENTS = {"xnor", "bireal", "fda", "recu", "onebit", "pbllm", "dbllm", "binarymos", "fbi", "bibert", "binarybert"}  # tested one by one (the LLM ones: test_lm_track)
PTQ_ONLY = {n for n, c in BINARIZERS.items() if c.needs_calibration is True}  # GPTQ, BiLLM, ARB, STBLLM: post-training methods


def test_bibert_gradient_goes_through_the_centring():
    """BiBERT's estimator acts on the centred weights c = W - mean_row(W): dL/dW = G - mean_row(G),
    G = dL/dQ * 1[|c / (3 std_row)| <= 1] (clipped, binlab's normalisation)."""
    w = W(7, (5, 33)) + 0.01
    g, R = _qat_grad("bibert", w)
    c = w - w.mean(1, keepdims=True)
    G = R * (np.abs(_x(c)) <= 1)
    np.testing.assert_allclose(g, G - G.mean(1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_binarybert_trains_its_two_binary_matrices():
    """After the split the latent weight stays as it was; W1 and W2 get dL/dQ each (identity estimator)."""
    w = W(7, (5, 33))
    lin, q, R = _qat_backward("binarybert", w)
    assert lin.weight.grad is None
    for p in (q.qparams.w1, q.qparams.w2):
        np.testing.assert_allclose(p.grad.numpy(), R.numpy())
    np.testing.assert_allclose((q.qparams.w1 + q.qparams.w2).detach().numpy(), w, atol=1e-7)


def test_onebit_gradient_flows_through_signs_and_value_vectors():
    """d/dW of sign_ste(W) * (a b^T) is dL/dQ * a b^T * g(W) (OneBit's estimator acts on the raw latent
    weight); a and b get dL/dQ * sign(W) summed."""
    from binlab.methods.onebit import svid

    w = W(7, (5, 33))
    lin, q, R = _qat_backward("onebit", w, out_norm=False)
    a, b = (t.numpy().astype(np.float64) for t in svid(torch.from_numpy(w)))
    ste = BINARIZERS["onebit"].default_ste
    assert ste == "onebit"
    np.testing.assert_allclose(lin.weight.grad.numpy(), R.numpy() * np.outer(a, b) * NP_STE[ste](w), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(q.qparams.a.grad.numpy(), (R.numpy() * np_sign(w) * b[None, :]).sum(1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(set(BINARIZERS) - PAPER_GRADIENTS - PTQ_ONLY))
def test_default_gradient_of_plain_methods(name):
    """Methods without a paper-specific gradient use dL/dW = dL/dQ * g(W / (3 std_row)) with their default STE."""
    w = W(7, (5, 33))
    g, R = _qat_grad(name, w)
    ste = BINARIZERS[name].default_ste
    np.testing.assert_allclose(g, R * NP_STE[ste](_x(w)), rtol=1e-5, atol=1e-6)


def test_bireal_shortcut_adds_the_input_on_square_linears_only():
    torch.manual_seed(0)
    sq, rect = torch.nn.Linear(8, 8), torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    a = QuantLinear.from_linear(sq, MethodConfig("bireal", options={"shortcut": True}, act="sign"))
    b = QuantLinear.from_linear(sq, MethodConfig("bireal", act="sign"))
    assert a.shortcut and torch.allclose(a(x), b(x) + x)
    c = QuantLinear.from_linear(rect, MethodConfig("bireal", options={"shortcut": True}))
    assert not c.shortcut


def test_activation_estimator_follows_the_method():
    """Bi-Real's (and ReCU's) binarized inputs use ApproxSign, FDA's the series; XNOR the clipped one."""
    for method, want in (("bireal", "approxsign"), ("recu", "approxsign"), ("fda", "fda"), ("xnor", "clipped"), ("bitnet", "identity")):
        act = "absmax8" if method == "bitnet" else "sign"
        q = QuantLinear.from_linear(torch.nn.Linear(8, 8), MethodConfig(method, act=act))
        assert q.act.ste_name == want, method


def test_method_cards_doc_is_generated_from_the_registry():
    """docs/methods.md is `binlab methods --write` output: regenerate it when a method changes."""
    from pathlib import Path

    from binlab.methods import cards_markdown, method_card

    doc = Path(__file__).resolve().parents[1] / "docs" / "methods.md"
    assert doc.read_text() == cards_markdown()
    for name in BINARIZERS:
        c = method_card(name)
        assert c["paper"] and c["stores"] and c["mode"] and c["bits_per_weight_128x128"] >= 1.0
        if name != "bucket":  # the seed's method has no arXiv paper
            assert c["arxiv"], name
