"""How many padded tokens the torch-free runtime should run per pass over a batch (``Model.max_tokens``).

:meth:`binlab.runtime.standalone.Model.logits` splits a batch into chunks of rows of at most
``max_tokens`` padded tokens, which bounds the working memory (attention scores, FFN activations). The
chunk size also sets the speed: the numba kernels run fastest while a pass's activations stay in the
core's cache, numpy's array passes pay a fixed cost per call and want long passes. This bench measures
both, per preset and backend, in fresh processes (the deploy bench's child: load, first prediction, the
whole test set in batches of 64, length-sorted), every setting once per round, the rounds interleaved:

    python bench/pass_tokens.py                       # writes docs/results/bench-pass-tokens.{json,md}
    python bench/pass_tokens.py --presets tiny --rounds 1 --out /tmp/x   # a smoke run
    python bench/pass_tokens.py --render              # the markdown again from the JSON (the current defaults in bold)

The models are each preset's cached fp32 baseline binarized W1A1 (XNOR weights and sign inputs, as the
deploy bench's W1A1) by PTQ: the speed and the memory do not depend on the training, so no QAT is run.
Reported: the median over rounds of the test set's seconds and of the process's peak resident memory
(``VmHWM``), and the chosen defaults (``binlab.runtime.standalone.MAX_TOKENS``) beside them.
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

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np
path, ids_path, offsets_path, backend, max_tokens = sys.argv[1:6]
from binlab.data import PAD_ID
from binlab.runtime.process import keep_scipy_out, status_mib as rss
from binlab.runtime.standalone import load
from deploy_child import length_sorted_batches
keep_scipy_out()
ids, offsets = np.load(ids_path), np.load(offsets_path)
m = load(path, backend=backend)
m.max_tokens = int(max_tokens)
m.logits(ids[offsets[0]:offsets[1]].astype(np.int64)[None])
loaded = rss("VmRSS")
checksum = 0.0
t0 = time.perf_counter()
for rows, x in length_sorted_batches(ids, offsets, PAD_ID):
    lg = m.logits(x)
    checksum += float(lg[:, -1].sum() if lg.ndim == 3 else lg.sum())
test_s = time.perf_counter() - t0
print(json.dumps({"test_s": test_s, "loaded_mb": loaded, "peak_mb": rss("VmHWM"), "checksum": checksum}))
"""

#: padded tokens per pass tried, per backend
SETTINGS = {"numba": (64, 128, 256, 512, 1024), "numpy": (128, 256, 1024)}
#: the numpy backend's test set takes half a minute on minilm-l2 per setting: measured on these presets only
NUMPY_PRESETS = ("tiny", "scratch", "lm")


def export(preset: str, tmp: Path) -> tuple[str, str, str, str]:
    """The preset's W1A1 PTQ packed file and its test ids; (path, ids, offsets, task)."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from deploy import _specs

    from binlab.presets import get_baseline, get_preset, load_data
    from binlab.runtime.export import save_packed
    from binlab.training.calibration import calibration_set
    from binlab.training.qat import ptq

    torch.set_num_threads(1)
    p = get_preset(preset)
    splits = load_data(p)
    fp, _ = get_baseline(p, splits)
    fq = ptq(fp.eval(), _specs()["w1a1"], calib=calibration_set(splits)).eval()
    path = tmp / f"{preset}-w1a1.safetensors"
    save_packed(fq, path, tokenizer=splits.tokenizer)
    np.save(tmp / f"{preset}-ids.npy", splits.test.ids)
    np.save(tmp / f"{preset}-offsets.npy", splits.test.offsets)
    return str(path), str(tmp / f"{preset}-ids.npy"), str(tmp / f"{preset}-offsets.npy"), p.model.task


def l2_size() -> str:
    """The first core's level-2 cache as the kernel reports it ("1024K"), or "unknown"."""
    try:
        return Path("/sys/devices/system/cpu/cpu0/cache/index2/size").read_text().strip()
    except OSError:
        return "unknown"


