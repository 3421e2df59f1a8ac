"""Calibration data and layer-wise Hessians for the post-training methods that use data (GPTQ,
PB-LLM's PB-GPTQ, BiLLM, ARB-X, STBLLM ...).

- :func:`calibration_set`: a seeded sample of *training* rows (default 128, as in GPTQ and the
  papers built on it); it takes a ``Splits`` and reads only its train split, never test text.
- :func:`calibrate_`: for every quantized linear whose method needs data, the Hessian of the
  layer-wise reconstruction loss ``||W X - Q(W) X||^2`` (GPTQ, Frantar et al. 2023, sec. 3)::

      H = 2 X X^T / N    (in x in),  X: the N non-padding input vectors of the layer

  accumulated as a running mean over calibration batches like GPTQ's ``add_batch``, with one
  difference: binlab divides by the number of non-padding tokens, GPTQ's ``add_batch`` by the number
  of sequences (its inputs have no padding). The two differ by a constant factor, which no method
  sees (GPTQ's updates, the salience ``w^2 / [H^-1]_jj^2`` rankings and the relative damping are
  all unchanged by a scale of H).
  With ``sequential=True`` (GPTQ's default) the model is calibrated stage by stage in forward
  order -- the embeddings, then each transformer layer, then the head -- and the inputs of a stage
  come from the earlier stages *already quantized*; within a stage all inputs come from its
  full-precision weights (GPTQ's behaviour without ``--true-sequential``). With
  ``sequential=False`` every Hessian comes from the full-precision model, so it can be cached per
  component (the live lab does this).
- Methods with ``hessian_kind = "output"`` (OAC, Edalati et al. 2025) get the *output-adaptive*
  Hessian instead: the empirical Fisher of the model's own loss with respect to the layer's weights,
  aggregated over rows (:func:`collect_output_hessians`)::

      G_n = dl_n / dW = delta_n^T X_n   (out x in, one calibration row n),   H_OAC = (1/N) sum_n G_n^T G_n

  with ``l_n`` the row's summed cross-entropy (next-token NLL for a language model).
"""
from __future__ import annotations

import contextlib
import re
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from binlab.data import PAD_ID, EncodedSplit
from binlab.nn.quantize import QuantEmbedding, QuantLinear, quantized_modules

DEFAULT_ROWS = 128


def calibration_set(splits, n: int = DEFAULT_ROWS, seed: int = 0) -> EncodedSplit:
    """``n`` training rows drawn without replacement (seeded): the calibration data. Only
    ``splits.train`` is read -- calibration never sees validation or test text."""
    train = splits.train if hasattr(splits, "train") else None
    if train is None:
        raise ValueError("calibration_set needs a Splits object (it draws from its train split only)")
    if n < 1:
        raise ValueError(f"calibration needs at least 1 row, got n={n}")
    idx = np.sort(np.random.default_rng(seed).choice(len(train), size=min(n, len(train)), replace=False))
    return train.subset(idx)


def needs_calibration(model: nn.Module) -> list[str]:
    """Names of the quantized components whose method needs calibration data."""
    return [n for n, m in model.named_modules() if isinstance(m, (QuantLinear, QuantEmbedding)) and m.quantizer.needs_calibration]


def stage_of(name: str) -> str:
    """The calibration stage of a component: ``layers.{i}`` for a transformer layer's parts, else the name."""
    m = re.match(r"(layers\.\d+)\.", name)
    return m.group(1) if m else name


class _Collector:
    """Forward pre-hooks that accumulate ``H = 2 X X^T / N`` over the non-padding input rows."""

    def __init__(self, model: nn.Module, names: list[str]):
        self.H: dict[str, torch.Tensor] = {}
        self.count: dict[str, int] = {}
        self.mask: torch.Tensor | None = None
        mods = dict(model.named_modules())
        self.handles = [mods[n].register_forward_pre_hook(self._hook(n)) for n in names]

    def _hook(self, name):
        def hook(mod, args):
            x = args[0].detach()
            if x.ndim == 3 and self.mask is not None and self.mask.shape == x.shape[:2]:
                x = x[self.mask]  # padding positions are not inputs the layer really sees
            x = x.reshape(-1, x.shape[-1]).double()
            n_old, m = self.count.get(name, 0), x.shape[0]
            if m == 0:
                return
            h = self.H.get(name)
            if h is None:
                h = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
            h = h * (n_old / (n_old + m)) + (2.0 / (n_old + m)) * (x.T @ x)  # GPTQ's running mean
            self.H[name], self.count[name] = h, n_old + m

        return hook

    def close(self):
        for h in self.handles:
            h.remove()


@contextlib.contextmanager
def bypassed(mods: list[nn.Module]):
    """Quantized components compute with their full-precision latent weight inside this block."""
    old = [m.bypass for m in mods]
    try:
        for m in mods:
            m.bypass = True
        yield
    finally:
        for m, b in zip(mods, old):
            m.bypass = b


