"""Benchmark: the packed model file against the fp32 model, side by side in one run on this machine,
run three ways: fp32 torch, the packed model in torch (:func:`binlab.runtime.export.load_packed`) and
the torch-free runtime (:mod:`binlab.runtime.standalone`: its numba backend, the same kernels compiled ahead of time
(:mod:`binlab.runtime.aot`, built at the start of the bench), and its numpy backend for W1A1).

    python bench/deploy.py --preset scratch        # writes docs/results/bench-deploy-<preset>.{json,md}
    python bench/deploy.py --preset minilm-l2
    python bench/deploy.py --preset lm             # a language model: perplexity, next-token logits

Two packed configurations of the preset's cached baseline, each trained with the preset's QAT budget
(``--ptq``: PTQ only, no training):

- **W1A1**: token and position embeddings XNOR-binarized (1 bit + a scale per row), every encoder
  linear XNOR-binarized with sign-binarized inputs (XNOR-popcount path); the head stays fp32.
- **W1A32**: the same weights, inputs kept real (lookup tables for few rows, tile dequantization
  for a batch).

Figures, every pair of sides timed in interleaved pairs (``common.paired``: median of the per-pair
ratios, with their min and max):

- the whole test set (batches of 64, length-sorted) and one text at a time (batch of 1, 100 texts);
- fresh processes (``bench/deploy_child.py``, three of each kind, interleaved): seconds from process
  start to the first prediction, and the peak resident memory of the whole process after the whole
  test set (``VmHWM``), with the memory before the model was loaded beside it;
- the file's bytes against ``model_size``; predictions of the packed paths against fake quantization
  and the torch-free runtime against the torch packed path on the whole test set.
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

from common import cpu_flags, paired, timeit  # noqa: E402 - bench/common.py, beside this script

SPECS = ("w1a1", "w1a32")
ROUNDED = ("int8", "bf16")  # W1A32 with rounded inputs (load_packed(path, inputs=...)), timed beside the exact path
ROUNDED_TEXT = {"int8": "int8: 8 bits per token, an int8 GEMM", "bf16": "bf16: bfloat16 inputs and output of a bfloat16 GEMM"}
# fresh processes: fp32 torch, W1A1 in torch, W1A1 and W1A32 torch-free (numba backend; the kernels compiled ahead of time),
# W1A1 torch-free on the numpy backend
# and fp32 torch with glibc keeping freed memory, as the torch-free processes run (binlab.runtime.process.hold_freed_memory)
KINDS = ("fp32", "fp32_held", "packed", "torchfree", "torchfree_w1a32", "aot", "aot_w1a32", "numpy")
HELD = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864"}  # hold_freed_memory's setting


def _specs():
    from binlab.nn.quantize import MethodConfig, QuantSpec, Rule

    return {"w1a1": QuantSpec((Rule("embeddings", MethodConfig("xnor")), Rule("encoder", MethodConfig("xnor", act="sign")))),
            "w1a32": QuantSpec((Rule("embeddings", MethodConfig("xnor")), Rule("encoder", MethodConfig("xnor"))))}


def outputs(fn, split, lm: bool, keep_batches: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``fn`` (token ids (B, T) -> logits) over ``split`` in batches of 64, length-sorted (the order
    ``binlab.training.train.predict`` uses): (arg-max predictions of every row, or of every real token of a
    language model; the logits of the first ``keep_batches`` batches, all when None)."""
    from binlab.data import PAD_ID
    from binlab.training.train import EVAL_BATCH

    preds, kept = [], []
    for i, (x, _) in enumerate(split.padded(EVAL_BATCH)):
        lg = fn(x)
        preds.append(lg[x != PAD_ID].argmax(-1) if lm else lg.argmax(-1))
        if keep_batches is None or i < keep_batches:
            kept.append(lg.reshape(-1, lg.shape[-1]))
    return np.concatenate(preds), (np.concatenate(kept) if kept else np.zeros((0, 0), np.float32))


