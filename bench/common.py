"""What the benchmarks share: a median timer, interleaved paired timing, and the CPU flags a figure was measured with."""
from __future__ import annotations

import statistics
import time

from binlab.experiments.provenance import cpu_flags  # noqa: F401 (the benches' CPU flags)


def timeit(fn, repeats: int = 7, warmup: int = 2) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def paired(fa, fb, pairs: int = 7, warmup: int = 1) -> dict:
    """Time ``fa`` and ``fb`` in interleaved pairs (a, b, a, b ...), so both see the same machine state;
    return each side's median seconds and the median, min and max of the per-pair ratios a / b (how
    many times faster b is)."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for _ in range(pairs):
        t0 = time.perf_counter()
        fa()
        t1 = time.perf_counter()
        fb()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    ratios = [a / b for a, b in zip(ta, tb)]
    return {"a_s": statistics.median(ta), "b_s": statistics.median(tb), "ratio": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios), "pairs": pairs}
