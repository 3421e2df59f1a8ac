"""An independent numpy port of ARB-LLM's mask searches (ZHITENGLI/ARB-LLM, Li et al., ICLR 2025).

Read from commit 851276582026deb1e241cf7ecdc03e3c3e3e587b (files ``utils/autosearch_arb.py``,
``utils/structure_arb.py``, ``utils/mask.py``, ``binary_arb.py``, ``bigptq_arb.py``, ``run_arb.py``);
``utils/autosearch_arb.py`` is also stored at d57e7f79e4ab457130ab0a768be5068194daf61e, identical
except that the ARB-RC refit call at line 455 passes ``iter=0`` (851276... passes ``iter2=0``, a
keyword ``high_order_residual_alternating_order1_rc_nomean`` does not take). Line numbers below are
those of 851276.... Written from reading, not copied; float64; names and structure are ours.

The README's commands (all of them) run
``run_arb.py <model> c4 arb-x|arb-rc --blocksize 128 --salient_metric hessian --num_p 1 --order2_group``;
``run_arb.py``'s own default ``--salient_metric`` is ``magnitude``. ``bigptq_arb.py`` line 130 calls
the search with ``up_lim=50`` on the block ``W[:, a:b]`` of the current (GPTQ-updated) weights and
``H[a:b, a:b]`` where ``H`` has by then been overwritten with ``U = chol(H^-1)^T`` (lines 99-102), so
the "hessian" target is BiLLM's salience ``w^2 / diag(U_b)^2``.

Where the name ``S`` occurs in the ARB code it is *not* that salience: it is ARB-X's calibration Gram
matrix of the block (``bigptq_arb.py`` lines 115-119), and it enters a search only in ARB-X's
non-salient break-point search (``autosearch_arb.py`` line 319, :func:`x_error`).
"""
from __future__ import annotations

import numpy as np

COMMIT = "851276582026deb1e241cf7ecdc03e3c3e3e587b"
X_ERROR_DENOM = 2048 * 4096 * 128  # autosearch_arb.py line 8 (error_N); irrelevant to every argmin
LEVELS = np.linspace(0.10, 0.90, 81)  # quantile levels (the code: torch.linspace in float32)
EPS_LS = 1e-8  # the least-squares denominators' epsilon in binary_arb.py


# --------------------------------------------------------------------------- per-row statistics

