"""Every registered binarizer against an independent numpy reference, plus STE gradients."""
import numpy as np
import pytest
import torch

from binlab.binarizers import BINARIZERS, Bucket, Uniform, optimal_threshold
from binlab.ste import STES, apply_ste


def W(seed=0, shape=(6, 40)):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.05, shape).astype(np.float32)
    w[0, :5] = 0.0  # zeros: sign(0) = +1
    return w


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def row_mean(x, per_channel):
    return x.mean(axis=1, keepdims=True) if per_channel else np.full((x.shape[0], 1), x.mean())


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


REFS = {
    "sign": lambda w: np_sign(w),
    "xnor": lambda w: np_sign(w) * np.abs(w).mean(1, keepdims=True),
    "bireal": lambda w: np_sign(w) * np.abs(w).mean(1, keepdims=True),
    "fda": lambda w: np_sign(w) * np.abs(w).mean(1, keepdims=True),
    "bitnet": lambda w: np_sign(w - w.mean()) * np.abs(w).mean(),
    "bitnet158": lambda w: np.abs(w).mean() * np.clip(np.round(w / (np.abs(w).mean() + 1e-8)), -1, 1),
}


def np_twn(w):
    d = 0.7 * np.abs(w).mean(1, keepdims=True)
    keep = np.abs(w) > d
    a = (np.abs(w) * keep).sum(1, keepdims=True) / keep.sum(1, keepdims=True)
    return a * np_sign(w) * keep


def np_recu(w, tau):
    wb = w - w.mean(1, keepdims=True)
    lo = np.quantile(wb, 1 - tau, axis=1, keepdims=True)
    hi = np.quantile(wb, tau, axis=1, keepdims=True)
    wc = np.clip(wb, lo, hi)
    return np_sign(wc) * np.abs(wc).mean(1, keepdims=True)


def np_onebit(w):
    U, S, Vt = np.linalg.svd(np.abs(w).astype(np.float64))
    approx = S[0] * np.outer(U[:, 0], Vt[0])
    return np_sign(w) * np.abs(approx)


REFS.update({"twn": np_twn, "recu": lambda w: np_recu(w, 0.99), "onebit": np_onebit,
             "bucket": lambda w: np_bucket(w, 0.0, True)})


@pytest.mark.parametrize("name", sorted(BINARIZERS))
def test_every_binarizer_basic_contract(name):
    w = W()
    q = BINARIZERS[name]()(torch.from_numpy(w)) if name != "bucket" else Bucket(tau=0.0)(torch.from_numpy(w))
    assert q.shape == w.shape and torch.isfinite(q).all()
    levels = [len(np.unique(r)) for r in q.numpy()]
    expected_max = {"twn": 3, "bitnet158": 3, "uniform": 256, "pbllm": 40, "billm": 8, "onebit": w.shape[1]}.get(name, 2)
    assert max(levels) <= expected_max
    st = BINARIZERS[name]().storage(w.shape)
    assert st["codes"] >= w.size  # at least one bit per weight is stored
    if name in REFS:
        np.testing.assert_allclose(q.numpy(), REFS[name](w), rtol=1e-5, atol=1e-7)


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
    np.testing.assert_allclose(q, np_sign(w) * np.abs(w).mean(), rtol=1e-6)


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
        # and never worse than XNOR's alpha*sign
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
    # the searched clip is at least as good as no clipping, and is one of the grid's candidates
    err = ((q - w) ** 2).sum(1)
    assert np.all(err <= ((np_uniform(w, bits, 1.0) - w) ** 2).sum(1) + 1e-9)
    cands = [np_uniform(w, bits, c) for c in np.arange(1.0, 0.29, -0.05)]
    for i in range(w.shape[0]):
        assert min(np.abs(c[i] - q[i]).max() for c in cands) < 1e-6


def test_stochastic_expectation():
    w = torch.full((1, 20000), 0.3)
    qs = torch.stack([BINARIZERS["stochastic"](scale=False, seed=s)(w) for s in range(5)])
    # E[q] = 2 p - 1 with p = (w + 1) / 2  ->  E[q] = w
    assert abs(float(qs.mean()) - 0.3) < 0.01
    assert torch.equal(BINARIZERS["stochastic"](seed=1)(w), BINARIZERS["stochastic"](seed=1)(w))


def test_pbllm_keeps_salient_weights_in_8bit():
    w = torch.from_numpy(W(5))
    pb = BINARIZERS["pbllm"](salient=0.1)
    q = pb(w)
    sal = w.abs() >= torch.topk(w.abs().flatten(), int(round(0.1 * w.numel()))).values[-1]
    assert (q[sal] - w[sal]).abs().max() < w.abs().max() / 100  # 8-bit on salient
    assert ((q - w) ** 2).sum() < ((BINARIZERS["xnor"]()(w) - w) ** 2).sum()


def test_billm_beats_xnor_error():
    w = torch.from_numpy(W(6, (16, 64)))
    assert ((BINARIZERS["billm"]()(w) - w) ** 2).sum() < ((BINARIZERS["xnor"]()(w) - w) ** 2).sum()


@pytest.mark.parametrize("name,kw,match", [("bucket", {"tau": 5.0}, "tau"), ("uniform", {"bits": 9}, "bits"), ("recu", {"tau": 0.2}, "tau"),
                                           ("pbllm", {"salient": 1.5}, "salient")])
def test_bad_options(name, kw, match):
    with pytest.raises(ValueError, match=match):
        BINARIZERS[name](**kw)


# --------------------------------------------------------------------------------------------
# straight-through estimators

NP_STE = {
    "identity": lambda x: np.ones_like(x),
    "clipped": lambda x: (np.abs(x) <= 1).astype(x.dtype),
    "approxsign": lambda x: np.where(np.abs(x) <= 1, 2 - 2 * np.abs(x), 0.0),
    "fda": lambda x: np.where(np.abs(x) <= 2, (4 * (np.pi / 2) / np.pi) * sum(np.cos((2 * i + 1) * np.pi / 2 * x) for i in range(4)) / 4, 0.0),
    "tanh": lambda x: 2.0 * (1 - np.tanh(2.0 * x) ** 2),
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


def test_ste_scale_normalises_input():
    x = torch.tensor([0.05, 0.2, 0.5], requires_grad=True)
    apply_ste(x, torch.sign(x), "clipped", scale=0.1).sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("name", sorted(BINARIZERS))
def test_latent_gradient_through_each_binarizer(name):
    """In QAT, dL/dW = dL/dQ * g(W / (3 std_row)) for the method's default STE (vectorised numpy reference)."""
    from binlab.quantize import MethodConfig, QuantLinear

    w = W(7, (5, 33))
    lin = torch.nn.Linear(33, 5, bias=False)
    lin.weight.data = torch.from_numpy(w.copy())
    q = QuantLinear.from_linear(lin, MethodConfig(name)).train()
    R = torch.from_numpy(np.random.default_rng(8).normal(size=(5, 33)).astype(np.float32))
    (q.quantized_weight() * R).sum().backward()
    s = 3 * w.std(axis=1, ddof=1, keepdims=True)
    ste = BINARIZERS[name].default_ste
    np.testing.assert_allclose(lin.weight.grad.numpy(), R.numpy() * NP_STE[ste](w / s), rtol=1e-5, atol=1e-6)
