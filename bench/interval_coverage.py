"""Coverage of 95 % intervals in the headline table's design (7,600 test rows, 3 seeds; the simulation of
binlab.experiments.coverage): how often each interval holds the true difference, for binlab's interval
(``seed_diff``: rows at z, seeds at Student's t on S - 1 degrees of freedom, combined in quadrature) and
three alternatives it was chosen over:

- the paired percentile bootstrap of rows and seed effects binlab used before (Efron & Tibshirani 1993,
  ch. 13; the seed effects scaled to the seed variance alone, as that code did);
- one t interval on Welch-Satterthwaite degrees of freedom estimated from the same seeds (Satterthwaite 1946);
- seed_diff with the seeds' part at z instead of t;

and the same for a perplexity ratio (``seed_ratio``, in T8's design) against the seeds at z and the test rows alone.

    python bench/interval_coverage.py     # writes docs/results/interval-coverage.{json,md}
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from binlab.experiments.coverage import coverage, ratio_coverage
from binlab.experiments.provenance import RESULTS, machine
from binlab.experiments.stats import Z95, seed_diff, seed_ratio, t_quantile

SETTINGS = ((0.0, True), (0.01, True), (0.02, True), (0.005, False))  # (seed sd, paired seeds)


def binlab_interval(a, b, paired):
    d = seed_diff(a, b, paired_seeds=paired)
    return d.low, d.high


def seeds_at_z(a, b, paired):
    d = seed_diff(a, b, paired_seeds=paired)
    half = Z95 * math.hypot(d.se_rows, d.se_seeds)
    return d.diff - half, d.diff + half


def welch_satterthwaite(a, b, paired):
    """One t interval, its degrees of freedom estimated from the rows' and the seeds' variance terms."""
    a, b = a.astype(float), b.astype(float)
    n = a.shape[1]
    d = a.mean(0) - b.mean(0)
    terms = [(d.var(ddof=1) / n, n - 1)]
    for x in ([a - b] if paired else [a, b]):
        if x.shape[0] > 1:
            terms.append((x.mean(1).var(ddof=1) / x.shape[0], x.shape[0] - 1))
    var = sum(v for v, _ in terms)
    nu = var * var / sum(v * v / k for v, k in terms)
    half = t_quantile(0.975, nu) * math.sqrt(var)
    return d.mean() - half, d.mean() + half


def percentile_bootstrap(a, b, paired, n_boot: int = 500, seed: int = 0):
    """binlab's former interval: resample rows (paired) and seed effects, scaled so the seed stage adds the seed
    variance alone (s_m^2 - MS_E / n, clipped at 0); the 2.5 and 97.5 % quantiles of the replicates."""
    def effects(x):
        s, n = x.shape
        if s < 2:
            return np.zeros(s)
        m = x.mean(1) - x.mean()
        resid = x - x.mean(0, keepdims=True) - x.mean(1, keepdims=True) + x.mean()
        ms_e = float((resid ** 2).sum()) / ((n - 1) * (s - 1))
        sigma2 = max(0.0, float(m @ m) / (s - 1) - ms_e / n)
        pop = float(m @ m) / s
        return m * math.sqrt(sigma2 / pop) if pop > 0 else m

    a, b = a.astype(float), b.astype(float)
    rng = np.random.default_rng(seed)
    n, sa, sb = a.shape[1], a.shape[0], b.shape[0]
    base = a.mean(0) - b.mean(0)
    ma, mb = (effects(a - b), np.zeros(sb)) if paired else (effects(a), effects(b))
    out = np.empty(n_boot)
    for i in range(n_boot):
        rows = rng.integers(0, n, n)
        ia = rng.integers(0, sa, sa)
        ib = ia if paired else rng.integers(0, sb, sb)
        out[i] = base[rows].mean() + ma[ia].mean() - mb[ib].mean()
    return tuple(np.quantile(out, [0.025, 0.975]))


INTERVALS = {"seed_diff (binlab)": binlab_interval, "seeds at z": seeds_at_z,
             "Welch-Satterthwaite t": welch_satterthwaite, "percentile bootstrap (binlab before)": percentile_bootstrap}

RATIO_SETTINGS = ((0.0, True), (0.005, True), (0.01, True), (0.005, False))  # (seed sd of the mean NLL per token, paired)


def _ratio(half_of):
    def interval(a, b, u, paired):
        r = seed_ratio(a, b, u, paired_seeds=paired)
        h = half_of(r)
        return math.exp(r.log_ratio - h), math.exp(r.log_ratio + h)
    return interval


RATIO_INTERVALS = {"seed_ratio (binlab)": lambda a, b, u, paired: (lambda r: (r.low, r.high))(seed_ratio(a, b, u, paired_seeds=paired)),
                   "seeds at z": _ratio(lambda r: Z95 * math.hypot(r.se_rows, r.se_seeds)),
                   "test rows only": _ratio(lambda r: Z95 * r.se_rows)}


def _rows(cover, settings, intervals: dict, trials: int, seed0: int) -> list[dict]:
    """One row per (seed sd, paired) setting: each interval's coverage on the same simulated tables."""
    rows = []
    for i, (sd, paired) in enumerate(settings):
        row = {"seed_sd": sd, "paired": paired} | {name: cover(fn, trials, sd, paired, seed=seed0 + i) for name, fn in intervals.items()}
        rows.append(row)
        print(row, flush=True)
    return rows


def _table(rows: list[dict], intervals: dict) -> list[str]:
    return (["| seed sd | seeds paired | " + " | ".join(intervals) + " |", "|---|---|" + "---|" * len(intervals)]
            + [f"| {r['seed_sd']} | {'yes' if r['paired'] else 'no'} | " + " | ".join(f"{r[k]:.3f}" for k in intervals) + " |" for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=250)
    args = ap.parse_args()
    rows = _rows(coverage, SETTINGS, INTERVALS, args.trials, seed0=100)
    ratio_rows = _rows(ratio_coverage, RATIO_SETTINGS, RATIO_INTERVALS, args.trials, seed0=200)
    out = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "trials": args.trials, "rows": rows, "ratio_rows": ratio_rows,
           "command": "python bench/interval_coverage.py" + (f" --trials {args.trials}" if args.trials != 250 else "")}
    (RESULTS / "interval-coverage.json").write_text(json.dumps(out, indent=2))
    md = ["# Coverage of 95 % intervals in the headline design", "",
          f"Machine: {out['machine']}. Date: {out['date']}. Reproduce: `{out['command']}`", "",
          f"{args.trials} simulated tables per setting (binlab.experiments.coverage: 7,600 test rows, 3 seeds, true difference "
          "known), the same tables for every interval. A 95 % interval should cover about 0.95; binlab's suite requires 0.93 "
          "of seed_diff (tests/test_stats.py).", ""] + _table(rows, INTERVALS)
    md += ["", "## Perplexity ratios", "",
           f"{args.trials} simulated language-model tables per setting (binlab.experiments.coverage.lm_trial: 400 blocks of test rows, "
           "about 850 tokens each, 3 seeds, true log ratio 0.05), the same tables for every interval; seed sd is in nats of mean NLL "
           "per token (0.01 is about 1 % of perplexity). binlab's suite requires 0.93 of seed_ratio.", ""] + _table(ratio_rows, RATIO_INTERVALS)
    (RESULTS / "interval-coverage.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
