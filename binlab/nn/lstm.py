"""A recurrent language model: the survey's LSTM era (``ModelConfig(arch="lstm", task="lm")``).

An embedding, ``n_layers`` LSTM layers (Hochreiter and Schmidhuber 1997, the standard cell without
peepholes) and a linear head over the vocabulary, with the components named so that everything that
quantizes, sizes or probes the transformers works on it unchanged::

    embed.token                                  (vocab, d)
    layers.{i}.rnn.ih   W_ih x_t + b             (4d, d)     input to hidden, all four gates
    layers.{i}.rnn.hh   W_hh h_{t-1}             (4d, d)     hidden to hidden, no bias
    head                                         (vocab, d)

    [i f g o] = W_ih x_t + b + W_hh h_{t-1}
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g),    h_t = sigmoid(o) * tanh(c_t)

The logits at position t predict token t + 1, as :class:`binlab.nn.model.CausalLM`'s do; padding
follows every real token, so it never reaches a real position. Both matrices are quantized once per
forward pass (through the estimator in QAT) and the recurrence runs in torch's fused LSTM kernel; a
quantized matrix with an input quantizer (W1A1) runs its own forward every step in a Python loop
instead, the same equations. Dropout (the config's) sits between layers and before the head, as in
Zaremba et al. 2014.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from binlab.data import PAD_ID

from .model import ARCH_MODELS, CausalLM, ModelConfig


class TokenEmbedding(nn.Module):
    """``embed.token`` and dropout: no position table (the recurrence carries the order)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.token = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.max_len = cfg.max_len

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.max_len:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds max_len ({self.max_len})")
        return self.drop(self.token(ids))


class Recurrence(nn.Module):
    """One LSTM layer's two weight matrices, ``ih`` and ``hh``, as named linears."""

    def __init__(self, d: int):
        super().__init__()
        self.ih = nn.Linear(d, 4 * d)
        self.hh = nn.Linear(d, 4 * d, bias=False)

    @staticmethod
    def _weight(mod: nn.Module) -> torch.Tensor | None:
        """The weight a linear computes with (fake-quantized ones: quantized once, through the STE in
        training), or None when the layer is more than a weight (an input quantizer, a layer of its own,
        a packed layer that computes from its codec): the recurrence then calls the layer every step."""
        if isinstance(mod, nn.Linear):
            return mod.weight
        quantizer = getattr(mod, "quantizer", None)
        if quantizer is None:
            return None
        if getattr(mod, "act", None) is None and getattr(quantizer, "linear", None) is None and not mod.shortcut:
            return mod.quantized_weight()
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        B, T, d = x.shape
        h = x.new_zeros(1, B, d)
        w_ih, w_hh = self._weight(self.ih), self._weight(self.hh)
        if w_ih is not None and w_hh is not None:  # torch's fused recurrence, on the (quantized) weights
            params = [w_ih, w_hh, self.ih.bias, torch.zeros_like(self.ih.bias)]
            return torch.lstm(x, (h, h), params, True, 1, 0.0, self.training, False, True)[0]
        gx = self.ih(x)  # every step's input term at once
        step = (lambda v: F.linear(v, w_hh)) if w_hh is not None else self.hh
        h, c = h[0], h[0]
        out = []
        for t in range(T):
            i, f, g, o = (gx[:, t] + step(h)).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            out.append(h)
        return torch.stack(out, 1)


class LSTMLayer(nn.Module):
    """``rnn`` and dropout on its output; ``forward(x, key_mask)`` as the transformer blocks take it."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.rnn = Recurrence(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.drop(self.rnn(x))


class LSTMLM(CausalLM):
    """The LSTM language model: :class:`~binlab.nn.model.CausalLM`'s interface (``embed``, ``layers``,
    ``head``, ``hidden_states``, ``forward_from``, ``output``) over recurrent layers."""

    def __init__(self, cfg: ModelConfig):
        if cfg.task != "lm" or cfg.arch != "lstm":
            raise ValueError("LSTMLM needs ModelConfig(task='lm', arch='lstm')")
        nn.Module.__init__(self)
        self.config = cfg
        self.embed = TokenEmbedding(cfg)
        self.layers = nn.ModuleList(LSTMLayer(cfg) for _ in range(cfg.n_layers))
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        # uniform(-0.1, 0.1) weights as Zaremba et al. 2014 (and the LSTM LM papers after them), zero biases
        # except the forget gate's, at 1 (Jozefowicz et al. 2015), so early gradients pass through time
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.uniform_(m.weight, -0.1, 0.1)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        if isinstance(m, Recurrence):
            d = m.hh.weight.shape[1]
            with torch.no_grad():
                m.ih.bias[d:2 * d] = 1.0

    def hidden_states(self, ids: torch.Tensor) -> list[torch.Tensor]:
        xs = [self.embed(ids)]
        for layer in self.layers:
            xs.append(layer(xs[-1], ids != PAD_ID))
        return xs


ARCH_MODELS["lstm"] = LSTMLM
