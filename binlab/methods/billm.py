"""BiLLM: pushing the limit of post-training quantization for LLMs (Huang et al., ICML 2024, arXiv 2402.04291)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from .base import FP_BITS, Quantizer, register, sign
from .gptq import prepare_hessian


def residual_parts(w: torch.Tensor, mask: torch.Tensor, order: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ``order`` rounds of :func:`residual_binarize` as ``(alpha (rows, 1), signs (rows, cols))``:
    per row, over the ``mask`` entries, ``alpha = mean |r|``, ``b = sign(r)``, ``r <- r - alpha b``."""
    m = mask.to(w.dtype)
    cnt = m.sum(1, keepdim=True).clamp_min(1)
    r = w * m
    parts = []
    for _ in range(order):
        a = r.abs().sum(1, keepdim=True) / cnt
        b = sign(r)
        parts.append((a, b))
        r = (r - a * b * m) * m
    return parts


def residual_binarize(w: torch.Tensor, mask: torch.Tensor, order: int = 1) -> torch.Tensor:
    """Per row, over the entries in ``mask`` (zero elsewhere): ``order`` rounds of
    ``alpha = mean |r|``, ``r <- r - alpha sign(r)`` (BiLLM eq. 1 for order 1; the residual
    approximation of salient weights, eq. 6-8, for order 2: ``alpha_o B_o + alpha_r B_r``)."""
    m = mask.to(w.dtype)
    return sum((a * b * m for a, b in residual_parts(w, mask, order)), torch.zeros_like(w))


def centred_residual(x: torch.Tensor, mask: torch.Tensor, order: int) -> torch.Tensor:
    """The reference code's sub-binarizer (``high_order_residual``): ``order`` rounds over the
    ``mask`` entries of each row of the residual ``r``: ``mu = mean r``, ``alpha = mean |r - mu|``,
    ``r <- r - (alpha sign(r - mu) + mu)`` (sign(0) = 0). BiLLM's searches score candidates with it."""
    m = mask.to(x.dtype)
    cnt = m.sum(1, keepdim=True).clamp_min(1)
    out = torch.zeros_like(x)
    for _ in range(order):
        r = (x - out) * m
        mu = r.sum(1, keepdim=True) / cnt
        alpha = ((r - mu).abs() * m).sum(1, keepdim=True) / cnt
        out = out + (alpha * torch.sign(r - mu) + mu) * m
    return out


def salience(w: torch.Tensor, u_diag: torch.Tensor) -> torch.Tensor:
    """BiLLM eq. 2, entry by entry: ``s_ij = w_ij^2 / [H^-1]_jj^2``, ``[H^-1]_jj`` read as the
    diagonal of the upper Cholesky factor of ``H^-1`` (as the reference code does)."""
    return w**2 / u_diag[None, :] ** 2


def salient_columns(s: torch.Tensor, up_lim: int = 50, keep: torch.Tensor | None = None) -> torch.Tensor:
    """BiLLM's salient-column search (sec. 3.1) as its code runs it (``utils/autosearch.py``): on the
    salience matrix ``s`` (:func:`salience`), columns ranked by ``sum_i s_ij``; the count
    ``k < up_lim`` minimises the squared error of binarizing ``s`` itself, 2 rounds of
    :func:`centred_residual` on the top-k columns plus 2 on the rest (first minimum on ties).
    ``keep``: entries that exist (STBLLM's N:M mask; pruned ones count as zero salience and stay out
    of every group). Returns the boolean column mask."""
    cols = s.shape[1]
    keep = torch.ones_like(s, dtype=torch.bool) if keep is None else keep
    s = s * keep
    order = torch.argsort(s.sum(0), descending=True, stable=True)
    best_k, best = 0, None
    for k in range(1, min(up_lim, cols)):
        sel = torch.zeros(cols, dtype=torch.bool, device=s.device)
        sel[order[:k]] = True
        m3 = sel[None, :] & keep
        err = float(((s - centred_residual(s, m3, 2) - centred_residual(s, keep & ~m3, 2)) ** 2).sum())
        if best is None or err < best:
            best_k, best = k, err
    sel = torch.zeros(cols, dtype=torch.bool, device=s.device)
    sel[order[:best_k]] = True
    return sel


