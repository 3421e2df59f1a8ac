"""Named, seeded recipes that regenerate the seed's tables on our models and data.

``binlab experiments run T4 --preset scratch`` trains (or loads) the preset's full-precision
baseline, then for each configuration of the table quantizes a copy (PTQ, or QAT with the STE and
logit distillation), evaluates it on the AG_NEWS test split and measures its exact size with
:mod:`binlab.size`. Each run writes ``docs/results/<name>-<preset>.json`` and ``.md`` with our
numbers beside the seed's. Runs are cached by (baseline, spec, mode, budget), so a configuration
shared by two tables is trained once. The cache key includes a fingerprint of the code that
produced the row (:func:`code_fingerprint`: the training/quantization core and the source of each
method the row uses), so a fixed method never returns a stale cached number.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

import torch

from . import activations, attention as attention_mod, model as model_mod, objective as objective_mod, qat as qat_mod, quantize as quantize_mod, \
    recipes as recipes_mod, size as size_mod, ste as ste_mod, train as train_mod
from .data import _fingerprint, cache_dir
from .methods import BINARIZERS
from .methods import base as methods_base
from .presets import baseline_stem, get_baseline, get_preset, load_data
from .qat import QATConfig, ptq, qat
from .quantize import MethodConfig, QuantSpec, Rule
from .seed import SEED
from .size import model_size
from .train import TrainConfig, evaluate

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
CALIB_ROWS = 128  # calibration rows (train only) for the methods that need data, as in GPTQ and its successors


@dataclass(frozen=True)
class Config:
    label: str
    spec: QuantSpec
    mode: str = "qat"  # fp | ptq | qat
    seed: tuple | None = None  # the seed's (accuracy %, size, reduction %) for this row, if any
    survey: str | None = None  # LM rows: what the survey reports for the method on LLaMA (attributed, not measured)
    qat: dict | None = None  # this row's changes to the table's QAT budget (e.g. {"hidden_distill": 1.0})
    recipe: str | None = None  # a multi-stage recipe of binlab.recipes.RECIPES (its final spec is ``spec``)

    def __post_init__(self):
        if self.recipe is not None:
            from .recipes import RECIPES

            if self.recipe not in RECIPES:
                raise ValueError(f"unknown recipe {self.recipe!r}; choose one of {sorted(RECIPES)}")
            if self.spec != RECIPES[self.recipe].spec:
                raise ValueError(f"config {self.label!r}: spec must be recipe {self.recipe!r}'s final spec")

    def budget(self, base: QATConfig) -> QATConfig:
        return replace(base, **self.qat) if self.qat else base


def _spec(*rules, attn_probs=None) -> QuantSpec:
    return QuantSpec(tuple(Rule(t, m if isinstance(m, MethodConfig) else MethodConfig(m)) for t, m in rules), attn_probs=attn_probs)


U = lambda bits, **kw: MethodConfig("uniform", options={"bits": bits, **kw})  # noqa: E731
SIGN = MethodConfig("sign")
FP = QuantSpec()

# our best 1-bit recipe: every encoder linear and the embeddings 1-bit with bucket means (optimal
# threshold, per row: 1 bit + 2 fp32 means per row, 1.5 bits/weight on d=128 embeddings), head
# full precision; QAT with distillation. 2-bit embeddings cap the reduction at 93.75 % on the
# embedding-dominated scratch model (2/32 of its size), so they cannot reach the 94 % target.
BEST = _spec(("encoder", MethodConfig("bucket")), ("embeddings", MethodConfig("bucket")))
BEST_XNOR = _spec(("encoder", MethodConfig("xnor")), ("embeddings", MethodConfig("xnor")))
BEST_E2 = _spec(("encoder", MethodConfig("bucket")), ("embeddings", U(2, per_channel=False)))
def w1a1(method: str = "xnor", **options) -> QuantSpec:
    """W1A1: every encoder linear binary with binary inputs (sign; {0,1} for the post-GELU FFN-down
    input), binary attention probabilities, bucket embeddings, head fp32."""
    return _spec(("encoder", MethodConfig(method, options=options, act="sign")),
                 ("layers.*.ffn.down", MethodConfig(method, options=options, act="binary01")),
                 ("embeddings", MethodConfig("bucket")), attn_probs="binary01")


def w1a8(method: str) -> QuantSpec:
    """BitNet's BitLinear: 1-bit (or ternary) weights with 8-bit absmax inputs on every encoder linear;
    embeddings with the same weight quantizer; head fp32."""
    return _spec(("embeddings", MethodConfig(method)), ("encoder", MethodConfig(method, act="absmax8")))


W1A1 = w1a1("xnor")


def is_control(mode: str, label: str) -> bool:
    """Whether a configuration (or a row: its mode and label) is its table's equal-budget control."""
    return mode == "qat" and "control" in label


def control(what: str = "the QAT rows") -> Config:
    """The equal-budget control of a QAT table: the fp32 baseline fine-tuned with the same extra epochs,
    learning rate and distillation as ``what`` (an empty spec through the same QAT code), so a QAT row's
    gain or loss is not the extra training."""
    return Config(f"fp32 control: fine-tuned with the same budget and distillation as {what}", FP, "qat")


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    note: str
    configs: tuple[Config, ...]
    seeded_baseline: bool = False  # the headline: seed k retrains the fp32 baseline with seed k too (run())


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment("T1", "Full precision vs 8/4/2-bit quantization", (
        "k-bit rows quantize every encoder linear and the embeddings (per-channel uniform, MSE-clipped); "
        "the head stays fp32. 'fully quantized' also quantizes the head (8-bit). The seed's sizes are "
        "inconsistent (8-bit and 'fully quant' share one); ours are exact."), (
        Config("fp32 baseline", FP, "fp", SEED["fp32"]),
        Config("8-bit (PTQ)", _spec(("all-except-head", U(8))), "ptq", SEED["8-bit"]),
        Config("4-bit (QAT)", _spec(("all-except-head", U(4))), "qat", SEED["4-bit"]),
        Config("2-bit (QAT)", _spec(("all-except-head", U(2))), "qat", SEED["2-bit"]),
        Config("fully quantized, 8-bit incl. head (PTQ)", _spec(("all", U(8))), "ptq", SEED["fully quantized"]),
        control(),
    )),
    Experiment("T2", "Basic binarization", "sign (no scale) on everything except the head, with QAT; XNOR adds a per-channel scale.", (
        Config("fp32 baseline", FP, "fp", SEED["fp32"]),
        Config("basic binarization: sign, all except head", _spec(("all-except-head", SIGN)), "qat", SEED["basic binarization"]),
        Config("sign + scale (XNOR), all except head", _spec(("all-except-head", "xnor")), "qat"),
        control(),
    )),
    Experiment("T3", "Binarizing the head too", "The seed: binarizing the final layer as well collapses to chance.", (
        Config("all except head (sign)", _spec(("all-except-head", SIGN)), "qat", (SEED["basic binarization"][0], None, None)),
        Config("all incl. head (sign)", _spec(("all", SIGN)), "qat", (25.0, None, None)),
        Config("all incl. head (sign), PTQ", _spec(("all", SIGN)), "ptq"),
        control(),
    )),
    Experiment("T4", "Which attention pair to binarize", (
        "Only the named pair of attention matrices is binarized (sign, QAT); everything else stays fp32. "
        "The seed reports 22.8M / 71.03 % for every pair; that cannot be a pair of 4 attention matrices, "
        "so compare accuracies."), (
        Config("QK", _spec(("QK", SIGN)), "qat", SEED["QK"]),
        Config("QV", _spec(("QV", SIGN)), "qat", SEED["QV"]),
        Config("KV", _spec(("KV", SIGN)), "qat", SEED["KV"]),
        Config("QK, PTQ", _spec(("QK", SIGN)), "ptq"),
        Config("QV, PTQ", _spec(("QV", SIGN)), "ptq"),
        Config("KV, PTQ", _spec(("KV", SIGN)), "ptq"),
        control(),
    )),
    Experiment("T5", "Method comparison (all except head)", (
        "Every component except the head binarized/quantized with the named method, QAT with distillation. "
        "The LLM-era methods (GPTQ, PB-LLM, BiLLM, OAC, ARB-LLM, STBLLM, OneBit, DB-LLM, BinaryMoS, FBI-LLM) are in "
        "T8, on the encoder linears with calibration data where the paper uses it. "
        "The seed's 'their method' row is the bucket binarizer; 'binlab best' is the bucket binarizer with the "
        "squared-error-optimal threshold, per-row means and logit distillation. Budgets differ: the seed trained "
        "each model 10 epochs from scratch without distillation; our rows fine-tune the fp32 baseline (itself "
        "trained 6 epochs) for the QAT budget shown, distilling from it."), (
        Config("fp32 baseline", FP, "fp", SEED["fp32"]),
        Config("sign (basic)", _spec(("all-except-head", SIGN)), "qat", SEED["basic binarization"]),
        Config("xnor", _spec(("all-except-head", "xnor")), "qat"),
        Config("bucket = binlab best: optimal tau, per row, KD", BEST, "qat", SEED["thresholding"]),
        Config("bucket, optimal tau, per tensor", _spec(("all-except-head", MethodConfig("bucket", options={"per_channel": False}))), "qat"),
        Config("bitnet W1A8 (1-bit weights, 8-bit absmax inputs as in the paper)", w1a8("bitnet"), "qat"),
        Config("twn (ternary, per tensor)", _spec(("all-except-head", "twn")), "qat"),
        Config("bitnet b1.58 W1.58A8 (ternary, 8-bit absmax inputs)", w1a8("bitnet158"), "qat"),
        Config("bucket everywhere but the head, PTQ only", BEST, "ptq"),
        Config("bucket encoder + 2-bit embeddings (per tensor)", BEST_E2, "qat"),
        Config("W1A1: xnor encoder with binary activations and attention, bucket embeddings", W1A1, "qat"),
        control(),
    )),
    Experiment("T6", "PB-LLM's five BNN methods, and ours", (
        "PB-LLM reports these classic binarizers below random on OPT (mean zero-shot 0.30-0.32 vs random 0.36). "
        "Here: all except head, each as its paper has it (BNN sign with the clipped estimator; XNOR with its "
        "scale gradient; Bi-Real's magnitude-aware gradient; ReCU's standardise-clamp with the tau schedule "
        "0.85 -> 0.99; FDA's Fourier-series gradient with noise adaptation), PTQ and QAT. The W1A1 rows add "
        "binary inputs and attention: Bi-Real with ApproxSign on the activations, without and with its "
        "real-valued shortcut around the square (Q, K, V, O) linears."), (Config("fp32 baseline", FP, "fp"),) + tuple(
        c for name in ("sign", "xnor", "bireal", "recu", "fda") for c in (
            Config(f"{name} (PTQ)", _spec(("all-except-head", name)), "ptq"),
            Config(f"{name} (QAT)", _spec(("all-except-head", name)), "qat"),
        )) + (Config("binlab best (QAT)", BEST, "qat"),
              Config("W1A1 bireal (QAT)", w1a1("bireal"), "qat"),
              Config("W1A1 bireal + real-valued shortcut (QAT)", w1a1("bireal", shortcut=True), "qat"), control())),
    Experiment("T7", "Headline: best 1-bit configuration and W1A1", (
        "The targets: every encoder linear 1-bit, embeddings at most 2 bits, head kept, everything counted; "
        "within 1.5 points of the fp32 baseline at >= 94 % reduction. The seed's method lost 1.7 points at 94.03 %."), (
        Config("fp32 baseline", FP, "fp", SEED["fp32"]),
        Config("binlab best: bucket encoder + bucket embeddings, QAT + KD", BEST, "qat", SEED["thresholding"]),
        Config("same, PTQ only", BEST, "ptq"),
        Config("xnor encoder + xnor embeddings, QAT + KD", BEST_XNOR, "qat"),
        Config("W1A1: xnor encoder, binary activations and attention, bucket embeddings", W1A1, "qat"),
        control(),
    ), seeded_baseline=True),
]}

