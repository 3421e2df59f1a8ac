"""Round-to-nearest and GPTQ: the k-bit references every LLM binarization paper compares against,
and the optimal-brain-compensation machinery (Cholesky of the inverse Hessian, lazy block updates)
that PB-LLM and BiLLM reuse.

Notation: ``W`` (out x in), ``H = 2 X X^T / N`` (in x in) from :mod:`binlab.training.calibration`,
``U`` the upper Cholesky factor of ``H^-1`` (``H^-1 = U^T U``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from .base import FP_BITS, Quantizer, numel, register


def minmax_params(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ's asymmetric min-max grid per row (``find_params``): the range always contains 0,
    ``s = (max - min) / (2^b - 1)``, ``z = round(-min / s)``; an all-zero row gets [-1, 1]. Returns (s, z), each (rows, 1)."""
    maxq = 2**bits - 1
    lo = w.min(1, keepdim=True).values.clamp_max(0)
    hi = w.max(1, keepdim=True).values.clamp_min(0)
    dead = (lo == 0) & (hi == 0)
    lo, hi = torch.where(dead, -1.0, lo), torch.where(dead, 1.0, hi)
    s = (hi - lo) / maxq
    return s, torch.round(-lo / s)


def minmax_quant(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor, bits: int) -> torch.Tensor:
    """``s (clamp(round(w / s) + z, 0, 2^b - 1) - z)``."""
    return s * (torch.clamp(torch.round(w / s) + z, 0, 2**bits - 1) - z)


