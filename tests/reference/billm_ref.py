"""An independent numpy port of BiLLM's reference procedure (Aaronhuang-778/BiLLM).

Read from commit dc137ebbf62d4b31e8a82ba6bf9e18a51a298dcb, the path ``run.sh`` runs
(``braq --blocksize 128 --salient_metric hessian``); written from reading, not copied. float64.
"""
from __future__ import annotations

import warnings

import numpy as np


def centred_residual(x: np.ndarray, mask: np.ndarray, order: int) -> np.ndarray:
    """``binary.py`` lines 15-37 (``high_order_residual``): ``order`` rounds over the masked entries of
    each row of the residual ``r``: ``mu = mean(r)``, ``alpha = mean |r - mu|``,
    ``b = alpha sign(r - mu) + mu`` (torch.sign: sign(0) = 0); a row with no entries gets 0."""
    total = np.zeros_like(x)
    for _ in range(order):
        r = np.where(mask, x - total, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mu = np.nan_to_num(np.nanmean(r, axis=1))
            alpha = np.nan_to_num(np.nanmean(np.abs(r - mu[:, None]), axis=1))
        b = np.sign(np.nan_to_num(r - mu[:, None])) * alpha[:, None] + mu[:, None]
        total = total + np.where(mask, b, 0.0)
    return total


def _mse(a, b):
    return float(np.mean((a - b) ** 2))


def search(s: np.ndarray, up_lim: int = 50) -> tuple[float, np.ndarray]:
    """``utils/autosearch.py`` lines 28-76 (``structural_searching``) on the salience matrix ``s``:

    1. columns ranked by ``sum_i |s_ij|``; for ``k = 1 .. up_lim-1`` the top-k columns binarized with
       2 centred residual rounds and the rest with 2 rounds; k minimising the MSE against ``s`` wins
       (first minimum on ties);
    2. candidates: 81 quantiles (0.10 ... 0.90, numpy's linear rule) of ``|s * ~salient|`` over the
       whole block (the zeros left at salient positions included); for each, the non-salient entries
       split at it (:func:`split_masks`), one round each, plus the salient group; the MSE against
       ``s`` picks the split (first minimum).

    Returns ``(split, salient_mask)``."""
    rows, cols = s.shape
    counts = np.abs(s).sum(0)
    order = np.argsort(-counts, kind="stable")[:up_lim]
    best_k, best = None, np.inf
    for k in range(1, up_lim):
        m3 = np.zeros(s.shape, bool)
        m3[:, order[:k]] = True
        e = _mse(s, centred_residual(s, m3, 2) + centred_residual(s, ~m3, 2))
        if e < best:
            best_k, best = k, e
    m3 = np.zeros(s.shape, bool)
    m3[:, order[:best_k]] = True
    g3 = centred_residual(s, m3, 2)
    cands = np.quantile(np.abs(s * ~m3).ravel(), np.linspace(0.10, 0.90, 81))
    split, best = None, np.inf
    for p in cands:
        m1, m2 = split_masks(s, m3, p)
        e = _mse(s, centred_residual(s, m1, 1) + centred_residual(s, m2, 1) + g3)
        if e < best:
            split, best = p, e
    return split, m3


def split_masks(s: np.ndarray, m3: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """``utils/mask.py`` lines 7-18 (``generate_structural_mask``): among the non-salient entries,
    ``|s| < p`` (concentrated) and ``|s| >= p`` (sparse)."""
    a = np.abs(s * ~m3)
    return (a < p) & ~m3, (a >= p) & ~m3


def block_masks(w_block: np.ndarray, u_block_diag: np.ndarray, up_lim: int = 50):
    """``utils/structure.py`` lines 8-20 with ``metric="hessian"``: ``s = w^2 / diag(U_b)^2`` (U the
    upper Cholesky factor of the damped ``H^-1``), searched by :func:`search`. Returns
    ``(concentrated, sparse, salient)`` masks."""
    s = w_block**2 / u_block_diag[None, :] ** 2
    p, m3 = search(s, up_lim)
    m1, m2 = split_masks(s, m3, p)
    return m1, m2, m3


def billm(W: np.ndarray, H: np.ndarray, blocksize: int = 128, percdamp: float = 0.01, up_lim: int = 50,
          centred: bool = True):
    """``bigptq.py`` lines 58-150 (``BRAGPTQ.fasterquant``, GPTQ enabled): dead inputs zeroed, damping
    ``percdamp * mean(diag H)``, ``U = chol(H^-1)^T``; per block the masks from the *current* weights,
    the block binarized at once (orders 1, 1, 2 for concentrated, sparse, salient), the block's error
    ``(W_b - Q_b) / diag(U_b)`` pushed onto the later columns through ``U[b, after]``.

    ``centred=False`` binarizes the weights without the row mean (the paper's eq. 1 and 6-8), keeping
    the code's masks. Returns ``(Q, [(block columns, salient columns), ...])``."""
    W, H = W.astype(np.float64).copy(), H.astype(np.float64).copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += percdamp * np.mean(np.diag(H)) * np.eye(len(H))
    U = np.linalg.cholesky(np.linalg.inv(H)).T
    Q = np.zeros_like(W)
    stats = []
    for a in range(0, W.shape[1], blocksize):
        b = min(a + blocksize, W.shape[1])
        wb = W[:, a:b]
        d = np.diag(U)[a:b]
        m1, m2, m3 = block_masks(wb, d, up_lim)
        if centred:
            qb = centred_residual(wb, m1, 1) + centred_residual(wb, m2, 1) + centred_residual(wb, m3, 2)
        else:
            qb = plain_residual(wb, m1, 1) + plain_residual(wb, m2, 1) + plain_residual(wb, m3, 2)
        Q[:, a:b] = qb
        W[:, b:] -= ((wb - qb) / d[None, :]) @ U[a:b, b:]
        stats.append((b - a, int(m3[0].sum())))
    return Q, stats


def plain_residual(x: np.ndarray, mask: np.ndarray, order: int) -> np.ndarray:
    """BiLLM eq. 1 and 6-8 without a row mean: ``alpha = mean |r|``, ``b = alpha sign(r)`` (sign(0) = +1)."""
    total = np.zeros_like(x)
    cnt = np.maximum(mask.sum(1, keepdims=True), 1)
    for _ in range(order):
        r = np.where(mask, x - total, 0.0)
        alpha = np.abs(r).sum(1, keepdims=True) / cnt
        total = total + np.where(mask, alpha * np.where(r >= 0, 1.0, -1.0), 0.0)
    return total
