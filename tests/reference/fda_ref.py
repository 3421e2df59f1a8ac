"""An independent numpy (float64) port of FDA's backward surrogate for sign (Xu et al., NeurIPS 2021,
"Learning Frequency Domain Approximation for Binary Neural Networks", arXiv 2103.00841).

Written from reading, not copied. Two sources were read:

* The paper. The copy read is the full text in the search index (file id 62216042762), an anonymous
  submission titled "Training Binary Neural Networks with Frequency Domain Approximation". There the
  method is §2 (the arXiv/NeurIPS version numbers it §3):
    - Eq. 4: ``omega = 2 pi / T``, the radian frequency of a signal with period ``T``;
    - Eq. 6: square wave ``s(t) = (4/pi) sum_{i>=0} sin((2i+1) omega t) / (2i+1)``;
    - Eq. 7: ``sign(t) = s(t)`` inside one period (the text says ``|t| < T``; a period-``T`` square
      wave actually equals sign only on ``|t| < T/2``);
    - Eq. 9 / Eq. 10: the partial sum and its derivative, **summed over i = 0 .. n** (n + 1 terms):
      ``s_n(t) = (4/pi) sum_{i=0}^{n} sin((2i+1) w t)/(2i+1)``, ``s_n'(t) = (4w/pi) sum_{i=0}^{n} cos((2i+1) w t)``;
    - §2.3: the tail of ``s_n'`` "oscillates around 0 at a very high frequency"; the noise module's
      shortcut ``eta(x) = a sin(x)`` (a = 0.1, §3.2 Tab. 4) adds a positive bias ``a cos(x)`` for that;
    - Eq. 13-14: ``e(t) = ReLU(t W1) W2 + eta(t)``, k = 64; ``z = s_n(t) + alpha e(t)``, alpha -> 0;
    - §3.2 (Fig. 3-4): accuracy saturates at about n = 10; best schedule: n starts at n_s = 9 and
      grows to n_p = 2 n_s = 18.
  The paper gives **no numeric value for omega (or T)** and never says to which range of t the
  gradient is restricted.

* BiBench (GitHub ``htqin/BiBench``, commit 5a04a6dd4ada7533ebff81365b790bb34db09902, file
  ``BiBench/bibench/models/layers/fda.py``; identical at 2cff86abef345eb3c5cdafac0b3295c9d58d229c):
    - lines 10-24 ``FDA_BinaryQuantize``: forward ``sign``; backward ``omega = 0.1`` (line 20),
      ``4 omega / pi * sum_{i in range(n + 1)} cos((2i+1) omega x)`` (line 21), gradient zeroed where
      ``x > 1`` or ``x < -1`` (lines 22-23, strict: x = +-1 keeps it);
    - ``FDALinear`` lines 162-176: buffer ``n = 9`` (line 165); ``model_params_update`` sets the noise
      weight ``0.05 (1 + cos(pi (epoch + 1) / max_epochs))`` (line 174) and ``n = 9 + int(epoch /
      max_epochs * 9)`` (line 176), called before every training epoch with mmcv's 0-based epoch
      (``bibench/core/hook/model_params_update_hook.py`` lines 22-25, 43-49): n runs 9 .. 17, i.e.
      10 .. 18 terms;
    - the operator acts on the raw weights and activations (no normalisation); weights get a detached
      per-output-channel ``mean |W|`` scale (line 197).
  PB-LLM (``hahnyuan/PB-LLM`` @ fe85da943d9df48ab6455d698f75406bb0bfefbc, ``quant/quantizer.py``
  lines 47-67, ``FdaBinary``) carries the same backward (omega = 0.1, range(n + 1), |x| <= 1).

The official code (MindSpore, ``mindspore-ai/models`` ``research/cv/FDA-BNN/src/quan.py`` @
80f435f823720635470ab5b6677b100d0649854b) is inference only: ``Signer.bprop`` and
``ScaleSigner.bprop`` return ``dout`` unchanged, and the weight scale is one ``mean |W|`` per tensor.

Counting convention: here (as in the paper and BiBench) ``n`` is the *last index*, so the sum has
``n + 1`` terms. binlab's ``terms`` is the number of terms: binlab ``terms = n + 1``.

Closed form used below (a Dirichlet-type sum): for ``N = n + 1`` terms and ``x = omega t``,
``sum_{i<N} cos((2i+1) x) = sin(2 N x) / (2 sin x)``; so the derivative is positive exactly while
``|t| < pi / (2 N omega)`` (first zero), then alternates in sign.
"""
from __future__ import annotations

import math

import numpy as np

PAPER = "Xu et al. 2021, FDA (arXiv 2103.00841), §2.2-2.3 / Eq. 4-15 of the copy read"
BIBENCH = ("htqin/BiBench", "5a04a6dd4ada7533ebff81365b790bb34db09902", "BiBench/bibench/models/layers/fda.py")
OMEGA_BIBENCH = 0.1  # fda.py line 20; the paper gives no value
N_START = 9  # the paper's n_s (§3.2) and BiBench's buffer (line 165): 10 terms
CLIP = 1.0  # BiBench lines 22-23: no gradient where |x| > 1


def partial_sum(t, n: int = N_START, omega: float = OMEGA_BIBENCH) -> np.ndarray:
    """Eq. 9: ``(4/pi) sum_{i=0}^{n} sin((2i+1) omega t) / (2i+1)`` (n + 1 terms)."""
    t = np.asarray(t, dtype=np.float64)
    odd = 2.0 * np.arange(n + 1) + 1.0
    return (4.0 / math.pi) * np.sum(np.sin(np.multiply.outer(t, odd) * omega) / odd, axis=-1)


