"""The seed project's reported numbers, typed once (``../shared/SEEDS.md``: a student project that
binarized a 2-layer transformer on AG_NEWS). Each row: (test accuracy %, parameter count as the seed
writes it, size reduction % or None). The experiments' tables and the lab's scatter read them from here.
"""
from __future__ import annotations

SEED = {
    "fp32": (91.8, "78.7M", None),
    "8-bit": (91.6, "38.6M", 50.95),
    "4-bit": (91.8, "19.7M", 74.96),
    "2-bit": (91.8, "10.2M", 87.03),
    "fully quantized": (83.2, "38.6M", 50.95),
    "basic binarization": (83.7, "4.7M", 94.03),
    "QK": (89.3, "22.8M", 71.03),
    "QV": (86.7, "22.8M", 71.03),
    "KV": (86.2, "22.8M", 71.03),
    "thresholding": (90.1, "4.7M", 94.03),
}

#: the seed's points for accuracy-vs-size plots (the fp32 baseline at 0 % reduction)
SEED_POINTS = [{"label": f"seed: {k}" + (" (their method)" if k == "thresholding" else ""), "reduction": r or 0.0, "accuracy": a}
               for k, (a, _, r) in SEED.items()]
