import json

import pytest

from binlab.experiments import budgets, catalog, findings, report, rows, sweep, tables, texts


def test_every_experiment_is_well_formed():
    assert {"T1", "T2", "T3", "T4", "T5", "T6"} <= set(catalog.EXPERIMENTS)
    for e in catalog.EXPERIMENTS.values():
        assert e.configs and all(c.mode in ("fp", "ptq", "qat") for c in e.configs)


def test_run_writes_json_and_markdown(fixture_data, tmp_path):
    md = tables.run("T4", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[0, 3])
    payload = json.loads(md.with_suffix(".json").read_text())
    # the QAT row's matched control runs with it, so its vs-control figure is measured
    assert [r["label"] for r in payload["rows"]] == ["QK", "QK, PTQ", catalog.control().label]
    assert payload["rows"][0]["control"] == catalog.control().label and "diff_vs_control_ci95" in payload["rows"][0]
    assert len(payload["rows"][0]["test_correct_per_seed"]) == 1 and payload["rows"][0]["hardware"][0]["vector"]
    assert payload["rows"][0]["seed"][0] == 89.3 and "--only 0,3" in payload["command"]
    for r in payload["rows"][:2]:
        assert 0 <= r["accuracy"] <= 100 and 0 < r["reduction_percent"] < 100
    text = md.read_text()
    assert "| QK | qat |" in text and "student project accuracy" in text
    assert not (tmp_path / "README.md").exists()  # fast runs stay out of the index


def test_index_lists_every_table_with_drops(tmp_path):
    """Each table's rows without an interval compare with that table's own fp32 (another table of the same
    preset may rest on another baseline), and a merged table's kept rows with the baseline of their run."""
    rows = [{"label": "fp32 baseline", "mode": "fp", "accuracy": 90.0, "reduction_percent": 0.0, "seed": [91.8]},
            {"label": "b", "mode": "qat", "accuracy": 88.5, "reduction_percent": 95.0, "seed": None}]
    for name in ("T1", "T2"):
        (tmp_path / f"{name}-scratch.json").write_text(json.dumps({"experiment": name, "preset": "scratch", "title": name, "rows": rows}))
    other = [dict(rows[0], accuracy=89.0), rows[1]]  # T3: another baseline
    (tmp_path / "T3-scratch.json").write_text(json.dumps({"experiment": "T3", "preset": "scratch", "title": "T3", "rows": other}))
    merged = [dict(rows[0], accuracy=91.0), rows[1], dict(rows[1], label="c", accuracy=90.0)]  # T5: 'b' kept from a run at 90 %
    (tmp_path / "T5-scratch.json").write_text(json.dumps({
        "experiment": "T5", "preset": "scratch", "title": "T5", "rows": merged,
        "base_run": {"date": "d", "machine": "m", "fp32": 90.0, "metric": "accuracy"},
        "partial_runs": [{"date": "d2", "machine": "m2", "rows": ["fp32 baseline", "c"]}]}))
    kept = [rows[0], dict(rows[1], label="d", accuracy=91.0)]  # T6: 'd' from a partial run whose own baseline was 92 %
    (tmp_path / "T6-scratch.json").write_text(json.dumps({
        "experiment": "T6", "preset": "scratch", "title": "T6", "rows": kept,
        "base_run": {"date": "d", "machine": "m", "fp32": 90.0, "metric": "accuracy"},
        "partial_runs": [{"date": "d2", "machine": "m2", "rows": ["d"], "fp32": 92.0, "metric": "accuracy"}]}))
    text = report.write_index(tmp_path).read_text()
    assert "| d | qat | 1 | 91.00 | -1.00 (no interval) | 95.00 | - |" in text
    assert text.count("| b | qat | 1 | 88.50 | -1.50 (no interval) | 95.00 | - |") == 3  # T1, T2 and T5's kept row
    assert "| b | qat | 1 | 88.50 | -0.50 (no interval) | 95.00 | - |" in text  # T3, against its own 89 %
    assert "| c | qat | 1 | 90.00 | -1.00 (no interval) | 95.00 | - |" in text  # T5's re-run row, against 91 %
    assert "[T2 (scratch)](T2-scratch.md)" in text


