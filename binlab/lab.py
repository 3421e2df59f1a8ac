"""The computations behind the Streamlit lab, with no widgets: the app is a thin layer over these.

- :class:`LiveLab` keeps one working copy of a trained model and re-binarizes it (PTQ) on every
  change, measuring validation accuracy on pre-batched rows, exact size, and weight statistics.
- :func:`component_view` gives what the histogram of one weight matrix draws.
- :func:`sensitivity` binarizes each component alone (and the QK/QV/KV pairs) and measures.
- :data:`SEED_POINTS`: the seed's (reduction, accuracy) points for reference in scatter plots.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch

from .binarizers import Bucket
from .data import EncodedSplit
from .quantize import GROUPS, MethodConfig, QuantEmbedding, QuantLinear, QuantSpec, Rule, quantizable, quantize_
from .size import model_size
from .stats import paired_difference, wilson_interval
from .train import EVAL_BATCH

PARTS = (("Q", "attn.q"), ("K", "attn.k"), ("V", "attn.v"), ("O", "attn.o"), ("FFN up", "ffn.up"), ("FFN down", "ffn.down"))

# the seed's reported (reduction %, accuracy %) points; sizes as reported by the seed
SEED_POINTS = [
    {"label": "seed: fp32 baseline", "reduction": 0.0, "accuracy": 91.8},
    {"label": "seed: 8-bit", "reduction": 50.95, "accuracy": 91.6},
    {"label": "seed: 4-bit", "reduction": 74.96, "accuracy": 91.8},
    {"label": "seed: 2-bit", "reduction": 87.03, "accuracy": 91.8},
    {"label": "seed: fully quant", "reduction": 50.95, "accuracy": 83.2},
    {"label": "seed: basic binarization", "reduction": 94.03, "accuracy": 83.7},
    {"label": "seed: QK binarized", "reduction": 71.03, "accuracy": 89.3},
    {"label": "seed: QV binarized", "reduction": 71.03, "accuracy": 86.7},
    {"label": "seed: KV binarized", "reduction": 71.03, "accuracy": 86.2},
    {"label": "seed: thresholding (their method)", "reduction": 94.03, "accuracy": 90.1},
]


def layout(model) -> dict:
    """Component names arranged like the model: embeddings, one row per layer, head."""
    names = set(quantizable(model))
    n_layers = sum(1 for n in names if n.endswith(".attn.q"))
    return {
        "embeddings": [n for n in ("embed.token", "embed.pos") if n in names],
        "layers": [[(label, f"layers.{i}.{part}") for label, part in PARTS] for i in range(n_layers)],
        "head": "head",
    }


def ui_spec(components: list[str], method: MethodConfig, attn_probs: str | None = None) -> QuantSpec:
    """The spec the lab's component picker describes: one method on the chosen components."""
    return QuantSpec(tuple(Rule(c, method) for c in components), attn_probs=attn_probs)


def spec_components(spec: QuantSpec) -> tuple[list[str], MethodConfig | None]:
    """Inverse of :func:`ui_spec` for specs whose rules name single components."""
    comps = [r.target for r in spec.rules]
    return comps, (spec.rules[0].method if spec.rules else None)


def _correct(model, batches) -> tuple[np.ndarray, float]:
    """Per-row correctness (in batch order) and the mean cross-entropy."""
    hits, loss, total = [], 0.0, 0
    with torch.inference_mode():
        for x, y in batches:
            logits = model(x)
            hits.append((logits.argmax(1) == y).cpu().numpy())
            loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            total += len(y)
    return np.concatenate(hits), loss / total


class LiveLab:
    """One working copy of a baseline that follows the spec it is given (PTQ), fast enough for a slider."""

    def __init__(self, baseline: torch.nn.Module, val: EncodedSplit, val_rows: int = 1000, batch_size: int = EVAL_BATCH, device: str = "auto"):
        from .train import pick_device

        self.device = pick_device(device)  # a GPU when there is one
        self.model = copy.deepcopy(baseline).to(self.device).eval()
        self.val = val.head(val_rows)
        self.batches = list(self.val.batches(batch_size, device=self.device))  # padded once, reused on every change
        self.spec = QuantSpec()
        self.baseline_correct, _ = _correct(self.model, self.batches)
        self.baseline_accuracy = float(self.baseline_correct.mean())
        self.fp_size = model_size(self.model).summary()

    def apply(self, spec: QuantSpec) -> dict:
        """Binarize to ``spec`` (only changed components are redone) and measure; returns plain numbers.

        Accuracies on the sample carry their 95 % Wilson interval (``accuracy_low``/``accuracy_high``), and
        the change against fp32 on the same rows its paired 95 % interval (``diff_low``/``diff_high``) and
        McNemar p-value; ``within_noise`` is True when that interval contains 0 (:mod:`binlab.stats`)."""
        t0 = time.perf_counter()
        quantize_(self.model, spec)
        self.spec = spec
        correct, loss = _correct(self.model, self.batches)
        size = model_size(self.model).summary()
        n = len(correct)
        lo, hi = wilson_interval(int(correct.sum()), n)
        pd = paired_difference(correct, self.baseline_correct)
        return {"accuracy": 100 * float(correct.mean()), "accuracy_low": 100 * lo, "accuracy_high": 100 * hi, "loss": loss,
                "baseline_accuracy": 100 * self.baseline_accuracy, "diff": 100 * pd.diff, "diff_low": 100 * pd.low,
                "diff_high": 100 * pd.high, "p_value": pd.p_value, "within_noise": pd.within_noise, **size,
                "fp32_bytes": self.fp_size["total_bytes"], "seconds": time.perf_counter() - t0, "rows": n}


