"""Training, evaluation and safetensors checkpoints.

Training is AdamW with linear warm-up then linear or cosine decay, gradient clipping, seeded
shuffling and dropout (bit-reproducible on the same machine and thread count). Optional
knowledge distillation from a teacher (Hinton et al. 2015)::

    L = (1 - a) CE(z_s, y) + a T^2 KL(softmax(z_t / T) || softmax(z_s / T))

Losses and metrics come from :mod:`binlab.nn.objective`, so the same loop trains the classifier
(per row) and the causal language model (per token; evaluation reports perplexity).

Progress goes to a callback that receives plain dicts, so the CLI can draw a tqdm bar and the app
a Streamlit progress bar with the same code.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from binlab.data import CLASSES, EncodedSplit
from binlab.nn import objective
from binlab.nn.metric import Metric, headline, task_info
from binlab.nn.model import Classifier, ModelConfig, build
from binlab.nn.quantize import is_training_aux

Callback = Callable[[dict], None]


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` means CUDA when a GPU is there, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.06  # fraction of all steps spent warming up
    schedule: str = "linear"  # linear | cosine | constant (after warm-up)
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    distill: float = 0.0  # weight a of the KD term (needs a teacher)
    temperature: float = 2.0
    kd_form: str = "hinton"  # "hinton" (T^2 KL) or "soft_ce" (the BERT-era codes' class-averaged soft cross-entropy)
    eval_every: int = 0  # steps between validation evaluations (0: once per epoch)

    def __post_init__(self):
        if not (isinstance(self.epochs, (int, float)) and 0 < self.epochs < 1e4):
            raise ValueError(f"epochs must be a number in (0, 10000), got {self.epochs!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 65536:
            raise ValueError(f"batch_size must be a whole number in [1, 65536], got {self.batch_size!r}")
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ValueError(f"eval_every must be a whole number >= 0, got {self.eval_every!r}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if self.schedule not in ("linear", "cosine", "constant"):
            raise ValueError(f"schedule must be one of linear, cosine, constant; got {self.schedule!r}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of steps in [0, 1), got {self.warmup}")
        if not 0 <= self.distill <= 1:
            raise ValueError(f"distill (KD weight) must be in [0, 1], got {self.distill}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.kd_form not in objective.KD_FORMS:
            raise ValueError(f"kd_form must be one of {', '.join(objective.KD_FORMS)}; got {self.kd_form!r}")


#: fields added to the configs after results were first stored, with the value they had before:
#: left out of :func:`key_dict` at that value so stored baselines and rows keep their keys
KEY_DEFAULTS = {"kd_form": "hinton"}


def key_dict(cfg) -> dict:
    """``asdict(cfg)`` (nested configs included) without the :data:`KEY_DEFAULTS` fields at their
    old value: what the cache and the results store fingerprint."""
    def strip(d):
        return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items() if not (k in KEY_DEFAULTS and v == KEY_DEFAULTS[k])}
    return strip(asdict(cfg))


@dataclass
class EvalResult:
    accuracy: float  # top-1 per row (classifier) or per next token (LM)
    loss: float  # mean cross-entropy per unit
    per_class: dict[str, float]
    n: int  # rows
    seconds: float
    perplexity: float | None = None  # LM only: exp(loss)
    tokens: int | None = None  # LM only: predicted tokens

    def to_dict(self) -> dict:
        return asdict(self)

    def metric(self) -> Metric:
        """The task's headline metric of this evaluation (accuracy in percent, or perplexity), no interval."""
        info = task_info("lm" if self.perplexity is not None else "classify")
        return headline(info, self.perplexity if self.perplexity is not None else 100 * self.accuracy, rows=self.n, tokens=self.tokens)


#: rows per evaluation batch (length-sorted): on AG_NEWS (mean 54 tokens, max 128) a 1,000-row
#: slice pads to 95 % useful tokens, against 77 % with batches of 256 (0.46 s vs 0.69 s on 2 cores)
EVAL_BATCH = 64


