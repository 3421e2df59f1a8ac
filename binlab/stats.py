"""Sampling uncertainty of accuracies measured on a finite set of rows.

- :func:`wilson_interval`: the 95 % Wilson score interval of a proportion (Wilson 1927)::

      (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)

  which, unlike the normal (Wald) interval, stays inside [0, 1] and keeps its coverage near 0 and 1.
- :func:`paired_difference`: the difference of two classifiers' accuracies on the *same* rows, with
  the normal interval of a paired difference (the basis of McNemar's test). Only discordant rows
  count: with ``b`` rows right only under A and ``c`` right only under B,

      d = (b - c) / n,   Var(d) = (b + c - (b - c)^2 / n) / n^2

  and :func:`mcnemar_p` gives the exact two-sided McNemar p-value (binomial on b + c trials).
- :func:`ratio_interval` and :func:`paired_ratio_difference`: a language model's mean NLL per token,
  ``r = sum_i a_i / sum_i b_i`` over rows i (a: the row's NLL, b: its tokens), with the
  delta-method (ratio-estimator) standard error, rows as the sampling unit::

      SE(r)^2 = n / (n - 1) * sum_i (a_i - r b_i)^2 / (sum_i b_i)^2

  and the same for the paired difference of two models on the same rows (``a_i - a'_i``).
  Perplexity intervals are ``exp`` of the NLL interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson interval (as fractions) of ``correct / n``."""
    if n <= 0:
        raise ValueError("an interval needs at least one row (n >= 1)")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, n], got {correct} of {n}")
    p = correct / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: P(|B - (b+c)/2| >= |b - (b+c)/2|), B ~ Binomial(b + c, 1/2)."""
    m = b + c
    if m == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2.0**m
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedDiff:
    diff: float  # accuracy(A) - accuracy(B), as a fraction
    low: float
    high: float
    b: int  # rows right under A only
    c: int  # rows right under B only
    n: int
    p_value: float

    @property
    def within_noise(self) -> bool:
        """True when the 95 % interval contains 0: no measurable difference on these rows."""
        return self.low <= 0 <= self.high


def paired_difference(correct_a, correct_b, z: float = Z95) -> PairedDiff:
    """Accuracy(A) - accuracy(B) on the same rows, its 95 % interval and McNemar's p-value."""
    a = np.asarray(correct_a, dtype=bool)
    b_ = np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("paired_difference needs two equal-length, non-empty 1-D arrays of per-row correctness")
    n = a.size
    b = int((a & ~b_).sum())
    c = int((~a & b_).sum())
    d = (b - c) / n
    se = math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    return PairedDiff(d, d - z * se, d + z * se, b, c, n, mcnemar_p(b, c))


@dataclass(frozen=True)
class RatioEstimate:
    value: float
    low: float
    high: float

    @property
    def within_noise(self) -> bool:
        return self.low <= 0 <= self.high


def ratio_interval(a, b, z: float = Z95) -> RatioEstimate:
    """``sum a / sum b`` with its 95 % delta-method interval (rows are the sampling unit)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2 or b.sum() <= 0:
        raise ValueError("ratio_interval needs two equal-length 1-D arrays of at least 2 rows with a positive total")
    n = a.size
    r = a.sum() / b.sum()
    se = math.sqrt(n / (n - 1) * float(((a - r * b) ** 2).sum())) / b.sum()
    return RatioEstimate(r, r - z * se, r + z * se)


def paired_ratio_difference(a1, a2, b, z: float = Z95) -> RatioEstimate:
    """``(sum a1 - sum a2) / sum b`` on the same rows (e.g. the change of mean NLL per token), 95 % interval."""
    return ratio_interval(np.asarray(a1, float) - np.asarray(a2, float), b, z)
