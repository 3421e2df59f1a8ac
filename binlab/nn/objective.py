"""The one place that knows what a model's output means: losses and metrics for both tasks.

Every loop in binlab (training, evaluation, the live lab, landscape probes, calibration) asks
this module for the loss of a batch, so a classifier and a language model share them all.

- ``classify``: logits (B, C) against labels (B,); a row is one unit; accuracy is top-1.
- ``lm``: logits (B, T, V); position t predicts token t+1 of the same row; every non-padding
  target is a unit. The loss is the mean negative log-likelihood per token and
  ``perplexity = exp(loss)`` (Jelinek et al. 1977); "accuracy" is next-token top-1.

:func:`row_stats` returns per-row sums (negative log-likelihood, units, correct units), from
which any metric on any subset of rows is exact -- the paired intervals of :mod:`binlab.experiments.stats`
resample rows.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from binlab.data import PAD_ID


def task_of(model: nn.Module) -> str:
    """``"classify"`` or ``"lm"`` (from the model's config)."""
    return getattr(getattr(model, "config", None), "task", "classify")


def _lm_targets(logits: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits predicting a token (B, T-1, V), their targets (B, T-1)) -- padding targets are PAD_ID."""
    return logits[:, :-1], ids[:, 1:]


def row_stats(logits: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: summed negative log-likelihood, number of units, number of correct units (all (B,) float)."""
    if task == "lm":
        lg, tgt = _lm_targets(logits, ids)
        valid = tgt != PAD_ID
        nll = F.cross_entropy(lg.reshape(-1, lg.shape[-1]).float(), tgt.reshape(-1), reduction="none", ignore_index=PAD_ID).view(tgt.shape)
        hit = (lg.argmax(-1) == tgt) & valid
        return nll.sum(1), valid.sum(1).to(nll.dtype), hit.sum(1).to(nll.dtype)
    nll = F.cross_entropy(logits.float(), labels, reduction="none")
    return nll, torch.ones_like(nll), (logits.argmax(-1) == labels).to(nll.dtype)


def lm_row_stats_from_states(head: nn.Module, states: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`row_stats` of a language model from its last token states (B, T, d) and its head, for
    evaluation: the head runs only at positions that predict a real token, and the NLL comes from
    one max / log-sum-exp pass, ``nll = logsumexp(z) - z_target`` (no full log-softmax is stored).
    Equal to ``row_stats(head(states), ...)`` up to float rounding (tested)."""
    tgt = ids[:, 1:]
    valid = tgt != PAD_ID
    z = head(states[:, :-1][valid])  # (N, V): predicting positions only
    t = tgt[valid]
    mx = z.max(-1).values
    lse = mx + (z - mx[:, None]).exp_().sum(-1).log_()
    pick = z.gather(-1, t[:, None])[:, 0]
    row = valid.nonzero()[:, 0]
    B = ids.shape[0]
    nll = torch.zeros(B, dtype=z.dtype, device=z.device).index_add_(0, row, lse - pick)
    hits = torch.zeros(B, dtype=z.dtype, device=z.device).index_add_(0, row, (pick >= mx).to(z.dtype))
    return nll, valid.sum(1).to(z.dtype), hits


def stats_from_states(model: nn.Module, states: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`row_stats` from the last layer's token states: evaluation's one path for both tasks
    (a language model through :func:`lm_row_stats_from_states`)."""
    if task_of(model) == "lm":
        return lm_row_stats_from_states(model.head, states, ids)
    return row_stats(model.output(states, ids), ids, labels, "classify")


def loss(logits: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """Mean cross-entropy per unit (row or token): the training loss."""
    if task == "lm":
        lg, tgt = _lm_targets(logits, ids)
        return F.cross_entropy(lg.reshape(-1, lg.shape[-1]), tgt.reshape(-1), ignore_index=PAD_ID)
    return F.cross_entropy(logits, labels)


#: forms of the logit-distillation term (:func:`kd_loss`)
KD_FORMS = ("hinton", "soft_ce")


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor, task: str, alpha: float, T: float,
            dad_gamma: float = 0.0, form: str = "hinton") -> torch.Tensor:
    """Hinton et al. 2015: ``(1 - a) CE(z_s, y) + a T^2 KL(softmax(z_t / T) || softmax(z_s / T))``, per unit.

    ``form="soft_ce"``: the BERT-era codes' term (TinyBERT's ``soft_cross_entropy``, used by BiBERT,
    BiT and BinaryBERT at ``T = 1``): ``(1 - a) CE + a mean_{n,c} [-softmax(z_t/T)_c log softmax(z_s/T)_c]``,
    the mean taken over rows *and classes* (so it weighs 1/C of the per-row cross-entropy) and no
    ``T^2`` factor.

    For a language model the KL is taken at every position that predicts a real token (token-level
    distillation from the full-precision model, as in FBI-LLM's autoregressive distillation and
    OneBit's logit term). With ``a = 1`` and ``T = 1`` it is FBI-LLM's loss (cross-entropy against
    the teacher's distribution, up to the teacher's constant entropy).

    ``dad_gamma > 0``: DB-LLM's deviation-aware distillation -- each unit's KL weighted by
    ``(H(p_t) H(p_s))^gamma`` (the entropies of teacher and student, detached, normalised to mean 1),
    so ambiguous tokens count more (binlab's reading of the paper's description)."""
    ce = loss(student, ids, labels, task)
    if alpha == 0:
        return ce
    if task == "lm":
        s, tgt = _lm_targets(student, ids)
        t = teacher[:, :-1]
        valid = tgt != PAD_ID
        s, t = s[valid], t[valid]
    else:
        s, t = student, teacher
    ls, lt = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
    if form == "soft_ce":
        return (1 - alpha) * ce + alpha * (-(lt.exp() * ls)).mean()
    if form != "hinton":
        raise ValueError(f"unknown distillation form {form!r}; choose one of {', '.join(KD_FORMS)}")
    if dad_gamma > 0:
        per = (lt.exp() * (lt - ls)).sum(-1)
        with torch.no_grad():
            ent = lambda lp: -(lp.exp() * lp).sum(-1)  # noqa: E731
            w = (ent(lt) * ent(ls)).clamp_min(1e-12) ** dad_gamma
            w = w / w.mean()
        kl = (w * per).mean()
    else:
        kl = F.kl_div(ls, lt, log_target=True, reduction="batchmean")
    return (1 - alpha) * ce + alpha * T * T * kl


class HiddenCapture:
    """Records the token states after the embeddings and after each layer during a forward pass
    (forward hooks, so the model computes them once)."""

    def __init__(self, model: nn.Module):
        self.states: list[torch.Tensor] = []
        mods = [model.embed] + list(model.layers)
        self.handles = [m.register_forward_hook(lambda _m, _i, out: self.states.append(out)) for m in mods]

    def __enter__(self):
        self.states.clear()
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


HIDDEN_KINDS = ("onebit", "bibert", "mse")


def hidden_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], ids: torch.Tensor, kind: str = "onebit") -> torch.Tensor:
    """Hidden-state distillation over the embedding output and the layers' outputs, non-padding tokens only.

    - ``onebit`` (Xu et al. 2024, eq. 8): ``sum_l mean_tokens || h_l^T / ||h_l^T|| - h_l^S / ||h_l^S|| ||^2``
      (per-token normalisation) over every state but the last (whose output the logit term covers).
    - ``bibert`` (``htqin/BiBERT``'s ``--intermediate_distill``): ``sum_l || H_l^S / ||H_l^S||_F - H_l^T / ||H_l^T||_F ||_F``
      over every state, each normalised as a whole tensor, not squared.
    - ``mse`` (BiT, Liu et al. 2022, sec. 3.3): ``sum_l mean (h_l^S - h_l^T)^2`` over every state.
    """
    if kind not in HIDDEN_KINDS:
        raise ValueError(f"hidden distillation kind must be one of {HIDDEN_KINDS}, got {kind!r}")
    valid = ids != PAD_ID
    total = student[0].new_zeros(())
    pairs = list(zip(student[:-1], teacher[:-1])) if kind == "onebit" else list(zip(student, teacher))
    for hs, ht in pairs:
        a, b = hs[valid], ht[valid].detach()
        if kind == "onebit":
            d = F.normalize(a, dim=-1) - F.normalize(b, dim=-1)
            total = total + (d**2).sum(-1).mean()
        elif kind == "bibert":
            total = total + torch.linalg.vector_norm(a / torch.linalg.vector_norm(a).clamp_min(1e-12)
                                                     - b / torch.linalg.vector_norm(b).clamp_min(1e-12))
        else:
            total = total + F.mse_loss(a, b)
    return total


