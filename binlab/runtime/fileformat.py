"""The packed file format, read without torch: its name, the checksum and the checked reader.

A packed model is one safetensors file (``format = binlab-packed/1``; :mod:`binlab.runtime.export`
writes it and says what it holds). The header's metadata is signed with the tensors: a SHA-256 over
the fields that decide what the model computes (:data:`SIGNED_FIELDS`, and the tokenizer when the
file carries one) and every tensor's name, type, shape and bytes. :func:`read_packed` checks the
format and the checksum, so a truncated or altered file is refused with a message, before anything
runs it. :func:`packed_tokenizer` gives the tokenizer a file carries (``tokenizer_json``), so a
packed model is all a deployment needs.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

FORMAT = "binlab-packed/1"
SEP = ".__"

#: the header fields the checksum covers with the tensors (everything that decides what the model computes)
SIGNED_FIELDS = ("format", "config", "spec", "components")
#: signed too when present (files written without a tokenizer stay valid)
SIGNED_IF_PRESENT = ("tokenizer_json", "attention")


def digest(tensors: dict[str, np.ndarray], meta: dict[str, str]) -> str:
    """The checksum of a file's signed header fields and tensors."""
    h = hashlib.sha256()
    for k in SIGNED_FIELDS:
        h.update(f"{k}={meta.get(k, '')}|".encode())
    for k in SIGNED_IF_PRESENT:
        if k in meta:
            h.update(f"{k}={meta[k]}|".encode())
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def read_packed(path: str | Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, tensors) of a packed file, checked: format, every tensor readable, the checksum."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no packed model at {path}; write one with `binlab export ... --out {path}`")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - safetensors raises several kinds on a damaged file
        raise ValueError(f"{path} is not a readable packed model (truncated or corrupted?): {type(err).__name__}: {err}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a binlab packed model (format {meta.get('format')!r}, expected {FORMAT!r})")
    if digest(tensors, meta) != meta.get("sha256"):
        raise ValueError(f"{path} is corrupted: its tensors or header do not match the checksum in its header (altered after export?)")
    return meta, tensors


def packed_tokenizer(meta: dict[str, str], path: str | Path = "the file"):
    """The ``tokenizers.Tokenizer`` a packed file carries; ValueError when it carries none."""
    from tokenizers import Tokenizer

    text = meta.get("tokenizer_json")
    if not text:
        raise ValueError(f"{path} carries no tokenizer: export it again with `binlab export` (files written by "
                         "save_packed(..., tokenizer=tok) carry theirs)")
    try:
        return Tokenizer.from_str(text)
    except Exception as err:  # noqa: BLE001 - tokenizers raises its own exception type
        raise ValueError(f"{path}: its tokenizer cannot be read ({err})") from None