def torch_fn(model):
    """token ids (numpy) -> logits (numpy) of a torch model, without gradients."""
    def f(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
    return f


def _fresh(kind: str, path: str, tmp: Path, one_by_one: int) -> dict:
    env = os.environ | {"PYTHONPATH": str(ROOT)} | (HELD if kind == "fp32_held" else {})
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "deploy_child.py"), kind.removesuffix("_held"), path, str(tmp / "ids.npy"),
                        str(tmp / "offsets.npy"), repr(time.time()), str(one_by_one)], capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"{kind} child failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="scratch")
    ap.add_argument("--latency-texts", type=int, default=100)
    ap.add_argument("--ptq", action="store_true", help="PTQ only (no QAT): quicker, but the accuracies are PTQ's")
    ap.add_argument("--out", default=None, help="results folder (default docs/results)")
    args = ap.parse_args()

    from binlab.experiments.provenance import RESULTS, machine
    from binlab.presets import baseline_stem, get_baseline, get_preset, load_data
    from binlab.runtime import aot, standalone
    from binlab.runtime.export import check_size, load_packed, save_packed
    from binlab.runtime.size import model_size
    from binlab.training.calibration import calibration_set
    from binlab.training.qat import ptq, qat
    from binlab.training.train import evaluate

    threads = numba.get_num_threads()
    torch.set_num_threads(threads)
    p = get_preset(args.preset)
    splits = load_data(p)
    test = splits.test
    lm = p.model.task == "lm"
    fp, _ = get_baseline(p, splits)
    fp.eval()
    tmp = Path(tempfile.mkdtemp(prefix="binlab-deploy-"))
    out = {"preset": p.name, "rows": len(test), "machine": machine(), "cpu_flags": cpu_flags(), "threads": threads,
           "load_average_start": os.getloadavg()[0],
           "date": time.strftime("%Y-%m-%d"), "command": f"python bench/deploy.py --preset {p.name}" + (" --ptq" if args.ptq else ""),
           "trained": "PTQ" if args.ptq else f"QAT ({p.qat.train.epochs:g} ep, lr {p.qat.train.lr:g}, KD {p.qat.train.distill:g})",
           "configs": {}}
    metric = (lambda r: r.perplexity) if lm else (lambda r: 100 * r.accuracy)
    out["metric"] = "perplexity" if lm else "accuracy %"
    t0 = time.perf_counter()
    aot.build()  # what `binlab runtime build` does: the torch-free runtime's kernels for this CPU, ahead of time
    out["aot_build_s"] = time.perf_counter() - t0
    models, lites = {"fp32": fp}, {}
    calib = calibration_set(splits)
    for kind, spec in _specs().items():
        t0 = time.perf_counter()
        if args.ptq:
            fq = ptq(fp, spec, calib=calib)
        else:
            fq, _ = qat(fp, spec, splits.train, p.qat, val_split=splits.val, calib=calib)
        fq.eval()
        train_s = time.perf_counter() - t0
        path = tmp / f"{kind}.safetensors"
        info = save_packed(fq, path, tokenizer=splits.tokenizer)
        packed, lite = load_packed(path), standalone.load(path, numba_threads=None)  # here only for agreement: timed in its own process
        lite_np, lite_aot = standalone.load(path, backend="numpy"), standalone.load(path, backend="aot")
        keep = 2 if lm else None  # a language model's logits over the whole test set would not fit in memory
        (pa, a), (pb, b), (pc, c), (pn, n), (pq, q) = (outputs(f, test, lm, keep) for f in (torch_fn(fq), torch_fn(packed), lite.logits,
                                                                                           lite_np.logits, lite_aot.logits))
        cfg = {"spec": spec.to_json(), "train_s": train_s, "file_bytes": info["file_bytes"], "predicted_bytes": info["predicted_bytes"],
               "tokenizer_bytes": info["tokenizer_bytes"], "within_header": check_size(info),
               "fake_quant_metric": metric(evaluate(fq, test)), "packed_metric": metric(evaluate(packed, test)),
               "prediction_agreement": float((pa == pb).mean()),
               "max_logit_rel_diff": float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30)),
               "torchfree_agreement": float((pc == pb).mean()),
               "torchfree_max_logit_rel_diff": float(np.abs(c - b).max() / max(np.abs(b).max(), 1e-30)),
               "numpy_agreement": float((pn == pb).mean()), "numpy_max_logit_rel_diff": float(np.abs(n - b).max() / max(np.abs(b).max(), 1e-30)),
               "aot_agreement": float((pq == pb).mean()), "aot_max_logit_rel_diff": float(np.abs(q - b).max() / max(np.abs(b).max(), 1e-30))}
        if kind == "w1a32":  # rounded inputs: int8 per token through an int8 GEMM, bfloat16 through a bf16 GEMM
            for mode in ROUNDED:
                fast = load_packed(path, inputs=mode)
                pd, d = outputs(torch_fn(fast), test, lm, keep)
                cfg |= {f"{mode}_metric": metric(evaluate(fast, test)), f"{mode}_agreement": float((pd == pa).mean()),
                        f"{mode}_max_logit_rel_diff": float(np.abs(d - a).max() / max(np.abs(a).max(), 1e-30))}
                models[f"packed_w1a32_{mode}"] = fast
        out["configs"][kind] = cfg
        models[f"packed_{kind}"], lites[kind] = packed, lite
        print(kind, cfg, flush=True)
    out["fp32_bytes"] = model_size(fp).total_bytes
    out["fp32_metric"] = metric(evaluate(fp, test))

    # the whole test set, each side against fp32 torch in interleaved pairs
    def whole(fn):
        return lambda: outputs(fn, test, lm, 0)
    sides = [(f"packed_{kind}", torch_fn(models[f"packed_{kind}"])) for kind in SPECS]
    sides += [(f"packed_w1a32_{mode}", torch_fn(models[f"packed_w1a32_{mode}"])) for mode in ROUNDED]
    for side, fn in sides:
        r = paired(whole(torch_fn(fp)), whole(fn), pairs=3, warmup=1)
        out[f"{side}_s"], out[f"{side}_vs_fp32"] = r["b_s"], r
        out.setdefault("fp32_s_pairs", []).append(r["a_s"])
        print(side, "test set", r, flush=True)
    out["fp32_s"] = statistics.median(out.pop("fp32_s_pairs"))

    # one text at a time
    rng = np.random.default_rng(0)
    idx = rng.choice(len(test), size=min(args.latency_texts, len(test)), replace=False)
    texts = [test.ids[test.offsets[i]:test.offsets[i + 1]].astype(np.int64)[None] for i in idx]

    def one_by_one(fn):
        def go():
            for x in texts:
                fn(x)
        return go

    for side, fn in sides:
        r = paired(one_by_one(torch_fn(fp)), one_by_one(fn), pairs=3, warmup=1)
        out[f"batch1_{side}_ms"] = 1e3 * r["b_s"] / len(texts)
        out[f"batch1_{side}_vs_fp32"] = r
        out.setdefault("batch1_fp32_pairs", []).append(1e3 * r["a_s"] / len(texts))
        print(side, "one text", r, flush=True)
    out["batch1_fp32_ms"] = statistics.median(out.pop("batch1_fp32_pairs"))

    # fresh processes: start to first prediction, and peak memory
    np.save(tmp / "ids.npy", test.ids)
    np.save(tmp / "offsets.npy", test.offsets)
    paths = {"fp32": str(baseline_stem(p, splits, p.train).with_suffix(".safetensors")),
             "fp32_held": str(baseline_stem(p, splits, p.train).with_suffix(".safetensors")),
             "packed": str(tmp / "w1a1.safetensors"), "torchfree": str(tmp / "w1a1.safetensors"),
             "torchfree_w1a32": str(tmp / "w1a32.safetensors"), "numpy": str(tmp / "w1a1.safetensors"),
             "aot": str(tmp / "w1a1.safetensors"), "aot_w1a32": str(tmp / "w1a32.safetensors")}
    runs = {k: [] for k in KINDS}
    for _ in range(3):
        for k in KINDS:
            runs[k].append(_fresh(k if k == "fp32_held" else k.split("_")[0], paths[k], tmp, args.latency_texts))
    out["fresh"] = runs
    for k in KINDS:
        out[f"{k}_start_s"] = statistics.median(r["start_to_first_s"] for r in runs[k])
        out[f"peak_rss_{k}_mb"] = statistics.median(r["peak_mb"] for r in runs[k])
        out[f"base_rss_{k}_mb"] = statistics.median(r["base_mb"] for r in runs[k])
    # the torch-free runtime's speed: its own processes against the fp32 torch process of the same round
    for kind, k in (("w1a1", "torchfree"), ("w1a32", "torchfree_w1a32"), ("w1a1_numpy", "numpy"), ("w1a1_aot", "aot"),
                    ("w1a32_aot", "aot_w1a32")):
        for what, key, prefix in (("test_s", "_s", ""), ("batch1_ms", "_ms", "batch1_")):
            ratios = [f[what] / t[what] for f, t in zip(runs["fp32"], runs[k])]
            out[f"{prefix}torchfree_{kind}{key}"] = statistics.median(r[what] for r in runs[k])
            out[f"{prefix}torchfree_{kind}_vs_fp32"] = {"ratio": statistics.median(ratios), "ratio_min": min(ratios),
                                                       "ratio_max": max(ratios), "pairs": len(ratios), "fresh_processes": True}
    for what, key, prefix in (("test_s", "_s", ""), ("batch1_ms", "_ms", "batch1_")):  # against fp32 with the same malloc setting
        ratios = [f[what] / t[what] for f, t in zip(runs["fp32_held"], runs["aot"])]
        out[f"{prefix}fp32_held{key}"] = statistics.median(r[what] for r in runs["fp32_held"])
        out[f"{prefix}torchfree_w1a1_aot_vs_fp32_held"] = {"ratio": statistics.median(ratios), "ratio_min": min(ratios),
                                                          "ratio_max": max(ratios), "pairs": len(ratios), "fresh_processes": True}
    out["fp32_test_held_ratio"] = statistics.median(r["test_s"] for r in runs["fp32"]) / out["fp32_held_s"]
    out["torchfree_imports_torch"] = any(r["torch_imported"] for k in ("torchfree", "numpy", "aot", "aot_w1a32") for r in runs[k])
    out["numpy_imports_numba"] = any(r.get("numba_imported", True) for r in runs["numpy"])
    out["aot_imports_numba"] = any(r.get("numba_imported", True) for k in ("aot", "aot_w1a32") for r in runs[k])
    out["torchfree_imports_scipy"] = any(r.get("scipy_imported", True) for r in runs["torchfree"])
    # the keys the runtime's targets are stated in: W1A1 as `binlab classify` runs it after `binlab runtime build`
    # (the kernels compiled ahead of time); the numba backend's figures keep their own keys (torchfree_w1a1_s, ...)
    out["torchfree_numba_start_s"] = out["torchfree_start_s"]
    out["torchfree_start_s"] = out["aot_start_s"]
    out["torchfree_s"] = out["torchfree_w1a1_aot_s"]
    out["torchfree_batch1_ms"] = out["batch1_torchfree_w1a1_aot_ms"]
    out["torchfree_peak_rss_mb"] = out["peak_rss_aot_mb"]
    out["torchfree_agreement"] = out["configs"]["w1a1"]["aot_agreement"]
    out["torchfree_backend"] = "aot"
    out["file_bytes"] = out["configs"]["w1a1"]["file_bytes"]
    out["predicted_bytes"] = out["configs"]["w1a1"]["predicted_bytes"]

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

    results = Path(args.out) if args.out else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    stem_out = results / f"bench-deploy-{p.name}"
    out["load_average_end"] = os.getloadavg()[0]  # 1-minute load: about the bench's own threads on an otherwise idle machine
    stem_out.with_suffix(".json").write_text(json.dumps(out, indent=2))
    stem_out.with_suffix(".md").write_text(markdown(out) + "\n")
    print(markdown(out))


