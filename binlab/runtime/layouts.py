"""The LLM-era methods' packed layouts (see :mod:`binlab.runtime.codecs` for the shared ones), and
the registry of every codec a packed file may name (:data:`CODECS`).

- :class:`PartialCodec`: PB-LLM's partially binarized rows: the binarized weights' signs plus the
  salient weights' positions (CSR, column indices in ceil(log2 K) bits) and their 8-bit codes on
  a per-row min-max grid.
- :class:`BlocksCodec`: BiLLM's (and OAC's) blocks of columns: a salient column bitmap, a sign
  plane, a second plane over the salient weights, a concentrated/sparse bitmap and four scales per
  row per block.
- :class:`ARBBlocksCodec`: ARB-LLM's: BiLLM's blocks with the column-group bitmap and each group's
  mean and scales (ARB, ARB-X) or row and column scale vectors (ARB-RC).
- :class:`MoSCodec`: BinaryMoS's token-adaptive layer: the sign plane, the scale experts and the router
  (the layer is computed per token by the modules that run it, :meth:`MoSCodec.scales`).
- :class:`NMBlocksCodec`: STBLLM's: the N:M positions (one combination index per group of M), the
  signs of the kept weights, a second sign per kept salient weight, the salient column bitmap, the
  group of each other kept weight (three groups, five to a byte) and five scales per row per block.
"""
from __future__ import annotations

import math

import numpy as np

from binlab.bits import FP_BITS

from .bitpack import n_words, pack_bits, unpack_bits
from .codecs import BinaryCodec, Codec, GridCodec, PlanesCodec, uint_bits, unpack_uint


