"""The run store: records survive a new store object (a new session), export/import round-trips,
bad files are ValueErrors, and measure() agrees with a direct count."""
import json

import numpy as np
import pytest

from binlab.lab.runs import Run, RunStore, export_json, import_json, measure


def _run(**kw):
    base = dict(preset="tiny", mode="PTQ", label="x", spec='{"rules":[]}', rows=10, split="val", accuracy=80.0, low=70.0,
                high=88.0, size_bytes=1000.0, reduction=90.0, bits_per_weight=1.0)
    return Run(**(base | kw))


def test_store_survives_a_new_session_and_deletes(tmp_path):
    a, b = RunStore(tmp_path / "r.sqlite").add(_run(label="a")), RunStore(tmp_path / "r.sqlite").add(_run(label="b", preset="scratch"))
    again = RunStore(tmp_path / "r.sqlite")
    assert [r.label for r in again.list()] == ["a", "b"] and [r.label for r in again.list("tiny")] == ["a"]
    assert again.get(b.id) == b
    again.delete(a.id)
    assert [r.id for r in RunStore(tmp_path / "r.sqlite").list()] == [b.id]
    with pytest.raises(ValueError, match="no run"):
        again.get(a.id)


def test_export_import_round_trip_and_bad_files(tmp_path):
    runs = [_run(label="a", per_class={"World": 90.0}, confusion=[[1, 0], [0, 1]]), _run(label="b", mode="QAT", extra={"epochs": 1})]
    assert import_json(export_json(runs)) == runs
    for bad, msg in [("nope", "not a runs file"), ("[]", "not a runs file"), ('{"format": "binlab-runs/1", "runs": [1]}', "JSON object"),
                     ('{"format": "binlab-runs/1", "runs": [{"label": "x"}]}', "incomplete"),
                     (json.dumps({"format": "binlab-runs/1", "runs": [dict(json.loads(export_json(runs))["runs"][0], accuracy="high")]}),
                      "finite number"),
                     (json.dumps({"format": "binlab-runs/1", "runs": [dict(json.loads(export_json(runs))["runs"][0], evil=1)]}), "unknown")]:
        with pytest.raises(ValueError, match=msg):
            import_json(bad)


def test_damaged_store_is_a_clear_error(tmp_path):
    p = tmp_path / "r.sqlite"
    p.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match="damaged"):
        RunStore(p).list()


def test_measure_agrees_with_a_direct_count(tiny_splits):
    from binlab.nn.quantize import QuantSpec
    from binlab.presets import get_baseline
    from binlab.runtime.size import model_size
    from binlab.training.qat import ptq
    from binlab.training.train import predict

    fp, _ = get_baseline("tiny", tiny_splits)
    q = ptq(fp, QuantSpec.simple("encoder", "xnor"))
    r = measure(q, fp, tiny_splits.val, preset="tiny", mode="PTQ", label="xnor", spec_json="{}", rows=80)
    logits, labels = predict(q, tiny_splits.val.head(80))
    pred = logits.argmax(1)
    assert r.rows == 80 and r.accuracy == pytest.approx(100 * (pred == labels).mean())
    conf = np.array(r.confusion)
    assert conf.sum() == 80 and all(conf[i, j] == ((labels == i) & (pred == j)).sum() for i in range(4) for j in range(4))
    assert r.low <= r.accuracy <= r.high
    assert r.size_bytes == model_size(q).total_bytes and 0 < r.reduction < 100
