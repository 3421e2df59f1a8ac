"""Activation binarizers, for W1A1 configurations (BiT, Liu et al. 2022; BiBERT, Qin et al. 2022).

- ``sign``: signed activations (inputs of Q/K/V/O and FFN-up, i.e. layer-norm outputs) become
  ``alpha_t * sign(x)`` with ``alpha_t = mean|x|`` per token.
- ``binary01``: non-negative-ish activations (the FFN-down input, after GELU) become
  ``m_t * 1[x >= mean_t(x)]`` with ``m_t`` the mean of the values above the token's mean
  (a {0, 1} code with one scale per token, as BiT does for non-negative inputs).
- ``absmax8``: 8-bit per-token absmax quantization, ``x~ = clip(round(127 x / gamma), -127, 127) gamma / 127``
  with ``gamma = max|x|`` per token (BitNet's and BitNet b1.58's BitLinear inputs, W1A8); identity STE.
- ``sign_unscaled``: ``sign(x)`` with no scale (BiBERT, Qin et al. 2022, sec. 3: every linear's
  input and Q, K, V), clipped estimator ``1[|x| <= 1]``.
- ``elastic`` / ``elastic01`` and their k-bit forms ``elastic{k}`` / ``elastic01_{k}``: BiT's
  elastic binary activation with a learned scale and shift (:class:`ElasticAct`, Liu et al. 2022).

Attention-probability quantizers live in :mod:`binlab.methods.attention`.

Backward (stateless kinds): the chosen STE evaluated on ``x / alpha_t``: the weight method's
``act_ste`` (clipped by default; ApproxSign for Bi-Real and ReCU, the Fourier series for FDA),
identity for ``absmax8``. The elastic kinds have their own backward (see :class:`ElasticAct`).
"""
from __future__ import annotations

import math

import torch

from . import sign
from .ste import apply_ste


