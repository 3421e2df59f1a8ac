"""A class's shared store: what every learner pinned and predicted, for the teacher's Class page.

The teacher starts the lab with a class name (``binlab app --class NAME``, or ``?class=NAME`` in the
link); every learner picks a nickname (no personal data is asked for). Pinned runs and lesson
predictions then go to one SQLite file in the cache folder, shared by every session of the server:

- ``pins``: a learner's pinned :class:`~binlab.lab.runs.Run` (its configuration, metric, interval, size);
- ``predictions``: one answer per learner per lesson (a later answer replaces the earlier one);
- ``answers``: what a lesson's experiment measured the last time a learner of the class ran it (the
  answers the measurement accepts, and its summary);
- ``reveals``: the lessons whose measured answer the teacher has shown to the class.

The file runs in SQLite's write-ahead-log mode with a generous busy timeout, and every write is one
short committed transaction, so thirty learners pinning at once lose nothing
(``tests/test_classroom.py`` runs parallel writer processes and counts the rows).
"""
from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path

from binlab.experiments.store import open_sqlite

from .runs import Run

SCHEMA = ("CREATE TABLE IF NOT EXISTS pins (class TEXT, nick TEXT, created REAL, body TEXT);"
          "CREATE TABLE IF NOT EXISTS predictions (class TEXT, lesson TEXT, nick TEXT, choice TEXT, created REAL, "
          "PRIMARY KEY (class, lesson, nick));"
          "CREATE TABLE IF NOT EXISTS reveals (class TEXT, lesson TEXT, PRIMARY KEY (class, lesson));"
          "CREATE TABLE IF NOT EXISTS answers (class TEXT, lesson TEXT, accepted TEXT, summary TEXT, PRIMARY KEY (class, lesson))")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
MAX_NICK = 24
MAX_PINS_PER_LEARNER = 50


def check_class_name(name: str) -> str:
    """A class name: 1-40 letters, digits, ``_``, ``-`` or ``.``, starting with a letter or digit."""
    if not isinstance(name, str) or not NAME.match(name.strip()):
        raise ValueError(f"a class name is 1-40 letters, digits, '_', '-' or '.', starting with a letter or digit; got {name!r}")
    return name.strip()


def check_nick(nick: str) -> str:
    """A nickname: 1-24 printable characters (no personal data needed; any name the learner likes)."""
    nick = nick.strip() if isinstance(nick, str) else ""
    if not nick or len(nick) > MAX_NICK or not nick.isprintable():
        raise ValueError(f"a nickname is 1-{MAX_NICK} printable characters; got {nick!r}")
    return nick


