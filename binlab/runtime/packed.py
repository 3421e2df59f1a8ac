"""The runtime modules that compute with packed weights (the codecs of :mod:`binlab.runtime.codecs`).

:class:`PackedLinear` computes a plain binary layer with the fused kernels of
:mod:`binlab.runtime.kernels` (W1A1: XNOR-popcount on the packed activations' signs; W1A32 with few rows:
lookup tables) and every other codec, or a W1A32 batch of many tokens, by dequantizing tiles of
``TILE`` output rows at a time into a float32 buffer for the dense GEMM (never the whole matrix).
:class:`PackedEmbedding` decodes only the rows a batch looks up.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from binlab.nn.quantize import QuantEmbedding, QuantLinear, set_submodule

from .codecs import TILE, BinaryCodec, Codec, NotPackable
from .encoders import encode
from .kernels import LutWeights, binary_gemm, unpack_bits, w1a1_linear_kernel
from .layouts import MoSCodec
from .standalone import POST_NORM_EPS


def _xnor_capable(act) -> bool:
    kind = type(act).__name__
    return (kind == "ActQuant" and act.name in ("sign", "sign_unscaled")) or (kind == "ElasticAct" and act.signed and act.bits == 1)


def _xnor_input(act) -> tuple[float, torch.Tensor | None] | None:
    """(scale, shift) when the input quantizer gives ``scale * sign(x + shift)`` (so the XNOR kernel
    computes the layer): binlab's ``sign`` (scale -1: the per-token mean|x|), BiBERT's unscaled sign
    (1), BiT's signed 1-bit elastic activation once its alpha is set (alpha, and its learned shift).
    None for every other input quantizer (the layer then quantizes its input and dequantizes tiles)."""
    name = getattr(act, "name", None)
    if type(act).__name__ == "ActQuant" and name in ("sign", "sign_unscaled"):
        return (-1.0 if name == "sign" else 1.0), None
    if type(act).__name__ == "ElasticAct" and act.signed and act.bits == 1 and not act.alpha.is_meta and bool(act.initialized):
        return float(act.alpha.detach().clamp_min(1e-5)), act.move
    return None




#: how a W1A32 layer's batches take their inputs (``PackedLinear(inputs=...)``, ``load_packed(inputs=...)``):
#: the dtype of the signs' GEMM. ``exact``: float32, as fake quantization computes; the others round the inputs.
INPUTS = {"exact": torch.float32, "int8": torch.int8, "bf16": torch.bfloat16}


class PackedLinear(nn.Module):
    """A quantized linear that holds only its codec, bias and input quantizer (no latent weight).

    - plain binary codec, input quantizer ``sign`` (W1A1): :func:`binlab.runtime.kernels.w1a1_linear`
      (XNOR-popcount, weights transposed once here);
    - plain binary codec, fewer than ``LUT_ROWS`` input rows (W1A32 decode steps, one text):
      lookup tables (:func:`binlab.runtime.kernels.binary_gemm`);
    - otherwise: the input quantizer (if any), then tiles of ``TILE`` output rows dequantized into
      a float32 buffer for the dense GEMM.
    """

    LUT_ROWS = 32

    def __init__(self, codec: Codec, bias: torch.Tensor | None, act: nn.Module | None = None, shortcut: bool = False,
                 method: str = "", post_norm: bool = False, inputs: str = "exact"):
        super().__init__()
        self.codec = codec
        self.post_norm = post_norm  # OneBit: a parameter-free LayerNorm on the output, before the bias
        self.out_features, self.in_features = codec.shape
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(), requires_grad=False)
        self.act = act
        self.shortcut = shortcut
        self.method_name = method
        plain = isinstance(codec, BinaryCodec) and codec.plain
        self.xnor = plain and _xnor_capable(act)
        self._wt = np.ascontiguousarray(codec.words.T) if self.xnor else None
        self._lut = LutWeights(codec.words, self.in_features) if plain and act is None else None
        self._zeros = np.zeros(self.out_features, np.float32)
        # W1A32 batches with rounded inputs (see INPUTS): the signs unpacked once, in the GEMM's type
        if inputs not in INPUTS:
            raise ValueError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
        self.inputs = inputs if plain and act is None else "exact"
        self._signs = (torch.from_numpy(unpack_bits(codec.words, self.in_features)).to(INPUTS[self.inputs])
                       if self.inputs != "exact" else None)

    def _bias_np(self) -> np.ndarray:
        # the bias arrives after construction (load_state_dict(assign=True)); read it as numpy each call (no copy)
        return self._zeros if self.bias is None else self.bias.detach().numpy()

    @classmethod
    def from_quant(cls, mod) -> "PackedLinear":
        """The packed form of a :class:`~binlab.nn.quantize.QuantLinear` (its input quantizer and bias shared);
        :class:`NotPackable` when its method has none."""
        return cls(encode(mod), mod.bias, mod.act, bool(mod.shortcut), mod.method.method, bool(getattr(mod.quantizer, "post_norm", False)))

    def storage(self) -> dict[str, int]:
        return self.codec.bits()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).float().cpu().contiguous()
        K, N = self.in_features, self.out_features
        form = _xnor_input(self.act) if self.xnor else None
        if form is not None:  # the fused kernel, called directly: a single text makes the Python around it count
            scale, shift = form
            xs = x2 if shift is None else (x2 + shift.detach()).contiguous()
            out = np.empty((x2.shape[0], N), np.float32)
            bias = self._zeros if self.post_norm else self._bias_np()
            w1a1_linear_kernel(xs.numpy(), self._wt, self.codec.lo, self.codec.hi, bias, np.int64(K), np.float32(scale), out)
            y = torch.from_numpy(out)
        else:
            xa = self.act(x2).contiguous() if self.act is not None else x2
            if isinstance(self.codec, MoSCodec):  # BinaryMoS: the scales are mixed per token
                s_in, s_out = (torch.from_numpy(a) for a in self.codec.scales(xa.numpy()))
                xs = (xa * s_in).contiguous()
                y = torch.empty(xa.shape[0], N)
                for n0 in range(0, N, TILE):
                    n1 = min(N, n0 + TILE)
                    torch.mm(xs, torch.from_numpy(self.codec.signs(slice(n0, n1))).T, out=y[:, n0:n1])
                y *= s_out
            elif self._signs is not None and xa.shape[0] >= self.LUT_ROWS:
                y = self._rounded_forward(xa)
            elif self._lut is not None and xa.shape[0] < self.LUT_ROWS:
                P = torch.from_numpy(binary_gemm(xa.numpy(), self._lut, K))
                lo, hi = torch.from_numpy(self.codec.lo)[None], torch.from_numpy(self.codec.hi)[None]
                y = lo * xa.sum(1, keepdim=True) + (hi - lo) * P
            else:
                y = torch.empty(xa.shape[0], N)
                for n0 in range(0, N, TILE):
                    n1 = min(N, n0 + TILE)
                    torch.mm(xa, torch.from_numpy(self.codec.rows(slice(n0, n1))).T, out=y[:, n0:n1])
            if self.bias is not None and not self.post_norm:
                y += self.bias
        if self.post_norm:
            y = torch.nn.functional.layer_norm(y, (N,), eps=POST_NORM_EPS)
            if self.bias is not None:
                y += self.bias
        if self.shortcut:
            y += x2
        return y.reshape(*shape[:-1], N).to(x.dtype)

    def _rounded_forward(self, x: torch.Tensor) -> torch.Tensor:
        """W1A32 on a batch with rounded inputs. With signs s = 2b - 1 of the weights,
        ``x . (lo + (hi - lo) b) = (lo + hi) / 2 sum(x) + (hi - lo) / 2 (x . s)``; the sum stays exact and
        the product ``x . s`` takes the rounded inputs:

        - ``int8``: ``x ~ (g / 127) round(127 x / g)`` per token (g = max|x|, BitNet's absmax8), the
          product in int32 through torch's int8 GEMM;
        - ``bf16``: x rounded to bfloat16 (8 significant bits, relative error at most 2^-9) and the product
          through torch's bfloat16 GEMM (fast on CPUs with AVX-512 BF16 or AMX), which accumulates in float32
          and rounds its output to bfloat16 as well (torch's CPU GEMM has no float32 output for bfloat16 inputs)."""
        if self.inputs == "int8":
            g = x.abs().amax(1, keepdim=True).clamp_min(1e-8)
            xq = torch.clamp(torch.round(x * (127.0 / g)), -127, 127).to(torch.int8)
            p = torch._int_mm(xq, self._signs.T).float() * (g / 127.0)
        else:
            p = torch.mm(x.to(torch.bfloat16), self._signs.T).float()
        lo, hi = torch.from_numpy(self.codec.lo)[None], torch.from_numpy(self.codec.hi)[None]
        return (lo + hi) / 2 * x.sum(1, keepdim=True) + (hi - lo) / 2 * p

    def extra_repr(self):
        path = "xnor" if self.xnor else (self.inputs if self._signs is not None else "lut/tiles" if self._lut is not None else "tiles")
        return f"{self.in_features}, {self.out_features}, codec={self.codec.kind}, method={self.method_name}, path={path}"


class PackedEmbedding(nn.Module):
    """A quantized embedding table held packed; a lookup decodes only the rows it needs."""

    def __init__(self, codec: Codec, padding_idx: int | None = None, method: str = ""):
        super().__init__()
        self.codec = codec
        self.padding_idx = padding_idx
        self.method_name = method
        self.num_embeddings, self.embedding_dim = codec.shape

    def storage(self) -> dict[str, int]:
        return self.codec.bits()

    #: above this many ids a lookup decodes each distinct row once (torch.unique) instead of every id
    UNIQUE_FROM = 2048

    @torch.no_grad()
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1).cpu()
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.num_embeddings):
            raise IndexError(f"token id out of range [0, {self.num_embeddings})")
        if flat.numel() < self.UNIQUE_FROM:
            return torch.from_numpy(self.codec.rows(flat.numpy())).reshape(*ids.shape, self.embedding_dim)
        uniq, inv = torch.unique(flat, return_inverse=True)
        rows = torch.from_numpy(self.codec.rows(uniq.numpy()))
        return rows[inv].reshape(*ids.shape, self.embedding_dim)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}, codec={self.codec.kind}, method={self.method_name}"


def pack_model(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` (CPU, eval) with every quantized component that has a packed form replaced
    by :class:`PackedLinear`/:class:`PackedEmbedding`; components whose method has none stay
    fake-quantized. Returns (packed model, names of the packed components)."""
    import copy

    m = copy.deepcopy(model).cpu().eval()
    done = []
    for name, mod in list(m.named_modules()):
        try:
            if isinstance(mod, QuantLinear):
                set_submodule(m, name, PackedLinear.from_quant(mod))
            elif isinstance(mod, QuantEmbedding):
                set_submodule(m, name, PackedEmbedding(encode(mod), mod.padding_idx, mod.method.method))
            else:
                continue
        except NotPackable:
            continue
        done.append(name)
    return m, done
