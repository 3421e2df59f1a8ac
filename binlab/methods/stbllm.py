"""STBLLM: structured binarization below 1 bit (Dong et al., ICLR 2025, arXiv 2408.01803)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import FP_BITS, Quantizer, register
from .billm import block_compensated, residual_binarize, salience, salient_search


def standardized_importance(w: torch.Tensor, h_diag: torch.Tensor) -> torch.Tensor:
    """STBLLM's standardized importance (sec. 3.2):
    ``SI_ij = sigma(|W_ij| / sum_i |W_ij| + |W_ij| / sum_j |W_ij|) * ||X_j||_2``, sigma the
    standardisation over the matrix (zero mean, unit std) and ``||X_j||`` the input feature's norm
    (``sqrt(H_jj)`` up to a constant, from the calibration Hessian)."""
    a = w.abs()
    rel = a / a.sum(0, keepdim=True).clamp_min(1e-12) + a / a.sum(1, keepdim=True).clamp_min(1e-12)
    z = (rel - rel.mean()) / rel.std().clamp_min(1e-12)
    return z * h_diag.clamp_min(0).sqrt()[None, :]


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest-scoring entries in every group of ``m`` consecutive input columns of
    each row (a trailing partial group keeps ``round(n / m * len)``)."""
    rows, cols = score.shape
    keep = torch.zeros_like(score, dtype=torch.bool)
    full = cols - cols % m
    if full:
        g = score[:, :full].reshape(rows, full // m, m)
        idx = torch.topk(g, n, dim=2).indices
        kg = torch.zeros_like(g, dtype=torch.bool).scatter_(2, idx, True)
        keep[:, :full] = kg.reshape(rows, full)
    if cols % m:
        k = int(round(n / m * (cols % m)))
        if k:
            idx = torch.topk(score[:, full:], k, dim=1).indices
            keep[:, full:] = torch.zeros_like(score[:, full:], dtype=torch.bool).scatter_(1, idx, True)
    return keep


def three_group_errors(w: torch.Tensor, mask: torch.Tensor, ps: torch.Tensor) -> torch.Tensor:
    """Squared error of binarizing the ``mask`` entries in three groups -- ``|w| < p`` (sparse),
    ``p <= |w| < 2p`` (intermediate), ``|w| >= 2p`` (dense) -- each ``alpha sign(w)`` with its own
    per-row alpha, for every candidate p (closed form ``Q - S^2 / n`` per group and row)."""
    a = (w.abs() * mask)[None]
    m = mask[None].to(w.dtype)
    p = ps[:, None, None]
    groups = ((a < p).to(w.dtype) * m, ((a >= p) & (a < 2 * p)).to(w.dtype) * m, (a >= 2 * p).to(w.dtype) * m)
    err = (a**2).sum((1, 2))
    for g in groups:
        s, n = (a * g).sum(2), g.sum(2)
        err = err - torch.where(n > 0, s**2 / n.clamp_min(1), torch.zeros_like(s)).sum(1)
    return err


@register
@dataclass
class STBLLM(Quantizer):
    """STBLLM (Dong et al. 2025): N:M structured sparsity on top of BiLLM-style binarization.

    1. N:M mask: in every group of ``m`` consecutive input columns of a row keep the ``n`` weights of
       highest standardized importance (:func:`standardized_importance`), chosen once from the
       original weights and the calibration Hessian; the others are zero.
    2. Per block of 128 columns, BiLLM's salient columns (searched over the kept weights) with
       residual binarization, and the other kept weights in three groups split at ``p`` and ``2p``
       (sparse, intermediate, dense; p searched over 81 quantiles of their ``|w|``), each group
       ``alpha sign(w)`` per row.
    3. BiLLM's block-wise error compensation; pruned weights stay zero.

    Layer-wise N:M (sec. 3.3): :func:`binlab.training.allocation.layerwise_nm` builds a spec with one ``n`` per layer from the
    layers' outlier ratios. Pruned weights are kept out of every group and statistic (the indexed
    reference code binarizes them back to non-zero values).

    Storage, counted in full: 1 sign bit per kept weight and a second per kept salient weight, the
    N:M positions (``ceil(log2 C(m, n))`` bits per group), the salient column bitmap, the group of
    each kept non-salient weight (3 groups: 5 per byte, 1.6 bits), 5 fp32 scales per row per block.
    The paper's "0.55 bits" (4:8) counts only the sign bits of kept weights: :meth:`paper_bits`.
    """

    name: ClassVar[str] = "stbllm"
    paper: ClassVar[str] = "Dong et al. 2025, STBLLM: Breaking the 1-Bit Barrier with Structured Binary LLMs"
    arxiv: ClassVar[str] = "2408.01803"
    mode: ClassVar[str] = "PTQ with calibration data"
    stores: ClassVar[str] = "sign bits of the kept N of every M weights, N:M positions, bitmaps, 5 scales per row per block"
    needs_calibration: ClassVar[bool] = True
    data_dependent_storage: ClassVar[bool] = True
    ui: ClassVar[dict] = {"m": {"kind": "int", "label": "M", "min": 2, "max": 16, "step": 1},
                          "n": {"kind": "int", "label": "N (kept of every M)", "min": 1, "max": 8, "step": 1, "at_most": "m"}}
    bounds: ClassVar[dict] = {"blocksize": {"kind": "int", "min": 16, "max": 4096}}
    n: int = 4
    m: int = 8
    blocksize: int = 128

    def __post_init__(self):
        if not (isinstance(self.m, int) and self.m >= 2):
            raise ValueError(f"stbllm m must be an int >= 2, got {self.m!r}")
        if not (isinstance(self.n, int) and 1 <= self.n <= self.m):
            raise ValueError(f"stbllm n must be an int in [1, m={self.m}], got {self.n!r}")
        if not (isinstance(self.blocksize, int) and self.blocksize >= 2):
            raise ValueError(f"stbllm blocksize must be an int >= 2, got {self.blocksize!r}")
        self._stats = None

    def quantize(self, w):
        w2 = w.reshape(w.shape[0], -1)
        h = self.hessian_for(w2).double()
        keep = nm_mask(standardized_importance(w2.double(), torch.diag(h)), self.n, self.m)
        stats = []

        def quant_block(wb, d, hb, i1):
            kb = keep[:, i1 : i1 + wb.shape[1]]
            sal, _ = salient_search(salience(wb, d), keep=kb)
            m3 = sal[None, :].expand_as(wb) & kb
            rest = kb & ~m3
            out = residual_binarize(wb, m3, 2)
            vals = wb.abs()[rest]
            if vals.numel():
                ps = torch.quantile(vals, torch.linspace(0.1, 0.9, 81, dtype=wb.dtype, device=wb.device))
                p = ps[torch.argmin(three_group_errors(wb, rest, ps))]
                a = wb.abs()
                for g in (rest & (a < p), rest & (a >= p) & (a < 2 * p), rest & (a >= 2 * p)):
                    out = out + residual_binarize(wb, g, 1)
            stats.append((wb.shape[1], int(sal.sum()), int(kb.sum()), int(m3.sum())))
            return out

        q = block_compensated(w2, h, quant_block, self.blocksize)
        self._stats, self._rows = stats, w2.shape[0]
        return (q * keep).to(w.dtype).reshape(w.shape)

    def _blocks(self, shape):
        if self._stats is not None and sum(s[0] for s in self._stats) == shape[1]:
            return self._stats
        rows = shape[0]
        out = []
        for i in range(0, shape[1], self.blocksize):
            c = min(self.blocksize, shape[1] - i)
            k = max(1, round(0.1 * c))
            kept = rows * c * self.n // self.m
            out.append((c, k, kept, kept * k // c))
        return out

    def storage(self, shape):
        rows, cols = shape[0], shape[1]
        blocks = self._blocks(shape)
        groups = rows * math.ceil(cols / self.m)
        kept_nonsal = sum(kept - ks for _, _, kept, ks in blocks)
        return {"codes": sum(kept + ks for _, _, kept, ks in blocks),
                "index": groups * math.ceil(math.log2(math.comb(self.m, self.n))) + sum(c for c, *_ in blocks) + 8 * math.ceil(kept_nonsal / 5),
                "scales": 5 * rows * FP_BITS * len(blocks)}

    def paper_bits(self) -> float | None:
        """Bits per weight as the paper counts them: sign bits of the kept weights (a second for salient ones)."""
        if not self._stats:
            return None
        n_weights = self._rows * sum(c for c, *_ in self._stats)
        return sum(kept + ks for _, _, kept, ks in self._stats) / n_weights
