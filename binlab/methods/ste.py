"""Straight-through estimators: the backward rule used in place of sign's zero gradient.

A binarizer's forward value ``q(x)`` is piecewise constant, so ``dq/dx = 0`` almost everywhere.
QAT keeps latent real weights and back-propagates ``dL/dx = dL/dq * g(x)`` where ``g`` is the
derivative of a smooth stand-in for sign. Any binarizer can be paired with any STE by name.

Every estimator here is a pure function ``g(x)`` (its own helper, as in larq), applied through
:func:`apply_ste`. Methods whose paper specifies a fuller weight gradient (XNOR's and Bi-Real's
scale, ReCU's clamp, FDA's noise module) build it in their ``train_forward`` from these pieces.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class STE:
    name: str
    grad: Callable[[torch.Tensor], torch.Tensor]  # g(x) = d Approx(x) / dx
    forward_proxy: Callable[[torch.Tensor], torch.Tensor]  # Approx(x), for plots
    doc: str


def _identity(x):
    return torch.ones_like(x)


def _clipped(x):
    return (x.abs() <= 1).to(x.dtype)


def _approxsign(x):
    return ((2 - 2 * x.abs()) * (x.abs() <= 1)).to(x.dtype)


FDA_TERMS = 10  # the paper's n_s = 9 (sum over i = 0 .. 9) and the BiBench port's start (it grows to 18); binlab keeps 10
FDA_OMEGA = 0.1  # the frequency of the only training codes (BiBench's and PB-LLM's FDA); the paper gives no number


def fourier_sign(x: torch.Tensor, terms: int = FDA_TERMS, omega: float = FDA_OMEGA) -> torch.Tensor:
    """FDA's truncated series (Xu et al. 2021, §3.1): ``(4/pi) sum_{i<n} sin((2i+1) w x) / (2i+1)``."""
    s = torch.zeros_like(x)
    for i in range(terms):
        s = s + torch.sin((2 * i + 1) * omega * x) / (2 * i + 1)
    return (4 / math.pi) * s


def fourier_sign_grad(x: torch.Tensor, terms: int = FDA_TERMS, omega: float = FDA_OMEGA) -> torch.Tensor:
    """Its derivative ``(4 w / pi) sum_{i<n} cos((2i+1) w x)``: FDA's estimate of sign's gradient."""
    g = torch.zeros_like(x)
    for i in range(terms):
        g = g + torch.cos((2 * i + 1) * omega * x)
    return (4 * omega / math.pi) * g


def fda_ste(terms: int = FDA_TERMS) -> "STE":
    """FDA's estimator with ``terms`` terms: ``g`` is the series' derivative on |x| <= 1 (zero beyond),
    the proxy the series itself on [-1, 1]. ``STES["fda"]`` is the default; FDA layers build their own."""
    return STE("fda", lambda x: fourier_sign_grad(x, terms) * (x.abs() <= 1).to(x.dtype),
               lambda x: fourier_sign(x.clamp(-1, 1), terms),
               f"Derivative of sign's truncated Fourier series (Xu et al. 2021, FDA, eq. 10): g(x) = (4w/pi) sum_(i<n) cos((2i+1) w x), "
               f"n={terms} terms, w={FDA_OMEGA} (BiBench's and PB-LLM's FDA code), zero for |x| > 1; positive on the whole window; "
               f"the proxy is the series itself on [-1, 1].")


TANH_K = 2.0


def _tanh(x):
    return TANH_K * (1 - torch.tanh(TANH_K * x) ** 2)


def _onebit(x):
    return 1.001 - torch.tanh(x) ** 2


STES: dict[str, STE] = {
    "identity": STE("identity", _identity, lambda x: x, "g(x) = 1: plain straight-through (Bengio, Leonard, Courville 2013, arXiv 1308.3432); BinaryConnect's and BitNet's rule."),
    "clipped": STE("clipped", _clipped, lambda x: x.clamp(-1, 1),
                   "g(x) = 1[|x| <= 1], the derivative of clip(x, -1, 1) (Hubara et al. 2016, BNN, eq. 4)."),
    "approxsign": STE("approxsign", _approxsign,
                      lambda x: torch.where(x.abs() <= 1, 2 * x - x * x.abs(), torch.sign(x)),
                      "g(x) = (2 - 2|x|) 1[|x| <= 1], derivative of the piecewise quadratic ApproxSign (Liu et al. 2018, Bi-Real Net, eq. 3)."),
    "fda": fda_ste(FDA_TERMS),
    "onebit": STE("onebit", _onebit, lambda x: 0.001 * x + torch.tanh(x),
                  "g(x) = 1.001 - tanh^2(x) on the raw latent weight: OneBit's sign estimator (xuyuzhuang11/OneBit, bitnet.py SignSTEFunc); "
                  "never below 0.001, so every latent weight keeps learning."),
    "tanh": STE("tanh", _tanh, lambda x: torch.tanh(TANH_K * x), f"g(x) = k (1 - tanh^2(k x)), k={TANH_K}: a smooth sign surrogate (no single paper; binlab's teaching baseline)."),
}


def get_ste(name: str) -> STE:
    if name not in STES:
        raise ValueError(f"unknown STE {name!r}; choose one of {sorted(STES)}")
    return STES[name]


class _STEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, q, grad_fn):
        ctx.save_for_backward(x)
        ctx.grad_fn = grad_fn
        return q

    @staticmethod
    def backward(ctx, g_out):
        (x,) = ctx.saved_tensors
        return g_out * ctx.grad_fn(x), None, None


def apply_grad(x: torch.Tensor, q: torch.Tensor, grad_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``q`` forward, ``dL/dq * grad_fn(x)`` as ``dL/dx`` backward (any elementwise rule)."""
    if not x.requires_grad:
        return q
    return _STEFunction.apply(x, q.detach(), grad_fn)


def apply_ste(x: torch.Tensor, q: torch.Tensor, ste: STE | str, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Return ``q`` in the forward pass and ``dL/dq * g(x / scale)`` as ``dL/dx`` in the backward pass.

    ``scale`` lets an estimator act on a normalised input (e.g. weights divided by their std).
    """
    ste = get_ste(ste) if isinstance(ste, str) else ste
    if not x.requires_grad:
        return q
    if ste.name == "identity":
        return x + (q - x).detach()
    s = scale.detach() if isinstance(scale, torch.Tensor) else scale
    return _STEFunction.apply(x, q.detach(), lambda t: ste.grad(t / s))
