"""Multi-stage training recipes of the BERT-era fully binary (W1A1) encoders, each as its paper has it.

A :class:`Recipe` is a sequence of QAT :class:`Stage` s; each stage quantizes the previous stage's
model with its own spec (the first stage starts from the full-precision model) and distils from the
full-precision model or from the previous stage. ``ensemble`` > 1 trains that many members by
boosting (BEBERT). Every recipe's stages share the table's QAT budget: stage epochs are fractions
of it, so a multi-step recipe trains no longer than a one-step row (BEBERT's members each get
the whole budget, as in the paper; the budget column says so).

- ``bibert`` (Qin et al. 2022): BiBERT's weights (:class:`binlab.methods.BiBERTWeight`), unscaled
  sign on every linear input and on Q, K, V, Bi-Attention (:class:`binlab.methods.attention.BiAttention`),
  one stage with direction-matching distillation (:func:`binlab.nn.objective.dmd_loss`) and BiBERT's
  normalised hidden-state term on top of the logit KD.
- ``bit`` (Liu et al. 2022): BitNet/BWN weights, elastic binary activations with learned scale and
  shift (:class:`binlab.methods.activations.ElasticAct`; {0,1} for the attention probabilities and the FFN's
  second linear, +-1 elsewhere), distilled on logits (no ground-truth term) and hidden states (MSE),
  in two steps down the precision ladder W32A32 -> W1A2 -> W1A1 (each step's teacher is the previous
  step's model and the second step starts from the first step's weights, step sizes and shifts, as
  BiT's step 2 loads the W1A2 student; the W1A2 rung is the paper's multi-step distillation,
  sec. 3.3, read with the BiT code's 2-bit settings).
- ``binarybert`` (Bai et al. 2021): a ternary (TWN) model with LSQ activations, split by ternary
  weight splitting into a binary one that computes the same function
  (:class:`binlab.methods.TWS`), then fine-tuned; both steps distil logits and hidden states. Its
  code has no 1-bit activation path (the paper stops at 4 bits): the W1A1 row's LSQ 1-bit
  activations are binlab's construction and its label says so.
- ``bipft`` (Xing et al. 2024): BiT's binarization plus BiPFT's rank-1 estimators of the attention
  binarization residual (:class:`binlab.methods.attention.LowRankResidual`), fine-tuned with
  cross-entropy only, as its fine-tuning code does. BiPFT learns the estimators in a 500k-step binarized pretraining on Wikipedia and
  BookCorpus, which binlab does not do: this row measures the mechanism alone.
- ``bebert`` (Tian et al. 2023): boosting (SAMME) of BiBERT members; member m + 1 continues from
  member m on rows resampled by the boosting weights; the ensemble outputs the members'
  alpha-weighted logits (:class:`Ensemble`); its size counts every member.
- ``two-stage`` (Le et al. 2022, "Efficient Two-Stage Progressive Quantization of BERT"): weights
  first, with falling bit-width (2-bit, then 1-bit) and full-precision activations, then weights
  and activations (binlab's W1A1 activations; ``two-stage-a4``: 4-bit LSQ activations). The
  paper's exact schedule is not public; this is the scheme its abstract describes.

Where binlab differs from the papers' code (each a choice made for a 2-layer model trained on a
2-core CPU, stated so the numbers are read correctly):

- budgets: the papers fine-tune BERT-base for 5-50 epochs per GLUE task; T9 gives every recipe the
  table's QAT budget (2 epochs on scratch, 1 on minilm-l2), split across its stages;
- learned activation scales train at the weights' learning rate (BiT and BinaryBERT use a separate
  1e-4 with no weight decay); attention dropout is not applied on the quantized attention path;
- BiT's student swaps GELU for ReLU; binlab keeps GELU. The two are not the same before the {0,1}
  quantizer: GELU is negative below 0 and below ReLU up to about 2, so a pre-activation near the
  threshold alpha / 2 can land on the other side (about 5 % of N(0, 1) pre-activations at a
  typical alpha);
  BiT's word embedding centres on the global mean, binlab's ``bitnet`` per row centres per row;
- the logit term of BiBERT, BiT, BinaryBERT and BEBERT is the codes' soft cross-entropy at T = 1,
  averaged over rows and classes (:func:`binlab.nn.objective.kd_loss`, ``form="soft_ce"``); the
  other rows of T9 use binlab's ``(1 - a) CE + a T^2 KL`` at T = 2;
- BiBERT's direction-matching term and its hidden-state term leave padding positions out (its code
  pads to 128 and counts them);
- BinaryBERT keeps the width (see :class:`binlab.methods.TWS`) and runs one distillation pass per
  step with the logit and hidden-state terms together (its code runs an intermediate-layer pass
  with an attention-score MSE as well, which binlab leaves out, then a prediction pass, each for
  the full epochs);
- on ``minilm-l2`` the token embeddings stay frozen in every recipe (the preset's QAT budget), so
  BinaryBERT's split embeddings and every binarized embedding keep their initial values there;
- BEBERT: SAMME weights for a multi-class problem (BEBERT's code applies AdaBoost.R2's regression
  update to class predictions), 2 members, member 2 continuing from member 1 as in its code; the
  rows are resampled once per member (its code resamples every epoch).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn as nn

from binlab.data import EncodedSplit
from binlab.nn.quantize import MethodConfig, QuantSpec, Rule

#: the stage changes that go to the budget's TrainConfig: the logit-KD weight, temperature and form
TRAIN_FIELDS = ("distill", "temperature", "kd_form")


@dataclass(frozen=True)
class Stage:
    spec: QuantSpec
    frac: float = 1.0  # share of the table's QAT epochs
    teacher: str = "fp"  # "fp": distil from the full-precision model; "previous": from the previous stage's model
    qat: dict = field(default_factory=dict)  # changes to the budget (QATConfig fields, and the TRAIN_FIELDS of its TrainConfig)

    def __post_init__(self):
        if not 0 < self.frac <= 1:
            raise ValueError(f"Stage.frac must be in (0, 1], got {self.frac}")
        if self.teacher not in ("fp", "previous"):
            raise ValueError(f"Stage.teacher must be 'fp' or 'previous', got {self.teacher!r}")


@dataclass(frozen=True)
class Recipe:
    name: str
    paper: str
    stages: tuple[Stage, ...]
    ensemble: int = 1  # BEBERT: members trained by boosting

    @property
    def spec(self) -> QuantSpec:
        """The final model's spec (what it stores)."""
        return self.stages[-1].spec

    def key(self) -> str:
        import json

        return json.dumps({"stages": [{"spec": s.spec.to_json(), "frac": s.frac, "teacher": s.teacher,
                                       "qat": {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in sorted(s.qat.items())}}
                                      for s in self.stages], "ensemble": self.ensemble}, sort_keys=True)


