"""Run a packed model with numpy and numba only: no torch in the process.

A 1-bit model is meant to run where a float32 one cannot, so the file :mod:`binlab.runtime.export`
writes carries everything a deployment needs (the weights' codecs, the other tensors, the model
config, what every input and attention quantizer computes, and the tokenizer), and this module runs
it with the packed kernels of :mod:`binlab.runtime.kernels`::

    from binlab.runtime.standalone import load
    m = load("model.safetensors")
    m.classify(["Stocks rally as oil falls"])      # [{"label": "Business", "probs": {...}}]
    m.generate("The president said", 20)           # a packed language model

    binlab classify model.safetensors "Stocks rally as oil falls"     # the same, from the shell
    binlab generate --model lm.safetensors --prompt "The president said"

It computes what :class:`binlab.nn.model.Classifier` / :class:`~binlab.nn.model.CausalLM` with
:class:`~binlab.runtime.packed.PackedLinear` layers compute (the post-norm BERT block, mean pooling or
next-token logits), or :class:`binlab.nn.lstm.LSTMLM`'s recurrence (the LSTM era's language model, step by
step), in float32:

- a plain binary linear with a sign-like input quantizer (binlab's ``sign``, BiBERT's unscaled sign,
  BiT's signed 1-bit elastic activation): the fused XNOR-popcount kernel, as the torch packed path;
- a plain binary linear without an input quantizer on fewer than ``LUT_ROWS`` tokens: lookup tables;
- every other codec (k-bit grids, planes, PB-LLM's partial rows, BiLLM/ARB/STBLLM blocks): the input
  quantizer, then ``TILE`` output rows dequantized at a time for a float32 GEMM;
- unquantized linears and embeddings: their float32 tensors;
- between the linears, GELU, the residual add with LayerNorm and the masked softmax as one-pass numba
  loops (:mod:`binlab.runtime.elementwise`).

That is the ``numba`` backend; the ``aot`` backend runs the same kernels compiled ahead of time for this
machine (``binlab runtime build``, :mod:`binlab.runtime.aot`), without numba's compiler in the process. The ``numpy`` backend (``load(path, backend="numpy")``, ``binlab classify
--backend numpy``) keeps numba out of the process, for the smallest memory: it decodes every packed
matrix to float32 once at load and runs numpy's BLAS and array passes (:mod:`binlab.runtime.npops`).

The results equal the torch packed path's up to float32 summation order (the tests hold logits to
1e-5 relative on the tiny presets); a value within rounding of a sign threshold can flip a bit, so on a
large test set a few predictions may differ (the deploy bench reports the share that agree).
"""
from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import numpy as np

from binlab.data import CLASSES, PAD_ID, encode

from .codecs import TILE, BinaryCodec
from .fileformat import SEP, packed_tokenizer, read_packed
from .layouts import CODECS, MoSCodec

BACKENDS = ("numba", "numpy", "aot")
#: padded tokens per pass of Model.logits, by (backend, task): bounds the working memory (see Model.logits) and sets
#: the speed. The numba kernels are fastest while a pass's activations stay in the core's cache, numpy's array passes
#: pay a fixed cost per call and want long passes; a language model's pass is dominated by its vocabulary-wide
#: output, which longer passes serve better. The values are the fastest of bench/pass_tokens.py's settings on a core
#: with 1 MiB of level-2 cache (docs/results/bench-pass-tokens.md)
MAX_TOKENS = {("numba", "classify"): 128, ("numba", "lm"): 1024, ("numpy", "classify"): 1024, ("numpy", "lm"): 1024,
              ("aot", "classify"): 128, ("aot", "lm"): 1024}  # aot: numba's kernels, compiled ahead of time
#: padded tokens per pass of a model whose packed linears decode tiles (W1A32, k-bit, planes, ...): every pass
#: decodes each such matrix once, which long passes amortize (the value every backend used before MAX_TOKENS, and what
#: bench/deploy.py's W1A32 rows run)
TILE_MAX_TOKENS = 1024

