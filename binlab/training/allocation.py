"""Whole-model allocations that need calibration data: one setting per layer, chosen from the model.

A method's quantizer sees one matrix at a time; an allocation looks at every layer first (with the
calibration Hessians of :mod:`binlab.training.calibration`) and returns a spec with a rule per layer.
"""
from __future__ import annotations

import re

import torch

from binlab.nn.quantize import MethodConfig, QuantSpec, Rule, quantizable

from .calibration import collect_hessians


def layerwise_nm(model, calib, n: int = 4, m: int = 8, lam: float = 2.0, hyper_m: float = 6.0):
    """STBLLM's layer-wise N:M allocation (sec. 3.3), as its code does it (OWL-style outlier ratios):
    for each transformer layer, the share ``D_l`` of importance scores ``|W_ij| (1/sum_i |W_ij| +
    1/sum_j |W_ij|) ||X_j||`` above ``hyper_m`` times their mean (over all the layer's linears);
    layers with more outliers keep more weights::

        N_l = clip(round(n + lam (D_l - mean D) / (max D - min D)), 1, m)

    (the average stays at n). Returns ``(spec, {layer: N_l})``: one STBLLM rule per layer, ready for
    :func:`binlab.training.qat.ptq` with calibration data."""
    linears = [k for k, v in quantizable(model).items() if re.match(r"layers\.\d+\.(attn|ffn)\.", k) and isinstance(v, torch.nn.Linear)]
    if not linears:
        raise ValueError("layer-wise N:M needs a model with plain (unquantized) layers.{i}.attn/ffn linears")
    hs = collect_hessians(model, calib, linears)
    layers = sorted({int(k.split(".")[1]) for k in linears})
    ratios = {}
    for i in layers:
        scores = []
        for k in (k for k in linears if k.startswith(f"layers.{i}.")):
            w = model.get_submodule(k).weight.detach().double().abs()
            rel = w / w.sum(0, keepdim=True).clamp_min(1e-12) + w / w.sum(1, keepdim=True).clamp_min(1e-12)
            scores.append((rel * torch.diag(hs[k]).clamp_min(0).sqrt()[None, :]).flatten())
        s = torch.cat(scores)
        ratios[i] = float((s > hyper_m * s.mean()).double().mean())
    d = torch.tensor([ratios[i] for i in layers], dtype=torch.float64)
    spread = float(d.max() - d.min())
    alloc = {i: n if spread == 0 else int(min(max(round(n + lam * (ratios[i] - float(d.mean())) / spread), 1), m)) for i in layers}
    rules = tuple(Rule(f"layers.{i}.{part}.*", MethodConfig("stbllm", options={"n": alloc[i], "m": m})) for i in layers for part in ("attn", "ffn"))
    return QuantSpec(rules), alloc
