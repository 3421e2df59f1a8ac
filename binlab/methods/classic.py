"""Classic 1-bit weight binarizers (the BNN era), each following its paper.

Equation numbers refer to the arXiv versions listed in each class's ``arxiv``. Where a paper and its
reference code disagree, or a detail is left open, the docstring says which reading binlab takes.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import FP_BITS, Quantizer, n_groups, numel, reduce_dims, register, rows, sign
from .ste import FDA_OMEGA, FDA_TERMS, apply_grad, apply_ste, fda_ste, fourier_sign, fourier_sign_grad, get_ste  # noqa: F401

PER_CHANNEL_UI = {"kind": "bool", "label": "per channel (one scale per output row)"}


@register
@dataclass
class Sign(Quantizer):
    """BNN sign: ``Q(w) = sign(w)`` in {-1, +1}, no scale (Hubara et al. 2016, eq. 1).

    Backward (eq. 4): ``g_r = g_q 1[|r| <= 1]``, the "clipped" estimator, here on ``r = w / (3 std_row)``
    (see :mod:`binlab.methods.base`). Stores 1 bit per weight and nothing else, so a trained
    transformer's weights of size ~0.05 become +-1 and its activations blow up without QAT.
    The paper also clips latent weights to [-1, 1] after each update; on the normalised scale
    binlab uses that clip would never bind, so it is left out.
    """

    name: ClassVar[str] = "sign"
    paper: ClassVar[str] = "Hubara et al. 2016, Binarized Neural Networks"
    arxiv: ClassVar[str] = "1602.02830"
    mode: ClassVar[str] = "QAT"
    stores: ClassVar[str] = "1 bit per weight"

    def quantize(self, w):
        return sign(w)

    def storage(self, shape):
        return {"codes": numel(shape)}


def glorot_h(shape) -> float:
    """BinaryConnect's binary magnitude ``H = sqrt(1.5 / (fan_in + fan_out))`` (its code's ``H = "Glorot"`` option: Glorot's bound / 2)."""
    fan_out, fan_in = shape[0], numel(shape) // shape[0]
    return math.sqrt(1.5 / (fan_in + fan_out))


