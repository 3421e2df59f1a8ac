"""A table row from its runs (one per seed): mean and spread, and paired intervals against the fp32
baseline's runs and against the row's matched control (:mod:`binlab.experiments.stats`): accuracy
differences for a classifier, perplexity ratios for a language model."""
from __future__ import annotations

from .catalog import Config, control, control_of, is_control


def aggregate(c: Config, runs: list[dict], reference: list[dict] | None = None) -> dict:
    """One table row from the runs of configuration ``c`` (one per seed): the mean accuracy over seeds with
    its standard deviation, and, against ``reference`` (the fp32 baseline's runs on the same test rows),
    the difference with its two-stage (rows, then seeds) 95 % interval (:func:`binlab.experiments.stats.seed_diff`)
    and the exact McNemar p-value of each seed against the baseline it was trained from (the largest is
    shown: the least significant). ``no_measurable_difference``: the interval contains 0. A language
    model's row has the perplexity ratio against the baseline instead (``ratio``, ``ratio_ci95``,
    :func:`binlab.experiments.stats.seed_ratio`; no measurable difference: the interval contains 1)."""
    import numpy as np

    from .stats import mcnemar_p, seed_diff, seed_ratio, seed_summary, unpack_correct, unpack_floats

    if not runs:
        raise ValueError(f"no runs for {c.label!r}")
    first = runs[0]
    row = {k: first[k] for k in ("mode", "spec", "megabytes", "reduction_percent", "bits_per_quantized_weight", "code", "budget",
                                 "recipe", "paper_bits", "test_tokens") if k in first}
    row["label"] = c.label
    row["random_seeds"] = [r.get("random_seed", 0) for r in runs]
    row["baseline_seeds"] = [r.get("baseline_seed", 0) for r in runs]
    for k in ("accuracy", "val_accuracy", "perplexity", "val_perplexity", "attention_entropy", "train_seconds"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        if len(vals) == len(runs):
            row[k], std = seed_summary(vals)
            if k in ("accuracy", "val_accuracy", "perplexity"):
                row[f"{k}_std"] = std
                if len(vals) > 1:
                    row[f"{k}_per_seed"] = vals
    hw = [r["hardware"] for r in runs if r.get("hardware")]
    if hw:  # where each seed ran (CPU vector extensions and GPU): AVX2 and AVX-512 runs can be told apart
        row["hardware"] = [dict(t) for t in dict.fromkeys(tuple(sorted(h.items())) for h in hw)]
    if all("test_correct" in r for r in runs):  # per-row results, so any interval can be recomputed from the JSON
        row["test_correct_per_seed"] = [r["test_correct"] for r in runs]
    lm = all("test_nll" in r and "test_units" in r for r in runs)
    if lm:  # a language model's per-block NLL sums: its perplexity ratios can be recomputed from the JSON
        row["test_nll_per_seed"] = [r["test_nll"] for r in runs]
        row["test_units"] = first["test_units"]
    if all("per_class" in r for r in runs):
        row["per_class"] = {k: float(np.mean([r["per_class"][k] for r in runs])) for k in first["per_class"]}
    lm_ref = [r for r in (reference or []) if "test_nll" in r]
    if c.mode != "fp" and lm and lm_ref:
        a, b, paired = _paired(runs, lm_ref, lambda r: r.get("baseline_seed", 0), "test_nll")
        q = seed_ratio(a, b, unpack_floats(first["test_units"]), paired_seeds=paired)
        row |= {"ratio": q.ratio, "ratio_ci95": [q.low, q.high], "no_measurable_difference": q.within_noise,
                "interval": _interval_name(paired, len(runs), len(lm_ref))}
    ref = [r for r in (reference or []) if "test_correct" in r]
    if c.mode != "fp" and ref and all("test_correct" in r for r in runs):
        # seed k started from baseline k (the headline): pair them, so what they share cancels
        a, b, paired = _paired(runs, ref, lambda r: r.get("baseline_seed", 0))
        d = seed_diff(a, b, paired_seeds=paired)
        row |= {"diff": 100 * d.diff, "diff_ci95": [100 * d.low, 100 * d.high], "no_measurable_difference": d.within_noise,
                "interval": _interval_name(paired, len(runs), len(ref))}
        by_seed = {r.get("baseline_seed", 0): unpack_correct(r["test_correct"]) for r in ref}
        ps = [mcnemar_p(int((x & ~by_seed[s]).sum()), int((~x & by_seed[s]).sum()))
              for x, s in zip(a, row["baseline_seeds"]) if s in by_seed]
        if ps:
            row["mcnemar_p"] = max(ps)
            if len(ps) > 1:
                row["mcnemar_p_per_seed"] = ps
    return row


def _interval_name(paired: bool, seeds_a: int, seeds_b: int) -> str:
    return ("rows and seeds, seeds paired with their baselines" if paired else "rows and seeds" if seeds_a > 1 or seeds_b > 1
            else "test rows only (one seed)")


def _paired(runs: list[dict], ref: list[dict], key, field: str = "test_correct") -> tuple:
    """(A, B, paired): the per-row results ``field`` of ``runs`` and ``ref`` (correctness, or a language
    model's per-block NLL sums) as (seeds, rows) arrays, with B in A's seed order and ``paired`` True when
    every run has its own ``ref`` run under ``key`` (one each)."""
    import numpy as np

    from .stats import unpack_correct, unpack_floats

    unpack = unpack_floats if field == "test_nll" else unpack_correct
    a = np.stack([unpack(r[field]) for r in runs])
    by_key = {key(r): unpack(r[field]) for r in ref}
    keys = [key(r) for r in runs]
    paired = len(runs) > 1 and len(set(keys)) == len(runs) == len(by_key) and set(keys) == set(by_key)
    return a, np.stack([by_key[k] for k in keys] if paired else list(by_key.values())), paired


def against_control(runs: list[dict], control: list[dict]) -> dict:
    """A QAT row against its matched fp32 control (same epochs and distillation): the difference of mean
    accuracies with its two-stage 95 % interval, or for a language model the perplexity ratio with its
    interval (:func:`binlab.experiments.stats.seed_ratio`); seed k paired with the control's seed k when
    both started from the same baselines. Empty when per-row results are missing."""
    from .stats import seed_diff, seed_ratio, unpack_floats

    key = lambda r: (r.get("baseline_seed", 0), r.get("random_seed", 0))  # noqa: E731
    if runs and control and all("test_nll" in r for r in runs + control):  # a language model: the perplexity ratio
        a, b, paired = _paired(runs, control, key, "test_nll")
        q = seed_ratio(a, b, unpack_floats(runs[0]["test_units"]), paired_seeds=paired)
        return {"ratio_vs_control": q.ratio, "ratio_vs_control_ci95": [q.low, q.high]}
    if not runs or not control or not all("test_correct" in r for r in runs + control):
        return {}
    a, b, paired = _paired(runs, control, key)
    d = seed_diff(a, b, paired_seeds=paired)
    return {"diff_vs_control": 100 * d.diff, "diff_vs_control_ci95": [100 * d.low, 100 * d.high]}


def match_controls(rows: list[dict], name: str) -> None:
    """Every QAT row of experiment ``name`` names its matched control (:func:`binlab.experiments.catalog.matched_control`)
    and keeps a vs-control figure only against it: a row whose matched control is not in the table shows
    none (a control with another budget is no control), and a row kept from a run before per-row results
    were stored gets the plain difference to its matched control (no interval: nothing to resample)."""
    by = {r["label"]: r for r in rows}
    for r in rows:
        if r["mode"] != "qat" or is_control(r["mode"], r["label"]):
            continue
        label = control_of(name, r["label"]) or r.get("control")
        compared_with = r.get("control") or control().label  # a row stored before matched controls was compared with the table's one
        r["control"] = label
        ctl = by.get(label)
        usable = ctl is not None and ctl.get("accuracy") is not None and r.get("accuracy") is not None
        if compared_with != label or not usable:
            for k in ("diff_vs_control", "diff_vs_control_ci95", "ratio_vs_control", "ratio_vs_control_ci95"):
                r.pop(k, None)
        if usable and r.get("diff_vs_control_ci95") is None and "perplexity" not in r:
            r["diff_vs_control"] = r["accuracy"] - ctl["accuracy"]
