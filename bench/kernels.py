"""Benchmark: numba binary kernels vs torch fp32, side by side in one run on this machine.

    python bench/kernels.py [--preset scratch] [--quick]      (also: binlab bench kernels)

Writes docs/results/bench-kernels.{json,md}: medians of repeats after warm-up; ratios are
torch time / kernel time. Two rooflines, both the word rate of a tight in-cache xor+popcount loop
on all threads, measured in this run: *vectorized* (LLVM vectorizes the loop: AVX-512 VPOPCNTDQ's
``vpopcntq`` where the CPU has it, AVX2's ``vpshufb`` nibble lookup otherwise) and *scalar* (the
same loop compiled in a child process with numba's loop and SLP vectorizers off, so one ``popcnt``
per word). Each XNOR GEMM's fraction counts M*N*ceil(K/64) words. The instructions LLVM emitted for
the GEMM kernel are counted from its assembly and recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

import numba
import numpy as np
import torch

from binlab.experiments.provenance import RESULTS, machine
from binlab.runtime.kernels import LutWeights, binary_gemm, n_words, pack_bits, popcount_roofline_parallel, w1a1_linear, xnor_gemm, xnor_gemm_kernel
from binlab.runtime.packed import pack_model

from common import cpu_flags, timeit

SCALAR_CHILD = """
import sys, time
from concurrent.futures import ThreadPoolExecutor
import numba as nb, numpy as np
from binlab.runtime.kernels import _popcount_roofline_kernel
k = nb.njit(nogil=True)(_popcount_roofline_kernel.py_func)  # compiled here, with the vectorizers off
a = np.random.default_rng(0).integers(0, 2**63, 2048, dtype=np.uint64)
k(a, 2)
threads, reps = int(sys.argv[1]), 20000
best = None
with ThreadPoolExecutor(threads) as ex:
    for _ in range(5):
        t0 = time.perf_counter()
        list(ex.map(lambda _: k(a, reps), range(threads)))
        t = time.perf_counter() - t0
        best = t if best is None else min(best, t)
