"""What numba costs a process in memory, before any model: resident memory of a fresh interpreter after
numpy, after importing numba, and after the first call of one of binlab's cached kernels (numba then
starts its LLVM compiler to load the cached machine code, and loads scipy's BLAS unless scipy is kept
out). The torch-free runtime's memory floor on its numba backend; the numpy backend never pays it.

    python bench/numba_memory.py      # writes docs/results/bench-numba-memory.{json,md}
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
out = {"start": rss()}
import numpy as np
out["numpy"] = rss()
from binlab.runtime.process import keep_scipy_out
out["binlab's runtime imported"] = rss()
if sys.argv[1:] == ["keep-scipy-out"]:
    keep_scipy_out()
import numba
out["numba imported"] = rss()
from binlab.runtime.elementwise import gelu_
gelu_(np.zeros(8, np.float32))
out["first cached kernel run"] = rss()
out["scipy loaded"] = "scipy" in sys.modules
print(json.dumps(out))
"""


def main() -> None:
    from binlab.experiments.provenance import RESULTS, cpu_flags, machine

    subprocess.run([sys.executable, "-c", CHILD], capture_output=True, cwd=ROOT, check=True)  # fills numba's cache
    def child(*args):
        return json.loads(subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, cwd=ROOT, check=True).stdout)
    runs, lean = [], []
    for _ in range(3):  # interleaved: as numba starts by default, and with scipy kept out (binlab classify's process)
        runs.append(child())
        lean.append(child("keep-scipy-out"))
    steps = [k for k in runs[0] if k != "scipy loaded"]
    med = {k: sorted(r[k] for r in runs)[1] for k in steps}
    med_lean = {k: sorted(r[k] for r in lean)[1] for k in steps}
    out = {"machine": machine(), "cpu_flags": cpu_flags(), "date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0],
           "numba": __import__("numba").__version__, "runs": runs, "median_mb": med, "runs_scipy_kept_out": lean,
           "median_mb_scipy_kept_out": med_lean, "scipy_loaded": [r["scipy loaded"] for r in runs],
           "scipy_loaded_kept_out": [r["scipy loaded"] for r in lean]}
    (RESULTS / "bench-numba-memory.json").write_text(json.dumps(out, indent=2) + "\n")
    md = ["# numba's memory in a fresh process", "",
          f"Machine: {out['machine']}; CPU flags: {' '.join(out['cpu_flags'])}. Date: {out['date']}. Python {out['python']}, "
          f"numba {out['numba']}. Reproduce: `python bench/numba_memory.py`", "",
          "Resident memory of a fresh interpreter, the median of three (numba's cache filled by a run before them): as numba "
          "starts by default, and with scipy kept out (`binlab.runtime.process.keep_scipy_out()`, as `binlab classify` "
          "runs), the two interleaved.", "",
          "| after | MiB | added MiB | MiB, scipy kept out | added MiB |", "|---|---|---|---|---|"]
    prev = None
    for k in steps:
        add = "-" if prev is None else f"{med[k] - med[prev]:.0f}"
        add_lean = "-" if prev is None else f"{med_lean[k] - med_lean[prev]:.0f}"
        md.append(f"| {k} | {med[k]:.0f} | {add} | {med_lean[k]:.0f} | {add_lean} |")
        prev = k
    md += ["", f"scipy loaded at the end: {'yes' if all(out['scipy_loaded']) else 'no'} by default, "
           f"{'yes' if any(out['scipy_loaded_kept_out']) else 'no'} with scipy kept out."]
    (RESULTS / "bench-numba-memory.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