def partial_sum_grad(t, n: int = N_START, omega: float = OMEGA_BIBENCH) -> np.ndarray:
    """Eq. 10: ``(4 omega / pi) sum_{i=0}^{n} cos((2i+1) omega t)`` (n + 1 terms), no clipping."""
    t = np.asarray(t, dtype=np.float64)
    odd = 2.0 * np.arange(n + 1) + 1.0
    return (4.0 * omega / math.pi) * np.sum(np.cos(np.multiply.outer(t, odd) * omega), axis=-1)


def grad_closed_form(t, n: int = N_START, omega: float = OMEGA_BIBENCH) -> np.ndarray:
    """Eq. 10 summed: ``(4 omega/pi) sin(2 N omega t) / (2 sin(omega t))`` with N = n + 1. Where
    ``omega t = k pi`` every cosine equals ``(-1)^k``, so the value there is ``(4 omega/pi) N (-1)^k``."""
    t = np.asarray(t, dtype=np.float64)
    big_n = n + 1
    x = omega * t
    den = 2.0 * np.sin(x)
    safe = np.abs(den) > 1e-12
    k = np.round(x / math.pi)  # where sin x = 0, x = k pi and cos((2i+1) k pi) = (-1)^k
    limit = big_n * np.where(np.mod(k, 2) == 0, 1.0, -1.0)
    val = np.where(safe, np.sin(2.0 * big_n * x) / np.where(safe, den, 1.0), limit)
    return (4.0 * omega / math.pi) * val


def bibench_grad(x, n: int = N_START, omega: float = OMEGA_BIBENCH) -> np.ndarray:
    """BiBench's backward factor (fda.py lines 18-24): Eq. 10 at the raw input ``x``, set to 0 where
    ``x > 1`` or ``x < -1``. ``dL/dx = dL/d sign(x) * bibench_grad(x)``."""
    x = np.asarray(x, dtype=np.float64)
    g = partial_sum_grad(x, n, omega)
    return np.where((x > CLIP) | (x < -CLIP), 0.0, g)


def bibench_n(epoch: int, max_epochs: int) -> int:
    """``n`` for a 0-based epoch (fda.py line 176): ``9 + int(epoch / max_epochs * 9)``."""
    return N_START + int(epoch / max_epochs * 9)


def bibench_noise_weight(epoch: int, max_epochs: int) -> float:
    """Weight of the noise module for a 0-based epoch (fda.py line 174)."""
    return 0.05 * (1.0 + math.cos((epoch + 1) / max_epochs * math.pi))


def paper_n(progress: float, n_s: int = N_START) -> int:
    """The paper's schedule (§3.2, setting 3) as far as it is stated: n grows from n_s to 2 n_s. The
    shape of the growth is not given; a linear floor is assumed here."""
    p = min(max(float(progress), 0.0), 1.0)
    return n_s + math.floor(p * n_s)


def first_zero(n: int, omega: float) -> float:
    """Smallest ``t > 0`` where Eq. 10 vanishes: ``pi / (2 (n + 1) omega)``; positive below it."""
    return math.pi / (2.0 * (n + 1) * omega)


def max_positive_terms(omega: float, t_max: float = CLIP) -> int:
    """Largest number of terms ``N`` for which Eq. 10 stays positive on ``|t| < t_max``."""
    return math.floor(math.pi / (2.0 * omega * t_max) - 1e-12)


if __name__ == "__main__":
    t = np.linspace(-1.0, 1.0, 2001)
    for n, om in ((9, OMEGA_BIBENCH), (17, OMEGA_BIBENCH), (9, math.pi / 2)):
        g = partial_sum_grad(t, n, om)
        np.testing.assert_allclose(g, grad_closed_form(t, n, om), rtol=1e-9, atol=1e-9)
        h = 1e-6  # Eq. 10 is the derivative of Eq. 9
        fd = (partial_sum(t + h, n, om) - partial_sum(t - h, n, om)) / (2 * h)
        np.testing.assert_allclose(fd, g, rtol=1e-5, atol=1e-5)
        neg = t[g < 0]
        print(f"n={n:2d} ({n + 1} terms) omega={om:.4f}: g(0)={g[1000]:.4f} g(1)={g[-1]:.4f} "
              f"first zero t={first_zero(n, om):.4f} negative on |t|>= {np.abs(neg).min() if neg.size else float('nan'):.4f}")
    assert bibench_n(0, 100) == 9 and bibench_n(99, 100) == 17
    assert abs(bibench_noise_weight(99, 100)) < 1e-12 and bibench_noise_weight(0, 100) > 0.099
    assert np.all(bibench_grad(np.array([1.0, 1.0 + 1e-9, -1.0 - 1e-9])) == np.array([partial_sum_grad(1.0), 0.0, 0.0]))
    print("max terms positive on |t|<1 at omega=0.1:", max_positive_terms(0.1), "| at omega=pi/2:", max_positive_terms(math.pi / 2))
    w = np.random.default_rng(0).standard_normal(200_000)
    tt = w / (3.0 * w.std())  # binlab's input t = w / (3 std_row)
    for n, om in ((9, math.pi / 2), (9, OMEGA_BIBENCH), (17, OMEGA_BIBENCH)):
        g = np.where(np.abs(tt) <= 1, partial_sum_grad(tt, n, om), 0.0)
        print(f"gaussian weights, t=w/(3 std), n={n} omega={om:.4f}: negative grad {np.mean(g < 0):.1%}, zero {np.mean(g == 0):.2%}")
    print("fda_ref smoke: ok")
