from dataclasses import replace

import pytest
import torch

from binlab.presets import build_model, get_baseline, get_preset, load_data
from binlab.training.train import CheckpointError, TrainConfig, evaluate, load_checkpoint, lr_at, save_checkpoint, train

FAST = TrainConfig(epochs=1, batch_size=32, lr=3e-3)


def test_training_is_deterministic(tiny_splits):
    p = get_preset("tiny")
    a, b = build_model(p, tiny_splits, seed=0), build_model(p, tiny_splits, seed=0)
    ha = train(a, tiny_splits.train, FAST)
    hb = train(b, tiny_splits.train, FAST)
    assert ha["loss"] == hb["loss"]
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), n


def test_training_learns_fixture(tiny_splits):
    model = build_model(get_preset("tiny"), tiny_splits)
    before = evaluate(model, tiny_splits.test).accuracy
    events = []
    hist = train(model, tiny_splits.train, replace(FAST, epochs=4), val_split=tiny_splits.val, callback=events.append)
    after = evaluate(model, tiny_splits.test)
    assert after.accuracy > 0.8 > before + 0.2
    assert hist["loss"][-1] < hist["loss"][0]
    assert any(e["kind"] == "step" for e in events) and any(e["kind"] == "eval" for e in events)
    assert set(after.per_class) == {"World", "Sports", "Business", "Sci/Tech"}


@pytest.mark.slow
def test_real_training_beats_chance_on_ag_news(shared_data):
    """tiny preset on the real AG_NEWS sample: 2k rows, 3 epochs, well above 25 % chance."""
    p = get_preset("tiny")
    splits = load_data(p, source=str(shared_data))
    model, meta = get_baseline(p, splits)
    acc = evaluate(model, splits.test).accuracy
    assert acc > 0.6, acc


def test_lr_schedule():
    cfg = TrainConfig(lr=1e-3, warmup=0.1)
    assert lr_at(0, 100, cfg) == pytest.approx(1e-4)
    assert lr_at(9, 100, cfg) == pytest.approx(1e-3)
    assert lr_at(100, 100, cfg) == pytest.approx(0.0)
    assert lr_at(55, 100, replace(cfg, schedule="cosine")) == pytest.approx(0.5e-3)


def test_distill_needs_teacher(tiny_splits, tiny_model):
    with pytest.raises(ValueError, match="teacher"):
        train(tiny_model, tiny_splits.train, replace(FAST, distill=0.5))


def test_checkpoint_round_trip_and_errors(tiny_model, tiny_splits, tmp_path):
    stem = tmp_path / "ck"
    save_checkpoint(tiny_model, stem, {"note": "x"})
    m2, meta = load_checkpoint(stem, expect=tiny_model.config)
    assert meta == {"note": "x"}
    for (n, a), (_, b) in zip(tiny_model.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), n
    # mismatched config
    with pytest.raises(CheckpointError, match="different model config"):
        load_checkpoint(stem, expect=replace(tiny_model.config, d_model=64))
    # corrupted weights
    w = stem.with_suffix(".safetensors")
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(stem)
    # damaged metadata
    stem.with_suffix(".json").write_text("{not json")
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(stem)
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(tmp_path / "missing")


def test_baseline_is_cached(tiny_splits):
    p = get_preset("tiny")
    cfg = replace(p.train, epochs=0.5)
    m1, meta1 = get_baseline(p, tiny_splits, cfg)
    m2, meta2 = get_baseline(p, tiny_splits, cfg)  # loads, does not train again
    assert meta1["history"]["seconds"] == meta2["history"]["seconds"]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
