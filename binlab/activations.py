"""Activation binarizers, for W1A1 configurations (BiT, Liu et al. 2022; BiBERT, Qin et al. 2022).

- ``sign``: signed activations (inputs of Q/K/V/O and FFN-up, i.e. layer-norm outputs) become
  ``alpha_t * sign(x)`` with ``alpha_t = mean|x|`` per token.
- ``binary01``: non-negative-ish activations (the FFN-down input, after GELU) become
  ``m_t * 1[x >= mean_t(x)]`` with ``m_t`` the mean of the values above the token's mean
  (a {0, 1} code with one scale per token, as BiT does for non-negative inputs).
- ``absmax8``: 8-bit per-token absmax quantization, ``x~ = clip(round(127 x / gamma), -127, 127) gamma / 127``
  with ``gamma = max|x|`` per token (BitNet's and BitNet b1.58's BitLinear inputs, W1A8); identity STE.
- attention probabilities (:class:`BinaryAttentionProbs`): ``1[p >= 1 / L]`` over the L valid keys,
  i.e. keep the keys that get more than a uniform share, then average them (a {0,1} mask and one
  scale per query row).

Backward: the chosen STE evaluated on ``x / alpha_t``: the weight method's ``act_ste`` (clipped by
default; ApproxSign for Bi-Real and ReCU, the Fourier series for FDA), identity for ``absmax8``.
"""
from __future__ import annotations

import torch

from .binarizers import sign
from .ste import apply_ste


def act_sign(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = x.abs().mean(-1, keepdim=True).clamp_min(1e-8)
    return a * sign(x), a


def act_binary01(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu = x.mean(-1, keepdim=True)
    up = (x >= mu).to(x.dtype)
    m = (x * up).sum(-1, keepdim=True) / up.sum(-1, keepdim=True).clamp_min(1)
    return m * up, m.abs().clamp_min(1e-8)


def act_absmax8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    g = x.abs().amax(-1, keepdim=True).clamp_min(1e-8)
    return torch.clamp(torch.round(127 * x / g), -127, 127) * g / 127, g


ACTIVATIONS = {"sign": act_sign, "binary01": act_binary01, "absmax8": act_absmax8}
#: estimators fixed by the activation quantizer itself (others take the weight method's act_ste)
ACT_STE = {"absmax8": "identity"}


def get_activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation binarizer {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class ActQuant(torch.nn.Module):
    def __init__(self, name: str, ste="clipped"):
        super().__init__()
        self.name, self.fn = name, get_activation(name)
        self.ste = ACT_STE.get(name, ste)  # a name from binlab.ste.STES or an STE object (e.g. FDA with its own terms)

    def forward(self, x):
        q, scale = self.fn(x.detach())
        return apply_ste(x, q, self.ste, scale)

    @property
    def ste_name(self) -> str:
        return self.ste if isinstance(self.ste, str) else self.ste.name

    def extra_repr(self):
        return f"{self.name}, ste={self.ste_name}"


class BinaryAttentionProbs(torch.nn.Module):
    """{0,1} attention: ``A_b = 1[p >= 1/L]`` per query over its L valid keys, averaged (scale 1/count).
    Backward: straight-through to the softmax probabilities."""

    def forward(self, probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        L = mask.sum(-1, keepdim=True).clamp_min(1).to(probs.dtype)  # (B, 1, 1, 1)
        keep = ((probs >= 1.0 / L) & mask).to(probs.dtype)
        q = keep / keep.sum(-1, keepdim=True).clamp_min(1)
        return probs + (q - probs).detach()