def _enc(method: str, **options) -> QuantSpec:
    """Every block linear (attention and FFN) with ``method``; embeddings and head full precision, as
    the LLM papers keep them."""
    return _spec(("encoder", MethodConfig(method, options=options)))


WIKI = "LLaMA-7B WikiText2 ppl"
LM_CONFIGS = (
    Config("fp32 baseline", FP, "fp"),
    Config("RTN 4-bit", _enc("rtn", bits=4), "ptq"),
    Config("RTN 3-bit", _enc("rtn", bits=3), "ptq"),
    Config("RTN 2-bit", _enc("rtn", bits=2), "ptq"),
    Config("GPTQ 4-bit", _enc("gptq", bits=4), "ptq"),
    Config("GPTQ 3-bit", _enc("gptq", bits=3), "ptq"),
    Config("GPTQ 2-bit", _enc("gptq", bits=2), "ptq"),
    Config("sign (BNN), PTQ", _enc("sign"), "ptq"),
    Config("XNOR, PTQ", _enc("xnor"), "ptq"),
    Config("PB-LLM 10 % salient, magnitude, no compensation (PTQ)", _enc("pbllm", metric="magnitude", gptq=False), "ptq"),
    Config("PB-LLM 10 % salient, Hessian, PB-GPTQ (PTQ)", _enc("pbllm"), "ptq", survey=f"{WIKI} 102.36 (PTQ, 1.7 bits)"),
    Config("BiLLM (PTQ)", _enc("billm"), "ptq", survey=f"{WIKI} 35.04 (1.08 bits)"),
    Config("OAC: BiLLM with the output-adaptive Hessian (PTQ)", _enc("oac"), "ptq", survey=f"{WIKI} 17.79 (1.09 bits)"),
    Config("ARB-LLM: ARB (PTQ)", _enc("arb", variant="arb"), "ptq"),
    Config("ARB-LLM: ARB-X (PTQ)", _enc("arb", variant="x"), "ptq"),
    Config("ARB-LLM: ARB-RC (PTQ)", _enc("arb", variant="rc"), "ptq"),
    Config("STBLLM 4:8 (PTQ)", _enc("stbllm", n=4, m=8), "ptq", survey=f"{WIKI} 31.72 (0.55 bits)"),
    Config("STBLLM 6:8 (PTQ)", _enc("stbllm", n=6, m=8), "ptq"),
    Config("OneBit: SVID only (PTQ)", _enc("onebit"), "ptq"),
    Config("XNOR, QAT + KD", _enc("xnor"), "qat"),
    Config("PB-LLM 10 % salient, frozen, QAT + KD", _enc("pbllm", metric="magnitude", gptq=False), "qat", survey=f"{WIKI} 20.61 (QAT)"),
    Config("BitNet W1A8, QAT + KD", _spec(("encoder", MethodConfig("bitnet", act="absmax8"))), "qat"),
    Config("OneBit: SVID, then QAT + KD on logits and hidden states", _enc("onebit"), "qat", survey=f"{WIKI} 10.19",
           qat={"hidden_distill": 1.0}),
    Config("DB-LLM: flexible dual binarization (2 bits), QAT + deviation-aware KD", _enc("dbllm"), "qat", survey=f"{WIKI} 7.59 (2 bits)",
           qat={"dad_gamma": 1.0}),
    Config("BinaryMoS: 4 scale experts, QAT + KD on logits and hidden states", _enc("binarymos"), "qat", survey=f"{WIKI} 7.97",
           qat={"hidden_distill": 1.0}),
    Config("FBI-LLM: from scratch, autoregressive distillation (3 ep)", _enc("fbi"), "qat",
           survey="LLaMA2-7B-sized, trained from scratch: WikiText2 ppl 5.7 (1.01 bits)",
           qat={"from_scratch": True, "train": TrainConfig(epochs=3, lr=2e-3, warmup=0.05, schedule="cosine", distill=1.0, temperature=1.0)}),
    control(),
)
EXPERIMENTS["T8"] = Experiment("T8", "The LLM-era methods: perplexity on a small language model (accuracy on the classifiers)", (
    "On the lm preset: a 2-layer causal LM trained from scratch on AG_NEWS text, perplexity on the test text; on a "
    "classifier preset the same rows on the classifier, accuracy. Every block linear (attention Q/K/V/O, FFN up/down) "
    "quantized, embeddings and head kept in fp32 as the LLM papers keep them. PTQ methods that need data are calibrated on 128 training rows (sequentially, block by block, as "
    "GPTQ does). QAT rows distil from the fp32 model token by token. Bits per quantized weight count everything "
    "stored (scales, masks, indices); 'paper bits' is the paper's own count where it differs. The survey's numbers "
    "are for LLaMA-7B on WikiText2 and are quoted, not measured: compare orderings, not values."), LM_CONFIGS)

