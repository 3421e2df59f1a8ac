"""Post-training quantization (PTQ) and quantization-aware training (QAT) of a trained model.

- :func:`ptq`: binarize a trained model with no training (what the app does live).
- :func:`qat`: binarize, then fine-tune the latent weights through the straight-through
  estimators, optionally distilling from the full-precision model (logit KD, see
  :func:`binlab.nn.objective.kd_loss`). Components matched by ``freeze`` keep their weights fixed, so
  their quantized value is computed once (used for large embedding tables).

Methods with schedules hear how far QAT has come (:func:`binlab.nn.quantize.set_progress`: ReCU's
tau, FDA's noise weight) and methods that constrain their latent weights apply it after every
step (:func:`binlab.nn.quantize.post_step`: BinaryConnect's clip to [-H, H]).
"""
from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass

import torch
import torch.nn as nn

from binlab.data import EncodedSplit
from binlab.nn.quantize import QuantSpec, post_step, quantize_, quantized_modules, set_progress

from .train import Callback, TrainConfig, train


def ptq(model: nn.Module, spec: QuantSpec, inplace: bool = False, calib: EncodedSplit | None = None,
        sequential: bool = True, hessians: dict | None = None) -> nn.Module:
    """Quantize ``model`` (a copy unless ``inplace``) following ``spec``; no training.

    Methods that use data (GPTQ, PB-LLM, BiLLM ...) are calibrated on ``calib``
    (:func:`binlab.training.calibration.calibration_set`; see :func:`binlab.training.calibration.calibrate_` for
    ``sequential`` and the ``hessians`` cache)."""
    from .calibration import calibrate_, needs_calibration

    m = model if inplace else copy.deepcopy(model)
    quantize_(m, spec)
    todo = needs_calibration(m)
    if todo:
        if calib is None:
            raise ValueError(f"{todo[0]} uses {m.get_submodule(todo[0]).method.method!r}, which needs calibration data: pass "
                             "calib=binlab.training.calibration.calibration_set(splits)")
        calibrate_(m, calib, sequential=sequential, cache=hessians)
    return m.eval()


@dataclass(frozen=True)
class QATConfig:
    train: TrainConfig = TrainConfig(epochs=1, lr=5e-4, warmup=0.05, distill=0.5)
    freeze: tuple[str, ...] = ()  # fnmatch patterns over parameter names, e.g. ("embed.*",)
    hidden_distill: float = 0.0  # weight of OneBit's hidden-state distillation term (0: logits only)
    dad_gamma: float = 0.0  # DB-LLM's deviation-aware weighting of the logit distillation (0: plain KD)
    from_scratch: bool = False  # FBI-LLM: the student starts from random weights, not the teacher's
    hidden_kind: str = "onebit"  # which hidden-state term (binlab.nn.objective.HIDDEN_KINDS): OneBit's, BiBERT's or BiT's
    dmd: float = 0.0  # weight of BiBERT's direction-matching distillation on Q, K, V (0: off)

    def __post_init__(self):
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig(**self.train))
        object.__setattr__(self, "freeze", tuple(self.freeze))
        if self.hidden_distill < 0:
            raise ValueError(f"hidden_distill must be >= 0, got {self.hidden_distill}")
        if self.dad_gamma < 0:
            raise ValueError(f"dad_gamma must be >= 0, got {self.dad_gamma}")
        if self.dmd < 0:
            raise ValueError(f"dmd must be >= 0, got {self.dmd}")
        from binlab.nn.objective import HIDDEN_KINDS

        if self.hidden_kind not in HIDDEN_KINDS:
            raise ValueError(f"hidden_kind must be one of {HIDDEN_KINDS}, got {self.hidden_kind!r}")


