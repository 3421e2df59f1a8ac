"""Packed forms of quantized weights: the codecs a packed file stores.

A quantized component's deployed value ``Q`` (what :meth:`binlab.methods.base.Quantizer.quantize`
returns, rows = output channels or vocabulary entries) is stored as one of these codecs; each
keeps exactly the numbers it needs to give ``Q`` back (to float32 rounding) and no latent weight:

- :class:`BinaryCodec`: one bit per weight and two levels per row or per tensor,
  ``Q_nk = lo_n + (hi_n - lo_n) b_nk``; symmetric levels (``lo = -hi``, sign with a scale) store
  one number. Optional factors cover OneBit (``Q = a_n s_nk c_k``: a per-row and a per-column
  value) and FBI-LLM (``Q = alpha_k s_nk + beta_k``, per-column scale and shift).
- :class:`GridCodec`: k-bit codes on an affine grid per tensor, row or group of columns,
  ``Q = step_g (code + offset_g)``, with the offset a single number (symmetric and mid-rise grids:
  TWN, BitNet b1.58, uniform) or an integer zero point per group (GPTQ's min-max grid: RTN, GPTQ).
- :class:`PlanesCodec`: a sum of binary planes with per-group scales,
  ``Q = sum_t scale_t,g P_t`` with P in {-1, +1} (BinaryBERT's two BWN halves) or {0, 1} (DB-LLM).
- the LLM-era methods' own layouts (PB-LLM's partial rows, BiLLM's and STBLLM's blocks) are in
  :mod:`binlab.runtime.layouts`, with the registry of every codec (``CODECS``).

Every codec counts its own payload bits (:meth:`Codec.bits`, the same kinds as
:meth:`~binlab.methods.base.Quantizer.storage`), so :func:`binlab.runtime.size.model_size` of a packed
model is the size of what the file holds. :mod:`binlab.runtime.encoders` turns a quantized component
into its codec; methods whose layout has no codec yet raise :class:`NotPackable` naming why
(:data:`NOT_PACKABLE`).
"""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from binlab.bits import FP_BITS

from .bitpack import dequant_rows, n_words, pack_bits


class NotPackable(ValueError):
    """This component's method has no packed layout (the message says why)."""


#: method name -> why binlab cannot write it packed; empty: every registered method has a codec (a method
#: added without one belongs here, with the reason, until it gets one)
NOT_PACKABLE: dict[str, str] = {}

TILE = 256  # output rows dequantized at a time for the dense GEMM (a 256 x 1536 fp32 tile is 1.5 MiB)


def as_numpy(t) -> np.ndarray:
    """A tensor or array as a numpy array (no copy where none is needed)."""
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)  # a torch tensor, without importing torch


def uint_bits(n_values: int) -> int:
    """Bits for codes 0 .. n_values - 1 (at least 1)."""
    return max(1, math.ceil(math.log2(max(n_values, 2))))


