"""Bit-packed binary kernels in numba.

Packing (:mod:`binlab.runtime.bitpack`, numpy only, re-exported here): a ±1 (or {0,1}) matrix (M, K)
becomes uint64 words (M, ceil(K/64)), bit ``k % 64`` of word ``k // 64`` set where the value is +1
(``x >= 0``; sign(0) = +1) or non-zero for {0,1}. Padding bits are 0 in every operand, so they never
contribute.

- :func:`xnor_gemm` (W1A1): for ±1 rows a, b of length K,
  ``a . b = K - 2 popcount(a XOR b)``; int32 output, exact.
- :func:`w1a1_linear`: a whole W1A1 layer in one call (the packed runtime's path): the inputs'
  signs packed inside the kernel, the XNOR-popcount products on weights transposed once at load
  (the loop over outputs vectorizes), and the epilogue ``a_r (lo S + (hi - lo) P) + bias``.
- :func:`binary_gemm` (W1A32): for packed bits w of a row and real x,
  ``P = sum_{k: w_k = 1} x_k``; then a row with two levels {lo, hi} gives
  ``y = lo * sum_k x_k + (hi - lo) * P`` (sign with scale alpha: lo = -alpha, hi = alpha).
  P is computed with byte lookup tables (as in LUT-GEMM/T-MAC): for every 8 inputs, the 256
  partial sums are tabulated once per input row, then each weight byte is one table read; the
  weights are re-laid in blocks of 16 bytes (:class:`LutWeights`) so a block's tables stay in L1.
- :func:`~binlab.runtime.bitpack.dequant_rows`: a tile of rows of ``lo + (hi - lo) B`` in float32 (the
  runtime's path for a batch of many tokens: dense GEMM tile by tile, never the whole matrix), with
  this module's parallel loop once the module is loaded.

The Python wrappers here check arguments and allocate through :mod:`binlab.runtime.fused`, which the kernels
compiled ahead of time (:mod:`binlab.runtime.aot`, no numba in the process) share; :data:`JIT` names this
module's kernels as that module expects.

Hardware note (what LLVM emits, from the assembly; ``bench/kernels.py`` records the counts each
run): the ``popcount64`` intrinsic below is ``llvm.ctpop.i64``. On this project's AVX2-only
machines (AMD EPYC Zen 3) the vectorized word loops use AVX2's nibble-lookup popcount
(``vpshufb`` + ``vpsadbw``) and the rest scalar ``popcntq``; on machines with AVX-512 VPOPCNTDQ
(EPYC Zen 4) the same code becomes ``vpopcntq`` on 8 words at once (47 sites in
:func:`xnor_gemm_kernel`, 20 scalar ``popcntq`` for remainders). A hand-written Harley-Seal
carry-save popcount was not added: the vectorized ``vpopcntq`` loop already runs at about 4x the
scalar ``popcnt`` roofline measured in the same bench, and on AVX2 LLVM's ``vpshufb`` form is the
nibble lookup itself. ``tests/test_kernels.py::test_llvm_uses_hardware_popcount`` checks that a
hardware popcount is used on every run.
"""
from __future__ import annotations

from types import SimpleNamespace

import numba as nb
import numpy as np
from numba import types
from numba.extending import intrinsic

from . import elementwise as _elementwise
from . import fused as _fused
from .bitpack import WORD, dequant_rows, n_words, pack_bits, unpack_bits  # noqa: F401 (re-exported)
from .bitpack import check_packed as _check_packed
from .fused import LUT_GROUP, LutWeights  # noqa: F401 (re-exported)


