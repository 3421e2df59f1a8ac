import json

import pytest

from binlab import experiments as E


def test_every_experiment_is_well_formed():
    assert {"T1", "T2", "T3", "T4", "T5", "T6"} <= set(E.EXPERIMENTS)
    for e in E.EXPERIMENTS.values():
        assert e.configs and all(c.mode in ("fp", "ptq", "qat") for c in e.configs)


def test_run_writes_json_and_markdown(fixture_data, tmp_path):
    md = E.run("T4", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[0, 3])
    payload = json.loads(md.with_suffix(".json").read_text())
    assert [r["label"] for r in payload["rows"]] == ["QK", "QK, PTQ"]
    assert payload["rows"][0]["seed"][0] == 89.3 and "--only 0,3" in payload["command"]
    for r in payload["rows"]:
        assert 0 <= r["accuracy"] <= 100 and 0 < r["reduction_percent"] < 100
    text = md.read_text()
    assert "| QK | qat |" in text and "seed accuracy" in text
    assert not (tmp_path / "README.md").exists()  # fast runs stay out of the index


def test_index_lists_every_table_with_drops(tmp_path):
    rows = [{"label": "fp32 baseline", "mode": "fp", "accuracy": 90.0, "reduction_percent": 0.0, "seed": [91.8]},
            {"label": "b", "mode": "qat", "accuracy": 88.5, "reduction_percent": 95.0, "seed": None}]
    for name in ("T1", "T2"):
        (tmp_path / f"{name}-scratch.json").write_text(json.dumps({"experiment": name, "preset": "scratch", "title": name, "rows": rows}))
    text = E.write_index(tmp_path).read_text()
    assert text.count("| b | qat | 88.50 | -1.50 | 95.00 | - |") == 2
    assert "[T2 (scratch)](T2-scratch.md)" in text


def test_bad_names_and_indices(fixture_data, tmp_path):
    with pytest.raises(ValueError, match="choose one of"):
        E.run("T99", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path)
    with pytest.raises(ValueError, match="out of range"):
        E.run("T4", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[42])
