"""Where the committed results live and the machine that made them (named in every results file)."""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def cpu_flags() -> list[str]:
    """The vector/popcount flags of this CPU (from /proc/cpuinfo; empty where there is none)."""
    try:
        flags = next(line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if f.startswith(("avx", "popcnt", "fma", "bmi")))


def vector_summary(flags: list[str] | None = None) -> str:
    """What the kernels can use, in a few words: "AVX-512 with VPOPCNTDQ", "AVX-512", "AVX2" or "no AVX2"."""
    f = set(cpu_flags() if flags is None else flags)
    if "avx512f" in f:
        return "AVX-512 with VPOPCNTDQ" if "avx512_vpopcntdq" in f else "AVX-512"
    return "AVX2" if "avx2" in f else "no AVX2"


def hardware() -> dict:
    """The machine a row is measured on: CPU model, its vector extensions, cores, and the GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "vector": vector_summary(), "cores": os.cpu_count(), "gpu": gpu}


def hardware_text(h: dict) -> str:
    return f"{h['cpu']} ({h.get('vector', 'flags not recorded')}), {h['cores']} cores, {h.get('gpu') or 'no GPU'}"


def machine() -> str:
    import torch

    return f"{hardware_text(hardware())}, torch {torch.__version__}"


def machine_text(machine: str) -> str:
    """A table's machine as its JSON records it; a table run before binlab recorded the CPU's vector unit
    ("AMD EPYC, 2 cores, ...") says that it was not recorded, so AVX2 and AVX-512 runs are not taken for one another."""
    if re.search(r"\((AVX|no AVX2|flags not recorded)", machine):  # hardware_text's vector summary
        return machine
    cpu, _, rest = machine.partition(", ")
    return f"{cpu} (vector unit not recorded), {rest}" if rest else f"{machine} (vector unit not recorded)"