def stage_budget(base, stage: Stage):
    """The stage's QAT config: the table's budget with ``frac`` of its epochs and the stage's changes."""
    changes = dict(stage.qat)
    train_changes = {k: changes.pop(k) for k in TRAIN_FIELDS if k in changes}
    cfg = replace(base, **changes)
    return replace(cfg, train=replace(cfg.train, epochs=cfg.train.epochs * stage.frac, **train_changes))


def run_stages(recipe: Recipe, teacher: nn.Module, train_split: EncodedSplit, budget, callback=None, calib=None,
               init: nn.Module | None = None) -> nn.Module:
    """Train the recipe's stages in order; return the last stage's model."""
    from .qat import qat

    model = init
    for i, stage in enumerate(recipe.stages):
        t = teacher if (stage.teacher == "fp" or model is None) else model
        cb = (lambda ev, i=i: callback({**ev, "stage": i, "stages": len(recipe.stages)})) if callback else None
        model, _ = qat(t, stage.spec, train_split, stage_budget(budget, stage), callback=cb, calib=calib, init=model)
    return model


class Ensemble(nn.Module):
    """Members' logits weighted by their boosting weights: ``z = sum_m a_m z_m / sum_m a_m``."""

    def __init__(self, members: list[nn.Module], weights: list[float]):
        super().__init__()
        if len(members) != len(weights) or not members:
            raise ValueError("an ensemble needs one weight per member and at least one member")
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        self.config = members[0].config

    @property
    def layers(self):  # the first member's layers (attention viewer, health probes)
        return self.members[0].layers

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        w = self.weights / self.weights.sum()
        return sum(wi * m(ids) for wi, m in zip(w, self.members))

    def hidden_states(self, ids):  # noqa: D401 - evaluation through the combined logits, see output()
        return [ids]

    def output(self, states, ids):
        return self(ids)


