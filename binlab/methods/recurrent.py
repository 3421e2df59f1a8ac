"""The LSTM era's weight binarizers (the survey's first section; models in :mod:`binlab.nn.lstm`).

- :class:`LAB`: loss-aware binarization (Hou, Yao and Kwok, ICLR 2017), a proximal Newton step whose
  diagonal curvature is the optimizer's second moment.

XNOR on LSTMs (Zheng and Tang 2016) is XNOR-Net's scaled sign (``xnor``) on an LSTM's matrices: a
configuration of T10's, not a method of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import FP_BITS, Quantizer, numel, register, sign


@register
@dataclass
class LAB(Quantizer):
    """Loss-aware binarization (Hou, Yao and Kwok 2017): binary weights chosen to minimise a second-order model of the loss, with the curvature taken from Adam's second moments.

    LAB keeps the loss in view where XNOR-Net only approximates the matrix. With a diagonal
    approximation ``D = diag(d)`` of the Hessian, the proximal Newton step over ``{alpha b : b in {-1, +1}^n}``
    has a closed form (the paper's Proposition 3.1, per layer l)::

        w_l^t = w_l^{t-1} - grad_l / d_l                 (the latent step: Adam's, preconditioned by d)
        b_l = sign(w_l^t),   alpha_l = ||d_l * w_l^t||_1 / ||d_l||_1

    and ``d`` needs no extra computation: it is Adam's running average of squared gradients,
    ``v <- beta2 v + (1 - beta2) g^2`` with g the gradient with respect to the binary weight,
    ``d = sqrt(v) + 1e-8`` (``houlu369/Loss-aware-Binarization`` at 8a5bede: ``RNN/lab.py`` lines
    43-56, the second moment in ``RNN/warpeace.py`` lines 133-140 with beta2 = 0.999, the latent
    weights clipped to [-1, 1] after every step in ``RNN/lab.py`` lines 221-231; port in
    ``tests/reference/lab_ref.py``). Before the first step ``v = 0`` and alpha is the layer's
    mean |w|, XNOR-Net's per-tensor scale; so is PTQ, where no optimizer has run.

    In binlab: the QAT loop hands each LAB component the optimizer's ``exp_avg_sq`` of its latent weight
    (:func:`binlab.training.qat.qat`; AdamW's beta2 is 0.999), which under the identity estimator
    (LAB's default here) accumulates exactly the gradient with respect to the binary weight the
    code accumulates. Differences: sign(0) = +1 (the code's is -1); the latent weights are trained
    by binlab's AdamW schedule; and ``blocks`` > 1 splits the rows into equal blocks with a scale
    each: an LSTM's four gates are separate matrices in the code and one stacked ``(4d, d)`` matrix
    in binlab, so ``blocks = 4`` gives each gate its own alpha as the code does (T10 uses it).
    """

    name: ClassVar[str] = "lab"
    paper: ClassVar[str] = "Hou, Yao, Kwok 2017, Loss-aware Binarization of Deep Networks (ICLR)"
    arxiv: ClassVar[str] = "1611.01600"
    mode: ClassVar[str] = "QAT (its scale needs the optimizer's second moments; PTQ gives XNOR's per-tensor scale)"
    stores: ClassVar[str] = "1 bit per weight and one fp32 scale per block of rows"
    default_ste: ClassVar[str] = "identity"
    raw_ste: ClassVar[bool] = True
    #: the QAT loop gives this method the optimizer's second moment of its weight (set_second_moment)
    wants_second_moment: ClassVar[bool] = True
    ui: ClassVar[dict] = {"blocks": {"kind": "int", "label": "scales (row blocks)", "min": 1, "max": 16, "step": 1}}

    blocks: int = 1

    def __post_init__(self):
        self._v = None

    def set_second_moment(self, v: torch.Tensor | None) -> None:
        """The optimizer's running average of squared gradients of this component's weight (the
        optimizer updates it in place; LAB reads it at every quantization)."""
        self._v = v

    def state(self) -> tuple:
        v = self._v
        return super().state() + ((id(v), v._version) if v is not None else (None,))

    def _blocks(self, rows: int) -> int:
        if rows % self.blocks:
            raise ValueError(f"lab: {rows} rows do not split into {self.blocks} equal blocks")
        return self.blocks

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        w2 = w.reshape(w.shape[0], -1)
        k = self._blocks(w2.shape[0])
        v = self._v
        d = (v.to(w2.dtype).reshape_as(w2).sqrt() + 1e-8) if v is not None and v.numel() == w2.numel() else torch.ones_like(w2)
        dw, db = (d * w2.abs()).reshape(k, -1), d.reshape(k, -1)
        alpha = dw.sum(1) / db.sum(1)  # (k,): one scale per block of rows
        return (alpha.repeat_interleave(w2.shape[0] // k)[:, None] * sign(w2)).reshape(w.shape)

    def post_step(self, w: torch.Tensor) -> None:
        with torch.no_grad():
            w.clamp_(-1.0, 1.0)  # the code's clipping of the latent weights

    def storage(self, shape):
        self._blocks(shape[0])
        return {"codes": numel(shape), "scales": FP_BITS * self.blocks}
