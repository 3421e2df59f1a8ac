"""PB-LLM: partially binarized LLMs (Shang et al., ICLR 2024, arXiv 2310.00034)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import FP_BITS, Quantizer, numel, register, sign
from .gptq import minmax_params, minmax_quant, obs_quantize, prepare_hessian


def index_bits(n_selected: int, n_total: int, rows: int) -> int:
    """Bits to store which positions are selected: a bitmap (n_total bits) or CSR (a column index
    of ceil(log2 cols) bits per selected weight plus 32-bit row pointers), whichever is smaller."""
    if n_selected == 0:
        return 0
    cols = max(1, n_total // max(rows, 1))
    csr = n_selected * max(1, math.ceil(math.log2(cols))) + (rows + 1) * 32
    return min(n_total, csr)


@register
@dataclass
class PBLLM(Quantizer):
    """PB-LLM (Shang et al. 2024): keep a small *salient* fraction of the weights in 8 bits and
    binarize the rest.

    - Salience (sec. 3.2): by magnitude ``|w|``, or by the Hessian criterion
      ``s_ij = w_ij^2 / [H^-1]_jj^2`` -- as in the reference code, ``[H^-1]_jj`` is read as the
      diagonal of the Cholesky factor of ``H^-1`` (GPTQ's ``U_jj``). One threshold over the whole
      matrix (unstructured), chosen once from the original weights.
    - Salient weights: 8-bit asymmetric min-max per row (GPTQ's grid), fitted on the original row.
    - Binarized weights (eq. 1): ``alpha_r sign(w)`` with ``alpha_r`` the mean ``|w|`` of the row's
      binarized weights (the optimal scale of sec. 4.2). The reference code subtracts a per-row
      mean first and averages over the whole row with salient entries set to 0; binlab follows
      the paper's equation.
    - PTQ (``gptq=True``, PB-GPTQ, sec. 4.1): the mixed quantizer runs inside GPTQ's column loop, so
      each column's error is compensated by the columns not yet quantized (needs calibration data).
      ``gptq=False`` is the reference's ``--disable_gptq`` (round to nearest with the same mask).
    - QAT (sec. 5), as the reference code's ``BinaryXnorExceptOutliersLinear`` does it: the mask is
      fixed at the start of QAT from the two *signed* tails of the whole matrix (the ``salient / 2``
      most negative and most positive weights, :meth:`qat_mask`); the salient weights are frozen at
      their 8-bit value (no gradient) and the rest are ``alpha sign(w)`` with one ``alpha`` per
      matrix, the mean ``|w|`` of all binarized latent weights, recomputed every step; the
      estimator's gradient is scaled by ``alpha`` (``dL/dw = alpha dL/dq g(w)``). Where binlab
      differs: the frozen salient weights sit on the per-row 8-bit grid above (the code's
      ``weight_quant_8bit`` at the commit read does not give a usable 8-bit grid), and sign(0) = +1.

    Stores 1 bit per binarized weight, 8 bits per salient weight, their positions (CSR or a bitmap,
    whichever is smaller: the two encodings the paper discusses), and per row alpha and the 8-bit
    grid (fp32 scale, 8-bit zero). The paper's "1.7 bits" (10 % salient) leaves the positions and
    scales out: :meth:`paper_bits`.
    """

    name: ClassVar[str] = "pbllm"
    paper: ClassVar[str] = "Shang et al. 2024, PB-LLM: Partially Binarized Large Language Models"
    arxiv: ClassVar[str] = "2310.00034"
    mode: ClassVar[str] = "PTQ with GPTQ-style compensation (PB-GPTQ), or QAT with frozen salient weights"
    stores: ClassVar[str] = "1 bit per binarized weight, 8 bits per salient weight, their positions, alpha and the 8-bit grid per row"
    default_ste: ClassVar[str] = "identity"
    ui: ClassVar[dict] = {"salient": {"kind": "float", "label": "salient fraction (kept in 8 bits)", "min": 0.0, "max": 0.5, "step": 0.01},
                          "metric": {"kind": "choice", "label": "salience", "choices": ["hessian", "magnitude"]},
                          "gptq": {"kind": "bool", "label": "GPTQ error compensation (PB-GPTQ)"}}
    bounds: ClassVar[dict] = {"high_bits": {"kind": "int", "min": 2, "max": 8}}
    salient: float = 0.1
    metric: str = "hessian"
    gptq: bool = True
    high_bits: int = 8

    def __post_init__(self):
        if not (isinstance(self.salient, (int, float)) and not isinstance(self.salient, bool) and 0.0 <= self.salient < 1.0):
            raise ValueError(f"pbllm salient fraction must be in [0, 1), got {self.salient!r}")
        if self.metric not in ("hessian", "magnitude"):
            raise ValueError(f"pbllm metric must be 'hessian' or 'magnitude', got {self.metric!r}")
        if not isinstance(self.gptq, bool):
            raise ValueError(f"pbllm gptq must be true or false, got {self.gptq!r}")
        if not (isinstance(self.high_bits, int) and 2 <= self.high_bits <= 8):
            raise ValueError(f"pbllm high_bits must be an int in [2, 8], got {self.high_bits!r}")
        self._qat_mask = None

    @property
    def needs_calibration(self) -> bool:  # type: ignore[override]
        return self._qat_mask is None and (self.gptq or self.metric == "hessian")

    def state(self):
        return super().state() + (id(self._qat_mask),)

    def _k(self, n: int) -> int:
        if self._qat_mask is not None and self._qat_mask.numel() == n:
            return int(self._qat_mask.sum())  # QAT's two-tailed mask
        return int(round(self.salient * n))

    def qat_mask(self, w: torch.Tensor) -> torch.Tensor:
        """QAT's salient positions (True), as the reference code picks them: with ``N`` weights,
        ``w < kth(N f / 2)`` or ``w > kth(N (1 - f / 2))`` (``kth(k)``: the k-th smallest, 1-based,
        ``int`` of the products), the two signed tails of the whole matrix."""
        flat = w.flatten()
        n = flat.numel()
        k_lo, k_hi = int(n * self.salient / 2), int(n * (1 - self.salient / 2))
        lo = torch.kthvalue(flat, k_lo).values if k_lo >= 1 else flat.min() - 1
        hi = torch.kthvalue(flat, k_hi).values if k_hi >= 1 else flat.max() + 1
        return (w < lo) | (w > hi)

    @staticmethod
    def matrix_alpha(w: torch.Tensor, sal: torch.Tensor) -> torch.Tensor:
        """QAT's scale: the mean ``|w|`` over every binarized weight of the matrix (one number)."""
        nb = (~sal).to(w.dtype)
        return (w.abs() * nb).sum() / nb.sum().clamp_min(1)

    def mask(self, w: torch.Tensor, u_diag: torch.Tensor | None) -> torch.Tensor:
        """Salient positions (True): the top ``salient`` fraction of the salience score."""
        k = self._k(w.numel())
        if k == 0:
            return torch.zeros_like(w, dtype=torch.bool)
        score = w.abs() if u_diag is None else w**2 / u_diag[None, :] ** 2
        out = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
        out[torch.topk(score.flatten(), k).indices] = True
        return out.view_as(w)

    @staticmethod
    def alpha(w: torch.Tensor, sal: torch.Tensor) -> torch.Tensor:
        nb = (~sal).to(w.dtype)
        return (w.abs() * nb).sum(1, keepdim=True) / nb.sum(1, keepdim=True).clamp_min(1)

    def quantize(self, w):
        w2 = w.reshape(w.shape[0], -1)
        s8, z8 = minmax_params(w2.double(), self.high_bits)
        if self._qat_mask is not None:  # after QAT: the frozen mask, one alpha per matrix, no compensation
            sal = self._qat_mask
            q = torch.where(sal, minmax_quant(w2.double(), s8, z8, self.high_bits), self.matrix_alpha(w2.double(), sal) * sign(w2.double()))
            return q.to(w.dtype).reshape(w.shape)
        if self.needs_calibration:
            wd, _, u = prepare_hessian(w2, self.hessian_for(w2), 0.01)
        else:
            wd, u = w2.double(), None
        sal = self.mask(wd, torch.diag(u) if (u is not None and self.metric == "hessian") else None)
        a = self.alpha(wd, sal)

        def quant_column(j, col):
            return torch.where(sal[:, j], minmax_quant(col[:, None], s8, z8, self.high_bits)[:, 0], a[:, 0] * sign(col))

        if self.gptq:
            q = obs_quantize(wd, u, quant_column)
        else:
            q = torch.where(sal, minmax_quant(wd, s8, z8, self.high_bits), a * sign(wd))
        return q.to(w.dtype).reshape(w.shape)

    def train_forward(self, w, ste, scale, aux=None):
        from .ste import apply_ste

        w2 = w.reshape(w.shape[0], -1)
        if self._qat_mask is None or self._qat_mask.shape != w2.shape:
            self._qat_mask = self.qat_mask(w2.detach())  # fixed at the start of QAT
        sal = self._qat_mask
        wd = w2.detach()
        s8, z8 = minmax_params(wd, self.high_bits)
        frozen = minmax_quant(wd, s8, z8, self.high_bits)
        binar = self.matrix_alpha(wd, sal) * apply_ste(w2, sign(wd), ste, scale.reshape(-1, 1))
        return torch.where(sal, frozen, binar).reshape(w.shape)  # salient: no gradient (frozen)

    def paper_bits(self) -> float:
        """Bits per weight as the paper counts them: 1 per binarized weight, ``high_bits`` per salient
        one, positions and scales not counted (10 % salient: 1.7 bits)."""
        return 1 + (self.high_bits - 1) * self.salient

    def storage(self, shape):
        n, rows = numel(shape), shape[0]
        k = self._k(n)
        return {"codes": (n - k) + self.high_bits * k, "index": index_bits(k, n, rows),
                "scales": 2 * rows * FP_BITS, "zeros": rows * self.high_bits}
