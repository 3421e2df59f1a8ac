"""Bit packing in numpy alone: what reading, writing and decoding a packed file needs, without numba.

Packing: a ±1 (or {0,1}) matrix (M, K) becomes uint64 words (M, ceil(K/64)), bit ``k % 64`` of
word ``k // 64`` set where the value is +1 (``x >= 0``; sign(0) = +1) or non-zero for {0,1}.
Padding bits are 0 in every operand, so they never contribute.

The kernels that compute on packed words (XNOR-popcount, lookup tables) are numba's, in
:mod:`binlab.runtime.kernels`; this module keeps the codecs and the numpy backend of the torch-free
runtime (:func:`binlab.runtime.standalone.load` with ``backend="numpy"``) free of numba, whose compiler
alone takes about 125 MiB of a process.
"""
from __future__ import annotations

import sys

import numpy as np

WORD = 64


def n_words(K: int) -> int:
    return (K + WORD - 1) // WORD


def pack_bits(x, signed: bool = True) -> np.ndarray:
    """Pack a 2-D array along its last axis into uint64 words (see the module docstring for the bit rule)."""
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)  # a torch tensor, without importing torch
    if a.ndim != 2:
        raise ValueError(f"pack_bits needs a 2-D array (rows, K), got shape {a.shape}")
    if a.shape[1] == 0:
        raise ValueError("pack_bits needs K >= 1")
    bits = (a >= 0) if signed else (a != 0)
    M, K = bits.shape
    W = n_words(K)
    padded = np.zeros((M, W * WORD), dtype=bool)
    padded[:, :K] = bits
    return np.ascontiguousarray(np.packbits(padded, axis=1, bitorder="little").view("<u8").reshape(M, W))


def unpack_bits(packed: np.ndarray, K: int, signed: bool = True) -> np.ndarray:
    """Inverse of :func:`pack_bits`: float32 ±1 (signed) or {0, 1}, shape (rows, K)."""
    check_packed(packed, "packed")
    if not 1 <= K <= packed.shape[1] * WORD:
        raise ValueError(f"K={K} does not fit {packed.shape[1]} words")
    bits = np.unpackbits(packed.view(np.uint8).reshape(packed.shape[0], -1), axis=1, bitorder="little")[:, :K].astype(np.float32)
    return 2 * bits - 1 if signed else bits


def check_packed(a, name):
    if not isinstance(a, np.ndarray) or a.dtype != np.uint64 or a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D numpy uint64 array from pack_bits, got {type(a).__name__} "
                         f"{getattr(a, 'dtype', None)} {getattr(a, 'shape', None)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")


def levels(v, N: int) -> np.ndarray:
    """Per-row levels (a scalar or N values) as a contiguous float32 array of N."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(v, np.float32), (N,)))


def dequant_rows(Wp: np.ndarray, lo: np.ndarray, hi: np.ndarray, K: int, n0: int, n1: int) -> np.ndarray:
    """Float32 weights of rows n0 .. n1, ``lo + (hi - lo) B`` from packed bits B and per-row levels (a tile,
    not the matrix). The compiled one once the ``aot`` backend has loaded it (:func:`use_unpack_kernel`), else
    numba's parallel loop when :mod:`binlab.runtime.kernels` is loaded in this process (the torch paths and the
    numba backend), else numpy's ``unpackbits``: the same float32 values. The compiled kernel goes first: a
    process that builds the kernels also imports numba's, whose parallel loop on numba's default threads then
    competed with numpy's BLAS threads for the two cores and made every tile wait."""
    check_packed(Wp, "Wp")
    N = Wp.shape[0]
    if not (0 <= n0 <= n1 <= N) or n_words(K) != Wp.shape[1]:
        raise ValueError(f"rows {n0}..{n1} or K={K} do not fit packed weights of shape {Wp.shape}")
    lo32, hi32 = levels(lo, N), levels(hi, N)
    kernel = _UNPACK_KERNEL[0]
    if kernel is None:
        kernels = sys.modules.get("binlab.runtime.kernels")
        kernel = kernels._unpack_rows_kernel if kernels is not None else None
    if kernel is not None:
        out = np.empty((n1 - n0, K), dtype=np.float32)
        kernel(Wp, lo32, hi32, np.int64(K), np.int64(n0), out)
        return out
    bits = np.unpackbits(Wp[n0:n1].view(np.uint8).reshape(n1 - n0, -1), axis=1, bitorder="little")[:, :K].astype(bool)
    return np.where(bits, hi32[n0:n1, None], lo32[n0:n1, None])


_UNPACK_KERNEL = [None]


def use_unpack_kernel(kernel) -> None:
    """Decode tiles with ``kernel`` (the ahead-of-time compiled ``unpack_rows``: :mod:`binlab.runtime.aot`)
    where numba's is not loaded."""
    _UNPACK_KERNEL[0] = kernel
