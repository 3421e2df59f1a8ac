"""Small transformers with stable component names: a BERT-style text classifier and a causal LM.

Every part the lab can binarize is a named submodule::

    embed.token  embed.pos  embed.norm
    layers.{i}.attn.q  layers.{i}.attn.k  layers.{i}.attn.v  layers.{i}.attn.o  layers.{i}.norm1
    layers.{i}.ffn.up  layers.{i}.ffn.down  layers.{i}.norm2
    head

The block is BERT's post-norm layer (Devlin et al. 2019), so the first layers of
all-MiniLM-L6-v2 load into it unchanged (see :mod:`binlab.nn.pretrained`)::

    h = LN(x + O(softmax(Q x K x^T / sqrt(d_h)) V x))      # (B, T, d)
    y = LN(h + Down(gelu(Up h)))

The sentence vector is the mean of the non-padding token states (sentence-transformers'
pooling), then a linear ``head`` gives the 4 class logits.

:class:`CausalLM` (``task="lm"``, the ``lm`` preset) is the same stack with causal self-attention
(token t attends to tokens <= t) and a ``head`` over the vocabulary at every position: the logits
at position t predict token t + 1. The component names are the same, so everything that quantizes,
sizes or probes a classifier works on it unchanged.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from binlab.data import PAD_ID

TASKS = ("classify", "lm")
ARCHS = ("transformer", "lstm")  # lstm: binlab.nn.lstm, a recurrent language model


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 16000
    max_len: int = 128  # size of the position table
    d_model: int = 128  # small: the scratch model must train in minutes on 2 CPU cores
    n_heads: int = 4
    d_ff: int = 512
    n_layers: int = 2  # the seed's setup: 2 encoder layers
    n_classes: int = 4
    dropout: float = 0.1
    norm_eps: float = 1e-12  # BERT's value, so pretrained layer norms behave identically
    task: str = "classify"  # "classify" (pooled sentence -> n_classes) or "lm" (causal, next-token logits)
    arch: str = "transformer"  # or "lstm" (binlab.nn.lstm: language models only; n_heads and d_ff unused)

    def __post_init__(self):
        for name in ("vocab_size", "max_len", "d_model", "n_heads", "d_ff", "n_layers", "n_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.arch == "lstm" and self.task != "lm":
            raise ValueError("the LSTM is a language model: use task='lm' with arch='lstm'")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint_dict(self) -> dict:
        """The fields that identify a trained model (``task`` and ``arch`` only when they are not the
        defaults, so checkpoints cached before those existed keep their keys)."""
        d = asdict(self)
        if d["task"] == "classify":
            d.pop("task")
        if d["arch"] == "transformer":
            d.pop("arch")
        return d


class Embeddings(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.token = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.max_len = cfg.max_len

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, d)
        T = ids.shape[1]
        if T > self.max_len:
            raise ValueError(f"sequence length {T} exceeds the position table ({self.max_len}); lower max_len")
        x = self.token(ids) + self.pos(torch.arange(T, device=ids.device))[None]
        return self.drop(self.norm(x))


class Attention(nn.Module):
    """Multi-head self-attention with separate, named Q/K/V/O linears.

    Set by :func:`binlab.nn.quantize.quantize_` for W1A1 runs: ``qkv_quantizer`` (a ModuleDict with
    ``q``, ``k``, ``v``: activation quantizers applied to the projections before the products) and
    ``prob_quantizer`` (:mod:`binlab.methods.attention`: scores and mask -> attention weights). Without
    either, the fused ``scaled_dot_product_attention`` is used. With ``causal`` (the LM), position t
    attends to positions <= t only. While ``capture`` is a list, each forward appends the
    full-precision ``(q, k, v)`` per head (BiBERT's direction-matching distillation reads them).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.p_drop = cfg.dropout
        self.causal = cfg.task == "lm"
        self.prob_quantizer = None
        self.qkv_quantizer = None
        self.residual = None  # BiPFT's low-rank residual estimators (binlab.methods.attention.LowRankResidual)
        self.capture = None

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q, k, v) per head, (B, h, T, d_h), after the Q/K/V quantizers if any."""
        B, T, d = x.shape
        h = self.n_heads
        split = lambda t: t.view(B, T, h, d // h).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        if self.capture is not None:
            self.capture.append((q, k, v))
        if self.qkv_quantizer is not None:
            q, k, v = self.qkv_quantizer["q"](q), self.qkv_quantizer["k"](k), self.qkv_quantizer["v"](v)
        return q, k, v

    def mask(self, key_mask: torch.Tensor) -> torch.Tensor:
        """Which keys each query sees: (B, 1, 1, T), or (B, 1, T, T) when causal."""
        mask = key_mask[:, None, None, :]
        if self.causal:
            T = key_mask.shape[1]
            mask = torch.ones(T, T, dtype=torch.bool, device=key_mask.device).tril()[None, None] & mask
        return mask

    def weights(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The attention weights that multiply V: softmax, or the quantizer's (with BiPFT's residual
        scores from the layer input ``x`` when the layer has them)."""
        from binlab.methods.attention import softmax_probs

        s = q @ k.transpose(-2, -1)
        if self.residual is not None and x is not None:
            s = s + self.residual.scores(x)
        scores = s / math.sqrt(q.shape[-1])
        return self.prob_quantizer(scores, mask) if self.prob_quantizer is not None else softmax_probs(scores, mask)

    def maps(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """The attention weights (B, h, T, T) this layer uses on input ``x``, as the model computes them now."""
        q, k, _ = self.project(x)
        return self.weights(q, k, self.mask(key_mask), x)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.project(x)
        drop = self.p_drop if self.training else 0.0
        if self.prob_quantizer is None and self.qkv_quantizer is None and self.residual is None:
            if self.causal:  # padding sits after every real token, so the causal mask already hides it from real queries
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :], dropout_p=drop)
        else:
            a = self.weights(q, k, self.mask(key_mask), x)
            y = a @ v if self.residual is None else a @ (v + self.residual.values(x))
        return self.o(y.transpose(1, 2).reshape(B, T, d))