def samme_update(sample_w: np.ndarray, wrong: np.ndarray, n_classes: int) -> tuple[np.ndarray, float, float]:
    """One round of SAMME (Zhu et al. 2009, multi-class AdaBoost), as BEBERT boosts its members::

        err = sum_i w_i 1[wrong_i] / sum_i w_i,   a = log((1 - err) / err) + log(K - 1),
        w_i <- w_i exp(a 1[wrong_i]),  normalised

    Returns (new weights, a, err). ``err`` is clipped to [1e-10, 1 - 1e-10]."""
    w = sample_w / sample_w.sum()
    err = float(np.clip((w * wrong).sum(), 1e-10, 1 - 1e-10))
    a = math.log((1 - err) / err) + math.log(n_classes - 1)
    nw = w * np.exp(a * wrong)
    return nw / nw.sum(), a, err


def per_row_wrong(model: nn.Module, split: EncodedSplit) -> np.ndarray:
    """1 where the model is wrong on row i of ``split`` (in the split's order)."""
    from .train import predict

    logits, labels = predict(model, split)
    order = np.argsort(split.lengths, kind="stable")  # predict's batches follow this order
    wrong = np.empty(len(split), dtype=np.float64)
    wrong[order] = (logits.argmax(1) != labels).astype(np.float64)
    return wrong


def run(recipe: Recipe, teacher: nn.Module, train_split: EncodedSplit, budget, callback=None, calib=None, seed: int = 0) -> nn.Module:
    """The recipe's final model (an :class:`Ensemble` when ``recipe.ensemble`` > 1)."""
    if recipe.ensemble == 1:
        return run_stages(recipe, teacher, train_split, budget, callback, calib)
    members, alphas = [], []
    w = np.full(len(train_split), 1.0 / len(train_split))
    rng = np.random.default_rng(seed)
    split, prev = train_split, None
    for m in range(recipe.ensemble):
        cb = (lambda ev, m=m: callback({**ev, "member": m, "members": recipe.ensemble})) if callback else None
        prev = run_stages(recipe, teacher, split, budget, cb, calib, init=prev)
        w, a, _ = samme_update(w, per_row_wrong(prev, train_split), teacher.config.n_classes)
        members.append(prev)
        alphas.append(a)
        split = train_split.subset(rng.choice(len(train_split), size=len(train_split), p=w))  # the next member's rows
    return Ensemble(members, alphas).eval()


# ------------------------------------------------------------------------------------------------
# the recipes


def _r(target: str, method: str, act: str | None = None, **options) -> Rule:
    return Rule(target, MethodConfig(method, options=options, act=act))


def bibert_spec() -> QuantSpec:
    return QuantSpec((_r("encoder", "bibert", "sign_unscaled"), _r("embed.token", "bibert")),
                     attn_probs="bibert", attn_qkv="sign_unscaled")


def bit_spec(bits: int = 1) -> QuantSpec:
    s, u = ("elastic", "elastic01") if bits == 1 else (f"elastic{bits}", f"elastic01_{bits}")
    return QuantSpec((_r("encoder", "bitnet", s), _r("layers.*.ffn.down", "bitnet", u), _r("embed.token", "bitnet", per_channel=True)),
                     attn_probs=u, attn_qkv=s)


def binarybert_spec(weight: str, bits: int) -> QuantSpec:
    s, u = f"lsq{bits}", f"lsq01_{bits}"
    return QuantSpec((_r("encoder", weight, s), _r("layers.*.ffn.down", weight, u), _r("embed.token", weight, per_channel=True)),
                     attn_probs=u, attn_qkv=s)