def prepare_hessian(w: torch.Tensor, h: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ's preprocessing (float64): dead inputs (``H_jj = 0``) get ``H_jj = 1`` and a zero weight
    column; damping ``lambda = percdamp * mean(diag H)``; returns ``(W, H, U)`` with U the upper
    Cholesky factor of ``H^-1``."""
    w, h = w.double().clone(), h.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += percdamp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    return w, h, u


def obs_quantize(w: torch.Tensor, u: torch.Tensor, quant_column: Callable[[int, torch.Tensor], torch.Tensor],
                 blocksize: int = 128, on_block: Callable[[int, int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """GPTQ's loop (Frantar et al. 2023, Algorithm 1): columns in order, each quantized by
    ``quant_column(j, w_j)`` and its error pushed onto the columns not yet quantized (eq. 2-3)::

        e = (w_j - q_j) / U_jj ;   W[:, j:] -= e U[j, j:]      inside a block of ``blocksize`` columns
        W[:, after] -= E U[block, after]                         once per block (the lazy batch update)

    ``on_block(i1, i2, W)`` is called with the whole current matrix (earlier blocks' updates
    applied) before block ``[i1, i2)`` is quantized: PB-LLM and BiLLM fix masks and scales there,
    GPTQ's groups fit their grid there. Works in w's dtype; returns Q."""
    w = w.clone()
    q = torch.zeros_like(w)
    cols = w.shape[1]
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2].clone()
        err = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        if on_block is not None:
            on_block(i1, i2, w)
        for i in range(i2 - i1):
            col = w1[:, i]
            qc = quant_column(i1 + i, col)
            q[:, i1 + i] = qc
            e = (col - qc) / u1[i, i]
            w1[:, i:] -= e[:, None] * u1[i, i:][None, :]
            err[:, i] = e
        w[:, i2:] -= err @ u[i1:i2, i2:]
    return q


def _check_bits(name: str, bits, allowed) -> None:
    if not (isinstance(bits, int) and bits in allowed):
        raise ValueError(f"{name} bits must be one of {sorted(allowed)}, got {bits!r}")


def _check_group(name: str, group) -> None:
    if not (isinstance(group, int) and group >= 0):
        raise ValueError(f"{name} group must be 0 (one group per row) or a positive number of columns, got {group!r}")


def _minmax_storage(shape, bits: int, group: int) -> dict[str, int]:
    rows, n = shape[0], numel(shape)
    cols = n // rows
    groups = rows * (math.ceil(cols / group) if group else 1)
    return {"codes": bits * n, "scales": groups * FP_BITS, "zeros": groups * bits}


@register
@dataclass
class RTN(Quantizer):
    """Round-to-nearest k-bit, GPTQ's baseline (Frantar et al. 2023, sec. 5; ``quant.py``): each row
    (or each ``group`` of columns in a row) on its own asymmetric min-max grid::

        s = (max(w, 0) - min(w, 0)) / (2^b - 1),   z = round(-min(w, 0) / s)
        Q(w) = s (clamp(round(w / s) + z, 0, 2^b - 1) - z)

    No data. Stores b bits per weight, one fp32 scale and one b-bit zero point per group.
    """

    name: ClassVar[str] = "rtn"
    paper: ClassVar[str] = "Frantar et al. 2023, GPTQ's round-to-nearest baseline"
    arxiv: ClassVar[str] = "2210.17323"
    mode: ClassVar[str] = "PTQ (no data)"
    stores: ClassVar[str] = "b bits per weight, an fp32 scale and a b-bit zero point per row or group"
    nominal_bits: ClassVar[float] = 4.0
    ui: ClassVar[dict] = {"bits": {"kind": "int", "label": "bits", "min": 2, "max": 8, "step": 1},
                          "group": {"kind": "int", "label": "group size (0 = one per row)", "min": 0, "max": 1024, "step": 32}}
    bits: int = 4
    group: int = 0

    def __post_init__(self):
        _check_bits("rtn", self.bits, range(2, 9))
        _check_group("rtn", self.group)

    def quantize(self, w):
        w2 = w.reshape(w.shape[0], -1)
        g = self.group or w2.shape[1]
        out = torch.empty_like(w2)
        for i in range(0, w2.shape[1], g):
            blk = w2[:, i : i + g]
            s, z = minmax_params(blk, self.bits)
            out[:, i : i + g] = minmax_quant(blk, s, z, self.bits)
        return out.reshape(w.shape)

    def storage(self, shape):
        return _minmax_storage(shape, self.bits, self.group)


@register
@dataclass
class GPTQ(Quantizer):
    """GPTQ (Frantar et al. 2023): quantize one column at a time to the RTN grid and move each
    column's error onto the columns not yet quantized, weighted by the inverse Hessian of the
    layer-wise loss ``||W X - Q X||^2`` (eq. 1; ``H = 2 X X^T``)::

        e_j = (w_j - q_j) / [H_F^-1]_jj ,   w_F -= e_j [H_F^-1]_{j,F}          (eq. 2-3, OBS)

    computed with the Cholesky factor ``U`` of ``H^-1`` (sec. 3, step 3: ``U_jj^2 = [H_F^-1]_jj``) in
    lazy blocks of 128 columns (step 2), with damping ``0.01 mean(diag H)`` and dead inputs zeroed.
    Without groups the grid of each row is fixed from the original row; with ``group`` it is
    refitted on the current (error-updated) weights at the start of each group, as in the code.
    ``act_order`` processes columns by decreasing ``H_jj`` (the reference's ``--act-order``).

    Needs calibration data. Stores the same as RTN (b bits per weight, scale and zero per group;
    with ``act_order`` and groups a packed model would also keep the column order, not counted
    because it can be folded into the previous layer).
    """

    name: ClassVar[str] = "gptq"
    paper: ClassVar[str] = "Frantar et al. 2023, GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers"
    arxiv: ClassVar[str] = "2210.17323"
    mode: ClassVar[str] = "PTQ with calibration data"
    stores: ClassVar[str] = "b bits per weight, an fp32 scale and a b-bit zero point per row or group"
    nominal_bits: ClassVar[float] = 4.0
    needs_calibration: ClassVar[bool] = True
    ui: ClassVar[dict] = {"bits": {"kind": "int", "label": "bits", "min": 2, "max": 8, "step": 1},
                          "group": {"kind": "int", "label": "group size (0 = one per row)", "min": 0, "max": 1024, "step": 32},
                          "act_order": {"kind": "bool", "label": "columns by decreasing Hessian diagonal"}}
    bounds: ClassVar[dict] = {"percdamp": {"kind": "float", "min": 1e-6, "max": 0.99}, "blocksize": {"kind": "int", "min": 1, "max": 4096}}
    bits: int = 4
    group: int = 0
    act_order: bool = False
    percdamp: float = 0.01
    blocksize: int = 128

    def __post_init__(self):
        _check_bits("gptq", self.bits, range(2, 9))
        _check_group("gptq", self.group)
        if not (isinstance(self.percdamp, (int, float)) and 0 < self.percdamp < 1):
            raise ValueError(f"gptq percdamp must be in (0, 1), got {self.percdamp!r}")
        if not (isinstance(self.blocksize, int) and self.blocksize >= 1):
            raise ValueError(f"gptq blocksize must be a positive int, got {self.blocksize!r}")

    def quantize(self, w):
        w2 = w.reshape(w.shape[0], -1)
        h = self.hessian_for(w2)
        s0, z0 = minmax_params(w2.double(), self.bits)  # the reference fits the per-row grid on the original W
        wd, hd, _ = prepare_hessian(w2, h, self.percdamp)
        perm = torch.argsort(torch.diag(hd), descending=True) if self.act_order else None
        if perm is not None:
            wd, hd = wd[:, perm], hd[perm][:, perm]
        u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hd)), upper=True)
        params = {"s": s0, "z": z0}
        g = self.group

        state = {}

        def on_block(i1, i2, w_now):
            state["w"] = w_now  # as the reference: groups are fitted on W as it stands at the block's start

        def quant_column(j, col):
            if g and j % g == 0:
                params["s"], params["z"] = minmax_params(state["w"][:, j : j + g], self.bits)
            return minmax_quant(col[:, None], params["s"], params["z"], self.bits)[:, 0]

        q = obs_quantize(wd, u, quant_column, self.blocksize, on_block)
        if perm is not None:
            q = q[:, torch.argsort(perm)]
        return q.to(w.dtype).reshape(w.shape)

    def storage(self, shape):
        return _minmax_storage(shape, self.bits, self.group)
