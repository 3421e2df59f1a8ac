"""Sweeps: grids of (preset x spec x budget x seed) run as tasks, in this process or on Ray.

A :class:`Task` is one configuration to train (or quantize) and evaluate. :func:`run_tasks` runs a list
of them and writes each finished row to the results store (:class:`binlab.experiments.store.ResultStore`) as it
arrives; rows already there (same key: baseline, spec, budget, seed, code) are not run again, so an
interrupted sweep resumes where it stopped, without duplicates.

Runners:

- ``"local"``: one task after another in this process (the default of ``binlab experiments run``);
- ``"ray"``: every task a Ray task (``pip install -e .[cluster]``). Without ``address`` a Ray is started
  on this machine; with ``address`` (``ray://host:10001`` or ``host:6379``) the driver joins that
  cluster, tasks go wherever it has room, and a task asks for a GPU when the cluster has any (the
  trainer then uses it). Workers only compute; the driver writes the store. Workers need binlab
  installed and the data where ``BINLAB_DATA`` says (it and ``BINLAB_CACHE`` are passed on).

Full-precision baselines are trained by the driver before any task starts, so two workers never train
the same one. ``threads`` fixes torch's thread count in every task (with the same value the two
runners give identical rows: tested on a tiny grid).

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

import functools
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from binlab.data import cache_dir
from binlab.nn.model import build
from binlab.nn.quantize import QuantSpec, plan
from binlab.presets import baseline_stem, cached_baseline, get_baseline, get_preset, load_data
from binlab.training.calibration import calibration_set
from binlab.training.train import TrainConfig

from .catalog import EXPERIMENTS, Config
from .provenance import machine
from .rows import CALIB_ROWS, code_fingerprint, compute_row, row_key
from .store import ResultStore

RUNNERS = ("local", "ray")


@dataclass(frozen=True)
class Task:
    """One configuration: ``config`` (a :class:`binlab.experiments.catalog.Config`) on ``preset``, QAT seed
    ``seed``, starting from the fp32 baseline trained with ``baseline_seed`` on ``train_rows`` training
    rows (None: all). ``budget``: a QATConfig (None: the preset's, with the config's changes)."""

    preset: str
    config: object
    seed: int = 0
    baseline_seed: int = 0
    experiment: str | None = None
    budget: object | None = None
    source: str | None = None
    fast: bool = False
    train_rows: int | None = None
    test: bool = True

    def __post_init__(self):

        get_preset(self.preset)  # an unknown preset fails here, with the list
        for name in ("seed", "baseline_seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {v!r}")
        if self.train_rows is not None and (not isinstance(self.train_rows, int) or self.train_rows < 1):
            raise ValueError(f"train_rows must be a whole number >= 1 or None, got {self.train_rows!r}")


def budget_of(task: Task, with_config: bool = True):
    """The QAT budget a task trains with: the task's or the preset's (fast: 0.2 epochs), the config's
    changes, and the task's seed."""

    b = task.budget or get_preset(task.preset).qat
    if task.fast:
        b = replace(b, train=replace(b.train, epochs=0.2))
    if with_config:
        b = task.config.budget(b)
    return replace(b, train=replace(b.train, seed=task.seed))


@dataclass
class Context:
    splits: object
    teacher: object
    meta: dict
    key_base: str
    calib: object = field(repr=False, default=None)


@functools.lru_cache(maxsize=8)
def _splits(preset: str, source: str | None, fast: bool, train_rows: int | None, where: tuple = ()):

    over = {"train_size": 300, "test_size": 200} if fast else {}
    if train_rows is not None:
        over["train_size"] = train_rows
    return load_data(get_preset(preset), source=source, **over)


@functools.lru_cache(maxsize=16)
def _context(preset: str, source: str | None, fast: bool, train_rows: int | None, baseline_seed: int, where: tuple = (),
             train: bool = True) -> Context:

    p = get_preset(preset)
    splits = _splits(preset, source, fast, train_rows, where)
    cfg = replace(p.train, seed=baseline_seed, **({"epochs": 0.3} if fast else {}))
    if train:
        teacher, meta = get_baseline(p, splits, cfg)
    else:  # a worker: the driver trained it; a worker that cannot see it must not train its own
        hit = cached_baseline(p, splits, cfg)
        if hit is None:
            raise RuntimeError(f"the fp32 baseline of {preset} (seed {baseline_seed}) is not in this worker's cache "
                               f"({where[1] if len(where) > 1 else 'BINLAB_CACHE'}): give the workers the driver's cache folder "
                               "(BINLAB_CACHE on a shared disk) or train it on the worker first (binlab train)")
        teacher, meta = hit
    # the stem's name (preset + a hash of the model, training settings, tokenizer and data), not its path:
    # a worker whose cache folder lives elsewhere computes the same key
    return Context(splits, teacher, meta, baseline_stem(p, splits, cfg).name, calibration_set(splits, CALIB_ROWS))


def context(task: Task, train: bool = True) -> Context:
    """The data, fp32 baseline (trained and cached on first use; with ``train=False`` a missing one is a
    RuntimeError) and calibration rows of a task."""

    # the data and cache a task resolves to are part of the memo's key (tests and users switch them)
    where = (os.environ.get("BINLAB_DATA"), str(cache_dir()))
    return _context(task.preset, task.source, task.fast, task.train_rows, task.baseline_seed, where, train)


def task_key(task: Task, code: str | None = None, train: bool = True) -> str:

    return row_key(task.config, budget_of(task), context(task, train).key_base, code or code_fingerprint(task.config.spec), task.test)