@intrinsic
def popcount64(typingctx, x):
    """Population count of a uint64 via ``llvm.ctpop`` (the hardware ``popcnt`` instruction where available)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


# --------------------------------------------------------------------------------------------
# W1A1: XNOR-popcount GEMM

ROW_BLOCK = 4  # rows of A per task: each B row loaded from cache is reused 4 times
COL_BLOCK = 64  # rows of B per tile: 64 x W words stay in L1/L2 while a row block sweeps them


@nb.njit(parallel=True, cache=True, nogil=True)
def xnor_gemm_kernel(A, B, K, out):
    M, W = A.shape
    N = B.shape[0]
    n_blocks = (M + ROW_BLOCK - 1) // ROW_BLOCK
    for ib in nb.prange(n_blocks):
        i0 = ib * ROW_BLOCK
        i1 = min(i0 + ROW_BLOCK, M)
        for j0 in range(0, N, COL_BLOCK):
            j1 = min(j0 + COL_BLOCK, N)
            if i1 - i0 == ROW_BLOCK:
                for j in range(j0, j1):
                    c0 = 0
                    c1 = 0
                    c2 = 0
                    c3 = 0
                    for w in range(W):
                        b = B[j, w]
                        c0 += popcount64(A[i0, w] ^ b)
                        c1 += popcount64(A[i0 + 1, w] ^ b)
                        c2 += popcount64(A[i0 + 2, w] ^ b)
                        c3 += popcount64(A[i0 + 3, w] ^ b)
                    out[i0, j] = K - 2 * np.int32(c0)
                    out[i0 + 1, j] = K - 2 * np.int32(c1)
                    out[i0 + 2, j] = K - 2 * np.int32(c2)
                    out[i0 + 3, j] = K - 2 * np.int32(c3)
            else:
                for i in range(i0, i1):
                    for j in range(j0, j1):
                        c = 0
                        for w in range(W):
                            c += popcount64(A[i, w] ^ B[j, w])
                        out[i, j] = K - 2 * np.int32(c)


def xnor_gemm(A: np.ndarray, B: np.ndarray, K: int) -> np.ndarray:
    """``A_pm @ B_pm.T`` for packed ±1 matrices A (M, K) and B (N, K); int32 (M, N), exact."""
    _check_packed(A, "A")
    _check_packed(B, "B")
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"A and B must have the same number of words, got {A.shape[1]} and {B.shape[1]}")
    if not 1 <= K <= A.shape[1] * WORD or n_words(K) != A.shape[1]:
        raise ValueError(f"K={K} does not match {A.shape[1]} words")
    out = np.empty((A.shape[0], B.shape[0]), dtype=np.int32)
    xnor_gemm_kernel(A, B, np.int32(K), out)
    return out


@nb.njit(cache=True, nogil=True)
def _popcount_roofline_kernel(a, reps):
    """Tight in-cache loop: xor + popcount over ``a`` (uint64) ``reps`` times; returns the count."""
    total = np.uint64(0)
    n = a.shape[0]
    for r in range(reps):
        key = np.uint64(r)
        for i in range(n):
            total += popcount64(a[i] ^ key)
    return total


@nb.njit(parallel=True, cache=True, nogil=True)
def popcount_roofline_parallel(a, reps, n_threads):
    out = np.zeros(n_threads, dtype=np.uint64)
    for t in nb.prange(n_threads):
        out[t] = _popcount_roofline_kernel(a, reps)
    return out.sum()


# --------------------------------------------------------------------------------------------
# W1A32: binary-weight GEMM via byte lookup tables


@nb.njit(cache=True, nogil=True, inline="always")
def _build_lut_into(x, base, table):
    """table[v] = sum of x[base + b] over the set bits b of byte value v (x zero-padded past K)."""
    K = x.shape[0]
    table[0] = 0.0
    for b in range(8):
        xv = x[base + b] if base + b < K else np.float32(0.0)
        step = 1 << b
        for v in range(step):
            table[v + step] = table[v] + xv


@nb.njit(cache=True, nogil=True, inline="always")
def _build_lut_group(x, lut, g):
    """lut[g, v] = sum of x[8g + b] over the set bits b of byte value v."""
    _build_lut_into(x, 8 * g, lut[g])


@nb.njit(cache=True, nogil=True)
def _build_lut(x, lut):
    for g in range(lut.shape[0]):
        _build_lut_group(x, lut, g)


@nb.njit(parallel=True, cache=True, nogil=True)
def _binary_gemm_few_rows(X, Wt, out, nt):
    """Few input rows (GEMV-like), split along K: each of the ``nt`` threads owns a contiguous range of
    blocks, builds only those blocks' tables (16 x 256 floats, kept in L1 while it sweeps every
    output's bytes of the block) and accumulates a partial result; the partials are summed at the end.
    One parallel region, and every table is built by the thread that reads it (splitting the outputs
    instead made every thread read every table: 1.5-1.9x slower here at 1-4 rows, K = N = 4096).
    ``nt`` is passed in: numba's get_num_threads inside a kernel would make it uncacheable."""
    Bn = X.shape[0]
    blocks, N, G = Wt.shape
    part = np.zeros((nt, Bn, N), dtype=np.float32)
    per = (blocks + nt - 1) // nt
    for t in nb.prange(nt):
        L = np.empty((G, 256), dtype=np.float32)
        for b in range(t * per, min(blocks, (t + 1) * per)):
            for r in range(Bn):
                for g in range(G):
                    _build_lut_into(X[r], 8 * (b * G + g), L[g])
                pr = part[t, r]
                for n in range(N):
                    # sum_g L[g, w[g]] with four independent accumulators (hides the add latency); written out
                    # here and in _binary_gemm_many_rows: through an inlined helper it ran 1.5-2x slower in probes
                    w = Wt[b, n]
                    a0 = np.float32(0.0)
                    a1 = np.float32(0.0)
                    a2 = np.float32(0.0)
                    a3 = np.float32(0.0)
                    g = 0
                    while g + 4 <= G:
                        a0 += L[g, w[g]]
                        a1 += L[g + 1, w[g + 1]]
                        a2 += L[g + 2, w[g + 2]]
                        a3 += L[g + 3, w[g + 3]]
                        g += 4
                    pr[n] += (a0 + a1) + (a2 + a3)
    for r in range(Bn):
        for n in range(N):
            s = np.float32(0.0)
            for t in range(nt):
                s += part[t, r, n]
            out[r, n] = s


