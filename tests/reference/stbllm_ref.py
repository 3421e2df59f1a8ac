"""An independent numpy (float64) port of the STBLLM reference procedure (GitHub ``pprp/STBLLM``).

Written from reading, not copied. The path ported is the one ``scripts/run_stbllm.sh`` runs at
commit ``091a6b4c02634f3c25d84fba095cfe88469d100f`` (lines 63-70)::

    run.py <model> c4 braq --blocksize 128 --salient_metric hessian --prune_method ria_structure
           --reconstruction --Lamda 2 --Hyper_m 6 --sparsity_ratio {0.25,0.375,0.5}
           --sparsity_type {2:8,3:8,4:8}

``run.py`` (same commit) splits ``--sparsity_type`` into ``prune_n, prune_m``, calls
``utils/prune.py::prune_ria_outlier_structure_special`` (``--a`` keeps its default 0.5; no
``--gptq/--pbllm/--billm``, so nothing is quantized while pruning and, although ``--reconstruction`` is
set, no SparseGPT reconstruction runs on this path) and then ``quant_sequential_braqgptq``, i.e.
``utils/bigptq.py::BRAGPTQ.fasterquant`` (4 masks, orders 1,1,1,2, salient metric ``hessian``).

Convention warning: in the reference ``prune_n`` is the number of weights *zeroed* in each group of
``prune_m`` (the script pairs "2:8" with sparsity ratio 0.25). The functions here that say ``n`` mean
the number *kept* (binlab's convention); the literal ``prune_n`` versions are provided as well.

All files cited at commit 091a6b4c02634f3c25d84fba095cfe88469d100f except ``utils/mask.py``, which is
not stored at that commit; the version cited (65bc2a708823763392f0b086fb558ba3867f7def) is the
four-argument ``generate_structural_mask`` that ``utils/autosearch.py``@091a6b4 calls.
"""
from __future__ import annotations

import numpy as np

REPO = "pprp/STBLLM"
COMMIT = "091a6b4c02634f3c25d84fba095cfe88469d100f"
MASK_COMMIT = "65bc2a708823763392f0b086fb558ba3867f7def"


# ----------------------------------------------------------------------------------------------
# calibration statistics
# ----------------------------------------------------------------------------------------------
def xnorm_from_inputs(X: np.ndarray, nsamples: int) -> np.ndarray:
    """pprp/STBLLM@091a6b4c02634f3c25d84fba095cfe88469d100f ``utils/layerwrapper.py`` lines 70-102
    (``WrappedGPT.add_batch``): with one sequence per call the running average leaves
    ``scaler_row_j = sum_t x_tj^2 / nsamples`` (t over all calibration tokens, nsamples = number of
    sequences, 128). ``prune.py`` then uses ``sqrt(scaler_row)`` as ``||X_j||``; returned here.

    ``X``: (tokens, in_features) stacked calibration inputs of the linear layer."""
    X = np.asarray(X, dtype=np.float64)
    return np.sqrt((X**2).sum(axis=0) / nsamples)


def xnorm_from_hessian(H_wrapped: np.ndarray) -> np.ndarray:
    """Same lines (layerwrapper.py 96 and 101-102): the wrapper's Hessian is
    ``H = (2 / nsamples) sum_t x_t x_t^T``, so ``scaler_row = diag(H) / 2`` exactly and
    ``||X_j|| = sqrt(scaler_row_j) = sqrt(H_jj / 2)``. With ``G = sum_t x_t x_t^T`` (no scaling)
    this is ``sqrt(G_jj / nsamples)``; any positive constant factor cancels in every use below."""
    return np.sqrt(np.clip(np.diag(np.asarray(H_wrapped, dtype=np.float64)), 0.0, None) / 2.0)