def compare_models(model_a: torch.nn.Module, model_b: torch.nn.Module, val: EncodedSplit, val_rows: int = 1000,
                   batch_size: int = EVAL_BATCH) -> dict:
    """Accuracy of A and B on the same rows, each with its 95 % interval, and A - B with its paired
    95 % interval and McNemar p-value (percent points)."""
    rows = val.head(val_rows)
    out = {}
    correct = []
    for tag, m in (("a", model_a), ("b", model_b)):
        dev = next(m.parameters()).device
        c, _ = _correct(m.eval(), list(rows.batches(batch_size, device=dev)))
        lo, hi = wilson_interval(int(c.sum()), len(c))
        out.update({f"accuracy_{tag}": 100 * float(c.mean()), f"low_{tag}": 100 * lo, f"high_{tag}": 100 * hi})
        correct.append(c)
    pd = paired_difference(*correct)
    return out | {"diff": 100 * pd.diff, "diff_low": 100 * pd.low, "diff_high": 100 * pd.high, "p_value": pd.p_value,
                  "within_noise": pd.within_noise, "rows": len(correct[0])}


def component_view(model: torch.nn.Module, name: str, method: MethodConfig | None, max_points: int = 200_000) -> dict:
    """Latent and quantized weights of one component for a histogram, plus error statistics.

    With a per-channel method the values are shown per row in std units, ``(w - mean_row) / std_row``,
    so a bucket threshold ``tau`` is one vertical line for every row.
    """
    mod = quantizable(model).get(name)
    if mod is None:
        raise ValueError(f"no component {name!r}; choose one of {list(quantizable(model))}")
    w = mod.weight.detach().float().cpu()
    q = method.make()(w) if method is not None else w  # for stochastic: the first draw of a fresh instance
    # methods without a per_channel option work per row (ReCU, BiLLM, OneBit) or have no scale (sign): show row units
    per_channel = bool(method is not None and getattr(method.make(), "per_channel", True))
    w2, q2 = w.reshape(w.shape[0], -1), q.reshape(q.shape[0], -1)
    if per_channel:
        mu, sd = w2.mean(1, keepdim=True), w2.std(1, keepdim=True, unbiased=False).clamp_min(1e-12)
    else:
        mu, sd = w2.mean().reshape(1, 1), w2.std(unbiased=False).clamp_min(1e-12).reshape(1, 1)
    wn, qn = ((w2 - mu) / sd).flatten(), ((q2 - mu) / sd).flatten()
    if wn.numel() > max_points:
        idx = torch.randperm(wn.numel(), generator=torch.Generator().manual_seed(0))[:max_points]
        wn, qn = wn[idx], qn[idx]
    err = float(((q - w) ** 2).sum())
    energy = float((w**2).sum())
    out = {"name": name, "shape": tuple(w.shape), "latent": wn.numpy(), "quantized": qn.numpy(), "units": "std of its row" if per_channel else "std of the matrix",
           "relative_error": err / max(energy, 1e-30), "sqnr_db": 10 * np.log10(max(energy, 1e-30) / max(err, 1e-30)),
           "threshold": None, "levels": None}
    if method is not None and method.method == "bucket":
        b = method.make()
        t, lo, hi = b.levels(w)
        norm = lambda v: float((((v - mu) / sd) if per_channel else (v - mu) / sd).mean())  # noqa: E731
        out["threshold"], out["levels"] = norm(t), (norm(lo), norm(hi))
    return out


def sensitivity(baseline: torch.nn.Module, val: EncodedSplit, method: MethodConfig, callback=None, val_rows: int = 1000) -> list[dict]:
    """PTQ accuracy when each component alone, each attention pair, and a few groups are binarized."""
    lab = LiveLab(baseline, val, val_rows)
    lay = layout(lab.model)
    targets = [(f"L{i} {label}", name, "component") for i, row in enumerate(lay["layers"]) for label, name in row]
    targets += [(n, n, "component") for n in lay["embeddings"]] + [("head", "head", "component")]
    targets += [(g, g, "pair") for g in ("QK", "QV", "KV")] + [(g, g, "group") for g in ("attention", "ffn", "all-except-head", "all")]
    rows = []
    for i, (label, target, kind) in enumerate(targets):
        r = lab.apply(QuantSpec((Rule(target, method),)))
        rows.append({"label": label, "target": target, "kind": kind, "accuracy": r["accuracy"], "drop": r["baseline_accuracy"] - r["accuracy"],
                     "drop_low": -r["diff_high"], "drop_high": -r["diff_low"], "within_noise": r["within_noise"],
                     "accuracy_low": r["accuracy_low"], "accuracy_high": r["accuracy_high"], "reduction_percent": r["reduction_percent"]})
        if callback:
            callback(i + 1, len(targets), label)
    return rows
