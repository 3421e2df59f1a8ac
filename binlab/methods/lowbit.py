"""Ternary and k-bit weight quantizers, and BitNet's 1-bit BitLinear weights."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import FP_BITS, Quantizer, n_groups, numel, reduce_dims, register, rows, sign
from .classic import PER_CHANNEL_UI


@register
@dataclass
class BitNet(Quantizer):
    """BitNet's BitLinear weights (Wang et al. 2023, §2.1): centralise, sign, absmean scale::

        W~ = Sign(W - alpha),  alpha = mean(W);   beta = ||W||_1 / (n m)  (per tensor);   Q(W) = beta W~

    The paper also quantizes BitLinear's inputs to 8 bits by absmax after a LayerNorm; pair it with
    the ``absmax8`` input activation (the tables do: W1A8). Training uses the identity STE as in the
    paper. Per tensor as in the paper (``per_channel=True`` for per row). Stores the signs and beta.
    """

    name: ClassVar[str] = "bitnet"
    paper: ClassVar[str] = "Wang et al. 2023, BitNet"
    arxiv: ClassVar[str] = "2310.11453"
    mode: ClassVar[str] = "QAT (from scratch in the paper)"
    stores: ClassVar[str] = "1 bit per weight + beta (fp32) per tensor"
    default_ste: ClassVar[str] = "identity"
    ui: ClassVar[dict] = {"per_channel": PER_CHANNEL_UI}
    per_channel: bool = False

    def quantize(self, w):
        rd = reduce_dims(w, self.per_channel)
        return sign(w - w.mean(**rd)) * w.abs().mean(**rd)

    def storage(self, shape):
        return {"codes": numel(shape), "scales": n_groups(shape, self.per_channel) * FP_BITS}


@register
@dataclass
class TWN(Quantizer):
    """Ternary weight networks (Li, Zhang, Liu 2016, §2): ``W ~ alpha W^t`` with ``W^t`` in {-1, 0, +1}::

        W^t_i = sign(W_i) 1[|W_i| > Delta],   Delta ~ 0.7 E|W| = 0.7 mean|W|,   alpha = mean{|W_i| : |W_i| > Delta}

    (the approximate minimiser of ``||W - alpha W^t||^2`` for Gaussian/uniform weights), per layer
    as in the paper (``per_channel=True`` for per row). Stored as 2-bit codes plus alpha.
    """

    name: ClassVar[str] = "twn"
    paper: ClassVar[str] = "Li et al. 2016, Ternary Weight Networks"
    arxiv: ClassVar[str] = "1605.04711"
    stores: ClassVar[str] = "2 bits per weight + alpha (fp32) per tensor"
    default_ste: ClassVar[str] = "identity"
    nominal_bits: ClassVar[float] = 2.0
    ui: ClassVar[dict] = {"per_channel": PER_CHANNEL_UI}
    per_channel: bool = False

    def quantize(self, w):
        return ternarize(w, self.per_channel)[0]

    def storage(self, shape):
        return {"codes": 2 * numel(shape), "scales": n_groups(shape, self.per_channel) * FP_BITS}


def ternarize(w: torch.Tensor, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TWN's ternary value ``alpha sign(w) 1[|w| > Delta]``, with its mask ``|w| > Delta`` and
    ``alpha``, per tensor or per row (BinaryBERT's splitting needs all three)."""
    rd = reduce_dims(w, per_channel)
    keep = w.abs() > 0.7 * w.abs().mean(**rd)
    alpha = (w.abs() * keep).sum(**rd) / keep.sum(**rd).clamp_min(1)
    return alpha * sign(w) * keep, keep, alpha


@register
@dataclass
class BitNet158(Quantizer):
    """BitNet b1.58 (Ma et al. 2024, §2): absmean ternary weights::

        W~ = RoundClip(W / (gamma + eps), -1, 1),  gamma = mean|W|  (per tensor);   Q(W) = gamma W~

    with per-token 8-bit absmax activations in the paper (pair it with ``absmax8``). Identity STE.
    Stored as 2-bit codes plus gamma.
    """

    name: ClassVar[str] = "bitnet158"
    paper: ClassVar[str] = "Ma et al. 2024, The Era of 1-bit LLMs (BitNet b1.58)"
    arxiv: ClassVar[str] = "2402.17764"
    mode: ClassVar[str] = "QAT (from scratch in the paper)"
    stores: ClassVar[str] = "2 bits per weight + gamma (fp32) per tensor"
    default_ste: ClassVar[str] = "identity"
    nominal_bits: ClassVar[float] = 2.0
    ui: ClassVar[dict] = {"per_channel": PER_CHANNEL_UI}
    per_channel: bool = False

    def quantize(self, w):
        g = w.abs().mean(**reduce_dims(w, self.per_channel))
        return g * torch.clamp(torch.round(w / (g + 1e-8)), -1, 1)

    def storage(self, shape):
        return {"codes": 2 * numel(shape), "scales": n_groups(shape, self.per_channel) * FP_BITS}


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
    arxiv: ClassVar[str] = "1810.05723"
    stores: ClassVar[str] = "k bits per weight + the step (fp32) per row (or per tensor)"
    default_ste: ClassVar[str] = "identity"
    ui: ClassVar[dict] = {"per_channel": PER_CHANNEL_UI, "bits": {"kind": "choice", "label": "bits", "choices": [1, 2, 3, 4, 5, 6, 7, 8],
                                                                  "lab_default": 4}}  # the lab opens at 4 bits, the seed's middle row
    per_channel: bool = True
    bits: int = 8

    def __post_init__(self):
        if not (isinstance(self.bits, int) and not isinstance(self.bits, bool) and 1 <= self.bits <= 8):
            raise ValueError(f"uniform bits must be an integer in [1, 8], got {self.bits!r}")

    @property
    def nominal(self) -> float:
        return float(self.bits)

    def quantize(self, w):
        flat = rows(w, self.per_channel)
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
        return {"codes": self.bits * numel(shape), "scales": n_groups(shape, self.per_channel) * FP_BITS}