@register
@dataclass
class Stochastic(Quantizer):
    """BinaryConnect's stochastic binarization (Courbariaux et al. 2015, eqs. 2-3)::

        w_b = +H with probability p = hard_sigmoid(w / H) = clip((w / H + 1) / 2, 0, 1),  else -H

    with ``H = sqrt(1.5 / (fan_in + fan_out))`` per layer (``H=None``; a number sets it): the
    BinaryConnect code's ``H = "Glorot"`` option. The paper's experiment scripts run ``H = 1`` and
    instead scale each layer's learning rate by ``1 / sqrt(1.5 / (fan_in + fan_out))``
    (``W_LR_scale = "Glorot"``); binlab uses the Glorot H and no per-layer learning-rate scale,
    because its latent weights start from a trained model whose weights are far inside [-1, 1]
    (H = 1 would make almost every draw a coin flip). ``E[w_b] = H (2p - 1) = clip(w, -H, H)``.

    Every call draws fresh noise from the instance's own generator, seeded by ``seed`` (and, once
    bound to a model component, by the component's name, so no two layers share a stream): QAT sees
    a new binary network at every step (Algorithm 1), and a fresh instance reproduces the same
    stream. For an embedding table (vocab x d) H is computed the same way and is small (about
    0.007 for 30k x 128): the paper has no embeddings. Backward: identity (the gradient w.r.t. ``w_b`` is applied to ``w``), and after each
    QAT step the latent weights are clipped to [-H, H] (the paper's clipping, §2.4).

    Evaluation: the paper evaluates stochastic BinaryConnect with the real-valued weights (§2.6).
    That network is not binary, so binlab evaluates one draw instead (the first draw after each
    change of the weights, cached), i.e. a deployable binary network. Stores 1 bit per weight and H.
    """

    name: ClassVar[str] = "stochastic"
    paper: ClassVar[str] = "Courbariaux et al. 2015, BinaryConnect"
    arxiv: ClassVar[str] = "1511.00363"
    mode: ClassVar[str] = "QAT"
    stores: ClassVar[str] = "1 bit per weight + H (fp32) per layer"
    default_ste: ClassVar[str] = "identity"
    ui: ClassVar[dict] = {"seed": {"kind": "int", "label": "noise seed", "min": 0, "max": 10_000}}
    bounds: ClassVar[dict] = {"H": {"kind": "float", "min": 1e-6, "max": 1000.0}}
    H: float | None = None
    seed: int = 0

    def __post_init__(self):
        if self.H is not None and not self.H > 0:
            raise ValueError(f"stochastic H must be None (Glorot) or > 0, got {self.H}")
        self._gen: dict = {}
        self._stream = int(self.seed)

    def bind(self, component: str) -> None:
        self._stream = (int(self.seed) * 1_000_003 + zlib.crc32(component.encode())) % (2**63)
        self._gen = {}

    def h(self, shape) -> float:
        return glorot_h(shape) if self.H is None else float(self.H)

    def generator(self, device) -> torch.Generator:
        key = str(device)
        if key not in self._gen:
            self._gen[key] = torch.Generator(device=device).manual_seed(self._stream)
        return self._gen[key]

    def quantize(self, w):
        H = self.h(tuple(w.shape))
        p = ((w.float() / H + 1) / 2).clamp(0, 1)
        u = torch.rand(w.shape, generator=self.generator(w.device), device=w.device)
        return torch.where(u < p, H, -H).to(w.dtype)

    def post_step(self, w: torch.Tensor) -> None:
        H = self.h(tuple(w.shape))
        with torch.no_grad():
            w.clamp_(-H, H)

    def storage(self, shape):
        return {"codes": numel(shape), "scales": FP_BITS}


@register
@dataclass
class XNOR(Quantizer):
    """XNOR-Net binary weights (Rastegari et al. 2016, §3.1): ``W ~ alpha B`` minimising
    ``||W - alpha B||^2`` (eq. 2) gives ``B = sign(W)`` (eq. 6) and ``alpha = ||W||_1 / n`` (eq. 7),
    per output channel (per filter, as in the paper) or per tensor.

    Backward (§3.1, "Training Binary-Weights-Networks", and the reference code's
    ``updateBinaryGradWeight``): the scale depends on W, so

        dC/dW_i = dC/dW~_i (1/n + alpha * g(W_i)),   g = 1[|r| <= 1] on r = w / (3 std_row)

    (the reference code's extra constant factor ``(1 - 1/c_in) n`` is left out: Adam removes it).
    Stores 1 bit per weight and alpha per group.
    """

    name: ClassVar[str] = "xnor"
    paper: ClassVar[str] = "Rastegari et al. 2016, XNOR-Net"
    arxiv: ClassVar[str] = "1603.05279"
    stores: ClassVar[str] = "1 bit per weight + alpha (fp32) per row (or per tensor)"
    ui: ClassVar[dict] = {"per_channel": PER_CHANNEL_UI}
    per_channel: bool = True

    def alpha(self, w):
        return w.abs().mean(**reduce_dims(w, self.per_channel))

    def quantize(self, w):
        return sign(w) * self.alpha(w)

    def _n(self, w) -> int:
        return w[0].numel() if self.per_channel else w.numel()

    def scale_grad_term(self, w) -> float:
        """The ``1/n`` term of the gradient (the derivative of alpha through |W_i|)."""
        return 1.0 / self._n(w)

    def train_forward(self, w, ste, scale, aux=None):
        if not w.requires_grad:
            return self.quantize(w)
        ste = get_ste(ste) if isinstance(ste, str) else ste
        a = self.alpha(w.detach())
        c = self.scale_grad_term(w)
        s = scale.detach() if isinstance(scale, torch.Tensor) else scale
        return apply_grad(w, self.quantize(w.detach()), lambda t: c + a * ste.grad(t / s))

    def storage(self, shape):
        return {"codes": numel(shape), "scales": n_groups(shape, self.per_channel) * FP_BITS}


