"""STBLLM: structured binarization below 1 bit (Dong et al., ICLR 2025, arXiv 2408.01803)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import FP_BITS, Quantizer, register
from .billm import block_compensated, centred_residual, residual_parts, salience, salient_columns


def importance(w: torch.Tensor, h_diag: torch.Tensor, a: float = 0.5) -> torch.Tensor:
    """STBLLM's importance score as its code computes it (sec. 3.2; ``prune_ria_outlier_structure_special``,
    run with ``--a 0.5``)::

        s_ij = (|W_ij| / sum_i |W_ij| + |W_ij| / sum_j |W_ij|) * ||X_j||^a

    ``||X_j||`` the input feature's norm over the calibration tokens, ``sqrt(H_jj)`` up to a constant
    (which scales every score alike). The paper's eq. writes a standardisation sigma(.) around the
    relative term; the code that produces its tables has none, and binlab follows the code (with
    it, a negative standardised term makes a weight *less* important as its input grows)."""
    x = w.abs()
    rel = x / x.sum(0, keepdim=True).clamp_min(1e-12) + x / x.sum(1, keepdim=True).clamp_min(1e-12)
    return rel * h_diag.clamp_min(0) ** (a / 2)


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


def three_group_split(s: torch.Tensor, salient: torch.Tensor, n_grid: int = 160) -> float:
    """STBLLM's break-point search (sec. 3.2) as its code runs it (``utils/autosearch.py``): on the
    salience matrix ``s`` (``w^2 / [H^-1]_jj^2``, pruned weights 0), candidates p are ``n_grid``
    quantiles (0.10 ... 0.90) of ``s`` over the whole block with the salient entries set to 0; a p
    with ``2p`` above the 90th-percentile candidate is skipped. Each p splits the non-salient
    entries into ``s < p`` (sparse), ``p <= s < 2p`` (intermediate), ``s >= 2p`` (dense), one
    :func:`.billm.centred_residual` round each, plus 2 rounds on the salient entries; the squared
    error against ``s`` picks p (first minimum; the first candidate if every one is skipped)."""
    rest = ~salient
    fixed = centred_residual(s, salient, 2)
    ps = torch.quantile((s * rest).flatten(), torch.linspace(0.1, 0.9, n_grid, dtype=s.dtype, device=s.device))
    p, best = float(ps[0]), None
    for cand in ps:
        if 2 * cand > ps[-1]:
            continue
        fit = fixed + sum(centred_residual(s, g, 1) for g in three_groups(s, rest, cand))
        err = float(((s - fit) ** 2).sum())
        if best is None or err < best:
            p, best = float(cand), err
    return p


def three_groups(s: torch.Tensor, rest: torch.Tensor, p) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``rest`` split at ``p`` and ``2p`` of ``s``: sparse, intermediate, dense."""
    return rest & (s < p), rest & (s >= p) & (s < 2 * p), rest & (s >= 2 * p)


@register
@dataclass
class STBLLM(Quantizer):
    """STBLLM (Dong et al. 2025): N:M structured sparsity on top of BiLLM-style binarization, as
    its code runs it (pprp/STBLLM, ``scripts/run_stbllm.sh``):

    1. N:M mask: in every group of ``m`` consecutive input columns of a row keep the ``n`` weights of
       highest importance (:func:`importance`), chosen once from the original weights and the
       calibration Hessian; the others are zero.
    2. Per block of 128 columns, on the salience ``s = w^2 / [H^-1]_jj^2`` of the pruned weights:
       BiLLM's salient columns (:func:`.billm.salient_columns`), binarized with residual
       binarization (order 2), and the other weights in three groups split at ``p`` and ``2p``
       (sparse, intermediate, dense; :func:`three_group_split`, 160 quantiles), each group
       ``alpha sign(w)`` per row.
    3. BiLLM's block-wise error compensation.

    Layer-wise N:M (sec. 3.3): :func:`binlab.training.allocation.layerwise_nm` builds a spec with one
    ``n`` per layer from the layers' outlier ratios.

    Where binlab differs from the code: ``n`` counts the weights *kept* (the code's "N:M" counts the
    pruned ones; 4:8 is the same either way) and a trailing partial group keeps
    ``round(n / m * len)``; pruned weights stay zero and out of every group's scale (the code's
    searches see them as zeros, as binlab's do, but it then binarizes them back to non-zero values
    and lets the compensation write into them, so its model is not sparse); the weights are
    binarized as BiLLM's paper writes it, without the per-row mean the code subtracts
    (tests/reference/stbllm_ref.py runs the code's procedure).

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
        self.layout: list[dict] | None = None  # per block, what a packed file holds

    def quantize(self, w):
        w2 = w.reshape(w.shape[0], -1)
        h = self.hessian_for(w2).double()
        keep = nm_mask(importance(w2.double(), torch.diag(h)), self.n, self.m)
        stats = []

        def quant_block(wb, d, hb, i1):
            kb = keep[:, i1 : i1 + wb.shape[1]]
            s = salience(wb * kb, d)
            sal = salient_columns(s)  # the code's searches see the pruned weights as zeros
            col = sal[None, :].expand_as(wb)
            p = three_group_split(s, col)
            m3 = col & kb
            groups = three_groups(s, ~col, p)
            (a1, b1), (a2, b2) = residual_parts(wb, m3, 2)  # each group binarized once: its values and what a file holds
            parts = [residual_parts(wb, g & kb, 1)[0] for g in groups]
            f3 = m3.to(wb.dtype)
            out = a1 * b1 * f3 + a2 * b2 * f3
            gid = torch.zeros_like(kb, dtype=torch.int8)
            first = b1.clone()
            for i, (g, (a, b)) in enumerate(zip(groups, parts)):
                out = out + a * b * (g & kb).to(wb.dtype)
                gid[g & kb] = i
                first = torch.where(g & kb, b, first)
            stats.append((wb.shape[1], int(sal.sum()), int(kb.sum()), int(m3.sum())))
            # what a packed file holds (binlab.runtime.layouts.NMBlocksCodec): signs, groups, 5 scales per row
            layout.append({"keep": kb.cpu().numpy(), "salient": sal.cpu().numpy(), "group": gid.cpu().numpy(),
                           "signs": first.cpu().numpy(), "signs2": b2.cpu().numpy(),
                           "scales": torch.cat([a1, a2] + [a for a, _ in parts], 1).cpu().numpy()})
            return out

        layout = []
        q = block_compensated(w2, h, quant_block, self.blocksize)
        self._stats, self._rows, self.layout = stats, w2.shape[0], layout
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