GLUE = "GLUE avg"
T9_CONFIGS = (
    Config("fp32 baseline", FP, "fp"),
    Config("W1A1 binlab: xnor, sign / {0,1} inputs, {0,1} attention, one stage (T7's row)", w1a1("xnor"), "qat"),
    Config("BiBERT W1A1: Bi-Attention, unscaled sign, direction-matching distillation", recipes_mod.RECIPES["bibert"].spec, "qat",
           survey=f"{GLUE} 67.0 (W1A1)", recipe="bibert"),
    Config("BiT W1A1: elastic activations, ladder W32A32 -> W1A2 -> W1A1", recipes_mod.RECIPES["bit"].spec, "qat",
           survey=f"{GLUE} 78.0 (W1A1)", recipe="bit"),
    Config("BinaryBERT W1A1: ternary, split, binary fine-tune", recipes_mod.RECIPES["binarybert"].spec, "qat",
           survey=f"{GLUE} 50.1 (W1A1, reported by BiBERT)", recipe="binarybert"),
    Config("BinaryBERT W1A4: ternary, split, binary fine-tune", recipes_mod.RECIPES["binarybert-a4"].spec, "qat",
           survey=f"{GLUE} 82.6 (W1A4)", recipe="binarybert-a4"),
    Config("BiPFT-style W1A1: BiT's binarization + rank-1 attention residual estimators, no binarized pretraining",
           recipes_mod.RECIPES["bipft"].spec, "qat", survey=f"{GLUE} 70.8 (W1A1, with binarized pretraining)", recipe="bipft"),
    Config("BEBERT W1A1: 2 BiBERT members by boosting", recipes_mod.RECIPES["bebert"].spec, "qat",
           survey=f"{GLUE} 74.97 (W1A1)", recipe="bebert"),
    Config("two-stage W1A1 (ETSPQ-style): 2-bit -> 1-bit weights, then activations", recipes_mod.RECIPES["two-stage"].spec, "qat",
           survey="no W1A1 number (W1A4: GLUE avg 83.2)", recipe="two-stage"),
    Config("BiT W1A1, one step W32A32 -> W1A1 (ablation of the ladder)", recipes_mod.RECIPES["bit-1step"].spec, "qat",
           recipe="bit-1step"),
    Config("two-stage W1A4 (ETSPQ-style): 2-bit -> 1-bit weights, then 4-bit activations", recipes_mod.RECIPES["two-stage-a4"].spec, "qat",
           survey=f"{GLUE} 83.2 (W1A4)", recipe="two-stage-a4"),
    control(),
)
EXPERIMENTS["T9"] = Experiment("T9", "The BERT-era fully binary encoders (W1A1)", (
    "Every encoder linear with 1-bit weights and 1-bit inputs (W1A4: 4-bit inputs), attention included, each recipe as "
    "its paper has it (binlab/recipes.py): BiBERT's Bi-Attention and direction-matching distillation, BiT's elastic "
    "activations and precision ladder, BinaryBERT's ternary weight splitting (binlab keeps the width, so its binary "
    "layers hold two binary matrices: 2 bits per weight, counted), BEBERT's boosted ensemble (every member counted), "
    "a two-stage progressive recipe after Le et al. 2022 (weights first, then activations), and BiPFT's low-rank "
    "attention residual estimators on top of BiT's binarization. Multi-stage recipes "
    "split the table's QAT epochs between their stages, so every row but BEBERT's (2 members, each the full budget) "
    "trains for the same number of epochs. Word embeddings are binarized as each paper does (position embeddings fp32); "
    "the head stays fp32. BiPFT learns its estimators in a 500k-step binarized pretraining on Wikipedia and BookCorpus "
    "that a 2-core machine cannot do; its row here starts them from zero at fine-tuning (the mechanism alone), so it "
    "does not measure BiPFT's method as published. Packed inference: every row's model but BEBERT's ensemble "
    "(whose members pack one by one) writes to a packed file (binlab.export) that gives the same predictions; linears whose "
    "inputs are scale * sign(x + shift) (binlab's sign, BiBERT's unscaled sign, BiT's elastic 1-bit) run through the "
    "XNOR-popcount kernel, the rest (unsigned {0,1} and k-bit inputs, BinaryBERT's two binary matrices) through "
    "dequantized tiles. The accuracies here are measured with fake quantization. The survey's GLUE averages are BERT-base "
    "numbers, quoted, not measured: compare orderings, not values. Attention entropy: mean over heads and test rows of "
    "the entropy (nats) of each query's attention weights, normalised to sum to 1 (BiBERT's argument for Bi-Attention)."),
    T9_CONFIGS)