#: OneBit's output LayerNorm (no parameters, torch's default eps)
POST_NORM_EPS = 1e-5
#: a plain binary linear without input quantizer uses lookup tables below this many input rows
LUT_ROWS = 32
#: the stateless input quantizers this runtime computes (binlab.methods.activations.ACTIVATIONS)
STATELESS = ("sign", "sign_unscaled", "binary01", "absmax8")


def _sign(x: np.ndarray) -> np.ndarray:
    """+1 where x >= 0, else -1 (sign(0) = +1, binlab's convention): adding +0.0 turns -0.0 into +0.0, so
    copysign gives +1 at both zeros, in one pass."""
    return np.copysign(np.float32(1), np.asarray(x, np.float32) + np.float32(0))


class Quantizer:
    """An input or attention quantizer of the file (see :func:`binlab.runtime.export.act_form`):
    ``sign`` (per-token scale mean|x|), ``sign_unscaled``, ``binary01``, ``absmax8``, or BiT's/LSQ's
    elastic kinds with their learned ``alpha`` (and per-channel shift ``move`` in front of a linear)."""

    def __init__(self, form: dict, params: dict[str, np.ndarray], where: str):
        self.kind = form.get("kind")
        if self.kind not in STATELESS + ("elastic",):
            raise ValueError(f"{where}: the torch-free runtime has no input quantizer {self.kind!r}; "
                             "load the file with binlab.runtime.export.load_packed")
        self.signed, self.bits = bool(form.get("signed", True)), int(form.get("bits", 1))
        self.alpha = self.move = None
        if self.kind == "elastic":
            if "alpha" not in params or not bool(np.asarray(params.get("initialized", False))):
                raise ValueError(f"{where}: its elastic quantizer's scale was never set (the model never ran before export)")
            alpha = np.asarray(params["alpha"], np.float32).reshape(-1)
            if alpha.size != 1:
                raise ValueError(f"{where}: its elastic quantizer's scale has {alpha.size} values, expected 1")
            self.alpha = float(max(alpha[0], np.float32(1e-5)))
            self.move = params.get("move")
        if self.bits < 1:
            raise ValueError(f"{where}: bits must be >= 1, got {self.bits}")

    @property
    def batchwise(self) -> bool:
        """True when the output depends on the whole batch (BiT's unsigned k-bit kinds subtract the tensor's minimum)."""
        return self.kind == "elastic" and not self.signed and self.bits > 1

    def xnor_form(self) -> tuple[float, np.ndarray | None] | None:
        """(scale, shift) when the quantizer gives ``scale * sign(x + shift)`` (scale -1: the per-token
        mean|x|), so the XNOR kernel computes the layer; else None."""
        if self.kind == "sign":
            return -1.0, None
        if self.kind == "sign_unscaled":
            return 1.0, None
        if self.kind == "elastic" and self.signed and self.bits == 1:
            return self.alpha, self.move
        return None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "sign":
            a = np.maximum(np.abs(x).mean(-1, keepdims=True), np.float32(1e-8))
            return a * _sign(x)
        if self.kind == "sign_unscaled":
            return _sign(x)
        if self.kind == "binary01":
            up = (x >= x.mean(-1, keepdims=True)).astype(np.float32)
            m = (x * up).sum(-1, keepdims=True) / np.maximum(up.sum(-1, keepdims=True), np.float32(1))
            return m * up
        if self.kind == "absmax8":
            g = np.maximum(np.abs(x).max(-1, keepdims=True), np.float32(1e-8))
            return np.clip(np.round(np.float32(127) * x / g), -127, 127) * g / np.float32(127)
        if self.move is not None:
            x = x + self.move
        alpha = np.float32(self.alpha)
        if self.signed and self.bits == 1:
            return alpha * _sign(x)
        qn, qp = (-(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1) if self.signed else (0, 2**self.bits - 1)
        if not self.signed and self.bits > 1:  # BiT: the tensor's minimum off, then back on
            lo = x.min()
            return np.clip(np.round((x - lo) / alpha), qn, qp) * alpha + lo
        return np.clip(np.round(x / alpha), qn, qp) * alpha


class Linear:
    """One linear of the file: packed (a codec) or float32, with its input quantizer, OneBit's output
    norm and Bi-Real's shortcut."""

    def __init__(self, name: str, weight, bias: np.ndarray | None, act: Quantizer | None = None,
                 shortcut: bool = False, post_norm: bool = False, backend: str = "numba", ops=None):
        self.name = name
        self.codec = weight if not isinstance(weight, np.ndarray) else None
        self.dense = weight if isinstance(weight, np.ndarray) else None
        self.out_features, self.in_features = weight.shape
        self.bias = bias
        self.act, self.shortcut, self.post_norm = act, shortcut, post_norm
        self.ops = ops if ops is not None else _ops(backend)  # the model's, so a backend is resolved once per model
        plain = isinstance(self.codec, BinaryCodec) and self.codec.plain
        self.xnor = self._wt = self._lut = self._decoded = None
        if backend == "numpy":  # the whole matrix decoded to float32 once, for numpy's BLAS (BinaryMoS mixes its scales per token)
            if self.codec is not None and not isinstance(self.codec, MoSCodec):
                self._decoded = np.ascontiguousarray(self.codec.rows(slice(0, self.out_features)), dtype=np.float32)
        else:  # the numba kernels, compiled just in time or ahead of time
            self._w1a1, self._binary_gemm = self.ops.w1a1_linear_kernel, self.ops.binary_gemm
            self.xnor = act.xnor_form() if (plain and act is not None) else None
            self._wt = np.ascontiguousarray(self.codec.words.T) if self.xnor is not None else None
            self._lut = self.ops.LutWeights(self.codec.words, self.in_features) if plain and act is None else None
            if self.xnor is not None:
                self._lo, self._hi = (np.ascontiguousarray(v, dtype=np.float32) for v in (self.codec.lo, self.codec.hi))
        self._zeros = np.zeros(self.out_features, np.float32)

    @property
    def path(self) -> str:
        if self.dense is not None:
            return "dense"
        if self._decoded is not None:
            return "decoded"
        return "xnor" if self.xnor is not None else "lut/tiles" if self._lut is not None else "tiles"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        K, N = self.in_features, self.out_features
        if self.dense is not None:
            y = x @ self.dense.T
            if self.bias is not None:
                y += self.bias
            return y
        if self.xnor is not None:
            scale, shift = self.xnor
            xs = x if shift is None else np.ascontiguousarray(x + shift)
            y = np.empty((x.shape[0], N), np.float32)
            bias = self._zeros if (self.post_norm or self.bias is None) else self.bias
            self._w1a1(xs, self._wt, self._lo, self._hi, bias, np.int64(K), np.float32(scale), y)
        else:
            xa = np.ascontiguousarray(self.act(x), dtype=np.float32) if self.act is not None else x
            if self._decoded is not None:
                y = xa @ self._decoded.T
            elif isinstance(self.codec, MoSCodec):  # BinaryMoS: the scales are mixed per token
                s_in, s_out = self.codec.scales(xa)
                xs = np.ascontiguousarray(xa * s_in, dtype=np.float32)
                y = np.empty((xa.shape[0], N), np.float32)
                for n0 in range(0, N, TILE):
                    n1 = min(N, n0 + TILE)
                    y[:, n0:n1] = xs @ self.codec.signs(slice(n0, n1)).T
                y *= s_out
            elif self._lut is not None and xa.shape[0] < LUT_ROWS:
                P = self._binary_gemm(xa, self._lut, K)
                y = self.codec.lo[None] * xa.sum(1, keepdims=True) + (self.codec.hi - self.codec.lo)[None] * P
            else:
                y = np.empty((xa.shape[0], N), np.float32)
                for n0 in range(0, N, TILE):
                    n1 = min(N, n0 + TILE)
                    y[:, n0:n1] = xa @ self.codec.rows(slice(n0, n1)).T
            if self.bias is not None and not self.post_norm:
                y += self.bias
        if self.post_norm:
            y = self.ops.add_layer_norm(y, None, None, None, POST_NORM_EPS)
            if self.bias is not None:
                y += self.bias
        if self.shortcut:
            y += x
        return y


class Embedding:
    """A token or position table: packed (only the rows looked up are decoded) or float32."""

    def __init__(self, weight):
        self.codec = weight if not isinstance(weight, np.ndarray) else None
        self.dense = weight if isinstance(weight, np.ndarray) else None
        self.num_embeddings = weight.shape[0]

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.num_embeddings):
            raise IndexError(f"token id out of range [0, {self.num_embeddings})")
        if self.dense is not None:
            return self.dense[ids]
        uniq, inv = np.unique(ids.reshape(-1), return_inverse=True)
        return self.codec.rows(uniq)[inv].reshape(*ids.shape, -1)


