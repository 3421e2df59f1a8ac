"""Named presets (data + model + training settings) and the on-disk cache of trained baselines.

- ``tiny``: seconds on a laptop; for tests, the app's smoke tests and notebooks' fast mode.
- ``scratch``: the seed's setup, 2 encoder layers trained from scratch with a WordPiece
  vocabulary learned on the train split.
- ``minilm-l2``: the embeddings and first 2 layers of all-MiniLM-L6-v2, fine-tuned.
- ``lm``: a causal language model (2 decoder layers) trained from scratch on the AG_NEWS train
  text (title and description), evaluated by perplexity on the test text; ``tiny-lm`` is its
  seconds-long version for tests.

:func:`resolve` turns a preset's name into one :class:`ResolvedPreset` (its settings, its data, the
model config they give, where its baseline is cached, its QAT budget), looked up once; callers pass
that object down instead of the name.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from .data import DataConfig, Splits, TokenizerConfig, cache_dir, fingerprint, load_splits
from .nn.metric import Metric, TaskInfo, headline, task_info
from .nn.model import Classifier, ModelConfig, build
from .training.qat import QATConfig
from .training.train import CheckpointError, TrainConfig, estimate_seconds, evaluate, key_dict, load_checkpoint, save_checkpoint, train


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    data: DataConfig
    model: ModelConfig  # vocab_size is filled from the tokenizer for wordpiece presets
    train: TrainConfig  # how the fp32 baseline is trained
    qat: QATConfig  # the QAT budget from that baseline: the tables, the Train page, the notebooks and the CLI use this one
    pretrained: bool = False
    probe_rows: int = 256  # validation rows a loss-landscape probe evaluates on (the Loss landscape page's default)
    probe_grid: int = 11  # points per axis of a 2-D landscape slice (the page's default)
    # validation rows of the Binarize page's first look (binlab.lab.live.LiveLab.glance); None: the task's
    # (binlab.nn.metric.TASKS). A model that costs more per row gets fewer, so first numbers still come fast.
    glance_rows: int | None = None

    def __post_init__(self):
        if self.glance_rows is not None and self.glance_rows < 1:
            raise ValueError(f"preset {self.name!r}: glance_rows must be a positive row count, got {self.glance_rows}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def task(self) -> TaskInfo:
        """What the preset's model is measured by and can do (:mod:`binlab.nn.metric`)."""
        return task_info(self.model.task)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "tiny",
        "1 small layer, 2k training rows: for tests and quick demos (seconds).",
        DataConfig(tokenizer=TokenizerConfig("wordpiece", vocab_size=2000), max_len=64, val_size=500, train_size=2000, test_size=1000),
        ModelConfig(max_len=64, d_model=32, n_heads=2, d_ff=64, n_layers=1, dropout=0.0),
        TrainConfig(epochs=3, batch_size=32, lr=3e-3),
        QATConfig(TrainConfig(epochs=2, lr=3e-3, warmup=0.05, distill=0.5)),
        probe_rows=128, probe_grid=7,
    ),
    "scratch": Preset(
        "scratch",
        "The student project's setup: 2 encoder layers (d=128) trained from scratch with a 16k WordPiece vocabulary.",
        DataConfig(tokenizer=TokenizerConfig("wordpiece", vocab_size=16000)),
        ModelConfig(d_model=128, n_heads=4, d_ff=512, n_layers=2, dropout=0.1),
        TrainConfig(epochs=6, batch_size=32, lr=1e-3),
        # chosen on validation (grids/select-scratch.yaml -> docs/results/select-scratch.md): the best of lr {2.5e-4, 5e-4, 1e-3}
        # x distillation {0.5, 1.0} for T7's best row at 2 epochs; tables run before that choice say lr 0.0005, distillation 0.5
        QATConfig(TrainConfig(epochs=2, lr=1e-3, warmup=0.05, distill=1.0)),
    ),
    "lm": Preset(
        "lm",
        "Causal LM: 2 decoder layers (d=128) trained from scratch on AG_NEWS text with an 8k WordPiece vocabulary; perplexity.",
        DataConfig(tokenizer=TokenizerConfig("wordpiece", vocab_size=8000), max_len=64),
        ModelConfig(task="lm", max_len=64, d_model=128, n_heads=4, d_ff=512, n_layers=2, dropout=0.1),
        TrainConfig(epochs=3, batch_size=32, lr=2e-3, schedule="cosine"),
        QATConfig(TrainConfig(epochs=0.5, lr=5e-4, warmup=0.05, distill=0.5)),
    ),
    "tiny-lm": Preset(
        "tiny-lm",
        "1 small decoder layer, 2k training rows: the LM track's test preset (seconds).",
        DataConfig(tokenizer=TokenizerConfig("wordpiece", vocab_size=1000), max_len=32, val_size=300, train_size=2000, test_size=300),
        ModelConfig(task="lm", max_len=32, d_model=32, n_heads=2, d_ff=64, n_layers=1, dropout=0.0),
        TrainConfig(epochs=3, batch_size=32, lr=3e-3),
        QATConfig(TrainConfig(epochs=1, lr=3e-3, warmup=0.05, distill=0.5)),
    ),
    "lstm": Preset(
        "lstm",
        "The LSTM era: a 2-layer LSTM language model (d=256) on the lm preset's text and tokenizer; perplexity.",
        DataConfig(tokenizer=TokenizerConfig("wordpiece", vocab_size=8000), max_len=64),
        ModelConfig(task="lm", arch="lstm", max_len=64, d_model=256, n_heads=1, d_ff=256, n_layers=2, dropout=0.2),
        TrainConfig(epochs=3, batch_size=32, lr=0.02, schedule="cosine"),
        QATConfig(TrainConfig(epochs=0.5, lr=5e-4, warmup=0.05, distill=0.5)),
    ),
    "tiny-lstm": Preset(
        "tiny-lstm",
        "1 small LSTM layer, 2k training rows: the LSTM track's test preset (seconds).",
        DataConfig(tokenizer=TokenizerConfig("wordpiece", vocab_size=1000), max_len=32, val_size=300, train_size=2000, test_size=300),
        ModelConfig(task="lm", arch="lstm", max_len=32, d_model=32, n_heads=1, d_ff=32, n_layers=1, dropout=0.0),
        TrainConfig(epochs=3, batch_size=32, lr=3e-3),
        QATConfig(TrainConfig(epochs=1, lr=3e-3, warmup=0.05, distill=0.5)),
    ),
    "minilm-l2": Preset(
        "minilm-l2",
        "Embeddings + first 2 layers of all-MiniLM-L6-v2 (d=384, 12 heads), fine-tuned.",
        DataConfig(tokenizer=TokenizerConfig("bert")),
        ModelConfig(),  # replaced by the MiniLM config at build time
        TrainConfig(epochs=2, batch_size=32, lr=1e-4, warmup=0.1),
        QATConfig(TrainConfig(epochs=1, lr=2e-4, warmup=0.05, distill=0.5), freeze=("embed.token.*",)),
        pretrained=True,
        glance_rows=120,  # 200 rows took 0.71 s in batches of 64 (docs/results/bench-live-loop-minilm-l2.md); 120 take 0.45 s in the lab's batches of 32 (bench-live-loop-minilm-l2-batch.md)
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def load_data(preset: str | Preset, source: str | None = None, **overrides) -> Splits:
    """Encoded train/val/test splits for a preset (``overrides`` replace DataConfig fields)."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    return load_splits(replace(p.data, source=source, **overrides))


def model_config(p: Preset, splits: Splits) -> ModelConfig:
    if p.pretrained:
        from .nn.pretrained import minilm_config

        return minilm_config(n_layers=2, max_len=p.data.max_len, dropout=p.model.dropout)
    return replace(p.model, vocab_size=splits.vocab_size, max_len=p.data.max_len)


def build_model(p: Preset, splits: Splits, seed: int = 0) -> Classifier:
    cfg = model_config(p, splits)
    if p.pretrained:
        from .nn.pretrained import load_minilm

        return load_minilm(cfg, seed=seed)
    torch.manual_seed(seed)
    return build(cfg)


def baseline_stem(p: Preset, splits: Splits, train_cfg: TrainConfig) -> Path:
    key = fingerprint([p.name, model_config(p, splits).fingerprint_dict(), key_dict(train_cfg), fingerprint(splits.tokenizer.to_str()),
                        int(splits.train.ids.sum()), len(splits.train), len(splits.val)])
    return cache_dir() / "models" / f"{p.name}-{key}"


def cached_baseline(preset: str | Preset, splits: Splits, train_cfg: TrainConfig | None = None) -> tuple[Classifier, dict] | None:
    """The cached full-precision baseline for these settings, or None when none is trained yet.
    A checkpoint that exists but is damaged raises :class:`~binlab.training.train.CheckpointError` (with what
    is wrong), so a caller can say so instead of silently training again."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    stem = baseline_stem(p, splits, train_cfg or p.train)
    if not stem.with_suffix(".safetensors").exists() and not stem.with_suffix(".json").exists():
        return None
    return load_checkpoint(stem, expect=model_config(p, splits))


def get_baseline(
    preset: str | Preset,
    splits: Splits,
    train_cfg: TrainConfig | None = None,
    callback: Callable[[dict], None] | None = None,
    retrain: bool = False,
) -> tuple[Classifier, dict]:
    """Load the cached baseline or train it once and cache it (safetensors + JSON, atomic writes)."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    cfg = train_cfg or p.train
    if not retrain:
        try:
            hit = cached_baseline(p, splits, cfg)
        except CheckpointError as err:
            import warnings

            warnings.warn(f"{err}; training the baseline again", stacklevel=2)
            hit = None
        if hit is not None:
            return hit
    model = build_model(p, splits, seed=cfg.seed)
    hist = train(model, splits.train, cfg, val_split=splits.val, callback=callback)
    model.cpu().eval()
    val = evaluate(model, splits.val)
    meta = {"preset": p.name, "train": asdict(cfg), "history": {k: hist[k] for k in ("val_accuracy", "seconds", "epochs")},
            "loss_curve": hist["loss"][:: max(1, len(hist["loss"]) // 500)], "val_accuracy": val.accuracy}
    if val.perplexity is not None:
        meta["val_perplexity"] = val.perplexity
    save_checkpoint(model, baseline_stem(p, splits, cfg), meta)
    return model, meta


@dataclass
class ResolvedPreset:
    """A preset resolved once: its settings, its encoded data, the model config they give and its
    baseline's training budget. Every question about the preset (its cached baseline, a fresh model,
    its QAT budget, what it measures) is asked of this object, not of the name again."""
    preset: Preset
    splits: Splits
    source: str | None = None
    train_cfg: TrainConfig | None = None  # the baseline's budget (None: the preset's)

    def __post_init__(self):
        self.train_cfg = self.train_cfg or self.preset.train
        self.model_config = model_config(self.preset, self.splits)

    @property
    def name(self) -> str:
        return self.preset.name

    @property
    def qat(self):
        """The preset's QAT budget (:class:`binlab.training.qat.QATConfig`): the one the tables ran with."""
        return self.preset.qat

    @property
    def task(self) -> TaskInfo:
        return self.preset.task

    @property
    def stem(self) -> Path:
        """Where the baseline's checkpoint is cached (without suffix)."""
        return baseline_stem(self.preset, self.splits, self.train_cfg)

    def build_model(self, seed: int | None = None) -> Classifier:
        """A fresh (untrained, or MiniLM-initialised) model of this preset."""
        return build_model(self.preset, self.splits, seed=self.train_cfg.seed if seed is None else seed)

    def cached_baseline(self) -> tuple[Classifier, dict] | None:
        """The cached baseline, or None (a damaged checkpoint raises :class:`~binlab.training.train.CheckpointError`)."""
        return cached_baseline(self.preset, self.splits, self.train_cfg)

    def baseline(self, callback: Callable[[dict], None] | None = None, retrain: bool = False) -> tuple[Classifier, dict]:
        """The cached baseline, trained once when there is none (:func:`get_baseline`)."""
        return get_baseline(self.preset, self.splits, self.train_cfg, callback=callback, retrain=retrain)

    def baseline_metric(self, meta: dict) -> Metric:
        """The cached baseline's validation number (from its checkpoint's record) as the task's headline metric."""
        value = meta.get("val_perplexity") if self.task.metric == "perplexity" else 100 * meta["val_accuracy"]
        return headline(self.task, value, rows=len(self.splits.val))

    def estimate_seconds(self) -> float:
        """Expected seconds to train the baseline on this machine (a few timed steps)."""
        return estimate_seconds(self.build_model(), self.splits.train, self.train_cfg)


def resolve(preset: str | Preset, source: str | None = None, train_cfg: TrainConfig | None = None, **data_overrides) -> ResolvedPreset:
    """Look the preset up once and load its data (``data_overrides`` replace DataConfig fields, e.g.
    ``train_size``): the :class:`ResolvedPreset` every later step uses."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    return ResolvedPreset(p, load_data(p, source=source, **data_overrides), source, train_cfg)