@torch.inference_mode()
def predict(model: nn.Module, split: EncodedSplit, batch_size: int = EVAL_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Logits (n, C) and labels (n,), in length-sorted order (the order does not matter for metrics)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits, labels = [], []
    for x, y in split.batches(batch_size, device=device):
        logits.append(model(x).float().cpu())
        labels.append(y.cpu())
    model.train(was_training)
    if not logits:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def evaluate(model: nn.Module, split: EncodedSplit, batch_size: int = EVAL_BATCH) -> EvalResult:
    """Accuracy, mean cross-entropy and per-class accuracy on ``split``; for a language model,
    next-token accuracy, mean NLL per token and perplexity."""
    if len(split) == 0:
        raise ValueError("cannot evaluate on an empty split")
    if objective.task_of(model) == "lm":
        t0 = time.perf_counter()
        nll, units, hits = stats_on(model, split, batch_size)
        mean = float(nll.sum() / units.sum())
        return EvalResult(float(hits.sum() / units.sum()), mean, {}, len(split), time.perf_counter() - t0,
                          perplexity=objective.perplexity(mean), tokens=int(units.sum()))
    t0 = time.perf_counter()
    logits, labels = predict(model, split, batch_size)
    return classification_metrics(logits, labels, time.perf_counter() - t0)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, seconds: float = 0.0) -> EvalResult:
    """Accuracy, mean cross-entropy and per-class accuracy from a classifier's logits (n, C) and labels (n,)
    (what :func:`evaluate` reports; for a caller that also needs the logits, so the split is run once)."""
    pred = logits.argmax(1)
    loss = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)))
    per_class = {c: float((pred[labels == i] == i).mean()) if (labels == i).any() else float("nan") for i, c in enumerate(CLASSES)}
    return EvalResult(float((pred == labels).mean()), loss, per_class, int(len(labels)), seconds)


