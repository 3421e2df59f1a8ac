"""How a table row's numbers are written: in the markdown tables, the findings and the Results page."""
from __future__ import annotations


def fmt(v, f="{:.2f}"):
    """A number as the tables print it, "-" for none."""
    return "-" if v is None else (f.format(v) if isinstance(v, (int, float)) else str(v))


def accuracy_text(r: dict, key: str = "accuracy") -> str:
    """Mean over seeds, +- the seeds' standard deviation when there are several."""
    v, sd = r.get(key), r.get(f"{key}_std")
    return fmt(v) if sd is None else f"{v:.2f} ± {sd:.2f}"


def change_text(value: float, ci, unit: str = "", sep: str = " ") -> str:
    """A signed change with its 95 % interval, e.g. ``+0.37 [-0.73, +1.48] no measurable difference`` (the words
    where the interval holds 0); ``unit`` follows the value (" points"), ``sep`` precedes the words."""
    lo, hi = ci
    return f"{value:+.2f}{unit} [{lo:+.2f}, {hi:+.2f}]" + (f"{sep}no measurable difference" if lo <= 0 <= hi else "")


def vs_control_text(r: dict) -> str:
    """A QAT row against the equal-budget control, with its interval (markdown and the Results page)."""
    if not r.get("diff_vs_control_ci95"):
        return "-" if r.get("diff_vs_control") is None else f"{r['diff_vs_control']:+.2f} (no interval)"
    return change_text(r["diff_vs_control"], r["diff_vs_control_ci95"])


def seeds_text(r: dict) -> str:
    """How many seeds a row has (1 for a row stored before seeds were)."""
    return str(len(r.get("random_seeds") or [0]))


def diff_text(r: dict, fp: float | None = None) -> str:
    """The change against fp32 with its 95 % interval over test rows and seeds (:func:`binlab.experiments.stats.seed_diff`), or the
    plain difference for a row stored before intervals were."""
    if r.get("diff_ci95"):
        lo, hi = r["diff_ci95"]
        return f"{r['diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]" + (" no measurable difference" if r.get("no_measurable_difference") else "")
    if fp is None or r.get("mode") == "fp" or r.get("accuracy") is None:
        return "-"
    return f"{r['accuracy'] - fp:+.2f} (no interval)"


def ratio_text(r: dict, key: str = "ratio", plain: float | None = None) -> str:
    """A perplexity ratio (x fp32 or x control) with its 95 % interval (:func:`binlab.experiments.stats.seed_ratio`),
    or ``plain`` (the ratio of the table's perplexities) for a row stored before per-row NLL was."""
    if r.get(f"{key}_ci95"):
        lo, hi = r[f"{key}_ci95"]
        d = 4 if hi - lo < 0.01 else 3  # a narrow interval near 1 needs the fourth decimal to show which side it is on
        return f"{r[key]:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]" + (" no measurable difference" if lo <= 1 <= hi else "")
    return "-" if plain is None else f"{plain:.2f} (no interval)"
