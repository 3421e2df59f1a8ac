"""An independent numpy port of OneBit's reference layer and its initialisation (xuyuzhuang11/OneBit).

Read from commit 42d6d7b54016660cbc21938fbf455aaa83797a69 (the files used here last changed in
380a6aedc3c060993056ff50b79065e893be99ae); written from reading, not copied. float64 throughout.

Files read:

- ``transformers/src/transformers/models/bitnet.py``: the sign estimator (lines 14-28), the training
  layer ``BitLinear`` (lines 31-68) and the packed inference layer ``BitLinearInf`` (lines 71-120);
- ``scripts/build_start_ckpt.py``: how the student is built from the full-precision weights (lines 18-34);
- ``llama_factory/llamafactory/kd.py``: the training objective (lines 34-40, 42-113), with the weights
  from ``scripts/llama_7b.sh`` lines 29-31 (the other three scripts use the same weights);
- ``scripts/convert_llama_to_infer_ckpt.py`` lines 7-15, 29-30: packing the signs for inference.
"""
from __future__ import annotations

import numpy as np

LN_EPS = 1e-5  # torch.nn.LayerNorm's default; bitnet.py line 47 passes no eps
LATENT_MAGNITUDE = 0.01  # build_start_ckpt.py line 34
STE_FLOOR = 1.001  # bitnet.py line 23


def torch_sign(x: np.ndarray) -> np.ndarray:
    """``torch.sign`` as the training layer uses it (``bitnet.py`` line 18, line 60): -1, 0 or +1, so a
    latent weight that is exactly 0 contributes nothing."""
    return np.sign(x)


def packed_sign(x: np.ndarray) -> np.ndarray:
    """The sign the *packed* checkpoint holds (``convert_llama_to_infer_ckpt.py`` lines 10 and 30,
    ``bitnet.py`` lines 98-110): ``torch.sign`` first, then bit = (1 - s) / 2 truncated to uint8, so
    s = 0 gives bit 0, which the inference layer unpacks as +1. Net effect: sign with 0 -> +1."""
    return np.where(np.sign(x) < 0, -1.0, 1.0)


def sign_estimator_grad(latent: np.ndarray) -> np.ndarray:
    """The backward rule the reference uses for sign (``bitnet.py`` lines 14-24, ``SignSTEFunc``):
    ``dL/dW = dL/dsign(W) * (1.001 - tanh(W)^2)``, on the raw latent value (no rescaling, no clipping;
    the factor never drops below 0.001). The latent weight is an ``nn.Parameter`` (line 38), so the
    signs are trained through this rule."""
    return STE_FLOOR - np.tanh(latent) ** 2


def layer_norm_plain(y: np.ndarray, eps: float = LN_EPS) -> np.ndarray:
    """``nn.LayerNorm(out_features, elementwise_affine=False)`` (``bitnet.py`` line 47): over the last
    axis, subtract the mean and divide by sqrt(biased variance + eps); no weight, no bias."""
    mu = y.mean(-1, keepdims=True)
    var = ((y - mu) ** 2).mean(-1, keepdims=True)
    return (y - mu) / np.sqrt(var + eps)


def onebit_forward(x: np.ndarray, latent: np.ndarray, out_scale: np.ndarray, in_scale: np.ndarray,
                   bias: np.ndarray | None = None, eps: float = LN_EPS, packed: bool = False) -> np.ndarray:
    """``BitLinear.forward`` (``bitnet.py`` lines 58-68; ``BitLinearInf.forward``, lines 112-120, is the
    same with the unpacked signs): for ``x`` (..., in), latent (out, in), ``out_scale`` = weight_scale
    (out), ``in_scale`` = input_factor (in)::

        y = LN( ((x * in_scale) @ sign(latent)^T) * out_scale )  [+ bias, added after the norm]

    The LayerNorm is one per layer, parameter-free (line 47). ``bias`` exists only where the layer was
    built with ``bias=True``: the LLaMA student uses ``bias=False`` for the MLP and
    ``config.attention_bias`` (False for LLaMA) for q/k/v/o (``modeling_bitllama.py`` lines 190-192,
    294-297); embeddings and ``lm_head`` stay ``nn.Linear``/full precision (line 1345).
    ``packed=True`` uses the inference sign (:func:`packed_sign`)."""
    s = packed_sign(latent) if packed else torch_sign(latent)
    y = (x * in_scale) @ s.T
    y = y * out_scale
    y = layer_norm_plain(y, eps)
    return y + bias if bias is not None else y


