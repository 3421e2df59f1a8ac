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
- :func:`bootstrap_diff`: a table row trained with several seeds against the fp32 row, on the same
  test rows: a paired, two-stage (rows, then seeds) percentile bootstrap interval of the difference
  of mean accuracies (Efron & Tibshirani 1993, ch. 13; the seed stage as in Bouthillier et al. 2021,
  "Accounting for variance in machine learning benchmarks").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

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
    # exact integer arithmetic: 2**m overflows a float beyond m = 1023 discordant rows
    return min(1.0, float(Fraction(2 * sum(math.comb(m, i) for i in range(k + 1)), 2**m)))


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


# ---------------------------------------------------------------------------------------------
# Repeated seeds: a table row is several trained models (one per seed) evaluated on the same rows.


@dataclass(frozen=True)
class BootstrapDiff:
    diff: float  # mean accuracy over A's seeds - mean over B's seeds, as a fraction
    low: float  # 95 % percentile interval
    high: float
    se: float  # standard deviation of the replicates
    n_boot: int

    @property
    def within_noise(self) -> bool:
        """True when the interval contains 0: no measurable difference."""
        return self.low <= 0 <= self.high


def _seed_effects(x: np.ndarray) -> np.ndarray:
    """The seeds' effects ``m_s = mean_i x[s, i] - mean x`` of an (S, n) crossed layout, scaled so that
    resampling S of them with replacement spreads their mean by the *seed* variance alone,
    ``sigma_M^2 / S``, estimated without the row-by-seed noise that each m_s also carries:
    ``sigma_M^2 = s_m^2 - MS_E / n`` (two-way ANOVA without replication: ``MS_E`` the residual mean
    square; Searle, Casella & McCulloch 1992, ch. 4), clipped at 0. Zero for one seed."""
    s_n, n = x.shape
    if s_n < 2:
        return np.zeros(s_n)
    m = x.mean(1) - x.mean()
    resid = x - x.mean(0, keepdims=True) - x.mean(1, keepdims=True) + x.mean()
    ms_e = float((resid**2).sum()) / ((n - 1) * (s_n - 1)) if n > 1 else 0.0
    sigma2 = max(0.0, float(m @ m) / (s_n - 1) - ms_e / n)
    pop = float(m @ m) / s_n  # what resampling with replacement reproduces
    return m * math.sqrt(sigma2 / pop) if pop > 0 else m


def bootstrap_diff(correct_a, correct_b, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                   paired_seeds: bool = False) -> BootstrapDiff:
    """Paired bootstrap interval of ``acc(A) - acc(B)`` on the same test rows, over rows and seeds.

    ``correct_a``: (S_a, n) per-row correctness of A's S_a seeds, ``correct_b``: (S_b, n) for B (a 1-D
    array is one seed). Rows and seeds are crossed (every seed is evaluated on every row), so write
    ``a[s, i] = abar[i] + m_s + e[s, i]``: ``abar[i]`` the row's mean over seeds, ``m_s`` the seed's
    effect (its accuracy minus the mean), ``e`` what is left. The mean's variance is then
    ``Var(mean_i abar_i) + Var(mean_s m_s)``: each replicate draws n row indices with replacement, the
    same for A and B (paired rows), and S_a and S_b seeds with replacement (the same indices when
    ``paired_seeds``: seed k of A started from seed k of B, as in the headline table, so what the two
    share cancels: the seed effects are then those of ``a - b``); its value is::

        mean_{drawn rows}(abar - bbar) + mean_{drawn s} m^A_s - mean_{drawn s} m^B_s

    with the seed effects scaled by :func:`_seed_effects` so that their stage adds the seed variance
    alone: the row stage already carries the row-by-seed noise (averaged over the seeds), and each
    seed's effect carries it again, which resampling whole per-row seed vectors would count twice (far
    too wide for 0/1 correctness). The interval is the (1-level)/2 and (1+level)/2 quantiles of the
    replicates (Efron's percentile interval). With one seed per side only the test rows are resampled
    and, for large n, the interval tends to :func:`paired_difference`'s normal one,
    ``d +- z sqrt(b + c - (b - c)^2 / n) / n`` (tested). With 2-3 seeds the seed stage has few distinct
    outcomes: read such an interval as approximate (its coverage is checked by simulation in the tests)."""
    a = np.atleast_2d(np.asarray(correct_a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(correct_b, dtype=np.float64))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.shape[1] == 0 or 0 in a.shape or 0 in b.shape:
        raise ValueError(f"bootstrap_diff needs (seeds, rows) arrays with the same, non-zero number of rows; got {a.shape} and {b.shape}")
    if paired_seeds and a.shape[0] != b.shape[0]:
        raise ValueError(f"paired seeds need as many seeds on both sides, got {a.shape[0]} and {b.shape[0]}")
    if not 0 < level < 1 or n_boot < 100:
        raise ValueError("level must be in (0, 1) and n_boot >= 100")
    rng = np.random.default_rng(seed)
    n, sa_n, sb_n = a.shape[1], a.shape[0], b.shape[0]
    base = a.mean(0) - b.mean(0)
    if paired_seeds:
        ma, mb = _seed_effects(a - b), np.zeros(sb_n)
    else:
        ma, mb = _seed_effects(a), _seed_effects(b)
    out = np.empty(n_boot)
    for i in range(n_boot):
        rows = rng.integers(0, n, n)
        sa = rng.integers(0, sa_n, sa_n)
        sb = sa if paired_seeds else rng.integers(0, sb_n, sb_n)
        out[i] = base[rows].mean() + ma[sa].mean() - mb[sb].mean()
    lo, hi = np.quantile(out, [(1 - level) / 2, (1 + level) / 2])
    return BootstrapDiff(float(a.mean() - b.mean()), float(lo), float(hi), float(out.std(ddof=1)), n_boot)


def seed_summary(values) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof = 1; None for a single seed) of per-seed results."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("seed_summary needs a non-empty 1-D list of per-seed values")
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def pack_correct(correct) -> str:
    """Per-row correctness as compact text (bits, base64) for a results store; :func:`unpack_correct` inverts it."""
    import base64

    c = np.asarray(correct, dtype=bool)
    return f"{c.size}:" + base64.b64encode(np.packbits(c).tobytes()).decode()


def unpack_correct(text: str) -> np.ndarray:
    import base64

    try:
        n, data = text.split(":", 1)
        bits = np.unpackbits(np.frombuffer(base64.b64decode(data, validate=True), dtype=np.uint8))
        n = int(n)
    except (ValueError, TypeError) as err:
        raise ValueError(f"not packed per-row correctness: {text[:40]!r}") from err
    if not 0 <= n <= bits.size < n + 8:
        raise ValueError(f"packed correctness says {n} rows but holds {bits.size} bits")
    return bits[:n].astype(bool)


def spearman_rho(rank_a: dict, rank_b: dict) -> float:
    """Spearman's rank correlation of two rankings of the same items (``{item: rank}``, no ties),
    ``rho = 1 - 6 sum d^2 / (n (n^2 - 1))``; NaN for fewer than 3 items."""
    n = len(rank_a)
    if n < 3:
        return float("nan")
    return 1 - 6 * sum((rank_a[k] - rank_b[k]) ** 2 for k in rank_a) / (n * (n * n - 1))
