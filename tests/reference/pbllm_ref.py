"""An independent numpy (float64) port of PB-LLM's reference code (GitHub ``hahnyuan/PB-LLM``;
Shang et al., ICLR 2024, arXiv 2310.00034).

Written from reading, not copied. Every file is cited at commit
``fe85da943d9df48ab6455d698f75406bb0bfefbc`` (the newest stored, "fix bug in weight_quant_8bit",
2023-11-20). Two paths are ported.

QAT (``qat/run_qat.py``; ``--binarization_method xnor_outlier``, ``--outlier_fraction 0.1`` by
default, lines 167-178). Each ``nn.Linear`` becomes ``BinaryXnorExceptOutliersLinear``
(``quant/outlier_quantizer.py``, lines 33-123; run_qat.py lines 45-66) and ``gen_outlier_mask`` runs
once before training (run_qat.py lines 104-106):

* salient ("outlier") mask, outlier_quantizer.py lines 54-69: **two-tailed on the signed values of
  the whole matrix** -- ``lower = kthvalue(w_flat, int(N f / 2))``, ``upper = kthvalue(w_flat,
  int(N (1 - f / 2)))`` (1-based k-th smallest), ``salient = (w < lower) | (w > upper)``; so the
  most negative and the most positive ~f/2 each, not the top-f by |w| (:func:`qat_salient_mask`);
* scale, lines 72-74 and (in training mode, every forward) 90-93: ``w[~mask].abs().mean(-1)`` --
  boolean indexing flattens, so this is **one scalar per matrix**: the mean |w| of all non-salient
  entries; no mean is subtracted (:func:`qat_binary_scale`);
* line 75: after the mask and scale are taken, the *whole* weight is replaced by
  ``weight_quant_8bit(w)`` (lines 10-29; see :func:`head_weight_quant_8bit` -- at this commit it is
  not a working 8-bit grid);
* forward, lines 94-98: ``where(mask, w * outlier_scale, STEBinary(w) * scale)`` with the salient
  branch detached (``train_outlier=False``) and ``outlier_scale = 1``; ``STEBinary``
  (``quant/quantizer.py`` lines 18-25) is ``sign`` forward (torch.sign: sign(0) = 0) and identity
  backward, so the latent gradient is ``dL/dw_hat * scale`` off the mask and 0 on it
  (:func:`qat_binarize_except_salient`, :func:`qat_latent_grad`).
  ``xnor_outlier_hessian`` (lines 126-143) instead loads the PTQ mask saved by ``gptq_pb/gptq.py``
  (lines 108-114) and takes its complement as the salient mask.

PTQ (``gptq_pb/run.py``; ``run_all.sh`` lines 2-5: ``xnor --low_frac {0.5,0.8,0.9,0.95} --high_bit 8
--salient_metric hessian``; blocksize 128, groupsize -1, percdamp 0.01 by default, run.py lines
221-247), ``LowHighGPT.fasterquant`` (``gptq_pb/gptq.py`` lines 54-187):

* 8-bit grid (``HighQuantizer(8, perchannel=True, sym=False, mse=False)``, run.py lines 132-137;
  ``gptq_pb/high_quant.py`` lines 29-67, 6-8): per row, min-max over the row with 0 included,
  ``s = (max - min) / 255``, ``z = round(-min / s)``, fitted on W before dead columns are zeroed
  (gptq.py lines 62-63);
* Hessian: dead columns, damping ``0.01 mean(diag H)``, ``U = chol(H^-1)`` upper (lines 69-81);
* binarized mask (``mask`` is True where *binarized*), lines 83-101, per column group (one group =
  the whole row when groupsize = -1): score ``|W|`` or ``W^2 / U_jj^2``,
  ``thresh = sort(score)[int(N low_frac)]`` (0-based), ``binarized = score <= thresh``; so
  ``int(N low_frac) + 1`` entries are binarized and ``N - int(N low_frac) - 1`` kept (no ties);
* alpha (``LowQuantizer`` method ``xnor``, ``gptq_pb/low_quant.py`` lines 24-32, 68), fitted once on
  ``W * mask`` (gptq.py lines 103-105, the salient entries set to 0, before any compensation):
  ``mu_r = mean_j(W_rj m_rj)`` and ``alpha_r = mean_j |W_rj m_rj - mu_r|`` -- both averaged over the
  **whole row** (salient positions included as zeros); quantize (lines 75-82):
  ``alpha_r sign(w - mu_r) + mu_r``;
* RTN (``--disable_gptq``, lines 119-127) or GPTQ's column loop (lines 128-168) with the mixed
  quantizer: salient -> 8-bit grid, binarized -> the xnor rule, the error of every column pushed
  onto the later columns.
"""
from __future__ import annotations