def _ratio(r: dict) -> str:
    return f"**{r['ratio']:.2f}x** ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})"


def markdown(out: dict) -> str:
    unit = "perplexity" if out["metric"] == "perplexity" else "accuracy"
    fmt = (lambda v: f"{v:.2f}") if unit == "perplexity" else (lambda v: f"{v:.2f} %")
    md = [f"# Deploy benchmark: {out['preset']}", "",
          f"Machine: {out['machine']}; {out['threads']} threads; CPU flags: {' '.join(out['cpu_flags'])}. Date: {out['date']}. "
          + (f"1-minute load average {out['load_average_start']:.2f} at the start, {out['load_average_end']:.2f} at the end. "
             if "load_average_end" in out else "")
          + f"Reproduce: `{out['command']}`", "",
          f"Test set: {out['rows']} rows, batches of 64, length-sorted. The packed models are the cached fp32 baseline "
          f"binarized and trained: {out['trained']}. Three runtimes: fp32 torch, the packed file in torch (`load_packed`) and "
          "the packed file without torch (`binlab.runtime.standalone`: its kernels compiled by numba in the process, or compiled "
          f"ahead of time by `binlab runtime build` ({out.get('aot_build_s', float('nan')):.0f} s here), which keeps numba out of the process; "
          "W1A1 also on the numpy backend, which decodes the binary matrices to float32 at load). Speedups are against fp32 torch, timed in "
          "interleaved pairs: the median of the per-pair ratios, their range in brackets. The torch-free rows are timed as they are "
          "deployed, in fresh processes without torch (three, each paired with the fp32 torch process of the same round); the torch "
          "rows in one process.", "",
          f"| model | test set s | speedup | 1 text ms | speedup | {unit} | file bytes | predicted bytes (weights) |",
          "|---|---|---|---|---|---|---|---|",
          f"| fp32 torch | {out['fp32_s']:.2f} | 1.00x | {out['batch1_fp32_ms']:.2f} | 1.00x | {fmt(out['fp32_metric'])} | - | {out['fp32_bytes']:,.0f} |"]
    for kind, label in (("w1a1", "W1A1"), ("w1a32", "W1A32")):
        c = out["configs"][kind]
        sides = [(f"packed_{kind}", f"packed {label}, torch"), (f"torchfree_{kind}", f"packed {label}, torch-free, numba compiles")]
        if f"torchfree_{kind}_aot_s" in out:
            sides.append((f"torchfree_{kind}_aot", f"packed {label}, torch-free, compiled ahead of time"))
        if f"torchfree_{kind}_numpy_s" in out:
            sides.append((f"torchfree_{kind}_numpy", f"packed {label}, torch-free, numpy backend"))
        for side, name in sides:
            md.append(f"| {name} | {out[f'{side}_s']:.2f} | {_ratio(out[f'{side}_vs_fp32'])} | {out[f'batch1_{side}_ms']:.2f} | "
                      f"{_ratio(out[f'batch1_{side}_vs_fp32'])} | {fmt(c['packed_metric'])} | {c['file_bytes']:,} | {c['predicted_bytes']:,.0f} |")
        for mode in ROUNDED if kind == "w1a32" else ():
            side = f"packed_w1a32_{mode}"
            if f"{side}_s" in out:
                md.append(f"| packed W1A32, torch, {mode} inputs | {out[f'{side}_s']:.2f} | {_ratio(out[f'{side}_vs_fp32'])} | "
                          f"{out[f'batch1_{side}_ms']:.2f} | {_ratio(out[f'batch1_{side}_vs_fp32'])} | {fmt(c[f'{mode}_metric'])} | "
                          f"{c['file_bytes']:,} | {c['predicted_bytes']:,.0f} |")
    c1, c32 = out["configs"]["w1a1"], out["configs"]["w1a32"]
    md += ["", f"The file carries its tokenizer ({c1['tokenizer_bytes']:,} bytes of the file bytes above); the rest is the weights' "
               "accounting plus the header. Torch packed vs fake quantization: W1A1 "
               f"{100 * c1['prediction_agreement']:.2f} % of predictions agree (largest logit difference {c1['max_logit_rel_diff']:.1e} "
               f"of the largest logit), W1A32 {100 * c32['prediction_agreement']:.2f} % ({c32['max_logit_rel_diff']:.1e}). "
               f"Torch-free vs torch packed: W1A1 {100 * c1['torchfree_agreement']:.2f} % ({c1['torchfree_max_logit_rel_diff']:.1e}), "
               f"W1A32 {100 * c32['torchfree_agreement']:.2f} % ({c32['torchfree_max_logit_rel_diff']:.1e})"
               + (f"; the numpy backend W1A1 {100 * c1['numpy_agreement']:.2f} % ({c1['numpy_max_logit_rel_diff']:.1e})" if "numpy_agreement" in c1 else "")
               + (f"; compiled ahead of time W1A1 {100 * c1['aot_agreement']:.2f} % ({c1['aot_max_logit_rel_diff']:.1e}), W1A32 "
                  f"{100 * c32['aot_agreement']:.2f} % ({c32['aot_max_logit_rel_diff']:.1e})" if "aot_agreement" in c1 else "")
               + ". W1A32 with rounded inputs (`load_packed(path, inputs=...)`; "
               + "; ".join(ROUNDED_TEXT[mode] for mode in ROUNDED if f"{mode}_agreement" in c32) + ") against fake quantization: "
               + ", ".join(f"{mode} {100 * c32[f'{mode}_agreement']:.2f} % ({c32[f'{mode}_max_logit_rel_diff']:.1e})"
                           for mode in ROUNDED if f"{mode}_agreement" in c32)
               + f". Fake-quant "
               f"{unit}: W1A1 {fmt(c1['fake_quant_metric'])}, W1A32 {fmt(c32['fake_quant_metric'])}.", "",
           "Fresh processes (three of each, interleaved; medians): a process that loads the model, predicts one text, then "
           "the whole test set, then texts one at a time.", "",
           "| runtime | process start to first prediction s | peak memory MiB | before the model MiB |", "|---|---|---|---|"]
    for k, name in (("fp32", "fp32 torch"), ("fp32_held", "fp32 torch, glibc keeping freed memory"), ("packed", "packed W1A1, torch"), ("torchfree", "packed W1A1, torch-free, numba compiles"),
                    ("torchfree_w1a32", "packed W1A32, torch-free, numba compiles"), ("aot", "packed W1A1, torch-free, compiled ahead of time"),
                    ("aot_w1a32", "packed W1A32, torch-free, compiled ahead of time"), ("numpy", "packed W1A1, torch-free, numpy backend")):
        if k == "torchfree" and "torchfree_numba_start_s" in out:
            md.append(f"| {name} | {out['torchfree_numba_start_s']:.2f} | {out['peak_rss_torchfree_mb']:.0f} | {out['base_rss_torchfree_mb']:.0f} |")
            continue
        if f"{k}_start_s" not in out:
            continue
        md.append(f"| {name} | {out[f'{k}_start_s']:.2f} | {out[f'peak_rss_{k}_mb']:.0f} | {out[f'base_rss_{k}_mb']:.0f} |")
    numba_start = out.get("torchfree_numba_start_s", out["torchfree_start_s"])
    md += ["", f"Torch-free (numba compiles) against fp32 torch: start {out['fp32_start_s'] / numba_start:.2f}x sooner, peak memory "
               f"{out['peak_rss_torchfree_mb'] / out['peak_rss_fp32_mb']:.2f} of fp32's; torch imported by a torch-free process: "
               f"{'yes' if out['torchfree_imports_torch'] else 'no'}, scipy (which numba's start would load): "
               f"{'yes' if out['torchfree_imports_scipy'] else 'no'}"
               + (f"; the numpy backend: start {out['fp32_start_s'] / out['numpy_start_s']:.2f}x sooner, peak memory "
                  f"{out['peak_rss_numpy_mb'] / out['peak_rss_fp32_mb']:.2f} of fp32's, numba imported: "
                  f"{'yes' if out['numpy_imports_numba'] else 'no'}" if "numpy_start_s" in out else "")
               + (f"; compiled ahead of time (what `binlab classify` runs once `binlab runtime build` has run; the targets' "
                  f"`torchfree_*` keys): start {out['fp32_start_s'] / out['aot_start_s']:.2f}x sooner, peak memory "
                  f"{out['peak_rss_aot_mb']:.0f} MiB ({out['peak_rss_aot_mb'] * 1.048576:.0f} MB), {out['peak_rss_aot_mb'] / out['peak_rss_fp32_mb']:.2f} of fp32's, "
                  f"one text {out['batch1_torchfree_w1a1_aot_vs_fp32']['ratio']:.2f}x fp32's speed, numba imported: "
                  f"{'yes' if out['aot_imports_numba'] else 'no'}" if "aot_start_s" in out else "") + ".", "",
           *(["The torch-free processes let glibc keep freed arrays for the next batch (`hold_freed_memory`, as `binlab classify` "
              "does). The same setting given to fp32 torch (GLIBC_TUNABLES) makes its test set "
              f"{out['fp32_test_held_ratio']:.2f}x as fast, at a peak of {out['peak_rss_fp32_held_mb']:.0f} MiB; against it, W1A1 compiled "
              f"ahead of time runs the test set {_ratio(out['torchfree_w1a1_aot_vs_fp32_held'])} as fast and one text "
              f"{_ratio(out['batch1_torchfree_w1a1_aot_vs_fp32_held'])}.", ""] if "fp32_held_s" in out else []),
           f"W1A32 ceiling (exact float activations, measured here at (512, 384, 1536)): dense fp32 GEMM "
           f"{out['fp32_macs_per_s'] / 1e9:.0f} G MAC/s; the lookup-table kernel {out['lut_reads_per_s'] / 1e9:.1f} G table reads/s, "
           f"each read standing for 8 weights, so a batch can run at most {out['w1a32_ceiling']:.2f}x fp32 this way. "
           "W1A32 wins where the weights' memory traffic dominates (one row: see bench-kernels.md's GEMV), not on batches."]
    return "\n".join(md)


if __name__ == "__main__":
    main()