@register
@dataclass
class BiReal(XNOR):
    """Bi-Real Net (Liu et al. 2018): magnitude-aware binary weights with a real-valued shortcut.

    - Weights (eq. 7): ``W_b = (||W||_1 / n) sign(W)``, per output channel as in the reference code.
    - Magnitude-aware gradient (eq. 8): ``dW_b/dW ~ (||W||_1 / n) * dSign/dW``, with
      ``dSign/dW = 1[|w| < 1]`` (on ``r = w / (3 std_row)``): the sign estimator scaled by the
      magnitude. (The authors' PyTorch code detaches the scale and drops that factor; binlab follows
      the paper. XNOR's extra ``1/n`` term is not in eq. 8.)
    - Activations binarized alongside (W1A1) use ApproxSign (eq. 3): forward sign, backward
      ``2 + 2x`` on [-1, 0), ``2 - 2x`` on [0, 1), 0 elsewhere.
    - ``shortcut=True``: the paper's main idea, a real-valued identity shortcut around each binary
      layer, ``y = W_b sign(x) + x`` (§3.1; the reference block is sign -> binary conv -> BN -> add).
      It needs ``in == out``, so it applies to the square linears (attention Q, K, V, O) and is
      ignored elsewhere. It changes the function, so it is meant for QAT, not PTQ.
    """

    name: ClassVar[str] = "bireal"
    paper: ClassVar[str] = "Liu et al. 2018, Bi-Real Net"
    arxiv: ClassVar[str] = "1808.00278"
    mode: ClassVar[str] = "QAT"
    act_ste: ClassVar[str] = "approxsign"
    ui: ClassVar[dict] = {"per_channel": PER_CHANNEL_UI,
                          "shortcut": {"kind": "bool", "label": "real-valued shortcut y = W_b x + x (square linears; for QAT)"}}
    shortcut: bool = False

    def scale_grad_term(self, w) -> float:
        return 0.0