def execute(task: Task, code: str | None = None, threads: int | None = None, expect_key: str | None = None) -> dict:
    """Compute one task's row (nothing stored): what a worker runs. ``expect_key``: the driver's key of
    the task; a worker (which never trains a baseline) that computes another one (other data, other
    baseline, other code) raises instead of returning a row that would be filed under the wrong key."""
    import torch


    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        worker = expect_key is not None
        ctx = context(task, train=not worker)
        if worker and task_key(task, code, train=False) != expect_key:
            raise RuntimeError(f"task {task.config.label!r} (seed {task.seed}): this worker's data, baseline or code differ from "
                               "the driver's (its key does not match); give workers the same binlab, data and cache")
        row = compute_row(task.config, ctx.teacher, ctx.splits, budget_of(task), code, calib=ctx.calib, test=task.test)
    finally:
        torch.set_num_threads(old)
    return row | {"baseline_seed": task.baseline_seed, "train_rows": len(ctx.splits.train), "val_rows": len(ctx.splits.val),
                  "preset": task.preset}


def _ray():
    try:
        import ray
    except ImportError:
        raise ValueError("the Ray runner needs Ray: pip install -e '.[cluster]' (or use --runner local)") from None
    return ray


def run_tasks(tasks: list[Task], store=None, runner: str = "local", address: str | None = None, threads: int | None = None,
              callback: Callable | None = None, gpus_per_task: float | None = None) -> list[dict]:
    """Run ``tasks`` (those not in ``store`` yet) and return every task's row, in order, from the store.
    ``gpus_per_task`` (Ray): the GPU share each task asks for; default 1 on a cluster with GPUs, else 0
    (a fraction such as 0.25 puts four small tasks on one GPU; 0 keeps every task on CPUs)."""

    if runner not in RUNNERS:
        raise ValueError(f"unknown runner {runner!r}; choose one of {RUNNERS}")
    if address and runner != "ray":
        raise ValueError("--address joins a Ray cluster: use it with --runner ray")
    if gpus_per_task is not None:
        if runner != "ray":
            raise ValueError("--gpus-per-task is a Ray resource request: use it with --runner ray")
        if not (isinstance(gpus_per_task, (int, float)) and not isinstance(gpus_per_task, bool) and gpus_per_task >= 0
                and (gpus_per_task <= 1 or float(gpus_per_task).is_integer())):
            raise ValueError(f"--gpus-per-task must be 0, a fraction in (0, 1] or a whole number, got {gpus_per_task!r}")
    store = store if store is not None else ResultStore()
    log = callback or (lambda *_: None)
    codes = {}  # spec JSON -> the code fingerprint of its row, taken once, before anything runs
    for t in tasks:
        if t.config.spec.to_json() not in codes:
            codes[t.config.spec.to_json()] = code_fingerprint(t.config.spec)
    for t in tasks:  # every baseline, trained here first (cached): workers only load them
        context(t)
    keys = [task_key(t, codes[t.config.spec.to_json()]) for t in tasks]
    done = store.keys()
    todo, seen = [], set()
    for t, k in zip(tasks, keys):
        if k not in done and k not in seen:
            todo.append((t, k))
            seen.add(k)
    distinct = len(set(keys))
    log(f"{len(tasks)} task(s), {distinct} distinct: {distinct - len(todo)} already in {store.path}, {len(todo)} to run ({runner})")

    def finish(t: Task, k: str, row: dict, i: int):
        store.put(k, row, t.experiment, t.preset)
        acc = row.get("accuracy", row.get("val_accuracy"))
        log(f"[{i}/{len(todo)}] {t.experiment or 'sweep'}/{t.preset} {row['label']} seed {t.seed}"
            + (f" (baseline seed {t.baseline_seed})" if t.baseline_seed else "") + (f": {acc:.2f} %" if acc is not None else ""))

    if runner == "local" or not todo:
        for i, (t, k) in enumerate(todo, 1):
            log(f"[{i}/{len(todo)}] {t.config.label} ({t.config.mode}, seed {t.seed}) ...")
            finish(t, k, execute(t, codes[t.config.spec.to_json()], threads), i)
    else:
        ray = _ray()
        if not ray.is_initialized():
            env = {k: v for k, v in os.environ.items() if k.startswith("BINLAB_")}
            if address:
                ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
        gpus = ray.cluster_resources().get("GPU", 0)
        # by default, on a cluster with GPUs every task asks for one (the trainer then uses it); CPU-only nodes are left out
        want = (1 if gpus else 0) if gpus_per_task is None else gpus_per_task
        if want and not gpus:
            raise ValueError(f"--gpus-per-task {gpus_per_task} but this Ray cluster has no GPU; leave it out or use 0")
        remote = ray.remote(execute).options(num_cpus=threads or 1, num_gpus=want)
        pending = {remote.remote(t, codes[t.config.spec.to_json()], threads, k): (t, k) for t, k in todo}
        i, failed = 0, []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            t, k = pending.pop(ready[0])
            i += 1
            try:
                row = ray.get(ready[0])
            except Exception as err:  # noqa: BLE001 - one failed task must not lose the others' rows
                failed.append(f"{t.config.label!r} seed {t.seed}: {err}")
                log(f"[{i}/{len(todo)}] FAILED {t.config.label} seed {t.seed}: {type(err).__name__}")
                continue
            finish(t, k, row, i)
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(todo)} task(s) failed (the others are stored; run again to retry): "
                               + "; ".join(failed)[:2000])
    out = []
    for t, k in zip(tasks, keys):
        row = store.get(k)
        if row is None:
            raise RuntimeError(f"task {t.config.label!r} (seed {t.seed}) finished without a stored row")
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------
# grid files


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
             f"Machine: {payload['machine']}. Date: {payload['date']}." + (f" Reproduce: `{payload['command']}`" if payload.get("command") else ""),
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
