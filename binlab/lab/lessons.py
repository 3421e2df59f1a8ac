"""Guided lessons: a question, the learner's prediction, an experiment run in place, and a check of
the prediction against what the experiment measured.

Seven lessons follow the seven course notebooks. Each lesson's :attr:`Lesson.run` measures its answer on
the model in front of the learner (nothing is hard-coded): the accepted answers are every choice the
measurement cannot separate from the best one (for accuracies, a paired 95 % interval that contains
zero), so a learner is never told they are wrong by noise. The Lessons page and the notebooks'
"check yourself" cells call the same functions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch


@dataclass
class Context:
    """What a lesson runs on: the fp32 baseline and the preset's splits; ``fast`` shrinks every run."""

    baseline: torch.nn.Module
    splits: object
    fast: bool = False

    @property
    def rows(self) -> int:
        return 200 if self.fast else 1000


@dataclass
class Outcome:
    answers: tuple[str, ...]  # the choices the measurement supports (more than one when it cannot tell them apart)
    summary: str  # what was measured, in one or two sentences with the numbers
    figure: dict = field(default_factory=dict)  # {"title", "x", "y", "y_title"} for a bar chart


@dataclass(frozen=True)
class Lesson:
    key: str
    number: int
    title: str
    notebook: str
    question: str
    choices: tuple[str, ...]
    why: str  # the idea behind the answer (no numbers: those come from the run)
    run: Callable[[Context], Outcome]


def check(lesson: Lesson, prediction: str, outcome: Outcome) -> tuple[bool, str]:
    """(right, message): whether the prediction is one the measurement supports."""
    if prediction not in lesson.choices:
        raise ValueError(f"{prediction!r} is not one of this lesson's choices: {list(lesson.choices)}")
    right = prediction in outcome.answers
    told = " or ".join(f"'{a}'" for a in outcome.answers)
    return right, (f"Yes: the experiment supports '{prediction}'. " if right else f"Not this time: the experiment says {told}. ") + lesson.why


# ------------------------------------------------------------------------------------------------
# the experiments


def _component(model, name):
    return model.get_submodule(name)


def _binarizers(ctx: Context) -> Outcome:
    from binlab.methods import BINARIZERS

    w = _component(ctx.baseline, "layers.0.ffn.up").weight.detach().float().cpu()
    names = {"sign (+-1, no scale)": "sign", "XNOR (sign times the row's mean |w|)": "xnor",
             "bucket (two means per row, best threshold)": "bucket"}
    err = {c: float((w - BINARIZERS[m]().quantize(w)).norm() / w.norm()) for c, m in names.items()}
    best = min(err, key=err.get)
    return Outcome((best,), "Relative error ||W - Q(W)|| / ||W|| on layers.0.ffn.up: "
                   + ", ".join(f"{c.split(' (')[0]} {e:.3f}" for c, e in err.items()) + ".",
                   {"title": "relative error of each binarizer on layers.0.ffn.up", "x": [c.split(" (")[0] for c in err],
                    "y": list(err.values()), "y_title": "relative error"})


def _accuracy_race(ctx: Context, specs: dict) -> tuple[dict, tuple[str, ...]]:
    """Accuracy (%) of each spec's PTQ model on the same rows, and the choices within noise of the best."""
    from binlab.experiments.stats import paired_difference
    from binlab.training.qat import ptq

    from .live import row_correctness

    rows = ctx.splits.val.head(ctx.rows)
    batches = list(rows.batches(64))
    correct = {c: row_correctness(ptq(ctx.baseline, s).eval(), batches)[0] for c, s in specs.items()}
    acc = {c: 100 * float(v.mean()) for c, v in correct.items()}
    best = max(acc, key=acc.get)
    tied = (best,) + tuple(c for c in specs if c != best and paired_difference(correct[best], correct[c]).within_noise)
    return acc, tied


def _components(ctx: Context) -> Outcome:
    from binlab.nn.quantize import MethodConfig, QuantSpec, Rule

    pairs = {"QK": ("q", "k"), "QV": ("q", "v"), "KV": ("k", "v")}
    specs = {c: QuantSpec(tuple(Rule(f"layers.*.attn.{p}", MethodConfig("sign")) for p in ps)) for c, ps in pairs.items()}
    acc, tied = _accuracy_race(ctx, specs)
    return Outcome(tied, f"Validation accuracy on {min(ctx.rows, len(ctx.splits.val))} rows with each pair binarized by unscaled sign (PTQ): "
                   + ", ".join(f"{c} {a:.2f} %" for c, a in acc.items())
                   + (". The best is not separable from " + ", ".join(c for c in tied[1:]) + " on these rows." if len(tied) > 1 else "."),
                   {"title": "accuracy with one attention pair binarized (PTQ, unscaled sign)", "x": list(acc), "y": list(acc.values()),
                    "y_title": "validation accuracy %"})


