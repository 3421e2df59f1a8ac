"""The experiment results store: one SQLite file, one row per trained-and-evaluated configuration.

Every configuration an experiment or a sweep runs (a preset, a spec, a training budget, a seed, and
the fp32 baseline it starts from) has a key (:func:`binlab.experiments.rows.row_key`); its result is written
as one committed transaction under that key, with ``INSERT OR IGNORE``, so

- a killed run loses at most the configuration it was computing, never a finished one;
- running the same grid again (or resuming it) finds the finished keys and skips them: no duplicates,
  even when two workers race to finish the same key;
- rows of many sweeps (Ray workers on other machines send their rows to the driver, which writes
  them) live side by side and tables are generated from them (:func:`binlab.experiments.aggregate`).
  A row shared by two experiments (an fp32 baseline, say) is stored once, under the experiment that
  ran it first: look rows up by key, not by the ``experiment`` column.

The default file is ``<cache>/results.sqlite`` (``BINLAB_CACHE`` moves the cache). It is not committed:
the tables in ``docs/results`` are what a run leaves in the repository.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from pathlib import Path


def open_sqlite(path: str | Path | None, default_name: str, schema: str, what: str) -> Path:
    """The SQLite file at ``path`` (default: ``<cache>/default_name``) with ``schema`` created; a file
    that is not a database is a ValueError naming ``what`` and saying what to do."""
    from binlab.data import cache_dir

    path = Path(path) if path is not None else cache_dir() / default_name
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with sqlite3.connect(path, timeout=60) as db:
            db.execute(schema)
    except sqlite3.DatabaseError as err:
        raise ValueError(f"the {what} {path} is damaged ({err}); move it away to start a new one") from None
    return path


def _digest(row: dict) -> str:
    return hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()


def _sealed(row: dict) -> str:
    """A row's stored text: the row and the hash of its content."""
    row = json.loads(json.dumps(row))
    return json.dumps(row | {"_sha256": _digest(row)})


def _verified(body: str, key: str) -> dict | None:
    """The row in ``body`` when it matches its hash (rows stored before hashes carry none and are taken as
    they are); None, with a warning, when a byte of it changed."""
    try:
        row = json.loads(body)
        digest = row.pop("_sha256", None)
        if digest is None or digest == _digest(row):
            return row
    except (json.JSONDecodeError, AttributeError, TypeError):
        pass
    import warnings

    warnings.warn(f"the stored result {key[:12]}... is damaged (it does not match its hash); it is left out and computed again", stacklevel=3)
    return None


class ResultStore:
    """Results by key (see the module docstring)."""

    def __init__(self, path: str | Path | None = None):
        self.path = open_sqlite(path, "results.sqlite", "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, experiment TEXT, "
                                "preset TEXT, label TEXT, seed INTEGER, created REAL, body TEXT)", "results store")

    @contextlib.contextmanager
    def _db(self):
        """A committed transaction; a damaged file is a ValueError naming it and what to do."""
        try:
            with sqlite3.connect(self.path, timeout=60) as db:
                yield db
        except sqlite3.DatabaseError as err:
            raise ValueError(f"the results store {self.path} is damaged ({err}); move it away to start a new one "
                             "(its rows are computed again)") from None

    def get(self, key: str) -> dict | None:
        """The row stored under ``key``; None when there is none, or when it no longer matches its hash (a
        damaged row is computed again: it is derived data)."""
        with self._db() as db:
            hit = db.execute("SELECT body FROM results WHERE key = ?", (key,)).fetchone()
        if hit is None:
            return None
        row = _verified(hit[0], key)
        if row is None:
            with self._db() as db:
                db.execute("DELETE FROM results WHERE key = ?", (key,))
        return row

    def put(self, key: str, row: dict, experiment: str | None = None, preset: str | None = None) -> bool:
        """Store ``row`` under ``key`` unless the key is there already; True when this call wrote it."""
        with self._db() as db:
            cur = db.execute("INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (key, experiment, preset, row.get("label"), row.get("random_seed"), time.time(), _sealed(row)))
            return cur.rowcount == 1

    def keys(self) -> set[str]:
        with self._db() as db:
            return {k for (k,) in db.execute("SELECT key FROM results")}

    def rows(self, experiment: str | None = None, preset: str | None = None) -> list[dict]:
        """Stored rows (with their ``key``), oldest first, optionally of one experiment and preset."""
        q, args = "SELECT key, body FROM results", []
        where = [(c, v) for c, v in (("experiment", experiment), ("preset", preset)) if v is not None]
        if where:
            q += " WHERE " + " AND ".join(f"{c} = ?" for c, _ in where)
            args = [v for _, v in where]
        with self._db() as db:
            out = db.execute(q + " ORDER BY rowid", args).fetchall()
        return [row | {"key": key} for key, body in out if (row := _verified(body, key)) is not None]

    def __len__(self) -> int:
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