def rank1_nmf(m: np.ndarray, max_iter: int = 200, tol: float = 1e-4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The rank-1 NMF of the non-negative ``m`` (rows, cols) that ``build_start_ckpt.py`` line 21 asks
    scikit-learn for (``NMF(n_components=1, init='random', random_state=0)``: Frobenius loss,
    coordinate-descent solver, no regularisation, 200 iterations, tolerance 1e-4; requirements pin
    scikit-learn 1.4.2). Re-derived from that solver's published algorithm:

    - start: both factors ``sqrt(mean(m)) * |N(0, 1)|`` from ``RandomState(seed)``, the column factor
      drawn first;
    - each iteration, the row factor then the column factor is set to its exact non-negative least
      squares value given the other (for one component a coordinate-descent sweep is exactly that);
    - stop when the summed |projected gradient| of an iteration falls to ``tol`` times the first one's.

    The factors are *not* normalised: how the scale splits between them is whatever the solver ends at.
    Returns ``(row_factor (rows,), col_factor (cols,))``."""
    rows, cols = m.shape
    rng = np.random.RandomState(seed)
    avg = np.sqrt(m.mean())
    col = np.abs(avg * rng.standard_normal(cols))
    row = np.abs(avg * rng.standard_normal(rows))
    first = None
    for _ in range(max_iter):
        viol = 0.0
        for fixed, target, data in ((col, row, m), (row, col, m.T)):
            h = fixed @ fixed
            g = target * h - data @ fixed
            viol += np.abs(np.where(target == 0, np.minimum(g, 0.0), g)).sum()
            if h != 0:
                target[:] = np.maximum(target - g / h, 0.0)
        if first is None:
            first = viol
        if first == 0 or viol / first <= tol:
            break
    return row, col


def onebit_init(w: np.ndarray, max_iter: int = 200, tol: float = 1e-4, seed: int = 0) -> dict[str, np.ndarray]:
    """The starting student layer built from a full-precision weight ``w`` (out, in)
    (``build_start_ckpt.py`` lines 25-34, for q/k/v/o/up/gate/down of every block, lines 18-19):

    - ``|w| ~ out_scale in_scale^T`` by rank-1 NMF (:func:`rank1_nmf`): ``weight_scale`` = the
      (out,) factor (line 33), ``input_factor`` = the (in,) factor (line 32);
    - the latent weight is *replaced* by ``0.01 * sign(w)`` (line 34, ``torch.sign``: 0 stays 0), so
      QAT starts with every latent at magnitude 0.01 and the full-precision magnitudes live only in
      the two vectors.

    (``BitLinear.reset_parameters``, ``bitnet.py`` lines 50-56, sets both vectors to 1; this script
    overwrites them before training.)"""
    out_scale, in_scale = rank1_nmf(np.abs(w), max_iter, tol, seed)
    return {"latent": LATENT_MAGNITUDE * torch_sign(w), "out_scale": out_scale, "in_scale": in_scale}


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def reference_objective(student_logits, teacher_logits, student_states, teacher_states, lm_loss=0.0,
                        alpha: float = 1.0, logit_scale: float = 0.01, beta: float = 1.0) -> float:
    """``KDTrainer.compute_loss`` (``kd.py`` lines 42-113) with the scripts' weights (``llama_7b.sh``
    lines 29-31: alpha 1, beta 1, scale 0.01; attention term off):

    - logit term (lines 34-40, 73-74): ``KL(softmax(t) || softmax(s))`` at temperature 1 with
      ``reduction='batchmean'`` on (B, T, V) logits: summed over every position and class, divided by
      B only (padding positions included), times ``logit_scale``; ``(1 - alpha)`` weighs the
      model's own LM loss (line 80), 0 here;
    - hidden term (lines 85-97): for ``i < n_layers`` of the HF ``hidden_states`` tuple (the
      embedding output and the outputs of blocks 0 .. n-2; the last, post-norm state is never used),
      ``mean over all tokens || t_i/||t_i|| - s_i/||s_i|| ||^2``, summed over ``i``, times ``beta``.

    ``*_states``: lists of (B, T, D) arrays, the n_layers + 1 HF hidden states."""
    ls, lt = _log_softmax(student_logits), _log_softmax(teacher_logits)
    kl = (np.exp(lt) * (lt - ls)).sum() / student_logits.shape[0]
    total = alpha * logit_scale * kl + (1 - alpha) * lm_loss
    hid = 0.0
    for s, t in zip(student_states[:-1], teacher_states[:-1]):
        s2, t2 = s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1])
        d = t2 / np.linalg.norm(t2, axis=1, keepdims=True) - s2 / np.linalg.norm(s2, axis=1, keepdims=True)
        hid += (np.linalg.norm(d, axis=1) ** 2).mean()
    return float(total + beta * hid)


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, (6, 16))
    w[0, 0] = 0.0  # a zero weight: sign 0 in training, +1 once packed
    x = rng.normal(size=(3, 16))
    p = onebit_init(w)
    y = onebit_forward(x, p["latent"], p["out_scale"], p["in_scale"])
    print("out", y.shape, "token means", np.round(y.mean(-1), 12), "token vars", np.round(y.var(-1), 6))

    # the NMF product is the rank-1 SVD of |W| (non-negative optimum), whatever split the solver ends at
    U, S, Vt = np.linalg.svd(np.abs(w))
    svd1 = S[0] * np.outer(U[:, 0], Vt[0])
    print("|NMF ab^T - SVD rank-1| max", np.abs(np.outer(p["out_scale"], p["in_scale"]) - svd1).max())
    print("split: ||a|| / ||b|| =", np.linalg.norm(p["out_scale"]) / np.linalg.norm(p["in_scale"]), "(SVD's sqrt split gives 1)")
    try:  # the library the reference script calls, when it is installed
        from sklearn.decomposition import NMF

        nmf = NMF(n_components=1, init="random", random_state=0)
        ra = nmf.fit_transform(np.abs(w))[:, 0]
        print("vs scikit-learn: row", np.abs(ra - p["out_scale"]).max(), "col", np.abs(nmf.components_[0] - p["in_scale"]).max())
    except ImportError:
        pass

    # a global rescale of either vector changes the output only through eps (the norm removes it)
    pre = ((x * p["in_scale"]) @ torch_sign(p["latent"]).T * p["out_scale"]).var(-1)
    print("pre-norm token vars", pre, "(compare eps = 1e-5)")
    print("scale-invariant with eps=0:", np.allclose(onebit_forward(x, p["latent"], p["out_scale"], p["in_scale"], eps=0.0),
                                                      onebit_forward(x, p["latent"], 7 * p["out_scale"], p["in_scale"], eps=0.0)))
    # without the norm the layer at init is the SVID approximation sign(W) * (a b^T)
    q = torch_sign(w) * np.outer(p["out_scale"], p["in_scale"])
    print("pre-norm == x Q^T:", np.allclose((x * p["in_scale"]) @ torch_sign(p["latent"]).T * p["out_scale"], x @ q.T))
    print("packed differs only via the zero weight:", np.abs(onebit_forward(x, p["latent"], p["out_scale"], p["in_scale"], packed=True) - y).max() > 0)
    print("estimator at init (|w| = 0.01):", np.unique(np.round(sign_estimator_grad(p["latent"]), 6)))
    B, T, D, V = 2, 4, 5, 7
    st = [rng.normal(size=(B, T, D)) for _ in range(3)]
    print("objective(teacher, teacher) =", reference_objective(np.ones((B, T, V)), np.ones((B, T, V)), st, st))