def break_point(s: torch.Tensor, rest: torch.Tensor, fixed: torch.Tensor, n_grid: int = 81,
                error: Callable[[torch.Tensor], float] | None = None) -> float:
    """BiLLM's break-point search (sec. 3.2) as its code runs it: candidates are ``n_grid``
    quantiles (0.10 ... 0.90) of ``s * rest`` over the whole block (the zeros outside ``rest``
    included); each splits ``rest`` into ``s < p`` (concentrated) and ``s >= p`` (sparse), one
    :func:`centred_residual` round each, added to ``fixed`` (the other groups' fit of ``s``).
    ``error(d)`` scores the difference ``d = s - fit`` (default: its squared sum; ARB-X weighs it
    by the calibration Gram matrix). First minimum on ties."""
    error = error or (lambda d: float((d**2).sum()))
    ps = torch.quantile((s * rest).flatten(), torch.linspace(0.1, 0.9, n_grid, dtype=s.dtype, device=s.device))
    p, best = 0.0, None
    for cand in ps:
        lo = rest & (s < cand)
        err = error(s - fixed - centred_residual(s, lo, 1) - centred_residual(s, rest & ~lo, 1))
        if best is None or err < best:
            p, best = float(cand), err
    return p


def salient_search(s: torch.Tensor, up_lim: int = 50, n_grid: int = 81,
                   keep: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """BiLLM's two searches in order (``utils/autosearch.py``, ``structural_searching``):
    :func:`salient_columns`, then :func:`break_point` on the other entries with the salient
    columns' 2-round fit fixed. Returns ``(salient column mask, p)``."""
    keep = torch.ones_like(s, dtype=torch.bool) if keep is None else keep
    sel = salient_columns(s, up_lim, keep)
    m3 = sel[None, :] & keep
    return sel, break_point(s * keep, keep & ~m3, centred_residual(s * keep, m3, 2), n_grid)


def block_compensated(w: torch.Tensor, h: torch.Tensor, quant_block, blocksize: int = 128) -> torch.Tensor:
    """BiLLM's outer loop (Algorithm 1), shared by ARB-LLM and STBLLM: GPTQ's preprocessing of
    ``H``, then blocks of ``blocksize`` input columns, each quantized at once by
    ``quant_block(W_b, diag(U_b), H_b, i1)`` from its current weights, and its error pushed onto
    the later columns: ``E = (W_b - Q_b) / diag(U_b)``, ``W_after -= E U[b, after]``."""
    wd, hd, u = prepare_hessian(w, h, 0.01)
    q = torch.zeros_like(wd)
    cols = wd.shape[1]
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        d = torch.diag(u)[i1:i2]
        qb = quant_block(wd[:, i1:i2], d, hd[i1:i2, i1:i2], i1)
        q[:, i1:i2] = qb
        wd[:, i2:] -= ((wd[:, i1:i2] - qb) / d[None, :]) @ u[i1:i2, i2:]
    return q


@register
@dataclass
class BiLLM(Quantizer):
    """BiLLM (Huang et al. 2024), block by block over 128 input columns (Algorithm 1):

    1. The salience of every weight, ``s_ij = w_ij^2 / [H^-1]_jj^2`` (eq. 2, :func:`salience`).
       Salient columns: the top ones by summed salience, their number searched
       (:func:`salient_search`), binarized with the residual approximation
       ``alpha_o sign(w) + alpha_r sign(w - alpha_o sign(w))`` (eq. 6-8).
    2. The other weights split at the searched break-point p* of the salience into concentrated
       (``s < p*``) and sparse (``s >= p*``) groups, each ``alpha sign(w)`` with its own per-row
       alpha (eq. 9-10).
    3. The block's error is pushed onto the later columns with GPTQ's inverse-Hessian update,
       ``E = (W_b - Q_b) / diag(U_b)``, ``W_after -= E U[b, after]`` (block-wise compensation; as in
       the paper and the code, no compensation *inside* a block).

    The searches follow the reference code (Aaronhuang-778/BiLLM, ``run.sh``: ``--salient_metric
    hessian``): both run on the salience matrix, scored by the error of binarizing it with the
    code's row-centred binarizer (:func:`centred_residual`). Where binlab differs: the *weights* are
    binarized as the paper's eq. 1 and 6-8 write it, without the per-row mean the code subtracts in
    every sub-binarizer (tests/reference/billm_ref.py runs both; the masks are the same).

    Storage, counted in full: 1 sign bit per weight and a second per salient weight, a salient
    column bitmap and a concentrated/sparse bitmap over the non-salient weights, and 4 fp32 scales
    per row per block (packed exactly so: :class:`binlab.runtime.layouts.BlocksCodec`). The paper's
    "1.08 bits" counts only the sign bits (``1 + salient fraction``); :meth:`paper_bits` gives that
    figure for the last matrix quantized. Needs calibration data.
    """

    name: ClassVar[str] = "billm"
    paper: ClassVar[str] = "Huang et al. 2024, BiLLM: Pushing the Limit of Post-Training Quantization for LLMs"
    arxiv: ClassVar[str] = "2402.04291"
    mode: ClassVar[str] = "PTQ with calibration data"
    stores: ClassVar[str] = "1 sign bit per weight, a second per salient weight, column and group bitmaps, 4 scales per row per block"
    needs_calibration: ClassVar[bool] = True
    ui: ClassVar[dict] = {}
    bounds: ClassVar[dict] = {"blocksize": {"kind": "int", "min": 16, "max": 4096}}
    blocksize: int = 128

    def __post_init__(self):
        if not (isinstance(self.blocksize, int) and self.blocksize >= 2):
            raise ValueError(f"billm blocksize must be an int >= 2, got {self.blocksize!r}")
        self._salient_per_block: list[tuple[int, int]] | None = None  # (block columns, salient columns)
        self.layout: list[dict] | None = None  # per block, what a packed file holds (binlab.runtime.layouts.BlocksCodec)

    def binarize_group(self, wb: torch.Tensor, mask: torch.Tensor, order: int, gram: torch.Tensor) -> torch.Tensor:
        """How one group of a block is binarized (BiLLM: residual binarization of ``order``); ARB-LLM
        overrides this and keeps the rest of the algorithm."""
        return residual_binarize(wb, mask, order)

    def block_groups(self, s: torch.Tensor, gram: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, int]]]:
        """The block's groups from its salience ``s``: ``(salient column mask, [(mask, order), ...])``
        (BiLLM: salient order 2, concentrated and sparse order 1); ARB-LLM overrides it."""
        sal, p = salient_search(s)
        m3 = sal[None, :].expand_as(s)
        m1 = ~m3 & (s < p)
        return sal, [(m3, 2), (m1, 1), (~m3 & ~m1, 1)]

    def quantize(self, w):
        w2 = w.reshape(w.shape[0], -1)
        h = self.hessian_for(w2).double()
        stats = []

        layout = []

        def quant_block(wb, d, hb, i1):
            gram = h[i1 : i1 + wb.shape[1], i1 : i1 + wb.shape[1]] / 2  # X X^T / N of the block (undamped), for ARB-X
            sal, groups = self.block_groups(salience(wb, d), gram)
            stats.append((wb.shape[1], int(sal.sum())))
            qb, lay = self.block_values(wb, groups, gram)
            layout.append(lay)
            return qb

        q = block_compensated(w2, h, quant_block, self.blocksize)
        self._salient_per_block = stats
        self.layout = layout if all(lay is not None for lay in layout) else None
        return q.to(w.dtype).reshape(w.shape)

    def block_values(self, wb: torch.Tensor, groups, gram: torch.Tensor) -> tuple[torch.Tensor, dict | None]:
        """The block's quantized values and what a packed file holds for them
        (:class:`binlab.runtime.layouts.BlocksCodec`: the two sign planes, the concentrated mask, 4 scales
        per row); a subclass that only changes :meth:`binarize_group` gets its values and no layout."""
        if type(self).binarize_group is not BiLLM.binarize_group:
            return sum(self.binarize_group(wb, m, order, gram) for m, order in groups), None
        (m3, _), (m1, _), (m2, _) = groups
        (a1, b1), (a2, b2) = residual_parts(wb, m3, 2)
        ((a3, b3),), ((a4, b4),) = residual_parts(wb, m1, 1), residual_parts(wb, m2, 1)
        f3, f1, f2 = (m.to(wb.dtype) for m in (m3, m1, m2))
        q = (a1 * b1 + a2 * b2) * f3 + a3 * b3 * f1 + a4 * b4 * f2
        first = torch.where(m3, b1, torch.where(m1, b3, b4))
        return q, {"salient": m3.any(0).cpu().numpy(), "concentrated": m1.cpu().numpy(), "signs": first.cpu().numpy(),
                   "signs2": b2.cpu().numpy(), "scales": torch.cat([a1, a2, a3, a4], 1).cpu().numpy()}

    def _blocks(self, shape):
        if self._salient_per_block is not None and sum(c for c, _ in self._salient_per_block) == shape[1]:
            return self._salient_per_block
        # not quantized yet: assume 10 % salient columns per block (sizes are exact once quantized)
        return [(min(self.blocksize, shape[1] - i), max(1, round(0.1 * min(self.blocksize, shape[1] - i))))
                for i in range(0, shape[1], self.blocksize)]

    def storage(self, shape):
        rows = shape[0]
        blocks = self._blocks(shape)
        return {"codes": sum(rows * (c + k) for c, k in blocks),
                "index": sum(c + rows * (c - k) for c, k in blocks),
                "scales": 4 * rows * FP_BITS * len(blocks)}

    data_dependent_storage: ClassVar[bool] = True

    def paper_bits(self) -> float | None:
        """Bits per weight as the paper counts them: ``1 + salient fraction`` (sign bits only)."""
        if not self._salient_per_block:
            return None
        c = sum(c for c, _ in self._salient_per_block)
        return 1 + sum(k for _, k in self._salient_per_block) / c