@register
@dataclass
class ReCU(Quantizer):
    """ReCU (Xu et al. 2021, "ReCU: Reviving the Dead Weights in Binary Neural Networks").

    Following the paper's order (standardise, rectified clamp, scale, binarise) and the reference
    code for the details, per output row ``w``:

        balance + standardise:  u = (w - mean(w)) / (std(w) / (2 sqrt 2))       (std 2 sqrt 2: Laplace b = 2)
        ReCU (§4.1):            u_c = max(min(u, Q(tau)), Q(1 - tau))
        quantiles of the fitted Laplace (per layer, detached):  Q(tau) = -b ln(2 - 2 tau),  b = mean|u|
        binarise + scale:       Q(w) = alpha sign(u_c),  alpha = mean|u_c| * std(w) / (2 sqrt 2)

    ``alpha`` brings the binary row back to the weight's units (the XNOR scale of the clamped,
    balanced row); the reference code instead learns a per-channel scale on the output -- binlab
    derives it from the weights so that PTQ works and nothing new is learned. Like the paper's
    balancing, the row mean is not restored.

    Backward (reference code): identity through sign, then the clamp's own derivative (zero for
    clamped weights -- they are held at the quantile), then through the standardisation.

    tau schedule (§5.2.1, exponential): over QAT, ``tau(p) = A e^p + B`` from ``tau_start`` to ``tau``
    (p = fraction of QAT done: ``A = (tau - tau_start) / (e - 1)``, ``B = tau_start - A``); outside
    QAT (PTQ, evaluation) ``tau`` is used. The paper's defaults: 0.85 -> 0.99.
    """

    name: ClassVar[str] = "recu"
    paper: ClassVar[str] = "Xu et al. 2021, ReCU"
    arxiv: ClassVar[str] = "2103.12369"
    mode: ClassVar[str] = "QAT"
    stores: ClassVar[str] = "1 bit per weight + alpha (fp32) per row"
    default_ste: ClassVar[str] = "identity"
    act_ste: ClassVar[str] = "approxsign"
    ui: ClassVar[dict] = {"tau": {"kind": "float", "label": "quantile tau (final; PTQ)", "min": 0.5, "max": 0.999, "step": 0.005},
                          "tau_start": {"kind": "float", "label": "tau at the start of QAT (QAT only)", "min": 0.5, "max": 0.999, "step": 0.005}}
    tau: float = 0.99
    tau_start: float = 0.85

    def __post_init__(self):
        for k in ("tau", "tau_start"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and 0.5 <= v < 1.0):
                raise ValueError(f"recu {k} must be in [0.5, 1), got {v!r}")
        self._tau_now = float(self.tau)

    def set_progress(self, frac: float) -> None:
        p = min(max(float(frac), 0.0), 1.0)
        A = (self.tau - self.tau_start) / (math.e - 1)
        self._tau_now = A * math.exp(p) + (self.tau_start - A)

    @property
    def current_tau(self) -> float:
        return self._tau_now

    def state(self) -> tuple:
        return (self._tau_now,)

    STD_TARGET: ClassVar[float] = 2 * math.sqrt(2)

    def _parts(self, w):
        w2 = w.reshape(w.shape[0], -1)
        mu = w2.mean(1, keepdim=True)
        sd = (w2.var(1, keepdim=True, unbiased=True) + 1e-12).sqrt() / self.STD_TARGET
        u = (w2 - mu) / sd
        b = u.detach().abs().mean()
        q = float(-b * math.log(2 - 2 * self._tau_now))
        return u.clamp(-q, q), sd

    def quantize(self, w):
        uc, sd = self._parts(w)
        return (sign(uc) * uc.abs().mean(1, keepdim=True) * sd).reshape(w.shape)

    def train_forward(self, w, ste, scale, aux=None):
        if not w.requires_grad:
            return self.quantize(w)
        ste = get_ste(ste) if isinstance(ste, str) else ste
        uc, sd = self._parts(w)  # with gradient through the clamp and the standardisation
        alpha = (uc.detach().abs().mean(1, keepdim=True) * sd.detach())
        b = apply_ste(uc, sign(uc.detach()), ste, uc.detach().abs().amax(1, keepdim=True).clamp_min(1e-12))
        return (alpha * b).reshape(w.shape)

    def storage(self, shape):
        return {"codes": numel(shape), "scales": shape[0] * FP_BITS}