def test_bad_names_and_indices(fixture_data, tmp_path):
    with pytest.raises(ValueError, match="choose one of"):
        tables.run("T99", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path)
    with pytest.raises(ValueError, match="out of range"):
        tables.run("T4", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[42])


def test_code_fingerprint_follows_the_methods_source(monkeypatch):
    """A row's cache key includes the code it ran: the core and the source of each method it uses."""
    import inspect

    from binlab.methods import classic

    xnor, sign = catalog._spec(("encoder", "xnor")), catalog._spec(("encoder", "sign"))
    assert rows.code_fingerprint(xnor) == rows.code_fingerprint(xnor)
    assert rows.code_fingerprint(xnor) != rows.code_fingerprint(sign)
    before = rows.code_fingerprint(xnor)
    real = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda obj: real(obj) + ("\n# only a comment\n" if obj is classic.XNOR else ""))
    assert rows.code_fingerprint(xnor) == before  # comments and docstrings are not code
    monkeypatch.setattr(inspect, "getsource", lambda obj: real(obj) + ("\nCHANGED = 1\n" if obj is classic.XNOR else ""))
    assert rows.code_fingerprint(xnor) != before  # XNOR's code changed
    assert rows._code_only('def f():\n    """doc"""\n    return 1\n') == rows._code_only("def f():\n    return 1\n")


def test_cached_rows_are_recomputed_when_the_code_changes(fixture_data, tmp_path, monkeypatch):
    import uuid

    calls = []
    real_ptq = rows.ptq
    monkeypatch.setattr(rows, "ptq", lambda *a, **k: (calls.append(1), real_ptq(*a, **k))[1])
    this_code = uuid.uuid4().hex  # a code version no other test has cached
    monkeypatch.setattr(sweep, "code_fingerprint", lambda spec: this_code)
    tables.run("T4", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[3])
    tables.run("T4", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[3])
    assert len(calls) == 1  # the second run is served from the cache
    monkeypatch.setattr(sweep, "code_fingerprint", lambda spec: "other-code")
    tables.run("T4", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[3])
    assert len(calls) == 2  # a code change invalidates it
    payload = json.loads((tmp_path / "T4-tiny-fast.json").read_text())
    assert payload["rows"][0]["code"] == "other-code" and payload["rows"][0]["budget"] == "none (PTQ)"


def test_t5_has_no_duplicate_plans_and_budgets_are_shown():
    for e in catalog.EXPERIMENTS.values():
        keys = [(c.spec.to_json(), c.mode, c.recipe, json.dumps(c.qat, sort_keys=True, default=str)) for c in e.configs]  # a recipe is its own plan
        assert len(keys) == len(set(keys)), e.name
    md = report.to_markdown({"experiment": "T5", "title": "t", "note": "n", "preset": "scratch", "machine": "m", "date": "d",
                        "data": {"train": 1, "test": 1}, "budget": {"train": {"epochs": 2, "lr": 1e-3, "distill": 0.5}}, "command": "c",
                        "rows": [{"label": "sign", "mode": "qat", "budget": "QAT 2 ep + KD 0.5", "accuracy": 80.0, "seed": [83.7, "4.7M", 94.03],
                                  "seed_budget": budgets.SEED_BUDGET, "megabytes": 1.0, "reduction_percent": 94.0,
                                  "bits_per_quantized_weight": 1.0, "train_seconds": 1.0}]})
    assert "QAT 2 ep + KD 0.5" in md and "10 ep from scratch, no KD" in md


