"""The metric objects pages read instead of asking which task they show, and the preset resolved once."""
import copy
import math

import numpy as np
import pytest

from binlab.nn.metric import TASKS, Metric, headline, task_info


def test_task_info_says_what_each_task_measures():
    assert task_info("classify").metric == "accuracy" and task_info("classify").higher_is_better
    assert task_info("lm").metric == "perplexity" and not task_info("lm").higher_is_better and task_info("lm").log_scale
    assert {t.name for t in TASKS.values()} == set(TASKS)


def test_metric_text_follows_the_kind_of_change():
    acc = headline(task_info("classify"), 85.304, low=83.0, high=87.4, rows=1000, reference=86.0, change=-0.696,
                   change_low=-1.5, change_high=0.1, within_noise=True, p_value=0.08)
    assert acc.text() == "85.30 %" and acc.change_text() == "-0.70 pts vs fp32 (within noise)"
    assert acc.delta_color() == "off" and acc.cost() == pytest.approx(0.696) and acc.cost_label() == "accuracy drop (pts)"
    assert "McNemar p = 0.080" in acc.help() and "-1.50 to +0.10 pts" in acc.help()
    ppl = headline(task_info("lm"), 140.0, low=130.0, high=151.0, rows=300, tokens=9000, reference=120.0, change=140 / 120,
                   change_low=1.1, change_high=1.2, within_noise=False)
    assert ppl.text() == "140.00" and ppl.change_text() == "x1.167 vs fp32 120.00"
    assert ppl.delta_color() == "inverse" and ppl.cost() == pytest.approx(140 / 120) and ppl.cost_label() == "perplexity / fp32"
    assert ppl.error_bars() == pytest.approx((11.0, 10.0))
    assert Metric("loss", 0.5).error_bars() == (0.0, 0.0) and Metric("loss", 0.5).change_text() == ""


def test_live_lab_metric_is_its_numbers(tiny_splits, tiny_model):
    """The metric object carries exactly the numbers the lab measured (and an independent evaluation gives them)."""
    from binlab.lab.live import LiveLab
    from binlab.nn.quantize import QuantSpec, quantize_
    from binlab.training.train import evaluate

    lab = LiveLab(tiny_model, tiny_splits.val, val_rows=100, device="cpu")
    r = lab.apply(QuantSpec.simple("all-except-head", "sign"))
    m = r["metric"]
    assert m.name == "accuracy" and (m.value, m.low, m.high) == (r["accuracy"], r["accuracy_low"], r["accuracy_high"])
    assert (m.change, m.change_low, m.change_high, m.within_noise) == (r["diff"], r["diff_low"], r["diff_high"], r["within_noise"])
    assert m.reference == pytest.approx(r["baseline_accuracy"])
    other = copy.deepcopy(tiny_model)
    quantize_(other, QuantSpec.simple("all-except-head", "sign"))
    assert m.value == pytest.approx(100 * evaluate(other, tiny_splits.val.head(100)).accuracy)
    loss = r["more"][0]
    assert loss.name == "validation loss" and loss.change == pytest.approx(r["loss"] - r["baseline_loss"])


def test_compare_models_metric_names_its_reference(tiny_splits, tiny_model):
    from binlab.lab.live import compare_models

    c = compare_models(tiny_model, tiny_model, tiny_splits.val, val_rows=50, reference_label="PTQ")
    assert c["metric"].change == 0 and c["metric"].reference_label == "PTQ" and c["metric"].value == c["accuracy_a"]
    assert c["metric_b"].value == c["accuracy_b"]


def test_lm_lab_metric_is_perplexity(fixture_data):
    """A language model's live lab reports perplexity, equal to exp of the mean NLL per token of an independent evaluation."""
    from binlab.lab.live import LiveLab
    from binlab.nn.quantize import QuantSpec
    from binlab.presets import build_model, get_preset, load_data
    from binlab.training.train import evaluate

    splits = load_data("tiny-lm", source=str(fixture_data), val_size=60, test_size=60)
    model = build_model(get_preset("tiny-lm"), splits).eval()
    lab = LiveLab(model, splits.val, val_rows=60, device="cpu")
    m = lab.apply(QuantSpec())["metric"]
    assert m.name == "perplexity" and m.change == pytest.approx(1.0) and m.within_noise
    assert m.value == pytest.approx(math.exp(evaluate(model, splits.val.head(60)).loss), rel=1e-5)
    assert lab.apply(QuantSpec())["more"][0].name == "next-token accuracy"


def test_resolve_looks_the_preset_up_once(fixture_data, monkeypatch):
    """A resolved preset answers every later question without looking its name up again."""
    import binlab.presets as P

    rp = P.resolve("tiny", source=str(fixture_data), val_size=100, test_size=100)
    calls = []
    real = P.get_preset
    monkeypatch.setattr(P, "get_preset", lambda name: (calls.append(name), real(name))[1])
    assert rp.qat == P.PRESETS["tiny"].qat and rp.task.metric == "accuracy"
    assert rp.stem == P.baseline_stem(P.PRESETS["tiny"], rp.splits, P.PRESETS["tiny"].train)
    assert rp.cached_baseline() is None or rp.cached_baseline()[0] is not None
    assert rp.build_model().config.vocab_size == rp.model_config.vocab_size
    assert calls == []


def test_run_metric(tiny_splits, tiny_model):
    from binlab.lab.runs import measure

    run = measure(tiny_model, tiny_model, tiny_splits.val, preset="tiny", mode="PTQ", label="fp32", spec_json="{}", rows=80)
    assert run.metric.name == "accuracy" and (run.metric.value, run.metric.low, run.metric.high) == (run.accuracy, run.low, run.high)
    assert np.isfinite(run.metric.value)