# ----------------------------------------------------------------------------------------------
# 1. importance
# ----------------------------------------------------------------------------------------------
def importance(W: np.ndarray, xnorm: np.ndarray, a: float = 0.5) -> np.ndarray:
    """pprp/STBLLM@091a6b4c02634f3c25d84fba095cfe88469d100f ``utils/prune.py`` lines 1045-1048 (ratio
    pass) and 1255-1258 (mask pass) of ``prune_ria_outlier_structure_special``; ``a`` = ``--a``
    default 0.5 in ``run.py``:

        score_ij = ( |W_ij| / sum_k |W_kj|  +  |W_ij| / sum_k |W_ik| ) * ||X_j||^a

    (first sum over output rows = column sum, second over input columns = row sum); no
    standardisation on this path (``fun1_standardize`` is only used by ``prune_ria`` and the unused
    ``ria`` salient metric). ``||X_j|| = sqrt(scaler_row_j)`` (:func:`xnorm_from_inputs`), so the
    factor is ``scaler_row_j^(a/2) = (H_jj / 2)^(1/4)`` for a = 0.5."""
    A = np.abs(np.asarray(W, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = A / A.sum(axis=0, keepdims=True) + A / A.sum(axis=1, keepdims=True)
    return rel * np.asarray(xnorm, dtype=np.float64)[None, :] ** a


# ----------------------------------------------------------------------------------------------
# 2. N:M mask
# ----------------------------------------------------------------------------------------------
def prune_mask(score: np.ndarray, prune_n: int, m: int) -> np.ndarray:
    """pprp/STBLLM@091a6b4c02634f3c25d84fba095cfe88469d100f ``utils/prune.py`` lines 1264-1279: for
    every row and every group of ``m`` consecutive *input* columns starting at a multiple of ``m``,
    the ``prune_n`` lowest scores are pruned (``torch.topk(..., largest=False)``); True = pruned.
    ``prune_n == 0`` prunes nothing. A trailing narrower group still loses ``prune_n`` entries (torch
    would raise if it is narrower than ``prune_n``; so does this port).

    Ties: torch.topk does not specify which of equal scores it returns; this port uses a stable
    ascending sort, so among equal scores the lower column index is pruned first."""
    S = np.asarray(score, dtype=np.float64)
    rows, cols = S.shape
    pruned = np.zeros(S.shape, dtype=bool)
    if prune_n == 0:
        return pruned
    if prune_n < 0:
        raise ValueError("negative prune_n (torch.topk would raise)")
    r = np.arange(rows)[:, None]
    for start in range(0, cols, m):
        g = S[:, start:start + m]
        if g.shape[1] < prune_n:
            raise ValueError("group narrower than prune_n (torch.topk would raise)")
        idx = np.argsort(g, axis=1, kind="stable")[:, :prune_n]
        pruned[r, start + idx] = True
    return pruned


def nm_mask(score: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep mask in binlab's convention (``n`` kept of every ``m``): ``~prune_mask(score, m - n, m)``
    (same lines, ``utils/prune.py`` 1264-1279 @091a6b4c02634f3c25d84fba095cfe88469d100f). The
    script's ``--sparsity_type 2:8 / 3:8 / 4:8`` are ``n = 6 / 5 / 4`` here."""
    return ~prune_mask(score, m - n, m)


# ----------------------------------------------------------------------------------------------
# 3. layer-wise N
# ----------------------------------------------------------------------------------------------
def outlier_ratio(scores, hyper_m: float = 6.0) -> float:
    """pprp/STBLLM@091a6b4c02634f3c25d84fba095cfe88469d100f ``utils/prune.py`` lines 30-43
    (``check_outlier_mean``) applied at lines 1067-1076 to the concatenation of the :func:`importance`
    scores (a = 0.5) of all linear layers of one decoder layer, computed on the *unpruned* weights in
    a first pass (lines 981-1076):

        D_l = 100 * #{ s > hyper_m * mean(s) } / #s     (strict >, mean over all concatenated s)

    ``hyper_m`` = ``--Hyper_m 6`` (run_stbllm.sh line 68)."""
    s = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in scores])
    return float((s > s.mean() * hyper_m).sum()) / s.size * 100.0


def layerwise_prune_n(ratios, prune_n: int, lam: float = 2.0) -> np.ndarray:
    """pprp/STBLLM@091a6b4c02634f3c25d84fba095cfe88469d100f ``utils/prune.py`` lines 1084-1099 and
    1145 (``lam`` = ``--Lamda 2``, run_stbllm.sh line 67):

        r_l = lam * (D_l - min D) / (max D - min D)
        r_l = round_half_even(r_l - mean_l r_l)          (np.round)
        r_l = 2 where r_l == 1                           (no +1 offsets survive)
        prune_n_l = int(prune_n - r_l)                   (no clipping; 0 = layer left dense)

    max D == min D divides by zero in the reference (int(nan) then raises); so does this port."""
    D = np.asarray(ratios, dtype=np.float64)
    span = D.max() - D.min()
    if not span > 0:
        raise ValueError("all outlier ratios equal (reference divides by zero)")
    r = (D - D.min()) * (1.0 / span * lam)
    r = np.round(r - r.mean())
    r[r == 1.0] = 2.0
    return (prune_n - r).astype(int)


def layerwise_n(ratios, n: int, m: int, lam: float = 2.0) -> np.ndarray:
    """Kept count per layer (binlab convention) from the same rule (``utils/prune.py`` lines
    1084-1099, 1145 @091a6b4c02634f3c25d84fba095cfe88469d100f): ``n_l = m - prune_n_l`` with
    ``prune_n = m - n``, i.e. ``n_l = n + r_l`` and ``r_l in {-2, -1, 0, +2}`` (no +1, no clip)."""
    return m - layerwise_prune_n(ratios, m - n, lam)


# ----------------------------------------------------------------------------------------------
# binarizer
# ----------------------------------------------------------------------------------------------
def residual_binarize(x: np.ndarray, mask: np.ndarray, order: int) -> np.ndarray:
    """pprp/STBLLM@091a6b4c02634f3c25d84fba095cfe88469d100f ``utils/binary.py`` lines 17-46
    (``high_order_residual``, BiLLM's): ``order`` rounds over each row's masked entries of the
    residual ``e``: ``mu = mean(e)``, ``alpha = mean|e - mu|``, ``b = mu + alpha * sign(e - mu)``
    (sign(0) = 0); rows without masked entries get 0; unmasked positions are 0."""
    x = np.asarray(x, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    acc = np.zeros_like(x)
    cnt = mask.sum(axis=1)
    safe = np.maximum(cnt, 1)
    for _ in range(order):
        e = np.where(mask, x - acc, 0.0)
        mu = np.where(cnt > 0, e.sum(axis=1) / safe, 0.0)
        dev = np.where(mask, e - mu[:, None], 0.0)
        alpha = np.where(cnt > 0, np.abs(dev).sum(axis=1) / safe, 0.0)
        acc = acc + np.where(mask, np.sign(dev) * alpha[:, None] + mu[:, None], 0.0)
    return acc


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    """``utils/autosearch.py`` lines 11-13 (``error_computing``): mean over all entries."""
    return float(np.mean((a - b) ** 2))


# ----------------------------------------------------------------------------------------------
# 5. salient columns
# ----------------------------------------------------------------------------------------------
def salient_search(S: np.ndarray, up_lim: int = 50) -> np.ndarray:
    """pprp/STBLLM@091a6b4c02634f3c25d84fba095cfe88469d100f ``utils/autosearch.py`` lines 37-68
    (first half of ``structural_searching``; ``up_lim`` = 50 from ``utils/bigptq.py`` lines 170-172).
    Same as BiLLM's: columns ranked by ``sum_i |S_ij|`` (descending, stable here; torch.topk order of
    ties unspecified); for k = 1 .. up_lim-1 the top-k columns and the rest are each binarized with
    2 residual rounds of :func:`residual_binarize` *on S itself*; the k of smallest
    ``mean((S - B)^2)`` over the whole block wins (first minimum). Pruned weights (S = 0) are not
    excluded: they count in both groups. Requires ``S.shape[1] >= up_lim`` (torch.topk would raise).
    Returns the salient mask (whole columns)."""
    S = np.asarray(S, dtype=np.float64)
    if S.shape[1] < up_lim:
        raise ValueError("block narrower than up_lim (torch.topk would raise)")
    order = np.argsort(-np.abs(S).sum(axis=0), kind="stable")[:up_lim]
    best_k, best = None, np.inf
    for k in range(1, up_lim):
        sal = np.zeros(S.shape, dtype=bool)
        sal[:, order[:k]] = True
        err = _mse(S, residual_binarize(S, sal, 2) + residual_binarize(S, ~sal, 2))
        if err < best:
            best_k, best = k, err
    sal = np.zeros(S.shape, dtype=bool)
    sal[:, order[:best_k]] = True
    return sal


# ----------------------------------------------------------------------------------------------
# 4. three-group break-point search
# ----------------------------------------------------------------------------------------------
def group_masks(S: np.ndarray, sal: np.ndarray, p1: float, p2: float):
    """pprp/STBLLM@65bc2a708823763392f0b086fb558ba3867f7def ``utils/mask.py`` lines 21-34
    (``generate_structural_mask``): with ``v = |S * ~sal|`` and only non-salient positions:
    ``g1 = v < p1``, ``g2 = p1 <= v < p2``, ``g3 = v >= p2``. Zeros (pruned weights) land in g1 when
    p1 > 0 and in g3 when p1 = p2 = 0."""
    v = np.abs(np.where(sal, 0.0, S))
    keep = ~sal
    return (v < p1) & keep, (v >= p1) & (v < p2) & keep, (v >= p2) & keep


def break_point_search(S: np.ndarray, sal: np.ndarray, n_quantiles: int = 160):
    """pprp/STBLLM@091a6b4c02634f3c25d84fba095cfe88469d100f ``utils/autosearch.py`` lines 68-105
    (second half of ``structural_searching``), on the salience matrix S (not the weights):

    * candidates: ``q_k = quantile(|S * ~sal|, t_k)``, ``t = linspace(0.10, 0.90, 160)`` over *all*
      entries of the block (zeros of salient columns and of pruned weights included; numpy's
      default linear rule; the reference's t are float32);
    * candidate p skipped when ``2p > q_160`` (the 90th-percentile value, strict >);
    * error: ``mean((S - [B1(S,g1) + B1(S,g2) + B1(S,g3) + B2(S,sal)])^2)`` over the whole block,
      B_o = :func:`residual_binarize` with o rounds (row-mean subtracted), groups
      :func:`group_masks` with (p, 2p); first minimum wins.

    Returns ``(p, 2p)``."""
    S = np.asarray(S, dtype=np.float64)
    g_sal = residual_binarize(S, sal, 2)
    v = np.abs(np.where(sal, 0.0, S)).ravel()
    cands = np.quantile(v, np.linspace(0.10, 0.90, n_quantiles))
    best, best_p = np.inf, None
    for p in cands:
        if 2 * p > cands[-1]:
            continue
        g1, g2, g3 = group_masks(S, sal, p, 2 * p)
        approx = (residual_binarize(S, g1, 1) + residual_binarize(S, g2, 1)
                  + residual_binarize(S, g3, 1) + g_sal)
        err = _mse(S, approx)
        if err < best:
            best, best_p = err, p
    return best_p, 2 * best_p


def block_masks(w_block: np.ndarray, u_diag: np.ndarray, up_lim: int = 50, n_quantiles: int = 160):
    """pprp/STBLLM@091a6b4c02634f3c25d84fba095cfe88469d100f ``utils/structure.py`` lines 17-49
    (``structural_guassian_distribution``, metric ``hessian``) with ``utils/bigptq.py`` lines
    170-176: ``S = w^2 / diag(U_b)^2`` where ``U`` is the upper Cholesky factor of the damped
    ``H^-1`` (bigptq.py 148-154) and ``w`` the block's current (already N:M-pruned) weights;
    :func:`salient_search` then :func:`break_point_search`. Returns ``(g1, g2, g3, salient)``."""
    S = np.asarray(w_block, dtype=np.float64) ** 2 / np.asarray(u_diag, dtype=np.float64)[None, :] ** 2
    sal = salient_search(S, up_lim)
    p1, p2 = break_point_search(S, sal, n_quantiles)
    g1, g2, g3 = group_masks(S, sal, p1, p2)
    return g1, g2, g3, sal


def braq_quantize(W: np.ndarray, H: np.ndarray, blocksize: int = 128, percdamp: float = 0.01,
                  up_lim: int = 50, n_quantiles: int = 160) -> np.ndarray:
    """pprp/STBLLM@091a6b4c02634f3c25d84fba095cfe88469d100f ``utils/bigptq.py`` lines 113-269
    (``BRAGPTQ.fasterquant``, GPTQ on): dead inputs zeroed (142-144), ``H += percdamp*mean(diag H)
    I`` and ``U = chol(H^-1)^T`` (148-154); per block (156-243) the four masks from the current
    weights, the block binarized at once with orders (1, 1, 1, 2) (line 118) using
    :func:`residual_binarize`, and ``(W_b - Q_b) / diag(U_b)`` pushed onto later columns through
    ``U[b, after]`` (243). The N:M mask is *not* re-applied: pruned positions in g1/g3 come back
    non-zero and compensation also writes into later pruned positions."""
    W = np.asarray(W, dtype=np.float64).copy()
    H = np.asarray(H, dtype=np.float64).copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H[np.diag_indices_from(H)] += percdamp * np.mean(np.diag(H))
    U = np.linalg.cholesky(np.linalg.inv(H)).T
    Q = np.zeros_like(W)
    for a in range(0, W.shape[1], blocksize):
        b = min(a + blocksize, W.shape[1])
        wb = W[:, a:b].copy()
        d = np.diag(U)[a:b]
        masks = block_masks(wb, d, up_lim, n_quantiles)
        qb = sum(residual_binarize(wb, mk, o) for mk, o in zip(masks, (1, 1, 1, 2)))
        Q[:, a:b] = qb
        W[:, b:] -= ((wb - qb) / d[None, :]) @ U[a:b, b:]
    return Q


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    rows, cols, toks, nseq = 16, 64, 256, 4
    W = rng.standard_normal((rows, cols))
    X = rng.standard_normal((toks, cols)) * rng.uniform(0.2, 3.0, cols)
    xn = xnorm_from_inputs(X, nseq)
    Hw = (2.0 / nseq) * X.T @ X
    print("xnorm", xn.shape, "matches hessian form:", np.allclose(xn, xnorm_from_hessian(Hw)))
    sc = importance(W, xn)
    print("importance", sc.shape)
    keep = nm_mask(sc, 4, 8)
    print("nm_mask", keep.shape, "kept per 8:", keep[:, :8].sum(1)[:4])
    layer_scores = [[importance(rng.standard_normal((rows, cols)) * (1 + 0.3 * l), xn)] for l in range(6)]
    D = [outlier_ratio(s, 6.0) for s in layer_scores]
    print("outlier ratios", np.round(D, 3))
    print("layerwise_prune_n (2:8)", layerwise_prune_n(D, 2), "layerwise_n (keep 6 of 8)", layerwise_n(D, 6, 8))
    Wp = W * keep
    Hq = X.T @ X
    U = np.linalg.cholesky(np.linalg.inv(Hq + 0.01 * np.mean(np.diag(Hq)) * np.eye(cols))).T
    S = Wp**2 / np.diag(U)[None, :] ** 2
    sal = salient_search(S, up_lim=8)
    print("salient_search", sal.shape, "salient columns:", int(sal[0].sum()))
    p1, p2 = break_point_search(S, sal)
    print("break_point_search", float(p1), float(p2))
    g1, g2, g3, g4 = block_masks(Wp[:, :32], np.diag(U)[:32], up_lim=8)
    print("block_masks", [int(g.sum()) for g in (g1, g2, g3, g4)])
    Q = braq_quantize(Wp, Hq, blocksize=32, up_lim=8)
    print("braq_quantize", Q.shape, "pruned positions now non-zero:", int(((Q != 0) & ~keep).sum()))
