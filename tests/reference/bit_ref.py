"""An independent numpy port of BiT's elastic quantizers (facebookresearch/bit).

Read from commit e3a1ed90360e1e99f0fa67df2074630262487003, ``transformer/utils_quant.py``;
written from reading, not copied. float64.
"""
from __future__ import annotations

import math

import numpy as np


def init_alpha(x: np.ndarray, bits: int, signed: bool) -> float:
    """``AlphaInit.initialize_wrapper`` (lines 165-176): ``2 mean|x| / sqrt(Q)`` signed with
    ``Q = 2^(k-1) - 1`` (1 when that is 0), ``4 mean|x| / sqrt(Q)`` unsigned with ``Q = 2^k - 1``; ``x``
    is the quantizer's input *before* the unsigned path subtracts its minimum."""
    q = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    q = q or 1
    return (2.0 if signed else 4.0) * float(np.abs(x).mean()) / math.sqrt(q)


def elastic(x: np.ndarray, alpha: float, bits: int, signed: bool, grad_out: np.ndarray):
    """Forward and backward of ``ElasticQuantBinarizerSigned`` (lines 22-84) and
    ``ElasticQuantBinarizerUnsigned`` (lines 87-146) for ``alpha > 1e-5``.

    Unsigned, k > 1: ``m = min(x)`` over the whole tensor (a constant), ``x' = x - m``,
    ``y = alpha clamp(round(x'/alpha), 0, 2^k - 1) + m``. Unsigned 1-bit: no shift. Signed 1-bit:
    ``alpha sign(x)`` (sign(0) = 0); signed k-bit: ``alpha clamp(round(x/alpha), -2^(k-1), 2^(k-1)-1)``.
    Backward: ``dx = g 1[Q_n <= x'/alpha <= Q_p]``; ``dalpha = s sum g (Q_n below, Q_p above,
    round(q) - q inside)`` (signed 1-bit: ``s sum g sign(x)``), ``s = 1 / sqrt(N Q_p)``.
    Returns ``(y, dx, dalpha)``."""
    if signed:
        qn, qp = (-1, 1) if bits == 1 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        shift = 0.0
    else:
        qn, qp = 0, 2**bits - 1
        shift = float(x.min()) if bits != 1 else 0.0
    xs = x - shift
    q = xs / alpha
    code = np.sign(xs) if (signed and bits == 1) else np.clip(np.round(q), qn, qp)
    y = code * alpha + shift
    below, above = q < qn, q > qp
    middle = ~below & ~above
    scale = 1.0 / math.sqrt(x.size * qp)
    if signed and bits == 1:
        dalpha = float((np.sign(xs) * grad_out).sum() * scale)
    else:
        dalpha = float(((below * qn + above * qp + middle * (np.round(q) - q)) * grad_out).sum() * scale)
    return y, middle * grad_out, dalpha
