"""Whole-model allocations that need calibration data: one setting per layer, chosen from the model.

A method's quantizer sees one matrix at a time; an allocation looks at every layer first (with the
calibration Hessians of :mod:`binlab.training.calibration`) and returns a spec with a rule per layer.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from binlab.methods.stbllm import importance
from binlab.nn.quantize import MethodConfig, QuantSpec, Rule, quantizable

from .calibration import collect_hessians


def layerwise_nm(model, calib, n: int = 4, m: int = 8, lam: float = 2.0, hyper_m: float = 6.0):
    """STBLLM's layer-wise N:M allocation (sec. 3.3), as its code does it (``prune_ria_outlier_structure_special``,
    OWL-style outlier ratios, ``--Lamda 2 --Hyper_m 6``): for each transformer layer, the share
    ``D_l`` of importance scores (:func:`binlab.methods.stbllm.importance`, ``||X_j||^0.5``) above
    ``hyper_m`` times their mean, over all the layer's linears on the unquantized model; then::

        r_l = round_half_even(lam (D_l - min D) / (max D - min D) - mean_l(...)),   r_l = 2 where r_l = 1
        N_l = n + r_l

    (layers with more outliers keep more weights). binlab clips ``N_l`` to [1, m] where the code
    would prune a whole group or keep more than ``m``; equal ratios give every layer ``n``.
    Returns ``(spec, {layer: N_l})``: one STBLLM rule per layer, ready for
    :func:`binlab.training.qat.ptq` with calibration data."""
    linears = [k for k, v in quantizable(model).items() if re.match(r"layers\.\d+\.(attn|ffn)\.", k) and isinstance(v, torch.nn.Linear)]
    if not linears:
        raise ValueError("layer-wise N:M needs a model with plain (unquantized) layers.{i}.attn/ffn linears")
    hs = collect_hessians(model, calib, linears)
    layers = sorted({int(k.split(".")[1]) for k in linears})
    ratios = {}
    for i in layers:
        s = torch.cat([importance(model.get_submodule(k).weight.detach().double(), torch.diag(hs[k])).flatten()
                       for k in linears if k.startswith(f"layers.{i}.")])
        ratios[i] = float((s > hyper_m * s.mean()).double().mean())
    alloc = dict(zip(layers, allocate_n([ratios[i] for i in layers], n, m, lam)))
    rules = tuple(Rule(f"layers.{i}.{part}.*", MethodConfig("stbllm", options={"n": alloc[i], "m": m})) for i in layers for part in ("attn", "ffn"))
    return QuantSpec(rules), alloc


def allocate_n(ratios: list[float], n: int, m: int, lam: float = 2.0) -> list[int]:
    """The kept count per layer from the layers' outlier ratios (:func:`layerwise_nm`'s rule, in
    the code's order of operations): ``r = (D - min D) * (lam / (max D - min D))``, centred,
    rounded half to even, 1 -> 2; ``N_l = clip(n + r_l, 1, m)``; equal ratios give every layer ``n``."""
    d = np.asarray(ratios, dtype=np.float64)
    span = d.max() - d.min()
    if not span > 0:
        return [n] * len(d)
    r = (d - d.min()) * (1.0 / span * lam)
    r = np.round(r - r.mean())
    r[r == 1] = 2
    return [int(min(max(n + int(x), 1), m)) for x in r]