# QAT budget per preset; ``fast`` shrinks everything for smoke tests
BUDGETS: dict[str, QATConfig] = {
    "tiny": QATConfig(TrainConfig(epochs=2, lr=3e-3, warmup=0.05, distill=0.5)),
    # chosen on validation (grids/select-scratch.yaml -> docs/results/select-scratch.md): the best of lr {2.5e-4, 5e-4, 1e-3}
    # x distillation {0.5, 1.0} for T7's best row at 2 epochs; tables run before that choice say lr 0.0005, distillation 0.5
    "scratch": QATConfig(TrainConfig(epochs=2, lr=1e-3, warmup=0.05, distill=1.0)),
    "minilm-l2": QATConfig(TrainConfig(epochs=1, lr=2e-4, warmup=0.05, distill=0.5), freeze=("embed.token.*",)),
    "lm": QATConfig(TrainConfig(epochs=0.5, lr=5e-4, warmup=0.05, distill=0.5)),
    "tiny-lm": QATConfig(TrainConfig(epochs=1, lr=3e-3, warmup=0.05, distill=0.5)),
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


_CORE = (ste_mod, activations, attention_mod, quantize_mod, qat_mod, train_mod, model_mod, objective_mod, size_mod, recipes_mod)
_METHODS_DIR = Path(methods_base.__file__).parent


def _code_only(src: str) -> str:
    """Source text reduced to what it computes: the AST with docstrings removed (comments and formatting
    never reach the AST), so a documentation change does not invalidate cached results."""
    import ast
    import textwrap

    tree = ast.parse(textwrap.dedent(src))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


@functools.lru_cache(maxsize=1)
def _shared_code_hash() -> str:
    """The part every row shares (core, compute_row, all method modules), read once per process: the
    code a process runs is the code it imported."""
    h = hashlib.sha256()
    for mod in _CORE:
        h.update(_code_only(inspect.getsource(mod)).encode())
    h.update(_code_only(inspect.getsource(compute_row)).encode())
    for path in sorted(_METHODS_DIR.glob("*.py")):  # methods call each other (PB-LLM uses the k-bit quantizer)
        h.update(_code_only(path.read_text()).encode())
    return h.hexdigest()


def code_fingerprint(spec: QuantSpec) -> str:
    """A hash of the code a row depends on (docstrings and comments excluded): the training/quantization
    core, how a row is run, every method module, and every method class the spec uses (with its binlab
    base classes)."""
    h = hashlib.sha256(_shared_code_hash().encode())
    classes = set()
    for r in spec.rules:
        for k in BINARIZERS[r.method.method].__mro__:
            if k.__module__.startswith("binlab."):
                classes.add(k)
    for k in sorted(classes, key=lambda k: (k.__module__, k.__qualname__)):
        h.update(_code_only(inspect.getsource(k)).encode())
    return h.hexdigest()[:16]


def baseline_budget(preset: str) -> str:
    """How the preset's fp32 baseline was trained, for the fp rows' budget cell."""
    p = get_preset(preset)
    how = "fine-tuned from all-MiniLM-L6-v2" if p.pretrained else "from scratch"
    return f"{p.train.epochs:g} ep {how}"


def _fill_budgets(payload: dict) -> dict:
    for r in payload["rows"]:
        if r["mode"] == "fp":
            r["budget"] = baseline_budget(payload["preset"])
    return payload


def _mean_entropy(model, split, rows: int = 256) -> float | None:
    """Mean attention entropy (nats) over heads, layers and the first ``rows`` rows of ``split``,
    as the model computes its attention (BiBERT's argument: binarized attention should keep it high)."""
    from .health import attention_entropy

    if not hasattr(model, "layers") or objective_mod.task_of(model) != "classify":
        return None
    ids = next(iter(split.head(rows).batches(rows)))[0]
    ent = attention_entropy(model, ids)
    return sum(ent.values()) / len(ent)


def budget_label(mode: str, budget: QATConfig, recipe=None) -> str:
    if recipe is not None:
        from .recipes import stage_budget

        steps = " -> ".join(f"{stage_budget(budget, st).train.epochs:.3g} ep" for st in recipe.stages)
        t = budget.train
        return (f"{recipe.ensemble} members x " if recipe.ensemble > 1 else "") + f"{len(recipe.stages)} stage(s): {steps}" + \
            f" (QAT, KD {', '.join(sorted({f'{stage_budget(budget, st).train.distill:g}' for st in recipe.stages}))}" + \
            (f", lr {t.lr:g})")
    if mode != "qat":
        return "-" if mode == "fp" else "none (PTQ)"
    t = budget.train
    return (("from scratch " if budget.from_scratch else "QAT ") + f"{t.epochs:g} ep" + (f" + KD {t.distill:g}" if t.distill else ", no KD")
            + (f" + hidden {budget.hidden_distill:g}" if budget.hidden_distill else "")
            + (f" (DAD gamma {budget.dad_gamma:g})" if budget.dad_gamma else ""))


#: the seed's training budget, for every row that has a seed number
SEED_BUDGET = "10 ep from scratch, no KD"


def row_key(c: Config, budget: QATConfig, key_base: str, code: str, test: bool = True) -> str:
    """The results-store key of one row: the baseline it starts from (``key_base``: the baseline's
    checkpoint stem, which holds its seed and data), the spec, mode, budget (with the QAT seed), the code
    that computes it, the calibration rows, the recipe, and whether the test split is evaluated."""
    from .recipes import RECIPES

    recipe = RECIPES[c.recipe] if c.recipe else None
    return _fingerprint([key_base, c.spec.to_json(), c.mode, asdict(budget), code, CALIB_ROWS] + ([recipe.key()] if recipe else [])
                        + ([] if test else ["validation only"]))


def compute_row(c: Config, teacher, splits, budget: QATConfig, code: str | None = None, callback=None, calib=None,
                test: bool = True) -> dict:
    """Train (QAT with ``budget``, whose ``train.seed`` seeds data order and new parameters) or quantize
    (PTQ) a copy of ``teacher`` as ``c`` says and measure it: validation accuracy always, the test split
    only when ``test`` (a final configuration; selection runs look at validation alone). The row holds
    the per-row test correctness (``test_correct``, :func:`binlab.stats.pack_correct`) for paired intervals."""
    from .recipes import RECIPES
    from .stats import pack_correct

    code = code or code_fingerprint(c.spec)
    recipe = RECIPES[c.recipe] if c.recipe else None
    t0 = time.perf_counter()
    if c.mode == "fp":
        model = teacher
    elif c.mode == "ptq":
        model = ptq(teacher, c.spec, calib=calib)
    elif recipe is not None:
        from .recipes import run as run_recipe

        model = run_recipe(recipe, teacher, splits.train, budget, callback=callback, calib=calib, seed=budget.train.seed)
    else:
        model, _ = qat(teacher, c.spec, splits.train, budget, callback=callback, calib=calib)
    seconds = time.perf_counter() - t0
    model.cpu()
    s = model_size(model).summary()
    row = {"label": c.label, "mode": c.mode, "spec": json.loads(c.spec.to_json()), "random_seed": budget.train.seed,
           "megabytes": s["megabytes"], "reduction_percent": size_mod.reduction_against(model, teacher),
           "bits_per_quantized_weight": s["bits_per_quantized_weight"], "train_seconds": seconds, "code": code,
           "budget": budget_label(c.mode, budget, recipe)}
    if recipe is not None:
        row["recipe"] = c.recipe
    if splits.val is not None and len(splits.val):
        v = evaluate(model, splits.val)
        row |= {"val_perplexity": v.perplexity} if v.perplexity is not None else {"val_accuracy": 100 * v.accuracy}
    if test:  # one pass over the test split
        from .train import classification_metrics, predict

        if objective_mod.task_of(model) == "lm":
            r = evaluate(model, splits.test)
            row |= {"accuracy": 100 * r.accuracy, "perplexity": r.perplexity, "test_tokens": r.tokens}
        else:
            logits, labels = predict(model, splits.test)
            r = classification_metrics(logits, labels)
            row |= {"accuracy": 100 * r.accuracy, "per_class": r.per_class, "test_correct": pack_correct(logits.argmax(1) == labels),
                    "attention_entropy": _mean_entropy(model, splits.test)}
    paper_bits = [m.quantizer.paper_bits() for m in quantize_mod.quantized_modules(model) if hasattr(m.quantizer, "paper_bits")]
    if paper_bits and all(b is not None for b in paper_bits):
        row["paper_bits"] = sum(paper_bits) / len(paper_bits)  # as the paper counts (e.g. BiLLM's 1 + salient fraction)
    return row


def aggregate(c: Config, runs: list[dict], reference: list[dict] | None = None) -> dict:
    """One table row from the runs of configuration ``c`` (one per seed): the mean accuracy over seeds with
    its standard deviation, and, against ``reference`` (the fp32 baseline's runs on the same test rows),
    the difference with its paired two-stage bootstrap 95 % interval (:func:`binlab.stats.bootstrap_diff`)
    and the exact McNemar p-value of each seed against the baseline it was trained from (the largest is
    shown: the least significant). ``no_measurable_difference``: the interval contains 0."""
    import numpy as np

    from .stats import bootstrap_diff, mcnemar_p, seed_summary, unpack_correct

    if not runs:
        raise ValueError(f"no runs for {c.label!r}")
    first = runs[0]
    row = {k: first[k] for k in ("mode", "spec", "megabytes", "reduction_percent", "bits_per_quantized_weight", "code", "budget",
                                 "recipe", "paper_bits", "test_tokens") if k in first}
    row["label"] = c.label
    row["random_seeds"] = [r.get("random_seed", 0) for r in runs]
    row["baseline_seeds"] = [r.get("baseline_seed", 0) for r in runs]
    for k in ("accuracy", "val_accuracy", "perplexity", "val_perplexity", "attention_entropy", "train_seconds"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        if len(vals) == len(runs):
            row[k], std = seed_summary(vals)
            if k in ("accuracy", "val_accuracy", "perplexity"):
                row[f"{k}_std"] = std
                if len(vals) > 1:
                    row[f"{k}_per_seed"] = vals
    if all("per_class" in r for r in runs):
        row["per_class"] = {k: float(np.mean([r["per_class"][k] for r in runs])) for k in first["per_class"]}
    ref = [r for r in (reference or []) if "test_correct" in r]
    if c.mode != "fp" and ref and all("test_correct" in r for r in runs):
        # seed k started from baseline k (the headline): pair them, so what they share cancels
        a, b, paired = _paired(runs, ref, lambda r: r.get("baseline_seed", 0))
        d = bootstrap_diff(a, b, paired_seeds=paired)
        row |= {"diff": 100 * d.diff, "diff_ci95": [100 * d.low, 100 * d.high], "no_measurable_difference": d.within_noise,
                "interval": ("rows and seeds, seeds paired with their baselines" if paired else "rows and seeds" if len(runs) > 1 or len(ref) > 1
                             else "test rows only (one seed)")}
        by_seed = {r.get("baseline_seed", 0): unpack_correct(r["test_correct"]) for r in ref}
        ps = [mcnemar_p(int((x & ~by_seed[s]).sum()), int((~x & by_seed[s]).sum()))
              for x, s in zip(a, row["baseline_seeds"]) if s in by_seed]
        if ps:
            row["mcnemar_p"] = max(ps)
            if len(ps) > 1:
                row["mcnemar_p_per_seed"] = ps
    return row


def _paired(runs: list[dict], ref: list[dict], key) -> tuple:
    """(A, B, paired): the per-row correctness of ``runs`` and ``ref`` as (seeds, rows) arrays, with B in
    A's seed order and ``paired`` True when every run has its own ``ref`` run under ``key`` (one each)."""
    import numpy as np

    from .stats import unpack_correct

    a = np.stack([unpack_correct(r["test_correct"]) for r in runs])
    by_key = {key(r): unpack_correct(r["test_correct"]) for r in ref}
    keys = [key(r) for r in runs]
    paired = len(runs) > 1 and len(set(keys)) == len(runs) == len(by_key) and set(keys) == set(by_key)
    return a, np.stack([by_key[k] for k in keys] if paired else list(by_key.values())), paired


def against_control(runs: list[dict], control: list[dict]) -> dict:
    """A QAT row against the table's equal-budget fp32 control (same epochs and distillation): the
    difference of mean accuracies with its paired bootstrap 95 % interval (seed k paired with the
    control's seed k when both started from the same baselines). Empty when per-row results are missing."""
    from .stats import bootstrap_diff

    if not runs or not control or not all("test_correct" in r for r in runs + control):
        return {}
    a, b, paired = _paired(runs, control, lambda r: (r.get("baseline_seed", 0), r.get("random_seed", 0)))
    d = bootstrap_diff(a, b, paired_seeds=paired)
    return {"diff_vs_control": 100 * d.diff, "diff_vs_control_ci95": [100 * d.low, 100 * d.high]}


def run(name: str, preset: str = "scratch", source: str | None = None, fast: bool = False,
        callback: Callable | None = None, out_dir: Path | None = None, only: list[int] | None = None, seeds: int = 1,
        runner: str = "local", address: str | None = None, store=None, threads: int | None = None,
        budget_changes: dict | None = None, gpus_per_task: float | None = None) -> Path:
    """Run experiment ``name`` on ``preset`` (``only``: indices of the configurations to run, for
    budget-limited runs) with ``seeds`` random seeds per trained row; write JSON + markdown; return the
    markdown path. ``budget_changes``: changes to the preset's QAT training budget (fields of
    :class:`binlab.train.TrainConfig`, e.g. ``{"lr": 5e-4, "distill": 0.5}``), so a partial run can
    add a row to a table committed with another budget; a partial run whose budget differs from the
    committed table's is refused (one table, one budget). Every (configuration, seed) is one :class:`binlab.sweep.Task`, run by ``runner``
    ("local": in this process; "ray": Ray tasks, ``address`` to join a cluster) and kept in the results
    store, so a killed run resumes where it stopped.

    Seeds: a QAT row's seeds are its training seeds (data order, new parameters); PTQ and fp rows are
    deterministic given the baseline, so they run once, except in an experiment with
    ``seeded_baseline`` (the headline), where seed k also trains the fp32 baseline anew with seed k
    and every row of seed k starts from it."""
    from . import sweep

    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a whole number >= 1, got {seeds!r}")
    exp = EXPERIMENTS[name]
    if only is not None:
        bad = [i for i in only if not 0 <= i < len(exp.configs)]
        if bad:
            raise ValueError(f"config indices {bad} out of range; {name} has {len(exp.configs)} configurations (0..{len(exp.configs) - 1})")
        exp = replace(exp, configs=tuple(exp.configs[i] for i in only))
    log = callback or (lambda *_: None)
    fp = Config("fp32 baseline", FP, "fp")
    qat = None
    if budget_changes:
        base = BUDGETS.get(preset, BUDGETS["scratch"])
        bad = sorted(set(budget_changes) - {f.name for f in fields(base.train)} | ({"seed"} & set(budget_changes)))
        if bad:
            raise ValueError(f"budget: unknown or fixed field(s) {bad}; change any of "
                             f"{sorted(f.name for f in fields(base.train) if f.name != 'seed')}")
        qat = replace(base, train=replace(base.train, **budget_changes))
    out_dir = out_dir or RESULTS
    stem = out_dir / f"{name}-{preset}{'-fast' if fast else ''}"
    if only is not None and stem.with_suffix(".json").exists():
        committed = json.loads(stem.with_suffix(".json").read_text()).get("budget", {}).get("train", {})
        mine = asdict(sweep.budget_of(sweep.Task(preset, fp, fast=fast, budget=qat), with_config=False).train)
        differ = {k: (committed[k], mine[k]) for k in ("epochs", "lr", "distill", "batch_size", "warmup", "schedule")
                  if k in committed and committed[k] != mine[k]}
        if differ:
            raise ValueError(f"{stem.with_suffix('.json').name} was run with another QAT budget ("
                             + ", ".join(f"{k} {a} there, {b} here" for k, (a, b) in differ.items())
                             + "): run the whole table, or give the committed budget ("
                             + " ".join(f"--{k.replace('_', '-')} {a}" for k, (a, _) in differ.items()) + ")")

    def tasks_of(c: Config) -> list:
        n = seeds if (c.mode == "qat" or exp.seeded_baseline) else 1
        return [sweep.Task(preset, c, seed=k, baseline_seed=k if exp.seeded_baseline else 0, experiment=name, source=source, fast=fast,
                           budget=qat)
                for k in range(n)]

    plan = [(c, tasks_of(c)) for c in exp.configs]
    ref_tasks = tasks_of(fp)  # the fp32 runs every row is compared with (evaluation only)
    results = sweep.run_tasks([t for _, ts in plan for t in ts] + ref_tasks, store=store, runner=runner, address=address,
                              threads=threads, callback=log, gpus_per_task=gpus_per_task)
    it = iter(results)
    runs = [[next(it) for _ in ts] for _, ts in plan]
    reference = [next(it) for _ in ref_tasks]
    rows = []
    ctl = next((rs for (c, _), rs in zip(plan, runs) if is_control(c.mode, c.label)), None)
    for (c, _), rs in zip(plan, runs):
        row = aggregate(c, rs, reference)
        if ctl is not None and c.mode == "qat" and not is_control(c.mode, c.label):
            row |= against_control(rs, ctl)
        row["survey"] = c.survey
        row["seed"] = list(c.seed) if c.seed else None
        row["seed_budget"] = SEED_BUDGET if c.seed else None
        rows.append(row)
        log(f"    {c.label}: accuracy {row['accuracy']:.2f} %" + (f" +- {row['accuracy_std']:.2f}" if row.get("accuracy_std") else "")
            + (f"  perplexity {row['perplexity']:.2f}" if "perplexity" in row else "")
            + f"  size {row['megabytes']:.3f} MB  reduction {row['reduction_percent']:.2f} %")
    ctx = sweep.context(ref_tasks[0])
    splits, meta, calib = ctx.splits, ctx.meta, ctx.calib
    budget = sweep.budget_of(ref_tasks[0], with_config=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    # read again after the run (not the copy checked above): another partial run may have added rows meanwhile
    prior = json.loads(stem.with_suffix(".json").read_text()) if only is not None and stem.with_suffix(".json").exists() else None
    if prior is not None:
        rows = _merge_rows(prior["rows"], rows, [c.label for c in EXPERIMENTS[name].configs])
    _plain_control_diffs(rows)
    command = (f"binlab experiments run {name} --preset {preset}" + (" --fast" if fast else "")
               + (f" --seeds {seeds}" if seeds > 1 else "") + (f" --only {','.join(map(str, only))}" if only is not None else "")
               + "".join(f" --{k.replace('_', '-')} {v}" for k, v in (budget_changes or {}).items()))
    if prior is not None and prior.get("command"):  # a partial run adds to how the table was made
        steps = prior["command"].split("`, then `")
        command = "`, then `".join(steps + ([] if command in steps else [command]))
    payload = {"experiment": name, "title": exp.title, "note": exp.note, "preset": preset, "machine": machine(),
               "date": time.strftime("%Y-%m-%d"), "data": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
               "budget": asdict(budget), "baseline_val_accuracy": meta.get("val_accuracy"), "rows": rows, "calibration_rows": len(calib),
               "baseline_train_seconds": meta.get("history", {}).get("seconds"), "seeds": max(seeds, (prior or {}).get("seeds", 1)),
               "seeded_baseline": exp.seeded_baseline, "command": command}
    _fill_budgets(payload)
    if get_preset(preset).model.task == "lm":
        from .ngram import bigram_perplexity

        payload["bigram_perplexity"] = bigram_perplexity(splits)
    if name in FINDINGS:
        payload["finding"] = FINDINGS[name](rows)
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    stem.with_suffix(".md").write_text(to_markdown(payload))
    if not fast:
        write_index(out_dir)
    return stem.with_suffix(".md")


def _plain_control_diffs(rows: list[dict]) -> None:
    """QAT rows kept from a table run before per-row results were stored get the plain difference to
    the table's control (no interval: there is nothing to resample)."""
    if any("perplexity" in r for r in rows):  # a language model's table compares perplexities, not accuracies
        return
    ctl = next((r for r in rows if is_control(r["mode"], r["label"]) and r.get("accuracy") is not None), None)
    if ctl is None:
        return
    for r in rows:
        if (r["mode"] == "qat" and not is_control(r["mode"], r["label"]) and r.get("accuracy") is not None
                and r.get("diff_vs_control_ci95") is None):
            r["diff_vs_control"] = r["accuracy"] - ctl["accuracy"]


def _merge_rows(old: list[dict], new: list[dict], order: list[str]) -> list[dict]:
    """A partial run (``only``) replaces its rows in the committed table and keeps the others, in the
    experiment's order (rows no longer in the experiment are dropped)."""
    by = {r["label"]: r for r in old if r["label"] in order} | {r["label"]: r for r in new}
    return [by[label] for label in order if label in by]


CHANCE = 25.0  # AG_NEWS has 4 balanced classes


def t6_finding(rows: list[dict]) -> str:
    """Does PB-LLM's finding -- the classic BNN methods fall to (or below) random -- hold here, under PTQ
    and under QAT? A method "fails" when its accuracy is within 5 points of chance (25 %)."""
    fp = next((r["accuracy"] for r in rows if r["mode"] == "fp"), None)
    classic = ("sign", "xnor", "bireal", "recu", "fda")
    out = []
    for mode in ("ptq", "qat"):
        rs = [r for r in rows if r["mode"] == mode and r["label"].split(" ")[0] in classic and "W1A1" not in r["label"]]
        if not rs or fp is None:
            continue
        fail = [r["label"].split(" ")[0] for r in rs if r["accuracy"] < CHANCE + 5]
        verdict = ("holds" if len(fail) == len(rs) else "does not hold" if not fail else f"holds only for {', '.join(fail)}")
        drops = ", ".join(f"{r['label'].split(' ')[0]} {r['accuracy']:.2f} % ({diff_text(r, fp)})" for r in rs)
        big = [r["label"].split(" ")[0] for r in rs if r["accuracy"] < fp - 5]
        out.append(f"Under {mode.upper()} PB-LLM's finding {verdict} ({len(fail)} of {len(rs)} classic methods within 5 points "
                   f"of chance, {CHANCE:.0f} %): {drops} against fp32 {fp:.2f} %."
                   + (f" More than 5 points below fp32: {', '.join(big)}." if big else " All within 5 points of fp32."))
    if not out:
        return ""
    seeds = max(len(r.get("random_seeds") or [0]) for r in rows if r["mode"] == "qat") if any(r["mode"] == "qat" for r in rows) else 1
    noise = ("one seed, so differences under about 1 point are within the test set's noise" if seeds == 1 else
             f"QAT rows: mean of {seeds} seeds; in brackets the paired bootstrap 95 % interval of the change against fp32")
    return (f"**Finding** (generated from the rows above; {noise}; PB-LLM measured OPT language models zero-shot, this is a "
            "2-layer classifier): " + " ".join(out))


def _short(r: dict) -> str:
    rules = r.get("spec", {}).get("rules") or []
    return f"{rules[0]['method']['method']} {r['mode'].upper()}" if rules else r["label"]


def t8_finding(rows: list[dict]) -> str:
    """Does the small LM order the methods as the survey does (on LLaMA-7B): Spearman's rank correlation
    and the largest rank moves; and are the calibrated 1-bit-class PTQ methods ahead of plain sign/XNOR PTQ?"""
    fp = next((r["perplexity"] for r in rows if r["mode"] == "fp" and "perplexity" in r), None)
    surveyed = [(r, float(r["survey"].split("ppl ")[1].split()[0])) for r in rows
                if r.get("survey") and "ppl " in r["survey"] and "perplexity" in r]
    out = []
    if len(surveyed) >= 3:
        ours = {id(r): i for i, (r, _) in enumerate(sorted(surveyed, key=lambda t: t[0]["perplexity"]))}
        theirs = {id(r): i for i, (r, _) in enumerate(sorted(surveyed, key=lambda t: t[1]))}
        n = len(surveyed)
        rho = 1 - 6 * sum((ours[id(r)] - theirs[id(r)]) ** 2 for r, _ in surveyed) / (n * (n * n - 1))
        moves = sorted(surveyed, key=lambda t: -abs(ours[id(t[0])] - theirs[id(t[0])]))[:3]
        out.append(f"Ranked by perplexity, the {n} methods the survey reports correlate with the survey's ranking at Spearman "
                   f"rho = {rho:.2f} (1: the same order). Ours, best first: "
                   + ", ".join(f"{_short(r)} {r['perplexity']:.1f}" for r, _ in sorted(surveyed, key=lambda t: t[0]['perplexity']))
                   + ". Largest moves (our rank vs the survey's, 1 = best): "
                   + ", ".join(f"{_short(r)} {ours[id(r)] + 1} vs {theirs[id(r)] + 1}" for r, _ in moves) + ".")
    plain = [r for r in rows if r["mode"] == "ptq" and r["label"].startswith(("sign", "XNOR")) and "perplexity" in r]
    calibrated = [r for r in rows if r["mode"] == "ptq" and r["label"].startswith(("PB-LLM", "BiLLM")) and "perplexity" in r]
    if plain and calibrated and fp:
        best_plain = min(plain, key=lambda r: r["perplexity"])
        worst_cal = max(calibrated, key=lambda r: r["perplexity"])
        ahead = worst_cal["perplexity"] < best_plain["perplexity"]
        out.append(f"PB-LLM and BiLLM PTQ {'are all ahead of' if ahead else 'are not all ahead of'} plain 1-bit PTQ: the worst of them, "
                   f"{_short(worst_cal)} ({worst_cal['label'].split('(')[0].strip()}), {worst_cal['perplexity']:.1f} vs the best plain, "
                   f"{_short(best_plain)}, {best_plain['perplexity']:.1f} (fp32 {fp:.1f}), at {worst_cal['bits_per_quantized_weight']:.2f} vs "
                   f"{best_plain['bits_per_quantized_weight']:.2f} stored bits per weight.")
    return ("**Finding** (generated from the rows above, one seed): " + " ".join(out)) if out else ""


def t9_finding(rows: list[dict]) -> str:
    """Does our W1A1 ordering of the BERT-era methods match the survey's GLUE ordering, and how close is
    the best W1A1 row to fp32?"""
    fp = next((r["accuracy"] for r in rows if r["mode"] == "fp"), None)
    glue = [(r, float(r["survey"].split("avg ")[1].split()[0])) for r in rows
            if r.get("survey") and "(W1A1" in r["survey"] and "W1A1" in r["label"] and "-style" not in r["label"]]
    out = []
    if len(glue) >= 2:
        ours = [r["label"].split(" ")[0] for r, _ in sorted(glue, key=lambda t: -t[0]["accuracy"])]
        theirs = [r["label"].split(" ")[0] for r, _ in sorted(glue, key=lambda t: -t[1])]
        n = len(glue)
        rank_o = {name: i for i, name in enumerate(ours)}
        rank_t = {name: i for i, name in enumerate(theirs)}
        rho = 1 - 6 * sum((rank_o[k] - rank_t[k]) ** 2 for k in rank_o) / (n * (n * n - 1)) if n > 2 else float("nan")
        out.append(f"W1A1 ordering of the recipes run as published (the '-style' rows excluded), best first: ours {' > '.join(ours)}; the survey's (GLUE) {' > '.join(theirs)}: "
                   + ("the same order." if ours == theirs else f"a different order (Spearman rho = {rho:.2f}).")
                   + " The accuracies: " + ", ".join(f"{r['label'].split(' ')[0]} {r['accuracy']:.2f} %" for r, _ in
                                                       sorted(glue, key=lambda t: -t[0]['accuracy'])) + ".")
    w1a1 = [r for r in rows if "W1A1" in r["label"] and r["mode"] == "qat"]
    if w1a1 and fp is not None:
        best = max(w1a1, key=lambda r: r["accuracy"])
        out.append(f"Best W1A1: {best['label'].split(':')[0]}, {best['accuracy']:.2f} % ({best['accuracy'] - fp:+.2f} against fp32 "
                   f"{fp:.2f} %) at {best['reduction_percent']:.2f} % reduction.")
    return ("**Finding** (generated from the rows above, one seed: differences under about 1 point are within the test "
            "set's noise): " + " ".join(out)) if out else ""


FINDINGS = {"T6": t6_finding, "T8": t8_finding, "T9": t9_finding}


def _fmt(v, f="{:.2f}"):
    return "-" if v is None else (f.format(v) if isinstance(v, (int, float)) else str(v))


def _acc(r: dict, key: str = "accuracy") -> str:
    """Mean over seeds, +- the seeds' standard deviation when there are several."""
    v, sd = r.get(key), r.get(f"{key}_std")
    return _fmt(v) if sd is None else f"{v:.2f} ± {sd:.2f}"


def vs_control_text(r: dict) -> str:
    """A QAT row against the equal-budget control, with its interval (markdown and the Results page)."""
    if not r.get("diff_vs_control_ci95"):
        return "-" if r.get("diff_vs_control") is None else f"{r['diff_vs_control']:+.2f} (no interval)"
    lo, hi = r["diff_vs_control_ci95"]
    return f"{r['diff_vs_control']:+.2f} [{lo:+.2f}, {hi:+.2f}]" + (" no measurable difference" if lo <= 0 <= hi else "")


def _seeds(r: dict) -> str:
    return str(len(r.get("random_seeds") or [0]))


def diff_text(r: dict, fp: float | None = None) -> str:
    """The change against fp32 with its 95 % interval (paired bootstrap over rows and seeds), or the
    plain difference for a row stored before intervals were."""
    if r.get("diff_ci95"):
        lo, hi = r["diff_ci95"]
        return f"{r['diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]" + (" no measurable difference" if r.get("no_measurable_difference") else "")
    if fp is None or r.get("mode") == "fp" or r.get("accuracy") is None:
        return "-"
    return f"{r['accuracy'] - fp:+.2f} (no interval)"


def _header(payload: dict) -> list[str]:
    b = payload["budget"]["train"]
    calib = f"; calibration: {payload['calibration_rows']} train rows" if payload.get("calibration_rows") else ""
    return [f"# {payload['experiment']}: {payload['title']} ({payload['preset']})", "", payload["note"], "",
            f"Data: {payload['data']['train']} train / {payload['data']['test']} test rows{calib}. QAT budget: {b['epochs']} epoch(s), "
            f"lr {b['lr']}, distillation weight {b['distill']}. Machine: {payload['machine']}. Date: {payload['date']}.",
            f"Reproduce: `{payload['command']}`", ""]


def lm_markdown(payload: dict) -> str:
    fp = next((r["perplexity"] for r in payload["rows"] if r["mode"] == "fp"), None)
    bg = payload.get("bigram_perplexity") or {}
    lines = _header(payload)
    if bg:
        lines += [f"Floor: an interpolated bigram model (lambda {bg['lambda']}, chosen on validation) has test perplexity "
                  f"**{bg['test_perplexity']:.2f}** on the same tokens" + (f"; the fp32 LM has **{fp:.2f}**" if fp else "")
                  + (f" (trained in {payload['baseline_train_seconds']:.0f} s here)." if payload.get("baseline_train_seconds") else "."), ""]
    ctl = next((r["perplexity"] for r in payload["rows"] if is_control(r["mode"], r["label"])), None)
    lines += ["| configuration | mode | budget | perplexity | x fp32 | x control | bits / quantized weight (all stored) | paper bits | "
              "size MB | reduction % | calibration / train s | the survey reports |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        ratio = None if not fp else r["perplexity"] / fp
        vs_ctl = r["perplexity"] / ctl if ctl and r["mode"] == "qat" and not is_control(r["mode"], r["label"]) else None
        lines.append(f"| {r['label']} | {r['mode']} | {r.get('budget') or '-'} | {_fmt(r['perplexity'])} | {_fmt(ratio, '{:.2f}')} | "
                     f"{_fmt(vs_ctl, '{:.2f}')} | "
                     f"{_fmt(r['bits_per_quantized_weight'], '{:.3f}') if r['mode'] != 'fp' else '32'} | {_fmt(r.get('paper_bits'), '{:.3f}')} | "
                     f"{_fmt(r['megabytes'], '{:.3f}')} | {_fmt(r['reduction_percent'])} | {_fmt(r['train_seconds'], '{:.0f}')} | "
                     f"{r.get('survey') or '-'} |")
    return _finish(lines, payload)


def _finish(lines: list[str], payload: dict) -> str:
    """A table's markdown: its lines, then the generated finding if any."""
    if payload.get("finding"):
        lines += ["", payload["finding"]]
    return "\n".join(lines) + "\n"


def w1a1_markdown(payload: dict) -> str:
    fp = next((r["accuracy"] for r in payload["rows"] if r["mode"] == "fp"), None)
    lines = _header(payload) + [
        "| configuration | budget | seeds | accuracy % | vs fp32, pts [95 % CI] | vs control, pts [95 % CI] | val accuracy % | size MB (exact) | "
        "reduction % | bits / quantized weight | attention entropy (nats) | train s | the survey reports |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        lines.append(f"| {r['label']} | {r.get('budget') or '-'} | {_seeds(r)} | {_acc(r)} | {diff_text(r, fp)} | {vs_control_text(r)} | "
                     f"{_acc(r, 'val_accuracy')} | "
                     f"{_fmt(r['megabytes'], '{:.3f}')} | {_fmt(r['reduction_percent'])} | "
                     f"{_fmt(r['bits_per_quantized_weight'], '{:.3f}') if r['mode'] != 'fp' else '32'} | "
                     f"{_fmt(r.get('attention_entropy'), '{:.3f}')} | {_fmt(r['train_seconds'], '{:.0f}')} | {r.get('survey') or '-'} |")
    return _finish(lines + _intervals_note(payload), payload)


def to_markdown(payload: dict) -> str:
    if any("perplexity" in r for r in payload["rows"]):
        return lm_markdown(payload)
    if payload["experiment"] == "T9":
        return w1a1_markdown(payload)
    fp = next((r["accuracy"] for r in payload["rows"] if r["mode"] == "fp"), None)
    lines = _header(payload) + [
             "| configuration | mode | budget | seeds | accuracy % (mean ± sd) | vs fp32, pts [95 % CI] | McNemar p | vs control, pts [95 % CI] | "
             "val accuracy % | seed accuracy % | seed budget | size MB (exact) | seed size | reduction % | seed reduction % | "
             "bits / quantized weight | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        s = r.get("seed") or [None, None, None]
        lines.append(f"| {r['label']} | {r['mode']} | {r.get('budget') or '-'} | {_seeds(r)} | {_acc(r)} | {diff_text(r, fp)} | "
                     f"{_fmt(r.get('mcnemar_p'), '{:.3g}')} | {vs_control_text(r)} | {_acc(r, 'val_accuracy')} | {_fmt(s[0], '{:.1f}')} | "
                     f"{r.get('seed_budget') or '-'} | {_fmt(r['megabytes'], '{:.3f}')} | "
                     f"{_fmt(s[1])} | {_fmt(r['reduction_percent'])} | {_fmt(s[2])} | {_fmt(r['bits_per_quantized_weight'], '{:.3f}')} | "
                     f"{_fmt(r['train_seconds'], '{:.0f}')} |")
    return _finish(lines + _intervals_note(payload), payload)


def seed_noise(preset: str, out_dir: Path | None = None) -> dict | None:
    """The seed-to-seed spread measured by the headline table (T7) on ``preset``: the mean standard
    deviation of its QAT rows' accuracies over their seeds, and what it implies for a difference of two
    one-seed rows (sd sqrt(2) s, so 1.96 sqrt(2) s at 95 %). None when T7 has no repeated seeds there."""
    import math

    path = (out_dir or RESULTS) / f"T7-{preset}.json"
    if not path.exists():
        return None
    rows = [r for r in json.loads(path.read_text())["rows"] if r["mode"] == "qat" and r.get("accuracy_std") is not None]
    if not rows:
        return None
    sd = sum(r["accuracy_std"] for r in rows) / len(rows)
    return {"sd": sd, "seeds": min(len(r["random_seeds"]) for r in rows), "rows": len(rows), "one_seed_diff_95": 1.96 * math.sqrt(2) * sd}


def _intervals_note(payload: dict) -> list[str]:
    noise = seed_noise(payload["preset"])
    one_seed = [r for r in payload["rows"] if r["mode"] == "qat" and len(r.get("random_seeds") or [0]) == 1]
    seeds = (f" Seed-to-seed noise, measured by T7 on this preset ({noise['rows']} QAT rows, {noise['seeds']} seeds each): "
             f"standard deviation {noise['sd']:.2f} points, so two one-seed QAT rows differing by less than about "
             f"{noise['one_seed_diff_95']:.2f} points (1.96 x sqrt(2) x sd) cannot be told apart by training noise alone."
             if noise and one_seed else "")
    if not any(r.get("diff_ci95") for r in payload["rows"]):
        return ["", "One seed per row and no per-row results stored: differences under about 1 point are within the test "
                    "set's noise (standard error about 0.39 points at 7,600 rows)." + seeds]
    return ["", "Accuracy: mean over the row's seeds ± their standard deviation. vs fp32: the difference of mean accuracies "
                "to the fp32 baseline's runs on the same test rows, with a paired bootstrap 95 % interval (2,000 replicates, "
                "binlab.stats.bootstrap_diff): test rows resampled, and seeds too where a row has several (paired with the "
                "baseline each started from in the headline table); 'no measurable difference' where it contains 0. A one-seed "
                "row's interval holds the test set's noise only, not training noise." + seeds + " vs control: against the "
                "table's fp32 row fine-tuned with the same QAT budget and distillation (so extra training is not counted as "
                "binarization's doing), same interval. McNemar p: exact test of "
                "each seed against the baseline it started from, the largest shown. Choices of recipe are made on validation "
                "(val accuracy; docs/results/select-*.md); test is evaluated once per final configuration."]


def render(out_dir: Path | None = None) -> list[Path]:
    """Rewrite every committed table's markdown (and finding, title, note, quoted survey numbers) from its JSON, without running anything."""
    d = out_dir or RESULTS
    written = []
    for path in sorted(d.glob("T*.json")):
        payload = _fill_budgets(json.loads(path.read_text()))
        exp = EXPERIMENTS.get(payload["experiment"])
        if exp is not None:  # titles, notes and the survey's quoted numbers are documentation: the current wording
            payload["title"], payload["note"] = exp.title, exp.note
            quoted = {c.label: c.survey for c in exp.configs}
            for r in payload["rows"]:
                if r["label"] in quoted and (quoted[r["label"]] is not None or "survey" in r):
                    r["survey"] = quoted[r["label"]]
        if payload["experiment"] in FINDINGS:
            payload["finding"] = FINDINGS[payload["experiment"]](payload["rows"])
        path.write_text(json.dumps(payload, indent=2))
        path.with_suffix(".md").write_text(to_markdown(payload))
        written.append(path.with_suffix(".md"))
    write_index(d)
    return written


def write_index(out_dir: Path | None = None) -> Path:
    """``docs/results/README.md``: one section per committed table, each row as accuracy, the
    drop against that table's own fp32 baseline, and the exact reduction."""
    d = out_dir or RESULTS
    lines = ["# Committed results", "",
             "Generated by `binlab experiments run ...` (each table's own file has the machine, the budget and the "
             "command). Accuracy is on the 7,600-row AG_NEWS test split (mean ± sd over seeds where a row has several); "
             "'vs fp32' is against the same preset's fp32 baseline, with a paired bootstrap 95 % interval where the "
             "table stored per-row results ('no interval': a one-seed row from before intervals; differences under "
             "about 1 point are then within the test set's noise); sizes count every scale, threshold and mask.", ""]
    baselines = {}
    payloads = load_results(d)
    for pl in payloads:
        for r in pl["rows"]:
            if r["mode"] == "fp":
                baselines[pl["preset"]] = r["accuracy"]
    for pl in sorted(payloads, key=lambda q: (q["preset"], q["experiment"])):
        base = baselines.get(pl["preset"])
        if any("perplexity" in r for r in pl["rows"]):
            fp = next((r["perplexity"] for r in pl["rows"] if r["mode"] == "fp"), None)
            lines += [f"## [{pl['experiment']} ({pl['preset']})]({pl['experiment']}-{pl['preset']}.md): {pl['title']}", "",
                      "| configuration | mode | test perplexity | x fp32 | bits / quantized weight | reduction % |", "|---|---|---|---|---|---|"]
            for r in pl["rows"]:
                lines.append(f"| {r['label']} | {r['mode']} | {r['perplexity']:.2f} | {_fmt(r['perplexity'] / fp if fp else None)} | "
                             f"{r['bits_per_quantized_weight']:.3f} | {r['reduction_percent']:.2f} |")
            lines.append("")
            continue
        lines += [f"## [{pl['experiment']} ({pl['preset']})]({pl['experiment']}-{pl['preset']}.md): {pl['title']}", "",
                  "| configuration | mode | seeds | accuracy % | vs fp32, pts [95 % CI] | reduction % | seed accuracy % |",
                  "|---|---|---|---|---|---|---|"]
        for r in pl["rows"]:
            seed = (r.get("seed") or [None])[0]
            lines.append(f"| {r['label']} | {r['mode']} | {_seeds(r)} | {_acc(r)} | {diff_text(r, base)} | "
                         f"{r['reduction_percent']:.2f} | {_fmt(seed, '{:.1f}')} |")
        lines.append("")
    path = d / "README.md"
    path.write_text("\n".join(lines))
    return path


def load_results(out_dir: Path | None = None) -> list[dict]:
    """Every committed result payload (for the app's Results page)."""
    d = out_dir or RESULTS
    return [json.loads(p.read_text()) for p in sorted(d.glob("T*.json")) if not p.stem.endswith("-fast")]


# ---------------------------------------------------------------------------------------------
# how the gap trends with the amount of training data


DATA_SIZES = (2000, 4000, 8000, None)  # None: every training row there is (the hub has 120k; ../shared 15,287)


def data_size_curve(preset: str = "scratch", sizes=DATA_SIZES, seeds: int = 3, source: str | None = None, fast: bool = False,
                    callback: Callable | None = None, out_dir: Path | None = None, runner: str = "local", address: str | None = None,
                    store=None, threads: int | None = None, gpus_per_task: float | None = None) -> Path:
    """fp32 against the best 1-bit recipe (T7's "binlab best") trained on the first n training rows, for
    each n in ``sizes``: for seed k the fp32 baseline is trained from scratch on those rows with seed k
    and the 1-bit model is QAT'd from it with seed k (as in the headline). Writes
    ``docs/results/data-size-<preset>.{json,md}``: each size's mean ± sd over seeds and the gap with its
    paired bootstrap 95 % interval on the full test split."""
    from . import sweep

    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a whole number >= 1, got {seeds!r}")
    bad = [n for n in sizes if n is not None and (not isinstance(n, int) or n < 8)]
    if bad or not sizes:
        raise ValueError(f"sizes must be whole numbers >= 8 (or None: all rows), got {list(sizes)}")
    fp, best = Config("fp32 baseline", FP, "fp"), EXPERIMENTS["T7"].configs[1]
    plan = [(n, c, [sweep.Task(preset, c, seed=k, baseline_seed=k, experiment="data-size", source=source, fast=fast, train_rows=n)
                    for k in range(seeds)]) for n in sizes for c in (fp, best)]
    results = iter(sweep.run_tasks([t for *_, ts in plan for t in ts], store=store, runner=runner, address=address,
                                   threads=threads, callback=callback, gpus_per_task=gpus_per_task))
    runs = {(n, c.label): [next(results) for _ in ts] for n, c, ts in plan}
    rows = []
    for n in sizes:
        f = aggregate(fp, runs[(n, fp.label)])
        b = aggregate(best, runs[(n, best.label)], runs[(n, fp.label)])
        rows.append({"train_rows": runs[(n, fp.label)][0].get("train_rows"), "all_rows": n is None, "seeds": seeds,
                     "fp32_accuracy": f["accuracy"], "fp32_accuracy_std": f.get("accuracy_std"),
                     "binary_accuracy": b["accuracy"], "binary_accuracy_std": b.get("accuracy_std"),
                     "gap": b.get("diff"), "gap_ci95": b.get("diff_ci95"), "no_measurable_difference": b.get("no_measurable_difference"),
                     "reduction_percent": b["reduction_percent"], "fp32_val_accuracy": f.get("val_accuracy"),
                     "binary_val_accuracy": b.get("val_accuracy")})
    budget = sweep.budget_of(plan[1][2][0])
    ctx = sweep.context(plan[0][2][0])
    payload = {"experiment": "data-size", "preset": preset, "binary": best.label, "rows": rows, "machine": machine(),
               "test_rows": len(ctx.splits.test), "baseline": baseline_budget(preset) if not fast else "fast (0.3 ep)",
               "date": time.strftime("%Y-%m-%d"), "budget": asdict(budget), "fast": fast,
               "command": f"binlab experiments datasize --preset {preset} --seeds {seeds}"
               + f" --sizes {','.join('all' if n is None else str(n) for n in sizes)}" + (" --fast" if fast else "")}
    out_dir = out_dir or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"data-size-{preset}{'-fast' if fast else ''}"
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    stem.with_suffix(".md").write_text(data_size_markdown(payload))
    return stem.with_suffix(".md")


def data_size_markdown(payload: dict) -> str:
    b = payload["budget"]["train"]
    lines = [f"# fp32 vs the best 1-bit recipe by training rows ({payload['preset']})", "",
             f"1-bit: {payload['binary']} (QAT {b['epochs']} epoch(s), lr {b['lr']}, distillation {b['distill']}), each seed QAT'd "
             f"from the fp32 baseline trained with that seed on the same rows ({payload.get('baseline', 'the preset baseline')}). "
             f"Test: {payload.get('test_rows', 7600):,} AG_NEWS test rows. Gap: 1-bit minus fp32, with the paired bootstrap 95 % "
             "interval over test rows and seeds (seed k's 1-bit model paired with its own baseline). The 1-bit model trains "
             f"{b['epochs']:g} epoch(s) more than the fp32 one (the QAT budget): T7's equal-budget control measures what that "
             "extra training does alone on all rows. "
             f"Machine: {payload['machine']}. Date: {payload['date']}.", f"Reproduce: `{payload['command']}`", "",
             "| training rows | seeds | fp32 accuracy % | 1-bit accuracy % | gap, pts [95 % CI] | reduction % |", "|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        gap = "-" if r["gap"] is None else (f"{r['gap']:+.2f} [{r['gap_ci95'][0]:+.2f}, {r['gap_ci95'][1]:+.2f}]"
                                             + (" no measurable difference" if r["no_measurable_difference"] else ""))
        lines.append(f"| {r['train_rows']:,}{' (all here)' if r['all_rows'] else ''} | {r['seeds']} | "
                     f"{_acc({'accuracy': r['fp32_accuracy'], 'accuracy_std': r['fp32_accuracy_std']})} | "
                     f"{_acc({'accuracy': r['binary_accuracy'], 'accuracy_std': r['binary_accuracy_std']})} | {gap} | {r['reduction_percent']:.2f} |")
    return "\n".join(lines) + "\n"
