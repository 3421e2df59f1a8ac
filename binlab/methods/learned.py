"""LLM binarizations whose scales are *learned* in quantization-aware training with distillation:
DB-LLM's flexible dual binarization, BinaryMoS's mixture of scales, FBI-LLM's column scale and shift.

Each keeps its learned values in ``make_params`` (stored with the component, trained in QAT and
counted by ``storage``); latent weights get their gradient through the chosen estimator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import FP_BITS, Quantizer, numel, register, sign
from .onebit import svid


def _step(x: torch.Tensor) -> torch.Tensor:
    """H(x) = 1 if x >= 0 else 0."""
    return (x >= 0).to(x.dtype)


@register
@dataclass
class DBLLM(Quantizer):
    """DB-LLM's Flexible Dual Binarization (Chen et al. 2024, sec. 3.2): a 2-bit weight as two
    {0, 1} matrices with their own learned scales, per row and group of ``group`` input columns::

        W ~ a1 B1 + a2 B2,   B1 = H(W - (a1 + a2) / 2),   B2 = H(-(W - a1 B1 - a2 / 2))

    (H the unit step), whose levels ``{0, a2, a1 + a2, a1}`` start as the 2-bit grid
    ``{-s, 0, s, 2s}`` with ``a1 = 2s``, ``a2 = -s`` and ``s = max |w| / 2`` over the group, so zero
    stays exactly representable (the {0,1} form keeps the binaries sparse). QAT learns a1 and a2
    (through the product) and the latent weights (through the estimator); the thresholds move with
    the scales. Its distillation is Deviation-Aware (DAD): token-level KL weighted by the teacher's
    and student's entropies (the QAT budget's ``dad_gamma``, :func:`binlab.nn.objective.kd_loss`).

    The paper's text gives the split and the learned scales; the initial step ``s`` (max |w| / 2)
    and DAD's exact weighting are binlab's reading (no reference code is public). Stores 2 bits per
    weight and two fp32 scales per row and group.
    """

    name: ClassVar[str] = "dbllm"
    paper: ClassVar[str] = "Chen et al. 2024, DB-LLM: Accurate Dual-Binarization for Efficient LLMs"
    arxiv: ClassVar[str] = "2402.11960"
    mode: ClassVar[str] = "QAT with (deviation-aware) distillation"
    stores: ClassVar[str] = "2 bits per weight (two binary sets), two fp32 scales per row and group"
    default_ste: ClassVar[str] = "identity"
    nominal_bits: ClassVar[float] = 2.0
    ui: ClassVar[dict] = {"group": {"kind": "int", "label": "group size (input columns)", "min": 8, "max": 512, "step": 8}}
    group: int = 64

    def __post_init__(self):
        if not (isinstance(self.group, int) and self.group >= 1):
            raise ValueError(f"dbllm group must be a positive int, got {self.group!r}")

    def _groups(self, cols: int) -> int:
        return math.ceil(cols / self.group)

    def init_values(self, w):
        w2 = w.reshape(w.shape[0], -1)
        g = self._groups(w2.shape[1])
        pad = g * self.group - w2.shape[1]
        a = F.pad(w2.abs(), (0, pad)).reshape(w2.shape[0], g, self.group)
        s = (a.amax(2) / 2).clamp_min(1e-12)  # the 2-bit step: levels {-s, 0, s, 2s}
        return {"a1": 2 * s, "a2": -s}

    def _scales(self, w2):
        v = self.values(w2)
        a1, a2 = v["a1"], v["a2"]
        expand = lambda t: t.repeat_interleave(self.group, 1)[:, : w2.shape[1]]  # noqa: E731
        return expand(a1), expand(a2)

    def _binaries(self, w2, a1, a2):
        b1 = _step(w2 - (a1 + a2) / 2)
        b2 = _step(-(w2 - a1 * b1 - a2 / 2))
        return b1, b2

    def quantize(self, w):
        w2 = w.reshape(w.shape[0], -1)
        a1, a2 = (t.detach() for t in self._scales(w2))
        b1, b2 = self._binaries(w2, a1, a2)
        return (a1 * b1 + a2 * b2).reshape(w.shape)

    def train_forward(self, w, ste, scale, aux=None):
        from .ste import apply_ste

        w2 = w.reshape(w.shape[0], -1)
        a1, a2 = self._scales(w2)
        b1, b2 = self._binaries(w2.detach(), a1.detach(), a2.detach())
        q = a1 * b1 + a2 * b2  # gradient to the scales through the product
        return (apply_ste(w2, q.detach(), ste, scale.reshape(-1, 1)) + q - q.detach()).reshape(w.shape)

    def storage(self, shape):
        rows = shape[0]
        cols = numel(shape) // rows
        return {"codes": 2 * numel(shape), "scales": 2 * rows * self._groups(cols) * FP_BITS}


class ScaleExperts(nn.Module):
    """BinaryMoS's router and scale experts."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, experts: int):
        super().__init__()
        self.router = nn.Linear(b.numel(), experts, bias=False)  # default (Kaiming-uniform) init, as the reference
        self.s_in = nn.Parameter(b[None].repeat(experts, 1).clone())
        self.s_out = nn.Parameter(a[None].repeat(experts, 1).clone())


