"""Markdown of the committed tables, rendered from their JSON (``binlab experiments render``), the index
``docs/results/README.md``, and the texts the Results page shows for a row."""
from __future__ import annotations

import json
from pathlib import Path

from .aggregate import match_controls
from .budgets import fill_budgets
from .catalog import EXPERIMENTS, is_control
from .findings import FINDINGS, finding_of
from .provenance import RESULTS, machine_text
from .stats import INTERVAL, wilson_interval
from .texts import accuracy_text, diff_text, fmt, ratio_text, seeds_text, vs_control_text


def _header(payload: dict) -> list[str]:
    b = payload["budget"]["train"]
    calib = f"; calibration: {payload['calibration_rows']} train rows" if payload.get("calibration_rows") else ""
    return [f"# {payload['experiment']}: {payload['title']} ({payload['preset']})", "", payload["note"], "",
            f"Data: {payload['data']['train']} train / {payload['data']['test']} test rows{calib}. QAT budget: {b['epochs']} epoch(s), "
            f"lr {b['lr']}, distillation weight {b['distill']}. Machine: {machine_text(payload['machine'])}. Date: {payload['date']}.",
            f"Reproduce: `{payload['command']}`", ""] + _provenance_lines(payload)


def _provenance_lines(payload: dict) -> list[str]:
    """A merged table says which rows came from which run (the header's machine and date are the last run's)."""
    base = payload.get("base_run")
    if not base:
        return []
    parts = [f"rows {', '.join(repr(r) for r in run['rows'])} on {run['date']} ({machine_text(run['machine'])}"
             + (f"; its fp32 baseline's {run['metric']} {run['fp32']:.2f}" if run.get("fp32") is not None else "") + ")"
             for run in payload.get("partial_runs", [])]
    fp = f", where the fp32 baseline's {base['metric']} was {base['fp32']:.2f}" if base.get("fp32") is not None else ""
    return [f"Rows from more than one run: {'; '.join(parts)}. The other rows are from the run of {base['date']} ({machine_text(base['machine'])}){fp}; "
            "each row's 'vs fp32' compares with the baseline of its own run.", ""]


def _fp_of_own_run(payload: dict, fp: float | None):
    """``label -> the fp32 result of the run that made that row``: in a merged table the rows kept from an
    earlier run compare with that run's fp32 (``base_run``), the re-run rows with the fp32 their partial run
    recorded (``partial_runs[].fp32``), else with the table's."""
    base = (payload.get("base_run") or {}).get("fp32")
    made_by = {label: run for run in payload.get("partial_runs") or [] for label in run["rows"]}  # the last run wins

    def of(label: str) -> float | None:
        own = made_by[label].get("fp32") if label in made_by else base
        return fp if own is None else own
    return of