@torch.inference_mode()
def stats_on(model: nn.Module, batches, batch_size: int = EVAL_BATCH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row (NLL sum, units, correct units) over a split or a list of ``(x, y)`` batches, in batch
    order (:func:`binlab.nn.objective.stats_from_states`): the one evaluation loop of training, the lab and probes."""
    was_training = model.training
    model.eval()
    if isinstance(batches, EncodedSplit):
        device = next(model.parameters()).device
        batches = batches.batches(batch_size, device=device)
    out = [[], [], []]
    for x, y in batches:
        for acc, v in zip(out, objective.stats_from_states(model, model.hidden_states(x)[-1], x, y)):
            acc.append(v.double().cpu())
    model.train(was_training)
    return tuple(torch.cat(v).numpy() if v else np.zeros(0) for v in out)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    warm = int(cfg.warmup * total)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    frac = (step - warm) / max(1, total - warm)
    return cfg.lr * (1 - frac if cfg.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * frac)))


def train(
    model: nn.Module,
    train_split: EncodedSplit,
    cfg: TrainConfig = TrainConfig(),
    val_split: EncodedSplit | None = None,
    callback: Callback | None = None,
    teacher: nn.Module | None = None,
    should_stop: Callable[[], bool] | None = None,
    hidden_weight: float = 0.0,
    dad_gamma: float = 0.0,
    hidden_kind: str = "onebit",
    dmd_weight: float = 0.0,
    after_step: Callable[[torch.optim.Optimizer], None] | None = None,
) -> dict:
    """Train ``model`` in place; return the history (losses, learning rates, validation accuracy).

    ``after_step(optimizer)`` runs after every optimizer step, before the step's callback: a method that
    reads the optimizer's state (LAB's second moments) gets it there, and the loop stays generic.

    ``hidden_weight`` > 0 adds hidden-state distillation from ``teacher``
    (:func:`binlab.nn.objective.hidden_loss` of kind ``hidden_kind``: OneBit's, BiBERT's or BiT's) to the
    loss; ``dmd_weight`` > 0 adds BiBERT's direction-matching distillation on Q, K, V
    (:func:`binlab.nn.objective.dmd_loss`); ``dad_gamma`` > 0 weights the logit distillation as DB-LLM's
    deviation-aware distillation (:func:`binlab.nn.objective.kd_loss`)."""
    if (hidden_weight > 0 or dmd_weight > 0) and teacher is None:
        raise ValueError("hidden-state and direction-matching distillation need a teacher model")
    if cfg.distill > 0 and teacher is None:
        raise ValueError("TrainConfig.distill > 0 needs a teacher model")
    if len(train_split) == 0:
        raise ValueError("cannot train on an empty split")
    device = pick_device(cfg.device)
    task = objective.task_of(model)
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    steps_per_epoch = math.ceil(len(train_split) / cfg.batch_size)
    total = max(1, int(round(cfg.epochs * steps_per_epoch)))
    hist = {"step": [], "loss": [], "lr": [], "val_step": [], "val_accuracy": [], "val_loss": [], "seconds": 0.0}
    t0 = time.perf_counter()
    step, epoch = 0, 0

    def _validate():
        if val_split is None:
            return
        r = evaluate(model, val_split)
        model.train()
        hist["val_step"].append(step)
        hist["val_accuracy"].append(r.accuracy)
        hist["val_loss"].append(r.loss)
        if r.perplexity is not None:
            hist.setdefault("val_perplexity", []).append(r.perplexity)
        if callback:
            callback({"kind": "eval", "step": step, "total": total, "val_accuracy": r.accuracy, "val_loss": r.loss, "val_perplexity": r.perplexity,
                      "metric": r.metric()})

    while step < total:
        for x, y in train_split.batches(cfg.batch_size, shuffle=True, seed=cfg.seed * 1000 + epoch, device=device):
            lr = lr_at(step, total, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            if hidden_weight > 0 or dmd_weight > 0:
                with objective.HiddenCapture(model) as hs, objective.QKVCapture(model) as qs:
                    logits = model(x)
                with torch.no_grad(), objective.HiddenCapture(teacher) as ht, objective.QKVCapture(teacher) as qt:
                    t_logits = teacher(x)
            else:
                logits = model(x)
                if teacher is not None and cfg.distill > 0:
                    with torch.no_grad():
                        t_logits = teacher(x)
            if teacher is not None and cfg.distill > 0:
                loss = objective.kd_loss(logits, t_logits, x, y, task, cfg.distill, cfg.temperature, dad_gamma, cfg.kd_form)
            else:
                loss = objective.loss(logits, x, y, task)
            if hidden_weight > 0:
                loss = loss + hidden_weight * objective.hidden_loss(hs.states, ht.states, x, hidden_kind)
            if dmd_weight > 0:
                loss = loss + dmd_weight * objective.dmd_loss(qs.qkv, qt.qkv, x)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if after_step is not None:
                after_step(opt)
            step += 1
            hist["step"].append(step)
            hist["loss"].append(loss.item())
            hist["lr"].append(lr)
            if callback:
                callback({"kind": "step", "step": step, "total": total, "loss": hist["loss"][-1], "lr": lr, "epoch": epoch})
            if cfg.eval_every and step % cfg.eval_every == 0:
                _validate()
            if step >= total or (should_stop and should_stop()):
                break
        epoch += 1
        if should_stop and should_stop():
            break
        if not cfg.eval_every or step >= total:
            _validate()
    hist["seconds"] = time.perf_counter() - t0
    hist["epochs"] = step / steps_per_epoch
    model.eval()
    return hist


def estimate_seconds(model: nn.Module, train_split: EncodedSplit, cfg: TrainConfig, steps: int = 4) -> float:
    """Expected training time of ``cfg`` on ``train_split`` on this machine: a few timed steps of a copy
    (after one warm-up step), scaled to the run's step count. Shown before long runs start."""
    import copy
    from dataclasses import replace

    n = min(len(train_split), cfg.batch_size * (steps + 1))
    probe = copy.deepcopy(model)
    t = {}

    def cb(e):
        if e["kind"] == "step":
            t[e["step"]] = time.perf_counter()

    train(probe, train_split.head(n), replace(cfg, epochs=1.0, eval_every=0), callback=cb)
    done = sorted(t)
    if len(done) < 2:
        return 0.0
    per_step = (t[done[-1]] - t[done[0]]) / (len(done) - 1)
    total = int(round(cfg.epochs * math.ceil(len(train_split) / cfg.batch_size)))
    return per_step * total


# --------------------------------------------------------------------------------------------
# checkpoints: <stem>.safetensors + <stem>.json, each written atomically


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, or does not fit the model it is loaded into."""


#: checkpoints written now hash their metadata too; "binlab-checkpoint-1" files (weights hash only) still load
CHECKPOINT_FORMAT = "binlab-checkpoint-2"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _meta_sha256(payload: dict) -> str:
    """The hash of a checkpoint's config and metadata (what its .json says beside the weights' hash)."""
    body = json.dumps({"model_config": payload["model_config"], "meta": payload["meta"]}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary file in ``path``'s folder, flush it to disk, then rename it over ``path``:
    a crash or a full disk leaves the previous file (or none) and no stray temporary file."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)) or type(err).__name__ == "SafetensorError":
            raise OSError(f"could not write {path} ({err}); free some disk space or pick another folder "
                          "(BINLAB_CACHE), then run it again") from None
        raise


def save_checkpoint(model: Classifier, stem: str | Path, meta: dict | None = None) -> Path:
    """Write ``stem.safetensors`` (weights) and ``stem.json`` (config, metadata, and the hashes of both),
    each atomically; returns the json path."""
    from safetensors.torch import save_file

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    weights, info = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    # QAT-only machinery (FDA's noise module) is not part of the model
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not is_training_aux(k)}
    atomic_write(weights, lambda tmp: save_file(state, str(tmp)))
    payload = {"format": CHECKPOINT_FORMAT, "model_config": model.config.to_dict(), "meta": json.loads(json.dumps(meta or {}, default=str)),
               "sha256": _sha256(weights)}
    payload["meta_sha256"] = _meta_sha256(payload)
    atomic_write(info, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, default=str)))
    return info


def load_checkpoint(stem: str | Path, expect: ModelConfig | None = None) -> tuple[Classifier, dict]:
    """Load a checkpoint written by :func:`save_checkpoint`; raise :class:`CheckpointError` on any mismatch."""
    from safetensors.torch import load_file

    stem = Path(stem)
    weights, info = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if not weights.exists() or not info.exists():
        raise CheckpointError(f"checkpoint {stem} is incomplete: need both {weights.name} and {info.name}; train it again "
                              "(binlab train --retrain, or the Home page's button)")
    try:
        payload = json.loads(info.read_text())
        cfg = ModelConfig(**payload["model_config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint metadata {info} is damaged ({err}); delete it and train again") from err
    if payload.get("format") == CHECKPOINT_FORMAT and payload.get("meta_sha256") != _meta_sha256(payload):
        raise CheckpointError(f"the metadata in {info} does not match its hash: the file is damaged or was edited; delete "
                              f"{info.name} and {weights.name} and train again (binlab train --retrain)")
    if _sha256(weights) != payload.get("sha256"):
        raise CheckpointError(f"{weights} does not match the hash in {info.name}: the file is damaged or from another run; delete both and train again")
    if expect is not None and expect != cfg:
        diff = {k: (v, getattr(expect, k)) for k, v in cfg.to_dict().items() if getattr(expect, k) != v}
        raise CheckpointError(f"checkpoint {stem} has a different model config (saved, expected): {diff}")
    model = build(cfg)
    try:
        state = load_file(str(weights))
        model.load_state_dict(state)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"weights in {weights} do not fit the model: {err}") from err
    model.eval()
    return model, payload["meta"]