def lab_w1a1(method: str = "xnor") -> QuantSpec:
    """binlab's W1A1 (the T5/T7 row): sign inputs with a per-token scale, {0,1} FFN-down inputs and attention, bucket embeddings."""
    return QuantSpec((_r("encoder", method, "sign"), _r("layers.*.ffn.down", method, "binary01"), _r("embeddings", "bucket")),
                     attn_probs="binary01")


def lab_w1a4(method: str = "xnor") -> QuantSpec:
    """binlab's W1A1 layout with 4-bit LSQ inputs, Q/K/V and attention instead of binary ones."""
    return QuantSpec((_r("encoder", method, "lsq4"), _r("layers.*.ffn.down", method, "lsq01_4"), _r("embeddings", "bucket")),
                     attn_probs="lsq01_4", attn_qkv="lsq4")


#: the BERT-era codes' logit term: TinyBERT's class-averaged soft cross-entropy at T = 1
SOFT_CE = {"kd_form": "soft_ce", "temperature": 1.0}
BIBERT_LOSS = {"dmd": 1.0, "hidden_distill": 1.0, "hidden_kind": "bibert", **SOFT_CE}
BIT_LOSS = {"hidden_distill": 1.0, "hidden_kind": "mse", **SOFT_CE}


def recipes() -> dict[str, Recipe]:
    two_w = QuantSpec((_r("encoder", "uniform", bits=2), _r("embeddings", "bucket")))
    one_w = QuantSpec((_r("encoder", "xnor"), _r("embeddings", "bucket")))
    out = [
        Recipe("bibert", "Qin et al. 2022, BiBERT (arXiv 2203.06390)", (Stage(bibert_spec(), 1.0, "fp", BIBERT_LOSS),)),
        Recipe("bit", "Liu et al. 2022, BiT (arXiv 2205.13016)", (
            Stage(bit_spec(2), 0.5, "fp", {**BIT_LOSS, "distill": 1.0}),
            Stage(bit_spec(1), 0.5, "previous", {**BIT_LOSS, "distill": 1.0}))),
        Recipe("bit-1step", "Liu et al. 2022, BiT, one step W32A32 -> W1A1 (ablation)", (
            Stage(bit_spec(1), 1.0, "fp", {**BIT_LOSS, "distill": 1.0}),)),
        Recipe("binarybert", "Bai et al. 2021, BinaryBERT (arXiv 2012.15701)", (
            Stage(binarybert_spec("twn", 1), 0.5, "fp", {**BIT_LOSS, "distill": 1.0}),
            Stage(binarybert_spec("binarybert", 1), 0.5, "fp", {**BIT_LOSS, "distill": 1.0}))),
        Recipe("binarybert-a4", "Bai et al. 2021, BinaryBERT at W1A4", (
            Stage(binarybert_spec("twn", 4), 0.5, "fp", {**BIT_LOSS, "distill": 1.0}),
            Stage(binarybert_spec("binarybert", 4), 0.5, "fp", {**BIT_LOSS, "distill": 1.0}))),
        Recipe("bipft", "Xing et al. 2024, BiPFT (arXiv 2312.08937): BiT-style binarization + rank-1 attention residual estimators, "
                        "no binarized pretraining", (Stage(replace(bit_spec(1), attn_residual=1), 1.0, "fp", {"distill": 0.0}),)),
        Recipe("bebert", "Tian et al. 2023, BEBERT (arXiv 2210.15976): 2 BiBERT members by boosting",
               (Stage(bibert_spec(), 1.0, "fp", BIBERT_LOSS),), ensemble=2),
        Recipe("two-stage", "Le et al. 2022, two-stage progressive quantization (ETSPQ-style)", (
            Stage(two_w, 1 / 3), Stage(one_w, 1 / 3), Stage(lab_w1a1("xnor"), 1 / 3))),
        Recipe("two-stage-a4", "Le et al. 2022, two-stage progressive quantization (ETSPQ-style) at W1A4", (
            Stage(two_w, 1 / 3), Stage(one_w, 1 / 3), Stage(lab_w1a4("xnor"), 1 / 3))),
    ]
    return {r.name: r for r in out}


RECIPES: dict[str, Recipe] = recipes()
