"""Greedy continuation of a prompt by a causal language model (the lab's "generate" box)."""
from __future__ import annotations

import time

import torch

from .objective import task_of


@torch.inference_mode()
def greedy(model: torch.nn.Module, tokenizer, prompt: str, max_new_tokens: int = 20) -> dict:
    """Encode ``[CLS] prompt`` (the LM's start-of-text convention), then append the arg-max next
    token until ``[SEP]`` (end of text), ``max_new_tokens``, or the position table's end.
    Returns the continuation text, its token ids and the seconds it took."""
    if task_of(model) != "lm":
        raise ValueError("generation needs a language model (the lm preset)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    max_len = model.config.max_len
    ids = [cls] + tokenizer.encode(prompt, add_special_tokens=False).ids[: max_len - 2]
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    new: list[int] = []
    for _ in range(max_new_tokens):
        if len(ids) >= max_len:
            break
        nxt = int(model(torch.tensor([ids], device=device))[0, -1].argmax())
        if nxt == sep:
            break
        ids.append(nxt)
        new.append(nxt)
    model.train(was)
    return {"text": tokenizer.decode(new), "ids": new, "seconds": time.perf_counter() - t0}