class NoiseAdaptation(nn.Module):
    """FDA's noise adaptation module (§3.2): ``e(t) = ReLU(t W1) W2 + eta sin(t)`` along a row ``t``
    (width ``d``, hidden ``max(1, d // 64)``, no biases; ``eta = 0.1``), learned in QAT to absorb
    the truncation error of the series. ``W2`` starts at zero, so ``e`` starts as the shortcut."""

    def __init__(self, d: int, reduction: int = 64, eta: float = 0.1):
        super().__init__()
        k = max(1, d // reduction)
        self.fc1 = nn.Linear(d, k, bias=False)
        self.fc2 = nn.Linear(k, d, bias=False)
        nn.init.zeros_(self.fc2.weight)
        self.eta = eta

    def forward(self, t):
        return self.fc2(F.relu(self.fc1(t))) + self.eta * torch.sin(t)


@register
@dataclass
class FDA(XNOR):
    """FDA: Frequency Domain Approximation (Xu et al. 2021, NeurIPS).

    Forward: exact ``alpha sign(W)`` (alpha = mean|W| per row, as in the BiBench port of FDA).
    Backward: the derivative of sign's Fourier series truncated to ``n = terms`` terms (§3.1):

        sign(t) = (4/pi) sum_{i>=0} sin((2i+1) w t) / (2i+1),   g(t) = (4w/pi) sum_{i<n} cos((2i+1) w t)

    on ``t = w / (3 std_row)``, with zero gradient for ``|t| > 1`` (as the clipped estimator). The
    paper defines ``w = 2 pi / T`` and gives no value for the period T; its published code is
    inference only. binlab follows the two training codes there are, BiBench's and PB-LLM's FDA
    layers: ``w = 0.1`` and n = 10 terms (the paper's n_s = 9, summing i = 0 .. 9; BiBench raises it
    to 18 over training, binlab keeps it fixed). At that frequency ``g`` stays positive on the whole
    window (1.27 at 0, 0.58 at |t| = 1; tests/reference/fda_ref.py), where a period of 4
    (``w = pi / 2``) would make it negative for about 44 % of Gaussian weights. The codes apply it
    to the raw weights; binlab to the normalised t, as its other estimators.

    Noise adaptation (§3.2, ``noise=True``): in QAT the forward is
    ``alpha (sign(t) + lambda e(t))`` with ``e`` a small learned module (:class:`NoiseAdaptation`)
    and ``lambda = 0.05 (1 + cos(pi p))`` falling from 0.1 to 0 over QAT (p = fraction done), so the
    gradient is ``alpha (g(t) + lambda e'(t))`` (both w.r.t. t) and the final model is pure sign. The module is
    training-only: never counted in the size, never saved in checkpoints. Activations binarized
    alongside use the same series with the same ``terms`` (without a noise module: binlab leaves
    that part out).
    """

    name: ClassVar[str] = "fda"
    paper: ClassVar[str] = "Xu et al. 2021, FDA"
    arxiv: ClassVar[str] = "2103.00841"
    mode: ClassVar[str] = "QAT"
    default_ste: ClassVar[str] = "fda"
    act_ste: ClassVar[str] = "fda"
    ui: ClassVar[dict] = {"per_channel": PER_CHANNEL_UI,
                          "terms": {"kind": "int", "label": "Fourier terms n (QAT gradient)", "min": 1, "max": 30},
                          "noise": {"kind": "bool", "label": "noise adaptation module (QAT only)"}}
    terms: int = FDA_TERMS
    noise: bool = True

    def __post_init__(self):
        if not (isinstance(self.terms, int) and 1 <= self.terms <= 100):
            raise ValueError(f"fda terms must be an integer in [1, 100], got {self.terms!r}")
        self._lambda = 0.0

    def set_progress(self, frac: float) -> None:
        p = min(max(float(frac), 0.0), 1.0)
        self._lambda = 0.05 * (1 + math.cos(math.pi * p))

    def make_aux(self, shape):
        return NoiseAdaptation(numel(shape) // shape[0]) if self.noise else None

    def train_forward(self, w, ste, scale, aux=None):
        if not w.requires_grad:
            return self.quantize(w)
        ste = get_ste(ste) if isinstance(ste, str) else ste
        s = scale.detach() if isinstance(scale, torch.Tensor) else scale
        b = apply_ste(w, sign(w.detach()), fda_ste(self.terms) if ste.name == "fda" else ste, s)
        if aux is not None and self._lambda > 0:
            t = (w / s).detach() + (w - w.detach())  # the value t = w / s, with dt/dw = 1 as for the series term
            b = b + self._lambda * aux(t.reshape(w.shape[0], -1)).reshape(w.shape)
        return self.alpha(w.detach()) * b

    def act_estimator(self):
        """The same series (with this instance's ``terms``) for inputs binarized alongside."""
        return fda_ste(self.terms)


# --------------------------------------------------------------------------------------------
# the student project's method


def optimal_threshold(w2d: torch.Tensor) -> torch.Tensor:
    """Per row of ``w2d`` (rows, n), the threshold that minimises the two-bucket squared error.

    Sort each row; for a split after k values the error is ``sum w^2 - S_k^2/k - (S - S_k)^2/(n - k)``
    with ``S_k`` the prefix sum, so the best split maximises ``S_k^2/k + (S - S_k)^2/(n-k)``
    (exact 1-D 2-means). Returns the midpoint between the two values at the best split, (rows, 1).
    """
    v, _ = torch.sort(w2d.double(), dim=1)
    n = v.shape[1]
    if n < 2:
        return v[:, :1].to(w2d.dtype)
    c = torch.cumsum(v, 1)
    S = c[:, -1:]
    k = torch.arange(1, n, device=v.device, dtype=v.dtype)
    Sk = c[:, :-1]
    score = Sk**2 / k + (S - Sk) ** 2 / (n - k)
    best = score.argmax(1, keepdim=True)
    return ((v.gather(1, best) + v.gather(1, best + 1)) / 2).to(w2d.dtype)


@register
@dataclass
class Bucket(Quantizer):
    """The student project's threshold/bucket binarizer: two levels, each the mean of its bucket::

        t = mean(W) + tau * std(W)          (tau=None: the squared-error-optimal t, exact 1-D 2-means)
        Q(w) = mean{W_j : W_j >= t}  if w >= t  else  mean{W_j : W_j < t}

    per channel or per tensor. A weight equal to ``t`` goes to the upper bucket; an empty bucket
    takes the value ``t``. Stores 1 bit per weight plus the two bucket means per group. With the
    optimal ``t`` this is never worse (in squared error) than XNOR's ``alpha sign(W)``.
    """

    name: ClassVar[str] = "bucket"
    paper: ClassVar[str] = "the student project the lab reproduces (thresholded bucket-mean binarization)"
    stores: ClassVar[str] = "1 bit per weight + two bucket means (fp32) per row (or per tensor)"
    ui: ClassVar[dict] = {"per_channel": PER_CHANNEL_UI,
                          "tau": {"kind": "float", "label": "threshold tau (in std units: t = mean + tau * std)",
                                  "min": -3.0, "max": 3.0, "step": 0.05, "none": "squared-error-optimal threshold",
                                  "lab_default": 0.0}}  # the lab opens with the slider live (at the mean) for learners to drag
    per_channel: bool = True
    tau: float | None = None

    TAU_RANGE: ClassVar[tuple[float, float]] = (-3.0, 3.0)

    def __post_init__(self):
        lo, hi = self.TAU_RANGE
        if self.tau is not None and not (isinstance(self.tau, (int, float)) and lo <= self.tau <= hi):
            raise ValueError(f"bucket tau must be None (optimal) or in [{lo}, {hi}] (units of std), got {self.tau!r}")

    def threshold(self, w: torch.Tensor) -> torch.Tensor:
        flat = rows(w, self.per_channel)
        if self.tau is None:
            return optimal_threshold(flat)
        return flat.mean(1, keepdim=True) + self.tau * flat.std(1, keepdim=True, unbiased=False)

    def levels(self, w: torch.Tensor):
        """``(t, low, high)`` per group, each shaped (groups, 1)."""
        flat = rows(w, self.per_channel)
        t = self.threshold(w)
        up = flat >= t
        n_up = up.sum(1, keepdim=True)
        n_lo = flat.shape[1] - n_up
        hi = torch.where(n_up > 0, (flat * up).sum(1, keepdim=True) / n_up.clamp_min(1), t)
        lo = torch.where(n_lo > 0, (flat * ~up).sum(1, keepdim=True) / n_lo.clamp_min(1), t)
        return t, lo, hi

    def quantize(self, w):
        flat = rows(w, self.per_channel)
        t, lo, hi = self.levels(w)
        return torch.where(flat >= t, hi, lo).reshape(w.shape)

    def storage(self, shape):
        return {"codes": numel(shape), "means": 2 * n_groups(shape, self.per_channel) * FP_BITS}