print(threads * reps * a.shape[0] / best)
"""


def roofline(threads: int) -> float:
    a = np.random.default_rng(0).integers(0, 2**63, 2048, dtype=np.uint64)  # 16 KiB: stays in L1
    reps = 20000
    popcount_roofline_parallel(a, 10, threads)
    t = timeit(lambda: popcount_roofline_parallel(a, reps, threads), repeats=5, warmup=1)
    return threads * reps * a.shape[0] / t  # words per second


def scalar_roofline(threads: int) -> float:
    """Words per second of the roofline loop compiled without vectorization (a child process: numba
    reads its vectorizer settings once per process)."""
    env = os.environ | {"NUMBA_LOOP_VECTORIZE": "0", "NUMBA_SLP_VECTORIZE": "0", "NUMBA_CACHE_DIR": "/tmp/binlab-scalar-roofline"}
    r = subprocess.run([sys.executable, "-c", SCALAR_CHILD, str(threads)], capture_output=True, text=True, env=env, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def asm_counts() -> dict[str, int]:
    """How often the XNOR GEMM kernel's assembly uses each popcount form (a fresh, inspectable compile)."""
    f = numba.njit(parallel=True)(xnor_gemm_kernel.py_func)
    A = pack_bits(np.ones((8, 256)))
    f(A, A, np.int32(256), np.empty((8, 8), np.int32))
    asm = "\n".join(f.inspect_asm().values())
    return {i: len(re.findall(rf"\b{i}\b", asm)) for i in ("vpopcntq", "popcntq", "vpshufb", "vpsadbw")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="scratch")
    ap.add_argument("--quick", action="store_true", help="smaller shapes and repeats (smoke run)")
    args = ap.parse_args()
    threads = numba.get_num_threads()
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    peak = roofline(threads)
    peak_scalar = scalar_roofline(threads)
    asm = asm_counts()
    gemm_shapes = [(64, 1024, 1024), (1024, 1024, 1024), (2048, 2048, 2048)] if not args.quick else [(64, 256, 256)]
    rows = []
    for M, K, N in gemm_shapes:
        a = rng.choice([-1.0, 1.0], (M, K)).astype(np.float32)
        b = rng.choice([-1.0, 1.0], (N, K)).astype(np.float32)
        A, B = pack_bits(a), pack_bits(b)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        assert np.array_equal(xnor_gemm(A, B, K), (ta @ tb.T).numpy().astype(np.int32))
        t_torch = timeit(lambda: ta @ tb.T)
        t_xnor = timeit(lambda: xnor_gemm(A, B, K))
        words = M * N * n_words(K)
        rows.append({"kernel": "xnor_gemm (W1A1)", "shape": f"({M},{K},{N})", "torch_fp32_s": t_torch, "binlab_s": t_xnor,
                     "speedup": t_torch / t_xnor, "words_per_s": words / t_xnor, "roofline_fraction": words / t_xnor / peak,
                     "scalar_roofline_fraction": words / t_xnor / peak_scalar})
    # the fused W1A1 layer the packed runtime calls (sign activations packed inside), on transformer shapes:
    # 3,000 tokens (a batch of about 64 headlines) through MiniLM's FFN up (384 -> 1536) and down (1536 -> 384)
    for M, K, N in ([(3000, 384, 1536), (3000, 1536, 384)] if not args.quick else [(64, 128, 256)]):
        x = rng.normal(size=(M, K)).astype(np.float32)
        w = rng.normal(size=(N, K)).astype(np.float32)
        lo, hi = -np.abs(w).mean(1), np.abs(w).mean(1)
        Wt = np.ascontiguousarray(pack_bits(w).T)
        wq = torch.from_numpy(np.where(w >= 0, hi[:, None], lo[:, None]).astype(np.float32))
        tx = torch.from_numpy(x)
        ref = (tx.abs().mean(1, keepdim=True) * torch.where(tx >= 0, 1.0, -1.0)) @ wq.T
        np.testing.assert_allclose(w1a1_linear(x, Wt, lo, hi, None, K), ref.numpy(), rtol=1e-4, atol=1e-3)
        t_torch = timeit(lambda: torch.nn.functional.linear(tx, wq))
        t_fused = timeit(lambda: w1a1_linear(x, Wt, lo, hi, None, K))
        rows.append({"kernel": "w1a1_linear (fused layer)", "shape": f"({M},{K},{N})", "torch_fp32_s": t_torch, "binlab_s": t_fused,
                     "speedup": t_torch / t_fused})
    gemv_shapes = [(1, 4096, 4096), (8, 4096, 4096)] if not args.quick else [(1, 512, 512)]
    for Bn, K, N in gemv_shapes:
        x = rng.normal(size=(Bn, K)).astype(np.float32)
        w = rng.normal(size=(N, K)).astype(np.float32)
        Wp = pack_bits(w)
        Wl = LutWeights(Wp, K)  # the load-time layout packed.PackedLinear keeps (its cost is under packing)
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        lo, hi = -np.abs(w).mean(1), np.abs(w).mean(1)
        def packed():
            P = binary_gemm(x, Wl, K)
            return lo * x.sum(1, keepdims=True) + (hi - lo) * P
        ref = x @ np.where(w >= 0, hi[:, None], lo[:, None]).T
        np.testing.assert_allclose(packed(), ref, rtol=1e-3, atol=1e-2)
        t_torch = timeit(lambda: tx @ tw.T, repeats=21)
        t_bin = timeit(packed, repeats=21)
        rows.append({"kernel": "binary_gemm (W1A32)", "shape": f"({Bn},{K},{N})", "torch_fp32_s": t_torch, "binlab_s": t_bin,
                     "speedup": t_torch / t_bin, "weight_bytes_fp32": w.nbytes, "weight_bytes_packed": Wp.nbytes})
    packing = []
    for M, K in [(1024, 1024), (4096, 4096)] if not args.quick else [(256, 256)]:
        w = rng.normal(size=(M, K)).astype(np.float32)
        Wp = pack_bits(w)
        packing.append({"shape": f"({M},{K})", "seconds": timeit(lambda: pack_bits(w), repeats=5),
                        "lut_layout_seconds": timeit(lambda: LutWeights(Wp, K), repeats=5)})

    e2e = None
    try:
        from binlab.nn.quantize import QuantSpec
        from binlab.presets import get_baseline, get_preset, load_data
        from binlab.training.qat import ptq
        from binlab.training.train import predict

        p = get_preset(args.preset)
        splits = load_data(p)
        test = splits.test if not args.quick else splits.test.head(500)
        fp, _ = get_baseline(p, splits)
        fq = ptq(fp, QuantSpec.simple("encoder", "bucket"))
        fq_act = ptq(fp, QuantSpec.simple("encoder", "xnor", act="sign"))
        pk, names = pack_model(fq)
        pk_act, _ = pack_model(fq_act)
        preds = {k: predict(m, test)[0].argmax(1) for k, m in (("fq", fq), ("pk", pk), ("fqa", fq_act), ("pka", pk_act))}
        e2e = {"preset": args.preset, "rows": len(test), "packed_layers": len(names),
               "fp32_s": timeit(lambda: predict(fp, test), repeats=3, warmup=1),
               "fake_quant_s": timeit(lambda: predict(fq, test), repeats=3, warmup=1),
               "packed_w1a32_s": timeit(lambda: predict(pk, test), repeats=3, warmup=1),
               "packed_w1a1_s": timeit(lambda: predict(pk_act, test), repeats=3, warmup=1),
               "w1a32_predictions_equal": bool(np.array_equal(preds["fq"], preds["pk"])),
               "w1a1_prediction_agreement": float((preds["fqa"] == preds["pka"]).mean())}
    except Exception as err:  # noqa: BLE001 - the kernel numbers still stand without data
        e2e = {"skipped": f"{type(err).__name__}: {err}"}

    payload = {"machine": machine(), "cpu_flags": cpu_flags(), "threads": threads, "date": time.strftime("%Y-%m-%d"), "roofline_words_per_s": peak,
               "scalar_roofline_words_per_s": peak_scalar, "xnor_gemm_asm": asm,
               "kernels": rows, "packing": packing, "end_to_end": e2e, "command": "python bench/kernels.py" + (" --quick" if args.quick else "")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / ("bench-kernels" + ("-quick" if args.quick else ""))
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    md = ["# Kernel benchmark", "", f"Machine: {payload['machine']}; {threads} threads. Date: {payload['date']}. Reproduce: `{payload['command']}`", "",
          f"CPU flags: {' '.join(payload['cpu_flags'])}.", "",
          f"Rooflines (tight in-cache xor+popcount loop, all threads, measured in this run): vectorized **{peak / 1e9:.2f} G words/s**, "
          f"scalar (vectorizers off: one popcnt per word) **{peak_scalar / 1e9:.2f} G words/s**. "
          f"The XNOR GEMM kernel's assembly: {', '.join(f'{k} x{v}' for k, v in asm.items())}.", "",
          "| kernel | shape (M,K,N) | torch fp32 ms | binlab ms | speedup | G words/s | % of vectorized roofline | % of scalar roofline |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['kernel']} | {r['shape']} | {1e3 * r['torch_fp32_s']:.3f} | {1e3 * r['binlab_s']:.3f} | **{r['speedup']:.1f}x** | "
                  + (f"{r['words_per_s'] / 1e9:.2f} | {100 * r['roofline_fraction']:.0f} % | {100 * r['scalar_roofline_fraction']:.0f} % |"
                     if "words_per_s" in r else "- | - | - |"))
    md += ["", "Packing cost (float32 -> uint64 bits; + re-laying for the W1A32 tables, once at load): " + ", ".join(
        f"{p['shape']} {1e3 * p['seconds']:.2f} ms + {1e3 * p['lut_layout_seconds']:.2f} ms" for p in packing), ""]
    if e2e and "skipped" not in e2e:
        md += [f"End to end on the {e2e['preset']} preset's test set ({e2e['rows']} rows, {e2e['packed_layers']} packed layers): "
               f"fp32 {e2e['fp32_s']:.2f} s, fake-quant {e2e['fake_quant_s']:.2f} s, packed W1A32 {e2e['packed_w1a32_s']:.2f} s, "
               f"packed W1A1 {e2e['packed_w1a1_s']:.2f} s; W1A32 predictions equal to fake-quant: {e2e['w1a32_predictions_equal']}; "
               f"W1A1 agreement {100 * e2e['w1a1_prediction_agreement']:.2f} %."]
    elif e2e:
        md += [f"End to end: skipped ({e2e['skipped']})."]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