class Model:
    """A packed classifier or causal language model, run with numpy, and numba's kernels on the ``numba``
    backend (:func:`load` makes one)."""

    def __init__(self, meta: dict[str, str], tensors: dict[str, np.ndarray], path: str | Path = "the file", backend: str = "numba"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.path, self.meta, self.backend = str(path), meta, backend
        self.ops = _ops(backend)
        try:
            cfg = json.loads(meta["config"])
            comps = json.loads(meta["components"])
            attn = json.loads(meta["attention"]) if "attention" in meta else None
            self.d_model, self.n_heads, self.n_layers = int(cfg["d_model"]), int(cfg["n_heads"]), int(cfg["n_layers"])
            self.max_len, self.eps, self.task = int(cfg["max_len"]), float(cfg["norm_eps"]), cfg.get("task", "classify")
            if not isinstance(comps, dict):
                raise ValueError("'components' must map names to objects")
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: its header is not a valid binlab packed model header ({err})") from None
        self.arch = cfg.get("arch", "transformer")
        if self.arch not in ("transformer", "lstm") or (self.arch == "lstm" and self.task != "lm"):
            raise ValueError(f"{path}: the torch-free runtime runs transformers and LSTM language models, and this file holds "
                             f"an {self.arch!r} {self.task} model; load it with binlab.runtime.export.load_packed")
        spec = json.loads(meta.get("spec", "{}"))
        if attn is None and (spec.get("attn_probs") or spec.get("attn_qkv") or spec.get("attn_residual")):
            raise ValueError(f"{path} was written before packed files described their attention quantizers: export it again")
        self.attn = attn or {"probs": None, "qkv": None, "residual_rank": 0}
        self.tensors = dict(tensors)
        self.components = comps
        self._codecs = {}
        for name, info in comps.items():
            fields = {k[len(name) + len(SEP):]: self.tensors.pop(k) for k in [k for k in self.tensors if k.startswith(name + SEP)]}
            try:
                self._codecs[name] = CODECS[info["codec"]](tuple(info["shape"]), info["meta"], fields)
            except (KeyError, AttributeError, ValueError, TypeError, IndexError) as err:
                raise ValueError(f"{path}: component {name!r} cannot be read ({err})") from None
        self.token = self._embedding("embed.token")
        self.tokenizer = None
        self.attn_quant = []
        if self.arch == "lstm":  # binlab.nn.lstm: token table, per layer the input-to-hidden and hidden-to-hidden matrices, head
            self.linears = {f"layers.{i}.rnn.{p}": self._linear(f"layers.{i}.rnn.{p}") for i in range(self.n_layers) for p in ("ih", "hh")}
            self.head = self._linear("head")
            return
        self.pos = self._embedding("embed.pos")
        self.linears = {f"layers.{i}.{p}": self._linear(f"layers.{i}.{p}")
                        for i in range(self.n_layers) for p in ("attn.q", "attn.k", "attn.v", "attn.o", "ffn.up", "ffn.down")}
        self.head = self._linear("head")
        for i in range(self.n_layers):
            pre = f"layers.{i}.attn"
            probs = self.attn["probs"]
            pq = None
            if probs is not None and probs.get("kind") not in ("binary01", "bibert"):
                pq = Quantizer(probs, self._params(f"{pre}.prob_quantizer.act."), f"{pre}.prob_quantizer")
            qkv = {n: Quantizer(self.attn["qkv"], self._params(f"{pre}.qkv_quantizer.{n}."), f"{pre}.qkv_quantizer.{n}")
                   for n in "qkv"} if self.attn["qkv"] else None
            res = {k: self._tensor(f"{pre}.residual.{k}") for k in ("maps", "bias", "v", "v_bias")} if self.attn["residual_rank"] else None
            self.attn_quant.append((pq, qkv, res))

    @functools.cached_property
    def max_tokens(self) -> int:
        """Padded tokens per pass of :meth:`logits`: :data:`MAX_TOKENS` for the backend and task, or
        :data:`TILE_MAX_TOKENS` when a packed linear decodes tiles (every codec but the XNOR path's, on
        many rows): each pass decodes those matrices' tiles again, so short passes would repeat that work."""
        tiles = any(lin.path in ("tiles", "lut/tiles") for lin in [*self.linears.values(), self.head])
        return TILE_MAX_TOKENS if tiles else MAX_TOKENS.get((self.backend, self.task), 1024)

    @functools.cached_property
    def rows_independent(self) -> bool:
        """True when each row's output depends on that row alone (no quantizer takes a batch statistic);
        computed once, not on every call of :meth:`logits`."""
        quantizers = [lin.act for lin in self.linears.values()] + [self.head.act]
        quantizers += [q for pq, qkv, _ in self.attn_quant for q in [pq, *(qkv or {}).values()]]
        return not any(q is not None and q.batchwise for q in quantizers)

    # ---- reading the file
    def _tensor(self, key: str) -> np.ndarray:
        if key not in self.tensors:
            raise ValueError(f"{self.path}: the file has no tensor {key!r}")
        t = self.tensors[key]
        return t if t.dtype == np.bool_ else np.ascontiguousarray(t, dtype=np.float32)

    def _params(self, prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix):]: self._tensor(k) for k in self.tensors if k.startswith(prefix)}

    def _weight(self, name: str):
        return self._codecs[name] if name in self._codecs else self._tensor(f"{name}.weight")

    def _embedding(self, name: str) -> Embedding:
        return Embedding(self._weight(name))

    def _linear(self, name: str) -> Linear:
        info = self.components.get(name, {})
        act = None
        if info.get("act"):
            if "act_form" not in info:
                raise ValueError(f"{self.path} was written before packed files described their input quantizers: export it again")
            act = Quantizer(info["act_form"], self._params(f"{name}.act."), name)
        bias = self._tensor(f"{name}.bias") if f"{name}.bias" in self.tensors else None
        return Linear(name, self._weight(name), bias, act, bool(info.get("shortcut")), bool(info.get("post_norm")), self.backend, self.ops)

    def _norm(self, name: str, x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        """LayerNorm ``name`` of ``x`` (plus ``residual``, added in the same pass)."""
        return self.ops.add_layer_norm(x, residual, self._tensor(f"{name}.weight"), self._tensor(f"{name}.bias"), self.eps)

    # ---- the forward pass
    def _attention(self, i: int, x: np.ndarray, key_mask: np.ndarray) -> np.ndarray:
        B, T, d = x.shape
        h, dh = self.n_heads, d // self.n_heads
        pre = f"layers.{i}.attn"
        x2 = x.reshape(B * T, d)
        # contiguous (B, h, T, dh) blocks: numpy's stacked matmul calls BLAS per head only on contiguous operands
        q, k, v = (np.ascontiguousarray(self.linears[f"{pre}.{n}"](x2).reshape(B, T, h, dh).transpose(0, 2, 1, 3)) for n in "qkv")
        pq, qkv, res = self.attn_quant[i]
        kind = (self.attn["probs"] or {}).get("kind")
        if qkv is not None:
            q, k, v = qkv["q"](q), qkv["k"](k), qkv["v"](v)
        plain = self.attn["probs"] is None and qkv is None and res is None
        mask = key_mask[:, None, None, :]
        if self.task == "lm":
            tril = np.tril(np.ones((T, T), bool))[None, None]
            mask = tril if plain else (tril & mask)  # fp attention: the causal mask alone (padding follows every real token)
        s = q @ np.ascontiguousarray(k.transpose(0, 1, 3, 2))
        xr = None
        if res is not None:
            xr = x
            rq, rk, mq, mk = (xr @ res["maps"][j].T + res["bias"][j] for j in range(4))
            s = s + (mq @ rk.transpose(0, 2, 1) + rq @ mk.transpose(0, 2, 1) + rq @ rk.transpose(0, 2, 1))[:, None]
        if kind == "bibert":
            a = ((s > 0) & mask).astype(np.float32)  # the sign of the scores: scaling by 1 / sqrt(dh) does not change it
        else:
            p = self.ops.masked_softmax_(np.ascontiguousarray(s, dtype=np.float32), key_mask if not (plain and self.task == "lm") else np.ones_like(key_mask),
                                self.task == "lm", 1.0 / math.sqrt(dh))
            if kind == "binary01":
                L = np.maximum(mask.sum(-1, keepdims=True), 1).astype(np.float32)
                keep = ((p >= 1.0 / L) & mask).astype(np.float32)
                a = keep / np.maximum(keep.sum(-1, keepdims=True), np.float32(1))
            elif pq is not None:
                a = pq(p) * mask
            else:
                a = p
        if res is not None:
            v = v + (xr @ res["v"].T + res["v_bias"])[:, None]
        y = (np.ascontiguousarray(a, dtype=np.float32) @ np.ascontiguousarray(v)).transpose(0, 2, 1, 3).reshape(B * T, d)
        return self.linears[f"{pre}.o"](y).reshape(B, T, d)

    def _recurrence(self, i: int, x: np.ndarray) -> np.ndarray:
        """One LSTM layer (binlab.nn.lstm's equations): every step's input term at once, then
        ``[i f g o] = W_ih x_t + b + W_hh h_{t-1}``, ``c_t = s(f) c_{t-1} + s(i) tanh(g)``, ``h_t = s(o) tanh(c_t)``."""
        B, T, d = x.shape
        gx = self.linears[f"layers.{i}.rnn.ih"](x.reshape(B * T, d)).reshape(B, T, 4 * d)
        hh = self.linears[f"layers.{i}.rnn.hh"]
        h = np.zeros((B, d), np.float32)
        c = np.zeros((B, d), np.float32)
        out = np.empty((B, T, d), np.float32)
        half = np.float32(0.5)

        def sigmoid(v):  # as (1 + tanh(v / 2)) / 2: no overflow for large |v|
            return half + half * np.tanh(half * v)

        for t in range(T):
            g = gx[:, t] + hh(h)
            gi, gf, gg, go = (g[:, k * d:(k + 1) * d] for k in range(4))
            c = sigmoid(gf) * c + sigmoid(gi) * np.tanh(gg)
            h = sigmoid(go) * np.tanh(c)
            out[:, t] = h
        return out

    def hidden(self, ids: np.ndarray) -> np.ndarray:
        """Token states after the last layer, (B, T, d), for token ids (B, T) padded with 0."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 2:
            raise ValueError(f"ids must be (batch, tokens), got shape {ids.shape}")
        B, T = ids.shape
        if T > self.max_len:
            raise ValueError(f"sequence length {T} exceeds the position table ({self.max_len})")
        if self.arch == "lstm":
            x = np.ascontiguousarray(self.token(ids), dtype=np.float32)
            for i in range(self.n_layers):
                x = self._recurrence(i, x)
            return x
        key_mask = ids != PAD_ID
        x = self._norm("embed.norm", self.token(ids), np.broadcast_to(self.pos(np.arange(T))[None], (B, T, self.d_model)))
        for i in range(self.n_layers):
            x = self._norm(f"layers.{i}.norm1", x, self._attention(i, x, key_mask))
            up = self.linears[f"layers.{i}.ffn.up"](x.reshape(B * T, -1))
            f = self.linears[f"layers.{i}.ffn.down"](self.ops.gelu_(np.ascontiguousarray(up, dtype=np.float32))).reshape(B, T, -1)
            x = self._norm(f"layers.{i}.norm2", x, f)
        return x

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """Class logits (B, classes) of a classifier, or next-token logits (B, T, vocab) of a language model.

        A batch of more than :attr:`max_tokens` padded tokens runs in chunks of rows of at most that many
        tokens: the working memory (attention scores, FFN activations) is then bounded by the chunk, not
        the batch (on minilm-l2, 64 rows of 128 tokens in one pass add about 190 MB at the peak). Each row's
        logits are the same either way, since no operation mixes rows; a model with a quantizer that does
        (BiT's unsigned k-bit inputs take the minimum of the whole tensor, as in torch) runs the batch whole."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim == 2 and ids.shape[0] > 1 and ids.size > self.max_tokens and self.rows_independent:
            step = max(1, self.max_tokens // max(ids.shape[1], 1))
            first = self._logits(ids[:step])
            out = np.empty((ids.shape[0],) + first.shape[1:], first.dtype)  # filled in place: no second copy of the output
            out[:step] = first
            for s in range(step, ids.shape[0], step):
                out[s:s + step] = self._logits(ids[s:s + step])
            return out
        return self._logits(ids)

    def _logits(self, ids: np.ndarray) -> np.ndarray:
        x = self.hidden(ids)
        if self.task == "lm":
            B, T, d = x.shape
            return self.head(x.reshape(B * T, d)).reshape(B, T, -1)
        m = (ids != PAD_ID)[..., None].astype(np.float32)
        pooled = (x * m).sum(1) / np.maximum(m.sum(1), np.float32(1))
        return self.head(pooled)

    # ---- texts in, answers out
    def _tok(self):
        if self.tokenizer is None:
            self.tokenizer = packed_tokenizer(self.meta, self.path)
        return self.tokenizer

    def predict(self, split, batch_size: int = 64) -> np.ndarray:
        """Logits (n, classes) of an :class:`~binlab.data.EncodedSplit`, in its row order."""
        if self.task == "lm":
            raise ValueError("predict is for classifiers; a language model generates (generate)")
        out = None
        for x, rows in split.padded(batch_size):
            lg = self.logits(x)
            if out is None:
                out = np.empty((len(split), lg.shape[1]), np.float32)
            out[rows] = lg
        return out if out is not None else np.zeros((0, 0), np.float32)

    def classify(self, texts: list[str], batch_size: int = 64) -> list[dict]:
        """``[{"text", "label", "probs"}]`` for each text (AG_NEWS's four classes)."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError("give one or more non-empty texts to classify")
        split = encode(self._tok(), list(texts), [0] * len(texts), self.max_len)
        lg = self.predict(split, batch_size).astype(np.float64)
        p = np.exp(lg - lg.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        names = CLASSES if p.shape[1] == len(CLASSES) else tuple(str(j) for j in range(p.shape[1]))
        return [{"text": t, "label": names[int(r.argmax())], "probs": dict(zip(names, r.round(6).tolist()))} for t, r in zip(texts, p)]

    def classify_one(self, text: str, repeats: int = 5) -> dict:
        """One text: ``{"label", "probs", "ms"}``, ``ms`` the median of ``repeats`` forward passes (batch of
        1, after one warm-up), as :func:`binlab.runtime.export.classify_text` times the torch models."""
        r = self.classify([text])[0]
        split = encode(self._tok(), [text], [0], self.max_len)
        x = next(split.padded(1))[0]
        ts = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            self.logits(x)
            ts.append(time.perf_counter() - t0)
        return {"label": r["label"], "probs": r["probs"], "ms": 1e3 * sorted(ts)[len(ts) // 2]}

    def generate(self, prompt: str, max_new_tokens: int = 20) -> dict:
        """Greedy continuation of ``[CLS] prompt`` until ``[SEP]``, ``max_new_tokens`` or the position
        table's end (what :func:`binlab.nn.generate.greedy` does): ``{"text", "ids", "seconds"}``."""
        if self.task != "lm":
            raise ValueError("generation needs a language model (a file exported from the lm preset)")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        tok = self._tok()
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        ids = [cls] + tok.encode(prompt, add_special_tokens=False).ids[: self.max_len - 2]
        t0 = time.perf_counter()
        new: list[int] = []
        for _ in range(max_new_tokens):
            if len(ids) >= self.max_len:
                break
            nxt = int(self.logits(np.array([ids]))[0, -1].argmax())
            if nxt == sep:
                break
            ids.append(nxt)
            new.append(nxt)
        return {"text": tok.decode(new), "ids": new, "seconds": time.perf_counter() - t0}


def _ops(backend: str):
    """A backend's operations: numpy's array passes, or numba's kernels (one-pass elementwise loops, the packed
    linears) compiled just in time (``numba``) or ahead of time (``aot``: :mod:`binlab.runtime.aot`)."""
    if backend == "numpy":
        from . import npops

        return npops
    if backend == "aot":
        from . import aot

        return aot.ops()
    import numba

    from . import fused
    from .kernels import JIT

    return fused.ops(JIT, numba.get_num_threads)


def resolve_backend(backend: str) -> str:
    """``auto``: the kernels compiled ahead of time when :func:`binlab.runtime.aot.build` made them on this
    machine, else numba's compiler; any other name as given (checked)."""
    if backend == "auto":
        from . import aot

        return "aot" if aot.load_kernels() is not None else "numba"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS + ('auto',)}, got {backend!r}")
    return backend


def load(path: str | Path, numba_threads: int | None = 1, backend: str = "auto") -> Model:
    """The packed model in ``path``, ready to run without torch; a damaged or altered file raises
    ``ValueError`` (format and checksum are checked first, as :func:`~binlab.runtime.export.load_packed` does).

    ``backend``: ``"numba"`` (the packed kernels: XNOR-popcount, lookup tables, tiles decoded per call,
    compiled by numba in this process), ``"aot"`` (the same kernels compiled ahead of time by
    ``binlab runtime build``: :mod:`binlab.runtime.aot`), ``"numpy"`` (no compiled kernels: every packed
    matrix decoded to float32 once at load, then numpy's BLAS), or ``"auto"`` (``aot`` where it is built on this
    machine, else ``numba``). numba's compiler takes about 125 MiB of a process before any model (59 MiB to import,
    66 MiB more at the first call of a cached kernel, 15 of them scipy's, which :func:`~binlab.runtime.process.keep_scipy_out` saves a
    process that runs only this runtime: bench/numba_memory.py); the ``aot`` and ``numpy`` backends save that,
    and ``numpy`` holds the binary matrices at 32 bits a weight instead (a few MB on scratch and minilm-l2).
    All compute the same function; bench/deploy.py measures each one's memory and speed.

    ``numba_threads``: the threads numba's kernels use in this process (None: leave numba's setting).
    The default, 1, leaves the cores to numpy's BLAS (attention, float32 linears and tiles): numba's
    OpenMP workers and OpenBLAS's threads both spin while they wait, so two pools on a 2-core machine
    take the cores from each other (bench/deploy.py times the runtime in a fresh process)."""
    backend = resolve_backend(backend)
    if numba_threads is not None and backend == "numba":
        import numba

        numba.set_num_threads(max(1, min(int(numba_threads), numba.config.NUMBA_NUM_THREADS)))
    meta, tensors = read_packed(path)
    return Model(meta, tensors, path, backend)