def _threshold(ctx: Context) -> Outcome:
    from binlab.methods.classic import Bucket

    w = _component(ctx.baseline, "layers.0.attn.q").weight.detach().float().cpu()
    taus = {"optimal": None, "0.0": 0.0, "0.5": 0.5, "1.5": 1.5}
    err = {k: float((w - Bucket(tau=t).quantize(w)).norm() / w.norm()) for k, t in taus.items()}
    up = err["1.5"] > err["optimal"] * 1.01
    down = err["1.5"] < err["optimal"] * 0.99
    answer = "it goes up" if up else ("it goes down" if down else "it stays about the same")
    return Outcome((answer,), "Relative error of bucket binarization on layers.0.attn.q by threshold: "
                   + ", ".join(f"tau {k}: {e:.4f}" for k, e in err.items()) + ".",
                   {"title": "bucket binarization error by threshold (layers.0.attn.q)", "x": [f"tau {k}" for k in err],
                    "y": list(err.values()), "y_title": "relative error"})


def _qat(ctx: Context) -> Outcome:
    from binlab.nn.quantize import QuantSpec
    from binlab.training.qat import QATConfig, ptq, qat
    from binlab.training.train import TrainConfig

    from .live import compare_models

    spec = QuantSpec.simple("encoder", "xnor")
    train = ctx.splits.train.head(400 if ctx.fast else 4000)
    student, _ = qat(ctx.baseline, spec, train, QATConfig(TrainConfig(epochs=1, lr=5e-4, warmup=0.05, distill=0.5)))
    c = compare_models(student, ptq(ctx.baseline, spec), ctx.splits.val, val_rows=ctx.rows)
    direction = "higher" if c["diff"] > 0 else "lower" if c["diff"] < 0 else None
    # within noise, the measured direction is not wrong either: it is just not established on these rows
    answers = ("within noise",) + ((direction,) if direction else ()) if c["within_noise"] else (direction,)
    return Outcome(answers, f"After one pass over {len(train)} training rows: QAT {c['accuracy_a']:.2f} % vs PTQ {c['accuracy_b']:.2f} % "
                   f"on {c['rows']} validation rows; difference {c['diff']:+.2f} pts (paired 95 % interval {c['diff_low']:+.2f} to {c['diff_high']:+.2f}).",
                   {"title": "XNOR on the encoder: PTQ vs a short QAT", "x": ["PTQ", "QAT"], "y": [c["accuracy_b"], c["accuracy_a"]],
                    "y_title": "validation accuracy %"})


def _landscape(ctx: Context) -> Outcome:
    from binlab.nn.quantize import QuantSpec
    from binlab.probes.landscape import curvature

    rows = 64 if ctx.fast else 256
    fp = curvature(ctx.baseline, ctx.splits.val, None, rows=rows, k=1, iters=8, trace_samples=0)["top_eigenvalues"][0]
    b = curvature(ctx.baseline, ctx.splits.val, QuantSpec.simple("encoder", "xnor"), rows=rows, k=1, iters=8,
                  trace_samples=0)["top_eigenvalues"][0]
    answer = "sharper (a larger top eigenvalue)" if abs(b) > abs(fp) else "flatter (a smaller top eigenvalue)"  # magnitudes
    return Outcome((answer,), f"Top Hessian eigenvalue of the loss on {rows} validation rows: fp32 {fp:.2f}, "
                   f"XNOR encoder through the STE {b:.2f} (Lanczos, 8 iterations).",
                   {"title": "top Hessian eigenvalue", "x": ["fp32", "XNOR encoder"], "y": [fp, b], "y_title": "eigenvalue"})


def _xnor(ctx: Context) -> Outcome:
    from binlab.runtime.kernels import pack_bits, xnor_gemm

    rng = np.random.default_rng(0)
    a = rng.choice([-1.0, 1.0], 256)
    b = a.copy()
    b[rng.choice(256, 64, replace=False)] *= -1  # 64 positions differ
    dot = int(xnor_gemm(pack_bits(a[None]), pack_bits(b[None]), 256)[0, 0])
    direct = int(a @ b)
    return Outcome((str(dot),), f"xnor_gemm gives {dot} = 256 - 2 x popcount(a XOR b) = 256 - 2 x 64; the float dot product gives {direct}.",
                   {"title": "the same dot product two ways", "x": ["XNOR-popcount", "float"], "y": [dot, direct], "y_title": "a . b"})