import numpy as np

REPO = "hahnyuan/PB-LLM"
COMMIT = "fe85da943d9df48ab6455d698f75406bb0bfefbc"


# ------------------------------------------------------------------------------------------------
# QAT path: quant/outlier_quantizer.py


def kth_smallest(values: np.ndarray, k: int) -> float:
    """``torch.kthvalue(values, k)[0]``: the k-th smallest (1-based) of a flat array."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    if not 1 <= k <= flat.size:
        raise ValueError(f"k={k} out of range for {flat.size} values (torch.kthvalue raises here too)")
    return float(np.partition(flat, k - 1)[k - 1])


def qat_salient_mask(w: np.ndarray, outlier_fraction: float = 0.1) -> np.ndarray:
    """outlier_quantizer.py lines 54-69: the two signed tails of the whole matrix (True = salient)."""
    w = np.asarray(w, dtype=np.float64)
    n = w.size
    low = kth_smallest(w, int(n * outlier_fraction / 2))
    high = kth_smallest(w, int(n * (1 - outlier_fraction / 2)))
    return (w < low) | (w > high)


def qat_binary_scale(w: np.ndarray, salient: np.ndarray) -> float:
    """Lines 72-74 / 90-93: one scalar per matrix, the mean |w| over every non-salient entry."""
    return float(np.abs(np.asarray(w, dtype=np.float64)[~salient]).mean())


def qat_binarize_except_salient(w: np.ndarray, salient: np.ndarray, scale: float | None = None,
                                outlier_scale: float = 1.0) -> np.ndarray:
    """Lines 83-99 (forward): salient entries pass through (``w * outlier_scale``; in the reference
    the latent weight there is the 8-bit value written at line 75 and never changes, as it gets no
    gradient); the rest become ``scale * sign(w)`` (sign(0) = 0). ``scale=None`` recomputes it from
    ``w`` as training mode does (lines 90-93); eval mode reuses the last one."""
    w = np.asarray(w, dtype=np.float64)
    if scale is None:
        scale = qat_binary_scale(w, salient)
    return np.where(salient, w * outlier_scale, scale * np.sign(w))


def qat_latent_grad(grad_out: np.ndarray, salient: np.ndarray, scale: float, train_outlier: bool = False,
                    outlier_scale: float = 1.0) -> np.ndarray:
    """Backward of lines 94-98: identity STE through sign, times the (detached) scale, off the mask;
    on the mask 0 (detached, ``train_outlier=False``) or ``outlier_scale`` otherwise."""
    g = np.asarray(grad_out, dtype=np.float64)
    return np.where(salient, g * outlier_scale if train_outlier else 0.0, g * scale)


def head_weight_quant_8bit(w: np.ndarray, wrap: bool = True) -> np.ndarray:
    """outlier_quantizer.py lines 10-29 as they stand at this commit (simulated=True), per row:
    ``r = max - min``, ``z = round(min)`` (the raw minimum rounded to an *integer*),
    ``code = uint8(round((w - z) / r * 255))`` then clamp to [0, 255] and ``code r / 255 + z``.

    ``code`` leaves [0, 255] whenever ``min`` is not an integer (any row with min in (-0.5, 0)
    gives negative codes for its negative weights) and the cast to uint8 happens *before* the clamp;
    float -> uint8 out of range is undefined in C++ -- torch on CPU wraps modulo 256 (``wrap=True``,
    checked with torch 2.13 CPU; the reference also casts ``r`` to float32, ~1e-7 apart from this
    float64 port); ``wrap=False`` saturates instead. Not a usable 8-bit grid: kept to
    document the reference, not as the intended behaviour."""
    w = np.asarray(w, dtype=np.float64)
    lo, hi = w.min(-1, keepdims=True), w.max(-1, keepdims=True)
    r = hi - lo
    z = np.round(lo)
    code = np.round((w - z) / r * 255)
    code = np.mod(code, 256) if wrap else np.clip(code, 0, 255)
    return code * (r / 255) + z


# ------------------------------------------------------------------------------------------------
# PTQ path: gptq_pb/gptq.py, low_quant.py, high_quant.py


def minmax8_params(w: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """high_quant.py lines 50-67 (perchannel, asymmetric, no MSE search): per row, 0 in the range."""
    w = np.asarray(w, dtype=np.float64)
    maxq = 2**bits - 1
    lo = np.minimum(w.min(1), 0.0)
    hi = np.maximum(w.max(1), 0.0)
    both0 = (lo == 0) & (hi == 0)
    lo, hi = np.where(both0, -1.0, lo), np.where(both0, 1.0, hi)
    s = (hi - lo) / maxq
    return s[:, None], np.round(-lo / s)[:, None]


def minmax8_quant(x: np.ndarray, s: np.ndarray, z: np.ndarray, bits: int = 8) -> np.ndarray:
    """high_quant.py lines 6-8."""
    return s * (np.clip(np.round(x / s) + z, 0, 2**bits - 1) - z)


def damped_upper_chol_inv(h: np.ndarray, w: np.ndarray, percdamp: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """gptq.py lines 67-81: dead inputs get H_jj = 1 and a zero weight column; damping; returns
    ``(W, U)`` with ``U`` upper triangular, ``U^T U = H^-1``."""
    h = np.array(h, dtype=np.float64)
    w = np.array(w, dtype=np.float64)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h = h + percdamp * np.mean(np.diag(h)) * np.eye(len(h))
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    return w, u


def ptq_binarized_mask(w: np.ndarray, low_frac: float, u_diag: np.ndarray | None = None,
                       groupsize: int | None = None) -> np.ndarray:
    """gptq.py lines 83-101: True = binarized. Per column group, score ``|w|`` (magnitude, u_diag None)
    or ``w^2 / u_diag^2`` (hessian); ``binarized = score <= sort(score)[int(N low_frac)]``."""
    w = np.asarray(w, dtype=np.float64)
    cols = w.shape[1]
    gs = cols if groupsize in (None, -1) else groupsize
    out = np.zeros(w.shape, dtype=bool)
    for st in range(0, cols, gs):
        ed = min(st + gs, cols)
        blk = w[:, st:ed]
        score = np.abs(blk) if u_diag is None else blk**2 / u_diag[None, st:ed] ** 2
        thresh = np.sort(score.ravel())[int(score.size * low_frac)]
        out[:, st:ed] = score <= thresh
    return out


def ptq_xnor_params(w: np.ndarray, binarized: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """low_quant.py lines 24-32 on ``W * mask`` (gptq.py line 104): per row (one group),
    ``mu = mean(W m)``, ``alpha = mean |W m - mu|``, both over the whole row. Returns (mu, alpha), (rows, 1)."""
    wm = np.asarray(w, dtype=np.float64) * binarized
    mu = wm.mean(-1, keepdims=True)
    return mu, np.abs(wm - mu).mean(-1, keepdims=True)


def ptq_xnor_quant(x: np.ndarray, mu: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """low_quant.py lines 75-82: ``alpha sign(x - mu) + mu`` (sign(0) = 0)."""
    return alpha * np.sign(x - mu) + mu


def ptq_pb_gptq(w: np.ndarray, h: np.ndarray, low_frac: float = 0.9, metric: str = "hessian",
                gptq: bool = True, blocksize: int = 128, percdamp: float = 0.01, high_bits: int = 8) -> np.ndarray:
    """``LowHighGPT.fasterquant`` (gptq.py lines 54-187) with groupsize -1, for a (rows, cols) weight
    and its (cols, cols) Hessian ``H = 2 X X^T / nsamples``. ``gptq=False`` is ``--disable_gptq``."""
    w0 = np.asarray(w, dtype=np.float64)
    cols = w0.shape[1]
    if cols % blocksize:
        raise ValueError("the reference asserts groupsize % blocksize == 0 (gptq.py line 102)")
    s8, z8 = minmax8_params(w0, high_bits)  # lines 62-63: before dead columns are zeroed
    wq, u = damped_upper_chol_inv(h, w0, percdamp)
    binar = ptq_binarized_mask(wq, low_frac, np.diag(u) if metric == "hessian" else None)
    mu, alpha = ptq_xnor_params(wq, binar)

    def mixed(x, m):
        return np.where(m, ptq_xnor_quant(x, mu, alpha), minmax8_quant(x, s8, z8, high_bits))

    if not gptq:  # lines 119-127
        return mixed(wq, binar)
    for b0 in range(0, cols, blocksize):  # lines 128-168
        b1 = min(b0 + blocksize, cols)
        blk = wq[:, b0:b1].copy()
        errs = np.zeros_like(blk)
        for i in range(b1 - b0):
            j = b0 + i
            col = blk[:, i]
            q = mixed(col[:, None], binar[:, j:j + 1])[:, 0]
            e = (col - q) / u[j, j]
            blk[:, i:] -= np.outer(e, u[j, j:b1])
            blk[:, i] = q
            errs[:, i] = e
        wq[:, b0:b1] = blk
        wq[:, b1:] -= errs @ u[b0:b1, b1:]
    return wq


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 40)) * 0.02
    sal = qat_salient_mask(w, 0.1)
    n = w.size
    assert sal.sum() == (int(n * 0.05) - 1) + (n - int(n * 0.95)), sal.sum()  # 15 + 16 = 31, not 32
    assert (w[sal] < 0).sum() == 15 and (w[sal] > 0).sum() == 16
    skew = np.abs(rng.standard_normal((8, 40))) * 0.02 - 0.005  # mostly positive: the tails differ from top-|w|
    topk = np.abs(skew) >= np.sort(np.abs(skew).ravel())[-31]
    print("QAT mask: two-tailed vs top-|w| overlap on skewed weights:", int((qat_salient_mask(skew) & topk).sum()), "of 31")
    a = qat_binary_scale(w, sal)
    out = qat_binarize_except_salient(w, sal)
    assert np.all(out[sal] == w[sal]) and np.allclose(np.abs(out[~sal]), a) and np.isscalar(a)
    g = qat_latent_grad(np.ones_like(w), sal, a)
    assert np.all(g[sal] == 0) and np.allclose(g[~sal], a)
    row = np.array([[-0.30, -0.10, 0.05, 0.30]])
    print("HEAD weight_quant_8bit on", row.ravel(), "->", np.round(head_weight_quant_8bit(row), 4).ravel(), "(negative weights flip sign)")

    rows, cols, ns = 16, 64, 256
    x = rng.standard_normal((cols, ns)) * (1 + rng.random((cols, 1)) * 3)
    wt = rng.standard_normal((rows, cols)) * 0.05
    hh = 2 * x @ x.T / ns
    for metric in ("magnitude", "hessian"):
        rtn = ptq_pb_gptq(wt, hh, 0.9, metric, gptq=False, blocksize=16)
        opt = ptq_pb_gptq(wt, hh, 0.9, metric, gptq=True, blocksize=16)
        e_rtn, e_opt = np.linalg.norm((wt - rtn) @ x), np.linalg.norm((wt - opt) @ x)
        print(f"PTQ {metric}: output error RTN {e_rtn:.4f} -> PB-GPTQ {e_opt:.4f}")
        assert e_opt < e_rtn
    _, uu = damped_upper_chol_inv(hh, wt)
    m = ptq_binarized_mask(wt, 0.9)
    assert m.sum() == int(wt.size * 0.9) + 1  # 922 binarized, 102 kept of 1024
    mu, al = ptq_xnor_params(wt, m)
    assert mu.shape == (rows, 1) and np.all(al > 0)
    print("pbllm_ref smoke: ok")
