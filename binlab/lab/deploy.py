"""The Deploy page's ready-made models: each of :func:`binlab.runtime.export.ready_specs` trained once
with the preset's QAT budget (from the cached fp32 baseline, with distillation, as the tables train),
written packed, and cached on disk, so a learner exports a model that classifies as well as QAT makes
it, not PTQ's first guess."""
from __future__ import annotations

from pathlib import Path

from binlab.data import cache_dir, fingerprint
from binlab.presets import Preset, baseline_stem, get_preset
from binlab.runtime.export import ready_specs, save_packed
from binlab.training.calibration import calibration_set
from binlab.training.qat import qat
from binlab.training.train import key_dict


def ready_path(preset: str | Preset, splits, name: str) -> Path:
    """Where the ready model ``name`` of this preset and data is cached (it may not exist yet)."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    specs = ready_specs()
    if name not in specs:
        raise ValueError(f"unknown ready model {name!r}; choose one of {list(specs)}")
    key = fingerprint([baseline_stem(p, splits, p.train).name, specs[name].to_json(), key_dict(p.qat.train), list(p.qat.freeze)])
    return cache_dir() / "exports" / f"{p.name}-ready-{key}.safetensors"


def ready_packed(preset: str | Preset, splits, baseline, name: str, callback=None) -> Path:
    """The packed file of the ready model ``name``: trained (QAT, ``callback`` gets the progress
    events) and written the first time, read from the cache afterwards."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    path = ready_path(p, splits, name)
    if not path.exists():
        model, _ = qat(baseline, ready_specs()[name], splits.train, p.qat, val_split=splits.val, calib=calibration_set(splits),
                       callback=callback)
        save_packed(model, path, tokenizer=splits.tokenizer, preset=p.name)
    return path
