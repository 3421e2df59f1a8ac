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

Grid files (``binlab sweep GRID.yaml``) are read by :mod:`binlab.experiments.grids`.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, replace
from typing import Callable

from binlab.data import cache_dir
from binlab.presets import baseline_stem, cached_baseline, get_baseline, get_preset, load_data
from binlab.training.calibration import calibration_set

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
    from .provenance import hardware

    return row | {"baseline_seed": task.baseline_seed, "train_rows": len(ctx.splits.train), "val_rows": len(ctx.splits.val),
                  "preset": task.preset, "hardware": hardware()}


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
