"""Weight binarizers and low-bit quantizers, looked up by name from :data:`BINARIZERS`.

Each quantizer maps a weight matrix ``W`` (out, in) -- or an embedding table (vocab, d), whose rows
play the role of channels -- to its fake-quantized value ``Q(W)`` of the same shape, computed
without gradient; QAT wraps it with a straight-through estimator (:mod:`binlab.ste`).
``storage(shape)`` gives the exact bits a packed deployment stores: weight codes plus every
scale, mean, mask and index (all real numbers stored as fp32, 32 bits).

Convention everywhere: ``sign(0) = +1``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import ClassVar

import torch

FP_BITS = 32  # every stored real number (scale, mean, threshold) is fp32


def sign(x: torch.Tensor) -> torch.Tensor:
    """sign(x) with sign(0) = +1, in x's dtype."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def _reduce_dims(w: torch.Tensor, per_channel: bool):
    return dict(dim=tuple(range(1, w.ndim)), keepdim=True) if per_channel else dict(dim=tuple(range(w.ndim)), keepdim=True)


def _n_groups(shape, per_channel: bool) -> int:
    return shape[0] if per_channel else 1


def _numel(shape) -> int:
    return int(math.prod(shape))


@dataclass
class Quantizer:
    """Base class: subclasses set the class variables and implement ``quantize`` and ``storage``."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    default_ste: ClassVar[str] = "clipped"
    nominal_bits: ClassVar[float] = 1.0
    per_channel: bool = True

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def storage(self, shape) -> dict[str, int]:
        """Bits stored, by kind: ``{"codes": ..., "scales": ..., ...}``."""
        raise NotImplementedError

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.quantize(w)

    @classmethod
    def options(cls) -> list[str]:
        return [f.name for f in fields(cls)]


BINARIZERS: dict[str, type[Quantizer]] = {}


def register(cls):
    BINARIZERS[cls.name] = cls
    return cls


# --------------------------------------------------------------------------------------------
# 1-bit binarizers


@register
@dataclass
class Sign(Quantizer):
    """BNN sign: ``Q(w) = sign(w)`` in {-1, +1}, no scale (Hubara et al. 2016, "Binarized Neural Networks").

    1 bit per weight and nothing else; weights of size ~0.05 become +-1, so without QAT (or a
    scale, see XNOR) the network's activations blow up. ``per_channel`` is unused.
    """

    name: ClassVar[str] = "sign"
    paper: ClassVar[str] = "Hubara et al. 2016, Binarized Neural Networks"
    per_channel: bool = False

    def quantize(self, w):
        return sign(w)

    def storage(self, shape):
        return {"codes": _numel(shape)}


@register
@dataclass
class Stochastic(Quantizer):
    """Stochastic sign: ``+1`` with probability ``sigma(w) = clip((w + 1) / 2, 0, 1)``, else ``-1``
    (Courbariaux et al. 2015, BinaryConnect; Hubara et al. 2016). Seeded, so a PTQ draw is reproducible.

    ``scale=True`` multiplies by ``alpha = mean|W|`` per channel. Small weights (|w| << 1) are nearly
    fair coin flips: the lab shows why this is a poor PTQ method.
    """

    name: ClassVar[str] = "stochastic"
    paper: ClassVar[str] = "Courbariaux et al. 2015, BinaryConnect"
    per_channel: bool = True
    scale: bool = True
    seed: int = 0

    def quantize(self, w):
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        p = ((w.float() + 1) / 2).clamp(0, 1)
        u = torch.rand(w.shape, generator=g).to(w.device)
        b = torch.where(u < p, 1.0, -1.0).to(w.dtype)
        return b * w.abs().mean(**_reduce_dims(w, self.per_channel)) if self.scale else b

    def storage(self, shape):
        return {"codes": _numel(shape), "scales": _n_groups(shape, self.per_channel) * FP_BITS if self.scale else 0}


@register
@dataclass
class XNOR(Quantizer):
    """XNOR-Net: ``Q(W) = alpha * sign(W)``, ``alpha = mean|W|`` per output channel or per tensor
    (Rastegari et al. 2016). ``alpha`` is the closed-form minimiser of ``||W - alpha sign(W)||^2``.
    """

    name: ClassVar[str] = "xnor"
    paper: ClassVar[str] = "Rastegari et al. 2016, XNOR-Net"

    def quantize(self, w):
        return sign(w) * w.abs().mean(**_reduce_dims(w, self.per_channel))

    def storage(self, shape):
        return {"codes": _numel(shape), "scales": _n_groups(shape, self.per_channel) * FP_BITS}


@register
@dataclass
class BiReal(XNOR):
    """Bi-Real Net weights: magnitude-aware ``alpha * sign(W)`` per channel, trained with the
    ApproxSign estimator ``g(x) = 2 - 2|x|`` on ``|x| <= 1`` (Liu et al. 2018, Bi-Real Net).
    """

    name: ClassVar[str] = "bireal"
    paper: ClassVar[str] = "Liu et al. 2018, Bi-Real Net"
    default_ste: ClassVar[str] = "approxsign"


@register
@dataclass
class FDA(XNOR):
    """FDA: ``alpha * sign(W)`` forward, Fourier-series approximation of sign's derivative backward
    (Xu et al. 2021, "Learning Frequency Domain Approximation for Binary Neural Networks").
    """

    name: ClassVar[str] = "fda"
    paper: ClassVar[str] = "Xu et al. 2021, FDA"
    default_ste: ClassVar[str] = "fda"


@register
@dataclass
class ReCU(Quantizer):
    """ReCU (Xu et al. 2021, "ReCU: Reviving the Dead Weights in Binary Neural Networks").

    Balance then rectified-clamp each channel to its quantile bounds before sign::

        W_b = W - mean(W);  W_c = clamp(W_b, Q_{1-tau}(W_b), Q_tau(W_b));  Q(W) = mean|W_c| * sign(W_c)

    Clamping pulls the tails in, so the scale fits the bulk of the weights and outliers stay
    within the STE's live range ("revived"). ``tau`` in [0.5, 1].
    """

    name: ClassVar[str] = "recu"
    paper: ClassVar[str] = "Xu et al. 2021, ReCU"
    tau: float = 0.99

    def __post_init__(self):
        if not 0.5 <= self.tau <= 1.0:
            raise ValueError(f"recu tau must be in [0.5, 1], got {self.tau}")

    def quantize(self, w):
        rd = _reduce_dims(w, self.per_channel)
        wb = w - w.mean(**rd)
        flat = wb.reshape(wb.shape[0], -1) if self.per_channel else wb.reshape(1, -1)
        lo = torch.quantile(flat.float(), 1 - self.tau, dim=1, keepdim=True).to(w.dtype)
        hi = torch.quantile(flat.float(), self.tau, dim=1, keepdim=True).to(w.dtype)
        wc = torch.max(torch.min(flat, hi), lo).reshape(w.shape)
        return sign(wc) * wc.abs().mean(**rd)

    def storage(self, shape):
        return {"codes": _numel(shape), "scales": _n_groups(shape, self.per_channel) * FP_BITS}


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
    """The seed's threshold/bucket binarizer: two levels, each the mean of its bucket::

        t = mean(W) + tau * std(W)          (tau=None: the squared-error-optimal t, exact 1-D 2-means)
        Q(w) = mean{W_j : W_j >= t}  if w >= t  else  mean{W_j : W_j < t}

    per channel or per tensor. A weight equal to ``t`` goes to the upper bucket; an empty bucket
    takes the value ``t``. Stores 1 bit per weight plus the two bucket means per group. With the
    optimal ``t`` this is never worse (in squared error) than XNOR's ``alpha sign(W)``.
    """

    name: ClassVar[str] = "bucket"
    paper: ClassVar[str] = "the seed student project (thresholded bucket-mean binarization)"
    tau: float | None = None

    TAU_RANGE: ClassVar[tuple[float, float]] = (-3.0, 3.0)

    def __post_init__(self):
        lo, hi = self.TAU_RANGE
        if self.tau is not None and not lo <= self.tau <= hi:
            raise ValueError(f"bucket tau must be None (optimal) or in [{lo}, {hi}] (units of std), got {self.tau}")

    def threshold(self, w: torch.Tensor) -> torch.Tensor:
        flat = w.reshape(w.shape[0], -1) if self.per_channel else w.reshape(1, -1)
        if self.tau is None:
            return optimal_threshold(flat)
        return flat.mean(1, keepdim=True) + self.tau * flat.std(1, keepdim=True, unbiased=False)

    def levels(self, w: torch.Tensor):
        """``(t, low, high)`` per group, each shaped (groups, 1)."""
        flat = w.reshape(w.shape[0], -1) if self.per_channel else w.reshape(1, -1)
        t = self.threshold(w)
        up = flat >= t
        n_up = up.sum(1, keepdim=True)
        n_lo = flat.shape[1] - n_up
        hi = torch.where(n_up > 0, (flat * up).sum(1, keepdim=True) / n_up.clamp_min(1), t)
        lo = torch.where(n_lo > 0, (flat * ~up).sum(1, keepdim=True) / n_lo.clamp_min(1), t)
        return t, lo, hi

    def quantize(self, w):
        flat = w.reshape(w.shape[0], -1) if self.per_channel else w.reshape(1, -1)
        t, lo, hi = self.levels(w)
        return torch.where(flat >= t, hi, lo).reshape(w.shape)

    def storage(self, shape):
        return {"codes": _numel(shape), "means": 2 * _n_groups(shape, self.per_channel) * FP_BITS}


@register
@dataclass
class BitNet(Quantizer):
    """BitNet 1-bit weights (Wang et al. 2023): centralise, sign, absmean scale::

        Q(W) = beta * sign(W - mean(W)),  beta = mean|W|

    per tensor as in the paper (``per_channel=True`` for per-row). Stores the signs and beta.
    """

    name: ClassVar[str] = "bitnet"
    paper: ClassVar[str] = "Wang et al. 2023, BitNet"
    per_channel: bool = False

    def quantize(self, w):
        rd = _reduce_dims(w, self.per_channel)
        return sign(w - w.mean(**rd)) * w.abs().mean(**rd)

    def storage(self, shape):
        return {"codes": _numel(shape), "scales": _n_groups(shape, self.per_channel) * FP_BITS}


# --------------------------------------------------------------------------------------------
# ternary and k-bit


@register
@dataclass
class TWN(Quantizer):
    """Ternary weight networks (Li et al. 2016): ``Delta = 0.7 mean|W|``,
    ``Q(w) = alpha * sign(w) * 1[|w| > Delta]`` with ``alpha = mean{|w| : |w| > Delta}``.
    Stored as 2-bit codes (a trit packed in 2 bits) plus alpha per group.
    """

    name: ClassVar[str] = "twn"
    paper: ClassVar[str] = "Li et al. 2016, Ternary Weight Networks"
    default_ste: ClassVar[str] = "identity"
    nominal_bits: ClassVar[float] = 2.0

    def quantize(self, w):
        rd = _reduce_dims(w, self.per_channel)
        delta = 0.7 * w.abs().mean(**rd)
        keep = (w.abs() > delta).to(w.dtype)
        alpha = (w.abs() * keep).sum(**rd) / keep.sum(**rd).clamp_min(1)
        return alpha * sign(w) * keep

    def storage(self, shape):
        return {"codes": 2 * _numel(shape), "scales": _n_groups(shape, self.per_channel) * FP_BITS}


@register
@dataclass
class BitNet158(Quantizer):
    """BitNet b1.58 (Ma et al. 2024): absmean ternary ``Q(W) = gamma * clip(round(W / (gamma + eps)), -1, 1)``,
    ``gamma = mean|W|`` per tensor. Stored as 2-bit codes plus gamma.
    """

    name: ClassVar[str] = "bitnet158"
    paper: ClassVar[str] = "Ma et al. 2024, The Era of 1-bit LLMs (BitNet b1.58)"
    default_ste: ClassVar[str] = "identity"
    nominal_bits: ClassVar[float] = 2.0
    per_channel: bool = False

    def quantize(self, w):
        g = w.abs().mean(**_reduce_dims(w, self.per_channel))
        return g * torch.clamp(torch.round(w / (g + 1e-8)), -1, 1)

    def storage(self, shape):
        return {"codes": 2 * _numel(shape), "scales": _n_groups(shape, self.per_channel) * FP_BITS}


def uniform_midrise(w: torch.Tensor, bits: int, clip: torch.Tensor) -> torch.Tensor:
    """Symmetric mid-rise k-bit quantizer with all 2^k levels ``s * (i + 1/2)``, i in [-2^(k-1), 2^(k-1) - 1],
    step ``s = clip / 2^(k-1)``: values beyond +-clip saturate at the outer levels."""
    half = 2 ** (bits - 1)
    s = clip / half
    return s * (torch.clamp(torch.floor(w / s), -half, half - 1) + 0.5)


@register
@dataclass
class Uniform(Quantizer):
    """k-bit uniform symmetric quantizer (k in 1..8), per output channel by default.

    Mid-rise levels ``s (i + 1/2)`` use all 2^k codes; the clipping range is searched per group
    over ``c * max|W|``, c in {1.0, 0.95, ..., 0.3}, for least squared error (a standard MSE
    calibration, e.g. Banner et al. 2019). Stores k bits per weight plus the step per group.
    """

    name: ClassVar[str] = "uniform"
    paper: ClassVar[str] = "uniform quantization with MSE-searched clipping (Banner et al. 2019)"
    default_ste: ClassVar[str] = "identity"
    bits: int = 8

    def __post_init__(self):
        if not (isinstance(self.bits, int) and 1 <= self.bits <= 8):
            raise ValueError(f"uniform bits must be an integer in [1, 8], got {self.bits!r}")

    @property
    def nominal(self) -> float:
        return float(self.bits)

    def quantize(self, w):
        flat = w.reshape(w.shape[0], -1) if self.per_channel else w.reshape(1, -1)
        amax = flat.abs().amax(1, keepdim=True).clamp_min(1e-12)
        best, best_err = None, None
        for c in torch.arange(1.0, 0.29, -0.05).tolist():
            q = uniform_midrise(flat, self.bits, amax * c)
            err = ((q - flat) ** 2).sum(1, keepdim=True)
            if best is None:
                best, best_err = q, err
            else:
                better = err < best_err
                best = torch.where(better, q, best)
                best_err = torch.minimum(err, best_err)
        return best.reshape(w.shape)

    def storage(self, shape):
        return {"codes": self.bits * _numel(shape), "scales": _n_groups(shape, self.per_channel) * FP_BITS}


# --------------------------------------------------------------------------------------------
# LLM-era methods


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
    """

    name: ClassVar[str] = "pbllm"
    paper: ClassVar[str] = "Shang et al. 2023, PB-LLM"
    salient: float = 0.1

    def __post_init__(self):
        if not 0.0 <= self.salient < 1.0:
            raise ValueError(f"pbllm salient fraction must be in [0, 1), got {self.salient}")

    def _mask(self, w):
        k = int(round(self.salient * w.numel()))
        if k == 0:
            return torch.zeros_like(w, dtype=torch.bool)
        thr = torch.topk(w.abs().flatten(), k).values[-1]
        return w.abs() >= thr

    def quantize(self, w):
        sal = self._mask(w)
        rd = _reduce_dims(w, self.per_channel)
        nb = (~sal).to(w.dtype)
        alpha = (w.abs() * nb).sum(**rd) / nb.sum(**rd).clamp_min(1)
        w8 = Uniform(per_channel=self.per_channel, bits=8).quantize(w * sal)
        return torch.where(sal, w8, alpha * sign(w))

    def storage(self, shape):
        n = _numel(shape)
        k = int(round(self.salient * n))
        g = _n_groups(shape, self.per_channel)
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
    "1.08 bits" leaves the group bitmap out; binlab counts it.
    """

    name: ClassVar[str] = "billm"
    paper: ClassVar[str] = "Huang et al. 2024, BiLLM"
    salient: float = 0.05

    def __post_init__(self):
        if not 0.0 <= self.salient < 1.0:
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
        rows, n = shape[0], _numel(shape)
        cols = n // rows
        k = int(round(self.salient * cols))
        return {"codes": n + k * rows, "index": cols + (n - k * rows), "scales": 4 * rows * FP_BITS}


@register
@dataclass
class OneBit(Quantizer):
    """OneBit (Xu et al. 2024): ``Q(W) = sign(W) * (a b^T)`` with value vectors a (out) and b (in)
    from the rank-1 approximation of |W| (Sign-Value-Independent Decomposition, here by SVD).
    Stores 1 bit per weight plus (out + in) fp32 values.
    """

    name: ClassVar[str] = "onebit"
    paper: ClassVar[str] = "Xu et al. 2024, OneBit"
    per_channel: bool = True

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
        cols = _numel(shape) // rows
        return {"codes": _numel(shape), "scales": (rows + cols) * FP_BITS}
