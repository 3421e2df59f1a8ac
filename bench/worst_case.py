"""Benchmark: the longest a single live change can take, with every option at the ends of its range.

A crafted link can ask for any method with any option inside its schema (values outside are refused when
the spec is parsed). This runs, on the preset's cached baseline, what such a link makes the Binarize page
do (LiveLab.apply: PTQ of the changed components, calibration where the method needs data, accuracy on
1,000 validation rows, exact size) for every method on every encoder linear and the embeddings, once with
its defaults and once with each numeric option at its minimum and at its maximum, and reports the slowest.
The Hessians of the calibrated methods are computed on first use and timed with that change (a first
visit pays them once; the lab caches them).

    python bench/worst_case.py --preset scratch     # writes docs/results/bench-worst-case-<preset>.{json,md}
    python bench/worst_case.py --preset scratch --methods lab   # measures new methods into the committed file
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from binlab.experiments.provenance import RESULTS, machine
from binlab.lab.live import LiveLab
from binlab.methods import BINARIZERS
from binlab.nn.quantize import MethodConfig, QuantSpec, Rule
from binlab.presets import resolve

from common import cpu_flags


def settings():
    """(method, options) pairs: the defaults, then each numeric option alone at each end of its range."""
    for name, cls in sorted(BINARIZERS.items()):
        yield name, {}
        for opt, s in cls.schema().items():
            if s["kind"] in ("int", "float"):
                for v in (s["min"], s["max"]):
                    yield name, {opt: v}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="scratch")
    ap.add_argument("--data", default=None)
    ap.add_argument("--methods", default=None, help="comma-separated methods to (re)measure; the committed rows of the others are kept")
    args = ap.parse_args()
    only = set(args.methods.split(",")) if args.methods else None
    rp = resolve(args.preset, source=args.data)
    model, _ = rp.baseline()
    lab = LiveLab.for_page(model, rp.splits, rp.preset)  # as the Binarize page builds it
    lab.apply(QuantSpec.simple("QK", "bucket"))  # warm-up
    rows, refused = [], []
    for name, opts in settings():
        if only is not None and name not in only:
            continue
        try:
            m = MethodConfig(name, options=opts)
        except ValueError as err:  # a cross-option rule (STBLLM's N <= M): refused before any work
            refused.append({"method": name, "options": opts, "why": str(err)})
            continue
        target = "encoder" if BINARIZERS[name].needs_calibration else "all-except-head"
        spec = QuantSpec((Rule(target, m),))
        t0 = time.perf_counter()
        try:
            r = lab.apply(spec)
        except ValueError as err:  # e.g. a method that cannot quantize an embedding: a message, no work
            refused.append({"method": name, "options": opts, "why": str(err)})
            continue
        rows.append({"method": name, "options": opts, "target": target, "seconds": time.perf_counter() - t0,
                     "metric": r["metric"].text()})
        lab.apply(QuantSpec())  # back to fp32, so each change starts from the same place
        print(f"{name:<11} {json.dumps(opts):<28} {rows[-1]['seconds']:7.2f} s  {rows[-1]['metric']}", flush=True)
    stem = RESULTS / f"bench-worst-case-{args.preset}"
    added = []
    if only is not None and stem.with_suffix(".json").exists():  # keep the committed rows of every other method
        prior = json.loads(stem.with_suffix(".json").read_text())
        rows += [r for r in prior["rows"] if r["method"] not in only]
        refused += [r for r in prior["refused"] if r["method"] not in only]
        added = list(prior.get("added", [])) + [{"methods": sorted(only), "date": time.strftime("%Y-%m-%d"), "machine": machine()}]
        header = {k: prior[k] for k in ("machine", "cpu_flags", "threads", "date")}
    else:
        header = {"machine": machine(), "cpu_flags": cpu_flags(), "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
    worst = max(rows, key=lambda r: r["seconds"])
    payload = {"preset": args.preset, **header, "val_rows": rp.task.live_rows, "worst": worst, "rows": rows, "refused": refused,
               "command": f"python bench/worst_case.py --preset {args.preset}", "added": added}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    md = [f"# The longest live change ({args.preset})", "",
          f"Machine: {payload['machine']}, {payload['threads']} threads; CPU flags: {' '.join(payload['cpu_flags'])}. "
          f"Date: {payload['date']}. Reproduce: `{payload['command']}`", "",
          "Every method on every encoder linear (the calibrated ones) or every component but the head (the others), with its "
          "defaults and with each numeric option at each end of its range; one LiveLab.apply each (PTQ, calibration Hessians on "
          f"first use, accuracy on {payload['val_rows']:,} validation rows, exact size).", "",
          f"- slowest: **{worst['seconds']:.2f} s**, {worst['method']} {json.dumps(worst['options'])}",
          *[f"- measured later and added: {', '.join(a['methods'])} on {a['date']} ({a['machine']})" for a in added],
          f"- refused when parsed or applied (no work done): {len(refused)}", "",
          "| method | options | seconds | validation |", "|---|---|---|---|"]
    md += [f"| {r['method']} | `{json.dumps(r['options'])}` | {r['seconds']:.2f} | {r['metric']} |"
           for r in sorted(rows, key=lambda r: -r["seconds"])]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md[:8]))


if __name__ == "__main__":
    main()
