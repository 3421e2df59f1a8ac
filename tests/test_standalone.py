"""The torch-free runtime (binlab.runtime.standalone) against the torch packed path (load_packed) on
the same files: logits within 1e-5 relative; torch never imported; damaged files refused."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from binlab.nn.model import ModelConfig, build
from binlab.nn.quantize import MethodConfig, QuantSpec, Rule, quantize_
from binlab.runtime import standalone
from binlab.runtime.export import load_packed, save_packed
from binlab.training.qat import ptq
from binlab.training.train import EVAL_BATCH, predict

ROOT = Path(__file__).resolve().parents[1]

#: one spec per runtime path: XNOR-popcount (binlab's sign, BiBERT's unscaled sign, BiT's elastic 1-bit),
#: lookup tables / tiles (W1A32), k-bit grids, planes, blocks, partial rows, OneBit's norm, every
#: input quantizer kind and every attention quantizer kind
SPECS = {
    "w1a1-sign": QuantSpec((Rule("embeddings", MethodConfig("xnor")), Rule("encoder", MethodConfig("xnor", act="sign")))),
    "w1a32-xnor": QuantSpec.simple("all-except-head", "xnor"),
    "bucket-head-too": QuantSpec.simple("all", "bucket"),
    "gptq-3bit": QuantSpec.simple("encoder", "gptq", options={"bits": 3}),
    "billm": QuantSpec.simple("encoder", "billm"),
    "pbllm": QuantSpec.simple("encoder", "pbllm"),
    "stbllm": QuantSpec.simple("encoder", "stbllm"),
    "arb-x": QuantSpec.simple("encoder", "arb", options={"variant": "x"}),
    "binarybert-planes": QuantSpec.simple("encoder", "binarybert"),
    "dbllm-planes": QuantSpec.simple("encoder", "dbllm"),
    "onebit-post-norm": QuantSpec((Rule("encoder", MethodConfig("onebit", options={"out_norm": True})),)),
    "bibert": QuantSpec((Rule("encoder", MethodConfig("bibert", act="sign_unscaled")),), attn_probs="bibert", attn_qkv="sign_unscaled"),
    "bit-elastic": QuantSpec((Rule("embeddings", MethodConfig("xnor")), Rule("encoder", MethodConfig("xnor", act="elastic"))),
                             attn_probs="elastic01_2", attn_qkv="elastic", attn_residual=1),
    "binary01-absmax8": QuantSpec((Rule("attention", MethodConfig("bitnet", act="absmax8")),
                                   Rule("ffn", MethodConfig("xnor", act="binary01"))), attn_probs="binary01"),
    "lsq4-bireal-shortcut": QuantSpec((Rule("attention", MethodConfig("bireal", act="lsq4", options={"shortcut": True})),
                                       Rule("ffn", MethodConfig("xnor", act="lsq01_2")))),
}


@pytest.fixture(autouse=True)
def _aot_kernels(request):
    """A test run with ``backend="aot"`` gets the kernels compiled ahead of time (once per session)."""
    spec = getattr(request.node, "callspec", None)
    if spec is not None and spec.params.get("backend") == "aot":
        request.getfixturevalue("aot_built")


def _export(model, path, tokenizer, split, backend="numba"):
    with torch.no_grad():  # the elastic quantizers take their scale from a first batch
        model(next(iter(split.batches(8)))[0])
    save_packed(model, path, tokenizer=tokenizer)
    return load_packed(path), standalone.load(path, backend=backend)


def _both(packed, lite, split):
    """Logits of the torch packed path and of the torch-free one, in the same (length-sorted) order and
    the same batches (BiT's k-bit quantizers take the minimum of the whole batch)."""
    a, _ = predict(packed, split, batch_size=EVAL_BATCH)
    b = lite.predict(split, batch_size=EVAL_BATCH)[np.argsort(split.lengths, kind="stable")]
    return a, b


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("backend", standalone.BACKENDS)
@pytest.mark.parametrize("name", sorted(SPECS))
def test_torch_free_logits_equal_the_torch_packed_path(name, backend, fp_tiny, calib, tiny_splits, tmp_path):
    q = ptq(fp_tiny, SPECS[name], calib=calib)
    packed, lite = _export(q, tmp_path / "m.safetensors", tiny_splits.tokenizer, tiny_splits.test, backend)
    a, b = _both(packed, lite, tiny_splits.test)
    # a sign input within float rounding of 0 may flip a bit (different summation order): rows without one agree to 1e-5
    close = np.all(np.abs(b - a) <= 1e-5 * np.abs(a).max(), axis=1)
    assert close.mean() >= 0.99 and (a.argmax(1) == b.argmax(1)).mean() >= 0.99, (close.mean(), _rel(b, a))
    used = {lin.path for lin in lite.linears.values()}
    if backend == "numpy":
        assert used == {"decoded"}, used
        return
    if name == "w1a1-sign":
        assert used == {"xnor"}
    if name == "bit-elastic":
        assert used == {"xnor"} and lite.attn_quant[0][2] is not None
    if name == "w1a32-xnor":
        assert "lut/tiles" in used


def test_a_wrong_runtime_is_caught(fp_tiny, calib, tiny_splits, tmp_path, monkeypatch):
    """The comparison above can fail: a runtime that forgets BiBERT's Bi-Attention (softmax instead) differs."""
    q = ptq(fp_tiny, SPECS["bibert"], calib=calib)
    packed, lite = _export(q, tmp_path / "m.safetensors", tiny_splits.tokenizer, tiny_splits.test)
    lite.attn["probs"] = None
    a, b = _both(packed, lite, tiny_splits.test)
    assert _rel(b, a) > 1e-3


def test_classify_texts_and_the_file_carries_its_tokenizer(fp_tiny, tiny_splits, tmp_path):
    q = ptq(fp_tiny, SPECS["w1a1-sign"])
    path = tmp_path / "m.safetensors"
    packed, lite = _export(q, path, tiny_splits.tokenizer, tiny_splits.test)
    texts = ["Stocks rally as oil prices fall", "The team won the final in extra time"]
    out = lite.classify(texts)
    from binlab.runtime.export import classify_text

    for t, r in zip(texts, out):
        ref = classify_text(packed, tiny_splits.tokenizer, t, repeats=1)
        assert r["label"] == ref["label"]
        np.testing.assert_allclose(list(r["probs"].values()), list(ref["probs"].values()), atol=1e-5)
    with pytest.raises(ValueError, match="non-empty"):
        lite.classify([""])
    bare = tmp_path / "bare.safetensors"
    save_packed(q, bare)
    with pytest.raises(ValueError, match="carries no tokenizer"):
        standalone.load(bare).classify(texts)


def test_language_model_logits_and_generation(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from binlab.nn.generate import greedy

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(46)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    torch.manual_seed(0)
    lm = build(ModelConfig(vocab_size=50, max_len=16, d_model=32, n_heads=2, d_ff=64, n_layers=2, task="lm")).eval()
    quantize_(lm, QuantSpec((Rule("attention", MethodConfig("xnor", act="sign")), Rule("ffn", MethodConfig("rtn", options={"bits": 3, "group": 16})),
                             Rule("head", MethodConfig("bucket")))))
    save_packed(lm, tmp_path / "lm.safetensors", tokenizer=tok)
    packed, lite = load_packed(tmp_path / "lm.safetensors"), standalone.load(tmp_path / "lm.safetensors")
    ids = torch.randint(4, 50, (3, 12))
    ids[1, 9:] = 0  # padding after the text
    with torch.no_grad():
        a = packed(ids).numpy()
    b = lite.logits(ids.numpy())
    real = (ids != 0).numpy()
    assert _rel(b[real], a[real]) <= 1e-5
    assert lite.generate("w5 w7 w9", 8)["ids"] == greedy(packed, tok, "w5 w7 w9", 8)["ids"]
    with pytest.raises(ValueError, match="language model"):
        lite.classify(["w1"])
    from binlab.cli import main

    assert main(["generate", "--model", str(tmp_path / "lm.safetensors"), "--prompt", "w5 w7 w9", "--tokens", "8"]) == 0
    assert main(["classify", str(tmp_path / "lm.safetensors"), "w1"]) == 2  # a language model does not classify: a message


def test_damaged_files_are_refused(fp_tiny, tiny_splits, tmp_path):
    q = ptq(fp_tiny, SPECS["w1a1-sign"])
    path = tmp_path / "m.safetensors"
    save_packed(q, path, tokenizer=tiny_splits.tokenizer)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted"):
        standalone.load(bad)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="not a readable"):
        standalone.load(cut)
    with pytest.raises(FileNotFoundError):
        standalone.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("backend, kept_out", [("numba", ("torch",)), ("numpy", ("torch", "numba", "llvmlite")),
                                               ("aot", ("torch", "numba", "llvmlite"))])
def test_no_torch_in_the_process(backend, kept_out, fp_tiny, tiny_splits, tmp_path):
    """A prediction in a fresh interpreter imports no torch module (the Python API and the command line);
    the numpy backend and the kernels compiled ahead of time keep numba (and its llvmlite) out too, and predict
    what the numba backend does;
    the command line keeps scipy out as well (numba's start would load it: keep_scipy_out)."""
    q = ptq(fp_tiny, SPECS["w1a1-sign"])
    path = tmp_path / "m.safetensors"
    save_packed(q, path, tokenizer=tiny_splits.tokenizer)
    texts = ["Stocks rally as oil falls", "The team won the final in extra time", "New chip doubles battery life"]
    code = ("import sys, json; from binlab.runtime.standalone import load; "
            f"r = load({str(path)!r}, backend={backend!r}).classify({texts!r}); "
            f"print(json.dumps([[x['label'] for x in r], sorted(m for m in sys.modules if m.split('.')[0] in {kept_out!r})]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    labels, mods = json.loads(out.stdout.strip().splitlines()[-1])
    assert mods == [] and set(labels) <= {"World", "Sports", "Business", "Sci/Tech"}
    assert labels == [r["label"] for r in standalone.load(path, backend="numba").classify(texts)]
    cli = subprocess.run([sys.executable, "-X", "importtime", "-m", "binlab.cli", "classify", str(path), texts[0], "--backend", backend],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in cli.stderr.splitlines() if line.startswith("import time:")]
    assert "binlab.runtime.standalone" in imported and not [m for m in imported if m.split(".")[0] in kept_out]
    assert cli.stdout.split("\t")[0] == labels[0], cli.stdout
    # the command line's process loads no scipy module either (importtime also lists imports that failed, so ask sys.modules)
    run = (f"import atexit, runpy, sys; sys.argv = ['binlab', 'classify', {str(path)!r}, {texts[0]!r}, '--backend', {backend!r}]; "
           "atexit.register(lambda: print('SCIPY', sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))); "
           "runpy.run_module('binlab.cli', run_name='__main__')")
    cli = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert "SCIPY []" in cli.stdout and cli.stdout.split("\t")[0] == labels[0], (cli.stdout, cli.stderr[-2000:])


def test_an_unknown_backend_is_refused(fp_tiny, tmp_path):
    path = tmp_path / "m.safetensors"
    save_packed(ptq(fp_tiny, SPECS["w1a1-sign"]), path)
    with pytest.raises(ValueError, match="backend"):
        standalone.load(path, backend="cuda")


def test_load_leaves_the_cores_to_numpy_unless_told_otherwise(tmp_path, tiny_model):
    """numba's and OpenBLAS's pools both spin while waiting: the runtime keeps numba at one thread by
    default (bench/deploy.py measures why) and leaves numba's setting alone when asked to."""
    import numba

    from binlab.nn.quantize import QuantSpec
    from binlab.runtime.export import save_packed
    from binlab.runtime.standalone import load
    from binlab.training.qat import ptq

    path = tmp_path / "m.safetensors"
    save_packed(ptq(tiny_model, QuantSpec.simple("encoder", "xnor")), path)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        load(path, numba_threads=None, backend="numba")
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
        load(path, backend="numba")
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("backend", standalone.BACKENDS)
@pytest.mark.parametrize("spec", [
    QuantSpec((Rule("encoder", MethodConfig("xnor")), Rule("embeddings", MethodConfig("xnor")))),  # W1A32 + binary table
    QuantSpec((Rule("encoder", MethodConfig("xnor", act="sign")),)),  # W1A1: the recurrence calls the layer every step
    QuantSpec((Rule("layers.*.rnn.ih", MethodConfig("rtn", options={"bits": 3, "group": 16})), Rule("head", MethodConfig("bucket")))),
], ids=["w1a32-embeddings", "w1a1", "kbit-head"])
def test_a_packed_lstm_runs_without_torch(spec, backend, tmp_path):
    """An LSTM language model (binlab.nn.lstm) packed: the torch packed path equals fake quantization, and
    the torch-free runtime equals the torch packed path (next-token logits within 1e-5 relative on the real
    positions, the same greedy continuation)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from binlab.nn.generate import greedy

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(46)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    torch.manual_seed(0)
    lm = build(ModelConfig(vocab_size=50, max_len=16, d_model=32, n_heads=1, d_ff=32, n_layers=2, task="lm", arch="lstm")).eval()
    with torch.no_grad():  # the uniform(-0.1, 0.1) init and zero biases give near-constant logits and W1A1 sums of exactly 0,
        for prm in lm.parameters():  # whose sign the two runtimes' rounding decides: random weights and biases instead
            prm.copy_(torch.randn_like(prm) * 0.5)
    quantize_(lm, spec)
    path = tmp_path / "lstm.safetensors"
    save_packed(lm, path, tokenizer=tok)
    packed, lite = load_packed(path), standalone.load(path, backend=backend)
    ids = torch.randint(4, 50, (3, 12))
    ids[1, 9:] = 0
    real = (ids != 0).numpy()
    with torch.no_grad():
        fq, a = lm(ids).numpy(), packed(ids).numpy()
    b = lite.logits(ids.numpy())
    assert _rel(a[real], fq[real]) <= 1e-5 and _rel(b[real], a[real]) <= 1e-5, (_rel(a[real], fq[real]), _rel(b[real], a[real]))
    assert np.abs(a[real]).max() > 1  # the logits vary: a wrong gate order or a missing bias would show
    assert lite.generate("w5 w7 w9", 8)["ids"] == greedy(packed, tok, "w5 w7 w9", 8)["ids"]


@pytest.mark.parametrize("name", ["w1a1-sign", "w1a32-xnor", "bibert", "binary01-absmax8", "bit-elastic"])
def test_a_batch_runs_in_chunks_of_max_tokens_with_the_same_logits(name, fp_tiny, calib, tiny_splits, tmp_path):
    """Model.logits bounds its working memory by running a large batch in chunks of rows: each row's logits
    equal the whole batch's in one pass, in the same order; BiT's unsigned k-bit attention quantizer takes the
    minimum of the whole tensor, so that model keeps its batches whole (as the torch packed path does)."""
    q = ptq(fp_tiny, SPECS[name], calib=calib)
    packed, lite = _export(q, tmp_path / "m.safetensors", tiny_splits.tokenizer, tiny_splits.test)
    x, _ = next(tiny_splits.test.padded(48))
    assert x.shape[0] == 48 and len(set((x != 0).sum(1))) > 3
    lite.max_tokens = 10**9
    whole = lite.logits(x)
    lite.max_tokens = 5 * x.shape[1]  # five rows a pass: ten passes
    calls = []
    run = lite._logits
    lite._logits = lambda ids: calls.append(len(ids)) or run(ids)
    chunked = lite.logits(x)
    assert lite.rows_independent == (name != "bit-elastic")
    assert calls == ([5] * 9 + [3] if lite.rows_independent else [48])
    assert chunked.shape == whole.shape and _rel(chunked, whole) <= 1e-6, _rel(chunked, whole)


@pytest.mark.parametrize("backend", ["numba", "aot", "numpy"])
def test_passes_are_short_on_the_xnor_path_and_long_where_tiles_are_decoded(backend, fp_tiny, calib, tiny_splits, tmp_path):
    """A classifier whose packed linears all run XNOR-popcount takes the backend's pass length (MAX_TOKENS: short
    passes keep the kernels' activations in cache); one with a linear that decodes tiles (W1A32 here) runs long
    passes, since every pass decodes those tiles again."""
    got = {}
    for name in ("w1a1-sign", "w1a32-xnor"):
        _, lite = _export(ptq(fp_tiny, SPECS[name], calib=calib), tmp_path / f"{name}.safetensors", tiny_splits.tokenizer,
                          tiny_splits.test, backend)
        got[name] = (lite.max_tokens, sorted({lin.path for lin in lite.linears.values()}))
    assert got["w1a1-sign"][0] == standalone.MAX_TOKENS[(backend, "classify")]
    if backend == "numpy":  # every packed matrix decoded once at load: no tiles
        assert got["w1a32-xnor"] == (standalone.MAX_TOKENS[("numpy", "classify")], ["decoded"])
    else:
        assert got["w1a1-sign"][1] == ["xnor"] and got["w1a32-xnor"] == (standalone.TILE_MAX_TOKENS, ["lut/tiles"])
