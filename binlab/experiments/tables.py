"""``binlab experiments run T4 --preset scratch``: run one table of the catalog and write it.

It trains (or loads) the preset's full-precision baseline, then for each configuration of the table
quantizes a copy (PTQ, or QAT with the STE and logit distillation), evaluates it on the AG_NEWS test
split and measures its exact size with :mod:`binlab.runtime.size`. Each run writes
``docs/results/<name>-<preset>.json`` and ``.md`` with our numbers beside the seed's. Rows are kept in
the results store by key (:mod:`binlab.experiments.rows`), so a configuration shared by two tables is
trained once and a killed run resumes.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Callable

from binlab.presets import get_preset

from . import sweep
from .aggregate import against_control, aggregate, match_controls
from .budgets import SEED_BUDGET, fill_budgets
from .catalog import EXPERIMENTS, FP, Config, matched_control
from .findings import FINDINGS, finding_of
from .provenance import RESULTS, machine
from .report import to_markdown, write_index
from .stats import INTERVAL


def run(name: str, preset: str = "scratch", source: str | None = None, fast: bool = False,
        callback: Callable | None = None, out_dir: Path | None = None, only: list[int] | None = None, seeds: int = 1,
        runner: str = "local", address: str | None = None, store=None, threads: int | None = None,
        budget_changes: dict | None = None, gpus_per_task: float | None = None) -> Path:
    """Run experiment ``name`` on ``preset`` (``only``: indices of the configurations to run, for
    budget-limited runs) with ``seeds`` random seeds per trained row; write JSON + markdown; return the
    markdown path. ``budget_changes``: changes to the preset's QAT training budget (fields of
    :class:`binlab.training.train.TrainConfig`, e.g. ``{"lr": 5e-4, "distill": 0.5}``), so a partial run can
    add a row to a table committed with another budget; a partial run whose budget differs from the
    committed table's is refused (one table, one budget). Every (configuration, seed) is one :class:`binlab.experiments.sweep.Task`, run by ``runner``
    ("local": in this process; "ray": Ray tasks, ``address`` to join a cluster) and kept in the results
    store, so a killed run resumes where it stopped.

    Seeds: a QAT row's seeds are its training seeds (data order, new parameters); PTQ and fp rows are
    deterministic given the baseline, so they run once, except in an experiment with
    ``seeded_baseline`` (the headline), where seed k also trains the fp32 baseline anew with seed k
    and every row of seed k starts from it."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a whole number >= 1, got {seeds!r}")
    exp = EXPERIMENTS[name]
    if only is not None:
        bad = [i for i in only if not 0 <= i < len(exp.configs)]
        if bad:
            raise ValueError(f"config indices {bad} out of range; {name} has {len(exp.configs)} configurations (0..{len(exp.configs) - 1})")
        picked = tuple(exp.configs[i] for i in only)
        # a row's matched control runs with it (from the store when it is there), so its vs-control figure is measured
        extra = tuple(m for m in (matched_control(c) for c in picked) if m is not None and m.label not in {c.label for c in picked})
        exp = replace(exp, configs=tuple({c.label: c for c in picked + extra}.values()))
    log = callback or (lambda *_: None)
    fp = Config("fp32 baseline", FP, "fp")
    qat = None
    if budget_changes:
        base = get_preset(preset).qat
        bad = sorted(set(budget_changes) - {f.name for f in fields(base.train)} | ({"seed"} & set(budget_changes)))
        if bad:
            raise ValueError(f"budget: unknown or fixed field(s) {bad}; change any of "
                             f"{sorted(f.name for f in fields(base.train) if f.name != 'seed')}")
        qat = replace(base, train=replace(base.train, **budget_changes))
    out_dir = out_dir or RESULTS
    stem = out_dir / f"{name}-{preset}{'-fast' if fast else ''}"
    if only is not None and stem.with_suffix(".json").exists():
        committed = json.loads(stem.with_suffix(".json").read_text()).get("budget", {}).get("train", {})
        mine = asdict(sweep.budget_of(sweep.Task(preset, fp, fast=fast, budget=qat), with_config=False).train)
        differ = {k: (committed[k], mine[k]) for k in ("epochs", "lr", "distill", "batch_size", "warmup", "schedule")
                  if k in committed and committed[k] != mine[k]}
        if differ:
            raise ValueError(f"{stem.with_suffix('.json').name} was run with another QAT budget ("
                             + ", ".join(f"{k} {a} there, {b} here" for k, (a, b) in differ.items())
                             + "): run the whole table, or give the committed budget ("
                             + " ".join(f"--{k.replace('_', '-')} {a}" for k, (a, _) in differ.items()) + ")")

    def tasks_of(c: Config) -> list:
        n = seeds if (c.mode == "qat" or exp.seeded_baseline) else 1
        return [sweep.Task(preset, c, seed=k, baseline_seed=k if exp.seeded_baseline else 0, experiment=name, source=source, fast=fast,
                           budget=qat)
                for k in range(n)]

    plan = [(c, tasks_of(c)) for c in exp.configs]
    ref_tasks = tasks_of(fp)  # the fp32 runs every row is compared with (evaluation only)
    results = sweep.run_tasks([t for _, ts in plan for t in ts] + ref_tasks, store=store, runner=runner, address=address,
                              threads=threads, callback=log, gpus_per_task=gpus_per_task)
    it = iter(results)
    runs = [[next(it) for _ in ts] for _, ts in plan]
    reference = [next(it) for _ in ref_tasks]
    rows = []
    by_label = {c.label: rs for (c, _), rs in zip(plan, runs)}
    for (c, _), rs in zip(plan, runs):
        row = aggregate(c, rs, reference)
        m = matched_control(c)
        if m is not None:
            row["control"] = m.label
            if m.label in by_label:
                row |= against_control(rs, by_label[m.label])
        row["survey"] = c.survey
        row["seed"] = list(c.seed) if c.seed else None
        row["seed_budget"] = SEED_BUDGET if c.seed else None
        rows.append(row)
        log(f"    {c.label}: accuracy {row['accuracy']:.2f} %" + (f" +- {row['accuracy_std']:.2f}" if row.get("accuracy_std") else "")
            + (f"  perplexity {row['perplexity']:.2f}" if "perplexity" in row else "")
            + f"  size {row['megabytes']:.3f} MB  reduction {row['reduction_percent']:.2f} %")
    ctx = sweep.context(ref_tasks[0])
    splits, meta, calib = ctx.splits, ctx.meta, ctx.calib
    budget = sweep.budget_of(ref_tasks[0], with_config=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    # read again after the run (not the copy checked above): another partial run may have added rows meanwhile
    prior = json.loads(stem.with_suffix(".json").read_text()) if only is not None and stem.with_suffix(".json").exists() else None
    provenance = {}
    if prior is not None:
        rows = _merge_rows(prior["rows"], rows, [c.label for c in EXPERIMENTS[name].configs])
        own = aggregate(fp, reference, reference)  # this run's fp32 (its seeds' baselines), which its rows compare with
        provenance = _provenance(prior, [c.label for c in exp.configs], {r["label"] for r in rows},
                                 own.get("perplexity", own.get("accuracy")), "perplexity" if "perplexity" in own else "accuracy")
    match_controls(rows, name)
    command = (f"binlab experiments run {name} --preset {preset}" + (" --fast" if fast else "")
               + (f" --seeds {seeds}" if seeds > 1 else "") + (f" --only {','.join(map(str, only))}" if only is not None else "")
               + "".join(f" --{k.replace('_', '-')} {v}" for k, v in (budget_changes or {}).items()))
    if prior is not None and prior.get("command"):  # a partial run adds to how the table was made
        steps = prior["command"].split("`, then `")
        command = "`, then `".join(steps + ([] if command in steps else [command]))
    payload = {"experiment": name, "title": exp.title, "note": exp.note, "preset": preset, "machine": machine(),
               "date": time.strftime("%Y-%m-%d"), "data": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
               "budget": asdict(budget), "baseline_val_accuracy": meta.get("val_accuracy"), "rows": rows, "calibration_rows": len(calib),
               "baseline_train_seconds": meta.get("history", {}).get("seconds"), "seeds": max(seeds, (prior or {}).get("seeds", 1)),
               "seeded_baseline": exp.seeded_baseline, "command": command, "interval": INTERVAL, **provenance}
    fill_budgets(payload)
    if get_preset(preset).model.task == "lm":
        from binlab.nn.ngram import bigram_perplexity

        payload["bigram_perplexity"] = bigram_perplexity(splits)
    if name in FINDINGS:
        payload["finding"] = finding_of(payload)
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    stem.with_suffix(".md").write_text(to_markdown(payload))
    if not fast:
        write_index(out_dir)
    return stem.with_suffix(".md")


def _provenance(prior: dict, rerun: list[str], kept: set[str], fp32: float | None = None, metric: str = "accuracy") -> dict:
    """Where a merged table's rows come from: the run that made the rows this partial run keeps
    (``base_run``: its date, machine and fp32 result, the baseline those rows compare with) and every
    partial run since (``partial_runs``: date, machine, rows and, where the run recorded it, the fp32
    result of that run's own baselines, ``fp32``). Empty when this run replaces every row."""
    if not (kept - set(rerun)):
        return {}
    fp = next((r for r in prior["rows"] if r["mode"] == "fp"), {})
    base = prior.get("base_run") or {"date": prior.get("date"), "machine": prior.get("machine"),
                                      "fp32": fp.get("perplexity", fp.get("accuracy")), "metric": "perplexity" if "perplexity" in fp else "accuracy"}
    runs = list(prior.get("partial_runs") or []) + [{"date": time.strftime("%Y-%m-%d"), "machine": machine(), "rows": list(rerun),
                                                     **({"fp32": fp32, "metric": metric} if fp32 is not None else {})}]
    return {"base_run": base, "partial_runs": runs}


def _merge_rows(old: list[dict], new: list[dict], order: list[str]) -> list[dict]:
    """A partial run (``only``) replaces its rows in the committed table and keeps the others, in the
    experiment's order (rows no longer in the experiment are dropped)."""
    by = {r["label"]: r for r in old if r["label"] in order} | {r["label"]: r for r in new}
    return [by[label] for label in order if label in by]