def child(path: str, ids: str, offsets: str, backend: str, tokens: int) -> dict:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")]), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", CHILD, path, ids, offsets, backend, str(tokens)], capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"child failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="scratch,minilm-l2,lm")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None, help="results folder (default docs/results)")
    ap.add_argument("--render", action="store_true", help="rewrite the markdown from the committed JSON (nothing measured)")
    args = ap.parse_args()

    from binlab.experiments.provenance import RESULTS, cpu_flags, machine
    from binlab.runtime.standalone import MAX_TOKENS

    out_dir = Path(args.out) if args.out else RESULTS
    if args.render:
        out = json.loads((out_dir / "bench-pass-tokens.json").read_text())
        out["defaults"] = {f"{b}/{task}": n for (b, task), n in MAX_TOKENS.items()}
        (out_dir / "bench-pass-tokens.json").write_text(json.dumps(out, indent=2) + "\n")
        render(out, out_dir)
        return
    tmp = Path(tempfile.mkdtemp(prefix="binlab-pass-tokens-"))
    presets = [p for p in args.presets.split(",") if p]
    files = {p: export(p, tmp) for p in presets}
    cases = [(p, b, t) for p in presets for b in SETTINGS if b == "numba" or p in NUMPY_PRESETS for t in SETTINGS[b]]
    out = {"machine": machine(), "cpu_flags": cpu_flags(), "l2_per_core": l2_size(), "date": time.strftime("%Y-%m-%d"),
           "load_average_start": os.getloadavg()[0], "rounds": args.rounds, "threads": 1,
           "command": "python bench/pass_tokens.py" + (f" --presets {args.presets}" if args.presets != "scratch,minilm-l2,lm" else ""),
           "defaults": {f"{b}/{task}": n for (b, task), n in MAX_TOKENS.items()}, "runs": {}}
    for _ in range(args.rounds):
        for p, b, t in cases:
            path, ids, offsets, _task = files[p]
            r = child(path, ids, offsets, b, t)
            out["runs"].setdefault(f"{p}/{b}/{t}", []).append(r)
            print(p, b, t, r, flush=True)
    out["load_average_end"] = os.getloadavg()[0]
    rows = []
    for p, b, t in cases:
        rs = out["runs"][f"{p}/{b}/{t}"]
        ref = out["runs"][f"{p}/{b}/{SETTINGS[b][-1]}"][0]["checksum"]  # the sum of every logit: the same however the batch is split
        same = all(abs(r["checksum"] - ref) <= 1e-4 * max(1.0, abs(ref)) for r in rs)
        rows.append({"preset": p, "backend": b, "tokens": t, "task": files[p][3], "same_logits_sum": same,
                     "test_s": statistics.median(r["test_s"] for r in rs), "peak_mb": statistics.median(r["peak_mb"] for r in rs),
                     "loaded_mb": statistics.median(r["loaded_mb"] for r in rs)})
    out["rows"] = rows
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench-pass-tokens.json").write_text(json.dumps(out, indent=2) + "\n")
    render(out, out_dir)


def render(out: dict, out_dir: Path) -> None:
    """The markdown of a results JSON, the runtime's current defaults in bold."""
    from binlab.runtime.standalone import MAX_TOKENS

    rows = out["rows"]
    md = ["# Tokens per pass of the torch-free runtime", "",
          f"Machine: {out['machine']}, level-2 cache {out['l2_per_core']} per core; CPU flags: {' '.join(out['cpu_flags'])}. "
          f"Date: {out['date']}. 1-minute load average {out['load_average_start']:.2f} at the start, {out['load_average_end']:.2f} "
          f"at the end. Reproduce: `{out['command']}`", "",
          "Each preset's fp32 baseline binarized W1A1 by PTQ and packed; a fresh process per setting (one thread) loads it, "
          "predicts one text, then runs the whole test set in batches of 64 length-sorted rows, each batch in passes of at "
          f"most the given padded tokens. Medians over {out['rounds']} interleaved rounds (every setting once per round); per round, "
          "each setting's time over the default's of the same round. **bold**: the runtime's default "
          "(`binlab.runtime.standalone.MAX_TOKENS`).", "",
          "| preset | backend | tokens per pass | test set s | vs the fastest | time / the default's, per round | peak MiB | "
          "after the first prediction MiB |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = min(x["test_s"] for x in rows if x["preset"] == r["preset"] and x["backend"] == r["backend"])
        default = MAX_TOKENS.get((r["backend"], r["task"]))
        tok = f"**{r['tokens']}**" if default == r["tokens"] else str(r["tokens"])
        mine, ref = out["runs"][f"{r['preset']}/{r['backend']}/{r['tokens']}"], out["runs"].get(f"{r['preset']}/{r['backend']}/{default}")
        per_round = ", ".join(f"{a['test_s'] / b['test_s']:.2f}" for a, b in zip(mine, ref)) if ref else "-"
        md.append(f"| {r['preset']} | {r['backend']} | {tok} | {r['test_s']:.2f} | {r['test_s'] / best:.2f}x | {per_round} | "
                  f"{r['peak_mb']:.0f} | {r['loaded_mb']:.0f} |")
    md += ["", "Sum of every logit over the test set equal (relative 1e-4) at every setting of a preset and backend: "
           + ("yes" if all(r.get("same_logits_sum", True) for r in rows) else "no: " + ", ".join(
               f"{r['preset']}/{r['backend']}/{r['tokens']}" for r in rows if not r.get("same_logits_sum", True)))]
    (out_dir / "bench-pass-tokens.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
