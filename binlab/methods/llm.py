"""LLM-era methods as binlab has them today: simplified, data-free versions of PB-LLM, BiLLM and
OneBit. Each docstring says what it leaves out of its paper; the faithful, calibrated versions are
the language-model track's work (issue 11)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import FP_BITS, Quantizer, n_groups, numel, reduce_dims, register, sign
from .classic import PER_CHANNEL_UI
from .lowbit import Uniform


def _index_bits(n_selected: int, n_total: int, rows: int) -> int:
    """Bits to store which positions are selected: a bitmap (n_total bits) or CSR column indices
    (n_selected * ceil(log2 cols) + row pointers), whichever is smaller."""
    cols = max(1, n_total // max(rows, 1))
    csr = n_selected * max(1, math.ceil(math.log2(cols))) + (rows + 1) * 32
    return min(n_total, csr)


@register
@dataclass
class PBLLM(Quantizer):
    """PB-LLM, partially binarized (Shang et al. 2023): keep the ``salient`` fraction of weights with
    the largest magnitude in 8 bits, binarize the rest as ``alpha * sign(w)`` with alpha the mean
    |w| of the binarized weights per channel.

    Storage: 1-bit codes for the binarized weights, 8-bit codes for the salient ones, their
    positions (bitmap or CSR, the smaller), one alpha per channel and one 8-bit step per channel.

    Left out of the paper: Hessian-based salience and the GPTQ-style error compensation of PB-GPTQ,
    and the QAT recipe with frozen salient weights.
    """

    name: ClassVar[str] = "pbllm"
    paper: ClassVar[str] = "Shang et al. 2023, PB-LLM (simplified: magnitude salience, no GPTQ compensation)"
    arxiv: ClassVar[str] = "2310.00034"
    mode: ClassVar[str] = "PTQ here (the paper: PTQ with GPTQ-style compensation, or QAT)"
    stores: ClassVar[str] = "1 bit per binarized weight, 8 bits per salient weight, their positions, 2 scales per row"
    ui: ClassVar[dict] = {"per_channel": PER_CHANNEL_UI,
                          "salient": {"kind": "float", "label": "salient fraction (kept in 8 bits)", "min": 0.0, "max": 0.5, "step": 0.01}}
    per_channel: bool = True
    salient: float = 0.1

    def __post_init__(self):
        if not (isinstance(self.salient, (int, float)) and 0.0 <= self.salient < 1.0):
            raise ValueError(f"pbllm salient fraction must be in [0, 1), got {self.salient}")

    def _mask(self, w):
        k = int(round(self.salient * w.numel()))
        if k == 0:
            return torch.zeros_like(w, dtype=torch.bool)
        thr = torch.topk(w.abs().flatten(), k).values[-1]
        return w.abs() >= thr

    def quantize(self, w):
        sal = self._mask(w)
        rd = reduce_dims(w, self.per_channel)
        nb = (~sal).to(w.dtype)
        alpha = (w.abs() * nb).sum(**rd) / nb.sum(**rd).clamp_min(1)
        w8 = Uniform(per_channel=self.per_channel, bits=8).quantize(w * sal)
        return torch.where(sal, w8, alpha * sign(w))

    def storage(self, shape):
        n = numel(shape)
        k = int(round(self.salient * n))
        g = n_groups(shape, self.per_channel)
        return {"codes": (n - k) + 8 * k, "index": _index_bits(k, n, shape[0]) if k else 0, "scales": 2 * g * FP_BITS}


def _residual_binarize(w, mask, dims):
    """alpha1 sign(w) + alpha2 sign(r), r = w - alpha1 sign(w), over positions in ``mask``, per row."""
    m = mask.to(w.dtype)
    cnt = m.sum(dims, keepdim=True).clamp_min(1)
    a1 = (w.abs() * m).sum(dims, keepdim=True) / cnt
    b1 = a1 * sign(w)
    r = w - b1
    a2 = (r.abs() * m).sum(dims, keepdim=True) / cnt
    return (b1 + a2 * sign(r)) * m


def _group_binarize(w, mask, dims):
    m = mask.to(w.dtype)
    a = (w.abs() * m).sum(dims, keepdim=True) / m.sum(dims, keepdim=True).clamp_min(1)
    return a * sign(w) * m


@register
@dataclass
class BiLLM(Quantizer):
    """BiLLM (Huang et al. 2024), data-free variant.

    Salient *columns* (the ``salient`` fraction with the largest squared norm -- the Hessian
    saliency ``w^2 / [H^-1]_ii^2`` with H = I, since no calibration data is used here) get residual
    binarization ``a1 sign(w) + a2 sign(w - a1 sign(w))``. The other weights are split by a
    searched break-point p into concentrated (|w| <= p) and sparse (|w| > p) groups, each with its
    own per-row ``alpha * sign``. p minimises the squared error over 40 quantiles of |w|.

    Storage, counted honestly: 1 sign bit per weight, a second sign bit per salient weight, a
    column mask, a group bitmap for the non-salient weights, and 4 scales per row (fp32). BiLLM's
    "1.08 bits" leaves the group bitmap out; binlab counts it. Always per row (no per-tensor form).

    Left out of the paper: calibration data (the Hessian), and the block-wise GPTQ-style error
    compensation.
    """

    name: ClassVar[str] = "billm"
    paper: ClassVar[str] = "Huang et al. 2024, BiLLM (simplified: data-free, no block compensation)"
    arxiv: ClassVar[str] = "2402.04291"
    mode: ClassVar[str] = "PTQ"
    stores: ClassVar[str] = "1 sign bit per weight, a second per salient weight, column and group masks, 4 scales per row"
    ui: ClassVar[dict] = {"salient": {"kind": "float", "label": "salient column fraction", "min": 0.0, "max": 0.5, "step": 0.01}}
    salient: float = 0.05

    def __post_init__(self):
        if not (isinstance(self.salient, (int, float)) and 0.0 <= self.salient < 1.0):
            raise ValueError(f"billm salient fraction must be in [0, 1), got {self.salient}")

    def quantize(self, w):
        w2 = w.reshape(w.shape[0], -1)
        n_cols = w2.shape[1]
        k = int(round(self.salient * n_cols))
        col_sal = torch.zeros(n_cols, dtype=torch.bool, device=w.device)
        if k:
            col_sal[torch.topk((w2**2).sum(0), k).indices] = True
        sal = col_sal[None, :].expand_as(w2)
        out = _residual_binarize(w2, sal, 1)
        rest = ~sal
        a = w2.abs()[rest]
        if a.numel() == 0:
            return out.reshape(w.shape)
        best, best_err = None, None
        for p in torch.quantile(a.float()[:: max(1, a.numel() // 200_000)], torch.linspace(0.5, 0.99, 40, device=w.device)).tolist():
            conc = rest & (w2.abs() <= p)
            q = out + _group_binarize(w2, conc, 1) + _group_binarize(w2, rest & ~conc, 1)
            err = float(((q - w2) ** 2).sum())
            if best_err is None or err < best_err:
                best, best_err = q, err
        return best.reshape(w.shape)

    def storage(self, shape):
        rows, n = shape[0], numel(shape)
        cols = n // rows
        k = int(round(self.salient * cols))
        return {"codes": n + k * rows, "index": cols + (n - k * rows), "scales": 4 * rows * FP_BITS}


@register
@dataclass
class OneBit(Quantizer):
    """OneBit (Xu et al. 2024): ``Q(W) = sign(W) * (a b^T)`` with value vectors a (out) and b (in)
    from the rank-1 approximation of |W| (Sign-Value-Independent Decomposition, here by SVD).
    Stores 1 bit per weight plus (out + in) fp32 values.

    Left out of the paper: learning a and b as parameters after the SVID initialisation (here they
    are recomputed from |W| on every call), and the hidden-state distillation.
    """

    name: ClassVar[str] = "onebit"
    paper: ClassVar[str] = "Xu et al. 2024, OneBit (simplified: value vectors from SVD at every call)"
    arxiv: ClassVar[str] = "2402.11295"
    mode: ClassVar[str] = "QAT"
    stores: ClassVar[str] = "1 bit per weight + the two value vectors (out + in, fp32)"

    def quantize(self, w):
        w2 = w.reshape(w.shape[0], -1).float()
        U, S, Vh = torch.linalg.svd(w2.abs(), full_matrices=False)
        a = U[:, 0] * S[0].sqrt()
        b = Vh[0] * S[0].sqrt()
        if a.sum() < 0:  # the rank-1 factors of a non-negative matrix can be taken non-negative
            a, b = -a, -b
        return (sign(w2) * torch.outer(a, b)).to(w.dtype).reshape(w.shape)

    def storage(self, shape):
        rows = shape[0]
        cols = numel(shape) // rows
        return {"codes": numel(shape), "scales": (rows + cols) * FP_BITS}
