"""Named presets (data + model + training settings) and the on-disk cache of trained baselines.

- ``tiny``: seconds on a laptop; for tests, the app's smoke tests and notebooks' fast mode.
- ``scratch``: the seed's setup, 2 encoder layers trained from scratch with a WordPiece
  vocabulary learned on the train split.
- ``minilm-l2``: the embeddings and first 2 layers of all-MiniLM-L6-v2, fine-tuned.
- ``lm``: a causal language model (2 decoder layers) trained from scratch on the AG_NEWS train
  text (title and description), evaluated by perplexity on the test text; ``tiny-lm`` is its
  seconds-long version for tests.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from .data import DataConfig, Splits, TokenizerConfig, cache_dir, load_splits, fingerprint
from .nn.model import Classifier, ModelConfig, build
from .training.qat import QATConfig
from .training.train import CheckpointError, TrainConfig, evaluate, load_checkpoint, save_checkpoint, train


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    data: DataConfig
    model: ModelConfig  # vocab_size is filled from the tokenizer for wordpiece presets
    train: TrainConfig  # how the fp32 baseline is trained
    qat: QATConfig  # the QAT budget from that baseline: the tables, the Train page, the notebooks and the CLI use this one
    pretrained: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "tiny",
        "1 small layer, 2k training rows: for tests and quick demos (seconds).",
        DataConfig(tokenizer=TokenizerConfig("wordpiece", vocab_size=2000), max_len=64, val_size=500, train_size=2000, test_size=1000),
        ModelConfig(max_len=64, d_model=32, n_heads=2, d_ff=64, n_layers=1, dropout=0.0),
        TrainConfig(epochs=3, batch_size=32, lr=3e-3),
        QATConfig(TrainConfig(epochs=2, lr=3e-3, warmup=0.05, distill=0.5)),
    ),
    "scratch": Preset(
        "scratch",
        "The seed's setup: 2 encoder layers (d=128) trained from scratch with a 16k WordPiece vocabulary.",
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
    "minilm-l2": Preset(
        "minilm-l2",
        "Embeddings + first 2 layers of all-MiniLM-L6-v2 (d=384, 12 heads), fine-tuned.",
        DataConfig(tokenizer=TokenizerConfig("bert")),
        ModelConfig(),  # replaced by the MiniLM config at build time
        TrainConfig(epochs=2, batch_size=32, lr=1e-4, warmup=0.1),
        QATConfig(TrainConfig(epochs=1, lr=2e-4, warmup=0.05, distill=0.5), freeze=("embed.token.*",)),
        pretrained=True,
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
    key = fingerprint([p.name, model_config(p, splits).fingerprint_dict(), asdict(train_cfg), fingerprint(splits.tokenizer.to_str()),
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
