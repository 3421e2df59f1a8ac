"""Loss-landscape probes: why binary networks are hard to train.

- :func:`interpolate`: loss/accuracy along ``theta(a) = theta_fp + a (Q(theta_fp) - theta_fp)``,
  from the full-precision weights (a=0) to their binarized/quantized version (a=1) and beyond.
- :func:`random_direction` + :func:`surface`: 1-D and 2-D slices ``L(theta + a d1 + b d2)`` along
  random Gaussian directions, filter-normalised as in Li et al. 2018 ("Visualizing the Loss
  Landscape of Neural Nets"): each row (filter) of a direction is rescaled to the norm of the
  matching weight row; biases and layer-norm parameters (1-D tensors) are left out by default.
- :func:`lanczos_eigenvalues` (Lanczos with full reorthogonalisation: the extreme eigenvalues from
  the tridiagonal matrix of a small Krylov space; usually 5-10 Hessian-vector products instead of
  the 20+ power iteration needs), :func:`top_eigenvalues` (power iteration with deflation) and
  :func:`hessian_trace`
  (Hutchinson: ``tr H = E[v^T H v]`` with Rademacher ``v``, reported with its standard error), both
  on Hessian-vector products by double backward. For a binarized model they are computed on the
  latent weights through the straight-through estimator (the curvature QAT's optimizer sees).

The generic functions take ``loss_fn()`` (a closure over the current values of ``params``), so
they are tested on a quadratic with a known Hessian; :class:`ModelLoss` makes such a closure for a
classifier on a fixed set of evaluation batches. Every probe restores the weights bit for bit.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from binlab.data import EncodedSplit
from binlab.nn import objective
from binlab.nn.quantize import MethodConfig, QuantSpec, Rule, is_training_aux, quantizable
from binlab.training.train import EVAL_BATCH


class ModelLoss:
    """Mean cross-entropy (and accuracy) of ``model`` on fixed batches: the first ``rows`` rows of ``split``.

    Dropout is off; quantized components use their STE path when ``ste=True`` (needed for gradients
    through binarized weights), which leaves forward values unchanged.
    """

    def __init__(self, model: nn.Module, split: EncodedSplit, rows: int = 512, batch_size: int = EVAL_BATCH, ste: bool = True):
        self.model = model
        self.task = objective.task_of(model)
        self.batches = list(split.head(rows).batches(batch_size))
        self.n = sum(len(y) for _, y in self.batches)
        model.eval()
        if ste:
            for m in quantizable(model).values():
                if hasattr(m, "quantizer"):
                    m.train()  # STE path; dropout modules stay in eval mode

    def params(self, include_1d: bool = False) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters()
                if p.requires_grad and (include_1d or p.ndim >= 2) and not is_training_aux(n)]

    def __call__(self) -> torch.Tensor:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        total = 0.0
        units = 0.0
        with sdpa_kernel([SDPBackend.MATH]):  # the fused CPU kernel has no double backward (needed for H v)
            for x, y in self.batches:
                nll, n, _ = objective.row_stats(self.model(x), x, y, self.task)
                total = total + nll.sum()
                units += float(n.sum())
        return total / units

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Mean loss per unit and accuracy (a language model: per token, next-token top-1)."""
        loss, units, hits = 0.0, 0.0, 0.0
        for x, y in self.batches:  # modes untouched: quantized components stay on their STE path
            nll, n, h = objective.row_stats(self.model(x), x, y, self.task)
            loss, units, hits = loss + float(nll.sum()), units + float(n.sum()), hits + float(h.sum())
        return loss / units, hits / units


@contextmanager
def _saved(params: list[torch.Tensor]):
    """Restore ``params`` bit for bit on exit."""
    saved = [p.detach().clone() for p in params]
    try:
        yield saved
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


