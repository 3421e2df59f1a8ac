"""Benchmark: a W1A32 linear of the torch-free runtime, lookup tables against decoded tiles against fp32.

    python bench/w1a32_paths.py [--preset minilm-l2] [--rows 1,8,16,32,48,64,128,1024]
    # writes docs/results/bench-w1a32-paths-<preset>.{json,md}

A W1A32 linear (1-bit weights, exact float32 inputs) runs in :mod:`binlab.runtime.standalone` one of two ways:
*tables* (``binary_gemm``: per input byte, a table of the 256 sums of 8 inputs, then one lookup per output and
byte) on fewer than ``LUT_ROWS`` rows, else *tiles* (the weights decoded to float32, 256 output rows at a time,
then numpy's BLAS). Here each of the preset's linear shapes (inputs K, outputs N) runs both, through the
runtime's own ``Linear`` with the kernels compiled ahead of time (``aot``), beside *fp32*: the same product with
the float32 weight matrix already in memory (what a float32 model runs). Medians of interleaved repeats in one
process; one thread for the kernels, numpy's BLAS as configured (both cores).

The arithmetic that bounds each path:
- exact float32 inputs need the M*K*N multiply-adds of fp32 (a +-1 weight makes each an add or a subtraction,
  which a CPU's vector units do at the same rate as a fused multiply-add), so *tiles* cost fp32's product plus
  the decoding: their ceiling is fp32's speed, reached when M is large enough to hide the decoding;
- *tables* build 256 sums per 8 inputs per row (M*K*32 additions, shared by all N outputs) and then do
  M*N*K/8 lookups: 8x fewer operations than fp32 per output, but lookups, not vector multiply-adds. They win
  while fp32's product is bound by reading the weights (few rows: 32 bits per weight against 1) and lose once
  it is bound by arithmetic; the crossover row count is what this bench measures per shape.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from binlab.experiments.provenance import RESULTS, cpu_flags, machine  # noqa: E402

SHAPES = {"minilm-l2": [(384, 384), (384, 1536), (1536, 384)], "scratch": [(128, 128), (128, 512), (512, 128)],
          "lm": [(256, 256), (256, 1024), (1024, 256)]}


def linear(K: int, N: int, ops, seed: int = 0):
    """A plain W1A32 linear of the runtime (per-row levels lo/hi, random bits) and its float32 weight."""
    from binlab.runtime.bitpack import pack_bits
    from binlab.runtime.codecs import BinaryCodec
    from binlab.runtime.standalone import Linear

    rng = np.random.default_rng(seed)
    B = rng.integers(0, 2, (N, K)).astype(np.float32)
    lo, hi = -rng.uniform(0.01, 0.1, N).astype(np.float32), rng.uniform(0.01, 0.1, N).astype(np.float32)
    codec = BinaryCodec((N, K), {}, {"words": pack_bits(2 * B - 1), "lo": lo, "hi": hi})
    lin = Linear("bench", codec, None, backend="aot", ops=ops)
    return lin, np.ascontiguousarray(codec.dense(), dtype=np.float32)


def timed(fns: dict, repeats: int) -> dict:
    """Seconds of each function in each of ``repeats`` interleaved rounds (one warm-up each first)."""
    for f in fns.values():
        f()
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t0)
    return ts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="minilm-l2", choices=sorted(SHAPES))
    ap.add_argument("--rows", default="1,8,16,24,32,48,64,96,128,1024")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    from binlab.runtime import aot, standalone
    from binlab.runtime.bitpack import dequant_rows

    # built in a child process, as `binlab runtime build` does: building imports numba's kernels, and in this
    # process dequant_rows would then take numba's parallel loop instead of the compiled one
    subprocess.run([sys.executable, "-m", "binlab.cli", "runtime", "build"], check=True, capture_output=True)
    ops = aot.ops()
    assert "binlab.runtime.kernels" not in sys.modules and "numba" not in sys.modules, "the aot path must run without numba here"
    rows = [int(x) for x in args.rows.split(",")]
    out = {"preset": args.preset, "machine": machine(), "cpu_flags": cpu_flags(), "date": time.strftime("%Y-%m-%d"),
           "command": f"python bench/w1a32_paths.py --preset {args.preset} --rows {args.rows}", "load_average_start": os.getloadavg()[0],
           "lut_rows": standalone.LUT_ROWS, "shapes": {}}
    for K, N in SHAPES[args.preset]:
        lin, dense = linear(K, N, ops)
        codec = lin.codec
        res = []
        for M in rows:
            x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float32)
            ref = x.astype(np.float64) @ dense.T.astype(np.float64)

            def tables():
                P = lin._binary_gemm(x, lin._lut, K)
                return codec.lo[None] * x.sum(1, keepdims=True) + (codec.hi - codec.lo)[None] * P

            def tiles():
                y = np.empty((M, N), np.float32)
                for n0 in range(0, N, 256):
                    y[:, n0:n0 + 256] = x @ codec.rows(slice(n0, min(N, n0 + 256))).T
                return y
            for name, f in (("tables", tables), ("tiles", tiles)):  # both are the product (checked against float64)
                err = np.abs(f() - ref).max() / np.abs(ref).max()
                assert err < 1e-4, (name, K, N, M, err)
            t = timed({"fp32": lambda: x @ dense.T, "tables": tables, "tiles": tiles,
                       "decode": lambda: [dequant_rows(codec.words, codec.lo, codec.hi, K, n0, min(N, n0 + 256)) for n0 in range(0, N, 256)]},
                      args.repeats)
            # per round: fp32 over the faster W1A32 path of that round, so the spread comes from pairs timed together
            ratio = [f / min(a, b) for f, a, b in zip(t["fp32"], t["tables"], t["tiles"])]
            res.append({"rows": M} | {f"{k}_us": 1e6 * statistics.median(v) for k, v in t.items()}
                       | {"x_fp32": statistics.median(ratio), "x_fp32_min": min(ratio), "x_fp32_max": max(ratio)})
            print(K, N, res[-1], flush=True)
        cross = next((r["rows"] for r in res if r["tiles_us"] < r["tables_us"]), None)
        out["shapes"][f"{K}x{N}"] = {"K": K, "N": N, "by_rows": res, "tiles_faster_from_rows": cross}
    out["load_average_end"] = os.getloadavg()[0]
    stem = RESULTS / f"bench-w1a32-paths-{args.preset}"
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2))
    f = lambda v: f"{v:.1f}"  # noqa: E731
    md = [f"# W1A32 linear: lookup tables, decoded tiles and fp32 ({args.preset}'s shapes)", "",
          f"Machine: {out['machine']}; CPU flags: {' '.join(out['cpu_flags'])}. Date: {out['date']}. 1-minute load average "
          f"{out['load_average_start']:.2f} at the start, {out['load_average_end']:.2f} at the end. Reproduce: `{out['command']}`", "",
          "Microseconds per product (M rows x K inputs -> N outputs), medians of interleaved repeats in one process: *fp32* is numpy's "
          "BLAS with the float32 weights in memory; *tables* the runtime's lookup-table product (kernels compiled ahead of time, one "
          "thread); *tiles* the weights decoded 256 rows at a time, then numpy's BLAS; *decode* the decoding alone. The runtime uses "
          f"tables below {standalone.LUT_ROWS} rows, tiles from there. x fp32: fp32's time over the faster W1A32 path's, per round "
          f"of {args.repeats} (median, and the range over rounds in brackets). numpy's BLAS "
          "ran on both cores, the tables on one (the ahead-of-time kernels are serial).", "",
          "The arithmetic: with exact float32 inputs every path does the M x K x N multiply-adds of fp32 (a +-1 weight turns each "
          "into an add or a subtraction, which the vector units do at the rate of a fused multiply-add), so decoded tiles cost "
          "fp32's product plus the decoding, and their ceiling is fp32's speed. The tables replace K multiply-adds per output by "
          "K/8 lookups, after building 256 sums per 8 inputs and row; lookups do not vectorize like multiply-adds, so they win "
          "only while fp32's product waits on reading its weights (32 bits each against 1), which on a CPU whose caches hold "
          "the float32 matrices happens at few rows or not at all.", ""]
    for key, sh in out["shapes"].items():
        md += [f"**K x N = {key}** (tiles faster than tables from {sh['tiles_faster_from_rows'] or 'none of these'} rows)", "",
               "| rows M | fp32 us | tables us | tiles us | decode us | x fp32 (faster W1A32 path) |", "|---|---|---|---|---|---|"]
        for r in sh["by_rows"]:
            md.append(f"| {r['rows']} | {f(r['fp32_us'])} | {f(r['tables_us'])} | {f(r['tiles_us'])} | {f(r['decode_us'])} | "
                      f"{r['x_fp32']:.2f}x ({r['x_fp32_min']:.2f}-{r['x_fp32_max']:.2f}) |")
        md.append("")
    stem.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