def pack_uint(values: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned ints (< 2**bits) -> a little-endian bit stream of ``bits`` bits each, as uint8."""
    v = np.asarray(values).astype(np.uint64).ravel()
    if v.size and int(v.max()) >= 2**bits:
        raise ValueError(f"a value {int(v.max())} does not fit {bits} bits")
    planes = ((v[:, None] >> np.arange(bits, dtype=np.uint64)[None]) & np.uint64(1)).astype(np.uint8)
    return np.packbits(planes.ravel(), bitorder="little")


def unpack_uint(stream: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_uint`: ``n`` values of ``bits`` bits (uint8 up to 8 bits, else int64)."""
    need = -(-n * bits // 8)
    if stream.dtype != np.uint8 or stream.ndim != 1 or stream.size != need:
        raise ValueError(f"a {bits}-bit stream of {n} values needs {need} bytes, got {stream.size}")
    planes = np.unpackbits(stream, bitorder="little")[: n * bits].reshape(n, bits)
    if bits <= 8:  # codes: stay in bytes (a large table unpacks without 8-byte temporaries)
        out = np.zeros(n, np.uint8)
        for b in range(bits):
            out |= planes[:, b] << np.uint8(b)
        return out
    return (planes.astype(np.int64) << np.arange(bits, dtype=np.int64)[None]).sum(1)


def same_rows(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float32 rounding of the decoding arithmetic, row by row (a row of tiny weights is
    held to its own scale, so a coarse shared grid cannot round it to zero unnoticed)."""
    a2, b2 = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    a2, b2 = a2.reshape(a2.shape[0] if a2.ndim == 2 else 1, -1), b2.reshape(b2.shape[0] if b2.ndim == 2 else 1, -1)
    if a2.shape != b2.shape:
        return False
    if a2.size == 0:
        return True
    tol = 1e-5 * np.maximum(np.abs(b2).max(1, keepdims=True), 1e-30)
    return bool((np.abs(a2 - b2) <= tol).all())


# --------------------------------------------------------------------------------------------
# codecs


class Codec:
    """A packed weight matrix (N, K): file tensors + JSON meta, row decoding, and its payload bits."""

    kind: ClassVar[str] = ""

    def __init__(self, shape: tuple[int, int], meta: dict, tensors: dict[str, np.ndarray]):
        self.shape = (int(shape[0]), int(shape[1]))
        self.meta = dict(meta)
        self.t = dict(tensors)
        self.check()

    def check(self) -> None:
        """Raise ValueError if the tensors do not fit the shape (a file that was altered)."""

    def _need(self, name: str, shape: tuple, dtype) -> np.ndarray:
        a = self.t.get(name)
        if a is None:
            raise ValueError(f"{self.kind} codec: tensor {name!r} is missing")
        if a.shape != tuple(shape) or a.dtype != np.dtype(dtype):
            raise ValueError(f"{self.kind} codec: tensor {name!r} is {a.dtype} {a.shape}, expected {np.dtype(dtype)} {tuple(shape)}")
        return a

    def rows(self, idx) -> np.ndarray:
        """Float32 rows ``idx`` (slice or int array) of Q."""
        raise NotImplementedError

    def _select(self, idx) -> np.ndarray:
        """The row indices ``idx`` (a slice or an int array) stands for."""
        return idx if isinstance(idx, np.ndarray) else np.arange(*idx.indices(self.shape[0]))

    def bits(self) -> dict[str, int]:
        """Payload bits by kind (codes, scales, index, zeros ...)."""
        raise NotImplementedError

    def dense(self) -> np.ndarray:
        return self.rows(slice(0, self.shape[0]))


def _levels(v: np.ndarray, N: int) -> np.ndarray:
    """A per-row (N,) or per-tensor (1,) level vector as (N,) (a writable copy)."""
    return np.array(np.broadcast_to(v.astype(np.float32), (N,)))


class BinaryCodec(Codec):
    """One bit per weight (bit set: the row's ``hi``), ``words`` (N, ceil(K/64)) uint64; levels
    ``scale`` (``lo = -hi = -scale``) or ``lo``/``hi``, per row (N,) or per tensor (1,); optional
    ``row_factor`` (N,), ``col_factor`` (K,) and ``col_shift`` (K,):
    ``Q_nk = row_factor_n (lo_n + (hi_n - lo_n) b_nk) col_factor_k + col_shift_k``."""

    kind = "binary"
    EXTRAS = ("row_factor", "col_factor", "col_shift")

    def check(self):
        N, K = self.shape
        self.words = self._need("words", (N, n_words(K)), np.uint64)
        if self.meta.get("symmetric"):
            s = self.t.get("scale", np.ones(1, np.float32) if self.meta.get("unit") else None)
            if s is None or s.dtype != np.float32 or s.shape not in ((N,), (1,)):
                raise ValueError("binary codec: 'scale' must be float32 of shape (N,) or (1,)")
            self.hi = np.ascontiguousarray(_levels(s, N))
            self.lo = -self.hi
        else:
            lo, hi = self.t.get("lo"), self.t.get("hi")
            if lo is None or hi is None or lo.shape != hi.shape or lo.shape not in ((N,), (1,)) or lo.dtype != np.float32:
                raise ValueError("binary codec: 'lo' and 'hi' must be float32 of shape (N,) or (1,)")
            self.lo, self.hi = np.ascontiguousarray(_levels(lo, N)), np.ascontiguousarray(_levels(hi, N))
        for name, n in zip(self.EXTRAS, (N, K, K)):
            if name in self.t:
                self._need(name, (n,), np.float32)
        pad = n_words(K) * 64 - K
        if pad and N and (self.words[:, -1] >> np.uint64(64 - pad)).any():
            raise ValueError("binary codec: padding bits are set (the file was altered)")

    @property
    def plain(self) -> bool:
        """No factors: the layer the fused kernels compute."""
        return not any(n in self.t for n in self.EXTRAS)

    def rows(self, idx):
        N, K = self.shape
        sel = self._select(idx)
        if isinstance(idx, slice) and (idx.step in (None, 1)):
            out = dequant_rows(self.words, self.lo, self.hi, K, sel[0] if len(sel) else 0, (sel[-1] + 1) if len(sel) else 0)
        else:
            out = dequant_rows(self.words[sel], self.lo[sel], self.hi[sel], K, 0, len(sel))
        if "row_factor" in self.t:
            out *= self.t["row_factor"][sel][:, None]
        if "col_factor" in self.t:
            out *= self.t["col_factor"][None]
        if "col_shift" in self.t:
            out += self.t["col_shift"][None]
        return out

    def bits(self):
        N, K = self.shape
        levels = sum(self.t[n].size for n in ("scale", "lo", "hi") if n in self.t)
        extras = sum(self.t[n].size for n in self.EXTRAS if n in self.t)
        return {"codes": N * K, "scales": FP_BITS * (levels + extras)}

    @classmethod
    def detect(cls, q: np.ndarray) -> "BinaryCodec | None":
        """The binary form of Q if every row takes at most two values (levels shared by all rows
        stored once)."""
        N, K = q.shape
        s = np.abs(q).max(1)
        if np.array_equal(np.abs(q), np.broadcast_to(s[:, None], q.shape)):
            bits = q >= 0
            words = pack_bits(np.where(bits, 1.0, -1.0))
            if np.all(s == 1.0):  # plain sign: no scale at all
                return cls((N, K), {"symmetric": True, "unit": True}, {"words": words})
            scale = s[:1] if np.all(s == s[0]) else s
            return cls((N, K), {"symmetric": True}, {"words": words, "scale": scale.astype(np.float32)})
        vals = np.unique(q)
        if len(vals) <= 2:  # two levels for the whole tensor (a per-tensor method): stored once
            lo_t, hi_t = vals[0], vals[-1]
            return cls((N, K), {"symmetric": False}, {"words": pack_bits(np.where(q == hi_t, 1.0, -1.0)),
                                                       "lo": np.array([lo_t], np.float32), "hi": np.array([hi_t], np.float32)})
        lo, hi = q.min(1), q.max(1)
        bits = q == hi[:, None]
        if not np.array_equal(np.where(bits, hi[:, None], lo[:, None]), q):
            return None
        shared = np.all(lo == lo[0]) and np.all(hi == hi[0])
        lo, hi = (lo[:1], hi[:1]) if shared else (lo, hi)
        return cls((N, K), {"symmetric": False}, {"words": pack_bits(np.where(bits, 1.0, -1.0)), "lo": lo.astype(np.float32),
                                                   "hi": hi.astype(np.float32)})


def _grid_step(gaps: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Per group (last axis: the gaps between sorted values, 0 = none), the largest step of which
    every gap is a whole multiple: the smallest gap divided by the first t in 1..32 that makes all
    gaps whole multiples of it; (..., 1), 0 where a group has no gap, NaN where no t works. A group
    of few values on a fine grid (32 weights on 256 levels) rarely has two neighbours one step
    apart, so the smallest gap alone would overestimate the step."""
    live = gaps > 0
    smallest = np.min(np.where(live, gaps, np.inf), axis=-1, keepdims=True)
    best = np.where(np.isfinite(smallest), np.nan, 0.0)
    for t in range(1, 33):
        c = smallest / t
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.abs(gaps / c - np.round(gaps / c)) * c
        ok = np.all(~live | (r <= tol), axis=-1, keepdims=True)
        best = np.where(np.isnan(best) & ok, c, best)
    return best


def _groups_of(K: int, g: int) -> int:
    return -(-K // g)


def _grouped(q: np.ndarray, g: int) -> np.ndarray:
    """(N, K) -> (N, groups, g), padded with NaN."""
    N, K = q.shape
    G = _groups_of(K, g)
    out = np.full((N, G * g), np.nan, dtype=np.float64)
    out[:, :K] = q
    return out.reshape(N, G, g)


class GridCodec(Codec):
    """k-bit ``codes`` (a packed stream of N*K values) on the grid ``Q = step_g (code + offset_g)``;
    groups: the tensor (``group = 0``, one step), rows (``group = K``) or ``group`` columns of a
    row. ``offset``: one float32 for all groups, or per group ``-zero_g`` with integer ``zeros``
    (``zero_bits`` bits each, packed), or per group a float32 (``offsets``: any grid, the fallback)."""

    kind = "grid"

    def check(self):
        N, K = self.shape
        k, g = int(self.meta["bits"]), int(self.meta["group"])
        if not 1 <= k <= 8 or g < 0 or g > K:
            raise ValueError(f"grid codec: bits {k} or group {g} out of range")
        n_groups = 1 if g == 0 else N * _groups_of(K, g)
        self.n_groups = n_groups
        self.step = self._need("step", (n_groups,), np.float32)
        if "offsets" in self.t:
            self._need("offsets", (n_groups,), np.float32)
        elif "zeros" in self.t:
            zb = int(self.meta.get("zero_bits", 0))
            if not 1 <= zb <= 8:
                raise ValueError(f"grid codec: zero_bits {zb} out of range")
            self.zeros = unpack_uint(self._need("zeros", (-(-n_groups * zb // 8),), np.uint8), zb, n_groups)
        else:
            self._need("offset", (1,), np.float32)
        codes = self.t.get("codes")
        if codes is None or codes.dtype != np.uint8 or codes.size != -(-N * K * k // 8):
            raise ValueError("grid codec: 'codes' has the wrong size for its shape and bits")
        self.codes = unpack_uint(codes, k, N * K).astype(np.uint8).reshape(N, K)

    def _per_element(self, v: np.ndarray, sel: np.ndarray) -> np.ndarray:
        N, K = self.shape
        g = int(self.meta["group"])
        if g == 0:
            return np.broadcast_to(v[:1].astype(np.float32)[None], (len(sel), K))
        G = _groups_of(K, g)
        return np.repeat(v.reshape(N, G)[sel], g, axis=1)[:, :K].astype(np.float32)

    def rows(self, idx):
        N, K = self.shape
        sel = self._select(idx)
        codes = self.codes[sel].astype(np.float32)
        if "offsets" in self.t:
            off = self._per_element(self.t["offsets"], sel)
        else:
            off = -self._per_element(self.zeros, sel) if "zeros" in self.t else self.t["offset"][0]
        return np.ascontiguousarray(self._per_element(self.step, sel) * (codes + off), dtype=np.float32)

    def bits(self):
        N, K = self.shape
        k = int(self.meta["bits"])
        out = {"codes": k * N * K, "scales": FP_BITS * self.n_groups}
        if "offsets" in self.t:
            out["zeros"] = FP_BITS * self.n_groups
        else:
            out["zeros"] = int(self.meta["zero_bits"]) * self.n_groups if "zeros" in self.t else FP_BITS
        return out

    @classmethod
    def detect(cls, q: np.ndarray, groups: list[int]) -> "GridCodec | None":
        """Try each grouping (0: tensor, K: rows, g: groups of g columns) and each offset form, and
        return the smallest grid of at most 8 bits that gives Q back."""
        found = [c for g in groups for c in cls._try(q, g)]
        return min(found, key=lambda c: sum(c.bits().values())) if found else None

    @classmethod
    def _try(cls, q: np.ndarray, g: int) -> list["GridCodec"]:
        N, K = q.shape
        x = q.reshape(1, 1, -1).astype(np.float64) if g == 0 else _grouped(q, g)
        srt = np.sort(x, axis=2)  # NaN padding sorts last
        gaps = np.diff(srt, axis=2)
        scale = np.nanmax(np.abs(x), axis=2, keepdims=True)
        tol = 1e-6 * np.maximum(scale, 1e-30)
        step0 = _grid_step(np.where(gaps > tol, gaps, 0.0), 100 * tol)  # the grid step: gcd of the gaps between distinct values
        if np.isnan(step0).any():
            return []
        lo, hi = np.nanmin(x, axis=2, keepdims=True), np.nanmax(x, axis=2, keepdims=True)
        const = ~(step0 > 0)
        step0 = np.where(const, np.inf, step0)
        step0 = np.where(const, np.maximum(np.abs(lo), 1e-30), step0)
        n = np.round((hi - lo) / step0)
        step = np.where(n > 0, (hi - lo) / np.maximum(n, 1), step0)
        with np.errstate(invalid="ignore"):
            phase = lo / step - np.floor(lo / step + 1e-6)  # lo = step (m_lo + phase), phase in [0, 1)
        ok = np.isfinite(x)
        phase_common = float(np.median(phase[~const])) if (~const).any() else 0.0
        out = []
        for variant in ("offset", "zeros", "offsets"):
            if variant == "offset":
                with np.errstate(invalid="ignore"):
                    m = np.round(x / step - phase_common)
                if not same_rows(np.where(ok, step * (m + phase_common), 0), np.where(ok, x, 0)):
                    continue
                Z = -np.nanmin(m)
                codes = m + Z
                k = uint_bits(int(np.nanmax(codes)) + 1)
                if k > 8:
                    continue
                extra = {"offset": np.array([phase_common - Z], np.float32)}
            elif variant == "offsets":  # any grid: each group's own float offset (lo = step * offset)
                with np.errstate(invalid="ignore"):
                    codes = np.round((x - lo) / step)
                k = uint_bits(int(np.nanmax(codes)) + 1)
                if k > 8:
                    continue
                extra = {"offsets": (lo / step).reshape(-1).astype(np.float32)}
            else:
                with np.errstate(invalid="ignore"):
                    m = np.round((x - lo) / step)
                zero = -np.round(lo / step)
                if not (same_rows(np.where(ok, step * (m - zero), 0), np.where(ok, x, 0)) and (zero >= 0).all() and (zero <= 255).all()):
                    continue
                codes = m
                k = uint_bits(int(np.nanmax(codes)) + 1)
                if k > 8:
                    continue
                zb = uint_bits(int(zero.max()) + 1)
                extra = {"zeros": pack_uint(zero.reshape(-1).astype(np.int64), zb)}
            flat = codes.reshape(N, -1)[:, :K] if g else codes.reshape(N, K)
            meta = {"bits": k, "group": g} | ({"zero_bits": zb} if variant == "zeros" else {})
            t = {"codes": pack_uint(flat.astype(np.int64), k), "step": step.reshape(-1).astype(np.float32), **extra}
            codec = cls((N, K), meta, t)
            if same_rows(codec.dense(), q):
                out.append(codec)
        return out


class PlanesCodec(Codec):
    """``Q = sum_t scale_t P_t``: ``planes`` binary planes (``words_0``, ``words_1`` ...: (N,
    ceil(K/64)) uint64), values {-1, +1} (``signed``) or {0, 1}, with ``scale_t`` per group (tensor:
    ``group = 0``; rows: ``group = K``; or ``group`` columns of a row)."""

    kind = "planes"

    def check(self):
        N, K = self.shape
        g = int(self.meta["group"])
        if not isinstance(self.meta.get("signed"), bool) or not 1 <= int(self.meta["planes"]) <= 8 or not 0 <= g <= K:
            raise ValueError("planes codec: 'signed' must be true or false, 'planes' in 1..8 and 'group' in [0, K]")
        self.n_groups = 1 if g == 0 else N * _groups_of(K, g)
        self.planes = [self._need(f"words_{t}", (N, n_words(K)), np.uint64) for t in range(int(self.meta["planes"]))]
        self.scales = [self._need(f"scale_{t}", (self.n_groups,), np.float32) for t in range(len(self.planes))]

    def rows(self, idx):
        N, K = self.shape
        sel = self._select(idx)
        g = int(self.meta["group"])
        out = np.zeros((len(sel), K), np.float32)
        one = np.ones(len(sel), np.float32)
        lo = -one if self.meta["signed"] else 0 * one
        for words, s in zip(self.planes, self.scales):
            p = dequant_rows(words[sel], lo, one, K, 0, len(sel))
            se = s[0] if g == 0 else np.repeat(s.reshape(N, -1)[sel], g, axis=1)[:, :K]
            out += se * p
        return out

    def bits(self):
        N, K = self.shape
        return {"codes": len(self.planes) * N * K, "scales": FP_BITS * self.n_groups * len(self.planes)}

    @classmethod
    def build(cls, planes: list[np.ndarray], scales: list[np.ndarray], signed: bool, group: int) -> "PlanesCodec":
        N, K = planes[0].shape
        t = {}
        for i, (p, s) in enumerate(zip(planes, scales)):
            t[f"words_{i}"] = pack_bits(np.where(p > 0, 1.0, -1.0))
            t[f"scale_{i}"] = np.asarray(s, np.float32).reshape(-1)
        return cls((N, K), {"planes": len(planes), "signed": signed, "group": group}, t)
