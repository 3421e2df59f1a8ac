"""What a model's headline number is and how it reads, for either task, so a page never asks which
task it shows.

- :class:`TaskInfo` (from :func:`task_info`): the task's headline metric (accuracy for a classifier,
  perplexity for a language model), which direction is better, how to plot it, and what the model
  can do (generate text, classify a headline).
- :class:`Metric`: one measured value with its 95 % interval, the value of the model it is compared
  with on the same rows, and the change against it with its interval. A classifier's change is a
  difference in percentage points; a language model's is a ratio of perplexities (the exponential of
  the change of mean NLL per token). The intervals themselves are computed by the caller
  (:mod:`binlab.lab.live` with :mod:`binlab.experiments.stats`); this module only says what they mean.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .objective import task_of


@dataclass(frozen=True)
class TaskInfo:
    name: str  # "classify" | "lm" (binlab.nn.objective.task_of)
    metric: str  # the headline metric's name
    unit: str  # appended to a value: " %" or ""
    higher_is_better: bool
    log_scale: bool  # plot the metric on a log axis
    change: str  # "difference" (points) or "ratio"
    head_label: str  # what the last component is called on the component picker
    live_rows: int  # validation rows the live lab evaluates on every change
    can_generate: bool  # greedy text continuation makes sense
    classifies_text: bool  # a headline in, a class out
    shows_seed_points: bool  # the student project's (reduction, accuracy) points are on this metric's scale
    glance_rows: int  # rows of a change's first look (binlab.lab.live.LiveLab.glance), shown before the live_rows


TASKS = {
    "classify": TaskInfo("classify", "accuracy", " %", True, False, "difference", "Classifier", 1000, False, True, True, glance_rows=200),
    # a language model's exact perplexity costs a vocabulary-wide head per token: on 1,000 rows a change takes 2.6 s
    # median on 2 cores (docs/results/bench-live-loop-lm.md); 300 rows cut that work to about a third, and the
    # interval shown widens to match. Its first look takes 60 of those rows: on 200 it took 0.57 s median, 2.9x as
    # long in interleaved pairs (bench-live-loop-lm.md), leaving nothing of the 0.6 s a learner should wait for
    # first numbers for the page to draw
    "lm": TaskInfo("lm", "perplexity", "", False, True, "ratio", "LM head", 300, True, False, False, glance_rows=60),
}


def task_info(model_or_task) -> TaskInfo:
    """The :class:`TaskInfo` of a model (or of a task name)."""
    return TASKS[model_or_task if isinstance(model_or_task, str) else task_of(model_or_task)]


@dataclass(frozen=True)
class Metric:
    """One measured value, its 95 % interval, and its change against a reference on the same rows."""
    name: str  # "accuracy", "perplexity", "loss", "next-token accuracy"
    value: float
    unit: str = ""
    higher_is_better: bool = True
    change_kind: str = "difference"  # "difference": value - reference; "ratio": value / reference
    low: float | None = None
    high: float | None = None
    rows: int = 0
    tokens: int | None = None
    reference: float | None = None  # the compared model's value on the same rows
    reference_label: str = "fp32"
    change: float | None = None
    change_low: float | None = None
    change_high: float | None = None
    within_noise: bool | None = None  # the change's interval holds "no change"
    p_value: float | None = None  # McNemar's exact test (classifier accuracy)
    log_scale: bool = False

    def text(self, digits: int = 2) -> str:
        return f"{self.value:.{digits}f}{self.unit}"

    def interval_text(self) -> str:
        if self.low is None:
            return "no interval"
        d = 1 if self.unit else 2
        return f"95 % interval {self.low:.{d}f}-{self.high:.{d}f}{self.unit}"

    def change_text(self, digits: int | None = None) -> str:
        """The change against the reference, e.g. ``+0.40 pts vs fp32`` or ``x1.012 vs fp32 139.21``."""
        if self.change is None:
            return ""
        noise = " (within noise)" if self.within_noise else ""
        if self.change_kind == "ratio":
            return f"x{self.change:.{digits or 3}f} vs {self.reference_label}" + (
                f" {self.reference:.2f}" if self.reference is not None and self.reference_label == "fp32" else "") + noise
        unit = " pts" if self.unit.strip() == "%" else ""
        return f"{self.change:+.{digits or (2 if unit else 4)}f}{unit} vs {self.reference_label}" + noise

    def change_interval_text(self) -> str:
        if self.change_low is None:
            return ""
        if self.change_kind == "ratio":
            return f"x{self.change_low:.3f}-x{self.change_high:.3f}"
        unit = " pts" if self.unit.strip() == "%" else ""
        return f"{self.change_low:+.2f} to {self.change_high:+.2f}{unit}"

    def delta_color(self) -> str:
        """For ``st.metric``: grey when the change is within noise, else green where better."""
        if self.within_noise:
            return "off"
        return "normal" if self.higher_is_better else "inverse"

    def help(self) -> str:
        """What the number is, on which rows, and how sure it is."""
        on = f"{self.rows:,} rows" + (f" ({self.tokens:,} tokens)" if self.tokens else "")
        out = f"{self.name} on these {on}: {self.text()}, {self.interval_text()}."
        if self.change is not None:
            out += f" Against {self.reference_label} on the same rows: {self.change_text()}"
            if self.change_low is not None:
                out += f", 95 % interval {self.change_interval_text()} (paired"
                out += f"; McNemar p = {self.p_value:.3f})." if self.p_value is not None and not math.isnan(self.p_value) else ")."
            else:
                out += "."
        return out

    def caption(self) -> str:
        """One line under a result: value, interval, change and its interval."""
        out = f"{self.rows:,} rows" + (f" ({self.tokens:,} tokens)" if self.tokens else "") + f": {self.name} {self.text()} ({self.interval_text()})"
        if self.change is not None:
            out += f"; {self.change_text()}".replace(" (within noise)", "")
            if self.change_low is not None:
                out += f" (95 % interval {self.change_interval_text()}" + ("; within noise" if self.within_noise else "") + ")"
        return out

    def cost(self) -> float | None:
        """How much worse than the reference: points lost (a difference of a higher-is-better metric) or the
        ratio to the reference (a lower-is-better one, perplexity); None without a reference."""
        if self.change is None:
            return None
        if self.change_kind == "ratio":
            return self.change if not self.higher_is_better else 1 / self.change
        return -self.change if self.higher_is_better else self.change

    def cost_label(self) -> str:
        if self.change_kind == "ratio":
            return f"{self.name} / {self.reference_label}"
        return f"{self.name} drop" + (" (pts)" if self.unit.strip() == "%" else "")

    def error_bars(self) -> tuple[float, float]:
        """(above, below) the value, for a plot's error bars (0, 0 without an interval)."""
        if self.low is None:
            return 0.0, 0.0
        return self.high - self.value, self.value - self.low


def headline(info: TaskInfo, value: float, **kw) -> Metric:
    """A :class:`Metric` of the task's headline kind (its name, unit, direction and scale)."""
    return Metric(info.metric, value, unit=info.unit, higher_is_better=info.higher_is_better, change_kind=info.change,
                  log_scale=info.log_scale, **kw)
