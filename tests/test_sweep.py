"""Repeated seeds and intervals (against closed forms), the results store (resume after a kill, no
duplicates), grid files, and the Ray runner against the in-process one on a tiny grid."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from binlab.experiments import aggregate, catalog, datasize, report, tables, texts
from binlab.experiments.grids import load_grid
from binlab.experiments.stats import mcnemar_p, pack_correct, seed_summary, unpack_correct
from binlab.experiments.store import ResultStore
from binlab.experiments.sweep import Task, run_tasks
from binlab.presets import get_preset

# ---------------------------------------------------------------------------------------------
# statistics


def test_seed_summary_is_the_sample_standard_deviation():
    m, sd = seed_summary([86.0, 87.0, 88.5])
    assert m == pytest.approx(87.1666666) and sd == pytest.approx(math.sqrt(((86 - m) ** 2 + (87 - m) ** 2 + (88.5 - m) ** 2) / 2))
    assert seed_summary([80.0]) == (80.0, None)


@given(st.lists(st.booleans(), min_size=0, max_size=70))
@settings(max_examples=60, deadline=None)
def test_packed_correctness_round_trips(bits):
    assert unpack_correct(pack_correct(bits)).tolist() == bits


def test_damaged_packed_correctness_is_a_value_error():
    for text in ("", "12", "12:!!!", "100:AAAA", "x:AAAA"):
        with pytest.raises(ValueError):
            unpack_correct(text)


def test_aggregate_on_a_hand_made_table():
    """Rows right only under the QAT model b = 10, only under fp32 c = 2: McNemar p = 2 P(X <= 2), X ~ Bin(12, 1/2)."""
    n = 100
    fp = np.zeros(n, bool)
    fp[:80] = True
    q = fp.copy()
    q[80:90] = True  # 10 rows right only under the quantized model
    q[:2] = False  # 2 rows right only under fp32
    runs = [{"label": "q", "mode": "qat", "accuracy": 100 * q.mean(), "test_correct": pack_correct(q), "random_seed": 0,
             "megabytes": 1.0, "reduction_percent": 90.0, "bits_per_quantized_weight": 1.0, "train_seconds": 1.0}]
    ref = [{"label": "fp", "mode": "fp", "accuracy": 80.0, "test_correct": pack_correct(fp), "baseline_seed": 0}]
    row = aggregate.aggregate(catalog.Config("q", catalog.FP, "qat"), runs, ref)
    assert row["mcnemar_p"] == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert row["diff"] == pytest.approx(8.0) and row["accuracy_std"] is None and row["random_seeds"] == [0]
    assert row["diff_ci95"][0] < 8.0 < row["diff_ci95"][1]
    assert mcnemar_p(10, 2) == pytest.approx(row["mcnemar_p"])


def test_every_qat_row_has_a_matched_control_in_its_table():
    """A control matches a row when it trains exactly as the row does with nothing quantized: the same
    budget changes, and for a recipe the same stages (epochs share, teacher, loss terms) and members."""
    from binlab.training.recipes import RECIPES

    seen = 0
    for e in catalog.EXPERIMENTS.values():
        labels = {c.label: c for c in e.configs}
        for c in e.configs:
            if c.mode != "qat" or catalog.is_control(c.mode, c.label):
                continue
            m = labels.get(catalog.matched_control(c).label)
            assert m is not None and m.mode == "qat" and not m.spec.rules and m.spec.attn_probs is None, (e.name, c.label)
            assert m.qat == c.qat, (e.name, c.label)
            if c.recipe is None:
                assert m.recipe is None
                continue
            seen += 1
            r, k = RECIPES[c.recipe], RECIPES[m.recipe]
            assert r.ensemble == k.ensemble
            assert [(s.frac, s.teacher, s.qat) for s in r.stages] == [(s.frac, s.teacher, s.qat) for s in k.stages]
            assert all(not s.spec.rules and s.spec.attn_probs is None and s.spec.attn_qkv is None for s in k.stages)
    assert seen >= 9  # T9's recipes
    assert catalog.EXPERIMENTS["T7"].seeded_baseline
    # BiT's ladder and its one-step ablation train differently, so their controls differ; BinaryBERT's W1A1 and W1A4 do not
    t9 = {c.recipe: catalog.matched_control(c).label for c in catalog.EXPERIMENTS["T9"].configs if c.recipe and c.mode == "qat" and not catalog.is_control(c.mode, c.label)}
    assert t9["bit"] != t9["bit-1step"] and t9["binarybert"] == t9["binarybert-a4"]


def test_a_row_without_its_matched_control_shows_no_vs_control_figure():
    """T8's OneBit row distils hidden states too: the table's plain control does not match it."""
    from binlab.experiments.aggregate import match_controls

    plain = catalog.control()
    onebit = next(c for c in catalog.EXPERIMENTS["T8"].configs if c.label.startswith("OneBit: SVID, then QAT"))
    xnor = next(c for c in catalog.EXPERIMENTS["T8"].configs if c.label == "XNOR, QAT + KD")
    rows = [{"label": plain.label, "mode": "qat", "accuracy": 80.0},
            {"label": onebit.label, "mode": "qat", "accuracy": 79.0, "diff_vs_control": -1.0, "diff_vs_control_ci95": [-2.0, 0.0]},
            {"label": xnor.label, "mode": "qat", "accuracy": 78.5}]
    match_controls(rows, "T8")
    assert "diff_vs_control" not in rows[1] and rows[1]["control"] == catalog.matched_control(onebit).label
    assert rows[2]["diff_vs_control"] == pytest.approx(-1.5) and rows[2]["control"] == plain.label
    rows.append({"label": catalog.matched_control(onebit).label, "mode": "qat", "accuracy": 79.5})
    match_controls(rows, "T8")
    assert rows[1]["diff_vs_control"] == pytest.approx(-0.5)


# ---------------------------------------------------------------------------------------------
# the store and the runners


def tiny_tasks(source, seeds=(0, 1)):
    xnor = catalog.Config("xnor encoder", catalog._spec(("encoder", "xnor")), "qat")
    sign = catalog.Config("sign encoder", catalog._spec(("encoder", "sign")), "qat")
    return [Task("tiny", c, seed=k, source=str(source), fast=True) for c in (xnor, sign) for k in seeds]


def test_store_put_is_once_per_key(tmp_path):
    s = ResultStore(tmp_path / "r.sqlite")
    assert s.put("k", {"label": "a", "accuracy": 1.0}) and not s.put("k", {"label": "b", "accuracy": 2.0})
    assert s.get("k")["label"] == "a" and len(s) == 1 and s.get("missing") is None
    (tmp_path / "bad.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ValueError, match="damaged"):
        ResultStore(tmp_path / "bad.sqlite")


def test_experiment_with_seeds_reports_spread_and_intervals(fixture_data, tmp_path):
    md = tables.run("T7", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[0, 3, 5], seeds=2)
    rows = json.loads(md.with_suffix(".json").read_text())["rows"]
    fp, xnor, ctl = rows
    assert fp["baseline_seeds"] == [0, 1] and xnor["random_seeds"] == [0, 1] and xnor["baseline_seeds"] == [0, 1]  # headline: baselines reseeded
    assert len(xnor["accuracy_per_seed"]) == 2 and xnor["accuracy"] == pytest.approx(np.mean(xnor["accuracy_per_seed"]))
    assert xnor["diff"] == pytest.approx(xnor["accuracy"] - fp["accuracy"])
    lo, hi = xnor["diff_ci95"]
    assert lo <= hi and xnor["no_measurable_difference"] == (lo <= 0 <= hi) and 0 <= xnor["mcnemar_p"] <= 1
    assert "control" in ctl["label"] and ctl["mode"] == "qat" and ctl["reduction_percent"] == 0 and ctl["diff_ci95"]
    text = md.read_text()
    assert "± " in text and "[95 % CI]" in text


def test_a_killed_sweep_resumes_without_duplicates_or_losses(fixture_data, tmp_path):
    store_path = tmp_path / "results.sqlite"
    script = (f"from binlab.experiments.sweep import run_tasks; from binlab.experiments.store import ResultStore; import tests_helper_tasks as h; "
              f"run_tasks(h.tasks(), store=ResultStore({str(store_path)!r}))")
    helper = tmp_path / "tests_helper_tasks.py"
    helper.write_text("import sys\nsys.path.insert(0, %r)\nfrom test_sweep import tiny_tasks\n"
                      "def tasks():\n    return tiny_tasks(%r, seeds=(0, 1, 2))\n" % (str(Path(__file__).parent), str(fixture_data)))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if store_path.exists() and len(ResultStore(store_path)) >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = ResultStore(store_path)
    before = {r["key"]: r for r in store.rows()}
    assert 1 <= len(before) < 6, "the sweep was not killed part-way"
    ran = []
    rows = run_tasks(tiny_tasks(fixture_data, seeds=(0, 1, 2)), store=store, callback=lambda m: ran.append(m))
    after = store.rows()
    assert len(after) == 6 and len({r["key"] for r in after}) == 6  # every task once
    assert all(before[r["key"]] == r for r in after if r["key"] in before)  # finished rows kept as they were
    assert sum(m.endswith("...") for m in ran) == 6 - len(before)  # only the missing ones ran
    assert [r["label"] for r in rows] == ["xnor encoder"] * 3 + ["sign encoder"] * 3


def test_ray_and_in_process_runners_give_identical_rows(fixture_data, tmp_path):
    """A 2 x 2 tiny grid (2 specs x 2 seeds) on a local Ray and in this process, one torch thread each."""
    pytest.importorskip("ray")
    import ray

    tasks = tiny_tasks(fixture_data)
    local = run_tasks(tasks, store=ResultStore(tmp_path / "local.sqlite"), threads=1)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith("BINLAB_")}})
        remote = run_tasks(tasks, store=ResultStore(tmp_path / "ray.sqlite"), runner="ray", threads=1)
        with pytest.raises(ValueError, match="has no GPU"):  # asking a CPU-only cluster for GPUs would hang forever
            run_tasks(tasks[:1], store=ResultStore(tmp_path / "gpu.sqlite"), runner="ray", gpus_per_task=0.5)
    finally:
        ray.shutdown()
    keys = ("label", "mode", "accuracy", "val_accuracy", "test_correct", "megabytes", "reduction_percent", "random_seed", "code")
    assert [{k: r[k] for k in keys} for r in local] == [{k: r[k] for k in keys} for r in remote]


def test_runner_errors_are_clear(fixture_data, tmp_path):
    with pytest.raises(ValueError, match="unknown runner"):
        run_tasks(tiny_tasks(fixture_data)[:1], store=ResultStore(tmp_path / "s.sqlite"), runner="spark")
    with pytest.raises(ValueError, match="--runner ray"):
        run_tasks(tiny_tasks(fixture_data)[:1], store=ResultStore(tmp_path / "s.sqlite"), address="ray://x:10001")
    for bad in (-1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="gpus-per-task must be"):
            run_tasks(tiny_tasks(fixture_data)[:1], store=ResultStore(tmp_path / "s.sqlite"), runner="ray", gpus_per_task=bad)
    with pytest.raises(ValueError, match="--gpus-per-task is a Ray"):
        run_tasks(tiny_tasks(fixture_data)[:1], store=ResultStore(tmp_path / "s.sqlite"), gpus_per_task=0.5)
    with pytest.raises(ValueError, match="seed"):
        Task("tiny", catalog.Config("fp", catalog.FP, "fp"), seed=-1)
    with pytest.raises(ValueError, match="preset"):
        Task("nope", catalog.Config("fp", catalog.FP, "fp"))


# ---------------------------------------------------------------------------------------------
# grid files


def test_grid_file_expands_to_tasks(tmp_path):
    g = tmp_path / "g.yaml"
    g.write_text("presets: [tiny]\nseeds: [0, 1]\ntest: false\nbudgets:\n  - {epochs: 0.2, lr: 0.003}\n  - {epochs: 0.2, lr: 0.001}\n"
                 "specs:\n  - {label: xnor, mode: qat, spec: {rules: [{target: encoder, method: {method: xnor}}]}}\n"
                 "  - {label: ptq sign, mode: ptq, spec: '{\"rules\": [{\"target\": \"encoder\", \"method\": {\"method\": \"sign\"}}]}'}\n"
                 "  - {experiment: T7, only: [0]}\n")
    tasks = load_grid(g)
    # qat: 2 budgets x 2 seeds; ptq and fp: 2 budgets x 1 seed each (deterministic given the baseline)
    assert len(tasks) == 4 + 2 + 2 and all(not t.test for t in tasks)
    assert {t.budget.train.lr for t in tasks} == {0.003, 0.001} and {t.seed for t in tasks if t.config.mode == "qat"} == {0, 1}


@pytest.mark.parametrize("text, match", [
    ("presets: [tiny]\n", "specs"),
    ("presets: [tiny]\nspecs: [{label: a}]\n", "label' and 'spec"),
    ("presets: [tiny]\nspecs: [{experiment: T99}]\n", "unknown experiment"),
    ("presets: [tiny]\nspecs: [{experiment: T7, only: [42]}]\n", "only"),
    ("presets: [tiny]\nspecs: [{label: a, spec: {rules: [{target: nowhere, method: {method: xnor}}]}}]\n", "nowhere|target"),
    ("presets: [tiny]\nspecs: [{experiment: T7}]\nbudgets: [{epochz: 1}]\n", "epochz"),
    ("presets: [tiny]\nspecs: [{experiment: T7}]\ncolour: red\n", "unknown keys"),
    ("presets: [tiny\n", "YAML"),
    ("presets: [nope]\nspecs: [{experiment: T7}]\n", "preset"),
    ("presets: [tiny]\nseeds: [null]\nspecs: [{experiment: T7}]\n", "seeds"),
    ("presets: [tiny]\nseeds: [1.7]\nspecs: [{experiment: T7}]\n", "seeds"),
    ("presets: [tiny]\nspecs: [{experiment: [T7]}]\n", "unknown experiment"),
    ("presets: [tiny]\nspecs: [{experiment: T7, only: [true]}]\n", "only"),
    ("presets: [tiny]\nbaseline_seeds: [0, 1]\nspecs: [{experiment: T7}]\n", "baseline_seeds"),
    ("presets: [tiny]\nspecs: [{experiment: T7}]\nbudgets: [{epochs: 1, seed: 3}]\n", "seeds go in"),
    ("presets: [tiny]\nspecs: [{experiment: T7}]\ntrain_rows: [0]\n", "train_rows"),
])
def test_bad_grid_files_say_what_is_wrong(tmp_path, text, match):
    g = tmp_path / "g.yaml"
    g.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_grid(g)


def test_cli_sweep_runs_a_grid_and_reports_bad_files(fixture_data, tmp_path, capsys):
    from binlab.cli import main

    g = tmp_path / "g.yaml"
    g.write_text("presets: [tiny]\nseeds: [0]\nbudgets: [{epochs: 0.1, lr: 0.003}]\n"
                 "specs: [{label: xnor, mode: qat, spec: {rules: [{target: encoder, method: {method: xnor}}]}}]\n")
    assert main(["sweep", str(g), "--data", str(fixture_data), "--runner", "local", "--store", str(tmp_path / "s.sqlite"),
                 "--out", str(tmp_path / "sel")]) == 0
    out = capsys.readouterr().out
    assert "xnor" in out and "1 row(s)" in out and len(ResultStore(tmp_path / "s.sqlite")) == 1
    payload = json.loads((tmp_path / "sel.json").read_text())
    assert payload["best_by_validation"][0]["lr"] == 0.003 and "best by validation" in out
    (tmp_path / "bad.yaml").write_text("presets: [tiny]\n")
    assert main(["sweep", str(tmp_path / "bad.yaml"), "--runner", "local"]) != 0
    assert "specs" in capsys.readouterr().err


def test_mcnemar_with_many_discordant_rows_against_the_normal_approximation():
    """Beyond 1,023 discordant rows 2**m is not a float: the exact p must still come out (it did not)."""
    b, c = 1030, 962
    z = (b - c) / math.sqrt(b + c)
    normal = math.erfc(abs(z) / math.sqrt(2))  # two-sided normal approximation
    assert mcnemar_p(b, c) == pytest.approx(normal, rel=0.05)
    assert mcnemar_p(1030, 162) < 1e-100 and mcnemar_p(1500, 1500) == 1.0


def test_data_size_curve_on_tiny(fixture_data, tmp_path):
    md = datasize.data_size_curve("tiny", sizes=(60, None), seeds=2, source=str(fixture_data), fast=True, out_dir=tmp_path)
    payload = json.loads(md.with_suffix(".json").read_text())
    small, full = payload["rows"]
    assert small["train_rows"] == 60 and full["all_rows"] and full["train_rows"] > 60
    for r in payload["rows"]:
        assert r["seeds"] == 2 and r["gap"] == pytest.approx(r["binary_accuracy"] - r["fp32_accuracy"])
        assert r["gap_ci95"][0] <= r["gap_ci95"][1]
        # an equal-budget control at every size: the 1-bit model against fp32 trained as long
        assert r["gap_vs_control"] == pytest.approx(r["binary_accuracy"] - r["control_accuracy"])
        assert r["gap_vs_control_ci95"][0] <= r["gap_vs_control"] <= r["gap_vs_control_ci95"][1]
    assert "| 60 | 2 |" in md.read_text()
    with pytest.raises(ValueError, match="sizes"):
        datasize.data_size_curve("tiny", sizes=(0,), source=str(fixture_data), fast=True, out_dir=tmp_path)


def test_one_seed_tables_state_the_seed_noise_measured_by_t7(tmp_path):
    rows = [{"label": "fp32 baseline", "mode": "fp", "accuracy": 87.0, "accuracy_std": 0.2, "random_seeds": [0, 1, 2]},
            {"label": "a", "mode": "qat", "accuracy": 86.0, "accuracy_std": 0.3, "random_seeds": [0, 1, 2]},
            {"label": "b", "mode": "qat", "accuracy": 86.5, "accuracy_std": 0.5, "random_seeds": [0, 1, 2]}]
    (tmp_path / "T7-scratch.json").write_text(json.dumps({"rows": rows}))
    noise = report.seed_noise("scratch", tmp_path)
    assert noise["sd"] == pytest.approx(0.4) and noise["one_seed_diff_95"] == pytest.approx(1.96 * math.sqrt(2) * 0.4)
    assert noise["seeds"] == 3 and noise["rows"] == 2  # the fp32 row's spread is the baseline's, not QAT's: left out
    assert report.seed_noise("minilm-l2", tmp_path) is None


def test_summary_chooses_the_best_mean_validation_budget():
    from binlab.experiments.grids import summary
    from binlab.training.qat import QATConfig
    from binlab.training.train import TrainConfig

    c = catalog.Config("x", catalog._spec(("encoder", "xnor")), "qat")
    budgets = [QATConfig(TrainConfig(epochs=1, lr=lr)) for lr in (0.1, 0.2)]
    tasks = [Task("tiny", c, seed=k, budget=b, test=False) for b in budgets for k in (0, 1)]
    vals = [80.0, 90.0, 86.0, 85.0]  # lr 0.1: mean 85.0; lr 0.2: mean 85.5 -> 0.2, though 0.1 has the single best seed
    rows = [{"label": "x", "mode": "qat", "val_accuracy": v} for v in vals]
    best = summary(tasks, rows)["best_by_validation"]
    assert len(best) == 1 and best[0]["lr"] == 0.2 and best[0]["val_accuracy"] == pytest.approx(85.5) and best[0]["seeds"] == 2
    assert all(r["test_accuracy"] is None for r in summary(tasks, rows)["rows"])


def test_grid_budgets_keep_the_presets_settings_and_read_yaml_exponents(tmp_path):
    g = tmp_path / "g.yaml"
    g.write_text("presets: [minilm-l2]\nbudgets: [{lr: 1e-3}]\nspecs: [{experiment: T7, only: [1]}]\n")  # YAML 1.1: 1e-3 is text
    [t] = load_grid(g)
    assert t.budget.train.lr == 0.001 and t.budget.freeze == get_preset("minilm-l2").qat.freeze  # the preset's freeze list kept
    assert t.budget.train.epochs == get_preset("minilm-l2").qat.train.epochs


def test_mcnemar_pairs_each_seed_with_the_baseline_it_started_from():
    n = 60
    base = {0: np.zeros(n, bool), 1: np.ones(n, bool)}  # baseline seed 0 gets every row wrong, seed 1 every row right
    q0, q1 = np.zeros(n, bool), np.ones(n, bool)  # each QAT seed agrees exactly with its own baseline
    runs = [{"label": "q", "mode": "qat", "accuracy": 100 * q.mean(), "test_correct": pack_correct(q), "random_seed": k,
             "baseline_seed": k, "megabytes": 1.0, "reduction_percent": 90.0, "bits_per_quantized_weight": 1.0, "train_seconds": 1.0}
            for k, q in ((0, q0), (1, q1))]
    ref = [{"label": "fp", "mode": "fp", "accuracy": 100 * b.mean(), "test_correct": pack_correct(b), "baseline_seed": k} for k, b in base.items()]
    row = aggregate.aggregate(catalog.Config("q", catalog.FP, "qat"), runs, ref)
    assert row["mcnemar_p_per_seed"] == [1.0, 1.0]  # paired with the wrong baseline each would be p ~ 1e-18
    assert row["interval"].startswith("rows and seeds, seeds paired") and row["diff_ci95"] == [0.0, 0.0]
    crossed = [dict(r, baseline_seed=1 - r["baseline_seed"]) for r in runs]
    assert max(aggregate.aggregate(catalog.Config("q", catalog.FP, "qat"), crossed, ref)["mcnemar_p_per_seed"]) < 1e-15


def test_a_worker_never_trains_a_baseline_or_files_a_row_under_another_key(fixture_data, tmp_path, monkeypatch):
    from binlab.experiments.sweep import context, execute

    t = tiny_tasks(fixture_data)[0]
    context(t)  # the driver trains the baseline
    with pytest.raises(RuntimeError, match="key does not match"):
        execute(t, expect_key="not-the-drivers-key")
    # a worker whose cache (with the same baseline) lives in another folder files rows under the driver's keys
    import shutil

    from binlab.data import cache_dir
    from binlab.experiments.sweep import task_key

    key = task_key(t)
    moved = tmp_path / "moved-cache"
    shutil.copytree(cache_dir(), moved)
    monkeypatch.setenv("BINLAB_CACHE", str(moved))
    assert task_key(t, train=False) == key
    monkeypatch.setenv("BINLAB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(RuntimeError, match="not in this worker's cache"):
        execute(t, expect_key="any")


def test_a_qat_row_against_its_equal_budget_control():
    n = 400
    rng = np.random.default_rng(3)
    ctl = [rng.random(n) < 0.8 for _ in range(2)]
    q = [c.copy() for c in ctl]
    q[0][:20] = ~q[0][:20]  # seed 0 differs from its control on 20 rows
    mk = lambda arr, k: {"test_correct": pack_correct(arr), "baseline_seed": k, "random_seed": k}
    out = aggregate.against_control([mk(q[0], 0), mk(q[1], 1)], [mk(ctl[0], 0), mk(ctl[1], 1)])
    expect = 100 * (np.mean([x.mean() for x in q]) - np.mean([x.mean() for x in ctl]))
    assert out["diff_vs_control"] == pytest.approx(expect)
    lo, hi = out["diff_vs_control_ci95"]
    assert lo <= hi and texts.vs_control_text(out).startswith(f"{expect:+.2f}")
    assert aggregate.against_control([mk(q[0], 0)], [{"baseline_seed": 0}]) == {}  # no per-row results: nothing claimed
