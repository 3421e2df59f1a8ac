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
- :func:`seed_diff`: a table row trained with several seeds against the fp32 row, on the same test
  rows: a two-stage (rows, then seeds) interval of the difference of mean accuracies, the seed stage
  with Student's t on S - 1 degrees of freedom, so that three seeds get the heavy tails three seeds
  call for (the two sources of variance as in Bouthillier et al. 2021, "Accounting for variance in
  machine learning benchmarks").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from statistics import NormalDist

import numpy as np

Z95 = 1.959963984540054
#: the interval a results file's differences were computed with (files without it predate seed_diff)
INTERVAL = "seed_diff"


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


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz; Press et al.,
    Numerical Recipes, 3rd ed., sec. 6.4, eq. 6.4.5)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function with ``df`` > 0 degrees of freedom (not necessarily whole):
    ``P(T <= t) = 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2`` for t >= 0 (Abramowitz & Stegun 26.7.1)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`, to 1e-12)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class SeedDiff:
    diff: float  # mean accuracy over A's seeds - mean over B's seeds, as a fraction
    low: float  # 95 % interval
    high: float
    se_rows: float  # standard error of the row stage
    se_seeds: float  # standard error of the seed stage (0 with one seed per side)
    seeds: int  # seeds in the seed stage (its t quantile has seeds - 1 degrees of freedom)

    @property
    def within_noise(self) -> bool:
        """True when the interval contains 0: no measurable difference."""
        return self.low <= 0 <= self.high


def seed_diff(correct_a, correct_b, paired_seeds: bool = False, level: float = 0.95) -> SeedDiff:
    """Interval of ``acc(A) - acc(B)`` when both are measured on the same test rows and each is one or
    several trained models (seeds).

    ``correct_a``: (S_a, n) per-row correctness of A's S_a seeds, ``correct_b``: (S_b, n) for B (a 1-D
    array is one seed). Each side is a crossed layout, ``x[s, i] = mu + r_i + m_s + e[s, i]``: row
    effects r (the test set is a sample of rows), seed effects m (a retrained model is a sample of
    seeds), and what is left. The difference of the grand means has two sources of error, each with
    its own estimate and its own reference distribution:

    - rows: ``SE_rows^2 = Var_i(d_i) / n`` with ``d_i = abar_i - bbar_i`` the per-row difference of the
      seeds' means (it carries the row and the row-by-seed noise); thousands of rows, so the normal
      quantile z;
    - seeds: ``SE_seeds^2 = s_m^2 / S`` with ``s_m^2`` the sample variance of the S seeds' mean
      accuracies (of ``a - b`` when seed k of A started from seed k of B, ``paired_seeds``, as in the
      headline tables, so that what the two share cancels; else one term per side with seeds); S - 1
      degrees of freedom, so Student's t quantile ``t_{S-1}`` (4.30 for three seeds).

    The interval is ``d +- sqrt((z SE_rows)^2 + (t_{S-1} SE_seeds)^2)``: each stage at its own
    quantile, combined in quadrature, so that it keeps its 95 % whichever stage dominates. It is
    conservative: ``s_m^2`` also carries the row-by-seed noise (``sigma_e^2 / n``), counted a second
    time, and the quadrature of half-widths is at least the half-width of the summed variance.
    Checked by simulation of the headline design (7,600 rows, 3 seeds; :mod:`binlab.experiments.coverage`,
    ``bench/interval_coverage.py`` -> docs/results/interval-coverage.md): coverage 0.95-0.99, where on the
    same simulated tables a paired percentile bootstrap of rows and the three seed effects (Efron &
    Tibshirani 1993, ch. 13) covered 0.81-0.90 once the seeds varied, and a Welch-Satterthwaite t
    interval 0.90-0.93 (its degrees of freedom, estimated from the same three seeds, grow exactly when
    their spread is underestimated). With one seed per side only the rows vary and the interval is
    the paired normal one, ``d +- z sqrt(b + c - (b - c)^2 / n) / sqrt(n (n - 1))``
    (:func:`paired_difference` up to n / (n - 1))."""
    a = np.atleast_2d(np.asarray(correct_a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(correct_b, dtype=np.float64))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.shape[1] < 2 or 0 in a.shape or 0 in b.shape:
        raise ValueError(f"seed_diff needs (seeds, rows) arrays with the same number of rows (at least 2); got {a.shape} and {b.shape}")
    if paired_seeds and a.shape[0] != b.shape[0]:
        raise ValueError(f"paired seeds need as many seeds on both sides, got {a.shape[0]} and {b.shape[0]}")
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    n = a.shape[1]
    d = a.mean(0) - b.mean(0)
    z = NormalDist().inv_cdf((1 + level) / 2)
    se_rows = math.sqrt(float(d.var(ddof=1)) / n)
    half2, var_seeds, seeds = _seed_stage([(a - b).mean(1)] if paired_seeds else [a.mean(1), b.mean(1)], level)
    est, half = float(d.mean()), math.sqrt((z * se_rows) ** 2 + half2)
    return SeedDiff(est, est - half, est + half, se_rows, math.sqrt(var_seeds), seeds)


def _seed_stage(per_seed: list, level: float) -> tuple[float, float, int]:
    """The seed stage of :func:`seed_diff` and :func:`seed_ratio`: for each side's per-seed estimates (or
    the paired differences), ``s^2 / S`` at Student's t on S - 1 degrees of freedom. Returns (squared
    half-width, variance, the largest S)."""
    half2, var, seeds = 0.0, 0.0, 1
    for x in per_seed:
        s = len(x)
        if s > 1:
            v = float(np.var(x, ddof=1)) / s
            var += v
            half2 += t_quantile((1 + level) / 2, s - 1) ** 2 * v
            seeds = max(seeds, s)
    return half2, var, seeds


@dataclass(frozen=True)
class SeedRatio:
    ratio: float  # perplexity(A) / perplexity(B), each side's perplexity the geometric mean over its seeds
    low: float  # 95 % interval
    high: float
    log_ratio: float  # the difference of mean NLL per token (nats)
    se_rows: float  # standard errors of the log ratio's two stages
    se_seeds: float
    seeds: int

    @property
    def within_noise(self) -> bool:
        """True when the interval contains 1: no measurable difference."""
        return self.low <= 1 <= self.high


def seed_ratio(nll_a, nll_b, units, paired_seeds: bool = False, level: float = 0.95) -> SeedRatio:
    """Interval of the perplexity ratio ``ppl(A) / ppl(B)`` of two language models measured on the same test
    rows, each one or several trained models (seeds): :func:`seed_diff`'s two stages on the log scale.

    ``nll_a``: (S_a, n) NLL sums of A's seeds over n sampling units (rows, or blocks of rows,
    :func:`block_sums`), ``nll_b``: (S_b, n), ``units``: (n,) tokens per unit (the same for both). With
    ``U = sum_j units_j`` and each side's mean NLL per token ``L = sum_j mean_s nll[s, j] / U``, the
    estimate is ``log R = L_A - L_B`` (each side's perplexity ``exp(L)``: the geometric mean of its seeds'
    perplexities), with

    - rows: the delta-method (ratio-estimator) standard error of ``sum_j d_j / U``, ``d_j`` the per-unit
      difference of the seeds' means: ``SE_rows^2 = n / (n - 1) * sum_j (d_j - log R * units_j)^2 / U^2``,
      at the normal quantile z (as :func:`ratio_interval`);
    - seeds: the per-seed ``L_A,s - L_B,s`` (``paired_seeds``: seed k of A trained from seed k of B) or
      each side's per-seed L, ``s^2 / S`` at Student's t on S - 1 degrees of freedom;

    combined in quadrature on the log scale and exponentiated: ``R * exp(+-half)``. Checked by simulation of
    T8's design (:func:`binlab.experiments.coverage.lm_trial`; ``bench/interval_coverage.py`` ->
    docs/results/interval-coverage.md): coverage 0.944-0.996, where the same tables gave 0.82-0.98 with the
    seeds' part at z and 0.26-0.96 with the test rows alone (the interval of a one-seed table)."""
    a = np.atleast_2d(np.asarray(nll_a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(nll_b, dtype=np.float64))
    u = np.asarray(units, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or u.ndim != 1 or not a.shape[1] == b.shape[1] == u.size or u.size < 2 or 0 in a.shape or 0 in b.shape:
        raise ValueError(f"seed_ratio needs (seeds, n) NLL arrays and (n,) token counts, n >= 2; got {a.shape}, {b.shape}, {u.shape}")
    if (u < 0).any() or u.sum() <= 0:
        raise ValueError("token counts must be non-negative with a positive total")
    if paired_seeds and a.shape[0] != b.shape[0]:
        raise ValueError(f"paired seeds need as many seeds on both sides, got {a.shape[0]} and {b.shape[0]}")
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    n, total = u.size, u.sum()
    d = a.mean(0) - b.mean(0)
    log_r = float(d.sum() / total)
    se_rows = math.sqrt(n / (n - 1) * float(((d - log_r * u) ** 2).sum())) / total
    la, lb = a.sum(1) / total, b.sum(1) / total
    half2, var_seeds, seeds = _seed_stage([la - lb] if paired_seeds else [la, lb], level)
    half = math.sqrt((NormalDist().inv_cdf((1 + level) / 2) * se_rows) ** 2 + half2)
    return SeedRatio(math.exp(log_r), math.exp(log_r - half), math.exp(log_r + half), log_r, se_rows, math.sqrt(var_seeds), seeds)


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


NLL_BLOCKS = 400


def block_sums(values, blocks: int = NLL_BLOCKS) -> np.ndarray:
    """Sums of ``values`` over ``blocks`` consecutive, near-equal blocks of rows (all rows when fewer).

    A language model's test rows are stored this way (the NLL sum and token count of each block): a block
    of independent rows is itself an independent sampling unit, so the ratio intervals
    (:func:`ratio_interval`, :func:`seed_ratio`) computed from 400 blocks estimate the same standard error
    as from the 7,600 rows (to about 1 / sqrt(2 * 400), 3.5 %), and the stored text stays about as small
    as a classifier's per-row correctness."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if blocks < 1:
        raise ValueError("blocks must be at least 1")
    return np.array([c.sum() for c in np.array_split(v, min(blocks, v.size))]) if v.size else v


def pack_floats(values) -> str:
    """Per-row numbers (float32, base64) as compact text for a results store; :func:`unpack_floats` inverts it
    (float32 keeps a per-row NLL sum to about 7 significant digits)."""
    import base64

    v = np.asarray(values, dtype="<f4").ravel()
    return f"f{v.size}:" + base64.b64encode(v.tobytes()).decode()


def unpack_floats(text: str) -> np.ndarray:
    import base64

    try:
        n, data = text.split(":", 1)
        if not n.startswith("f"):
            raise ValueError
        v = np.frombuffer(base64.b64decode(data, validate=True), dtype="<f4")
        n = int(n[1:])
    except (ValueError, TypeError) as err:
        raise ValueError(f"not packed per-row numbers: {text[:40]!r}") from err
    if v.size != n:
        raise ValueError(f"packed numbers say {n} rows but hold {v.size}")
    return v.astype(np.float64)


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
