"""An independent numpy (float64) port of loss-aware binarization's reference code (GitHub
``houlu369/Loss-aware-Binarization``; Hou, Yao and Kwok, ICLR 2017, arXiv 1611.01600).

Written from reading, not copied, at commit ``8a5bede10af205e17175fe90eb3ec6db85554bcf`` (the
newest stored). The RNN experiments (``RNN/``, Theano/Lasagne) are ported:

* ``RNN/lab.py`` lines 43-56, ``binarization(W, Wacc, "LAB")``: ``L = sqrt(Wacc) + 1e-8``;
  the binary code is ``round(hard_sigmoid(W))`` mapped {1 -> +1, 0 -> -1} with
  ``hard_sigmoid(x) = clip((x + 1) / 2, 0, 1)`` (lines 28-29) and a round half to even, so
  ``W > 0`` gives +1 and ``W <= 0`` gives -1; ``alpha = sum |L * W| / sum L`` over the whole matrix
  (one scale per matrix: each of an LSTM's eight gate matrices W_in_to_* / W_hid_to_* has its own,
  lines 56-100) (:func:`binarize`);
* ``RNN/warpeace.py`` lines 133-140: after every step each matrix's accumulator is
  ``acc <- beta2 acc + (1 - beta2) g^2`` with ``beta2 = 0.999`` and ``g`` the gradient of the loss
  with respect to the *binarized* matrix (``compute_grads``, lab.py lines 196-218)
  (:func:`accumulate`);
* ``RNN/lab.py`` lines 221-231, ``clipping_scaling``: the latent matrices are clipped to [-1, 1]
  after their Adam update (:func:`clip_latent`).
"""
from __future__ import annotations

import numpy as np

BETA2 = 0.999


def binarize(W: np.ndarray, Wacc: np.ndarray) -> np.ndarray:
    """``binarization(W, Wacc, "LAB")``: alpha * b for one matrix."""
    W, Wacc = np.asarray(W, np.float64), np.asarray(Wacc, np.float64)
    L = np.sqrt(Wacc) + 1e-8
    code = np.round(np.clip((W + 1.0) / 2.0, 0.0, 1.0))  # numpy rounds half to even, as Theano's round does here
    b = np.where(code != 0, 1.0, -1.0)
    alpha = np.abs(L * W).sum() / L.sum()
    return alpha * b


def accumulate(acc: np.ndarray, grad: np.ndarray, beta2: float = BETA2) -> np.ndarray:
    """One step of the code's second-moment accumulator."""
    return acc * beta2 + grad * grad * (1.0 - beta2)


def clip_latent(W: np.ndarray) -> np.ndarray:
    return np.clip(W, -1.0, 1.0)
