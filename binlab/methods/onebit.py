"""OneBit: towards extremely low-bit LLMs (Xu et al., NeurIPS 2024, arXiv 2402.11295)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

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


#: the reference's per-layer LayerNorm: no affine parameters, torch's default eps
LN_EPS = 1e-5


@register
@dataclass
class OneBit(Quantizer):
    """OneBit (Xu et al. 2024): a linear layer is a sign matrix and two value vectors (eq. 4), with
    a parameter-free LayerNorm on its output, as the reference code builds it (xuyuzhuang11/OneBit,
    ``bitnet.py`` ``BitLinear``)::

        W ~ sign(W) * (a b^T)        y = LN(((x * b) sign(W)^T) * a) + bias

    ``a`` and ``b`` are initialised by SVID (:func:`svid`) and then *learned* in QAT, together with
    the latent weights behind ``sign``, by knowledge transfer from the full-precision model: logit
    distillation plus the hidden-state term (sec. 3.4, eq. 8)
    ``sum_l mean_tokens || h_l^T / ||h_l^T|| - h_l^S / ||h_l^S|| ||^2`` (the QAT budget's
    ``hidden_distill``). As in the code, QAT starts the latent weights at ``0.01 sign(W)``
    (:meth:`init_latent`; ``a`` and ``b`` already hold the magnitudes) and back-propagates through
    sign with ``g(w) = 1.001 - tanh^2(w)`` on the raw latent weight (the ``onebit`` estimator).

    ``out_norm=False`` leaves the LayerNorm out: the layer is then ``x (sign(W) * a b^T)^T + bias``,
    the SVID approximation of W itself (what "SVID only" PTQ measures; with the norm, a layer needs
    training before it computes anything like W x). :meth:`quantize` returns ``sign(W) * a b^T``
    either way. Where binlab differs: SVID from the rank-1 SVD (the code runs scikit-learn's
    rank-1 NMF: the same product ``a b^T``, split differently between a and b), ``sign(0) = +1``,
    and fp32 values (the code trains in fp16). Stores 1 bit per weight and ``out + in`` fp32 values
    (the LayerNorm has none).
    """

    name: ClassVar[str] = "onebit"
    paper: ClassVar[str] = "Xu et al. 2024, OneBit: Towards Extremely Low-bit Large Language Models"
    arxiv: ClassVar[str] = "2402.11295"
    mode: ClassVar[str] = "QAT with distillation (SVID initialisation)"
    stores: ClassVar[str] = "1 bit per weight + the two learned value vectors (out + in, fp32)"
    default_ste: ClassVar[str] = "onebit"
    raw_ste: ClassVar[bool] = True  # the estimator acts on the latent weight itself, not on w / (3 std)
    ui: ClassVar[dict] = {"out_norm": {"kind": "bool", "label": "LayerNorm on the output (the paper's layer; needs QAT)",
                                       "lab_default": False}}
    out_norm: bool = True

    def __post_init__(self):
        if not isinstance(self.out_norm, bool):
            raise ValueError(f"onebit out_norm must be true or false, got {self.out_norm!r}")

    def init_values(self, w):
        a, b = svid(w)
        return {"a": a, "b": b}  # a (out) and b (in)

    def init_latent(self, w):
        return 0.01 * sign(w)

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

    @property
    def post_norm(self) -> bool:
        """Whether the layer's output goes through the LayerNorm (the packed layer applies it too)."""
        return self.out_norm

    @property
    def linear(self):
        """The layer's own forward when it has the output LayerNorm (None: an ordinary weight matrix)."""
        return self._normed_linear if self.out_norm else None

    def _normed_linear(self, x, w, bias, train, ste, scale):
        from .ste import apply_ste

        a, b = self._ab(w.detach())
        s = apply_ste(w, sign(w.detach()), ste, scale) if train else sign(w.detach())
        y = F.layer_norm(F.linear(x * b, s) * a, (w.shape[0],), eps=LN_EPS)
        return y + bias if bias is not None else y

    def storage(self, shape):
        rows = shape[0]
        cols = numel(shape) // rows
        return {"codes": numel(shape), "scales": (rows + cols) * FP_BITS}
