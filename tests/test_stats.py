"""Intervals against published values and against simulation."""
import math

import numpy as np
import pytest

from binlab.experiments.stats import mcnemar_p, paired_difference, wilson_interval


def test_wilson_against_published_values():
    # Newcombe (1998), Table I: 81/263 -> 0.2553 to 0.3662 (Wilson score interval, 95 %)
    lo, hi = wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=5e-5) and hi == pytest.approx(0.3662, abs=5e-5)
    # 15/148 -> 0.0624 to 0.1605 (same table)
    lo, hi = wilson_interval(15, 148)
    assert lo == pytest.approx(0.0624, abs=5e-5) and hi == pytest.approx(0.1605, abs=5e-5)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=5e-5)


def test_wilson_coverage_by_simulation():
    rng = np.random.default_rng(0)
    n, p = 1000, 0.87
    hits = 0
    for k in rng.binomial(n, p, size=4000):
        lo, hi = wilson_interval(int(k), n)
        hits += lo <= p <= hi
    assert 0.94 <= hits / 4000 <= 0.96


def test_mcnemar_exact_small_cases():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(0, 5) == pytest.approx(2 * 0.5**5)  # all five discordant rows one way
    assert mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(1, 9) == pytest.approx(2 * (1 + 10) / 2**10)


def test_paired_difference_against_bootstrap():
    rng = np.random.default_rng(1)
    n = 2000
    a = rng.random(n) < 0.86
    flip = rng.random(n) < 0.05
    b = a ^ flip  # B disagrees with A on ~5 % of rows
    pd = paired_difference(a, b)
    assert pd.diff == pytest.approx(a.mean() - b.mean())
    boots = []
    for _ in range(3000):
        idx = rng.integers(0, n, n)
        boots.append(a[idx].mean() - b[idx].mean())
    lo, hi = np.percentile(boots, [2.5, 97.5])
    assert pd.low == pytest.approx(lo, abs=0.002) and pd.high == pytest.approx(hi, abs=0.002)


def test_identical_models_are_within_noise_and_bad_input_is_refused():
    a = np.array([True, False, True])
    pd = paired_difference(a, a)
    assert pd.diff == 0 and pd.within_noise and pd.p_value == 1.0
    with pytest.raises(ValueError):
        paired_difference(a, a[:2])
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
    assert math.isclose(wilson_interval(5, 5)[1], 1.0)


def test_live_lab_reports_intervals(tiny_splits, tiny_model):
    """The live lab's numbers carry their intervals; fp32 against itself is 'within noise'."""
    from binlab.lab.live import LiveLab, compare_models
    from binlab.nn.quantize import QuantSpec

    lab = LiveLab(tiny_model, tiny_splits.val, val_rows=100, device="cpu")
    r = lab.apply(QuantSpec())
    assert r["diff"] == 0 and r["within_noise"] and r["accuracy_low"] <= r["accuracy"] <= r["accuracy_high"]
    lo, hi = wilson_interval(round(r["accuracy"] * r["rows"] / 100), r["rows"])
    assert r["accuracy_low"] == pytest.approx(100 * lo) and r["accuracy_high"] == pytest.approx(100 * hi)
    r = lab.apply(QuantSpec.simple("all", "sign"))
    assert r["diff_low"] <= r["diff"] <= r["diff_high"]
    c = compare_models(tiny_model, tiny_model, tiny_splits.val, val_rows=50)
    assert c["diff"] == 0 and c["within_noise"] and c["rows"] == 50


def test_sensitivity_rows_carry_intervals(tiny_splits, tiny_model):
    from binlab.lab.live import sensitivity
    from binlab.nn.quantize import MethodConfig

    rows = sensitivity(tiny_model, tiny_splits.val, MethodConfig("sign"), val_rows=100)
    for r in rows:
        assert r["accuracy_low"] <= r["accuracy"] <= r["accuracy_high"]
        assert r["drop_low"] <= r["drop"] + 1e-9 and r["drop"] <= r["drop_high"] + 1e-9
        assert r["within_noise"] == (r["drop_low"] <= 0 <= r["drop_high"])