def test_t6_finding_reads_the_rows():
    rows = [{"label": "fp32 baseline", "mode": "fp", "accuracy": 87.0}]
    for m, ptq, qat in (("sign", 26.0, 78.0), ("xnor", 85.0, 87.0), ("bireal", 85.0, 86.9), ("recu", 84.0, 86.5), ("fda", 85.0, 86.8)):
        rows += [{"label": f"{m} (PTQ)", "mode": "ptq", "accuracy": ptq}, {"label": f"{m} (QAT)", "mode": "qat", "accuracy": qat}]
    rows.append({"label": "W1A1 bireal (QAT)", "mode": "qat", "accuracy": 20.0})  # not a classic all-except-head row
    text = findings.t6_finding(rows)
    assert "Under PTQ PB-LLM's finding holds only for sign" in text and "Under QAT PB-LLM's finding does not hold" in text
    rows = [r | {"accuracy": 24.0} if r["mode"] == "ptq" else r for r in rows]
    assert "Under PTQ PB-LLM's finding holds (5 of 5" in findings.t6_finding(rows)
    assert "one seed" in text and "xnor 87.00 % (+0.00 (no interval))" in text
    rows = [r | {"random_seeds": [0, 1, 2], "diff": -0.4, "diff_ci95": [-0.9, 0.1], "no_measurable_difference": True}
            if r["label"] == "xnor (QAT)" else r for r in rows]
    text = findings.t6_finding(rows)
    assert "mean of 3 seeds" in text and "xnor 87.00 % (-0.40 [-0.90, +0.10] no measurable difference)" in text
    assert any(c.mode == "fp" for c in catalog.EXPERIMENTS["T6"].configs)  # T6 has its own fp32 row to compare with


def test_render_rewrites_markdown_from_json(tmp_path):
    rows = [{"label": "fp32 baseline", "mode": "fp", "accuracy": 87.0, "reduction_percent": 0.0, "megabytes": 9.8,
             "bits_per_quantized_weight": 32.0, "train_seconds": 0.0, "seed": None},
            {"label": "sign (PTQ)", "mode": "ptq", "accuracy": 28.0, "reduction_percent": 96.0, "megabytes": 0.3,
             "bits_per_quantized_weight": 1.0, "train_seconds": 0.0, "seed": None}]
    payload = {"experiment": "T6", "title": "t", "note": "n", "preset": "scratch", "machine": "m", "date": "d", "command": "c",
               "data": {"train": 1, "test": 1}, "budget": {"train": {"epochs": 2, "lr": 1e-3, "distill": 0.5}}, "rows": rows}
    (tmp_path / "T6-scratch.json").write_text(json.dumps(payload))
    [md] = report.render(tmp_path)
    text = md.read_text()
    assert "| sign (PTQ) | ptq |" in text and "PB-LLM's finding holds (1 of 1" in text and "More than 5 points below fp32: sign" in text
    assert (tmp_path / "README.md").exists()


def test_a_partial_run_keeps_the_committed_tables_budget(fixture_data, tmp_path):
    """--only adds rows to a committed table: with another QAT budget it is refused (one table, one
    budget); with the committed budget given back (--lr/--distill) the row is added, trained with it."""
    md = tables.run("T4", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[3],
               budget_changes={"lr": 1e-3, "distill": 0.25})
    payload = json.loads(md.with_suffix(".json").read_text())
    assert payload["budget"]["train"]["lr"] == 1e-3 and payload["budget"]["train"]["distill"] == 0.25
    assert "--lr 0.001 --distill 0.25" in payload["command"]
    with pytest.raises(ValueError, match=r"another QAT budget \(lr 0.001 there, 0.003 here.*--lr 0.001 --distill 0.25"):
        tables.run("T4", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[0])
    before = md.with_suffix(".json").read_text()
    assert md.with_suffix(".json").read_text() == before  # the refused run wrote nothing
    md = tables.run("T4", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[0],
               budget_changes={"lr": 1e-3, "distill": 0.25})
    rows = json.loads(md.with_suffix(".json").read_text())["rows"]
    assert [r["label"] for r in rows] == ["QK", "QK, PTQ", catalog.control().label] and "KD 0.25" in rows[0]["budget"]
    command = json.loads(md.with_suffix(".json").read_text())["command"]
    assert "--only 3 --lr 0.001 --distill 0.25`, then `binlab experiments run T4 --preset tiny --fast --only 0 --lr" in command
    tables.run("T4", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[0], budget_changes={"lr": 1e-3, "distill": 0.25})
    assert json.loads(md.with_suffix(".json").read_text())["command"] == command  # the same step again is not repeated nor lost
    with pytest.raises(ValueError, match="unknown or fixed field.*seed"):
        tables.run("T4", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[0], budget_changes={"seed": 3})
    with pytest.raises(ValueError, match="lr must be in"):
        tables.run("T4", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, budget_changes={"lr": 2.0})


