"""A bigram language model: the floor the ``lm`` preset must beat.

Interpolated (Jelinek-Mercer) bigram over the same token units as :mod:`binlab.nn.objective` (each
row predicts ``ids[1:]`` from the token before; the first context is ``[CLS]``)::

    P(w | v) = lam c(v, w) / c(v) + (1 - lam) P_1(w),    P_1(w) = (c(w) + 1) / (N + V)

with counts from the train split, ``lam`` chosen on validation from a grid, perplexity on test.
"""
from __future__ import annotations

import math

import numpy as np

from binlab.data import EncodedSplit

LAMBDAS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def _pairs(split: EncodedSplit) -> tuple[np.ndarray, np.ndarray]:
    """(context, target) token pairs of every row."""
    ctx, tgt = [], []
    for i in range(len(split)):
        row = split.ids[split.offsets[i] : split.offsets[i + 1]].astype(np.int64)
        ctx.append(row[:-1])
        tgt.append(row[1:])
    if not ctx:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(ctx), np.concatenate(tgt)


class Bigram:
    def __init__(self, train: EncodedSplit, vocab_size: int):
        v, w = _pairs(train)
        self.V = vocab_size
        self.keys, self.counts = np.unique(v * vocab_size + w, return_counts=True)
        self.ctx = np.bincount(v, minlength=vocab_size).astype(np.float64)
        uni = np.bincount(w, minlength=vocab_size).astype(np.float64)
        self.p1 = (uni + 1) / (uni.sum() + vocab_size)

    def log_probs(self, split: EncodedSplit, lam: float) -> np.ndarray:
        v, w = _pairs(split)
        k = v * self.V + w
        pos = np.searchsorted(self.keys, k).clip(0, max(len(self.keys) - 1, 0))
        c = np.where(self.keys[pos] == k, self.counts[pos], 0).astype(np.float64) if len(self.keys) else np.zeros(len(k))
        cv = self.ctx[v]
        p2 = np.where(cv > 0, c / np.maximum(cv, 1), 0.0)
        lam_v = np.where(cv > 0, lam, 0.0)  # unseen context: the unigram alone
        return np.log(lam_v * p2 + (1 - lam_v) * self.p1[w])

    def perplexity(self, split: EncodedSplit, lam: float) -> float:
        lp = self.log_probs(split, lam)
        return math.exp(-lp.mean()) if len(lp) else float("nan")


def bigram_perplexity(splits) -> dict:
    """Train on ``splits.train``, pick ``lam`` on validation, report test perplexity."""
    bg = Bigram(splits.train, splits.vocab_size)
    val = {lam: bg.perplexity(splits.val, lam) for lam in LAMBDAS}
    lam = min(val, key=val.get)
    return {"lambda": lam, "val_perplexity": val[lam], "test_perplexity": bg.perplexity(splits.test, lam)}
