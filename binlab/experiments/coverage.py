"""How often a 95 % interval holds the truth in the headline table's design: a simulation.

The design is T7's at its real size: 7,600 test rows, 3 seeds; the fp32 model of seed k and the 1-bit
model trained from it, which keeps the baseline's answer on half of the rows and answers the other half
itself; each seed shifts a model's accuracy by N(0, seed_sd); rows differ in difficulty (Beta(6, 1.2)).
The true difference is known (half the 1-bit model's own shift). ``tests/test_stats.py`` and
``bench/interval_coverage.py`` run intervals through it.

:func:`lm_trial` is the same for a perplexity ratio in T8's design on the lm preset: 400 blocks of test rows
(about 850 tokens each), 3 seeds, a known log ratio.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

ROWS, SEEDS, DELTA, KEEP = 7600, 3, -0.02, 0.5


def headline_trial(rng: np.random.Generator, seed_sd: float, paired: bool = True, n: int = ROWS, seeds: int = SEEDS):
    """One simulated table: (1-bit per-row correctness (seeds, n), fp32's (seeds, n), the true difference).
    ``paired``: seed k's 1-bit model starts from seed k's baseline; otherwise the two sides are independent."""
    p = np.clip(rng.beta(6, 1.2, n), 0.05, 0.93)
    base = np.stack([rng.random(n) < np.clip(p + rng.normal(0, seed_sd), 0, 1) for _ in range(seeds)])
    own = np.stack([rng.random(n) < np.clip(p + DELTA + rng.normal(0, seed_sd), 0, 1) for _ in range(seeds)])
    if paired:
        return np.where(rng.random((seeds, n)) < KEEP, own, base), base, KEEP * DELTA
    return own, base, DELTA


def coverage(interval: Callable, trials: int, seed_sd: float, paired: bool = True, seed: int = 0) -> float:
    """The share of ``trials`` simulated tables whose interval ``interval(a, b, paired) -> (low, high)`` holds the truth."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(trials):
        a, b, truth = headline_trial(rng, seed_sd, paired)
        lo, hi = interval(a, b, paired)
        hits += lo <= truth <= hi
    return hits / trials


BLOCKS, BLOCK_TOKENS, LOG_RATIO = 400, 850, 0.05


def lm_trial(rng: np.random.Generator, seed_sd: float, paired: bool = True, n: int = BLOCKS, seeds: int = SEEDS):
    """One simulated LM table: (the quantized model's NLL sums (seeds, n), fp32's (seeds, n), tokens (n,), the true
    log perplexity ratio). Blocks differ in length (Poisson) and difficulty (mean NLL per token N(5, 0.3)); each
    model's per-block mean NLL has measurement noise (token-level sd 0.5 nats); the quantized model's loss
    varies by block (sd 0.02 nats) around ``LOG_RATIO``; each seed shifts a model's mean NLL by N(0, seed_sd).
    ``paired``: seed k's quantized model is seed k's baseline plus its own change; otherwise the two sides are
    independent models."""
    u = rng.poisson(BLOCK_TOKENS, n).astype(float)
    mu = rng.normal(5.0, 0.3, n)
    noise = lambda: rng.normal(0, 0.5, (seeds, n)) / np.sqrt(u)  # noqa: E731
    base = mu + rng.normal(0, seed_sd, (seeds, 1)) + noise()
    change = LOG_RATIO + rng.normal(0, 0.02, n) + rng.normal(0, seed_sd, (seeds, 1)) + noise()
    own = (base if paired else mu + noise() + rng.normal(0, seed_sd, (seeds, 1))) + change
    return own * u, base * u, u, LOG_RATIO


def ratio_coverage(interval: Callable, trials: int, seed_sd: float, paired: bool = True, seed: int = 0) -> float:
    """The share of ``trials`` simulated LM tables whose interval ``interval(a, b, units, paired) -> (low, high)``
    (on the ratio scale) holds the true perplexity ratio."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(trials):
        a, b, u, truth = lm_trial(rng, seed_sd, paired)
        lo, hi = interval(a, b, u, paired)
        hits += lo <= np.exp(truth) <= hi
    return hits / trials
