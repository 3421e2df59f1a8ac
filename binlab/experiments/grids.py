"""Grid files for ``binlab sweep``: a YAML grid of presets x configurations x budgets x seeds read into
:class:`~binlab.experiments.sweep.Task` lists (every value type-checked), and the sweep's summary.

A grid file (YAML) for ``binlab sweep GRID.yaml``::

    presets: [scratch]
    seeds: [0, 1, 2]
    test: false            # false: validation only (choosing a recipe); true: final rows, test evaluated
    budgets:               # QAT budgets (fields of TrainConfig; epochs, lr, distill ...); default: the preset's
      - {epochs: 2, lr: 0.0005, distill: 0.5}
      - {epochs: 2, lr: 0.001, distill: 0.5}
    specs:
      - {label: "xnor encoder", mode: qat, spec: {"rules": [{"target": "encoder", "method": {"method": "xnor"}}]}}
      - {experiment: T7, only: [1, 3]}   # configurations of a table
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from binlab.nn.model import build
from binlab.nn.quantize import QuantSpec, plan
from binlab.presets import get_preset
from binlab.training.train import TrainConfig

from .catalog import EXPERIMENTS, Config
from .provenance import machine, machine_text
from .sweep import Task, budget_of


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v):
    """YAML 1.1 reads ``1e-3`` as text: a string that is a number is taken as one."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _budget(preset: str, fields: dict, path):
    """A grid budget: the preset's QAT budget (its freeze list and other settings kept) with these training fields."""
    base = get_preset(preset).qat
    try:
        return replace(base, train=replace(base.train, **fields))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: budget {fields}: {err}") from None


def check_targets(preset: str, configs) -> None:
    """ValueError naming the target of a config that selects no component of ``preset``'s model (built
    on the meta device: no weights, no data)."""
    import torch


    with torch.device("meta"):
        model = build(replace(get_preset(preset).model, vocab_size=64))
    for c in configs:
        try:
            plan(model, c.spec)
        except ValueError as err:
            raise ValueError(f"{c.label!r} on {preset}: {err}") from None


