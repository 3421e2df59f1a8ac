"""Progress bars for long work, the same in the CLI and in notebooks (``tqdm.auto``: a text bar in a
terminal, a widget in Jupyter). Each returns a callback for binlab's long-running functions."""
from __future__ import annotations

import sys


def training_bar(desc: str | None = None):
    """Callback for :func:`binlab.training.train.train` / :func:`binlab.training.qat.qat` events: a bar over steps with the loss,
    and a line per validation evaluation."""
    from tqdm.auto import tqdm

    bar = {"t": None}

    def cb(e):
        if bar["t"] is None and "total" in e:
            bar["t"] = tqdm(total=e["total"], unit="step", desc=desc, dynamic_ncols=True)
        if bar["t"] is None:
            return
        if e["kind"] == "step":
            bar["t"].update(e["step"] - bar["t"].n)
            bar["t"].set_postfix(loss=f"{e['loss']:.3f}")
            if e["step"] >= e["total"]:
                bar["t"].close()
        elif e["kind"] == "eval":
            m = e.get("metric")  # progress goes to stderr: stdout stays the command's output (JSON, tables)
            bar["t"].write(f"step {e['step']}: validation {m.name} {m.text()}" if m is not None else
                           f"step {e['step']}: val accuracy {e['val_accuracy']:.4f}", file=sys.stderr)

    return cb


def grid_bar(desc: str | None = None):
    """Callback ``(done, total)`` for the landscape probes' grids (:func:`binlab.probes.landscape.interpolate`, ``slice_model``)."""
    from tqdm.auto import tqdm

    bar = {"t": None}

    def cb(done, total):
        if bar["t"] is None:
            bar["t"] = tqdm(total=total, unit="point", desc=desc, dynamic_ncols=True)
        bar["t"].update(done - bar["t"].n)
        if done >= total:
            bar["t"].close()

    return cb
