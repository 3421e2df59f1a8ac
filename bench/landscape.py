"""Benchmark: a 21 x 21 filter-normalised 2-D loss slice on 512 rows, and the top Hessian eigenvalue.

    python bench/landscape.py [--preset scratch]    (also: binlab bench landscape)

Writes docs/results/bench-landscape-<preset>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from binlab.experiments.provenance import RESULTS, machine
from binlab.nn.quantize import QuantSpec
from binlab.presets import get_baseline, get_preset, load_data
from binlab.probes.landscape import curvature, slice_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="scratch")
    ap.add_argument("--steps", type=int, default=21)
    ap.add_argument("--rows", type=int, default=512)
    args = ap.parse_args()
    p = get_preset(args.preset)
    splits = load_data(p)
    model, _ = get_baseline(p, splits)
    res = {}
    for name, spec in (("fp32", None), ("binary (encoder xnor)", QuantSpec.simple("encoder", "xnor"))):
        t0 = time.perf_counter()
        s = slice_model(model, splits.val, spec, steps=args.steps, rows=args.rows)
        t_slice = time.perf_counter() - t0
        t0 = time.perf_counter()
        its = []
        c = curvature(model, splits.val, spec, rows=args.rows, iters=30, tol=1e-3, trace_samples=0,
                      callback=lambda idx, it, lam: its.append(it + 1))
        t_eig = time.perf_counter() - t0
        res[name] = {"slice_seconds": t_slice, "eigen_seconds": t_eig, "top_eigenvalue": c["top_eigenvalues"][0], "hvp_products": its[-1],
                     "loss_center": float(s["loss"][args.steps // 2, args.steps // 2]), "loss_max": float(s["loss"].max()),
                     "loss_min": float(s["loss"].min())}
    payload = {"preset": args.preset, "machine": machine(), "threads": torch.get_num_threads(), "grid": f"{args.steps}x{args.steps}",
               "rows": args.rows, "date": time.strftime("%Y-%m-%d"), "results": res, "command": f"python bench/landscape.py --preset {args.preset}"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"bench-landscape-{args.preset}"
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    md = [f"# Landscape benchmark ({args.preset})", "", f"Machine: {payload['machine']}. Date: {payload['date']}. Reproduce: `{payload['command']}`", "",
          f"| model | {payload['grid']} slice on {args.rows} rows, s | top eigenvalue (Lanczos to 0.1 %), s | H·v products | top eigenvalue | loss at centre | max loss on grid |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {k} | {v['slice_seconds']:.1f} | {v['eigen_seconds']:.1f} | {v['hvp_products']} | {v['top_eigenvalue']:.3f} | {v['loss_center']:.3f} | {v['loss_max']:.3f} |" for k, v in res.items()]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