def test_rows_kept_from_before_per_row_results_get_a_plain_difference_to_their_matched_control():
    from binlab.experiments.aggregate import match_controls

    t7 = [c.label for c in catalog.EXPERIMENTS["T7"].configs]  # fp32, best QAT, PTQ, xnor QAT, W1A1 QAT, control
    rows = [{"label": t7[0], "mode": "fp", "accuracy": 86.0},
            {"label": t7[1], "mode": "qat", "accuracy": 85.25},
            {"label": t7[3], "mode": "qat", "accuracy": 86.5, "diff_vs_control": 0.1, "diff_vs_control_ci95": [-0.3, 0.5]},
            {"label": t7[5], "mode": "qat", "accuracy": 86.75},
            {"label": t7[2], "mode": "ptq", "accuracy": 80.0}]
    match_controls(rows, "T7")
    assert rows[1]["diff_vs_control"] == pytest.approx(-1.5) and texts.vs_control_text(rows[1]) == "-1.50 (no interval)"
    assert rows[2]["diff_vs_control"] == 0.1  # its interval's estimate is kept
    assert "diff_vs_control" not in rows[3] and "diff_vs_control" not in rows[4] and texts.vs_control_text(rows[4]) == "-"


def test_the_w1a1_and_language_model_tables_show_the_matched_control_only():
    from binlab.experiments.aggregate import match_controls

    base = {"title": "t", "note": "n", "preset": "scratch", "machine": "m", "date": "d", "data": {"train": 1, "test": 1},
            "budget": {"train": {"epochs": 2, "lr": 1e-3, "distill": 0.5}}, "command": "c"}
    row = {"megabytes": 1.0, "reduction_percent": 90.0, "bits_per_quantized_weight": 1.0, "train_seconds": 1.0}
    t9 = {c.label.split(" ")[0]: c.label for c in catalog.EXPERIMENTS["T9"].configs}
    ctl = catalog.control().label
    rows = [row | {"label": "fp32 baseline", "mode": "fp", "accuracy": 86.0},
            row | {"label": t9["W1A1"], "mode": "qat", "accuracy": 85.0},
            row | {"label": t9["BiBERT"], "mode": "qat", "accuracy": 84.0, "diff_vs_control": -2.5},  # against a control that does not match
            row | {"label": ctl, "mode": "qat", "accuracy": 86.5}]
    match_controls(rows, "T9")
    md = report.to_markdown(base | {"experiment": "T9", "rows": rows})
    assert f"| {t9['W1A1']} | - | 1 | 85.00 | -1.00 (no interval) | -1.50 (no interval) |" in md
    assert f"| {t9['BiBERT']} | - | 1 | 84.00 | -2.00 (no interval) | - |" in md
    t8 = {c.label.split(",")[0]: c.label for c in catalog.EXPERIMENTS["T8"].configs if c.mode == "qat"}
    onebit = next(c.label for c in catalog.EXPERIMENTS["T8"].configs if c.label.startswith("OneBit: SVID, then"))
    lm = [row | {"label": "fp32 baseline", "mode": "fp", "perplexity": 40.0, "accuracy": 30.0},
          row | {"label": t8["XNOR"], "mode": "qat", "perplexity": 60.0, "accuracy": 25.0},
          row | {"label": onebit, "mode": "qat", "perplexity": 50.0, "accuracy": 27.0},
          row | {"label": ctl, "mode": "qat", "perplexity": 30.0, "accuracy": 31.0}]
    match_controls(lm, "T8")
    assert "diff_vs_control" not in lm[1]
    md = report.to_markdown(base | {"experiment": "T8", "rows": lm})
    assert f"| {t8['XNOR']} | qat | - | 1 | 60.00 | 1.50 (no interval) | 2.00 (no interval) |" in md
    assert f"| {ctl} | qat | - | 1 | 30.00 | 0.75 (no interval) | - |" in md
    assert f"| {onebit} | qat | - | 1 | 50.00 | 1.25 (no interval) | - |" in md  # its matched control (hidden-state distillation) is not in the table


