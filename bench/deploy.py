"""Benchmark: the packed model file against the fp32 model, side by side in one run on this machine.

    python bench/deploy.py --preset scratch        # writes docs/results/bench-deploy-<preset>.{json,md}
    python bench/deploy.py --preset minilm-l2

Two packed configurations of the preset's cached baseline (PTQ, no retraining: this measures the
runtime, the accuracies are reported as they come out):

- **W1A1**: token and position embeddings XNOR-binarized (1 bit + a scale per row), every encoder
  linear XNOR-binarized with sign-binarized inputs (XNOR-popcount path); the head stays fp32.
- **W1A32**: the same weights, inputs kept real (lookup tables for few rows, tile dequantization
  for a batch).

Figures: the whole test set through ``binlab.training.train.predict`` (batches of 64, length-sorted) for
fp32 torch and both packed models; the median latency of one text (batch of 1) over 200 texts;
the file's bytes against ``model_size``; and the peak resident memory of a *fresh process* that
loads the model (fp32: the cached safetensors checkpoint; packed: :func:`binlab.runtime.export.load_packed`)
and classifies the whole test set, both importing the same modules and reading the same token ids
from a .npy file. The peak includes the Python/torch runtime every process pays, so the model's
own share (peak minus the process's RSS before it loads the model) is reported beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import cpu_flags, timeit  # noqa: E402 - bench/common.py, beside this script


def _rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (``VmRSS``) or its high-water mark (``VmHWM``), MiB. (Not
    ``getrusage``: on Linux its ``ru_maxrss`` carries the parent's peak across fork and exec.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(kind: str, path: str, ids_path: str, lens_path: str) -> None:
    """Fresh process: load one model, classify every row, print peak RSS (MiB) as JSON."""
    from binlab.data import PAD_ID
    from binlab.nn.model import ModelConfig, build
    from binlab.runtime import export  # noqa: F401 - the same imports for both kinds (numba, safetensors)

    ids = np.load(ids_path)
    offsets = np.load(lens_path)
    lens = np.diff(offsets)
    base = _rss_mb()
    if kind == "fp32":
        from safetensors.torch import load_file

        cfg = ModelConfig(**json.loads(Path(path).with_suffix(".json").read_text())["model_config"])
        with torch.device("meta"):
            model = build(cfg)
        model.load_state_dict(load_file(path), assign=True)
        model.eval()
    else:
        model = export.load_packed(path)
    loaded = _rss_mb()
    order = np.argsort(lens, kind="stable")
    preds = []
    with torch.no_grad():
        for s in range(0, len(order), 64):
            rows = order[s:s + 64]
            x = np.full((len(rows), max(int(lens[rows].max()), 1)), PAD_ID, dtype=np.int64)
            for j, r in enumerate(rows):
                x[j, :lens[r]] = ids[offsets[r]:offsets[r + 1]]
            preds.append(model(torch.from_numpy(x)).argmax(-1).numpy())
    peak = _rss_mb("VmHWM")
    print(json.dumps({"base_mb": base, "loaded_mb": loaded, "peak_mb": peak, "preds": int(np.concatenate(preds).sum())}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="scratch")
    ap.add_argument("--latency-texts", type=int, default=200)
    ap.add_argument("--child", nargs=4, metavar=("KIND", "PATH", "IDS", "OFFSETS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)

    from binlab.experiments.provenance import RESULTS, machine
    from binlab.nn.quantize import MethodConfig, QuantSpec, Rule
    from binlab.presets import baseline_stem, get_baseline, get_preset, load_data
    from binlab.runtime.export import check_size, load_packed, save_packed
    from binlab.runtime.size import model_size
    from binlab.training.qat import ptq
    from binlab.training.train import evaluate, predict

    threads = numba.get_num_threads()
    torch.set_num_threads(threads)
    p = get_preset(args.preset)
    splits = load_data(p)
    test = splits.test
    fp, _ = get_baseline(p, splits)
    fp.eval()
    specs = {"w1a1": QuantSpec((Rule("embeddings", MethodConfig("xnor")), Rule("encoder", MethodConfig("xnor", act="sign")))),
             "w1a32": QuantSpec((Rule("embeddings", MethodConfig("xnor")), Rule("encoder", MethodConfig("xnor"))))}
    tmp = Path(tempfile.mkdtemp(prefix="binlab-deploy-"))
    out = {"preset": p.name, "rows": len(test), "machine": machine(), "cpu_flags": cpu_flags(), "threads": threads,
           "date": time.strftime("%Y-%m-%d"), "command": f"python bench/deploy.py --preset {p.name}", "configs": {}}
    models = {"fp32": fp}
    for kind, spec in specs.items():
        fq = ptq(fp, spec)
        info = save_packed(fq, tmp / f"{kind}.safetensors")
        packed = load_packed(tmp / f"{kind}.safetensors")
        a, _ = predict(fq, test)
        b, _ = predict(packed, test)
        out["configs"][kind] = {"spec": spec.to_json(), "file_bytes": info["file_bytes"], "predicted_bytes": info["predicted_bytes"],
                                "within_header": check_size(info), "fake_quant_accuracy": evaluate(fq, test).accuracy,
                                "packed_accuracy": evaluate(packed, test).accuracy,
                                "prediction_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
                                "max_logit_rel_diff": float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))}
        models[f"packed_{kind}"] = packed
        print(kind, out["configs"][kind], flush=True)
    out["fp32_bytes"] = model_size(fp).total_bytes
    out["fp32_accuracy"] = evaluate(fp, test).accuracy

    # whole test set, side by side
    for name, m in models.items():
        out[f"{name}_s"] = timeit(lambda m=m: predict(m, test), repeats=3, warmup=1)
        print(name, "test set", out[f"{name}_s"], flush=True)
    # one text at a time
    rng = np.random.default_rng(0)
    idx = rng.choice(len(test), size=min(args.latency_texts, len(test)), replace=False)
    texts = [torch.from_numpy(test.ids[test.offsets[i]:test.offsets[i + 1]].astype(np.int64))[None] for i in idx]
    for name, m in models.items():
        with torch.no_grad():
            for x in texts[:10]:
                m(x)
            ts = []
            for x in texts:
                t0 = time.perf_counter()
                m(x)
                ts.append(time.perf_counter() - t0)
        key = {"fp32": "batch1_fp32_ms", "packed_w1a1": "batch1_w1a1_ms", "packed_w1a32": "batch1_w1a32_ms"}[name]
        out[key] = 1e3 * statistics.median(ts)
    out["packed_w1a1_s"], out["packed_w1a32_s"] = out.pop("packed_w1a1_s"), out.pop("packed_w1a32_s")
    out["file_bytes"] = out["configs"]["w1a1"]["file_bytes"]
    out["predicted_bytes"] = out["configs"]["w1a1"]["predicted_bytes"]

    # peak memory of fresh processes
    np.save(tmp / "ids.npy", test.ids)
    np.save(tmp / "lens.npy", test.offsets)
    stem = baseline_stem(p, splits, p.train)
    fp_path = str(stem.with_suffix(".safetensors"))
    rss = {}
    for kind, path in (("fp32", fp_path), ("packed", str(tmp / "w1a1.safetensors"))):
        r = subprocess.run([sys.executable, __file__, "--child", kind, path, str(tmp / "ids.npy"), str(tmp / "lens.npy")],
                           capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
        if r.returncode:
            raise RuntimeError(f"{kind} child failed: {r.stderr[-2000:]}")
        rss[kind] = json.loads(r.stdout.strip().splitlines()[-1])
    out["peak_rss_fp32_mb"], out["peak_rss_packed_mb"] = rss["fp32"]["peak_mb"], rss["packed"]["peak_mb"]
    out["model_rss_fp32_mb"] = rss["fp32"]["peak_mb"] - rss["fp32"]["base_mb"]
    out["model_rss_packed_mb"] = rss["packed"]["peak_mb"] - rss["packed"]["base_mb"]
    out["runtime_rss_mb"] = rss["packed"]["base_mb"]
    out["speedup_w1a1"] = out["fp32_s"] / out["packed_w1a1_s"]
    out["speedup_w1a32"] = out["fp32_s"] / out["packed_w1a32_s"]
    out["latency_speedup_w1a1"] = out["batch1_fp32_ms"] / out["batch1_w1a1_ms"]
    out["latency_speedup_w1a32"] = out["batch1_fp32_ms"] / out["batch1_w1a32_ms"]

    # what each model holds in memory for its weights (parameters, buffers and packed arrays)
    def held_bytes(m):
        n = sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers()))
        for mod in m.modules():
            for a in (getattr(mod, "codec", None) and mod.codec.t.values()) or ():
                n += a.nbytes
            for name in ("_wt", "_lut"):
                a = getattr(mod, name, None)
                n += 0 if a is None else (a.nbytes if hasattr(a, "nbytes") else 0)
        return n
    out["weights_held_fp32_mb"] = held_bytes(fp) / 2**20
    out["weights_held_w1a1_mb"] = held_bytes(models["packed_w1a1"]) / 2**20

    # W1A32's ceiling with exact float activations, from rates measured here: a lookup table turns 8 weights
    # into one table read, so against a dense fp32 GEMM the best case is 8 x (reads/s) / (MACs/s)
    from binlab.runtime.kernels import LutWeights, binary_gemm, pack_bits

    M, K, N = 512, 384, 1536
    rng2 = np.random.default_rng(1)
    xb = rng2.normal(size=(M, K)).astype(np.float32)
    wb = rng2.normal(size=(N, K)).astype(np.float32)
    lw = LutWeights(pack_bits(wb), K)
    txb, twb = torch.from_numpy(xb), torch.from_numpy(wb)
    t_mm = timeit(lambda: txb @ twb.T, repeats=7, warmup=2)
    t_lut = timeit(lambda: binary_gemm(xb, lw, K), repeats=7, warmup=2)
    out["fp32_macs_per_s"] = M * K * N / t_mm
    out["lut_reads_per_s"] = M * N * (K // 8) / t_lut
    out["w1a32_ceiling"] = 8 * out["lut_reads_per_s"] / out["fp32_macs_per_s"]

    RESULTS.mkdir(parents=True, exist_ok=True)
    stem_out = RESULTS / f"bench-deploy-{p.name}"
    stem_out.with_suffix(".json").write_text(json.dumps(out, indent=2))
    c1, c32 = out["configs"]["w1a1"], out["configs"]["w1a32"]
    md = [f"# Deploy benchmark: {p.name}", "",
          f"Machine: {out['machine']}; {threads} threads; CPU flags: {' '.join(out['cpu_flags'])}. Date: {out['date']}. "
          f"Reproduce: `{out['command']}`", "",
          f"Test set: {out['rows']} rows, batches of 64. Packed models are PTQ of the cached fp32 baseline (no retraining), "
          "so their accuracies are what PTQ gives; this table measures the runtime and the file.", "",
          "| model | test set s | speedup | 1 text ms (median) | speedup | accuracy | file bytes | predicted bytes |",
          "|---|---|---|---|---|---|---|---|",
          f"| fp32 torch | {out['fp32_s']:.2f} | 1.00x | {out['batch1_fp32_ms']:.2f} | 1.00x | {100 * out['fp32_accuracy']:.2f} % | - | {out['fp32_bytes']:,.0f} |",
          f"| packed W1A1 | {out['packed_w1a1_s']:.2f} | **{out['speedup_w1a1']:.2f}x** | {out['batch1_w1a1_ms']:.2f} | **{out['latency_speedup_w1a1']:.2f}x** | "
          f"{100 * c1['packed_accuracy']:.2f} % | {c1['file_bytes']:,} | {c1['predicted_bytes']:,.0f} |",
          f"| packed W1A32 | {out['packed_w1a32_s']:.2f} | **{out['speedup_w1a32']:.2f}x** | {out['batch1_w1a32_ms']:.2f} | **{out['latency_speedup_w1a32']:.2f}x** | "
          f"{100 * c32['packed_accuracy']:.2f} % | {c32['file_bytes']:,} | {c32['predicted_bytes']:,.0f} |", "",
          f"Packed vs fake-quant predictions: W1A1 {100 * c1['prediction_agreement']:.2f} % agree (max logit difference "
          f"{c1['max_logit_rel_diff']:.1e} of the largest), W1A32 {100 * c32['prediction_agreement']:.2f} % ({c32['max_logit_rel_diff']:.1e}).", "",
          f"Peak resident memory of a fresh process that loads the model and classifies the test set: fp32 "
          f"{out['peak_rss_fp32_mb']:.0f} MiB, packed W1A1 {out['peak_rss_packed_mb']:.0f} MiB "
          f"(ratio {out['peak_rss_packed_mb'] / out['peak_rss_fp32_mb']:.2f}); of which the runtime before any model "
          f"(Python, torch, numba) is about {out['runtime_rss_mb']:.0f} MiB, so the model and its inference take "
          f"{out['model_rss_fp32_mb']:.0f} MiB (fp32) vs {out['model_rss_packed_mb']:.0f} MiB (packed), ratio "
          f"{out['model_rss_packed_mb'] / max(out['model_rss_fp32_mb'], 1e-9):.2f}. Both run the same float32 activations "
          f"(attention, FFN intermediates: the bulk of the peak), and the packed process also loads numba's compiled kernels. "
          f"The weights themselves: {out['weights_held_fp32_mb']:.2f} MiB held by the fp32 model, "
          f"{out['weights_held_w1a1_mb']:.2f} MiB by the packed one (bits kept in two layouts where a path needs it).", "",
          f"W1A32 ceiling (exact float activations, measured here at (512, 384, 1536)): dense fp32 GEMM "
          f"{out['fp32_macs_per_s'] / 1e9:.0f} G MAC/s; the lookup-table kernel {out['lut_reads_per_s'] / 1e9:.1f} G table reads/s, "
          f"each read standing for 8 weights, so a batch can run at most {out['w1a32_ceiling']:.2f}x fp32 this way. "
          "W1A32 wins where the weights' memory traffic dominates (one row: see bench-kernels.md's GEMV), not on batches."]
    stem_out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