class ClassRoom:
    """One class's view of the shared store (``path``: default ``<cache>/classes.sqlite``)."""

    def __init__(self, name: str, path: str | Path | None = None):
        self.name = check_class_name(name)
        self.path = open_sqlite(path, "classes.sqlite", "SELECT 1", "class store")
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _db(self):
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("PRAGMA busy_timeout = 60000")
        return db

    def _write(self, sql: str, args: tuple) -> None:
        for attempt in range(5):  # a writer that still finds the file locked after the timeout waits and retries
            try:
                with self._db() as db:
                    db.execute(sql, args)
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    # ---------------------------------------------------------------------------------- pins
    def pin(self, nick: str, run: Run) -> None:
        """Share ``run`` with the class under ``nick`` (at most 50 per learner; the oldest go first)."""
        nick = check_nick(nick)
        self._write("INSERT INTO pins VALUES (?, ?, ?, ?)", (self.name, nick, time.time(), json.dumps(asdict(run))))
        with self._db() as db:
            n = db.execute("SELECT COUNT(*) FROM pins WHERE class = ? AND nick = ?", (self.name, nick)).fetchone()[0]
            if n > MAX_PINS_PER_LEARNER:
                db.execute("DELETE FROM pins WHERE rowid IN (SELECT rowid FROM pins WHERE class = ? AND nick = ? "
                           "ORDER BY rowid LIMIT ?)", (self.name, nick, n - MAX_PINS_PER_LEARNER))

    def pins(self, preset: str | None = None) -> list[tuple[str, Run]]:
        """Every learner's pinned runs (of ``preset``), oldest first, as ``(nick, run)``; unreadable rows are skipped."""
        with self._db() as db:
            rows = db.execute("SELECT nick, body FROM pins WHERE class = ? ORDER BY rowid", (self.name,)).fetchall()
        out = []
        for nick, body in rows:
            try:
                run = Run.from_dict(json.loads(body))
            except (ValueError, TypeError, json.JSONDecodeError):
                continue
            if preset is None or run.preset == preset:
                out.append((nick, run))
        return out

    def best(self, preset: str, k: int = 10) -> list[tuple[str, Run]]:
        """The ``k`` best pinned runs of ``preset`` by their headline metric (accuracy up, perplexity down)."""
        runs = self.pins(preset)
        return sorted(runs, key=lambda nr: -nr[1].metric.value if nr[1].metric.higher_is_better else nr[1].metric.value)[:k]

    # --------------------------------------------------------------------------- predictions
    def predict(self, nick: str, lesson: str, choice: str) -> None:
        """Record ``nick``'s answer to ``lesson`` (a later answer replaces the earlier one)."""
        self._write("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?)",
                    (self.name, str(lesson), check_nick(nick), str(choice)[:200], time.time()))

    def tally(self, lesson: str) -> dict[str, int]:
        """How many learners chose each answer of ``lesson``."""
        with self._db() as db:
            rows = db.execute("SELECT choice, COUNT(*) FROM predictions WHERE class = ? AND lesson = ? GROUP BY choice",
                              (self.name, str(lesson))).fetchall()
        return dict(rows)

    def record_answer(self, lesson: str, accepted: list[str] | tuple[str, ...], summary: str) -> None:
        """What ``lesson``'s experiment measured (the answers it accepts), kept for the Class page."""
        self._write("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                    (self.name, str(lesson), json.dumps([str(a) for a in accepted]), str(summary)[:2000]))

    def answer(self, lesson: str) -> tuple[list[str], str] | None:
        """``(accepted answers, summary)`` of the last measurement of ``lesson`` in this class, or None."""
        with self._db() as db:
            row = db.execute("SELECT accepted, summary FROM answers WHERE class = ? AND lesson = ?", (self.name, str(lesson))).fetchone()
        return None if row is None else (json.loads(row[0]), row[1])

    def reveal(self, lesson: str, shown: bool = True) -> None:
        """Show (or hide again) ``lesson``'s measured answer on the Class page."""
        if shown:
            self._write("INSERT OR IGNORE INTO reveals VALUES (?, ?)", (self.name, str(lesson)))
        else:
            self._write("DELETE FROM reveals WHERE class = ? AND lesson = ?", (self.name, str(lesson)))

    def revealed(self, lesson: str) -> bool:
        with self._db() as db:
            return db.execute("SELECT 1 FROM reveals WHERE class = ? AND lesson = ?", (self.name, str(lesson))).fetchone() is not None

    def clear(self) -> None:
        """Forget this class's pins, predictions, answers and reveals (other classes in the store keep theirs):
        a class started over, or a demo class filled anew."""
        with self._db() as db:
            for table in ("pins", "predictions", "answers", "reveals"):
                db.execute(f"DELETE FROM {table} WHERE class = ?", (self.name,))

    def learners(self) -> list[str]:
        """Everyone who pinned or predicted something in this class."""
        with self._db() as db:
            rows = db.execute("SELECT nick FROM pins WHERE class = ? UNION SELECT nick FROM predictions WHERE class = ?",
                              (self.name, self.name)).fetchall()
        return sorted(n for (n,) in rows)