@register
@dataclass
class BinaryMoS(Quantizer):
    """BinaryMoS (Jo et al. 2024): OneBit's layer with *token-adaptive* scales, mixed from
    ``experts`` scale experts by a softmax router on the token (sec. 3.2)::

        g = softmax(W_R x),   s_in = g^T S_in,   s_out = g^T S_out
        y = ((x * s_in) sign(W)^T) * s_out

    Every expert starts from OneBit's SVID of the weight (:func:`.onebit.svid`); the router starts at
    its default init, so at first every token mixes identical experts (the SVID layer). QAT with
    distillation learns the router, the experts and the latent weights (clipped estimator), as the
    reference does. Outside a forward pass there is no single weight: :meth:`quantize` gives the
    layer with the experts averaged. Stores 1 bit per weight, ``experts x (in + out)`` fp32 scales
    and the ``experts x in`` fp32 router.
    """

    name: ClassVar[str] = "binarymos"
    paper: ClassVar[str] = "Jo et al. 2024, Mixture of Scales: Memory-Efficient Token-Adaptive Binarization for LLMs"
    arxiv: ClassVar[str] = "2406.12311"
    mode: ClassVar[str] = "QAT with distillation"
    stores: ClassVar[str] = "1 bit per weight, experts x (in + out) scales and an experts x in router (fp32)"
    ui: ClassVar[dict] = {"experts": {"kind": "int", "label": "scale experts", "min": 1, "max": 8, "step": 1}}
    experts: int = 4

    def __post_init__(self):
        if not (isinstance(self.experts, int) and self.experts >= 1):
            raise ValueError(f"binarymos experts must be a positive int, got {self.experts!r}")

    def make_params(self, w):
        if w.ndim != 2:
            return None
        return ScaleExperts(*svid(w), self.experts)

    def quantize(self, w):
        if self.params is None:
            a, b = svid(w)
        else:
            a, b = self.params.s_out.detach().mean(0), self.params.s_in.detach().mean(0)
        return sign(w) * torch.outer(a, b)

    def linear(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, train: bool, ste, scale) -> torch.Tensor:
        """The layer's output for inputs ``x`` (..., in): token-adaptive scales around the sign matrix."""
        from .ste import apply_ste

        if self.params is None:
            raise ValueError("binarymos needs its experts: quantize the component with quantize_()")
        s = apply_ste(w, sign(w.detach()), ste, scale) if train else sign(w.detach())
        g = torch.softmax(self.params.router(x), -1)
        y = F.linear(x * (g @ self.params.s_in), s) * (g @ self.params.s_out)
        return y + bias if bias is not None else y

    def storage(self, shape):
        rows = shape[0]
        cols = numel(shape) // rows
        return {"codes": numel(shape), "scales": self.experts * (rows + cols) * FP_BITS, "router": self.experts * cols * FP_BITS}


@register
@dataclass
class FBI(Quantizer):
    """FBI-LLM's FBI-linear (Ma, Sun, Shen 2024, sec. 3.1): the sign of the latent weight with a
    learned scale and shift per input column::

        W~_ij = alpha_j sign(W_ij) + beta_j

    initialised from the (random, for training from scratch) weights as ``beta_j = mean_i W_ij``,
    ``alpha_j = mean_i |W_ij - beta_j|``. FBI-LLM binarizes every block linear, keeps embeddings,
    norms and the head in full precision, and trains the model *from scratch* by autoregressive
    distillation: cross-entropy against the full-precision teacher's next-token distribution, no
    ground-truth term (T8's FBI row: mode ``scratch``, distillation weight 1, temperature 1). The
    estimator is the identity (no clip), as in the reference. Stores 1 bit per weight and two fp32
    values per input column.
    """

    name: ClassVar[str] = "fbi"
    paper: ClassVar[str] = "Ma, Sun, Shen 2024, FBI-LLM: Scaling Up Fully Binarized LLMs from Scratch via Autoregressive Distillation"
    arxiv: ClassVar[str] = "2407.07093"
    mode: ClassVar[str] = "training from scratch with autoregressive distillation"
    stores: ClassVar[str] = "1 bit per weight, a scale and a shift per input column (fp32)"
    default_ste: ClassVar[str] = "identity"

    def init_values(self, w):
        w2 = w.reshape(w.shape[0], -1)
        beta = w2.mean(0)
        return {"alpha": (w2 - beta).abs().mean(0), "beta": beta}

    def _ab(self, w):
        v = self.values(w)
        return v["alpha"], v["beta"]

    def quantize(self, w):
        a, b = self._ab(w)
        return sign(w) * a.detach()[None] + b.detach()[None]

    def train_forward(self, w, ste, scale, aux=None):
        from .ste import apply_ste

        a, b = self._ab(w.detach())
        return apply_ste(w, sign(w.detach()), ste, scale) * a[None] + b[None]

    def storage(self, shape):
        cols = numel(shape) // shape[0]
        return {"codes": numel(shape), "scales": 2 * cols * FP_BITS}
