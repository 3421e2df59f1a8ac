"""Bit packing and the numba kernels against numpy/torch references (hypothesis property tests)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from binlab.runtime.kernels import binary_gemm, pack_bits, unpack_bits, xnor_gemm, xnor_gemm_kernel
from binlab.runtime.packed import PackedLinear, pack_model

KS = st.sampled_from([1, 2, 63, 64, 65, 127, 128, 129, 1000])
DIMS = st.integers(1, 9)


def pm1(rng, shape, zeros=True):
    x = rng.choice([-1.0, 1.0], shape).astype(np.float32)
    if zeros:
        x[rng.random(shape) < 0.1] = 0.0  # sign(0) = +1
    return x


@settings(max_examples=40, deadline=None)
@given(M=DIMS, K=KS, seed=st.integers(0, 2**31 - 1))
def test_pack_unpack_round_trip(M, K, seed):
    rng = np.random.default_rng(seed)
    x = pm1(rng, (M, K))
    p = pack_bits(x)
    assert p.dtype == np.uint64 and p.shape == (M, (K + 63) // 64)
    np.testing.assert_array_equal(unpack_bits(p, K), np.where(x >= 0, 1.0, -1.0))
    z = (rng.random((M, K)) < 0.5).astype(np.float32)
    np.testing.assert_array_equal(unpack_bits(pack_bits(z, signed=False), K, signed=False), z)
    # padding bits are zero
    bits = np.unpackbits(p.view(np.uint8).reshape(M, -1), axis=1, bitorder="little")
    assert not bits[:, K:].any()


@settings(max_examples=40, deadline=None)
@given(M=DIMS, N=DIMS, K=KS, seed=st.integers(0, 2**31 - 1))
def test_xnor_gemm_matches_float_matmul(M, N, K, seed):
    rng = np.random.default_rng(seed)
    a, b = pm1(rng, (M, K)), pm1(rng, (N, K))
    ref = np.where(a >= 0, 1, -1).astype(np.int64) @ np.where(b >= 0, 1, -1).astype(np.int64).T
    np.testing.assert_array_equal(xnor_gemm(pack_bits(a), pack_bits(b), K), ref)


def test_xnor_gemm_larger_blocked_shapes():
    rng = np.random.default_rng(0)
    for M, N, K in [(4, 64, 64), (9, 130, 1000), (64, 65, 257)]:
        a, b = pm1(rng, (M, K), zeros=False), pm1(rng, (N, K), zeros=False)
        np.testing.assert_array_equal(xnor_gemm(pack_bits(a), pack_bits(b), K), (a @ b.T).astype(np.int32))


@settings(max_examples=40, deadline=None)
@given(B=DIMS, N=DIMS, K=KS, seed=st.integers(0, 2**31 - 1))
def test_binary_gemm_matches_numpy(B, N, K, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, K)).astype(np.float32)
    w = pm1(rng, (N, K))
    ref = x.astype(np.float64) @ (w >= 0).astype(np.float64).T
    np.testing.assert_allclose(binary_gemm(x, pack_bits(w), K), ref, rtol=1e-5, atol=1e-4)


def test_lut_layout_unpacks_to_the_bits():
    from binlab.runtime.kernels import LutWeights

    rng = np.random.default_rng(3)
    for N, K in [(1, 1), (3, 63), (5, 129), (7, 1000)]:
        w = pm1(rng, (N, K))
        lw = LutWeights(pack_bits(w), K)
        rows = lw.bytes.transpose(1, 0, 2).reshape(N, -1)  # block b holds bytes b*16 .. b*16+15 of every row
        np.testing.assert_array_equal(np.unpackbits(rows, axis=1, bitorder="little")[:, :K], (w >= 0).astype(np.uint8))
        assert lw.bytes.shape == (-(-((K + 63) // 64 * 8) // 16), N, 16)


@pytest.mark.parametrize("bad", [
    lambda: xnor_gemm(np.zeros((2, 1), np.int64), np.zeros((2, 1), np.uint64), 3),
    lambda: xnor_gemm(np.zeros((2, 2), np.uint64), np.zeros((2, 1), np.uint64), 3),
    lambda: xnor_gemm(np.zeros((2, 4), np.uint64)[:, ::2], np.zeros((2, 2), np.uint64), 65),
    lambda: xnor_gemm(np.zeros((2, 1), np.uint64), np.zeros((2, 1), np.uint64), 65),
    lambda: binary_gemm(np.zeros((2, 3), np.float64), np.zeros((2, 1), np.uint64), 3),
    lambda: binary_gemm(np.zeros((2, 3), np.float32), np.zeros((2, 1), np.uint64), 4),
    lambda: pack_bits(np.zeros(5)),
    lambda: unpack_bits(np.zeros((2, 1), np.uint64), 65),
])
def test_bad_inputs_are_value_errors(bad):
    with pytest.raises(ValueError):
        bad()


def test_llvm_uses_hardware_popcount():
    import numba as nb

    f = nb.njit(parallel=True)(xnor_gemm_kernel.py_func)  # a fresh, uncached compile can be inspected
    A = np.zeros((4, 1), np.uint64)
    f(A, A, np.int32(64), np.empty((4, 4), np.int32))
    llvm = next(iter(f.inspect_llvm().values()))
    assert "llvm.ctpop.i64" in llvm
    asm = next(iter(f.inspect_asm().values()))
    assert "popcnt" in asm or "vpshufb" in asm  # popcnt/vpopcntq (AVX-512 VPOPCNTDQ), or AVX2's nibble-lookup popcount


def test_packed_linear_w1a1_integer_exact():
    """±1 weights (sign, no scale) and ±1 inputs: the packed layer gives the same integers as torch."""
    from binlab.nn.quantize import MethodConfig, QuantLinear

    torch.manual_seed(0)
    lin = torch.nn.Linear(100, 7, bias=False)
    q = QuantLinear.from_linear(lin, MethodConfig("sign")).eval()
    packed = PackedLinear.from_quant(q)
    x = torch.where(torch.randn(5, 100) >= 0, 1.0, -1.0)
    assert torch.equal(packed(x), q(x))


def test_packed_linear_w1a32_and_w1a1_close():
    from binlab.nn.quantize import MethodConfig, QuantLinear

    torch.manual_seed(1)
    lin = torch.nn.Linear(130, 9)
    x = torch.randn(4, 6, 130)
    for m in (MethodConfig("xnor"), MethodConfig("bucket"), MethodConfig("bitnet"), MethodConfig("xnor", act="sign")):
        q = QuantLinear.from_linear(lin, m).eval()
        p = PackedLinear.from_quant(q)
        assert p.xnor == (m.act == "sign")
        xs = torch.randn(2, 5, 130)
        torch.testing.assert_close(p(xs), q(xs), rtol=1e-4, atol=1e-4)  # 10 rows: lookup-table kernel (W1A32)
        xl = torch.randn(3, 6 * p.LUT_ROWS, 130)
        torch.testing.assert_close(p(xl), q(xl), rtol=1e-4, atol=1e-4)  # many rows: tiles dequantized for the GEMM
    u = PackedLinear.from_quant(QuantLinear.from_linear(lin, MethodConfig("uniform", options={"bits": 4})))
    assert u.codec.kind == "grid" and u.codec.meta["bits"] == 4
    torch.testing.assert_close(u(x), QuantLinear.from_linear(lin, MethodConfig("uniform", options={"bits": 4}))(x), rtol=1e-4, atol=1e-4)


def test_pack_model_predictions_equal_fake_quant(tiny_splits):
    from binlab.nn.quantize import QuantSpec
    from binlab.presets import get_baseline, get_preset
    from binlab.runtime.size import model_size
    from binlab.training.qat import ptq
    from binlab.training.train import predict

    teacher, _ = get_baseline(get_preset("tiny"), tiny_splits)
    fq = ptq(teacher, QuantSpec.simple("encoder", "bucket"))
    packed, names = pack_model(fq)
    assert len(names) == 6
    lf, yf = predict(fq, tiny_splits.test)
    lp, yp = predict(packed, tiny_splits.test)
    assert np.array_equal(lf.argmax(1), lp.argmax(1))
    np.testing.assert_allclose(lp, lf, rtol=1e-4, atol=1e-4)
    # packed storage: exactly 1 bit per weight plus two fp32 levels per row, as size.py reports
    s_fq, s_p = model_size(fq), model_size(packed)
    assert s_p.total_bits == s_fq.total_bits and s_p.n_params == s_fq.n_params
    lay = packed.layers[0].attn.q
    # the bytes held: one bit per weight, rows padded to whole 16-byte blocks (128 weights) for the lookup tables
    assert not lay.xnor and lay._lut.nbytes * 8 == lay.out_features * ((lay.in_features + 127) // 128) * 128
