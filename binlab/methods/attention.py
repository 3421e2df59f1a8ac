"""Quantizers of the attention weights (W1A1 attention): a registry the spec, the app and the CLI list.

Each maps the scaled scores ``S = Q K^T / sqrt(d_h)`` (B, h, T, T) and the mask of the keys a query
may see to the weights that multiply ``V``:

- ``binary01`` (binlab's): ``A = 1[p >= 1/L]`` over the query's L visible keys, with
  ``p = softmax(S)``, averaged over the kept keys (a {0,1} mask and one scale per query row);
  straight-through to ``p``.
- ``bibert``: BiBERT's Bi-Attention (Qin et al. 2022, sec. 3.2, eqs. 9-11): no softmax; the scores
  (of sign-binarized Q and K) are binarized by the boolean function ``A = bool(S) = 1[S > 0]``,
  which for zero-mean scores keeps about half the keys: the {0,1} code of maximal information
  entropy (the paper's argument against softmax-then-sign, whose output is almost all zeros). The
  weights are not normalised (``A sign(V)`` is BiBERT's bitwise-affine product); hidden keys are 0.
  Backward (``htqin/BiBERT``'s estimator): ``g 1[|S| <= 1]`` on visible keys.
- ``elastic01`` (and ``elastic01_{k}``): BiT's elastic {0,1} activation on the softmax probabilities
  (Liu et al. 2022, sec. 3.2): ``alpha clamp(round(p / alpha), 0, 1)`` with a learned ``alpha``
  (:class:`binlab.methods.activations.ElasticAct`, no shift).

Attention dropout is not applied on these paths (the papers apply it before quantizing; binlab's
fine-tuning budgets are short).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .activations import ELASTIC, ElasticAct
from .ste import apply_grad


def softmax_probs(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(~mask, float("-inf")).softmax(-1)


class BinaryAttentionProbs(nn.Module):
    """{0,1} attention: ``A_b = 1[p >= 1/L]`` per query over its L valid keys, averaged (scale 1/count).
    Backward: straight-through to the softmax probabilities."""

    name = "binary01"

    def forward(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        probs = softmax_probs(scores, mask)
        L = mask.sum(-1, keepdim=True).clamp_min(1).to(probs.dtype)
        keep = ((probs >= 1.0 / L) & mask).to(probs.dtype)
        q = keep / keep.sum(-1, keepdim=True).clamp_min(1)
        return probs + (q - probs).detach()


class BiAttention(nn.Module):
    """BiBERT's Bi-Attention: ``A = 1[S > 0]`` on visible keys (a zero score keeps no key), no
    softmax; backward ``g 1[|S| < 1]`` (its code's ``ZMeanBinaryQuantizer``; tests/reference/bibert_ref.py)."""

    name = "bibert"

    def forward(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.expand_as(scores)
        a = ((scores > 0) & mask).to(scores.dtype)
        return apply_grad(scores, a, lambda s: ((s.abs() < 1) & mask).to(s.dtype))


class ElasticProbs(nn.Module):
    """BiT: softmax, then the elastic unsigned quantizer with a learned scale."""

    def __init__(self, name: str):
        super().__init__()
        signed, bits, _ = ELASTIC[name]
        if signed:
            raise ValueError(f"attention probabilities are non-negative: use an unsigned elastic kind, not {name!r}")
        self.name = name
        self.act = ElasticAct(name, signed, bits)

    def forward(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.act(softmax_probs(scores, mask)) * mask


ATTENTION: dict[str, object] = {"binary01": BinaryAttentionProbs, "bibert": BiAttention} | {
    n: (lambda n=n: ElasticProbs(n)) for n, (signed, _, _) in ELASTIC.items() if not signed}

#: what each kind of attention quantizer does and whose it is (the lab's help text)
ATTENTION_HELP = ("binary01: keep the keys above a uniform share of the softmax; bibert: BiBERT's Bi-Attention, 1[score > 0] "
                  "with no softmax; elastic01*/lsq01*: BiT's/LSQ's learned-scale {0,1} (k-bit) quantizer of the softmax probabilities.")


def make_attention(name: str) -> nn.Module:
    if name not in ATTENTION:
        raise ValueError(f"unknown attention quantizer {name!r}; choose one of {sorted(ATTENTION)}")
    return ATTENTION[name]()


class LowRankResidual(nn.Module):
    """BiPFT's low-rank estimators of the binarization residual of attention (Xing et al. 2024,
    sec. 3.3; ``Xingrun-Xing/BiPFT``'s ``improve_kqv``). With Q = Q_b + R_q and K = K_b + R_k,
    ``Q K^T = Q_b K_b^T + Q_b R_k^T + R_q K_b^T + R_q R_k^T``; BiPFT estimates the residual terms
    from the layer input X with rank-r full-precision maps shared by all heads::

        r_q = X P_q,  r_k = X P_k,  m_q = X M_q,  m_k = X M_k        (d -> r)
        S = (Q_b K_b^T + m_q r_k^T + r_q m_k^T + r_q r_k^T) / sqrt(d_h)
        context = A_b V_b + A_b (X p_v)                               (p_v: d -> 1, added to every channel)

    BiPFT learns them in its binarized pretraining; binlab starts ``P_q``, ``M_q`` and ``p_v`` at 0
    (so the layer computes what it did without them) and the rest at N(0, 0.02), BERT's
    initialisation. At the first step only ``P_q``, ``M_q`` and ``p_v`` get a gradient: ``P_k`` and
    ``M_k`` enter through products with ``X P_q`` and ``X M_q``, which are 0, and start learning
    once those move. Stored in fp32 (``(4 r + 1)(d + 1)`` numbers per layer).
    """

    def __init__(self, d: int, rank: int = 1):
        super().__init__()
        self.rank = rank
        self.maps = nn.Parameter(torch.zeros(4, rank, d))  # P_q, P_k, M_q, M_k
        self.bias = nn.Parameter(torch.zeros(4, rank))
        self.v = nn.Parameter(torch.zeros(1, d))
        self.v_bias = nn.Parameter(torch.zeros(1))
        with torch.no_grad():
            self.maps[1].normal_(0, 0.02)
            self.maps[3].normal_(0, 0.02)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The residual scores (B, 1, T, T), before the 1/sqrt(d_h) scaling."""
        rq, rk, mq, mk = (x @ self.maps[i].T + self.bias[i] for i in range(4))
        extra = mq @ rk.transpose(-2, -1) + rq @ mk.transpose(-2, -1) + rq @ rk.transpose(-2, -1)
        return extra[:, None]

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """The value residual (B, 1, T, 1), broadcast over heads and channels."""
        return (x @ self.v.T + self.v_bias)[:, None]


def entropy(weights: torch.Tensor, mask: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
    """(B, h): each head's mean, over the real queries (``query_mask`` (B, T)), of the entropy in
    nats of the query's weights over its visible keys, normalised to sum to 1 (so a {0,1} map counts
    as uniform over its kept keys; uniform over n keys is ln n). All-zero weights have entropy 0."""
    w = (weights.clamp_min(0) * mask).to(torch.float64)
    p = w / w.sum(-1, keepdim=True).clamp_min(1e-30)
    h = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)  # (B, h, T)
    rows = query_mask[:, None, :].expand_as(h).to(h.dtype)
    return (h * rows).sum(-1) / rows.sum(-1).clamp_min(1)


@torch.no_grad()
def maps(model: nn.Module, ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, ``(weights (B, h, T, T), mask)``: the attention the model uses on ``ids`` as it
    computes it now (quantized Q/K/V and attention quantizer included), in eval mode."""
    caught: dict[int, tuple] = {}
    hooks = [layer.attn.register_forward_pre_hook(lambda mod, args, i=i: caught.__setitem__(i, args))
             for i, layer in enumerate(model.layers)]
    was = model.training
    model.eval()
    try:
        model(ids)
        out = []
        for i, (x, key_mask) in sorted(caught.items()):
            attn = model.layers[i].attn
            out.append((attn.maps(x, key_mask), attn.mask(key_mask)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return out


def view(model: nn.Module, tokenizer, text: str) -> dict:
    """What the attention viewer shows for one text: its tokens, and per layer each head's attention
    weights (h, T, T) as the model computes them now and each head's entropy (nats, as
    :func:`entropy`). The text is encoded as the model's rows are (``[CLS] text [SEP]``, truncated)."""
    from binlab.data import encode

    if not text or not text.strip():
        raise ValueError("type a sentence to look at its attention")
    split = encode(tokenizer, [text], [0], model.config.max_len)
    ids = torch.from_numpy(split.ids.astype("int64"))[None].to(next(model.parameters()).device)
    tokens = [tokenizer.id_to_token(int(i)) or "?" for i in ids[0]]
    layers = []
    for w, mask in maps(model, ids):
        ent = entropy(w, mask, torch.ones_like(ids, dtype=torch.bool))[0]
        layers.append({"weights": w[0].double().cpu().numpy(), "entropy": ent.cpu().numpy()})
    return {"tokens": tokens, "layers": layers}