def share_second_moments(model: nn.Module, opt: torch.optim.Optimizer) -> int:
    """Give every quantized component whose method asks for it (``wants_second_moment``: LAB) the
    optimizer's running average of its weight's squared gradients (Adam's ``exp_avg_sq``, updated in
    place by every step). Returns how many components received one."""
    n = 0
    for mod in quantized_modules(model):
        if getattr(mod.quantizer, "wants_second_moment", False):
            v = opt.state.get(mod.weight, {}).get("exp_avg_sq")
            if v is not None:
                mod.quantizer.set_second_moment(v)
                n += 1
    return n


def qat(
    teacher: nn.Module,
    spec: QuantSpec,
    train_split: EncodedSplit,
    cfg: QATConfig = QATConfig(),
    val_split: EncodedSplit | None = None,
    callback: Callback | None = None,
    should_stop=None,
    calib: EncodedSplit | None = None,
    health_every: int = 0,
    init: nn.Module | None = None,
) -> tuple[nn.Module, dict]:
    """Return ``(student, history)``: a quantized copy of ``teacher`` fine-tuned with the STE
    (methods that need data are calibrated on ``calib`` first, on the teacher's weights). With
    ``cfg.from_scratch`` the student is a freshly initialised model of the same shape (FBI-LLM);
    with ``init`` it starts from a copy of that model (the previous stage of a multi-stage recipe:
    its latent weights and whatever its quantizers learned that the new spec keeps).

    ``health_every`` > 0: every that many steps ``callback`` also gets a ``{"kind": "health"}`` event
    with :mod:`binlab.training.health`'s sign-flip ratios since the last one, the share of latent weights
    outside the estimator's range and the heads' attention entropy (on the validation rows' first batch)."""
    if cfg.from_scratch:
        from binlab.nn.model import build

        torch.manual_seed(cfg.train.seed)
        fresh = build(teacher.config).to(next(teacher.parameters()).device)
        student = ptq(fresh, spec, inplace=True, calib=calib)
    elif init is not None:
        student = ptq(init, spec, calib=calib)
    else:
        student = ptq(teacher, spec, calib=calib)
        with torch.no_grad():  # methods that start QAT from other latent weights (OneBit: 0.01 sign(W))
            for mod in quantized_modules(student):
                start = mod.quantizer.init_latent(mod.weight.detach())
                if start is not None:
                    mod.weight.copy_(start)
    for name, p in student.named_parameters():
        if any(fnmatch.fnmatchcase(name, pat) for pat in cfg.freeze):
            p.requires_grad_(False)
    set_progress(student, 0.0)
    from . import health

    probe_ids = next(iter((val_split or train_split).head(32).batches(32)))[0] if health_every else None
    last_signs = [health.signs(student)] if health_every else None

    def on_event(ev: dict):
        if ev.get("kind") == "step":
            post_step(student)  # after the optimiser step: latent-weight constraints (BinaryConnect's clip)
            set_progress(student, ev["step"] / max(ev["total"], 1))  # schedules (ReCU's tau, FDA's noise weight)
        if callback:
            callback(ev)
        if health_every and ev.get("kind") == "step" and ev["step"] % health_every == 0 and callback:
            now = health.signs(student)
            callback({"kind": "health", "step": ev["step"], "flip": health.flip_ratio(last_signs[0], now),
                      "outside_clip": health.outside_clip(student),
                      "entropy": health.attention_entropy(student, probe_ids.to(next(student.parameters()).device))})
            last_signs[0] = now

    try:
        hist = train(student, train_split, cfg.train, val_split=val_split, callback=on_event,
                     teacher=teacher if (cfg.train.distill > 0 or cfg.hidden_distill > 0 or cfg.dmd > 0) else None,
                     should_stop=should_stop, hidden_weight=cfg.hidden_distill, dad_gamma=cfg.dad_gamma,
                     hidden_kind=cfg.hidden_kind, dmd_weight=cfg.dmd, after_step=lambda opt: share_second_moments(student, opt))
    finally:
        set_progress(student, 1.0)  # evaluation and export use each method's final state
    return student.eval(), hist
