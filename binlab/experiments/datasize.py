"""The data-size curve: fp32 against the best 1-bit recipe as the training rows grow."""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from . import sweep
from .aggregate import against_control, aggregate
from .budgets import baseline_budget
from .catalog import EXPERIMENTS, FP, Config, matched_control
from .provenance import RESULTS, machine, machine_text
from .stats import INTERVAL
from .texts import accuracy_text

DATA_SIZES = (2000, 4000, 8000, None)  # None: every training row there is (the hub has 120k; ../shared 15,287)


def data_size_curve(preset: str = "scratch", sizes=DATA_SIZES, seeds: int = 3, source: str | None = None, fast: bool = False,
                    callback: Callable | None = None, out_dir: Path | None = None, runner: str = "local", address: str | None = None,
                    store=None, threads: int | None = None, gpus_per_task: float | None = None) -> Path:
    """fp32 against the best 1-bit recipe (T7's "binlab best") trained on the first n training rows, for
    each n in ``sizes``: for seed k the fp32 baseline is trained from scratch on those rows with seed k
    and the 1-bit model is QAT'd from it with seed k (as in the headline). Writes
    ``docs/results/data-size-<preset>.{json,md}``: each size's mean ± sd over seeds and the gap with its
    95 % interval over test rows and seeds on the full test split."""


    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a whole number >= 1, got {seeds!r}")
    bad = [n for n in sizes if n is not None and (not isinstance(n, int) or n < 8)]
    if bad or not sizes:
        raise ValueError(f"sizes must be whole numbers >= 8 (or None: all rows), got {list(sizes)}")
    fp, best = Config("fp32 baseline", FP, "fp"), EXPERIMENTS["T7"].configs[1]
    ctl = matched_control(best)  # fp32 fine-tuned with the 1-bit model's extra epochs and distillation, at every size
    plan = [(n, c, [sweep.Task(preset, c, seed=k, baseline_seed=k, experiment="data-size", source=source, fast=fast, train_rows=n)
                    for k in range(seeds)]) for n in sizes for c in (fp, best, ctl)]
    results = iter(sweep.run_tasks([t for *_, ts in plan for t in ts], store=store, runner=runner, address=address,
                                   threads=threads, callback=callback, gpus_per_task=gpus_per_task))
    runs = {(n, c.label): [next(results) for _ in ts] for n, c, ts in plan}
    rows = []
    for n in sizes:
        f = aggregate(fp, runs[(n, fp.label)])
        b = aggregate(best, runs[(n, best.label)], runs[(n, fp.label)])
        c = aggregate(ctl, runs[(n, ctl.label)], runs[(n, fp.label)])
        vs = against_control(runs[(n, best.label)], runs[(n, ctl.label)])
        rows.append({"train_rows": runs[(n, fp.label)][0].get("train_rows"), "all_rows": n is None, "seeds": seeds,
                     "fp32_accuracy": f["accuracy"], "fp32_accuracy_std": f.get("accuracy_std"),
                     "binary_accuracy": b["accuracy"], "binary_accuracy_std": b.get("accuracy_std"),
                     "gap": b.get("diff"), "gap_ci95": b.get("diff_ci95"), "no_measurable_difference": b.get("no_measurable_difference"),
                     "reduction_percent": b["reduction_percent"], "fp32_val_accuracy": f.get("val_accuracy"),
                     "binary_val_accuracy": b.get("val_accuracy"), "control_accuracy": c["accuracy"],
                     "control_accuracy_std": c.get("accuracy_std"), "gap_vs_control": vs.get("diff_vs_control"),
                     "gap_vs_control_ci95": vs.get("diff_vs_control_ci95")})
    budget = sweep.budget_of(plan[1][2][0])
    ctx = sweep.context(plan[0][2][0])
    payload = {"experiment": "data-size", "preset": preset, "binary": best.label, "rows": rows, "machine": machine(),
               "test_rows": len(ctx.splits.test), "baseline": baseline_budget(preset) if not fast else "fast (0.3 ep)",
               "date": time.strftime("%Y-%m-%d"), "budget": asdict(budget), "fast": fast, "interval": INTERVAL,
               "command": f"binlab experiments datasize --preset {preset} --seeds {seeds}"
               + f" --sizes {','.join('all' if n is None else str(n) for n in sizes)}" + (" --fast" if fast else "")}
    out_dir = out_dir or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"data-size-{preset}{'-fast' if fast else ''}"
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    stem.with_suffix(".md").write_text(data_size_markdown(payload))
    return stem.with_suffix(".md")


def data_size_markdown(payload: dict) -> str:
    b = payload["budget"]["train"]
    lines = [f"# fp32 vs the best 1-bit recipe by training rows ({payload['preset']})", "",
             f"1-bit: {payload['binary']} (QAT {b['epochs']} epoch(s), lr {b['lr']}, distillation {b['distill']}), each seed QAT'd "
             f"from the fp32 baseline trained with that seed on the same rows ({payload.get('baseline', 'the preset baseline')}). "
             f"Test: {payload.get('test_rows', 7600):,} AG_NEWS test rows. Gap: 1-bit minus fp32, with the 95 % "
             "interval over test rows and seeds (seed k's 1-bit model paired with its own baseline). The 1-bit model trains "
             f"{b['epochs']:g} epoch(s) more than the fp32 one (the QAT budget); the control, at every size, is the fp32 baseline "
             "fine-tuned with that same budget and distillation, so 'vs control' is the 1-bit cost at equal training "
             "('-': this file was made before the curve had controls). "
             + ("" if payload.get("interval") == INTERVAL else "Its intervals predate binlab's current one (a percentile bootstrap "
                "that covers less than 95 % with three seeds): read them as too narrow. ")
             + f"Machine: {machine_text(payload['machine'])}. Date: {payload['date']}.", f"Reproduce: `{payload['command']}`", "",
             "| training rows | seeds | fp32 accuracy % | 1-bit accuracy % | gap, pts [95 % CI] | equal-budget control % | "
             "1-bit vs control, pts [95 % CI] | reduction % |", "|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        gap = "-" if r["gap"] is None else (f"{r['gap']:+.2f} [{r['gap_ci95'][0]:+.2f}, {r['gap_ci95'][1]:+.2f}]"
                                             + (" no measurable difference" if r["no_measurable_difference"] else ""))
        ci = r.get("gap_vs_control_ci95")
        vs = "-" if r.get("gap_vs_control") is None else (f"{r['gap_vs_control']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"
                                                           + (" no measurable difference" if ci[0] <= 0 <= ci[1] else ""))
        control = "-" if r.get("control_accuracy") is None else accuracy_text({"accuracy": r["control_accuracy"],
                                                                                "accuracy_std": r.get("control_accuracy_std")})
        lines.append(f"| {r['train_rows']:,}{' (all here)' if r['all_rows'] else ''} | {r['seeds']} | "
                     f"{accuracy_text({'accuracy': r['fp32_accuracy'], 'accuracy_std': r['fp32_accuracy_std']})} | "
                     f"{accuracy_text({'accuracy': r['binary_accuracy'], 'accuracy_std': r['binary_accuracy_std']})} | {gap} | {control} | "
                     f"{vs} | {r['reduction_percent']:.2f} |")
    return "\n".join(lines) + "\n"
