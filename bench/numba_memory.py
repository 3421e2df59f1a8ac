"""What numba costs a process in memory, before any model: resident memory of a fresh interpreter after
numpy, after importing numba, and after the first call of one of binlab's cached kernels (numba then
starts its LLVM compiler to load the cached machine code). The torch-free runtime's memory floor on its
numba backend; the numpy backend never pays it.

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
import json
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
out = {"start": rss()}
import numpy as np
out["numpy"] = rss()
import numba
out["numba imported"] = rss()
from binlab.runtime.elementwise import gelu_
gelu_(np.zeros(8, np.float32))
out["first cached kernel run"] = rss()
print(json.dumps(out))
"""


def main() -> None:
    from binlab.experiments.provenance import RESULTS, machine

    subprocess.run([sys.executable, "-c", CHILD], capture_output=True, cwd=ROOT, check=True)  # fills numba's cache
    runs = [json.loads(subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=ROOT, check=True).stdout)
            for _ in range(3)]
    steps = list(runs[0])
    med = {k: sorted(r[k] for r in runs)[1] for k in steps}
    out = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0],
           "numba": __import__("numba").__version__, "runs": runs, "median_mb": med}
    (RESULTS / "bench-numba-memory.json").write_text(json.dumps(out, indent=2) + "\n")
    md = ["# numba's memory in a fresh process", "",
          f"Machine: {out['machine']}. Date: {out['date']}. Python {out['python']}, numba {out['numba']}. "
          "Reproduce: `python bench/numba_memory.py`", "",
          "Resident memory of a fresh interpreter, the median of three (numba's cache filled by a run before them).", "",
          "| after | MiB | added MiB |", "|---|---|---|"]
    prev = None
    for k in steps:
        md.append(f"| {k} | {med[k]:.0f} | {'-' if prev is None else f'{med[k] - med[prev]:.0f}'} |")
        prev = k
    (RESULTS / "bench-numba-memory.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
