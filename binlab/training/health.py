"""QAT health: what a binarized model's training looks like from inside, for live plots.

- :func:`signs` / :func:`flip_ratio`: the share of binary weights whose sign changed between two
  moments of QAT, per quantized component (flips that never settle mean the latent weights
  oscillate around zero; none at all mean they are frozen).
- :func:`outside_clip`: the share of latent weights the estimator no longer passes gradient to
  (``|w / scale| > 1`` for the clipped estimators: "dead" weights in ReCU's sense).
- :func:`attention_entropy`: the mean entropy of each head's attention distribution over real
  keys (BiBERT's argument: binarized attention tends to collapse toward low entropy).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from binlab.data import PAD_ID
from binlab.nn.quantize import QuantLinear, quantizable


def _quantized(model: nn.Module) -> dict[str, QuantLinear]:
    return {n: m for n, m in quantizable(model).items() if isinstance(m, QuantLinear)}


@torch.no_grad()
def signs(model: nn.Module) -> dict[str, torch.Tensor]:
    """The sign pattern of every quantized linear's latent weights (what its binary codes follow)."""
    return {n: m.weight.detach() >= 0 for n, m in _quantized(model).items()}


def flip_ratio(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per component: the fraction of weights whose sign differs between two :func:`signs` snapshots."""
    return {n: float((before[n] != after[n]).double().mean()) for n in before if n in after}


@torch.no_grad()
def outside_clip(model: nn.Module) -> dict[str, float]:
    """Per quantized linear: the fraction of latent weights with ``|w / scale| > 1`` (the estimator's
    input, :meth:`binlab.nn.quantize._Fake.ste_scale`), where clipped estimators pass no gradient."""
    return {n: float((m.weight.detach().abs() > m.ste_scale(m.weight)).double().mean()) for n, m in _quantized(model).items()}


def attention_entropy(model: nn.Module, ids: torch.Tensor) -> dict[str, float]:
    """Mean entropy (nats) of each head's attention over real keys, per layer and head
    (``"L{i}.h{j}"``), on the rows ``ids``; as the model computes it now (quantized Q/K and binary
    attention included, normalised: see :func:`binlab.methods.attention.entropy`). Uniform attention over n
    keys has entropy ln n."""
    from binlab.methods.attention import entropy, maps

    real = ids != PAD_ID
    out = {}
    for i, (w, mask) in enumerate(maps(model, ids)):
        ent = entropy(w, mask, real)  # (B, h)
        for j in range(ent.shape[1]):
            out[f"L{i}.h{j}"] = float(ent[:, j].mean())
    return out
