"""ARB-LLM: alternating refined binarizations for LLMs (Li et al., ICLR 2025, arXiv 2410.03129)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import FP_BITS, register, sign
from .billm import BiLLM, break_point, centred_residual, salient_columns

EPS = 1e-8


def _mean(x, m, cnt):
    return (x * m).sum(1, keepdim=True) / cnt


def arb(w: torch.Tensor, mask: torch.Tensor, order: int = 1, iters: int = 15) -> tuple[torch.Tensor, dict]:
    """Alternating refined binarization (ARB, sec. 3.1) of the ``mask`` entries, per row:
    ``W ~ sum_k alpha_k B_k + mu``. Start from the residual binarization with means (order 1 or 2),
    then ``iters`` rounds of, in this order:

    - the mean takes up the residual's mean: ``mu <- mu + mean(W - W_hat)``  (the paper's mean refinement),
    - each scale is the least-squares one for fixed signs:
      ``alpha_k = <B_k, W - mu - sum_{l != k} alpha_l B_l> / <B_k, B_k>`` (the scale refinement),
    - the signs are refitted: ``B = sign(W - mu)`` for order 1; for order 2 the pair
      ``(B_1, B_2)`` with ``alpha_1 B_1 + alpha_2 B_2`` nearest to ``W - mu`` (the sign refinement).

    Returns ``W_hat`` (zero outside the mask) and the parameters (for ARB-X)."""
    m = mask.to(w.dtype)
    cnt = m.sum(1, keepdim=True).clamp_min(1)
    mus, alphas, bs = [], [], []
    r = w * m
    for _ in range(order):  # initial residual binarization with a mean per order
        mu = _mean(r, m, cnt)
        a = _mean((r - mu).abs(), m, cnt)
        b = sign(r - mu) * m
        mus.append(mu), alphas.append(a), bs.append(b)
        r = (r - (a * b + mu)) * m
    mu = sum(mus)
    for _ in range(iters):
        w_hat = (sum(a * b for a, b in zip(alphas, bs)) + mu) * m
        mu = mu + _mean(w - w_hat, m, cnt)
        for k in range(order):
            rest = sum((alphas[j] * bs[j] for j in range(order) if j != k), torch.zeros_like(w))
            alphas[k] = ((bs[k] * (w - mu - rest)) * m).sum(1, keepdim=True) / ((bs[k] ** 2) * m).sum(1, keepdim=True).clamp_min(EPS)
        bs = _refit_signs(w - mu, alphas, m)
    w_hat = (sum(a * b for a, b in zip(alphas, bs)) + mu) * m
    return w_hat, {"mu": mu, "alphas": alphas, "bs": bs}


def _refit_signs(target: torch.Tensor, alphas: list[torch.Tensor], m: torch.Tensor) -> list[torch.Tensor]:
    if len(alphas) == 1:
        return [sign(target) * m]
    a1, a2 = alphas
    best, best_err = None, None
    for s1 in (1.0, -1.0):
        for s2 in (1.0, -1.0):
            err = (target - (s1 * a1 + s2 * a2)) ** 2
            if best is None:
                best, best_err = (torch.full_like(target, s1), torch.full_like(target, s2)), err
            else:
                take = err < best_err
                best = (torch.where(take, s1, best[0]), torch.where(take, s2, best[1]))
                best_err = torch.where(take, err, best_err)
    return [best[0] * m, best[1] * m]


def arb_x(w: torch.Tensor, mask: torch.Tensor, gram: torch.Tensor, order: int = 1, iters: int = 15, params: bool = False):
    """ARB-X (sec. 3.2): ARB, then ``iters`` rounds that refit mean and scales with the signs fixed
    to minimise the calibration-aware error ``(w_i - w_hat_i) S (w_i - w_hat_i)^T`` per row, with
    ``S = X X^T`` the block's input Gram matrix (= H / 2)::

        mu_i      = m_i S (w_i - sum_k alpha_ik b_ik)^T / (m_i S m_i^T)
        alpha_ik  = b_ik S (w_i - mu_i m_i - sum_{l != k} alpha_il b_il)^T / (b_ik S b_ik^T)"""
    _, p = arb(w, mask, order, iters)
    m = mask.to(w.dtype)
    wm = w * m
    mu, alphas, bs = p["mu"], p["alphas"], p["bs"]
    mS = m @ gram
    for _ in range(iters):
        fit = sum(a * b for a, b in zip(alphas, bs))
        mu = ((mS * (wm - fit)).sum(1, keepdim=True) / (mS * m).sum(1, keepdim=True).clamp_min(1e-10))
        for k in range(order):
            rest = sum((alphas[j] * bs[j] for j in range(order) if j != k), torch.zeros_like(w))
            bS = bs[k] @ gram
            alphas[k] = (bS * (wm - mu * m - rest)).sum(1, keepdim=True) / (bS * bs[k]).sum(1, keepdim=True).clamp_min(1e-10)
    w_hat = (sum(a * b for a, b in zip(alphas, bs)) + mu) * m
    return (w_hat, {"mu": mu, "alphas": alphas, "bs": bs}) if params else w_hat


def arb_rc(w: torch.Tensor, mask: torch.Tensor, order: int = 1, iters: int = 15, params: bool = False):
    """ARB-RC (sec. 3.3): row and column scales, no mean: ``W ~ sum_k (a_k c_k^T) * B_k``.
    Start from ``a = mean |W|`` per row, ``c_j = mean_i |W_ij| / a_i``, ``B = sign(W)`` (order 2: the
    same on the residual); then alternate the least-squares updates
    ``a_i = sum_j g_ij W'_ij / sum_j g_ij^2`` with ``g_ij = c_j B_ij`` and
    ``c_j = sum_i h_ij W'_ij / sum_i h_ij^2`` with ``h_ij = a_i B_ij`` (``W'``: W minus the other
    term); for order 2 the signs are refitted jointly to the nearest of ``+-c1 +- c2``. ``params``:
    also return ``{"terms": [(a, c, B), ...]}``."""
    m = mask.to(w.dtype)
    cnt_r = m.sum(1, keepdim=True).clamp_min(1)
    cnt_c = m.sum(0, keepdim=True).clamp_min(1)
    terms = []
    r = w * m
    for _ in range(order):
        a = (r.abs() * m).sum(1, keepdim=True) / cnt_r
        c = ((r.abs() / a.clamp_min(EPS)) * m).sum(0, keepdim=True) / cnt_c
        b = sign(r) * m
        terms.append([a, c, b])
        r = (r - a * c * b) * m
    for _ in range(iters):
        for k in range(order):
            other = sum((t[0] * t[1] * t[2] for j, t in enumerate(terms) if j != k), torch.zeros_like(w))
            tgt = (w - other) * m
            a, c, b = terms[k]
            g = c * b
            a = (g * tgt).sum(1, keepdim=True) / (g**2).sum(1, keepdim=True).clamp_min(EPS)
            h = a * b
            c = (h * tgt).sum(0, keepdim=True) / (h**2).sum(0, keepdim=True).clamp_min(EPS)
            terms[k] = [a, c, b]
        if order == 2:
            scales = [t[0] * t[1] for t in terms]
            b1, b2 = _refit_signs(w, scales, m)
            terms[0][2], terms[1][2] = b1, b2
    w_hat = sum(t[0] * t[1] * t[2] for t in terms) * m
    return (w_hat, {"terms": terms}) if params else w_hat


@register
@dataclass
class ARB(BiLLM):
    """ARB-LLM (Li et al. 2025) in BiLLM's framework, as its README's commands run it
    (``--salient_metric hessian --num_p 1 --order2_group``; ZHITENGLI/ARB-LLM). Per block of 128
    input columns, on BiLLM's salience ``s = w^2 / [H^-1]_jj^2`` (:meth:`block_groups`):

    1. BiLLM's salient columns (:func:`.billm.salient_columns`);
    2. the column-group bitmap (CGB): the salient entries split at a searched p into ``s >= p`` and
       ``s < p``, each binarized at order 2 (p: 81 quantiles of the non-zero salient ``s``, each
       split scored by the error of 2 centred rounds per part on ``s``);
    3. BiLLM's break-point split of the other entries into concentrated and sparse groups (order 1),
       the salient columns' ARB fit of ``s`` held fixed; ARB-X scores each candidate by the
       calibration-weighted error ``sum_i d_i S d_i^T`` (``d = s - fit``, ``S = X X^T / N`` of the
       block) instead of the squared error;

    every group then binarized by ``variant``:

    - ``"arb"``: alternating refined binarization (:func:`arb`), 15 iterations;
    - ``"x"``: ARB-X, the same refined against the calibration data (:func:`arb_x`);
    - ``"rc"``: ARB-RC, row and column scales without a mean (:func:`arb_rc`).

    Then BiLLM's block-wise error compensation. Checked against a port of the code's searches
    (tests/reference/arb_ref.py).

    Storage, counted in full: 1 sign bit per weight and a second per salient weight, the column
    bitmap, the CGB bitmap over the salient weights, the concentrated/sparse bitmap, and per block
    per row alpha and mu for each group (10 fp32: 3 for each order-2 group, 2 for each order-1 one);
    ARB-RC: a row and a column scale vector per term (6 terms). :meth:`paper_bits` counts only the
    sign bits, as the paper does. Needs calibration data.
    """

    name: ClassVar[str] = "arb"
    paper: ClassVar[str] = "Li et al. 2025, ARB-LLM: Alternating Refined Binarizations for Large Language Models"
    arxiv: ClassVar[str] = "2410.03129"
    stores: ClassVar[str] = "as BiLLM, with a mean per group (ARB, ARB-X) or row and column scales (ARB-RC)"
    ui: ClassVar[dict] = {"variant": {"kind": "choice", "label": "variant", "choices": ["arb", "x", "rc"]}}
    bounds: ClassVar[dict] = {"blocksize": {"kind": "int", "min": 16, "max": 4096}, "iters": {"kind": "int", "min": 0, "max": 100}}
    variant: str = "x"
    iters: int = 15

    def __post_init__(self):
        super().__post_init__()
        if self.variant not in ("arb", "x", "rc"):
            raise ValueError(f"arb variant must be 'arb', 'x' (ARB-X) or 'rc' (ARB-RC), got {self.variant!r}")
        if not (isinstance(self.iters, int) and self.iters >= 0):
            raise ValueError(f"arb iters must be an int >= 0, got {self.iters!r}")

    def salient_fit(self, s, mask):
        """The salient columns' order-2 fit of the salience, held fixed in the break-point search."""
        return arb_rc(s, mask, 2, self.iters) if self.variant == "rc" else arb(s, mask, 2, self.iters)[0]

    def block_groups(self, s, gram):
        sal = salient_columns(s)
        m3 = sal[None, :].expand_as(s)
        vals = s[m3 & (s != 0)]
        if vals.numel():  # the column-group bitmap
            ps = torch.quantile(vals, torch.linspace(0.1, 0.9, 81, dtype=s.dtype, device=s.device))
            errs = [float(((s - centred_residual(s, m3 & (s < p), 2) - centred_residual(s, m3 & (s >= p), 2)) ** 2).sum()) for p in ps]
            q = ps[min(range(len(errs)), key=errs.__getitem__)]
            salient = [(m3 & (s >= q), 2), (m3 & (s < q), 2)]
        else:
            salient = [(m3, 2)]
        error = (lambda d: float(((d @ gram) * d).sum())) if self.variant == "x" else None
        p = break_point(s, ~m3, self.salient_fit(s, m3), error=error)
        m1 = ~m3 & (s < p)
        return sal, salient + [(m1, 1), (~m3 & ~m1, 1)]

    def block_values(self, wb, groups, gram):
        """The block's values (each group by ``variant``) and what a packed file holds for them
        (:class:`binlab.runtime.layouts.ARBBlocksCodec`)."""
        fits = []
        q = torch.zeros_like(wb)
        for m, order in groups:
            if self.variant == "rc":
                v, p = arb_rc(wb, m, order, self.iters, params=True)
            elif self.variant == "x":
                v, p = arb_x(wb, m, gram, order, self.iters, params=True)
            else:
                v, p = arb(wb, m, order, self.iters)
            q = q + v
            fits.append((m, order, p))
        if len(fits) == 3:  # no column-group split (no salient salience): an empty low group
            m, _, p = fits[0]
            empty = torch.zeros_like(m)
            zp = {"terms": [[t[0] * 0, t[1] * 0, t[2] * 0] for t in p["terms"]]} if self.variant == "rc" else \
                {"mu": p["mu"] * 0, "alphas": [a * 0 for a in p["alphas"]], "bs": [b * 0 for b in p["bs"]]}
            fits.insert(1, (empty, 2, zp))
        (hi, _, phi), (lo, _, plo), (conc, _, pc), (sp, _, ps) = fits
        sal = (hi | lo).any(0)
        signs = lambda p: [t[2] for t in p["terms"]] if self.variant == "rc" else p["bs"]  # noqa: E731
        first = torch.where(hi, signs(phi)[0], torch.where(lo, signs(plo)[0], torch.where(conc, signs(pc)[0], signs(ps)[0])))
        second = torch.where(hi, signs(phi)[1], signs(plo)[1])
        lay = {"salient": sal.cpu().numpy(), "cgb": hi.cpu().numpy(), "concentrated": conc.cpu().numpy(),
               "signs": (first >= 0).cpu().numpy(), "signs2": (second >= 0).cpu().numpy()}
        if self.variant == "rc":
            terms = [t for p in (phi, plo, pc, ps) for t in p["terms"]]
            lay |= {"row": torch.cat([t[0] for t in terms], 1).cpu().numpy(), "col": torch.cat([t[1] for t in terms], 0).cpu().numpy()}
        else:
            lay |= {"scales": torch.cat([x for p in (phi, plo, pc, ps) for x in [p["mu"], *p["alphas"]]], 1).cpu().numpy()}
        return q, lay

    def binarize_group(self, wb, mask, order, gram):
        if self.variant == "x":
            return arb_x(wb, mask, gram, order, self.iters)
        if self.variant == "rc":
            return arb_rc(wb, mask, order, self.iters)
        return arb(wb, mask, order, self.iters)[0]

    def storage(self, shape):
        st = super().storage(shape)
        rows = shape[0]
        blocks = self._blocks(shape)
        per_block = (lambda c: 6 * (rows + c)) if self.variant == "rc" else (lambda c: 10 * rows)
        return st | {"index": st["index"] + sum(rows * k for _, k in blocks),
                     "scales": FP_BITS * sum(per_block(c) for c, _ in blocks)}