def lm_markdown(payload: dict) -> str:
    fp = next((r["perplexity"] for r in payload["rows"] if r["mode"] == "fp"), None)
    bg = payload.get("bigram_perplexity") or {}
    lines = _header(payload)
    if bg:
        lines += [f"Floor: an interpolated bigram model (lambda {bg['lambda']}, chosen on validation) has test perplexity "
                  f"**{bg['test_perplexity']:.2f}** on the same tokens" + (f"; the fp32 LM has **{fp:.2f}**" if fp else "")
                  + (f" (trained in {payload['baseline_train_seconds']:.0f} s here)." if payload.get("baseline_train_seconds") else "."), ""]
    ppl = {r["label"]: r.get("perplexity") for r in payload["rows"]}
    fp_of = _fp_of_own_run(payload, fp)
    lines += ["| configuration | mode | budget | seeds | perplexity (mean ± sd) | x fp32 [95 % CI] | x control [95 % CI] | "
              "bits / quantized weight (all stored) | paper bits | size MB | reduction % | calibration / train s | the survey reports |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        own = fp_of(r["label"])
        ratio = None if not own or r["mode"] == "fp" else r["perplexity"] / own  # shown where no interval is stored
        ctl = ppl.get(r.get("control")) if r["mode"] == "qat" and not is_control(r["mode"], r["label"]) else None
        vs_ctl = r["perplexity"] / ctl if ctl else None  # only against the row's matched control
        lines.append(f"| {r['label']} | {r['mode']} | {r.get('budget') or '-'} | {seeds_text(r)} | {accuracy_text(r, 'perplexity')} | "
                     f"{ratio_text(r, 'ratio', ratio)} | {ratio_text(r, 'ratio_vs_control', vs_ctl)} | "
                     f"{fmt(r['bits_per_quantized_weight'], '{:.3f}') if r['mode'] != 'fp' else '32'} | {fmt(r.get('paper_bits'), '{:.3f}')} | "
                     f"{fmt(r['megabytes'], '{:.3f}')} | {fmt(r['reduction_percent'])} | {fmt(r['train_seconds'], '{:.0f}')} | "
                     f"{r.get('survey') or '-'} |")
    if any(r.get("ratio_ci95") for r in payload["rows"]):
        lines += ["", "x fp32 and x control: the ratio of the two rows' perplexities (each the geometric mean over its seeds), with a 95 % "
                      "interval over the test rows (in 400 blocks of consecutive rows) and the seeds, seed k paired with the baseline "
                      "it was trained from (binlab.experiments.stats.seed_ratio); 'no measurable difference': the interval holds 1."
                      + (" A row with one seed has an interval over the test rows only: it says nothing of training noise."
                         if any(r.get("ratio_ci95") and len(r.get("random_seeds") or [0]) == 1 for r in payload["rows"]) else "")]
    return _finish(lines, payload)


def _finish(lines: list[str], payload: dict) -> str:
    """A table's markdown: its lines, then the generated finding if any."""
    if payload.get("finding"):
        lines += ["", payload["finding"]]
    return "\n".join(lines) + "\n"


def w1a1_markdown(payload: dict) -> str:
    fp = next((r["accuracy"] for r in payload["rows"] if r["mode"] == "fp"), None)
    lines = _header(payload) + [
        "| configuration | budget | seeds | accuracy % | vs fp32, pts [95 % CI] | vs control, pts [95 % CI] | val accuracy % | size MB (exact) | "
        "reduction % | bits / quantized weight | attention entropy (nats) | train s | the survey reports |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        lines.append(f"| {r['label']} | {r.get('budget') or '-'} | {seeds_text(r)} | {accuracy_text(r)} | {diff_text(r, fp)} | {vs_control_text(r)} | "
                     f"{accuracy_text(r, 'val_accuracy')} | "
                     f"{fmt(r['megabytes'], '{:.3f}')} | {fmt(r['reduction_percent'])} | "
                     f"{fmt(r['bits_per_quantized_weight'], '{:.3f}') if r['mode'] != 'fp' else '32'} | "
                     f"{fmt(r.get('attention_entropy'), '{:.3f}')} | {fmt(r['train_seconds'], '{:.0f}')} | {r.get('survey') or '-'} |")
    return _finish(lines + _intervals_note(payload), payload)


def to_markdown(payload: dict) -> str:
    if any("perplexity" in r for r in payload["rows"]):
        return lm_markdown(payload)
    if payload["experiment"] == "T9":
        return w1a1_markdown(payload)
    fp = next((r["accuracy"] for r in payload["rows"] if r["mode"] == "fp"), None)
    lines = _header(payload) + [
             "| configuration | mode | budget | seeds | accuracy % (mean ± sd) | vs fp32, pts [95 % CI] | McNemar p | vs control, pts [95 % CI] | "
             "val accuracy % | student project accuracy % | student project budget | size MB (exact) | student project size | reduction % | student project reduction % | "
             "bits / quantized weight | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        s = r.get("seed") or [None, None, None]
        lines.append(f"| {r['label']} | {r['mode']} | {r.get('budget') or '-'} | {seeds_text(r)} | {accuracy_text(r)} | {diff_text(r, fp)} | "
                     f"{fmt(r.get('mcnemar_p'), '{:.3g}')} | {vs_control_text(r)} | {accuracy_text(r, 'val_accuracy')} | {fmt(s[0], '{:.1f}')} | "
                     f"{r.get('seed_budget') or '-'} | {fmt(r['megabytes'], '{:.3f}')} | "
                     f"{fmt(s[1])} | {fmt(r['reduction_percent'])} | {fmt(s[2])} | {fmt(r['bits_per_quantized_weight'], '{:.3f}')} | "
                     f"{fmt(r['train_seconds'], '{:.0f}')} |")
    return _finish(lines + _intervals_note(payload), payload)


def seed_noise(preset: str, out_dir: Path | None = None) -> dict | None:
    """The seed-to-seed spread measured by the headline table (T7) on ``preset``: the mean standard
    deviation of its QAT rows' accuracies over their seeds, and what it implies for a difference of two
    one-seed rows (sd sqrt(2) s, so 1.96 sqrt(2) s at 95 %). None when T7 has no repeated seeds there."""
    import math

    path = (out_dir or RESULTS) / f"T7-{preset}.json"
    if not path.exists():
        return None
    rows = [r for r in json.loads(path.read_text())["rows"] if r["mode"] == "qat" and r.get("accuracy_std") is not None]
    if not rows:
        return None
    sd = sum(r["accuracy_std"] for r in rows) / len(rows)
    return {"sd": sd, "seeds": min(len(r["random_seeds"]) for r in rows), "rows": len(rows), "one_seed_diff_95": 1.96 * math.sqrt(2) * sd}


def _intervals_note(payload: dict) -> list[str]:
    noise = seed_noise(payload["preset"])
    one_seed = [r for r in payload["rows"] if r["mode"] == "qat" and len(r.get("random_seeds") or [0]) == 1]
    seeds = (f" Seed-to-seed noise, measured by T7 on this preset ({noise['rows']} QAT rows, {noise['seeds']} seeds each): "
             f"standard deviation {noise['sd']:.2f} points, so two one-seed QAT rows differing by less than about "
             f"{noise['one_seed_diff_95']:.2f} points (1.96 x sqrt(2) x sd) cannot be told apart by training noise alone."
             if noise and one_seed else "")
    if not any(r.get("diff_ci95") for r in payload["rows"]):
        return ["", "One seed per row and no per-row results stored: differences under about 1 point are within the test "
                    "set's noise (standard error about 0.39 points at 7,600 rows)." + seeds]
    old = ("" if payload.get("interval") == INTERVAL or not any(len(r.get("random_seeds") or [0]) > 1 for r in payload["rows"]) else
           " The intervals in this file were computed before binlab's current interval: a paired percentile bootstrap of rows "
           "and seeds, which with three seeds covers less than its 95 % (0.81-0.90 once seeds vary, docs/results/interval-coverage.md); read them as "
           "too narrow, and re-run the table for the current ones.")
    return ["", "Accuracy: mean over the row's seeds ± their standard deviation. vs fp32: the difference of mean accuracies "
                "to the fp32 baseline's runs on the same test rows, with a 95 % interval over test rows and seeds "
                "(binlab.experiments.stats.seed_diff: the rows' part at the normal quantile, the seeds' part at Student's t "
                "on seeds - 1 degrees of freedom, seeds paired with the baseline each started from in the headline tables); "
                "'no measurable difference' where it contains 0. A one-seed row's interval holds the test set's noise only, "
                "not training noise, so one-seed rows are not ranked." + seeds + " vs control: against the row's matched "
                "fp32 control (the control column names it in the JSON): the same epochs, learning rate, members and every "
                "distillation term with nothing quantized, so extra training is not counted as binarization's doing; same "
                "interval; '-' where the table has no matched control for the row. McNemar p: exact test of "
                "each seed against the baseline it started from, the largest shown. Choices of recipe are made on validation "
                "(val accuracy; docs/results/select-*.md); test is evaluated once per final configuration." + old]


def render(out_dir: Path | None = None) -> list[Path]:
    """Rewrite every committed table's markdown (and finding, title, note, quoted survey numbers) from its JSON, without running anything."""
    d = out_dir or RESULTS
    written = []
    for path in sorted(d.glob("T*.json")):
        payload = fill_budgets(json.loads(path.read_text()))
        exp = EXPERIMENTS.get(payload["experiment"])
        if exp is not None:  # titles, notes and the survey's quoted numbers are documentation: the current wording
            payload["title"], payload["note"] = exp.title, exp.note
            quoted = {c.label: c.survey for c in exp.configs}
            for r in payload["rows"]:
                if r["label"] in quoted and (quoted[r["label"]] is not None or "survey" in r):
                    r["survey"] = quoted[r["label"]]
        if exp is not None:  # each QAT row against its matched control only
            match_controls(payload["rows"], payload["experiment"])
        if payload["experiment"] in FINDINGS:
            payload["finding"] = finding_of(payload)
        path.write_text(json.dumps(payload, indent=2))
        path.with_suffix(".md").write_text(to_markdown(payload))
        written.append(path.with_suffix(".md"))
    write_index(d)
    return written


def write_index(out_dir: Path | None = None) -> Path:
    """``docs/results/README.md``: one section per committed table, each row as accuracy, the
    drop against that table's own fp32 baseline, and the exact reduction."""
    d = out_dir or RESULTS
    lines = ["# Committed results", "",
             "Generated by `binlab experiments run ...` (each table's own file has the machine, the budget and the "
             "command). Accuracy is on the 7,600-row AG_NEWS test split (mean ± sd over seeds where a row has several); "
             "'vs fp32' is against the same preset's fp32 baseline, with a 95 % interval over test rows and seeds where the "
             "table stored per-row results ('no interval': a one-seed row whose table stored none, so its difference "
             "is against the baseline of its own run, and differences under about 1 point are within the test set's "
             "noise; '-': the table has no fp32 row of its own to compare with); sizes count every scale, threshold and mask.", ""]
    payloads = load_results(d)
    for pl in sorted(payloads, key=lambda q: (q["preset"], q["experiment"])):
        if any("perplexity" in r for r in pl["rows"]):
            fp = next((r["perplexity"] for r in pl["rows"] if r["mode"] == "fp"), None)
            lines += [f"## [{pl['experiment']} ({pl['preset']})]({pl['experiment']}-{pl['preset']}.md): {pl['title']}", "",
                      "| configuration | mode | seeds | test perplexity | x fp32 [95 % CI] | bits / quantized weight | reduction % |",
                      "|---|---|---|---|---|---|---|"]
            fp_of = _fp_of_own_run(pl, fp)
            for r in pl["rows"]:
                own = fp_of(r["label"]) if r["mode"] != "fp" else None
                lines.append(f"| {r['label']} | {r['mode']} | {seeds_text(r)} | {r['perplexity']:.2f} | "
                             f"{ratio_text(r, 'ratio', r['perplexity'] / own if own else None)} | "
                             f"{r['bits_per_quantized_weight']:.3f} | {r['reduction_percent']:.2f} |")
            lines.append("")
            continue
        lines += [f"## [{pl['experiment']} ({pl['preset']})]({pl['experiment']}-{pl['preset']}.md): {pl['title']}", "",
                  "| configuration | mode | seeds | accuracy % | vs fp32, pts [95 % CI] | reduction % | student project accuracy % |",
                  "|---|---|---|---|---|---|---|"]
        fp_of = _fp_of_own_run(pl, next((r["accuracy"] for r in pl["rows"] if r["mode"] == "fp"), None))
        for r in pl["rows"]:
            seed = (r.get("seed") or [None])[0]
            lines.append(f"| {r['label']} | {r['mode']} | {seeds_text(r)} | {accuracy_text(r)} | {diff_text(r, fp_of(r['label']))} | "
                         f"{r['reduction_percent']:.2f} | {fmt(seed, '{:.1f}')} |")
        lines.append("")
    path = d / "README.md"
    path.write_text("\n".join(lines))
    return path


def load_results(out_dir: Path | None = None) -> list[dict]:
    """Every committed result payload (for the app's Results page)."""
    d = out_dir or RESULTS
    return [json.loads(p.read_text()) for p in sorted(d.glob("T*.json")) if not p.stem.endswith("-fast")]


def _log_range(values: list[float]) -> list[float] | None:
    """A log axis's range (log10 units) around ``values``: from just below the smallest to just above the
    second largest times 2, so one far-off bar (a collapsed method) is cut at the top instead of flattening
    every other bar; at most 6 decades."""
    import math

    v = sorted(x for x in values if x and x > 0 and math.isfinite(x))
    if not v:
        return None
    lo = math.log10(v[0])
    top = math.log10(v[-1]) if len(v) < 3 else min(math.log10(v[-1]), math.log10(2 * v[-2]))
    return [lo - 0.05, min(top, lo + 6) + 0.05]


def table_view(payload: dict, rows: list[dict]) -> dict:
    """What the Results page shows of a committed table's ``rows`` (a filtered, sorted subset of its
    rows), for either kind of table, so the page never asks which kind it has:

    - ``table``: one display dict per row;
    - ``bars``: ``{"x", "y", "plus", "minus", "name"}`` the bar chart's measured series (error bars: the
      seeds' standard deviation where there are several, else the 95 % Wilson interval on the test rows;
      for perplexity the seeds' standard deviation or none), ``reported``: the seed's reported series or None;
    - ``y_title``, ``log_y``, ``y_range``, ``hline`` (a reference line: the bigram model) and ``caption``.
    """
    if any("perplexity" in r for r in payload["rows"]):  # a language model's table
        fp = next((r["perplexity"] for r in payload["rows"] if r["mode"] == "fp"), None)
        bg = (payload.get("bigram_perplexity") or {}).get("test_perplexity")
        fp_of = _fp_of_own_run(payload, fp)
        table = [{"configuration": r["label"], "mode": r["mode"], "budget": r.get("budget"), "seeds": len(r.get("random_seeds") or [0]),
                  "perplexity": round(r["perplexity"], 2),
                  "x fp32 [95 % CI]": ratio_text(r, "ratio", r["perplexity"] / fp_of(r["label"]) if fp_of(r["label"]) and r["mode"] != "fp" else None),
                  "x control [95 % CI]": ratio_text(r, "ratio_vs_control") if r.get("ratio_vs_control_ci95") else None,
                  "bits / weight (all stored)": round(r["bits_per_quantized_weight"], 3),
                  "paper bits": r.get("paper_bits"), "reduction %": round(r["reduction_percent"], 2),
                  "the survey reports (LLaMA-7B)": r.get("survey")} for r in rows]
        y_range = _log_range([r["perplexity"] for r in table])
        sd = [r.get("perplexity_std") or 0.0 for r in rows]  # error bars: the seeds' standard deviation where there are several
        return {"table": table, "bars": {"x": [r["configuration"] for r in table], "y": [r["perplexity"] for r in table],
                                         "plus": sd if any(sd) else None, "minus": sd if any(sd) else None, "name": "test perplexity"},
                "reported": None, "y_title": "test perplexity (log)", "log_y": True, "y_range": y_range,
                "hline": (bg, "bigram") if bg else None,
                "caption": (f"Test perplexity of the fp32 LM: {fp:.2f}" + (f"; a bigram model on the same tokens: {bg:.2f}." if bg else ".")
                            + "".join(f" {r['configuration']} ({r['perplexity']:,.0f}) runs off the top of the chart." for r in table
                                      if y_range and r["perplexity"] > 10 ** y_range[1]))
                if fp is not None else None}
    fp = next((r["accuracy"] for r in payload["rows"] if r["mode"] == "fp"), None)
    n_test = payload["data"]["test"]
    lows, highs = [], []
    for r in rows:
        if r.get("accuracy_std"):
            lows.append(r["accuracy"] - r["accuracy_std"])
            highs.append(r["accuracy"] + r["accuracy_std"])
        else:
            lo, hi = wilson_interval(round(r["accuracy"] * n_test / 100), n_test)
            lows.append(100 * lo)
            highs.append(100 * hi)
    table = [{"configuration": r["label"], "mode": r["mode"], "budget": r.get("budget"), "seeds": len(r.get("random_seeds") or [0]),
              "accuracy %": round(r["accuracy"], 2), "± sd (seeds)": round(r["accuracy_std"], 2) if r.get("accuracy_std") else None,
              "vs fp32, pts [95 % CI]": diff_text(r, fp), "McNemar p": r.get("mcnemar_p"),
              "vs equal-budget control [95 % CI]": vs_control_text(r),
              "student project accuracy %": (r.get("seed") or [None])[0], "student project budget": r.get("seed_budget"), "size MB": round(r["megabytes"], 3),
              "reduction %": round(r["reduction_percent"], 2), "student project reduction %": (r.get("seed") or [None, None, None])[2],
              "bits/weight": round(r["bits_per_quantized_weight"], 3)}
             | ({"val accuracy %": round(r["val_accuracy"], 2)} if r.get("val_accuracy") is not None else {})
             | ({"attention entropy (nats)": round(r["attention_entropy"], 3)} if r.get("attention_entropy") is not None else {})
             | ({"the survey reports": r.get("survey")} if any(q.get("survey") for q in payload["rows"]) else {})
             for r in rows]
    x = [r["configuration"] for r in table]
    return {"table": table,
            "bars": {"x": x, "y": [r["accuracy %"] for r in table], "name": "binlab",
                     "plus": [h - r["accuracy %"] for r, h in zip(table, highs)], "minus": [r["accuracy %"] - lo for r, lo in zip(table, lows)]},
            "reported": {"x": x, "y": [r["student project accuracy %"] for r in table], "name": "the student project reports"},
            "y_title": "accuracy %", "log_y": False, "y_range": [0, 100], "hline": None, "caption": None}