def random_direction(named_params, seed: int = 0, filter_norm: bool = True) -> list[torch.Tensor]:
    """A Gaussian direction, one tensor per parameter; with ``filter_norm`` each row gets the norm of the weight's row."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _, p in named_params:
        d = torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device)
        if filter_norm:
            if p.ndim >= 2:
                d2, p2 = d.reshape(d.shape[0], -1), p.detach().reshape(p.shape[0], -1)
                d = (d2 * (p2.norm(dim=1, keepdim=True) / d2.norm(dim=1, keepdim=True).clamp_min(1e-12))).reshape(p.shape)
            else:
                d = d * (p.detach().norm() / d.norm().clamp_min(1e-12))
        out.append(d)
    return out


def surface(loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor], d1: list[torch.Tensor], d2: list[torch.Tensor] | None,
            alphas, betas=(0.0,), callback=None, metric: Callable[[], tuple[float, float]] | None = None) -> dict:
    """``L(theta + a d1 + b d2)`` on the grid ``alphas x betas`` (d2=None: a 1-D slice). Returns
    ``{"alphas", "betas", "loss": (len(betas), len(alphas)), "accuracy": same or None}``."""
    alphas, betas = np.asarray(alphas, float), np.asarray(betas, float)
    loss = np.zeros((len(betas), len(alphas)))
    acc = np.zeros_like(loss) if metric is not None else None
    total, done = len(alphas) * len(betas), 0
    with _saved(params) as base, torch.no_grad():
        for i, b in enumerate(betas):
            for j, a in enumerate(alphas):
                for p, p0, u, k in zip(params, base, d1, range(len(params))):
                    p.copy_(p0 + a * u + (b * d2[k] if d2 is not None else 0))
                if metric is not None:
                    loss[i, j], acc[i, j] = metric()
                else:
                    loss[i, j] = float(loss_fn())
                done += 1
                if callback:
                    callback(done, total)
    return {"alphas": alphas, "betas": betas, "loss": loss, "accuracy": acc}


def _quantized_copy(model: nn.Module, spec: QuantSpec | None, calib: EncodedSplit | None) -> nn.Module:
    """A CPU copy of ``model`` following ``spec``; methods that need data are calibrated on ``calib``."""
    from binlab.training.qat import ptq

    m = copy.deepcopy(model).cpu().eval()
    return ptq(m, spec, inplace=True, calib=calib) if spec is not None else m


def interpolate(model: nn.Module, spec: QuantSpec, split: EncodedSplit, alphas=np.linspace(-0.5, 1.5, 21), rows: int = 512,
                callback=None, calib: EncodedSplit | None = None) -> dict:
    """Loss/accuracy along the line from the fp weights (a=0) to their quantized values (a=1).

    Works on a copy: the quantized components' weights are set to ``w + a (Q(w) - w)`` and
    evaluated in full precision, so a=1 reproduces the PTQ model exactly.
    """
    fp = copy.deepcopy(model).cpu().eval()
    probe = _quantized_copy(fp, spec, calib)
    targets = {n: m for n, m in quantizable(probe).items() if hasattr(m, "quantizer")}
    if not targets:
        raise ValueError("the spec quantizes nothing; choose at least one component")
    mods = quantizable(fp)
    params = [mods[n].weight for n in targets]
    with torch.no_grad():
        dirs = [targets[n].quantized_weight() - mods[n].weight.detach() for n in targets]
    ml = ModelLoss(fp, split, rows=rows, ste=False)
    return surface(ml, params, dirs, None, alphas, callback=callback, metric=ml.evaluate) | {"components": list(targets)}


def hvp(loss_fn, params: list[torch.Tensor], v: list[torch.Tensor]) -> list[torch.Tensor]:
    """Hessian-vector product ``H v`` by double backward."""
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * u).sum() for g, u in zip(grads, v))
    return [h.detach() for h in torch.autograd.grad(dot, params)]


def _dot(a, b):
    return float(sum((x * y).sum() for x, y in zip(a, b)))


def top_eigenvalues(loss_fn, params: list[torch.Tensor], k: int = 1, iters: int = 30, tol: float = 1e-4, seed: int = 0,
                    callback=None) -> list[float]:
    """The ``k`` largest-magnitude Hessian eigenvalues by power iteration with deflation."""
    g = torch.Generator().manual_seed(seed)
    found_vals, found_vecs = [], []
    for idx in range(k):
        v = [torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device) for p in params]
        norm = math.sqrt(_dot(v, v))
        v = [x / norm for x in v]
        lam = None
        for it in range(iters):
            Hv = hvp(loss_fn, params, v)
            for val, vec in zip(found_vals, found_vecs):  # deflate: (H - sum l u u^T) v
                c = _dot(vec, v)
                Hv = [h - val * c * u for h, u in zip(Hv, vec)]
            new = _dot(Hv, v)
            norm = math.sqrt(_dot(Hv, Hv))
            if norm == 0:
                break
            v = [h / norm for h in Hv]
            if callback:
                callback(idx, it, new)
            if lam is not None and abs(new - lam) <= tol * max(abs(lam), 1e-12):
                lam = new
                break
            lam = new
        found_vals.append(lam)
        found_vecs.append(v)
    return found_vals


def lanczos_eigenvalues(loss_fn, params: list[torch.Tensor], k: int = 1, iters: int = 30, tol: float = 1e-4, seed: int = 0,
                        callback=None) -> list[float]:
    """The ``k`` largest-magnitude Hessian eigenvalues by Lanczos (Golub & Van Loan, sec. 10.1).

    With ``q_1`` random and unit, ``w = H q_j - beta_{j-1} q_{j-1}``, ``alpha_j = q_j . w``,
    ``w -= alpha_j q_j`` (then re-orthogonalised against every earlier ``q``, which keeps the basis
    orthonormal in floating point), ``beta_j = |w|``, ``q_{j+1} = w / beta_j``. The eigenvalues of the
    tridiagonal ``T_j = tridiag(beta, alpha, beta)`` (Ritz values) converge to the extreme
    eigenvalues of H first; iteration stops once the top-``k`` Ritz values move by less than ``tol``
    (relative), or the Krylov space is exhausted (``beta = 0``)."""
    if iters < 1 or k < 1:
        raise ValueError(f"need iters >= 1 and k >= 1, got iters={iters}, k={k}")
    g = torch.Generator().manual_seed(seed)
    q = [torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device) for p in params]
    n = math.sqrt(_dot(q, q))
    Q = [[x / n for x in q]]
    alphas, betas, prev = [], [], None
    for j in range(iters):
        w = hvp(loss_fn, params, Q[-1])
        if j > 0:
            w = [a - betas[-1] * b for a, b in zip(w, Q[-2])]
        alpha = _dot(w, Q[-1])
        alphas.append(alpha)
        w = [a - alpha * b for a, b in zip(w, Q[-1])]
        for u in Q:  # full reorthogonalisation
            c = _dot(w, u)
            w = [a - c * b for a, b in zip(w, u)]
        T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        ritz = np.linalg.eigvalsh(T)
        top = ritz[np.argsort(-np.abs(ritz))][:k]
        if callback:
            callback(0, j, float(top[0]))
        beta = math.sqrt(_dot(w, w))
        if len(top) == k and prev is not None and np.all(np.abs(top - prev) <= tol * np.maximum(np.abs(prev), 1e-12)):
            break
        if beta <= 1e-10 * max(abs(alpha), 1.0):  # invariant subspace: the Ritz values are exact
            break
        prev = top if len(top) == k else None
        betas.append(beta)
        Q.append([x / beta for x in w])
    return [float(v) for v in top]


def hessian_trace(loss_fn, params: list[torch.Tensor], samples: int = 30, seed: int = 0, callback=None) -> tuple[float, float]:
    """Hutchinson's estimate of ``tr H`` with Rademacher vectors: (mean, standard error)."""
    g = torch.Generator().manual_seed(seed)
    vals = []
    for s in range(samples):
        v = [(torch.randint(0, 2, p.shape, generator=g) * 2 - 1).to(p.dtype).to(p.device) for p in params]
        vals.append(_dot(v, hvp(loss_fn, params, v)))
        if callback:
            callback(s + 1, samples)
    vals = np.asarray(vals)
    return float(vals.mean()), float(vals.std(ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else float("nan")


def slice_model(model: nn.Module, split: EncodedSplit, spec: QuantSpec | None = None, steps: int = 21, span: float = 1.0,
                two_d: bool = True, rows: int = 512, seed: int = 0, callback=None, calib: EncodedSplit | None = None) -> dict:
    """Filter-normalised random slice around ``model`` (binarized by ``spec`` if given, on its latent weights)."""
    m = _quantized_copy(model, spec, calib)
    ml = ModelLoss(m, split, rows=rows, ste=False)
    named = ml.params()
    params = [p for _, p in named]
    d1 = random_direction(named, seed)
    d2 = random_direction(named, seed + 1) if two_d else None
    grid = np.linspace(-span, span, steps)
    return surface(ml, params, d1, d2, grid, grid if two_d else (0.0,), callback=callback, metric=ml.evaluate)


def curvature(model: nn.Module, split: EncodedSplit, spec: QuantSpec | None = None, rows: int = 256, k: int = 1, iters: int = 20,
              trace_samples: int = 10, seed: int = 0, tol: float = 1e-4, callback=None, method: str = "lanczos",
              calib: EncodedSplit | None = None) -> dict:
    """Top Hessian eigenvalue(s) (``method``: "lanczos" or "power") and Hutchinson trace of the loss on
    ``rows`` rows (latent weights through the STE)."""
    if method not in ("lanczos", "power"):
        raise ValueError(f"unknown eigenvalue method {method!r}; choose 'lanczos' or 'power'")
    m = _quantized_copy(model, spec, calib)
    ml = ModelLoss(m, split, rows=rows, ste=True)
    params = [p for _, p in ml.params()]
    solver = lanczos_eigenvalues if method == "lanczos" else top_eigenvalues
    eig = solver(ml, params, k=k, iters=iters, tol=tol, seed=seed, callback=callback)
    tr, se = hessian_trace(ml, params, samples=trace_samples, seed=seed) if trace_samples else (float("nan"), float("nan"))
    return {"top_eigenvalues": eig, "trace": tr, "trace_se": se, "rows": rows, "through_ste": spec is not None, "method": method}


def precision_ladder(binary: QuantSpec) -> dict[str, QuantSpec | None]:
    """The same components at four precisions, for comparing slices: fp32, 2-bit uniform, ternary (TWN)
    and ``binary`` (each rule's target kept, its method replaced)."""
    targets = [r.target for r in binary.rules]
    return {"fp32": None,
            "2-bit": QuantSpec(tuple(Rule(t, MethodConfig("uniform", options={"bits": 2})) for t in targets)),
            "ternary (TWN)": QuantSpec(tuple(Rule(t, MethodConfig("twn")) for t in targets)),
            "binary": binary}


def committed_curvature(preset: str = "scratch") -> dict | None:
    """Top Hessian eigenvalues from the committed landscape bench (``docs/results/bench-landscape-<preset>.json``):
    ``{"fp32": ..., "binary": ..., "binary_label": ..., "file": ...}``, or None when there is none.
    The pages quote these instead of a general claim about binary landscapes."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "docs" / "results" / f"bench-landscape-{preset}.json"
    if not path.exists():
        return None
    res = json.loads(path.read_text())["results"]
    fp = res.get("fp32")
    binary = next(((k, v) for k, v in res.items() if k != "fp32"), None)
    if fp is None or binary is None:
        return None
    return {"fp32": fp["top_eigenvalue"], "binary": binary[1]["top_eigenvalue"], "binary_label": binary[0],
            "file": f"docs/results/{path.name}"}
