"""Quantization methods, one paper per class, looked up by name from :data:`BINARIZERS`.

- :mod:`.base`: the :class:`Quantizer` contract and the registry.
- :mod:`.classic`: BNN sign, BinaryConnect (stochastic), XNOR-Net, Bi-Real, ReCU, FDA, the seed's bucket.
- :mod:`.lowbit`: BitNet, TWN, BitNet b1.58, k-bit uniform.
- :mod:`.gptq`: round-to-nearest and GPTQ (and the OBS machinery the calibrated methods share).
- :mod:`.pbllm`: PB-LLM (PB-GPTQ and its QAT); :mod:`.billm`: BiLLM and OAC (BiLLM with the output-adaptive Hessian); :mod:`.arb`: ARB-LLM (ARB, ARB-X, ARB-RC);
  :mod:`.stbllm`: STBLLM (N:M sparse binarization).
- :mod:`.onebit`: OneBit (SVID, learned value vectors).
- :mod:`.learned`: DB-LLM, BinaryMoS, FBI-LLM (scales learned in QAT with distillation).
- :mod:`.bert`: the BERT-era weight binarizers: BiBERT's, BinaryBERT's ternary weight splitting.
- :mod:`.recurrent`: the LSTM era's: loss-aware binarization (LAB).

Equation and section numbers in the LLM-era docstrings (GPTQ onward) come from reading each paper's
reference code and its published summaries; they were not checked against the PDFs on this machine
(no access), so where a number and the paper disagree, the paper's text is right.

:func:`method_card` and :func:`cards_markdown` describe each method from the registry (the app's
method-picker help and ``docs/methods.md``).
"""
from __future__ import annotations

from .arb import ARB  # noqa: F401
from .base import BINARIZERS, FP_BITS, Quantizer, register, sign  # noqa: F401
from .bert import TWS, BiBERTWeight, bwn, tws_split  # noqa: F401
from .billm import OAC, BiLLM  # noqa: F401
from .classic import FDA, XNOR, BiReal, Bucket, NoiseAdaptation, ReCU, Sign, Stochastic, fourier_sign, fourier_sign_grad, glorot_h, optimal_threshold  # noqa: F401
from .gptq import GPTQ, RTN  # noqa: F401
from .learned import DBLLM, FBI, BinaryMoS  # noqa: F401
from .lowbit import TWN, BitNet, BitNet158, Uniform, ternarize, uniform_midrise  # noqa: F401
from .onebit import OneBit  # noqa: F401
from .pbllm import PBLLM  # noqa: F401
from .recurrent import LAB  # noqa: F401
from .stbllm import STBLLM  # noqa: F401

#: the method a page of the lab starts with (each a registry key)
PAGE_DEFAULTS = {"binarize": "bucket", "sensitivity": "sign", "landscape": "xnor", "deploy": "xnor", "train": "xnor"}
if not set(PAGE_DEFAULTS.values()) <= set(BINARIZERS):
    raise ValueError(f"PAGE_DEFAULTS names a method the registry lacks: {set(PAGE_DEFAULTS.values()) - set(BINARIZERS)}")


def bits_per_weight(name: str, shape=(128, 128), **options) -> float:
    """Stored bits per weight of ``name`` with its defaults on a ``shape`` matrix (everything counted)."""
    q = BINARIZERS[name](**options)
    n = shape[0] * shape[1]
    return sum(q.storage(shape).values()) / n


def method_card(name: str) -> dict:
    """Paper, arXiv id, equations (the docstring), PTQ/QAT, what it stores, bits per weight, estimators, options."""
    if name not in BINARIZERS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(BINARIZERS)}")
    cls = BINARIZERS[name]
    import inspect

    return {"name": name, "paper": cls.paper, "arxiv": cls.arxiv, "mode": cls.mode, "stores": cls.stores,
            "bits_per_weight_128x128": bits_per_weight(name), "default_ste": cls.default_ste, "act_ste": cls.act_ste,
            "options": {k: v for k, v in cls.defaults().items()}, "summary": cls.summary(),
            "doc": inspect.cleandoc(cls.__doc__ or "")}


def cards_markdown() -> str:
    """``docs/methods.md``: one card per registered method, generated from the registry."""
    lines = ["# Method cards", "",
             "Generated from the registry by `binlab methods --write` (do not edit by hand). Each card gives the paper, "
             "the equations as binlab implements them (with the paper's equation or section numbers), whether the paper "
             "uses it after training (PTQ) or in training (QAT), what a packed model stores and the resulting bits per "
             "weight on a 128 x 128 matrix with the defaults. The equation and section numbers of the LLM-era methods "
             "(GPTQ onward) come from their reference code and published summaries, not checked against the PDFs.", ""]
    for name in sorted(BINARIZERS):
        c = method_card(name)
        lines += [f"## `{name}` — {c['paper']}", "",
                  f"- arXiv: {c['arxiv'] or '-'} · used as: {c['mode']} · default estimator: `{c['default_ste']}` "
                  f"(activations: `{c['act_ste']}`)",
                  f"- stores: {c['stores'] or '-'} · **{c['bits_per_weight_128x128']:.3f} bits per weight** (128 x 128, defaults)",
                  f"- options: {', '.join(f'`{k}={v!r}`' for k, v in c['options'].items()) or 'none'}", "",
                  "```text", c["doc"], "```", ""]
    return "\n".join(lines)