def test_table_view_of_both_kinds_of_table():
    """The Results page's view of a committed table: perplexity on a log axis for the LM table; accuracy
    with the Wilson interval of a one-seed row (checked against the closed form) for a classifier table."""
    import math

    lm = json.loads((report.RESULTS / "T8-lm.json").read_text())
    v = report.table_view(lm, lm["rows"])
    assert v["log_y"] and v["bars"]["y"] == [round(r["perplexity"], 2) for r in lm["rows"]] and v["reported"] is None
    clf = json.loads((report.RESULTS / "T1-scratch.json").read_text())
    one = [r for r in clf["rows"] if not r.get("accuracy_std")][:1]
    v = report.table_view(clf, one)
    n, acc = clf["data"]["test"], one[0]["accuracy"]
    k = round(acc * n / 100)
    z, ph = 1.959963984540054, k / n  # Wilson score interval, written out
    centre, half = (ph + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert v["bars"]["plus"][0] == pytest.approx(100 * (centre + half) - round(acc, 2), abs=1e-6)
    assert v["bars"]["minus"][0] == pytest.approx(round(acc, 2) - 100 * (centre - half), abs=1e-6)
    assert not v["log_y"] and v["y_range"] == [0, 100]


def test_a_merged_table_says_which_rows_came_from_which_run(fixture_data, tmp_path):
    """A partial run keeps the other rows; the table then names the run each came from and the fp32
    result its rows compare with, and a run that replaces every row says nothing of the kind."""
    tables.run("T6", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[0, 1])
    first = json.loads((tmp_path / "T6-tiny-fast.json").read_text())
    assert "base_run" not in first
    md = tables.run("T6", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[3])
    merged = json.loads(md.with_suffix(".json").read_text())
    fp = next(r["accuracy"] for r in first["rows"] if r["mode"] == "fp")
    assert merged["base_run"]["fp32"] == fp and merged["base_run"]["date"] == first["date"]
    assert merged["partial_runs"][-1]["rows"] == [catalog.EXPERIMENTS["T6"].configs[3].label]
    assert "Rows from more than one run" in md.read_text() and f"was {fp:.2f}" in md.read_text()
    # the partial run's own baseline (the same seed-0 baseline here, from the cache), which its rows compare with
    assert merged["partial_runs"][-1]["fp32"] == pytest.approx(fp) and merged["partial_runs"][-1]["metric"] == "accuracy"
    assert f"its fp32 baseline's accuracy {fp:.2f})" in md.read_text()
    again = tables.run("T6", preset="tiny", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[0, 1, 3])
    assert "base_run" not in json.loads(again.with_suffix(".json").read_text())


def test_a_seeded_language_model_table_orders_only_what_its_ratio_intervals_support():
    """T8 on a language model with 3 seeds, from simulated per-block NLL sums: every row gets its perplexity
    ratio against fp32 and its matched control with an interval, and the finding states an order (the
    survey's pairs, the best QAT row by validation) only where those intervals exclude 1: a method 20 %
    worse is separated from one 0.1 % worse, two methods equally worse are not."""
    import numpy as np

    from binlab.experiments import findings
    from binlab.experiments.aggregate import against_control, aggregate
    from binlab.experiments.stats import pack_floats, unpack_floats

    rng = np.random.default_rng(0)
    u = rng.poisson(850, 400).astype(float)
    mu = rng.normal(5.0, 0.3, 400)
    by = {c.label: c for c in catalog.EXPERIMENTS["T8"].configs}
    fp = next(c for c in by.values() if c.mode == "fp")
    ctl = next(c for c in by.values() if catalog.is_control(c.mode, c.label) and c.qat is None)
    fbi = next(c for c in by.values() if c.label.startswith("FBI-LLM"))
    db = next(c for c in by.values() if c.label.startswith("DB-LLM"))
    pb = next(c for c in by.values() if c.label.startswith("PB-LLM 10 % salient, frozen"))
    xnor = next(c for c in by.values() if c.label == "XNOR, QAT + KD")
    base = [mu + rng.normal(0, 0.003) + rng.normal(0, 0.5, 400) / np.sqrt(u) for _ in range(3)]
    shift = {fp.label: 0.0, ctl.label: -0.01, fbi.label: 0.18, db.label: 0.001, pb.label: 0.18, xnor.label: 0.1}

    def runs(c):
        out = []
        for k in range(3):
            nll = (base[k] + shift[c.label] + rng.normal(0, 0.003) + rng.normal(0, 0.3, 400) / np.sqrt(u)) * u
            out.append({"label": c.label, "mode": c.mode, "spec": json.loads(c.spec.to_json()), "megabytes": 1.0, "reduction_percent": 0.0,
                        "bits_per_quantized_weight": 1.0, "train_seconds": 1.0, "random_seed": k, "baseline_seed": k,
                        "perplexity": float(np.exp(nll.sum() / u.sum())), "val_perplexity": float(np.exp(nll.sum() / u.sum())) + 0.01 * k,
                        "accuracy": 30.0, "test_nll": pack_floats(nll), "test_units": pack_floats(u)})
        return out

    fp_runs = runs(fp)
    rows = []
    for c in (fp, pb, xnor, db, fbi, ctl):
        rs = runs(c)
        row = aggregate(c, rs, fp_runs) | ({"control": ctl.label} | against_control(rs, runs(ctl)) if c.mode == "qat" and c is not ctl else {})
        rows.append(row | {"survey": c.survey})
    got = {r["label"]: r for r in rows}
    d = got[db.label]
    assert d["ratio_ci95"][0] <= 1 <= d["ratio_ci95"][1] and d["no_measurable_difference"] and d["interval"].startswith("rows and seeds, seeds paired")
    assert got[fbi.label]["ratio_ci95"][0] > 1.15 and got[fbi.label]["ratio_vs_control_ci95"][0] > 1.15
    assert len(unpack_floats(got[fbi.label]["test_nll_per_seed"][2])) == 400
    text = findings.t8_finding(rows)
    assert "dbllm QAT > fbi QAT" in text and "dbllm QAT > pbllm QAT" in text  # measurably lower perplexity
    assert "and cannot separate 1" in text  # FBI-LLM and PB-LLM: equally worse
    assert "Best QAT row by validation perplexity: DB-LLM" in text
    assert findings.separated(got[fbi.label], got[pb.label]) == 0 and findings.separated(got[db.label], got[fbi.label]) == 1
    md = report.to_markdown({"experiment": "T8", "title": "t", "note": "n", "preset": "lm", "machine": "m", "date": "d", "command": "c",
                             "data": {"train": 1, "test": 1}, "budget": {"train": {"epochs": 1, "lr": 1, "distill": 0}}, "rows": rows})
    lo, hi = got[fbi.label]["ratio_ci95"]
    assert f"| 3 | {got[fbi.label]['perplexity']:.2f} ± " in md and f"[{lo:.3f}, {hi:.3f}]" in md