def load_grid(path: str | Path, source: str | None = None) -> list[Task]:
    """The tasks of a grid file (see the module docstring); ValueError saying what is wrong."""
    import json

    import yaml


    try:
        g = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise ValueError(f"cannot read the grid file {path}: {err}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(g, dict):
        raise ValueError(f"{path}: a grid is a mapping with presets, specs, and optionally seeds, budgets, test")
    unknown = set(g) - {"presets", "specs", "seeds", "budgets", "test", "baseline_seeds", "train_rows"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    presets, specs = g.get("presets"), g.get("specs")
    if not presets or not isinstance(presets, list) or not specs or not isinstance(specs, list):
        raise ValueError(f"{path}: 'presets' and 'specs' must be non-empty lists")
    seeds = g.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(_whole(k) for k in seeds):
        raise ValueError(f"{path}: 'seeds' must be a non-empty list of whole numbers >= 0, got {seeds!r}")
    test = g.get("test", True)
    if not isinstance(test, bool):
        raise ValueError(f"{path}: 'test' must be true or false")
    configs = []
    for i, s in enumerate(specs):
        if not isinstance(s, dict):
            raise ValueError(f"{path}: specs[{i}] must be a mapping")
        if "experiment" in s:
            exp = EXPERIMENTS.get(s["experiment"]) if isinstance(s["experiment"], str) else None
            if exp is None:
                raise ValueError(f"{path}: specs[{i}]: unknown experiment {s['experiment']!r}; choose one of {sorted(EXPERIMENTS)}")
            only = s.get("only", list(range(len(exp.configs))))
            if not isinstance(only, list) or any(not _whole(j) or not 0 <= j < len(exp.configs) for j in only):
                raise ValueError(f"{path}: specs[{i}]: 'only' must list indices 0..{len(exp.configs) - 1} of {exp.name}")
            configs += [exp.configs[j] for j in only]
            continue
        if "label" not in s or "spec" not in s:
            raise ValueError(f"{path}: specs[{i}] needs 'label' and 'spec' (QuantSpec JSON), or 'experiment'")
        raw = s["spec"] if isinstance(s["spec"], str) else json.dumps(s["spec"])
        mode = s.get("mode", "qat")
        if mode not in ("fp", "ptq", "qat"):
            raise ValueError(f"{path}: specs[{i}]: mode must be fp, ptq or qat, got {mode!r}")
        configs.append(Config(str(s["label"]), QuantSpec.from_json(raw), mode))
    budgets = [None]
    if g.get("budgets"):
        if not isinstance(g["budgets"], list) or not all(isinstance(b, dict) for b in g["budgets"]):
            raise ValueError(f"{path}: 'budgets' must be a list of mappings of TrainConfig fields")
        budgets = []
        fields = set(TrainConfig.__dataclass_fields__) - {"seed"}
        for b in g["budgets"]:
            bad = sorted(set(b) - fields)
            if bad:
                raise ValueError(f"{path}: budget {b}: unknown field(s) {bad}" + (" (seeds go in 'seeds:')" if "seed" in bad else "")
                                 + f"; TrainConfig has {sorted(fields)}")
            budgets.append({k: _number(v) for k, v in b.items()})
    train_rows = g.get("train_rows", [None])
    if not isinstance(train_rows, list):
        train_rows = [train_rows]
    if not all(r is None or (_whole(r) and r >= 1) for r in train_rows):
        raise ValueError(f"{path}: 'train_rows' must be whole numbers >= 1 (or null: all rows), got {train_rows!r}")
    base_seeds = g.get("baseline_seeds")
    if base_seeds not in (None, "same"):
        raise ValueError(f"{path}: 'baseline_seeds' is 'same' (seed k also retrains the fp32 baseline with seed k) or absent (baseline seed 0)")
    for preset in presets:  # every target must name components of every preset's model: fail before anything trains
        check_targets(str(preset), configs)
    tasks = []
    for preset in presets:
        for rows in train_rows:
            for c in configs:
                for fields in budgets:
                    b = None if fields is None else _budget(str(preset), fields, path)
                    for k in (seeds if c.mode == "qat" or base_seeds == "same" else seeds[:1]):
                        bs = k if base_seeds == "same" else 0
                        tasks.append(Task(str(preset), c, seed=int(k), baseline_seed=bs, budget=b, source=source,
                                          train_rows=rows, test=test))
    return tasks


# ---------------------------------------------------------------------------------------------
# a sweep's summary


def summary(tasks: list[Task], rows: list[dict], grid: str | None = None) -> dict:
    """The sweep's rows (budget, seed, validation and, where evaluated, test accuracy) and, for each
    (preset, configuration), the budget with the best mean validation accuracy over its seeds: the choice,
    made on validation only."""
    import time


    out, groups = [], {}
    for t, r in zip(tasks, rows):
        b = budget_of(t).train
        item = {"preset": t.preset, "label": t.config.label, "mode": r["mode"], "seed": t.seed, "baseline_seed": t.baseline_seed,
                "train_rows": r.get("train_rows"), "epochs": b.epochs, "lr": b.lr, "distill": b.distill,
                "val_accuracy": r.get("val_accuracy"), "test_accuracy": r.get("accuracy") if t.test else None,
                "train_seconds": r.get("train_seconds")}
        out.append(item)
        groups.setdefault((t.preset, t.config.label, t.train_rows), {}).setdefault((b.epochs, b.lr, b.distill), []).append(item["val_accuracy"])
    best = []
    for (preset, label, rows_used), by_budget in groups.items():
        scored = {k: sum(v) / len(v) for k, v in by_budget.items() if all(x is not None for x in v)}
        if scored:
            (epochs, lr, distill), val = max(scored.items(), key=lambda kv: kv[1])
            best.append({"preset": preset, "label": label, "train_rows": rows_used, "epochs": epochs, "lr": lr, "distill": distill, "val_accuracy": val,
                         "seeds": len(by_budget[(epochs, lr, distill)])})
    return {"grid": grid, "rows": out, "best_by_validation": best, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "command": f"binlab sweep {grid}" if grid else None}


def summary_markdown(payload: dict) -> str:
    lines = [f"# Sweep: {payload.get('grid') or 'tasks'}", "",
             f"Machine: {machine_text(payload['machine'])}. Date: {payload['date']}." + (f" Reproduce: `{payload['command']}`" if payload.get("command") else ""),
             "", "Chosen on validation (the highest mean validation accuracy over seeds, per configuration); a selection grid "
                 "does not evaluate the test split. A validation sample of n rows measures an accuracy near p to about "
                 "+-1.96 sqrt(p(1-p)/n) (+-1.9 points at p = 0.89, n = 1,000): budgets closer than that are not told apart, "
                 "so the choice follows the protocol and is not evidence that the chosen budget is better.", ""]
    for b in payload["best_by_validation"]:
        lines.append(f"- {b['preset']} / {b['label']}: {b['epochs']:g} epoch(s), lr {b['lr']:g}, distillation {b['distill']:g} "
                     f"(validation {b['val_accuracy']:.2f} %, {b['seeds']} seed(s))")
    lines += ["", "| preset | configuration | epochs | lr | distillation | seed | val accuracy % | test accuracy % | train s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        val = "-" if r["val_accuracy"] is None else f"{r['val_accuracy']:.2f}"
        test = "not evaluated (selection)" if r["test_accuracy"] is None else f"{r['test_accuracy']:.2f}"
        lines.append(f"| {r['preset']} | {r['label']} | {r['epochs']:g} | {r['lr']:g} | {r['distill']:g} | {r['seed']} | {val} | {test} | "
                     f"{(r['train_seconds'] or 0):.0f} |")
    return "\n".join(lines) + "\n"