def _mean_rows(v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of ``v`` over the ``mask`` entries of each row, as a column; 0 for an empty row
    (torch.nanmean over NaN-filled entries, NaN replaced by 0)."""
    n = mask.sum(1, keepdims=True)
    s = np.where(mask, v, 0.0).sum(1, keepdims=True)
    return np.divide(s, n, out=np.zeros_like(s), where=n > 0)


def _mean_cols_finite(v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over each column's ``mask`` entries where ``v`` is not NaN (torch.nanmean), 0 if none."""
    ok = mask & ~np.isnan(v)
    n = ok.sum(0, keepdims=True)
    s = np.where(ok, v, 0.0).sum(0, keepdims=True)
    return np.divide(s, n, out=np.zeros_like(s), where=n > 0)


def _nearest_pair(target: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signs ``(b0, b1)`` in {-1, +1} with ``b0 c0 + b1 c1`` nearest to ``target``, candidates tried
    in the code's order ``(-,-), (-,+), (+,-), (+,+)``, first one on ties (torch.argmin)."""
    cands = [(-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0)]
    dist = np.stack([np.abs(target - (s0 * c0 + s1 * c1)) for s0, s1 in cands], axis=-1)
    pick = np.argmin(dist, axis=-1)
    b0 = np.where(pick <= 1, -1.0, 1.0)
    b1 = np.where((pick == 0) | (pick == 2), -1.0, 1.0)
    return b0, b1


# --------------------------------------------------------------------------- sub-binarizers

def centred_fit(x: np.ndarray, mask: np.ndarray, order: int) -> np.ndarray:
    """``binary_arb.py`` lines 15-37 (``high_order_residual``, BiLLM's scorer, unchanged): ``order``
    rounds on the masked residual ``r`` of each row: ``mu = mean r``, ``alpha = mean |r - mu|``,
    ``r_hat = alpha sign(r - mu) + mu`` (sign(0) = 0); zero outside ``mask``."""
    out = np.zeros_like(x)
    for _ in range(order):
        r = np.where(mask, x - out, 0.0)
        mu = _mean_rows(r, mask)
        alpha = _mean_rows(np.abs(r - mu), mask)
        out = out + np.where(mask, alpha * np.sign(r - mu) + mu, 0.0)
    return out


def arb_fit_order1(x: np.ndarray, mask: np.ndarray, iters: int = 15) -> np.ndarray:
    """``binary_arb.py`` lines 74-119 (``high_order_residual_alternating_order1``, order 1): start
    from the centred fit ``alpha b + mu``; then ``iters`` rounds, per row:
    ``mu += mean_mask(w - w_hat)``; ``alpha = <b, w - mu> / (<b, b> + 1e-8)`` (old signs);
    ``b = sign(w - mu)``; ``w_hat = alpha b + mu`` (the new signs with that alpha)."""
    xm = np.where(mask, x, 0.0)
    mu = _mean_rows(xm, mask)
    b = np.where(mask, np.sign(xm - mu), 0.0)
    fit = np.where(mask, _mean_rows(np.abs(xm - mu), mask) * b + mu, 0.0)
    for _ in range(iters):
        mu = mu + _mean_rows(xm - fit, mask)
        alpha = (b * (xm - mu * mask)).sum(1, keepdims=True) / ((b * b).sum(1, keepdims=True) + EPS_LS)
        b = np.sign(xm - mu * mask)
        fit = np.where(mask, alpha * b + mu, 0.0)
    return fit


def arb_fit_order2(x: np.ndarray, mask: np.ndarray, iters: int = 15) -> np.ndarray:
    """``binary_arb.py`` lines 294-351 (``high_order_residual_alternating_mean``): start from the
    2-round centred fit (one mean ``mu = mu_1 + mu_2``); then ``iters`` rounds, per row:
    ``mu += mean_mask(w - w_hat)``; ``alpha_1 = <b_1, w - mu - alpha_2 b_2> / (<b_1, b_1> + 1e-8)``,
    then ``alpha_2`` likewise with the new ``alpha_1``; ``(b_1, b_2)`` refitted jointly to the nearest
    of ``+-alpha_1 +- alpha_2`` to ``w - mu``; ``w_hat = alpha_1 b_1 + alpha_2 b_2 + mu``."""
    xm = np.where(mask, x, 0.0)
    mu = np.zeros((x.shape[0], 1))
    alphas, signs = [], []
    fit = np.zeros_like(x)
    for _ in range(2):
        r = np.where(mask, xm - fit, 0.0)
        m = _mean_rows(r, mask)
        a = _mean_rows(np.abs(r - m), mask)
        s = np.where(mask, np.sign(r - m), 0.0)
        mu, fit = mu + m, fit + np.where(mask, a * s + m, 0.0)
        alphas.append(a), signs.append(s)
    for _ in range(iters):
        mu = mu + _mean_rows(xm - fit, mask)
        centred = xm - mu * mask
        for k in (0, 1):
            bk, other = signs[k] * mask, alphas[1 - k] * signs[1 - k] * mask
            alphas[k] = (bk * (centred - other)).sum(1, keepdims=True) / ((bk * bk).sum(1, keepdims=True) + EPS_LS)
        signs = list(_nearest_pair(centred, alphas[0], alphas[1]))
        fit = np.where(mask, alphas[0] * signs[0] + alphas[1] * signs[1] + mu, 0.0)
    return fit


def _rc_start(r: np.ndarray, mask: np.ndarray):
    """Row scale ``a_i = mean_mask |r_i.|``, column scale ``c_j = nanmean_mask |r_.j / a_.|``, signs."""
    a = _mean_rows(np.abs(r), mask)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.abs(r) / a
    c = _mean_cols_finite(ratio, mask)
    return a, c, np.where(mask, np.sign(r), 0.0)


def rc_fit_order2(x: np.ndarray, mask: np.ndarray, iters: int = 15) -> np.ndarray:
    """``binary_arb.py`` lines 182-250 (``high_order_residual_alternating_order2_rc_nomean``), no mean:
    two terms ``(a_k c_k^T) * B_k`` started by :func:`_rc_start` on ``w`` then on its residual; then
    ``iters`` rounds: for k = 1, 2 with ``W' = w - term_other``: ``a_k = sum_j g W' / (sum_j g^2 + 1e-8)``
    (``g = c_k B_k``), then ``c_k = sum_i h W' / (sum_i h^2 + 1e-8)`` (``h = a_k B_k``); then the signs
    refitted jointly to the nearest of ``+-a_1c_1 +- a_2c_2`` to ``w`` (the masked ``w``)."""
    xm = np.where(mask, x, 0.0)
    terms, fit = [], np.zeros_like(x)
    for _ in range(2):
        a, c, s = _rc_start(np.where(mask, xm - fit, 0.0), mask)
        terms.append([a, c, s])
        fit = fit + a * c * s * mask
    for _ in range(iters):
        for k in (0, 1):
            a, c, s = terms[k]
            oa, oc, os_ = terms[1 - k]
            w_other = xm - oa * oc * os_ * mask
            g = c * s * mask
            a = (g * w_other).sum(1, keepdims=True) / ((g * g).sum(1, keepdims=True) + EPS_LS)
            h = a * s * mask
            c = (h * w_other).sum(0, keepdims=True) / ((h * h).sum(0, keepdims=True) + EPS_LS)
            terms[k] = [a, c, s]
        b0, b1 = _nearest_pair(xm, terms[0][0] * terms[0][1], terms[1][0] * terms[1][1])
        terms[0][2], terms[1][2] = b0, b1
        fit = (terms[0][0] * terms[0][1] * b0 + terms[1][0] * terms[1][1] * b1) * mask
    return fit


def rc_fit_order1(x: np.ndarray, mask: np.ndarray, iters: int = 15) -> np.ndarray:
    """``binary_arb.py`` lines 252-292 (``high_order_residual_alternating_order1_rc_nomean``): one
    term ``(a c^T) * B`` from :func:`_rc_start`, then ``iters`` rounds of the least-squares ``a`` then
    ``c`` with the signs fixed. The search calls it with 0 rounds (``autosearch_arb.py`` line 455)."""
    xm = np.where(mask, x, 0.0)
    a, c, s = _rc_start(xm, mask)
    for _ in range(iters):
        g = c * s * mask
        a = (g * xm).sum(1, keepdims=True) / ((g * g).sum(1, keepdims=True) + EPS_LS)
        h = a * s * mask
        c = (h * xm).sum(0, keepdims=True) / ((h * h).sum(0, keepdims=True) + EPS_LS)
    return a * c * s * mask


# --------------------------------------------------------------------------- errors, masks

def mse(target: np.ndarray, approx: np.ndarray) -> float:
    """``autosearch_arb.py`` lines 10-12 (``error_computing``): ``mean((T - T_hat)^2)``."""
    return float(np.mean((target - approx) ** 2))


def x_error(target: np.ndarray, approx: np.ndarray, gram: np.ndarray) -> float:
    """``autosearch_arb.py`` lines 14-18 (``error_computing_x_all_accelerate``): with
    ``D = T - T_hat`` (rows x block columns) and ``G`` the block Gram matrix,
    ``sum((D^T D) * G) / (2048*4096*128) = sum_i d_i G d_i^T / N`` -- the output error
    ``||D X_b^T||^2`` averaged over the calibration samples, up to the constant ``N``."""
    d = target - approx
    return float(np.einsum("ij,jk,ik->", d, gram, d) / X_ERROR_DENOM)


def split_by(target: np.ndarray, region: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """``utils/mask.py`` lines 7-18 (``generate_structural_mask``, called with ``~region``): within
    ``region``, ``|T| < p`` (concentrated) and ``|T| >= p`` (sparse)."""
    a = np.abs(np.where(region, target, 0.0))
    return (a < p) & region, (a >= p) & region


def calibration_gram(samples: np.ndarray, a: int, b: int) -> np.ndarray:
    """``bigptq_arb.py`` lines 115-119 (ARB-X only; ``samples``: (n, seq, in) inputs of the layer):
    ``G = mean_n X_n[:, a:b]^T X_n[:, a:b]`` -- the block of ``H / 2`` before damping."""
    xb = samples[:, :, a:b].astype(np.float64)
    return np.einsum("nsi,nsj->ij", xb, xb) / samples.shape[0]


def search_target(w_block: np.ndarray, u_diag: np.ndarray | None, metric: str = "hessian") -> np.ndarray:
    """``utils/structure_arb.py`` lines 11-16: ``"hessian"``: ``w^2 / diag(U_b)^2`` (U the upper
    Cholesky factor of the damped ``H^-1``, ``U_b`` its diagonal block); ``"magnitude"``: ``w``."""
    if metric == "hessian":
        return w_block**2 / u_diag[None, :] ** 2
    if metric == "magnitude":
        return w_block.copy()
    raise ValueError(metric)


# --------------------------------------------------------------------------- the search

def arb_search(t: np.ndarray, method: str = "arb", up_lim: int = 50, num_p: int = 1,
               gram: np.ndarray | None = None, order2_group: bool = False) -> dict:
    """``autosearch_arb.py``: ``structural_searching_multip_alternating_group`` (lines 100-219,
    ``method="arb"``), ``..._group_x`` (221-340, ``"x"``), ``..._group_rc`` (342-463, ``"rc"``), all
    on the target ``T`` (:func:`search_target`), never on the weights; first minimum on ties.

    1. Salient columns (lines 104-128; the same in all three and in BiLLM): columns ranked by
       ``sum_i |T_ij|``; for ``k = 1 .. up_lim-1`` score ``mse(T, centred_fit(T, top-k, 2) +
       centred_fit(T, rest, 2))``.
    2. The salient columns' fit ``T_sal`` (line 130 / 251 / 372): :func:`arb_fit_order2` ("arb",
       "x") or :func:`rc_fit_order2` ("rc"), 15 rounds. Only ARB-X's error sees it (step 4).
    3. ``order2_group`` (the paper's column-group bitmap, lines 135-178): candidates are the 81
       quantiles (0.10 ... 0.90) of the *non-zero* ``|T|`` inside the salient columns; the salient
       entries split at p into ``|T| >= p`` and ``< p``, each scored with ``centred_fit(., 2)``, by
       ``mse`` (the other entries count as ``T``, a constant).
    4. Break-point (lines 180-217): candidates are the 81 quantiles of ``|T * ~salient|`` over the
       whole block, zeros included (as BiLLM); the non-salient entries split at p
       (:func:`split_by`), each scored with ``centred_fit(., 1)``, plus ``T_sal``; error ``mse``
       ("arb" line 198, "rc" line 441) or :func:`x_error` with the calibration Gram ``gram``
       ("x" line 319). Then the sparse group's fit is redone (:func:`arb_fit_order1`, or
       :func:`rc_fit_order1` with 0 rounds) and added to ``T_sal`` -- used only when ``num_p > 1``.

    ``num_p > 1`` repeats steps 3 and 4 on what is left, keeping the running minimum (the code does
    not reset it), falling back to the first quantile when nothing beats it. Returns a dict with
    ``k``, ``salient`` (column mask), ``cgb_splits``, ``splits``, ``masks`` (the code's order:
    salient group(s) first, then sparse, concentrated) and ``orders`` (``bigptq_arb.py`` 123-128)."""
    if method not in ("arb", "x", "rc"):
        raise ValueError(method)
    if method == "x" and gram is None:
        raise ValueError("ARB-X's break-point search needs the calibration Gram matrix")
    strength = np.abs(t).sum(0)
    ranked = np.argsort(-strength, kind="stable")[:up_lim]

    def columns(idx):
        m = np.zeros(t.shape, bool)
        m[:, idx] = True
        return m

    k_best, e_best = None, np.inf
    for k in range(1, up_lim):
        sal = columns(ranked[:k])
        e = mse(t, centred_fit(t, sal, 2) + centred_fit(t, ~sal, 2))
        if e < e_best:
            k_best, e_best = k, e
    salient = columns(ranked[:k_best])
    t_sal = rc_fit_order2(t, salient) if method == "rc" else arb_fit_order2(t, salient)

    masks, splits, cgb_splits = [], [], []
    if order2_group:
        inner, acc, e_in, hi_fit = salient.copy(), np.zeros_like(t), np.inf, None
        for _ in range(num_p):
            vals = np.abs(np.where(inner, t, 0.0)).ravel()
            cands = np.quantile(vals[vals != 0], LEVELS)
            chosen = None
            for p in cands:
                lo, hi = split_by(t, inner, p)
                fit_hi = centred_fit(t, hi, 2)
                e = mse(t, centred_fit(t, lo, 2) + fit_hi + acc)
                if e < e_in:
                    e_in, chosen, hi_fit = e, (p, lo, hi), fit_hi
            if chosen is None:  # the code prints "False 2" and keeps its previous group fit
                chosen = (cands[0],) + split_by(t, inner, cands[0])
            p, lo, hi = chosen
            cgb_splits.append(float(p))
            inner = inner & ~hi
            masks.append(hi)
            acc = acc + hi_fit
        masks.append(lo)
    else:
        masks.append(salient)

    taken, e_out = salient.copy(), np.inf
    for _ in range(num_p):
        cands = np.quantile(np.abs(np.where(taken, 0.0, t)).ravel(), LEVELS)
        chosen = None
        for p in cands:
            lo, hi = split_by(t, ~taken, p)
            approx = centred_fit(t, lo, 1) + centred_fit(t, hi, 1) + t_sal
            e = x_error(t, approx, gram) if method == "x" else mse(t, approx)
            if e < e_out:
                e_out, chosen = e, (p, lo, hi)
        if chosen is None:  # the code prints "False"
            chosen = (cands[0],) + split_by(t, ~taken, cands[0])
        p, lo, hi = chosen
        refit = rc_fit_order1(t, hi, iters=0) if method == "rc" else arb_fit_order1(t, hi)
        masks.append(hi)
        splits.append(float(p))
        t_sal = t_sal + refit
        taken = taken | hi
    masks.append(lo)
    orders = [2] * (num_p + 1) + [1] * (num_p + 1) if order2_group else [2] + [1] * (num_p + 1)
    return {"k": k_best, "salient": salient[0].copy(), "cgb_splits": cgb_splits, "splits": splits,
            "masks": masks, "orders": orders}


def block_masks(w_block: np.ndarray, u_diag: np.ndarray | None, method: str = "arb", metric: str = "hessian",
                up_lim: int = 50, num_p: int = 1, gram: np.ndarray | None = None,
                order2_group: bool = False) -> dict:
    """``utils/structure_arb.py`` lines 10-36 (``structural_guassian_distribution_multip_alternating_group_x``)
    as ``bigptq_arb.py`` line 130 calls it (``up_lim=50``): the target from ``metric``, then
    :func:`arb_search`. The masks then select entries of the *weights* ``w_block``, each group
    binarized by the method's fit (``binary_arb.py`` ``Binarization.quantize``)."""
    return arb_search(search_target(w_block, u_diag, metric), method, up_lim, num_p, gram, order2_group)


# --------------------------------------------------------------------------- smoke run

if __name__ == "__main__":
    rng = np.random.default_rng(0)
    rows, cols, n, seq = 24, 32, 6, 40
    W = rng.standard_normal((rows, cols)) * (1 + 3 * (rng.random(cols) < 0.1))
    X = rng.standard_normal((n, seq, cols)) * rng.uniform(0.2, 2.0, cols)
    H = 2.0 / n * np.einsum("nsi,nsj->ij", X, X)
    G = calibration_gram(X, 0, cols)
    assert np.allclose(G, H / 2)
    Hd = H + 0.01 * np.mean(np.diag(H)) * np.eye(cols)
    U = np.linalg.cholesky(np.linalg.inv(Hd)).T
    u = np.diag(U)
    up = 12

    # x_error is the calibration output error / N
    D = rng.standard_normal((rows, cols))
    out_err = sum(np.sum((D @ X[i].T) ** 2) for i in range(n)) / n
    assert np.isclose(x_error(D, 0 * D, G) * X_ERROR_DENOM, out_err)

    results = {}
    for order2_group in (False, True):
        for method in ("arb", "x", "rc"):
            r = block_masks(W, u, method, "hessian", up, 1, G, order2_group)
            union = np.zeros_like(W, dtype=int)
            for m in r["masks"]:
                union += m
            assert (union == 1).all(), "masks must partition the block"
            assert len(r["masks"]) == len(r["orders"])
            results[method, order2_group] = r
            print(f"{method:3s} cgb={order2_group!s:5s} k={r['k']:2d} cgb_splits={np.round(r['cgb_splits'], 4)} "
                  f"split={r['splits'][0]:.4f} fractions={[round(float(m.mean()), 3) for m in r['masks']]}")
    # with the MSE the salient fit is a constant: ARB and ARB-RC choose the same masks
    for g in (False, True):
        a, c = results["arb", g], results["rc", g]
        assert all((m1 == m2).all() for m1, m2 in zip(a["masks"], c["masks"]))

    # without CGB, ARB / ARB-RC masks are BiLLM's reference masks (tests/reference/billm_ref.py)
    try:
        from . import billm_ref  # type: ignore
    except ImportError:
        try:
            import billm_ref  # type: ignore
        except ImportError:
            billm_ref = None
    if billm_ref is not None:
        m1, m2, m3 = billm_ref.block_masks(W, u, up)
        mine = results["arb", False]["masks"]
        same = (mine[0] == m3).all() and (mine[1] == m2).all() and (mine[2] == m1).all()
        print("ARB (no CGB) masks == billm_ref masks:", bool(same))
        assert same
        mx = results["x", False]["masks"]
        print("ARB-X break-point == BiLLM's:", bool((mx[1] == m2).all()))

    # magnitude metric runs too
    r = block_masks(W, None, "x", "magnitude", up, 2, G, True)
    print("magnitude, num_p=2, cgb:", r["k"], np.round(r["cgb_splits"], 4), np.round(r["splits"], 4), r["orders"])
    print("ok")
