"""The runtime's compiled operations behind one interface, whichever compiler built them.

The loops are numba functions (:mod:`binlab.runtime.kernels`: the XNOR-popcount W1A1 layer, the lookup-table
W1A32 product, tile decoding; :mod:`binlab.runtime.elementwise`: GELU, residual add with LayerNorm, the masked
softmax). A process gets them compiled in one of two ways:

- just in time by numba, at the first call (the ``numba`` backend of :mod:`binlab.runtime.standalone`, and the
  torch packed path): numba and its LLVM compiler live in the process;
- ahead of time, once per machine, into an extension module (:mod:`binlab.runtime.aot`, the ``aot``
  backend): the same loops as machine code, loaded with numpy alone in the process.

This module, numpy only, holds what both share: argument checks, allocation, and the choice between
kernels. Each function takes the set of kernels as its first argument, an object whose attributes are
named as in :data:`KERNELS`.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .bitpack import check_packed, levels, n_words
from .npops import softmax_args

#: the compiled loops a kernel set provides (the names the ahead-of-time module exports)
KERNELS = ("w1a1_linear", "binary_gemm_few_rows", "binary_gemm_many_rows", "unpack_rows",
           "gelu", "add_layer_norm", "softmax_shift", "normalize_rows")

LUT_GROUP = 16  # weight bytes per block: a block's tables (16 x 256 fp32 = 16 KiB) stay in L1


class LutWeights:
    """Packed 1-bit weights re-laid for :func:`binary_gemm`: bytes ``(blocks, N, LUT_GROUP)``, block
    ``b`` holding bytes ``b*G .. b*G+G-1`` of every row contiguously (zero bytes pad the last block;
    a zero byte reads ``lut[g, 0] = 0``). While one block's tables sit in L1, the kernel streams that
    block's bytes for all N rows; the plain (N, words) layout would re-read a 512 KiB table set per row
    at K = 4096, which does not fit L2. Same bits as the packed words, rearranged once at load time."""

    def __init__(self, Wp: np.ndarray, K: int):
        check_packed(Wp, "Wp")
        if n_words(K) != Wp.shape[1]:
            raise ValueError(f"weights were packed for {Wp.shape[1]} words, which does not match K={K}")
        N, nbytes = Wp.shape[0], 8 * Wp.shape[1]
        blocks = -(-nbytes // LUT_GROUP)
        b = np.zeros((N, blocks * LUT_GROUP), dtype=np.uint8)
        b[:, :nbytes] = Wp.view(np.uint8)  # byte g holds bits 8g .. 8g+7 (little-endian words)
        self.bytes = np.ascontiguousarray(b.reshape(N, blocks, LUT_GROUP).transpose(1, 0, 2))
        self.N, self.K = N, K

    @property
    def nbytes(self) -> int:
        return self.bytes.nbytes


def binary_gemm(k, threads: int, X: np.ndarray, W, K: int) -> np.ndarray:
    """``P[r, n] = sum_{k: bit(n, k) = 1} X[r, k]`` (see :func:`binlab.runtime.kernels.binary_gemm`) with
    the kernels of ``k`` on ``threads`` threads."""
    if not isinstance(W, LutWeights):
        W = LutWeights(W, K)
    if not isinstance(X, np.ndarray) or X.dtype != np.float32 or X.ndim != 2 or not X.flags.c_contiguous:
        raise ValueError(f"X must be a C-contiguous 2-D float32 array, got {getattr(X, 'dtype', type(X))} {getattr(X, 'shape', None)}")
    if X.shape[1] != K or W.K != K:
        raise ValueError(f"X has K={X.shape[1]}, the weights have K={W.K}; they must match (and match the K given, {K})")
    out = np.empty((X.shape[0], W.N), dtype=np.float32)
    if X.shape[0] < 4 * threads:
        k.binary_gemm_few_rows(X, W.bytes, out, np.int64(threads))
    else:
        k.binary_gemm_many_rows(X, W.bytes, out)
    return out


def w1a1_linear(k, X: np.ndarray, Wt: np.ndarray, lo, hi, bias: np.ndarray | None, K: int, scale: float | None = None) -> np.ndarray:
    """The W1A1 linear of :func:`binlab.runtime.kernels.w1a1_linear` with the kernels of ``k``."""
    check_packed(Wt, "Wt")
    if not isinstance(X, np.ndarray) or X.dtype != np.float32 or X.ndim != 2 or X.shape[1] != K or not X.flags.c_contiguous:
        raise ValueError(f"X must be a C-contiguous float32 (M, {K}) array, got {getattr(X, 'dtype', type(X))} {getattr(X, 'shape', None)}")
    if n_words(K) != Wt.shape[0]:
        raise ValueError(f"weights were packed for {Wt.shape[0]} words, which does not match K={K} (pass pack_bits(B).T)")
    N = Wt.shape[1]
    b32 = np.zeros(N, np.float32) if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    if b32.shape != (N,):
        raise ValueError(f"bias has shape {b32.shape}, the layer has {N} outputs")
    out = np.empty((X.shape[0], N), dtype=np.float32)
    k.w1a1_linear(X, Wt, levels(lo, N), levels(hi, N), b32, np.int64(K), np.float32(scale if scale is not None else -1.0), out)
    return out


def gelu_(k, x: np.ndarray) -> np.ndarray:
    """GELU of a C-contiguous float32 array, in place (returns it)."""
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        raise ValueError("gelu_ needs a C-contiguous float32 array")
    k.gelu(x.reshape(-1))
    return x


def add_layer_norm(k, x: np.ndarray, r: np.ndarray | None, w: np.ndarray | None, b: np.ndarray | None, eps: float) -> np.ndarray:
    """``LayerNorm(x + r)`` over the last axis (``r`` None: ``LayerNorm(x)``; ``w``/``b`` None: no affine
    part), float32, as a new array of ``x``'s shape."""
    shape = x.shape
    d = shape[-1]
    x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, d)
    # a contiguous residual (zeros when there is none: calloc's pages cost little) keeps the kernel's loop vectorized;
    # a broadcast one made the ahead-of-time kernel, compiled for any layout, 1.9x slower
    r2 = np.zeros(x2.shape, np.float32) if r is None else np.ascontiguousarray(np.broadcast_to(r, x.shape), dtype=np.float32).reshape(-1, d)
    w = np.ones(d, np.float32) if w is None else np.ascontiguousarray(w, dtype=np.float32)
    b = np.zeros(d, np.float32) if b is None else np.ascontiguousarray(b, dtype=np.float32)
    out = np.empty(x2.shape, np.float32)
    k.add_layer_norm(x2, r2, w, b, float(eps), out)
    return out.reshape(shape)