@nb.njit(parallel=True, cache=True, nogil=True)
def _binary_gemm_many_rows(X, Wt, out):
    """Many input rows (tokens of a batch): parallelise over rows, one table set per row."""
    Bn = X.shape[0]
    blocks, N, G = Wt.shape
    for r in nb.prange(Bn):
        L = np.empty((blocks * G, 256), dtype=np.float32)
        _build_lut(X[r], L)
        for n in range(N):
            out[r, n] = 0.0
        for b in range(blocks):
            Lb = L[b * G:(b + 1) * G]
            for n in range(N):
                w = Wt[b, n]
                a0 = np.float32(0.0)
                a1 = np.float32(0.0)
                a2 = np.float32(0.0)
                a3 = np.float32(0.0)
                g = 0
                while g + 4 <= G:
                    a0 += Lb[g, w[g]]
                    a1 += Lb[g + 1, w[g + 1]]
                    a2 += Lb[g + 2, w[g + 2]]
                    a3 += Lb[g + 3, w[g + 3]]
                    g += 4
                out[r, n] += (a0 + a1) + (a2 + a3)


def binary_gemm(X: np.ndarray, W, K: int) -> np.ndarray:
    """``P[r, n] = sum_{k: bit(n, k) = 1} X[r, k]`` for float32 X (B, K) and 1-bit weights W given as
    a :class:`LutWeights` (fast path) or packed words (N, ceil(K/64)) from :func:`pack_bits`
    (re-laid on every call, which costs about a copy of the weights)."""
    return _fused.binary_gemm(JIT, nb.get_num_threads(), X, W, K)


# --------------------------------------------------------------------------------------------
# fused layer kernels (what the packed runtime calls)


@nb.njit(cache=True, nogil=True, fastmath=True)
def _abs_sum(X, r, K):
    """``sum_k |X[r, k]|`` in float32 (fastmath: the sum may be reassociated, so it vectorizes instead of
    waiting on one chain of dependent adds)."""
    acc = np.float32(0.0)
    for k in range(K):
        acc += abs(X[r, k])
    return acc


