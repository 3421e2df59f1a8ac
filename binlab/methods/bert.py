"""The BERT-era weight binarizers that differ from the classic ones.

- :class:`BiBERTWeight` (``bibert``): BiBERT's row-centred sign with an uncentred absmean scale.
- :class:`TWS` (``binarybert``): BinaryBERT's ternary weight splitting (two binary matrices whose
  sum is a TWN ternary matrix).

BiT's weight binarizer, ``(||W||_1 / n) sign(W - mean W)`` per matrix with the identity estimator,
is BitNet's (``bitnet``); the W1A1 recipes that need the rest (Bi-Attention, elastic activations,
direction-matching and multi-step distillation, boosting) are in :mod:`binlab.training.recipes`,
:mod:`binlab.methods.attention` and :mod:`binlab.methods.activations`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import FP_BITS, Quantizer, n_groups, numel, reduce_dims, register, sign
from .classic import PER_CHANNEL_UI, XNOR
from .lowbit import ternarize


@register
@dataclass
class BiBERTWeight(Quantizer):
    """BiBERT's weight binarizer (Qin et al. 2022, sec. 2 eq. 2; ``htqin/BiBERT``'s ``QuantizeLinear``)::

        W~ = mean_row(|W|) * sign(W - mean_row(W))

    per output row (per token for an embedding table): the sign is taken around the row's mean,
    the scale is the mean absolute value of the uncentred row (detached). QAT: the clipped
    estimator on the centred weights (binlab's weight normalisation, see :mod:`.base`). Stores the
    signs and one fp32 scale per row.
    """

    name: ClassVar[str] = "bibert"
    paper: ClassVar[str] = "Qin et al. 2022, BiBERT: Accurate Fully Binarized BERT"
    arxiv: ClassVar[str] = "2203.06390"
    mode: ClassVar[str] = "QAT with direction-matching distillation (fully binary W1A1 in the paper)"
    stores: ClassVar[str] = "1 bit per weight + one fp32 scale per row"
    default_ste: ClassVar[str] = "clipped"

    def quantize(self, w):
        rd = reduce_dims(w, True)
        return sign(w - w.mean(**rd)) * w.abs().mean(**rd)

    def train_forward(self, w, ste, scale, aux=None):
        from .ste import apply_ste

        rd = reduce_dims(w, True)
        centred = w - w.mean(**rd)
        return apply_ste(centred, sign(centred.detach()) * w.detach().abs().mean(**rd), ste, scale)

    def storage(self, shape):
        return {"codes": numel(shape), "scales": n_groups(shape, True) * FP_BITS}


def bwn(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Binary weight network: ``mean|W| sign(W)`` (BinaryBERT's BWN quantizer), i.e. XNOR-Net's weights."""
    return XNOR(per_channel=per_channel).quantize(w)


def tws_split(w: torch.Tensor, per_channel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """BinaryBERT's ternary weight splitting (Bai et al. 2021, sec. 3.1, eqs. 4-7): the latent
    weights ``w`` of a TWN-ternary layer -> ``(W1, W2)`` with ``W1 + W2 = w`` and
    ``BWN(W1) + BWN(W2) = TWN(w)`` exactly. With ``I = {|w| > Delta}``, ``J = {|w| <= Delta, w > 0}``,
    ``K = {|w| <= Delta, w <= 0}`` and n the number of weights (per group)::

        W1 = a w on I,   w + b on J,   b on K
        W2 = (1 - a) w on I,   -b on J,   w - b on K
        a = (sum_I |w| + sum_K |w| - sum_J |w|) / (2 sum_I |w|)
        b = (n alpha - sum |w|) / (2 (|J| + |K|))

    so both halves have absmean ``alpha / 2`` and the signs of W1 and W2 agree on I and cancel elsewhere.
    """
    rd = reduce_dims(w, per_channel)
    _, big, alpha = ternarize(w, per_channel)
    a_ = w.abs()
    J = ~big & (w > 0)
    K = ~big & (w <= 0)
    n = big.new_tensor(w[0].numel() if per_channel else w.numel(), dtype=w.dtype)
    sI, sJ, sK = ((a_ * m).sum(**rd) for m in (big, J, K))
    a = (sI + sK - sJ) / (2 * sI).clamp_min(1e-30)
    b = (n * alpha - a_.sum(**rd)) / (2 * (J.sum(**rd) + K.sum(**rd))).clamp_min(1)
    w1 = torch.where(big, a * w, torch.where(J, w + b, b))
    w2 = torch.where(big, (1 - a) * w, torch.where(J, -b, w - b))
    return w1, w2


@register
@dataclass
class TWS(Quantizer):
    """BinaryBERT (Bai et al. 2021): a binary layer as two binary matrices summed, started by
    ternary weight splitting (sec. 3.1; see :func:`tws_split`)::

        W~ = BWN(W1) + BWN(W2),   BWN(W) = mean|W| sign(W)   (per tensor; per row for embeddings)

    ``W1`` and ``W2`` are the method's learned values, initialised by splitting the component's
    latent weight as a TWN ternary layer: right after the split the layer computes exactly what
    the ternary one did (``BWN(W1) + BWN(W2) = TWN(W)``). QAT trains W1 and W2 with the identity
    estimator (BinaryBERT's); the latent weight is kept unchanged (``restore_`` gives it back).
    BinaryBERT splits a half-width ternary model into a full-width binary one; binlab keeps the
    width, so each split linear holds two binary matrices: 2 bits per weight, counted as such.
    """

    name: ClassVar[str] = "binarybert"
    paper: ClassVar[str] = "Bai et al. 2021, BinaryBERT: Pushing the Limit of BERT Quantization"
    arxiv: ClassVar[str] = "2012.15701"
    mode: ClassVar[str] = "QAT: ternary model, split, then binary fine-tuning with distillation"
    stores: ClassVar[str] = "2 bits per weight (two binary matrices) + two fp32 scales per tensor (per row for embeddings)"
    default_ste: ClassVar[str] = "identity"
    nominal_bits: ClassVar[float] = 2.0
    ui: ClassVar[dict] = {"per_channel": PER_CHANNEL_UI}
    per_channel: bool = False

    def init_values(self, w):
        w1, w2 = tws_split(w.detach(), self.per_channel)
        return {"w1": w1, "w2": w2}

    def quantize(self, w):
        v = self.values(w)
        return (bwn(v["w1"].detach(), self.per_channel) + bwn(v["w2"].detach(), self.per_channel)).reshape(w.shape)

    def train_forward(self, w, ste, scale, aux=None):
        v = self.values(w)
        out = 0
        for p in (v["w1"], v["w2"]):
            out = out + p + (bwn(p.detach(), self.per_channel) - p).detach()
        return out.reshape(w.shape)

    def storage(self, shape):
        return {"codes": 2 * numel(shape), "scales": 2 * n_groups(shape, self.per_channel) * FP_BITS}
