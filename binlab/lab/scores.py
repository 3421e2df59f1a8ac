"""The numbers a live change shows: each metric of the lab's rows against fp32 on the same rows, with its
95 % interval (:mod:`binlab.experiments.stats`) and as a :class:`~binlab.nn.metric.Metric` the pages draw."""
from __future__ import annotations

import numpy as np

from binlab.experiments.stats import paired_difference, paired_ratio_difference, ratio_interval, wilson_interval
from binlab.nn.metric import Metric, headline, task_info
from binlab.nn.objective import perplexity


def lm_metrics(nll: np.ndarray, units: np.ndarray, base_nll: np.ndarray) -> dict:
    """Perplexity on the rows with its 95 % interval, and the change of mean NLL per token against
    the baseline on the same rows (paired, delta method); ``ppl_ratio`` = exp of that change."""
    r = ratio_interval(nll, units)
    d = paired_ratio_difference(nll, base_nll, units)
    return {"perplexity": perplexity(r.value), "perplexity_low": perplexity(r.low), "perplexity_high": perplexity(r.high),
            "baseline_perplexity": perplexity(float(base_nll.sum() / units.sum())), "ppl_ratio": perplexity(d.value),
            "ppl_ratio_low": perplexity(d.low), "ppl_ratio_high": perplexity(d.high), "ppl_within_noise": d.within_noise,
            "tokens": int(units.sum())}


def accuracy_metric(correct: np.ndarray, reference: np.ndarray, reference_label: str = "fp32") -> Metric:
    """A classifier's accuracy on these rows (95 % Wilson interval) and its change against ``reference``
    on the same rows (paired 95 % interval, McNemar p), in percent and percentage points."""
    n = len(correct)
    lo, hi = wilson_interval(int(correct.sum()), n)
    pd = paired_difference(correct, reference)
    return headline(task_info("classify"), 100 * float(correct.mean()), low=100 * lo, high=100 * hi, rows=n,
                    reference=100 * float(reference.mean()), reference_label=reference_label, change=100 * pd.diff,
                    change_low=100 * pd.low, change_high=100 * pd.high, within_noise=pd.within_noise, p_value=pd.p_value)


def perplexity_metric(nll: np.ndarray, units: np.ndarray, reference_nll: np.ndarray, reference_label: str = "fp32",
                      m: dict | None = None) -> Metric:
    """A language model's perplexity on these rows and its ratio to ``reference``'s on the same rows
    (:func:`lm_metrics`: delta-method intervals; pass its result as ``m`` when it is computed already)."""
    m = m or lm_metrics(nll, units, reference_nll)
    return headline(task_info("lm"), m["perplexity"], low=m["perplexity_low"], high=m["perplexity_high"], rows=len(units),
                    tokens=m["tokens"], reference=m["baseline_perplexity"], reference_label=reference_label, change=m["ppl_ratio"],
                    change_low=m["ppl_ratio_low"], change_high=m["ppl_ratio_high"], within_noise=m["ppl_within_noise"])


def next_token_metric(hits: np.ndarray, reference_hits: np.ndarray, units: np.ndarray, reference_label: str = "fp32") -> Metric:
    """A language model's next-token top-1 accuracy (percent) and its change against ``reference``."""
    acc, d = ratio_interval(hits, units), paired_ratio_difference(hits, reference_hits, units)
    ref = ratio_interval(reference_hits, units)
    return Metric("next-token accuracy", 100 * acc.value, " %", True, low=100 * acc.low, high=100 * acc.high, rows=len(units),
                  tokens=int(units.sum()), reference=100 * ref.value, reference_label=reference_label, change=100 * d.value,
                  change_low=100 * d.low, change_high=100 * d.high, within_noise=d.within_noise)


def accuracy_keys(m: Metric) -> dict:
    """An accuracy :class:`~binlab.nn.metric.Metric` as the plain keys the live lab has always returned."""
    return {"accuracy": m.value, "accuracy_low": m.low, "accuracy_high": m.high, "diff": m.change, "diff_low": m.change_low,
            "diff_high": m.change_high, "p_value": float("nan") if m.p_value is None else m.p_value, "within_noise": m.within_noise}