@nb.njit(parallel=True, cache=True, nogil=True)
def w1a1_linear_kernel(X, Wt, lo, hi, bias, K, scale, out):
    """One call for a whole W1A1 linear: per token r, ``a_r = mean|x_r|`` (or the constant ``scale``
    when it is > 0: BiBERT's unscaled sign is 1, BiT's elastic binary activation its learned alpha)
    and the sign bits of x_r (packed here, sign(0) = +1), then for every output n, with ``D = K - 2 popcount(s XOR w_n)`` the
    exact ±1 dot product and ``S = sum_k s_k``::

        y[r, n] = a_r (lo_n S + (hi_n - lo_n) (D + S) / 2) + bias_n

    i.e. ``a_r sign(x_r) . (lo_n + (hi_n - lo_n) b_n)``, the fake-quant layer's value.

    Layout: the weights are transposed once at load, ``Wt[w, n]`` (word w of output n), so the
    innermost loop runs over outputs n with unit stride: LLVM vectorizes it (with AVX-512
    VPOPCNTDQ it emits ``vpopcntq`` on 8 words at once; with AVX2 only, the nibble-lookup
    ``vpshufb`` popcount), where the row-major layout's inner loop over the K/64 words of one
    dot product is too short to vectorize (6 words at K = 384). Tokens go in blocks of 4 so each
    weight word loaded serves 4 tokens; counts accumulate in a (4, N) array that stays in cache."""
    M = X.shape[0]
    W, N = Wt.shape
    n_blocks = (M + ROW_BLOCK - 1) // ROW_BLOCK
    for ib in nb.prange(n_blocks):
        i0 = ib * ROW_BLOCK
        rows = min(i0 + ROW_BLOCK, M) - i0
        S = np.zeros((ROW_BLOCK, W), dtype=np.uint64)  # rows past M stay 0: computed, never written
        a = np.ones(ROW_BLOCK, dtype=np.float32)
        ssum = np.zeros(ROW_BLOCK, dtype=np.int64)
        pos = np.zeros(ROW_BLOCK, dtype=np.int64)  # +1 inputs per row
        for r in range(rows):
            ones = 0
            for w in range(W):  # a full word's loop has a fixed trip count and no branch, so it vectorizes
                word = np.uint64(0)
                k0 = w * WORD
                if k0 + WORD <= K:
                    for b in range(WORD):
                        word |= np.uint64(X[i0 + r, k0 + b] >= 0) << np.uint64(b)
                else:
                    for b in range(K - k0):
                        word |= np.uint64(X[i0 + r, k0 + b] >= 0) << np.uint64(b)
                S[r, w] = word
                ones += popcount64(word)
            a[r] = scale if scale > 0 else max(_abs_sum(X, i0 + r, K) / K, np.float32(1e-8))
            ssum[r] = 2 * ones - K
            pos[r] = ones
        c = np.zeros((ROW_BLOCK, N), dtype=np.int64)
        for w in range(W):
            s0 = S[0, w]
            s1 = S[1, w]
            s2 = S[2, w]
            s3 = S[3, w]
            for n in range(N):
                b = Wt[w, n]
                c[0, n] += popcount64(s0 ^ b)
                c[1, n] += popcount64(s1 ^ b)
                c[2, n] += popcount64(s2 ^ b)
                c[3, n] += popcount64(s3 ^ b)
        for r in range(rows):
            for n in range(N):
                # (D + S) / 2 = (K - 2 c + 2 pos - K) / 2 = pos - c: no division; float32 throughout, so the loop
                # vectorizes 16 wide (the counts are exact in float32: |S|, pos - c <= K < 2^24)
                out[i0 + r, n] = a[r] * (lo[n] * np.float32(ssum[r]) + (hi[n] - lo[n]) * np.float32(pos[r] - c[r, n])) + bias[n]


def w1a1_linear(X: np.ndarray, Wt: np.ndarray, lo: np.ndarray, hi: np.ndarray, bias: np.ndarray | None, K: int,
                scale: float | None = None) -> np.ndarray:
    """The W1A1 linear ``(a sign(x)) @ (lo + (hi - lo) B)^T + bias`` with ``a = mean|x|`` per row (or the
    constant ``scale``) on float32 X (M, K) and the
    weight bits *transposed*, ``Wt = pack_bits(B).T`` (ceil(K/64), N) contiguous (bit set: the
    row's ``hi`` level); float32 (M, N)."""
    return _fused.w1a1_linear(JIT, X, Wt, lo, hi, bias, K, scale)


@nb.njit(parallel=True, cache=True, nogil=True)
def _unpack_rows_kernel(Wp, lo, hi, K, n0, out):
    """Rows n0 .. n0 + len(out) of ``lo + (hi - lo) B`` as float32 (dequantize one tile)."""
    for i in nb.prange(out.shape[0]):
        n = n0 + i
        l = lo[n]
        h = hi[n]
        for w in range(Wp.shape[1]):
            word = Wp[n, w]
            k0 = w * WORD
            for b in range(min(WORD, K - k0)):
                out[i, k0 + b] = h if (word >> np.uint64(b)) & np.uint64(1) else l


#: the kernels compiled just in time, under binlab.runtime.fused.KERNELS' names
JIT = SimpleNamespace(w1a1_linear=w1a1_linear_kernel, binary_gemm_few_rows=_binary_gemm_few_rows,
                      binary_gemm_many_rows=_binary_gemm_many_rows, unpack_rows=_unpack_rows_kernel, **vars(_elementwise.JIT))