class PartialCodec(Codec):
    """PB-LLM's rows: the signs of the *binarized* weights only (``signs``: one bit each, row-major,
    packed 8 per byte; bit set: +1) with a scale per row (``scale``); the salient ones by CSR
    (``rowptr`` int32 (N+1), ``cols`` packed at ceil(log2 K) bits) or by a bitmap (``mask``,
    (N, ceil(K/64)) uint64), whichever is smaller (PB-LLM's count), with ``codes`` (uint8, one per
    salient weight, row-major order) on the row's grid ``step_n (code - zero_n)``. Reading the file
    rebuilds a dense sign plane in memory (the salient positions +1, overwritten by their codes)."""

    kind = "partial"

    def check(self):
        N, K = self.shape
        if "mask" in self.t:
            sal = unpack_bits(self._need("mask", (N, n_words(K)), np.uint64), K, signed=False).astype(bool)
            self.rowptr = np.concatenate([[0], np.cumsum(sal.sum(1))]).astype(np.int64)
            self.cols = np.nonzero(sal)[1]
        else:
            rp = self._need("rowptr", (N + 1,), np.int32)
            if rp[0] != 0 or (np.diff(rp) < 0).any() or int(rp[-1]) > N * K:
                raise ValueError("partial codec: 'rowptr' is not a valid CSR row pointer")
            self.rowptr = rp.astype(np.int64)
            cb = uint_bits(K)
            self.cols = unpack_uint(self._need("cols", (-(-int(rp[-1]) * cb // 8),), np.uint8), cb, int(rp[-1]))
            if self.cols.size and self.cols.max() >= K:
                raise ValueError("partial codec: a salient column index is out of range")
        nnz = int(self.rowptr[-1])
        self.codes = self._need("codes", (nnz,), np.uint8)
        self.step = self._need("step", (N,), np.float32)
        self.zero = self._need("zeros", (N,), np.uint8)
        n_bin = N * K - nnz
        bits = np.unpackbits(self._need("signs", (-(-n_bin // 8),), np.uint8), count=n_bin).astype(bool)
        sal = np.zeros((N, K), dtype=bool)
        sal[np.repeat(np.arange(N), np.diff(self.rowptr)), self.cols] = True
        plane = np.ones((N, K))
        plane[~sal] = np.where(bits, 1.0, -1.0)
        self.binary = BinaryCodec((N, K), {"symmetric": True}, {"words": pack_bits(plane), "scale": self.t.get("scale")})

    def rows(self, idx):
        N, K = self.shape
        sel = self._select(idx)
        out = self.binary.rows(sel)
        rp = self.rowptr
        for i, n in enumerate(sel):
            a, b = rp[n], rp[n + 1]
            if b > a:
                out[i, self.cols[a:b]] = self.step[n] * (self.codes[a:b].astype(np.float32) - np.float32(self.zero[n]))
        return out

    def bits(self):
        N, K = self.shape
        nnz = int(self.rowptr[-1])
        index = N * K if "mask" in self.t else nnz * uint_bits(K) + 32 * (N + 1)
        return {"codes": N * K - nnz + 8 * nnz, "index": index,
                "scales": FP_BITS * (2 * N), "zeros": 8 * N}


def block_widths(meta: dict, K: int, kind: str) -> list[int]:
    """``meta["blocks"]``: each block's column count, positive, adding up to K (else a ValueError naming ``kind``)."""
    widths = meta.get("blocks")
    if not isinstance(widths, list) or not widths or any(not isinstance(c, int) or c < 1 for c in widths) or sum(widths) != K:
        raise ValueError(f"{kind} codec: meta 'blocks' must list positive block widths that add up to K")
    return widths


class BlocksCodec(Codec):
    """BiLLM's layout (and OAC's, which uses BiLLM's quantizer), block by block of input columns: a
    salient column bitmap (``salient``, K bits), one sign bit per weight (``signs``, (N, ceil(K/64))
    uint64), a second sign bit per salient weight (``signs2``, (N, words of the salient columns)), a
    concentrated/sparse bit per other weight (``concentrated``, (N, words of the other columns)) and
    four float32 scales per row per block (``scales``, (blocks, N, 4))::

        salient:       a1 s + a2 s2      concentrated: a3 s      sparse: a4 s

    ``meta["blocks"]`` lists each block's column count. Stored exactly as BiLLM's ``storage()`` counts."""

    kind = "blocks"

    def check(self):
        N, K = self.shape
        self.widths = widths = block_widths(self.meta, K, self.kind)
        sal = np.unpackbits(self._need("salient", (-(-K // 8),), np.uint8), count=K).astype(bool)
        self.sal = sal
        S = int(sal.sum())
        self.s1 = self._need("signs", (N, n_words(K)), np.uint64)
        self.s2 = self._need("signs2", (N, n_words(max(S, 1))), np.uint64)
        self.conc = self._need("concentrated", (N, n_words(max(K - S, 1))), np.uint64)
        self.scales = self._need("scales", (len(widths), N, 4), np.float32)

    def rows(self, idx):
        N, K = self.shape
        sel = self._select(idx)
        R = len(sel)
        s1 = unpack_bits(self.s1[sel], K) if R else np.zeros((0, K), np.float32)
        S = int(self.sal.sum())
        s2 = np.zeros((R, K), np.float32)
        conc = np.zeros((R, K), bool)
        if R and S:
            s2[:, self.sal] = unpack_bits(self.s2[sel], S)
        if R and K - S:
            conc[:, ~self.sal] = unpack_bits(self.conc[sel], K - S, signed=False).astype(bool)
        out = np.zeros((R, K), np.float32)
        c0 = 0
        for b, c in enumerate(self.widths):
            a = self.scales[b][sel]  # (R, 4)
            blk = slice(c0, c0 + c)
            sal = self.sal[blk][None, :]
            v = np.where(sal, a[:, 0:1] * s1[:, blk] + a[:, 1:2] * s2[:, blk],
                         np.where(conc[:, blk], a[:, 2:3], a[:, 3:4]) * s1[:, blk])
            out[:, blk] = v
            c0 += c
        return out

    def bits(self):
        N, K = self.shape
        S = int(self.sal.sum())
        return {"codes": N * K + N * S, "index": K + N * (K - S), "scales": FP_BITS * 4 * N * len(self.widths)}


def comb_rank(mask: np.ndarray) -> np.ndarray:
    """Each row's set of positions (a boolean row of length L with k set) as its index among the
    C(L, k) k-subsets (the combinatorial number system: ``sum_i C(c_i, i)`` over the sorted positions)."""
    before = np.cumsum(mask, 1) - mask
    table = np.array([[math.comb(j, i) for i in range(mask.shape[1] + 2)] for j in range(mask.shape[1])], dtype=np.int64)
    return np.where(mask, table[np.arange(mask.shape[1])[None, :], before + 1], 0).sum(1)


def comb_unrank(ranks: np.ndarray, L: int, k: int) -> np.ndarray:
    """Inverse of :func:`comb_rank` for rows of length ``L`` with ``k`` positions set."""
    r = ranks.astype(np.int64).copy()
    out = np.zeros((len(r), L), dtype=bool)
    for i in range(k, 0, -1):
        col = np.array([math.comb(j, i) for j in range(L)], dtype=np.int64)
        j = (col[None, :] <= r[:, None]).sum(1) - 1
        out[np.arange(len(r)), j] = True
        r -= col[j]
    return out


def nm_layout(K: int, n: int, m: int) -> list[tuple[int, int, int]]:
    """The groups of one row: ``(first column, width, kept)`` (a trailing partial group keeps ``round(n / m * width)``)."""
    out = [(c, m, n) for c in range(0, K - K % m, m)]
    if K % m:
        out.append((K - K % m, K % m, int(round(n / m * (K % m)))))
    return out


class NMBlocksCodec(Codec):
    """STBLLM's layout. ``meta``: ``n``, ``m``, ``blocks`` (each block's column count). Tensors:
    ``patterns`` (one ``ceil(log2 C(m, n))``-bit combination index per row and group of M columns),
    ``salient`` (K column bits), ``signs`` (one bit per kept weight, row-major), ``signs2`` (one per
    kept salient weight), ``groups`` (each kept non-salient weight's group, base 3, five per byte) and
    ``scales`` ((blocks, N, 5) float32: two for the salient weights' residual pair, one per group)::

        kept salient: a1 s + a2 s2      kept, group g: a_g s      pruned: 0

    Reading the file rebuilds the dense masks and planes in memory."""

    kind = "nm-blocks"

    def check(self):
        N, K = self.shape
        n, m = self.meta.get("n"), self.meta.get("m")
        if not (isinstance(m, int) and m >= 2 and isinstance(n, int) and 1 <= n <= m):
            raise ValueError("nm-blocks codec: meta 'n' and 'm' must be whole numbers with 1 <= n <= m")
        widths = block_widths(self.meta, K, self.kind)
        self.n, self.m, self.widths = n, m, widths
        groups = nm_layout(K, n, m)
        pbits = max(1, math.ceil(math.log2(math.comb(m, n)))) if math.comb(m, n) > 1 else 0
        self.pbits = pbits
        keep = np.ones((N, K), dtype=bool)
        if pbits:
            ranks = unpack_uint(self._need("patterns", (-(-N * len(groups) * pbits // 8),), np.uint8), pbits, N * len(groups))
            ranks = ranks.reshape(N, len(groups))
            for gi, (c0, width, kept) in enumerate(groups):
                if ranks[:, gi].max(initial=0) >= math.comb(width, kept):
                    raise ValueError("nm-blocks codec: a pattern index is out of range")
                keep[:, c0:c0 + width] = comb_unrank(ranks[:, gi], width, kept)
        self.keep = keep
        self.sal = np.unpackbits(self._need("salient", (-(-K // 8),), np.uint8), count=K).astype(bool)
        kept_n = int(keep.sum())
        salkeep = keep & self.sal[None, :]
        n2, nrest = int(salkeep.sum()), kept_n - int(salkeep.sum())
        s1 = np.unpackbits(self._need("signs", (-(-kept_n // 8),), np.uint8), count=kept_n)
        s2 = np.unpackbits(self._need("signs2", (-(-n2 // 8),), np.uint8), count=n2)
        g = self._need("groups", (-(-nrest // 5),), np.uint8)
        if (g >= 243).any():
            raise ValueError("nm-blocks codec: a group byte is out of range")
        digits = (g[:, None].astype(np.int64) // (3 ** np.arange(5))[None, :]) % 3
        self.s1 = np.zeros((N, K), np.float32)
        self.s1[keep] = np.where(s1, 1.0, -1.0)
        self.s2 = np.zeros((N, K), np.float32)
        self.s2[salkeep] = np.where(s2, 1.0, -1.0)
        self.group = np.zeros((N, K), np.int8)
        self.group[keep & ~self.sal[None, :]] = digits.ravel()[:nrest]
        self.scales = self._need("scales", (len(widths), N, 5), np.float32)
        self.counts = (kept_n, n2, nrest, len(groups))

    def rows(self, idx):
        N, K = self.shape
        sel = self._select(idx)
        out = np.zeros((len(sel), K), np.float32)
        c0 = 0
        for b, c in enumerate(self.widths):
            blk = slice(c0, c0 + c)
            a = self.scales[b][sel]  # (R, 5)
            s1, s2, grp, keep = self.s1[sel, blk], self.s2[sel, blk], self.group[sel, blk], self.keep[sel, blk]
            ag = np.take_along_axis(a[:, 2:5], grp.astype(np.int64), 1) if c else a[:, 2:3]
            v = np.where(self.sal[blk][None, :], a[:, 0:1] * s1 + a[:, 1:2] * s2, ag * s1)
            out[:, blk] = np.where(keep, v, 0.0)
            c0 += c
        return out

    def bits(self):
        N, K = self.shape
        kept_n, n2, nrest, groups = self.counts
        return {"codes": kept_n + n2, "index": N * groups * self.pbits + K + 8 * math.ceil(nrest / 5),
                "scales": 5 * N * FP_BITS * len(self.widths)}


class ARBBlocksCodec(Codec):
    """ARB-LLM's layout, block by block: BiLLM's salient column bitmap (``salient``), one sign bit per
    weight (``signs``), a second per salient weight (``signs2``), the column-group bit of each salient
    weight (``cgb``: the high or the low part of the salient columns), the concentrated/sparse bit of
    each other weight (``concentrated``), and the fits of the four groups (high and low salient: order
    2; concentrated and sparse: order 1). ARB and ARB-X (``meta["rc"]`` false): ``scales``
    (blocks, N, 10) = per group ``mu, a1[, a2]``, the value ``mu + a1 s + a2 s2``. ARB-RC: ``row``
    (blocks, N, 6) and ``col`` (6, K), one row and one column vector per term, the value
    ``sum_t row_t col_t s_t``."""

    kind = "arb-blocks"

    def check(self):
        N, K = self.shape
        self.widths, self.rc = block_widths(self.meta, K, self.kind), bool(self.meta.get("rc"))
        self.sal = np.unpackbits(self._need("salient", (-(-K // 8),), np.uint8), count=K).astype(bool)
        S = int(self.sal.sum())
        self.s1 = self._need("signs", (N, n_words(K)), np.uint64)
        self.s2 = self._need("signs2", (N, n_words(max(S, 1))), np.uint64)
        self.cgb = self._need("cgb", (N, n_words(max(S, 1))), np.uint64)
        self.conc = self._need("concentrated", (N, n_words(max(K - S, 1))), np.uint64)
        if self.rc:
            self.row = self._need("row", (len(self.widths), N, 6), np.float32)
            self.col = self._need("col", (6, K), np.float32)
        else:
            self.scales = self._need("scales", (len(self.widths), N, 10), np.float32)

    def rows(self, idx):
        N, K = self.shape
        sel = self._select(idx)
        R = len(sel)
        S = int(self.sal.sum())
        s1 = unpack_bits(self.s1[sel], K) if R else np.zeros((0, K), np.float32)
        s2, hi, conc = np.zeros((R, K), np.float32), np.zeros((R, K), bool), np.zeros((R, K), bool)
        if R and S:
            s2[:, self.sal] = unpack_bits(self.s2[sel], S)
            hi[:, self.sal] = unpack_bits(self.cgb[sel], S, signed=False).astype(bool)
        if R and K - S:
            conc[:, ~self.sal] = unpack_bits(self.conc[sel], K - S, signed=False).astype(bool)
        out = np.zeros((R, K), np.float32)
        c0 = 0
        for b, c in enumerate(self.widths):
            blk = slice(c0, c0 + c)
            a, b1, b2, h, cc = None, s1[:, blk], s2[:, blk], hi[:, blk], conc[:, blk]
            if self.rc:
                r, k = self.row[b][sel], self.col[:, blk]  # (R, 6), (6, c)
                t = [r[:, i:i + 1] * k[i][None, :] for i in range(6)]
                v_hi, v_lo = t[0] * b1 + t[1] * b2, t[2] * b1 + t[3] * b2
                v_c, v_s = t[4] * b1, t[5] * b1
            else:
                a = self.scales[b][sel]  # (R, 10): hi mu a1 a2, lo mu a1 a2, conc mu a, sparse mu a
                v_hi = a[:, 0:1] + a[:, 1:2] * b1 + a[:, 2:3] * b2
                v_lo = a[:, 3:4] + a[:, 4:5] * b1 + a[:, 5:6] * b2
                v_c, v_s = a[:, 6:7] + a[:, 7:8] * b1, a[:, 8:9] + a[:, 9:10] * b1
            sal = self.sal[blk][None, :]
            out[:, blk] = np.where(sal, np.where(h, v_hi, v_lo), np.where(cc, v_c, v_s))
            c0 += c
        return out

    def bits(self):
        N, K = self.shape
        S = int(self.sal.sum())
        scales = 6 * (N * len(self.widths) + K) if self.rc else 10 * N * len(self.widths)
        return {"codes": N * K + N * S, "index": K + N * (K - S) + N * S, "scales": FP_BITS * scales}


class MoSCodec(Codec):
    """BinaryMoS (Jo et al. 2024): ``words`` the signs of W (N, ceil(K/64)) uint64 (bit set: +1), the scale
    experts ``s_in`` (E, K) and ``s_out`` (E, N) and the ``router`` (E, K), float32. Per token x::

        g = softmax(router x),  y = ((x * (g S_in)) sign(W)^T) * (g S_out)

    :meth:`rows` gives the layer with the experts averaged (what the method's ``quantize`` reports);
    the modules that run the file use :meth:`scales` per token instead."""

    kind = "mos"

    def check(self):
        N, K = self.shape
        self.words = self._need("words", (N, n_words(K)), np.uint64)
        E = self.t.get("router", np.zeros((0, 0))).shape[0]
        if E < 1:
            raise ValueError("mos codec: tensor 'router' is missing or empty")
        for name, shape in (("router", (E, K)), ("s_in", (E, K)), ("s_out", (E, N))):
            self._need(name, shape, np.float32)
        pad = n_words(K) * 64 - K
        if pad and N and (self.words[:, -1] >> np.uint64(64 - pad)).any():
            raise ValueError("mos codec: padding bits are set (the file was altered)")

    def scales(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(s_in (M, K), s_out (M, N)) for tokens x (M, K): the router's softmax mix of the experts."""
        z = x @ self.t["router"].T
        g = np.exp(z - z.max(1, keepdims=True))
        g /= g.sum(1, keepdims=True)
        return g @ self.t["s_in"], g @ self.t["s_out"]

    def signs(self, idx) -> np.ndarray:
        sel = self._select(idx)
        return unpack_bits(self.words[sel], self.shape[1])

    def rows(self, idx):
        sel = self._select(idx)
        return self.signs(idx) * self.t["s_out"].mean(0)[sel][:, None] * self.t["s_in"].mean(0)[None]

    def bits(self):
        N, K = self.shape
        E = self.t["router"].shape[0]
        return {"codes": N * K, "scales": FP_BITS * E * (N + K), "router": FP_BITS * E * K}


CODECS: dict[str, type[Codec]] = {c.kind: c for c in (BinaryCodec, GridCodec, PlanesCodec, PartialCodec, BlocksCodec, NMBlocksCodec,
                                                      ARBBlocksCodec, MoSCodec)}
