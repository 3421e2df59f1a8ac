"""The torch-free runtime's float32 operations between the linears, as numba loops: GELU, a residual add
fused with LayerNorm, and the masked, scaled softmax of attention.

Written with numpy (a dozen array passes and temporaries each, erf evaluated in float64 by a ufunc),
these took about half of a batch-1 forward pass of the scratch encoder in a profile, several times the
binary matrix products; each is one pass here.

- :func:`gelu_`: BERT's exact GELU, ``x Phi(x) = x (1 + erf(x / sqrt 2)) / 2``, with erf in float32 as
  the rational function ``erf(t) ~ t P(t^2) / Q(t^2)`` for ``|t| <= 4`` (``erf(+-4)`` is 1 in float32),
  ``P`` of degree 6 and ``Q`` of degree 4 (``Q(0) = 1``): coefficients fitted for binlab by
  iterated weighted least squares (Sanathanan-Koerner: 30 rounds of a linear least-squares fit of
  ``t P - erf Q`` weighted by ``1 / |Q|`` of the round before) to float64 erf on 20,000 evenly spaced
  points of (0, 4]; max error 1.8e-7 in float64 and 3.7e-7 evaluated in float32
  (``tests/test_elementwise.py`` checks it against ``math.erf`` on [-6, 6]). Only multiplies, adds and one divide: LLVM vectorizes the loop, where a
  libm erf or exp call would not vectorize without SVML.
- :func:`add_layer_norm`: ``LN(x + r)`` over the last axis, ``(v - mean) / sqrt(var + eps) * w + b``
  with the biased variance (torch's LayerNorm), the moments accumulated in float64.
- :func:`masked_softmax_`: ``softmax(s * scale)`` over the keys a query may see (a key-padding mask,
  and the causal mask for a language model), in place; a query that sees no key gets zeros. The
  exponentials are numpy's (SIMD for float32), between two numba passes (shift by the row's maximum,
  then normalize).
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numba as nb
import numpy as np

from . import fused
from .npops import ERF_P, ERF_Q  # the erf's coefficients (numpy-only module: the numpy backend shares them)

P0, P1, P2, P3, P4, P5, P6 = (np.float32(c) for c in ERF_P)
Q0, Q1, Q2, Q3, Q4 = (np.float32(c) for c in ERF_Q)


@nb.njit(cache=True, inline="always", error_model="numpy")
def _erf32(t):
    c = t if t < np.float32(4.0) else np.float32(4.0)  # selects, not min/max: they vectorize
    c = c if c > np.float32(-4.0) else np.float32(-4.0)
    s = c * c
    num = ((((((P6 * s + P5) * s + P4) * s + P3) * s + P2) * s + P1) * s + P0)
    den = ((((Q4 * s + Q3) * s + Q2) * s + Q1) * s + Q0)
    return c * num / den


@nb.njit(cache=True, fastmath=True, error_model="numpy")  # numpy's error model: no zero-division branch, so the loop vectorizes
def _gelu_kernel(f):
    r = np.float32(1.0 / math.sqrt(2.0))
    half, one = np.float32(0.5), np.float32(1.0)
    for i in range(f.size):
        v = f[i]
        f[i] = half * v * (one + _erf32(v * r))


def gelu_(x: np.ndarray) -> np.ndarray:
    """GELU of a C-contiguous float32 array, in place (returns it)."""
    return fused.gelu_(JIT, x)


def erf32(t: np.ndarray) -> np.ndarray:
    """The float32 erf that :func:`gelu_` uses, for an array (for tests)."""
    t = np.ascontiguousarray(t, dtype=np.float32).reshape(-1)
    return np.array([_erf32(v) for v in t], np.float32)


@nb.njit(cache=True, error_model="numpy", fastmath=True)  # the row sums may be reassociated: they vectorize
def _add_layer_norm_kernel(x, r, w, b, eps, out):
    n, d = x.shape
    for i in range(n):
        s = 0.0
        for j in range(d):
            v = x[i, j] + r[i, j]
            out[i, j] = v
            s += v
        mean = s / d
        ss = 0.0
        for j in range(d):
            c = out[i, j] - mean
            ss += c * c
        inv = 1.0 / math.sqrt(ss / d + eps)
        for j in range(d):
            out[i, j] = np.float32((out[i, j] - mean) * inv) * w[j] + b[j]


def add_layer_norm(x: np.ndarray, r: np.ndarray | None, w: np.ndarray | None, b: np.ndarray | None, eps: float) -> np.ndarray:
    """``LayerNorm(x + r)`` over the last axis (``r`` None: ``LayerNorm(x)``; ``w``/``b`` None: no affine
    part), float32, as a new array of ``x``'s shape."""
    return fused.add_layer_norm(JIT, x, r, w, b, eps)


@nb.njit(cache=True, error_model="numpy")  # no fastmath: it would assume no infinities, and -inf marks masked keys
def _softmax_shift_kernel(s, key_mask, causal, scale):
    """``s * scale - max`` over the keys a query sees, ``-inf`` elsewhere (exp makes them 0)."""
    B, H, Tq, Tk = s.shape
    ninf = np.float32(-np.inf)
    for bi in range(B):
        for h in range(H):
            for i in range(Tq):
                row = s[bi, h, i]
                hi = min(i + 1, Tk) if causal else Tk
                m = ninf
                for j in range(hi):
                    if key_mask[bi, j]:
                        m = max(m, row[j] * scale)
                for j in range(Tk):
                    row[j] = row[j] * scale - m if (j < hi and key_mask[bi, j] and m > ninf) else ninf


@nb.njit(cache=True, error_model="numpy")
def _normalize_rows_kernel(e):
    n, k = e.shape
    for i in range(n):
        tot = np.float32(0.0)
        for j in range(k):
            tot += e[i, j]
        if tot > 0:
            inv = np.float32(1.0) / tot
            for j in range(k):
                e[i, j] *= inv


def masked_softmax_(s: np.ndarray, key_mask: np.ndarray, causal: bool, scale: float) -> np.ndarray:
    """``softmax(scale * s)`` over the last axis of attention scores ``s`` (B, heads, queries, keys), in
    place, where key j is seen by query i when ``key_mask[b, j]`` and (``causal``) ``j <= i``; masked
    entries are 0, and a query that sees no key is all zeros."""
    return fused.masked_softmax_(JIT, s, key_mask, causal, scale)


#: this module's kernels under binlab.runtime.fused.KERNELS' names
JIT = SimpleNamespace(gelu=_gelu_kernel, add_layer_norm=_add_layer_norm_kernel, softmax_shift=_softmax_shift_kernel,
                      normalize_rows=_normalize_rows_kernel)