class FFN(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_ff)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = FFN(cfg)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, key_mask):
        x = self.norm1(x + self.drop(self.attn(x, key_mask)))
        return self.norm2(x + self.drop(self.ffn(x)))


class Classifier(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed = Embeddings(cfg)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size if cfg.task == "lm" else cfg.n_classes)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        # BERT's initialisation: N(0, 0.02) weights, zero biases
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def hidden_states(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Token states after the embeddings and after each layer: ``n_layers + 1`` tensors (B, T, d)."""
        key_mask = ids != PAD_ID
        xs = [self.embed(ids)]
        for layer in self.layers:
            xs.append(layer(xs[-1], key_mask))
        return xs

    def pool(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        m = (ids != PAD_ID).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        return (x * m).sum(1) / m.sum(1).clamp_min(1.0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, n_classes)
        return self.forward_from(0, self.embed(ids), ids)

    def forward_from(self, start: int, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The output given the input ``x`` of layer ``start`` (``start = n_layers``: the head alone),
        so a caller that kept earlier layers' outputs can skip them (the lab's live loop)."""
        key_mask = ids != PAD_ID
        for layer in self.layers[start:]:
            x = layer(x, key_mask)
        return self.output(x, ids)

    def output(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The head on the last layer's token states: pooled sentence -> class logits."""
        return self.head(self.drop(self.pool(x, ids)))


class CausalLM(Classifier):
    """Decoder-only language model: the blocks with causal attention, and ``head`` (d -> vocab) at
    every position. ``forward(ids)`` gives logits (B, T, vocab); position t predicts ``ids[:, t+1]``."""

    def __init__(self, cfg: ModelConfig):
        if cfg.task != "lm":
            raise ValueError("CausalLM needs ModelConfig(task='lm')")
        super().__init__(cfg)

    def output(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, vocab)
        return self.head(self.drop(x))


#: architectures other than the transformer: ``arch`` -> model class (:mod:`binlab.nn.lstm` adds "lstm"
#: when :mod:`binlab.nn` is imported, so this module never imports the families built on it)
ARCH_MODELS: dict[str, type] = {}


def build(cfg: ModelConfig) -> Classifier:
    """The model a config describes: :class:`Classifier`, :class:`CausalLM` or a registered
    architecture's (the recurrent :class:`binlab.nn.lstm.LSTMLM`)."""
    if cfg.arch != "transformer":
        if cfg.arch not in ARCH_MODELS:
            raise ValueError(f"no model registered for arch {cfg.arch!r}; known: {sorted(ARCH_MODELS)}")
        return ARCH_MODELS[cfg.arch](cfg)
    return CausalLM(cfg) if cfg.task == "lm" else Classifier(cfg)


def component_names(model: Classifier) -> list[str]:
    """Names of every component the lab can binarize (linears and embeddings), in model order: the
    one list, :func:`binlab.nn.quantize.quantizable`'s."""
    from .quantize import quantizable

    return list(quantizable(model))
