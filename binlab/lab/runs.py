"""Runs a learner keeps: one record per evaluated configuration (PTQ or QAT), in a small embedded
store (SQLite, one file under the cache folder) that survives sessions and crashes, and that
exports and imports as JSON.

A :class:`Run` holds what the Compare page shows side by side: accuracy on the evaluated rows with
its 95 % Wilson interval, exact size and reduction, bits per quantized weight, per-class accuracy and
the confusion matrix (rows: true class, columns: predicted), plus the spec and how it was made.
:func:`measure` computes one from a model (classifiers; a language model gets perplexity instead
of the per-class figures).
"""
from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from binlab.nn.metric import Metric, headline, task_info

FORMAT = "binlab-runs/1"
#: what one run and one upload may hold: a shared server lists every run on every visit, so an upload is bounded
MAX_IMPORT_RUNS = 500
MAX_IMPORT_BYTES = 2_000_000
MAX_TEXT = {"label": 200, "mode": 80, "preset": 40, "spec": 20_000, "split": 10, "id": 40, "created": 40}
MAX_CLASSES = 16
MAX_EXTRA_KEYS = 32


@dataclass
class Run:
    preset: str
    mode: str  # "PTQ", "QAT" or a recipe's name
    label: str
    spec: str  # QuantSpec JSON
    rows: int  # rows the figures were measured on
    split: str  # "val" or "test"
    accuracy: float  # percent
    low: float  # 95 % interval, percent
    high: float
    size_bytes: float
    reduction: float  # percent, against the fp32 model
    bits_per_weight: float  # stored bits per quantized weight
    per_class: dict = field(default_factory=dict)  # class -> accuracy percent
    confusion: list = field(default_factory=list)  # [true][predicted] counts
    perplexity: float | None = None
    extra: dict = field(default_factory=dict)  # epochs, learning rate, distillation ...
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))

    def __post_init__(self):
        for name in ("preset", "mode", "label", "spec", "split", "id", "created"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"run field {name!r} must be a string, got {getattr(self, name)!r}")
        for name in ("accuracy", "low", "high", "size_bytes", "reduction", "bits_per_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise ValueError(f"run field {name!r} must be a finite number, got {v!r}")
        if isinstance(self.rows, bool) or not isinstance(self.rows, int) or self.rows < 1:
            raise ValueError(f"run field 'rows' must be a positive int, got {self.rows!r}")
        if not isinstance(self.per_class, dict) or not isinstance(self.confusion, list) or not isinstance(self.extra, dict):
            raise ValueError("run fields per_class and extra must be objects and confusion a list")
        for name, n in MAX_TEXT.items():
            if len(getattr(self, name)) > n:
                raise ValueError(f"run field {name!r} is {len(getattr(self, name)):,} characters long; at most {n:,}")
        if len(self.per_class) > MAX_CLASSES or len(self.confusion) > MAX_CLASSES or \
                any(not isinstance(row, list) or len(row) > MAX_CLASSES for row in self.confusion):
            raise ValueError(f"run fields per_class and confusion hold at most {MAX_CLASSES} classes")
        if len(self.extra) > MAX_EXTRA_KEYS or len(json.dumps(self.extra, default=str)) > MAX_TEXT["spec"]:
            raise ValueError(f"run field 'extra' holds at most {MAX_EXTRA_KEYS} small values")

    @property
    def metric(self) -> Metric:
        """The run's headline :class:`~binlab.nn.metric.Metric`: perplexity for a language model (no
        interval stored), else accuracy with its 95 % interval."""
        if self.perplexity is not None:
            return headline(task_info("lm"), self.perplexity, rows=self.rows)
        return headline(task_info("classify"), self.accuracy, low=self.low, high=self.high, rows=self.rows)

    @classmethod
    def from_dict(cls, d: dict) -> "Run":
        if not isinstance(d, dict):
            raise ValueError(f"a run must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown run field(s) {sorted(unknown)}")
        try:
            return cls(**d)
        except TypeError as err:  # a required field missing
            raise ValueError(f"incomplete run: {err}") from None


def measure(model: torch.nn.Module, reference: torch.nn.Module, split, *, preset: str, mode: str, label: str,
            spec_json: str, split_name: str = "val", rows: int = 1000, extra: dict | None = None) -> Run:
    """Evaluate ``model`` on the first ``rows`` rows of ``split`` and size it against ``reference`` (the fp32 model)."""
    from binlab.data import CLASSES
    from binlab.experiments.stats import wilson_interval
    from binlab.nn.objective import task_of
    from binlab.runtime.size import model_size, reduction_against
    from binlab.training.train import evaluate, predict

    part = split.head(rows)
    size = model_size(model)
    common = dict(preset=preset, mode=mode, label=label, spec=spec_json, rows=len(part), split=split_name,
                  size_bytes=size.total_bytes, reduction=reduction_against(model, reference),
                  bits_per_weight=size.bits_per_weight(), extra=dict(extra or {}))
    if task_of(model) == "lm":
        r = evaluate(model, part)
        n = r.tokens or len(part)
        lo, hi = wilson_interval(int(round(r.accuracy * n)), n)
        return Run(accuracy=100 * r.accuracy, low=100 * lo, high=100 * hi, perplexity=r.perplexity, **common)
    logits, labels = predict(model, part)
    pred = logits.argmax(1)
    k = len(CLASSES)
    conf = np.zeros((k, k), dtype=int)
    np.add.at(conf, (labels, pred), 1)
    correct = int(np.trace(conf))
    lo, hi = wilson_interval(correct, len(labels))
    acc = correct / len(labels)
    lo, hi = min(lo, acc), max(hi, acc)  # the closed form's rounding at 0 % or 100 %
    per_class = {c: 100 * float(conf[i, i] / conf[i].sum()) for i, c in enumerate(CLASSES) if conf[i].sum()}
    return Run(accuracy=100 * acc, low=100 * lo, high=100 * hi, per_class=per_class,
               confusion=conf.tolist(), **common)


class RunStore:
    """The runs on disk (SQLite: every add is one committed transaction, so a crash loses nothing)."""

    def __init__(self, path: str | Path | None = None):
        from binlab.experiments.store import open_sqlite

        self.path = open_sqlite(path, "runs.sqlite", "CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, preset TEXT, created TEXT, body TEXT)",
                                "run store")
        self.skipped = 0  # records the last list() could not read

    def _db(self):
        return sqlite3.connect(self.path, timeout=10)

    def add(self, run: Run, replace: bool = False) -> Run:
        """Store ``run``. A run whose id is already stored is kept as it is and the new one gets a fresh id
        (``replace=True`` overwrites instead); returns the run as stored."""
        with self._db() as db:
            if not replace and db.execute("SELECT 1 FROM runs WHERE id = ?", (run.id,)).fetchone():
                run = dataclasses.replace(run, id=uuid.uuid4().hex[:12])
            db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?)", (run.id, run.preset, run.created, json.dumps(asdict(run))))
        return run

    def list(self, preset: str | None = None) -> list[Run]:
        """The stored runs (of ``preset``), oldest first; records that cannot be read are counted in
        :attr:`skipped` (the page says so) instead of shown."""
        q = "SELECT body FROM runs" + (" WHERE preset = ?" if preset else "") + " ORDER BY rowid"  # insertion order
        try:
            with self._db() as db:
                rows = db.execute(q, (preset,) if preset else ()).fetchall()
        except sqlite3.DatabaseError as err:
            raise ValueError(f"the run store {self.path} is damaged ({err}); move it away or delete it to start an empty one") from None
        out, self.skipped = [], 0
        for (body,) in rows:
            try:
                out.append(Run.from_dict(json.loads(body)))
            except (ValueError, TypeError, json.JSONDecodeError):
                self.skipped += 1  # damaged, or written by a newer version: counted and reported, not fatal
        return out

    def get(self, run_id: str) -> Run:
        hit = [r for r in self.list() if r.id == run_id]
        if not hit:
            raise ValueError(f"no run {run_id!r} in {self.path}")
        return hit[0]

    def delete(self, run_id: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))


def export_json(runs: list[Run]) -> str:
    return json.dumps({"format": FORMAT, "runs": [asdict(r) for r in runs]}, indent=1)


def import_json(text: str | bytes) -> list[Run]:
    """Runs from :func:`export_json`'s text; a ValueError saying what is wrong otherwise."""
    if len(text) > MAX_IMPORT_BYTES:
        raise ValueError(f"a runs file holds at most {MAX_IMPORT_BYTES // 1_000_000} MB; this one has {len(text) / 1e6:.1f} MB")
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
        raise ValueError(f"not a runs file: {err}") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT or not isinstance(d.get("runs"), list):
        raise ValueError(f"not a runs file: expected an object with format {FORMAT!r} and a list 'runs'")
    if len(d["runs"]) > MAX_IMPORT_RUNS:
        raise ValueError(f"a runs file holds at most {MAX_IMPORT_RUNS} runs; this one has {len(d['runs']):,}")
    return [Run.from_dict(r) for r in d["runs"]]
