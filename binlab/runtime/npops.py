"""The torch-free runtime's float32 operations between the linears in numpy alone (the ``numpy`` backend
of :func:`binlab.runtime.standalone.load`): the same functions and the same arithmetic as the numba loops
of :mod:`binlab.runtime.elementwise` (its docstring gives the math), a few array passes each.

- :func:`gelu_`: ``x (1 + erf(x / sqrt 2)) / 2`` with the rational float32 erf ``t P(t^2) / Q(t^2)``
  on ``|t| <= 4`` (the coefficients below, fitted for binlab; see :mod:`binlab.runtime.elementwise`).
- :func:`add_layer_norm`: ``LN(x + r)`` over the last axis, the moments in float64, biased variance.
- :func:`masked_softmax_`: ``softmax(s * scale)`` over the keys a query may see; a query that sees no
  key gets zeros.
"""
from __future__ import annotations

import math

import numpy as np

# erf(t) ~ t * P(t^2) / Q(t^2) on |t| <= 4 (see binlab.runtime.elementwise for how they were fitted)
ERF_P = (1.1283788191944748, 0.2061136191180416, 0.0513860058050967, 0.003965617879845031, 0.00014822458315999677,
         -1.977515712711287e-06, 1.966793047611158e-08)
ERF_Q = (1.0, 0.515992597283669, 0.11755333991524765, 0.014880657606970885, 0.0010204739009740862)
_P = tuple(np.float32(c) for c in ERF_P)
_Q = tuple(np.float32(c) for c in ERF_Q)


def erf32(t: np.ndarray) -> np.ndarray:
    """The rational float32 erf, elementwise."""
    c = np.clip(np.asarray(t, np.float32), np.float32(-4.0), np.float32(4.0))
    s = c * c
    num = np.full_like(s, _P[6])
    for p in _P[5::-1]:
        num *= s
        num += p
    den = np.full_like(s, _Q[4])
    for q in _Q[3::-1]:
        den *= s
        den += q
    return c * num / den


CHUNK = 1 << 16  # elements (GELU) or rows (LayerNorm) per pass: the temporaries stay in cache and small


def gelu_(x: np.ndarray) -> np.ndarray:
    """GELU of a C-contiguous float32 array, in place (returns it)."""
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        raise ValueError("gelu_ needs a C-contiguous float32 array")
    flat = x.reshape(-1)
    r, half, one = np.float32(1.0 / math.sqrt(2.0)), np.float32(0.5), np.float32(1.0)
    for i in range(0, flat.size, CHUNK):
        v = flat[i:i + CHUNK]
        e = erf32(v * r)
        e += one
        v *= half
        v *= e
    return x


def add_layer_norm(x: np.ndarray, r: np.ndarray | None, w: np.ndarray | None, b: np.ndarray | None, eps: float) -> np.ndarray:
    """``LayerNorm(x + r)`` over the last axis (``r`` None: ``LayerNorm(x)``; ``w``/``b`` None: no affine
    part), float32, as a new array of ``x``'s shape."""
    shape = x.shape
    d = shape[-1]
    x2 = np.asarray(x, np.float32).reshape(-1, d)
    r2 = None if r is None else np.broadcast_to(np.asarray(r, np.float32), shape).reshape(-1, d)
    w = None if w is None else np.asarray(w, np.float32)
    b = None if b is None else np.asarray(b, np.float32)
    out = np.empty(x2.shape, np.float32)
    for i in range(0, x2.shape[0], max(1, CHUNK // d)):
        sl = slice(i, i + max(1, CHUNK // d))
        c = x2[sl].astype(np.float64) if r2 is None else x2[sl].astype(np.float64) + r2[sl]
        c -= c.mean(-1, keepdims=True)
        c /= np.sqrt((c * c).mean(-1, keepdims=True) + eps)
        o = out[sl]
        o[...] = c
        if w is not None:
            o *= w
        if b is not None:
            o += b
    return out.reshape(shape)


def softmax_args(s: np.ndarray, key_mask: np.ndarray) -> np.ndarray:
    """Check attention scores (C-contiguous float32, (B, heads, queries, keys)) and their key mask (B, keys);
    return the mask as a contiguous bool array (both backends' softmax start here)."""
    if s.dtype != np.float32 or not s.flags.c_contiguous or s.ndim != 4:
        raise ValueError("masked_softmax_ needs C-contiguous float32 scores (B, heads, queries, keys)")
    km = np.ascontiguousarray(key_mask, dtype=np.bool_)
    if km.shape != (s.shape[0], s.shape[3]):
        raise ValueError(f"key mask {km.shape} does not match scores {s.shape}")
    return km


def masked_softmax_(s: np.ndarray, key_mask: np.ndarray, causal: bool, scale: float) -> np.ndarray:
    """``softmax(scale * s)`` over the last axis of attention scores ``s`` (B, heads, queries, keys), in
    place, where key j is seen by query i when ``key_mask[b, j]`` and (``causal``) ``j <= i``; masked
    entries are 0, and a query that sees no key is all zeros."""
    km = softmax_args(s, key_mask)
    seen = km[:, None, None, :]
    if causal:
        seen = seen & np.tril(np.ones((s.shape[2], s.shape[3]), bool))[None, None]
    s *= np.float32(scale)
    np.copyto(s, np.float32(-np.inf), where=~seen)
    m = s.max(-1, keepdims=True)
    m[~np.isfinite(m)] = 0
    s -= m
    np.exp(s, out=s)
    tot = s.sum(-1, keepdims=True)
    np.divide(s, tot, out=s, where=tot > 0)
    return s