def act_sign(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = x.abs().mean(-1, keepdim=True).clamp_min(1e-8)
    return a * sign(x), a


def act_binary01(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu = x.mean(-1, keepdim=True)
    up = (x >= mu).to(x.dtype)
    m = (x * up).sum(-1, keepdim=True) / up.sum(-1, keepdim=True).clamp_min(1)
    return m * up, m.abs().clamp_min(1e-8)


def act_absmax8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    g = x.abs().amax(-1, keepdim=True).clamp_min(1e-8)
    return torch.clamp(torch.round(127 * x / g), -127, 127) * g / 127, g


def act_sign_unscaled(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return sign(x), torch.ones((), dtype=x.dtype, device=x.device)


ACTIVATIONS = {"sign": act_sign, "binary01": act_binary01, "absmax8": act_absmax8, "sign_unscaled": act_sign_unscaled}
#: estimators fixed by the activation quantizer itself (others take the weight method's act_ste)
ACT_STE = {"absmax8": "identity", "sign_unscaled": "clipped"}
#: learned-scale activations: name -> (signed, bits, shift). ``elastic*``: BiT's, with a learned
#: per-channel shift in front of linears; ``lsq*``: LSQ (Esser et al. 2020) as BinaryBERT uses it, no shift
ELASTIC = {"elastic": (True, 1, True), "elastic01": (False, 1, True)} | {f"elastic{b}": (True, b, True) for b in (2, 4, 8)} \
    | {f"elastic01_{b}": (False, b, True) for b in (2, 4, 8)} \
    | {f"lsq{b}": (True, b, False) for b in (1, 2, 4, 8)} | {f"lsq01_{b}": (False, b, False) for b in (1, 2, 4, 8)}
#: every activation quantizer name a spec may use
ACT_NAMES = tuple(sorted(ACTIVATIONS)) + tuple(sorted(ELASTIC))

#: what the input quantizers are and whose they are (the lab's help text)
ACT_HELP = ("binarize (sign with a per-token scale, BiBERT's unscaled sign, binary01) or quantize (absmax8, BiT's elastic kinds "
            "with a learned scale and shift, LSQ) the inputs of the chosen linears too")
#: which papers quantize the query, key and value before the attention products, and how (the lab's help text)
QKV_HELP = "quantize the query, key and value projections before QK^T and AV: BiBERT uses sign_unscaled, BiT elastic"


def get_activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation binarizer {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def make_act(name: str, ste="clipped", features: int | None = None) -> torch.nn.Module:
    """The module for activation quantizer ``name``: :class:`ElasticAct` (with a learned per-channel
    shift when ``features`` is given: a linear layer's input) or :class:`ActQuant`."""
    if name in ELASTIC:
        signed, bits, shift = ELASTIC[name]
        return ElasticAct(name, signed, bits, features if shift else None)
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation quantizer {name!r}; choose one of {list(ACT_NAMES)}")
    return ActQuant(name, ste)


class ActQuant(torch.nn.Module):
    def __init__(self, name: str, ste="clipped"):
        super().__init__()
        self.name, self.fn = name, get_activation(name)
        self.ste = ACT_STE.get(name, ste)  # a name from binlab.methods.ste.STES or an STE object (e.g. FDA with its own terms)

    def forward(self, x):
        q, scale = self.fn(x.detach())
        return apply_ste(x, q, self.ste, scale)

    @property
    def ste_name(self) -> str:
        return self.ste if isinstance(self.ste, str) else self.ste.name

    def extra_repr(self):
        return f"{self.name}, ste={self.ste_name}"


def elastic_levels(signed: bool, bits: int) -> tuple[int, int]:
    """(Q_n, Q_p): the integer code range. Signed 1-bit is {-1, +1} by sign; unsigned k-bit {0 .. 2^k - 1}."""
    if signed:
        return (-1, 1) if bits == 1 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return 0, 2**bits - 1


class _Elastic(torch.autograd.Function):
    """BiT's elastic quantizer (LSQ's estimator, Esser et al. 2020, with BiT's 1-bit cases)."""

    @staticmethod
    def forward(ctx, x, alpha, signed: bool, bits: int):
        qn, qp = elastic_levels(signed, bits)
        q = x / alpha
        code = sign(x) if (signed and bits == 1) else q.round().clamp(qn, qp)
        ctx.save_for_backward(x, alpha)
        ctx.meta = (signed, bits, qn, qp)
        return code * alpha

    @staticmethod
    def backward(ctx, g):
        x, alpha = ctx.saved_tensors
        signed, bits, qn, qp = ctx.meta
        q = x / alpha
        inside = ((q >= qn) & (q <= qp)).to(g.dtype)
        gs = 1.0 / math.sqrt(x.numel() * qp)
        if signed and bits == 1:
            da = sign(x)
        else:
            da = torch.where(q < qn, float(qn), torch.where(q > qp, float(qp), q.round() - q))
        return g * inside, (g * da).sum().reshape(alpha.shape) * gs, None, None


class ElasticAct(torch.nn.Module):
    """BiT's elastic binary activation (Liu et al. 2022, sec. 3.2, eqs. 5-7; ``facebookresearch/bit``)::

        x' = x + b                                   (b: learned per input channel; linear inputs only)
        unsigned ({0,1}, k-bit {0..2^k-1}):  y = alpha * clamp(round(x' / alpha), 0, Q_p)
        signed  ({-1,+1}):                   y = alpha * sign(x')
        signed k-bit:                        y = alpha * clamp(round(x' / alpha), -2^(k-1), 2^(k-1) - 1)

    with a learned scalar ``alpha`` per quantizer. The paper writes the shift as a threshold beta
    (``beta = -b``). Backward (LSQ's straight-through surrogate ``alpha (clamp(x'/alpha) + sg(round - clamp))``)::

        dL/dx'    = g 1[Q_n <= x'/alpha <= Q_p]                    (and dL/db = that, summed)
        dL/dalpha = s sum g * { Q_n if q < Q_n;  Q_p if q > Q_p;  round(q) - q inside }   (signed 1-bit: s sum g sign(x'))
        s = 1 / sqrt(N Q_p),  N the number of elements of the batch's activation

    The ``lsq*`` kinds are the same quantizer without the shift: LSQ (Esser et al. 2020) as
    BinaryBERT (Bai et al. 2021, sec. 4.1) quantizes activations.

    ``alpha`` starts from the first batch it sees (BiT's ``AlphaInit``): ``2 mean|x| / sqrt(Q_p)``
    signed, ``4 mean|x| / sqrt(Q_p)`` unsigned, from the unshifted input. BiT's unsigned k > 1 path
    quantizes ``x' - m`` with ``m = min(x')`` over the whole tensor (a constant, no gradient) and adds
    ``m`` back: ``y = alpha clamp(round((x' - m) / alpha), 0, Q_p) + m``; binlab does the same
    (tests/reference/bit_ref.py). ``sign(0) = +1`` (binlab's convention; BiT's sign(0) is 0).
    """

    def __init__(self, name: str, signed: bool, bits: int, features: int | None = None):
        super().__init__()
        self.name, self.signed, self.bits = name, signed, bits
        self.alpha = torch.nn.Parameter(torch.ones(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.move = torch.nn.Parameter(torch.zeros(features)) if features else None

    ste_name = "elastic"

    def forward(self, x):
        if self.move is not None:
            x = x + self.move
        if not bool(self.initialized):
            with torch.no_grad():
                qp = elastic_levels(self.signed, self.bits)[1]
                self.alpha.fill_((2.0 if self.signed else 4.0) * float(x.abs().mean()) / math.sqrt(qp) + 1e-8)
                self.initialized.fill_(True)
        alpha = self.alpha.clamp_min(1e-5)
        if not self.signed and self.bits > 1:  # BiT: the tensor's minimum (a constant) off, then back on
            lo = x.detach().min()
            return _Elastic.apply(x - lo, alpha, self.signed, self.bits) + lo
        return _Elastic.apply(x, alpha, self.signed, self.bits)

    def extra_repr(self):
        return f"{self.name}, signed={self.signed}, bits={self.bits}, shift={self.move is not None}"


def carry_state(old: torch.nn.Module | None, new: torch.nn.Module | None) -> bool:
    """Start ``new`` from what ``old`` learned when both are elastic quantizers of the same
    signedness and shape (BiT's second step loads the W1A2 student: the step size ``alpha`` and the
    shift carry over from the k-bit quantizer to the 1-bit one). Returns whether it did."""
    if not (isinstance(old, ElasticAct) and isinstance(new, ElasticAct) and old.signed == new.signed):
        return False
    if (old.move is None) != (new.move is None) or (old.move is not None and old.move.shape != new.move.shape):
        return False
    new.load_state_dict(old.state_dict())
    return True