@register
@dataclass
class OAC(BiLLM):
    """OAC: output-adaptive calibration (Edalati et al., AAAI 2025, arXiv 2405.15025) with BiLLM's
    quantizer, as the paper's binary results use it.

    The layer-wise objective ``||W X - Q X||^2`` (Hessian ``2 X X^T``) is replaced by the change of
    the model's *output* cross-entropy. Its Hessian with respect to the layer's weights is taken as
    the empirical Fisher of per-row losses, assuming independence across layers and across output
    rows and aggregating the rows' Fisher blocks (the paper's row-wise aggregation)::

        H_OAC = (1/N) sum_n G_n^T G_n,    G_n = d l_n / d W   (out x in)

    (:func:`binlab.training.calibration.collect_output_hessians`). It replaces H everywhere BiLLM uses it:
    the salience ``w^2 / [H^-1]_jj^2`` and the block-wise error compensation. Calibration is
    sequential: the gradients of each stage are taken with the earlier stages already binarized.
    No reference code exists; the exact normalisation is ours (it cancels up to the relative damping).
    Stores what BiLLM stores.
    """

    name: ClassVar[str] = "oac"
    paper: ClassVar[str] = "Edalati et al. 2025, OAC: Output-adaptive Calibration for Accurate Post-training Quantization"
    arxiv: ClassVar[str] = "2405.15025"
    mode: ClassVar[str] = "PTQ with calibration data (gradients of the output loss)"
    hessian_kind: ClassVar[str] = "output"
