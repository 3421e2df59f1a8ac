"""The torch-free runtime's float32 operations (numba's loops and the numpy backend's array passes) against
float64 references written here."""
import math

import numpy as np
import pytest

from binlab.runtime import elementwise, npops


@pytest.fixture(params=["numba", "numpy", "aot"])
def ops(request):
    """Each backend's operations: numba's loops compiled just in time, numpy's array passes, and numba's
    loops compiled ahead of time (binlab.runtime.aot)."""
    if request.param == "aot":
        request.getfixturevalue("aot_built")
        from binlab.runtime import aot

        return aot.ops()
    return {"numba": elementwise, "numpy": npops}[request.param]



def test_erf_and_gelu_match_float64_to_float32_precision(ops):
    gelu_ = ops.gelu_
    if hasattr(ops, "erf32"):  # the compiled module has erf inside its GELU only
        t = np.linspace(-6, 6, 120001)
        ref = np.array([math.erf(v) for v in t])
        assert np.abs(ops.erf32(t) - ref).max() < 1e-6
    x = np.random.default_rng(0).normal(0, 3, 50000).astype(np.float32)
    want = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    got = gelu_(x.copy())
    assert (np.abs(got - want) <= 1e-6 * (1 + np.abs(x))).all()  # absolute: 1 + erf cancels for x << 0, as in torch's float32 GELU
    pos = x > 0
    assert (np.abs(got - want)[pos] / want[pos]).max() < 1e-6
    with pytest.raises(ValueError, match="contiguous float32"):
        gelu_(x.astype(np.float64))


def test_add_layer_norm_is_torchs_layernorm_of_the_sum(ops):
    add_layer_norm = ops.add_layer_norm
    rng = np.random.default_rng(1)
    x, r = rng.normal(0, 2, (3, 5, 48)).astype(np.float32), rng.normal(1, 1, (3, 5, 48)).astype(np.float32)
    w, b = rng.normal(1, 0.2, 48).astype(np.float32), rng.normal(0, 0.2, 48).astype(np.float32)
    v = x.astype(np.float64) + r
    want = (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-12) * w + b  # biased variance
    np.testing.assert_allclose(add_layer_norm(x, r, w, b, 1e-12), want, rtol=1e-5, atol=1e-5)
    plain = (x - x.astype(np.float64).mean(-1, keepdims=True)) / np.sqrt(x.astype(np.float64).var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(add_layer_norm(x, None, None, None, 1e-5), plain, rtol=1e-5, atol=1e-5)
    big, pos = rng.normal(0, 2, (50, 40, 48)).astype(np.float32), rng.normal(0, 1, (1, 40, 48)).astype(np.float32)  # rows in several passes
    v = big.astype(np.float64) + pos
    want = (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-12) * w + b
    np.testing.assert_allclose(add_layer_norm(big, np.broadcast_to(pos, big.shape), w, b, 1e-12), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_masked_softmax_sees_only_the_allowed_keys(causal, ops):
    masked_softmax_ = ops.masked_softmax_
    rng = np.random.default_rng(2)
    B, H, T = 3, 2, 7
    s = rng.normal(0, 3, (B, H, T, T)).astype(np.float32)
    km = np.ones((B, T), bool)
    km[1, 4:] = False  # padding
    km[2, :] = False  # a row with no key at all
    scale = 1 / math.sqrt(16)
    want = np.zeros((B, H, T, T))
    for b in range(B):
        for h in range(H):
            for i in range(T):
                keys = [j for j in range(T) if km[b, j] and (not causal or j <= i)]
                if keys:
                    e = np.exp(s[b, h, i, keys].astype(np.float64) * scale - max(s[b, h, i, keys].astype(np.float64) * scale))
                    want[b, h, i, keys] = e / e.sum()
    got = masked_softmax_(s.copy(), km, causal, scale)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert (got[2] == 0).all()
    with pytest.raises(ValueError, match="key mask"):
        masked_softmax_(s.copy(), km[:, :3], causal, scale)
