"""BiBERT's Bi-Attention quantizer, ported independently (numpy, float64).

htqin/BiBERT, commit ef0a98521ea871108e401fcd1e31195ae13d2dc9, ``transformer/utils_quant.py``
(``ZMeanBinaryQuantizer``, applied to the attention scores in ``transformer/modeling_quant.py``).
Written from reading, not copied.
"""
from __future__ import annotations

import numpy as np


def bool_attention(scores: np.ndarray, grad_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward ``sign(S)`` with -1 set to 0, so ``1[S > 0]`` (``sign(0) = 0``: a zero score keeps no
    key); backward ``g`` where ``-1 < S < 1`` and 0 where ``S >= 1`` or ``S <= -1``."""
    a = (np.sign(scores) > 0).astype(np.float64)
    return a, np.where((scores < 1) & (scores > -1), grad_out, 0.0)
