"""What every course notebook starts and ends with, written once: the FAST switch, the preset, the
cached baseline, and the "check yourself" block of its lesson (:mod:`binlab.lab.lessons`).

    from binlab.lab import course
    FAST, PRESET = course.start()               # FAST=1 in the environment: the tiny preset, short runs
    splits, model = course.baseline(PRESET)     # AG_NEWS and the preset's fp32 model, trained once, cached
    ...
    lesson = course.ask("components")           # prints the question and numbered choices
    my_prediction = None                        # <- the number of your choice, before the next cell
    outcome = course.answer(lesson, my_prediction, model, splits, FAST)
"""
from __future__ import annotations

import os


def start() -> tuple[bool, str]:
    """(FAST, preset): ``FAST=1`` in the environment picks the ``tiny`` preset and shorter runs (what
    the tests use; figures then render as JSON), otherwise ``scratch``, the student project's setup.
    Plotly renders into the notebook."""
    import plotly.io as pio

    fast = os.environ.get("FAST", "0") == "1"
    # FAST: figures as JSON (the tests read them); the committed course (``execute``): PNG pictures, which
    # GitHub shows (it drops the interactive charts' scripts); otherwise interactive charts
    pio.renderers.default = "json" if fast else os.environ.get("BINLAB_PLOTLY_RENDERER", "notebook_connected")
    preset = "tiny" if fast else "scratch"
    print(f"preset {preset}" + (" (FAST=1: small data, short runs; the numbers are not the course's)" if fast else ""))
    return fast, preset


def baseline(preset: str):
    """(splits, model): AG_NEWS (from ``$BINLAB_DATA``, else the hub; a clear error says how to fix a
    missing source) and the preset's fp32 baseline, trained once (a progress bar) and cached on disk."""
    from binlab.presets import get_baseline, load_data
    from binlab.progress import training_bar

    splits = load_data(preset)
    model, meta = get_baseline(preset, splits, callback=training_bar())
    metric = (f"fp32 validation perplexity {meta['val_perplexity']:.2f}" if meta.get("val_perplexity") is not None
              else f"fp32 validation accuracy {100 * meta['val_accuracy']:.2f} %")
    print(f"{preset}: {len(splits.train):,} training rows, {metric}")
    return splits, model


def ask(key: str):
    """Print a lesson's question and its numbered choices; return the lesson."""
    from .lessons import lesson

    les = lesson(key)
    print(les.question)
    for i, c in enumerate(les.choices):
        print(f"  {i}: {c}")
    print("Write the number of your prediction in my_prediction, then run the next cell.")
    return les


def answer(les, my_prediction, model, splits, fast: bool = False):
    """Run the lesson's experiment on ``model`` and say whether it supports ``my_prediction`` (a
    choice's number or text). With no prediction (None) it shows the measurement and asks for a
    prediction next time: "Run All" never answers for the learner. Returns the :class:`~binlab.lab.lessons.Outcome`."""
    from .lessons import Context, check

    if my_prediction is not None and not isinstance(my_prediction, str):
        if not isinstance(my_prediction, int) or not 0 <= my_prediction < len(les.choices):
            raise ValueError(f"my_prediction must be a choice's number, 0 to {len(les.choices) - 1}, got {my_prediction!r}")
        my_prediction = les.choices[my_prediction]
    outcome = les.run(Context(model, splits, fast=fast))
    if my_prediction is None:
        told = " or ".join(f"'{a}'" for a in outcome.answers)
        print(f"No prediction written, so nothing to check: the experiment says {told}. {les.why}\n"
              "Next time write your prediction first: a guess you can be wrong about is what makes the result stick.")
    else:
        print(check(les, my_prediction, outcome)[1])
    return outcome


def code_fingerprint(nb) -> str:
    """A notebook's code, fingerprinted: the SHA-256 of its code cells' source. Committed outputs carry
    the fingerprint of the code that made them (``metadata["binlab"]["code"]``), so a test can tell
    outputs older than the code they show."""
    import hashlib

    h = hashlib.sha256()
    for c in nb.cells:
        if c.cell_type == "code":
            h.update(c.source.encode())
            h.update(b"\0")
    return h.hexdigest()[:16]


def execute(path, timeout: int = 3600) -> dict:
    """Run a course notebook top to bottom in place (the full course, not FAST), keep its outputs (figures
    as PNG pictures when kaleido is installed, so the notebook reads on GitHub), and stamp it with the
    fingerprint of its code, the preset, the machine and each code cell's seconds.
    Returns the stamp. ``python -m binlab.lab.course notebooks/*.ipynb`` runs them all."""
    import time
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    from binlab.experiments.provenance import machine

    if os.environ.get("FAST", "0") == "1":
        raise ValueError("committed outputs come from the full course: unset FAST")
    env = dict(os.environ)
    try:  # the committed figures are pictures, so the course reads on GitHub (plotly's PNG export needs kaleido)
        import kaleido  # noqa: F401
        env["BINLAB_PLOTLY_RENDERER"] = "png"
    except ImportError:
        import warnings

        warnings.warn("kaleido is not installed (pip install 'binlab[course]'): figures are kept interactive, "
                      "and GitHub will not show them", stacklevel=2)
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    seconds: list[float] = []
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel(env=env):
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            t0 = time.perf_counter()
            client.execute_cell(cell, i)
            seconds.append(round(time.perf_counter() - t0, 1))
    stamp = {"code": code_fingerprint(nb), "preset": "scratch", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
             "cell_seconds": seconds}
    nb.metadata["binlab"] = stamp
    nbformat.write(nb, path)
    return stamp


if __name__ == "__main__":
    import sys

    for p in sys.argv[1:]:
        print(p, execute(p), flush=True)
