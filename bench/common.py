"""What the benchmarks share: a median timer and the CPU flags a figure was measured with."""
from __future__ import annotations

import statistics
import time


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


def cpu_flags() -> list[str]:
    """The vector/popcount flags of this CPU (from /proc/cpuinfo; empty where there is none)."""
    try:
        flags = next(line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if f.startswith(("avx", "popcnt", "fma", "bmi")))