class QKVCapture:
    """Records each layer's full-precision (q, k, v) per head during a forward pass (BiBERT's DMD)."""

    def __init__(self, model: nn.Module):
        self.attns = [layer.attn for layer in model.layers]
        self.qkv: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __enter__(self):
        for a in self.attns:
            a.capture = []
        return self

    def __exit__(self, *exc):
        self.qkv = [a.capture[-1] for a in self.attns if a.capture]
        for a in self.attns:
            a.capture = None


def dmd_loss(student: list[tuple], teacher: list[tuple], ids: torch.Tensor) -> torch.Tensor:
    """BiBERT's direction-matching distillation (Qin et al. 2022, sec. 3.3, eqs. 13-14): for each
    layer and F in {Q, K, V} (full precision, per head), the similarity matrix ``P_F = F F^T``
    (B, h, T, T), and::

        l_DMD = sum_l sum_F || P_F^S / ||P_F^S|| - P_F^T / ||P_F^T|| ||

    with Frobenius norms over the whole tensor (``htqin/BiBERT``: not squared, not averaged). binlab
    zeroes the rows and columns of padding tokens (BiBERT's code does not mask them)."""
    valid = (ids != PAD_ID).to(student[0][0].dtype)
    m = valid[:, None, :, None] * valid[:, None, None, :]
    total = student[0][0].new_zeros(())
    for fs, ft in zip(student, teacher):
        for a, b in zip(fs, ft):
            ps, pt = (a @ a.transpose(-2, -1)) * m, (b.detach() @ b.detach().transpose(-2, -1)) * m
            total = total + torch.linalg.vector_norm(ps / torch.linalg.vector_norm(ps).clamp_min(1e-12)
                                                     - pt / torch.linalg.vector_norm(pt).clamp_min(1e-12))
    return total


def perplexity(mean_nll: float) -> float:
    """exp of the mean negative log-likelihood per token (inf when it overflows)."""
    return math.exp(mean_nll) if mean_nll < 700 else float("inf")
