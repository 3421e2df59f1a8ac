"""Benchmark: the lab's live loop (widget change -> numbers updated) and evaluation speed.

Measures, on the chosen preset's cached baseline, side by side in one run:
- LiveLab.apply (PTQ re-binarization of what changed + accuracy on the lab's validation rows + exact
  size) for a sequence of changes a learner makes: dragging tau on layers.0.attn.q, toggling
  components, switching methods; median and max over the changes;
- the first look the page shows before that (LiveLab.glance: the same change measured on a fixed
  slice of those rows, stratified by class on a classifier), timed for the same changes: what a learner waits for
  the first numbers (the page's own drawing comes on top: bench/browser.py measures both together);
- with ``--against DIR``: the first look then the full numbers of the LiveLab of another checkout (DIR's
  binlab/lab/live.py, on this binlab otherwise), timed beside this one's, first in turn per change;
- full test-set evaluation (7,600 rows) and a 1,000-row validation slice.

The lab's rows are the Binarize page's (``LiveLab.for_page``): ``task_info(model).live_rows`` (1,000 on a
classifier, 300 on a language model) and its first look of them (the preset's ``glance_rows``, else the task's:
200 on scratch, 120 on minilm-l2, 60 on lm).

    python bench/live_loop.py --preset scratch      # writes docs/results/bench-live-loop-<preset>.{json,md}
    python bench/live_loop.py --preset lm           # the language model: PTQ methods with calibration, perplexity

On the ``lm`` preset the changes are the LLM-era PTQ methods on one linear at a time (the issue's
target case), with the Hessian of each component computed once (its first use is timed apart).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from binlab.experiments.provenance import RESULTS, cpu_flags, machine
from binlab.lab.live import LiveLab
from binlab.nn.quantize import MethodConfig, QuantSpec, Rule
from binlab.presets import get_baseline, get_preset, load_data
from binlab.training.train import evaluate


def changes():
    """The sequence of configurations a learner clicks through."""
    out = []
    for tau in (0.0, 0.25, 0.5, 0.75, 1.0, -0.5):  # dragging the threshold on one component
        out.append(("tau on layers.0.attn.q", QuantSpec((Rule("layers.0.attn.q", MethodConfig("bucket", options={"tau": tau})),))))
    qk = [Rule(t, MethodConfig("bucket")) for t in ("layers.0.attn.q", "layers.0.attn.k", "layers.1.attn.q", "layers.1.attn.k")]
    out.append(("QK, optimal threshold", QuantSpec(tuple(qk))))
    out.append(("+ layer 0 FFN up", QuantSpec(tuple(qk) + (Rule("layers.0.ffn.up", MethodConfig("bucket")),))))
    out.append(("+ embeddings", QuantSpec(tuple(qk) + (Rule("layers.0.ffn.up", MethodConfig("bucket")), Rule("embed.token", MethodConfig("bucket"))))))
    out.append(("all but head, xnor", QuantSpec.simple("all-except-head", "xnor")))
    out.append(("all but head, sign", QuantSpec.simple("all-except-head", "sign")))
    out.append(("back to fp32", QuantSpec()))
    return out


WIDE = 200  # a classifier's first-look rows (binlab.nn.metric.TASKS), the comparison for a smaller one


def _ratios(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def lm_changes():
    """A learner on the lm preset: one linear, then another, with the calibrated PTQ methods (Hessians cached)."""
    out = []
    for comp in ("layers.0.attn.q", "layers.1.ffn.up"):
        for m, opts in (("gptq", {"bits": 2}), ("gptq", {"bits": 3}), ("pbllm", {}), ("billm", {}), ("arb", {"variant": "x"}), ("xnor", {})):
            out.append((f"{m} {opts or ''} on {comp}".replace(" {}", ""), QuantSpec((Rule(comp, MethodConfig(m, options=opts)),))))
    out.append(("back to fp32", QuantSpec()))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="scratch")
    ap.add_argument("--data", default=None)
    ap.add_argument("--against", default=None, metavar="DIR", help="also time the LiveLab of the checkout in DIR, change by change")
    ap.add_argument("--out", default=None, help="results file stem (default bench-live-loop-<preset>)")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    p = get_preset(args.preset)
    splits = load_data(p, source=args.data)
    model, _ = get_baseline(p, splits)

    lm = p.model.task == "lm"
    load0 = os.getloadavg()[0]
    lab = LiveLab.for_page(model, splits, p)  # as the page builds it
    n_rows, n_glance = len(lab.val), len(lab.glance_val)
    # where the page's first look is smaller than a classifier's 200 rows (a language model, minilm-l2), the same
    # changes' first look on 200 rows is timed beside it, in the same run, for the comparison
    wide = LiveLab(model, splits.val, val_rows=n_rows, calib=lab.calib, glance_rows=WIDE) if n_glance < WIDE else None
    other = None
    if args.against:  # another checkout's live lab (its binlab/lab/live.py, with this binlab's other modules)
        import importlib.util

        path = Path(args.against).resolve() / "binlab" / "lab" / "live.py"
        spec_ = importlib.util.spec_from_file_location("binlab.lab.live_against", path)
        mod = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(mod)
        other = mod.LiveLab.for_page(model, splits, p)
        other.apply(QuantSpec.simple("QK", "bucket"))  # warm-up
    lab.apply(QuantSpec.simple("QK", "bucket"))  # warm-up
    hessian_s = None
    if lm:  # the Hessians of the components the changes touch, computed once (what a first visit pays)
        t0 = time.perf_counter()
        for comp in ("layers.0.attn.q", "layers.1.ffn.up"):
            lab.hessian(comp)
        hessian_s = time.perf_counter() - t0
    if wide is not None:
        wide.hessians = lab.hessians  # the calibration is shared, as the page's clones share it
    if other is not None:
        other.hessians = lab.hessians
    rows = []
    for i, (label, spec) in enumerate(lm_changes() if lm else changes()):
        out = {}
        def against():  # the other lab's first look (timed on its own too), then its full numbers
            out["other_first"] = _timed(lambda: other.glance(spec))
            other.apply(spec)
        other_s = _timed(against) if other is not None and i % 2 else None
        # the page's first look and the 200-row one in interleaved pairs (their order alternates), then the full numbers
        wide_s = _timed(lambda: wide.glance(spec)) if wide is not None and i % 2 else None
        first_s = _timed(lambda: out.update(g=lab.glance(spec)))  # what the page shows first
        if wide is not None and not i % 2:
            wide_s = _timed(lambda: wide.glance(spec))
        full_s = _timed(lambda: out.update(r=lab.apply(spec)))  # then refines to the full rows
        if other is not None and other_s is None:
            other_s = _timed(against)
        g, r = out["g"], out["r"]
        rows.append({"change": label, "first_look_seconds": first_s, "seconds": full_s, "first_to_final_seconds": first_s + full_s,
                     **({"against_first_to_final_seconds": other_s, "against_first_look_seconds": out["other_first"]} if other is not None else {}),
                     **({"first_look_200_seconds": wide_s} if wide_s is not None else {}),
                     "first_look_accuracy": g["accuracy"], "accuracy": r["accuracy"], "reduction_percent": r["reduction_percent"],
                     **({"perplexity": r["perplexity"], "first_look_perplexity": g["perplexity"]} if lm else {})})
    evaluate(model, splits.val.head(200))  # warm-up
    val_s = min(evaluate(model, splits.val.head(1000)).seconds for _ in range(3))
    test_s = evaluate(model, splits.test).seconds
    secs = [r["seconds"] for r in rows]
    firsts, finals = [r["first_look_seconds"] for r in rows], [r["first_to_final_seconds"] for r in rows]
    head_gemm_s = None
    if lm:  # the floor of any exact perplexity on these rows: the LM head's GEMM over every predicted token, alone
        n_tok = int(sum(int((x[:, 1:] != 0).sum()) for x, _ in lab.batches))
        z, w = torch.randn(n_tok, model.head.in_features), torch.randn(model.head.out_features, model.head.in_features)
        z @ w[:64].T  # warm-up
        head_gemm_s = min(_timed(lambda: z @ w.T) for _ in range(3))
        gflop = 2 * n_tok * w.shape[0] * w.shape[1] / 1e9
    payload = {"preset": args.preset, "machine": machine(), "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
               "cpu_flags": cpu_flags(), "live_rows": n_rows, "glance_rows": n_glance,
               "first_look_median_s": statistics.median(firsts), "first_look_max_s": max(firsts),
               "first_to_final_median_s": statistics.median(finals),
               "against": args.against,
               "against_first_to_final_median_s": statistics.median(r["against_first_to_final_seconds"] for r in rows) if other else None,
               "against_ratio": _ratios([r["against_first_to_final_seconds"] / r["first_to_final_seconds"] for r in rows]) if other else None,
               "against_first_look_median_s": statistics.median(r["against_first_look_seconds"] for r in rows) if other else None,
               "against_first_look_ratio": _ratios([r["against_first_look_seconds"] / r["first_look_seconds"] for r in rows]) if other else None,
               "first_look_200_median_s": statistics.median(r["first_look_200_seconds"] for r in rows) if wide is not None else None,
               "first_look_200_ratio": _ratios([r["first_look_200_seconds"] / r["first_look_seconds"] for r in rows]) if wide is not None else None,
               "load_average": [load0, os.getloadavg()[0]],
               "live_median_s": statistics.median(secs), "live_max_s": max(secs), "val_1000_eval_s": val_s,
               "test_eval_s": test_s, "test_rows": len(splits.test), "changes": rows, "hessians_first_s": hessian_s,
               "head_gemm_s": head_gemm_s,
               "command": f"python bench/live_loop.py --preset {args.preset}" + (f" --against {args.against}" if args.against else "") + (f" --out {args.out}" if args.out else "")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / (args.out or f"bench-live-loop-{args.preset}")
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    md = [f"# Live loop benchmark ({args.preset})", "", f"Machine: {payload['machine']}, {payload['threads']} threads; CPU flags: "
          f"{' '.join(payload['cpu_flags'])}. Date: {payload['date']}. 1-minute load average {load0:.2f} at the start, "
          f"{payload['load_average'][1]:.2f} at the end.", f"Reproduce: `{payload['command']}`", "",
          f"- first look (the change on a fixed slice of {n_glance} of the {n_rows} rows below, "
          + ("the first ones" if lm else "stratified by class") + f", shown first): median "
          f"**{payload['first_look_median_s']:.3f} s**, max {payload['first_look_max_s']:.3f} s; first look then the full numbers: "
          f"median {payload['first_to_final_median_s']:.3f} s"
          + (f" (the LiveLab of `{args.against}`, timed beside it change by change, first in turn: median "
             f"{payload['against_first_to_final_median_s']:.3f} s, {payload['against_ratio']['median']:.2f}x this one's per change, range "
             f"{payload['against_ratio']['min']:.2f}-{payload['against_ratio']['max']:.2f}x; its first look alone: median "
             f"{payload['against_first_look_median_s']:.3f} s, {payload['against_first_look_ratio']['median']:.2f}x this one's per change, range "
             f"{payload['against_first_look_ratio']['min']:.2f}-{payload['against_first_look_ratio']['max']:.2f}x)" if other is not None else "")
          + (f" (the same changes' first look on {WIDE} rows, timed in interleaved pairs with it: median "
             f"{payload['first_look_200_median_s']:.3f} s, {payload['first_look_200_ratio']['median']:.2f}x the page's per pair, range "
             f"{payload['first_look_200_ratio']['min']:.2f}-{payload['first_look_200_ratio']['max']:.2f}x)" if wide is not None else ""),
          f"- live change (PTQ of what changed + {n_rows:,}-row validation {'perplexity' if lm else 'accuracy'} + exact size): median **{payload['live_median_s']:.3f} s**, max {payload['live_max_s']:.3f} s",
          f"- 1,000-row validation evaluation: **{val_s:.3f} s**",
          f"- full test set ({len(splits.test):,} rows): **{test_s:.2f} s**", ""]
    if lm:
        md[-1:-1] = [f"- Hessians of the 2 components (calibration, once per session): {hessian_s:.2f} s; every change below reuses them",
                     f"- the floor of an exact perplexity on these rows: the head's GEMM alone ({n_tok:,} predicted tokens x "
                     f"{model.head.in_features} x {model.head.out_features}, {gflop:.0f} GFLOP) takes **{head_gemm_s:.3f} s** here "
                     f"({gflop / head_gemm_s:.0f} GFLOP/s), before the log-sum-exp over the vocabulary and the two layers"]
        md += ["| change | first look s | first-look perplexity | full rows s | validation perplexity | reduction % |", "|---|---|---|---|---|---|"]
        md += [f"| {r['change']} | {r['first_look_seconds']:.3f} | {r['first_look_perplexity']:.2f} | {r['seconds']:.3f} | {r['perplexity']:.2f} | "
               f"{r['reduction_percent']:.2f} |" for r in rows]
    else:
        md += ["| change | first look s | first-look accuracy % | full rows s | accuracy % | reduction % |", "|---|---|---|---|---|---|"]
        md += [f"| {r['change']} | {r['first_look_seconds']:.3f} | {r['first_look_accuracy']:.2f} | {r['seconds']:.3f} | {r['accuracy']:.2f} | "
               f"{r['reduction_percent']:.2f} |" for r in rows]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
