"""OneBit: towards extremely low-bit LLMs (Xu et al., NeurIPS 2024, arXiv 2402.11295)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import FP_BITS, Quantizer, numel, register, sign


def svid(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sign-Value-Independent Decomposition (sec. 3.3, eq. 5-6): ``W ~ sign(W) * (a b^T)`` with
    ``a b^T`` the best rank-1 approximation of ``|W|``. For a non-negative matrix that approximation
    is non-negative (Perron-Frobenius), so the paper's two choices -- rank-1 NMF, which its ablation
    prefers, and rank-1 SVD -- have the same optimum; binlab takes it from the SVD:
    ``a = sqrt(s_1) |u_1|``, ``b = sqrt(s_1) |v_1|``."""
    w2 = w.reshape(w.shape[0], -1).double()
    U, S, Vh = torch.linalg.svd(w2.abs(), full_matrices=False)
    a, b = U[:, 0].abs() * S[0].sqrt(), Vh[0].abs() * S[0].sqrt()
    return a.to(w.dtype), b.to(w.dtype)


@register
@dataclass
class OneBit(Quantizer):
    """OneBit (Xu et al. 2024): a linear layer is a sign matrix and two value vectors (eq. 4)::

        W ~ sign(W) * (a b^T)        y = ((x * b) sign(W)^T) * a

    ``a`` and ``b`` are initialised by SVID (:func:`svid`) and then *learned* in QAT, together with
    the latent weights behind ``sign`` (through the estimator), by knowledge transfer from the
    full-precision model: logit distillation plus the hidden-state term (sec. 3.4, eq. 8)
    ``sum_l mean_tokens || h_l^T / ||h_l^T|| - h_l^S / ||h_l^S|| ||^2`` (the QAT budget's
    ``hidden_distill``). Before QAT (PTQ) it is the SVID approximation itself.

    Left out: the reference code's parameter-free LayerNorm on each binary layer's output, and its
    re-initialisation of the latent weights to ``0.01 sign(W)`` (binlab keeps the trained weights as
    latents and uses its usual estimator). Stores 1 bit per weight and ``out + in`` fp32 values.
    """

    name: ClassVar[str] = "onebit"
    paper: ClassVar[str] = "Xu et al. 2024, OneBit: Towards Extremely Low-bit Large Language Models"
    arxiv: ClassVar[str] = "2402.11295"
    mode: ClassVar[str] = "QAT with distillation (SVID initialisation)"
    stores: ClassVar[str] = "1 bit per weight + the two learned value vectors (out + in, fp32)"

    def init_values(self, w):
        a, b = svid(w)
        return {"a": a, "b": b}  # a (out) and b (in)

    def _ab(self, w):
        v = self.values(w)
        return v["a"], v["b"]

    def quantize(self, w):
        a, b = self._ab(w.reshape(w.shape[0], -1))
        return (sign(w) * torch.outer(a.detach(), b.detach()).reshape(w.shape)).to(w.dtype)

    def train_forward(self, w, ste, scale, aux=None):
        from .ste import apply_ste

        a, b = self._ab(w.detach().reshape(w.shape[0], -1))
        return apply_ste(w, sign(w.detach()), ste, scale) * torch.outer(a, b).reshape(w.shape)

    def storage(self, shape):
        rows = shape[0]
        cols = numel(shape) // rows
        return {"codes": numel(shape), "scales": (rows + cols) * FP_BITS}