def _eras(ctx: Context) -> Outcome:
    from .teaching import bits_by_part

    bits = bits_by_part(ctx.baseline)
    names = {"embeddings": "the embeddings", "layers": "the layers' weight matrices", "head": "the head (a language model's output embedding)"}
    top = max(bits.values())
    tied = tuple(names[p] for p, b in sorted(bits.items(), key=lambda t: -t[1]) if b >= 0.98 * top)  # within 2 %: a tie
    mb = {names[p]: b / 8e6 for p, b in bits.items()}
    return Outcome(tied, "Megabytes stored in full precision: " + ", ".join(f"{k} {v:.3f}" for k, v in mb.items())
                   + f" (vocabulary {ctx.baseline.config.vocab_size:,}, width {ctx.baseline.config.d_model}).",
                   {"title": "where the bits are (fp32)", "x": list(mb), "y": list(mb.values()), "y_title": "MB"})


LESSONS: dict[str, Lesson] = {les.key: les for les in (
    Lesson("binarizers", 1, "Binarizers and scales", "01_binarizers_and_ste.ipynb",
           "Three binarizers approximate the trained weight matrix layers.0.ffn.up. Which one is closest to it "
           "(smallest relative error ||W - Q(W)|| / ||W||)?",
           ("sign (+-1, no scale)", "XNOR (sign times the row's mean |w|)", "bucket (two means per row, best threshold)"),
           "A scale matches the weights' magnitude (XNOR's mean |w| is the least-squares scale for sign(W)); two free "
           "levels per row with the best threshold can only fit better than one symmetric pair.", _binarizers),
    Lesson("components", 2, "Which part to binarize", "02_binarize_a_transformer.ipynb",
           "Binarize one pair of attention projections in every layer with unscaled sign, no retraining. Which pair costs "
           "the least validation accuracy?", ("QK", "QV", "KV"),
           "Q and K only decide where each token looks (through the attention weights), while V's values flow into the "
           "output directly and on into every later layer; the student project's table found QK the cheapest pair (after training, T4 here cannot tell the three pairs apart).", _components),
    Lesson("threshold", 3, "Thresholds and buckets", "03_threshold_and_buckets.ipynb",
           "Bucket binarization splits each row at a threshold and replaces each side by its mean. Move the threshold of "
           "layers.0.attn.q from its squared-error-optimal value to mean + 1.5 std. What happens to the relative error?",
           ("it goes up", "it goes down", "it stays about the same"),
           "The optimal threshold minimises the squared error by construction (an exact 1-D 2-means), so any other "
           "threshold can only do worse or equal.", _threshold),
    Lesson("qat", 4, "Training through the binarizer", "04_qat_and_distillation.ipynb",
           "XNOR-binarize the encoder. Then fine-tune the latent weights for one short pass through the straight-through "
           "estimator, with distillation from the fp32 model. Against post-training binarization alone, is validation "
           "accuracy higher, lower, or within noise?", ("higher", "lower", "within noise"),
           "The STE lets the latent weights move so that their signs and scales suit the binary network; a short run "
           "recovers part of what PTQ loses, and on few validation rows the gain may not clear the noise.", _qat),
    Lesson("landscape", 5, "Loss landscapes", "05_loss_landscape.ipynb",
           "Compare the curvature of the loss at the trained weights: fp32, and the XNOR-binarized encoder (gradients "
           "through the STE). Is the binarized model's loss sharper or flatter (top Hessian eigenvalue)?",
           ("sharper (a larger top eigenvalue)", "flatter (a smaller top eigenvalue)"),
           "Papers report sharper landscapes for binary networks (BinaryBERT), but through an STE the curvature depends on "
           "the estimator and the model; measure rather than assume (this lab's committed bench found the opposite once).",
           _landscape),
    Lesson("xnor", 6, "XNOR and popcount", "06_xnor_popcount.ipynb",
           "Two +-1 vectors of length 256 differ in exactly 64 positions. What is their dot product?", ("64", "128", "192"),
           "Matching positions add +1 and differing ones -1: a . b = K - 2 popcount(a XOR b), which a CPU computes 64 "
           "positions per instruction.", _xnor),
    Lesson("eras", 7, "From LSTMs to LLMs", "07_lstms_to_llms.ipynb",
           "In this model, stored in full precision, which part holds the most bits?",
           ("the embeddings", "the layers' weight matrices", "the head (a language model's output embedding)"),
           "A table of vocabulary x width numbers dwarfs the layers of a small model, which is why the LSTM era binarized "
           "embeddings first; in a large LLM the layers hold nearly all the bits, which is why the LLM era binarizes the "
           "linears and keeps embeddings and head in full precision.", _eras),
)}


def lesson(key_or_number) -> Lesson:
    """A lesson by key ("components") or number (1-7); ValueError naming the choices otherwise."""
    for les in LESSONS.values():
        if key_or_number in (les.key, les.number, str(les.number)):
            return les
    raise ValueError(f"unknown lesson {key_or_number!r}; choose one of {[f'{le.number}: {le.key}' for le in LESSONS.values()]}")
