"""The BERT-era codes' logit-distillation term, ported independently (numpy, float64).

BiT (facebookresearch/bit, commit e3a1ed90360e1e99f0fa67df2074630262487003): ``helper.py`` lines
53-56 (``soft_cross_entropy``), called in ``kd_learner_glue.py`` (``KDLearner.train``) on
``student_logits / T`` and ``teacher_logits / T`` with ``T = 1`` by default. BiBERT and BinaryBERT
carry the same function from TinyBERT. Written from reading, not copied.
"""
from __future__ import annotations

import numpy as np


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def soft_cross_entropy(student: np.ndarray, teacher: np.ndarray, T: float = 1.0) -> float:
    """``mean over rows and classes of -softmax(t / T) * log_softmax(s / T)`` (the mean runs over
    every element, so it is the per-row soft cross-entropy divided by the number of classes)."""
    p = np.exp(_log_softmax(teacher / T))
    return float((-p * _log_softmax(student / T)).mean())
