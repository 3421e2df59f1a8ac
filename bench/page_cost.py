"""Benchmark: the server's own work for one learner on Binarize (live), without a browser.

    python bench/page_cost.py [--preset scratch] [--repeats 7]
    # writes docs/results/bench-page-cost-<preset>.{json,md}

Streamlit's AppTest runs the app's script in this process as the server would for a session: the time of a
new learner's first Binarize page (after the first session has built the shared caches: data, baseline, the
lab), and of a threshold change (the page's rerun with the evaluation of the new configuration: a first look
on a small slice, then the validation rows). No browser and no network are in these numbers: what is left of
the browser benchmark's felt time (bench/browser.py) is the round trip and the page's drawing in the browser.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app" / "Home.py")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="scratch")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    os.environ["BINLAB_PRESET"] = args.preset
    from streamlit.testing.v1 import AppTest

    from binlab.experiments.provenance import RESULTS, cpu_flags, machine  # not bench/common: the app has a module of that name
    from binlab.methods import PAGE_DEFAULTS

    def new_session():
        at = AppTest.from_file(APP, default_timeout=600)
        at.run()
        t = time.perf_counter()
        at.switch_page("views/binarize.py").run()
        if at.exception:
            raise RuntimeError(f"the page raised: {at.exception[0].message}")
        return time.perf_counter() - t, at

    load0 = os.getloadavg()[0]
    first, _ = new_session()  # builds the shared caches
    loads = [new_session()[0] for _ in range(args.repeats)]
    _, at = new_session()
    method = PAGE_DEFAULTS["binarize"]
    slider = next(s for s in at.slider if s.key and s.key.startswith(f"opt:{method}:"))
    changes = []
    value = slider.value
    for _ in range(args.repeats):  # each change a configuration not measured before
        value = min(slider.max, value + slider.step) if value + slider.step <= slider.max else slider.min + slider.step * len(changes)
        t = time.perf_counter()
        at.slider(key=slider.key).set_value(value).run()
        changes.append(time.perf_counter() - t)
    out = {"preset": args.preset, "machine": machine(), "cpu_flags": cpu_flags(), "date": time.strftime("%Y-%m-%d"),
           "command": f"python bench/page_cost.py --preset {args.preset}" + (f" --repeats {args.repeats}" if args.repeats != 7 else ""),
           "load_average_start": load0, "load_average_end": os.getloadavg()[0], "first_session_s": first,
           "new_session_binarize_s": loads, "new_session_binarize_median_s": statistics.median(loads),
           "slider": slider.key, "threshold_change_s": changes, "threshold_change_median_s": statistics.median(changes)}
    stem = RESULTS / f"bench-page-cost-{args.preset}"
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2))
    md = [f"# The server's work per learner ({args.preset})", "",
          f"Machine: {out['machine']}; CPU flags: {' '.join(out['cpu_flags'])}. Date: {out['date']}. 1-minute load average "
          f"{load0:.2f} at the start, {out['load_average_end']:.2f} at the end. Reproduce: `{out['command']}`", "",
          "Streamlit's AppTest runs the app's script in one process as the server does for a session; no browser, no network.", "",
          f"- the first session (builds the shared caches: data, baseline, the lab): {first:.2f} s",
          f"- a new learner's Binarize page after that: median **{out['new_session_binarize_median_s']:.2f} s** "
          f"({', '.join(f'{t:.2f}' for t in loads)})",
          f"- a change of the threshold slider (`{slider.key}`), each to a configuration not measured before: median "
          f"**{out['threshold_change_median_s']:.2f} s** ({', '.join(f'{t:.2f}' for t in changes)})"]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