def masked_softmax_(k, s: np.ndarray, key_mask: np.ndarray, causal: bool, scale: float) -> np.ndarray:
    """``softmax(scale * s)`` over the last axis of attention scores ``s`` (B, heads, queries, keys), in
    place, where key j is seen by query i when ``key_mask[b, j]`` and (``causal``) ``j <= i``; masked
    entries are 0, and a query that sees no key is all zeros."""
    km = softmax_args(s, key_mask)
    k.softmax_shift(s, km, bool(causal), np.float32(scale))
    np.exp(s, out=s)  # numpy's float32 exp is SIMD; numba's calls libm once per element
    k.normalize_rows(s.reshape(-1, s.shape[3]))
    return s


def ops(k, threads=lambda: 1) -> SimpleNamespace:
    """The operations the torch-free runtime calls, bound to kernel set ``k``; ``threads()`` gives the
    threads the lookup-table product plans for (numba's setting on the ``numba`` backend; 1 ahead of time)."""
    return SimpleNamespace(
        kernels=k, LutWeights=LutWeights, w1a1_linear_kernel=k.w1a1_linear,
        binary_gemm=lambda X, W, K: binary_gemm(k, threads(), X, W, K),
        gelu_=lambda x: gelu_(k, x),
        add_layer_norm=lambda x, r, w, b, eps: add_layer_norm(k, x, r, w, b, eps),
        masked_softmax_=lambda s, key_mask, causal, scale: masked_softmax_(k, s, key_mask, causal, scale))