@torch.inference_mode()
def collect_hessians(model: nn.Module, calib: EncodedSplit, names: list[str], batch_size: int = 32) -> dict[str, torch.Tensor]:
    """``H = 2 X X^T / N`` (float64, in x in) for the named linears, with the model as it is now."""
    mods = dict(model.named_modules())
    for n in names:
        if isinstance(mods.get(n), (nn.Embedding, QuantEmbedding)):
            raise ValueError(f"{n} is an embedding: it has no input activations, so a calibrated method (GPTQ, PB-LLM, "
                             "BiLLM ...) cannot be applied to it; use a data-free method (rtn, xnor ...) for embeddings")
    col = _Collector(model, names)
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for x, _ in calib.batches(batch_size, device=device):
            col.mask = x != PAD_ID
            model(x)
    finally:
        col.close()
        model.train(was)
    missing = [n for n in names if n not in col.H]
    if missing:
        raise ValueError(f"no calibration inputs reached {missing}")
    return col.H


def collect_output_hessians(model: nn.Module, calib: EncodedSplit, names: list[str]) -> dict[str, torch.Tensor]:
    """OAC's output-adaptive Hessian ``(1/N) sum_n G_n^T G_n`` (float64, in x in) of the named linears:
    one backward pass per calibration row (per-row gradients; the outer products of a batch's summed
    gradient would not be their sum)."""
    from binlab.nn import objective

    mods = dict(model.named_modules())
    for n in names:
        if isinstance(mods.get(n), (nn.Embedding, QuantEmbedding)):
            raise ValueError(f"{n} is an embedding: OAC's Hessian needs a linear layer's inputs")
    task = objective.task_of(model)
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    H: dict[str, torch.Tensor] = {}
    io: dict[str, tuple] = {}

    def hook(name):
        def fn(mod, args, out):
            io[name] = (args[0], out)

        return fn

    handles = [mods[n].register_forward_hook(hook(n)) for n in names]
    rows = 0
    try:
        with torch.enable_grad():
            for x, y in calib.batches(1, device=device):
                io.clear()
                logits = model(x)
                nll, _, _ = objective.row_stats(logits, x, y, task)
                grads = torch.autograd.grad(nll.sum(), [io[n][1] for n in names], allow_unused=True)
                for n, g in zip(names, grads):
                    if g is None:
                        continue
                    xin = io[n][0].detach().reshape(-1, io[n][0].shape[-1]).double()
                    G = g.detach().reshape(-1, g.shape[-1]).double().T @ xin  # (out, in)
                    H[n] = H.get(n, 0) + G.T @ G
                rows += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    missing = [n for n in names if n not in H]
    if missing or rows == 0:
        raise ValueError(f"no calibration gradients reached {missing or names}")
    return {n: h / rows for n, h in H.items()}


def _collect(model, calib, names):
    """Each method's kind of Hessian: layer-wise (GPTQ's) or output-adaptive (OAC's)."""
    mods = dict(model.named_modules())
    out_kind = [n for n in names if getattr(mods[n].quantizer, "hessian_kind", "layer") == "output"]
    layer = [n for n in names if n not in out_kind]
    hs = collect_hessians(model, calib, layer) if layer else {}
    if out_kind:
        hs |= collect_output_hessians(model, calib, out_kind)
    return hs


def calibrate_(model: nn.Module, calib: EncodedSplit, sequential: bool = True, cache: dict | None = None,
               callback: Callable[[int, int, str], None] | None = None) -> dict[str, torch.Tensor]:
    """Give every component whose method needs data its Hessian (see the module docstring); returns them.

    ``cache`` (``(name, kind)`` -> H, only with ``sequential=False``) is read and filled, so a
    component's Hessian of each kind is computed once per full-precision model."""
    names = needs_calibration(model)
    if not names:
        return {}
    if cache is not None and sequential:
        raise ValueError("a Hessian cache holds full-precision Hessians: use it with sequential=False")
    mods = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    if not sequential:
        key = {n: (n, getattr(mods[n].quantizer, "hessian_kind", "layer")) for n in names}
        cache = {} if cache is None else cache
        todo = [n for n in names if key[n] not in cache]
        with bypassed(quantized_modules(model)):
            fresh = _collect(model, calib, todo) if todo else {}
        cache.update({key[n]: h for n, h in fresh.items()})
        for i, n in enumerate(names):
            out[n] = cache[key[n]]
            mods[n].quantizer.calibrate(out[n])
            if callback:
                callback(i + 1, len(names), n)
        return out
    stages: list[str] = []
    for n in names:
        if stage_of(n) not in stages:
            stages.append(stage_of(n))
    done = 0
    for s in stages:
        here = [n for n in names if stage_of(n) == s]
        waiting = [mods[n] for n in names if n not in out]  # this stage and later ones: full precision for now
        with bypassed(waiting):
            hs = _collect(model, calib, here)
        for n in here:
            out[n] = hs[n]
            mods[n].quantizer.calibrate(hs[n])
            done += 1
            if callback:
                callback(done, len(names), n)
    return out
