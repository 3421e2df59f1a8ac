"""Packed export: every method's file gives the fake-quant model's predictions back, is the size
model_size predicts, holds no latent weights, and a damaged file is refused; codecs and the fused
kernels against independent numpy references."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from binlab.methods import BINARIZERS
from binlab.nn.model import ModelConfig, build
from binlab.nn.quantize import MethodConfig, QuantLinear, QuantSpec, Rule, quantize_
from binlab.runtime.codecs import NOT_PACKABLE, BinaryCodec, GridCodec, NotPackable, pack_uint, unpack_uint
from binlab.runtime.export import check_size, load_packed, read_packed, save_packed
from binlab.runtime.kernels import pack_bits, w1a1_linear
from binlab.runtime.packed import PackedEmbedding, PackedLinear
from binlab.runtime.size import model_size
from binlab.training.qat import ptq
from binlab.training.train import predict

PACKABLE = [m for m in BINARIZERS if m not in NOT_PACKABLE]


def _target(method):
    # calibrated methods need a linear's inputs: they cannot take the embeddings
    return "all-except-head" if not BINARIZERS[method]().needs_calibration else "encoder"


def _round_trip(model, path, test):
    info = save_packed(model, path)
    packed = load_packed(path)
    a, ya = predict(model, test)
    b, yb = predict(packed, test)
    assert np.array_equal(ya, yb)
    return info, packed, a, b


@pytest.mark.parametrize("method", PACKABLE)
def test_round_trip_every_packable_method(method, fp_tiny, calib, tiny_splits, tmp_path):
    q = ptq(fp_tiny, QuantSpec.simple(_target(method), method), calib=calib)
    info, packed, a, b = _round_trip(q, tmp_path / "m.safetensors", tiny_splits.test)
    np.testing.assert_array_equal(a.argmax(1), b.argmax(1))
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()  # W1A32: the same function up to float32 summation order
    # the file is model_size's total plus its header; the packed model's own count agrees with the fake-quant's
    assert check_size(info), info
    assert abs(model_size(packed).total_bits - model_size(q).total_bits) <= 40 * len(q.layers) * 6 + 64
    # no latent weight survives: quantized components are packed modules holding no float weight matrix
    names = [n for n, m in q.named_modules() if isinstance(m, QuantLinear)]
    for n in names:
        mod = packed.get_submodule(n)
        assert isinstance(mod, PackedLinear)
        assert not any(p.ndim == 2 for p in mod.parameters())


def test_w1a1_round_trip_uses_xnor(fp_tiny, tiny_splits, tmp_path):
    q = ptq(fp_tiny, QuantSpec.simple("encoder", "xnor", act="sign"))
    info, packed, a, b = _round_trip(q, tmp_path / "w1a1.safetensors", tiny_splits.test)
    assert all(m.xnor for m in packed.modules() if isinstance(m, PackedLinear))
    # exact integer dot products; only the float epilogue's order differs, so a sign can flip only at a tie
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.99
    assert check_size(info)


def test_embeddings_and_elastic_w1a1_attention_round_trip(fp_tiny, tiny_splits, tmp_path):
    spec = QuantSpec((Rule("encoder", MethodConfig("bitnet", act="elastic")), Rule("embed.token", MethodConfig("xnor"))),
                     attn_probs="bibert", attn_qkv="sign_unscaled")
    q = ptq(fp_tiny, spec)
    with torch.no_grad():
        q(next(iter(tiny_splits.test.batches(8)))[0])  # the elastic activations take their scale from a first batch
    _, packed, a, b = _round_trip(q, tmp_path / "bit.safetensors", tiny_splits.test)
    assert isinstance(packed.embed.token, PackedEmbedding)
    assert packed.layers[0].attn.prob_quantizer.name == "bibert"
    # the packed layers compute exact integer dot products, the fake-quantized ones float sums, so an elastic
    # sign(x + shift) whose input lies within float rounding of 0 can flip; rows without such a tie agree to 1e-4
    close = np.all(np.abs(b - a) <= 1e-4 * np.abs(a).max(), axis=1)
    assert close.mean() >= 0.99 and (a.argmax(1) == b.argmax(1)).mean() >= 0.99, (close.mean(), np.abs(b - a).max())


def test_bireal_shortcut_and_causal_lm_round_trip(tmp_path):
    torch.manual_seed(0)
    lm = build(ModelConfig(vocab_size=50, max_len=16, d_model=32, n_heads=2, d_ff=64, n_layers=2, task="lm")).eval()
    quantize_(lm, QuantSpec((Rule("attention", MethodConfig("bireal", options={"shortcut": True})),
                             Rule("ffn", MethodConfig("rtn", options={"bits": 3, "group": 16})),
                             Rule("head", MethodConfig("bucket")))))
    save_packed(lm, tmp_path / "lm.safetensors")
    packed = load_packed(tmp_path / "lm.safetensors")
    ids = torch.randint(1, 50, (3, 12))
    with torch.no_grad():
        np.testing.assert_allclose(packed(ids).numpy(), lm(ids).numpy(), rtol=0, atol=1e-4)
    assert packed.layers[0].attn.q.shortcut


def test_every_method_packs_and_an_unpackable_one_would_say_why(fp_tiny, calib, tmp_path, monkeypatch):
    """No registered method is left without a packed layout; a method listed in NOT_PACKABLE is refused
    naming the component and the reason, and nothing is written."""
    assert NOT_PACKABLE == {}
    monkeypatch.setitem(NOT_PACKABLE, "xnor", "a reason stated in its card")
    q = ptq(fp_tiny, QuantSpec.simple("layers.0.attn.q", "xnor"), calib=calib)
    with pytest.raises(NotPackable, match="layers.0.attn.q.*xnor.*a reason stated"):
        save_packed(q, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_damaged_files_are_refused(fp_tiny, tmp_path):
    q = ptq(fp_tiny, QuantSpec.simple("encoder", "xnor"))
    path = tmp_path / "m.safetensors"
    save_packed(q, path)
    raw = path.read_bytes()
    with pytest.raises(FileNotFoundError, match="binlab export"):
        load_packed(tmp_path / "missing.safetensors")
    for name, data in {"truncated": raw[: len(raw) // 2], "empty": b"", "garbage": b"not a model at all" * 10}.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(data)
        with pytest.raises(ValueError, match="not a readable packed model|corrupted"):
            load_packed(bad)
    flipped = bytearray(raw)
    flipped[-5] ^= 0x10  # a bit in the last tensor's data
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupted"):
        load_packed(bad)
    from safetensors.numpy import save_file

    meta, tensors = read_packed(path)
    save_file(tensors, str(tmp_path / "other.safetensors"), metadata={**meta, "format": "something-else/9"})
    with pytest.raises(ValueError, match="not a binlab packed model"):
        load_packed(tmp_path / "other.safetensors")
    from binlab.runtime.fileformat import digest as _digest

    def resigned(name, **changes):  # a header edited, with its checksum recomputed: what the loader itself must catch
        m = {**meta, **changes}
        m["sha256"] = _digest(tensors, m)
        save_file(tensors, str(tmp_path / name), metadata=m)
        return tmp_path / name

    comps = json.loads(meta["components"])
    edited = {**meta, "components": json.dumps({**comps, "layers.0.attn.q": {**comps["layers.0.attn.q"], "act": "sign"}})}
    save_file(tensors, str(tmp_path / "act.safetensors"), metadata=edited)  # an edited header, the old checksum
    with pytest.raises(ValueError, match="corrupted"):
        load_packed(tmp_path / "act.safetensors")
    shape = dict(comps["layers.0.attn.q"], shape=[7, 7])
    with pytest.raises(ValueError, match="layers.0.attn.q"):
        load_packed(resigned("shape.safetensors", components=json.dumps({**comps, "layers.0.attn.q": shape})))
    kind = dict(comps["layers.0.attn.q"], kind="embedding")
    with pytest.raises(ValueError, match="layers.0.attn.q"):
        load_packed(resigned("kind.safetensors", components=json.dumps({**comps, "layers.0.attn.q": kind})))
    with pytest.raises(ValueError, match="header"):
        load_packed(resigned("list.safetensors", components=json.dumps([1, 2])))
    half = {k: (v.astype(np.float16) if k == "embed.norm.bias" else v) for k, v in tensors.items()}
    m = dict(meta)
    m["sha256"] = _digest(half, m)
    save_file(half, str(tmp_path / "dtype.safetensors"), metadata=m)
    with pytest.raises(ValueError, match="wrong type"):
        load_packed(tmp_path / "dtype.safetensors")


# ---------------------------------------------------------------------------------------------
# codecs against references built independently from their definitions


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(1, 8), n=st.integers(0, 300), seed=st.integers(0, 2**31 - 1))
def test_pack_uint_round_trip(bits, n, seed):
    v = np.random.default_rng(seed).integers(0, 2**bits, n)
    s = pack_uint(v, bits)
    assert s.size == -(-n * bits // 8)
    np.testing.assert_array_equal(unpack_uint(s, bits, n), v)


@settings(max_examples=25, deadline=None)
@given(bits=st.integers(2, 8), rows=st.integers(1, 6), cols=st.sampled_from([8, 32, 100]), mid=st.booleans(),
       per_row=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_grid_codec_finds_the_grid(bits, rows, cols, mid, per_row, seed):
    """Q built as step * (code + offset) from random codes: the codec's step, bits and values are the construction's."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**bits, (rows, cols))
    every = cols >= 2**bits
    if every:
        codes[:, : 2**bits] = np.arange(2**bits)  # every level occurs in every row: the grid is determined
    else:
        codes[:, 0], codes[:, 1] = 0, 2**bits - 1  # the full range occurs; a coarser grid may fit the values present
    step = (rng.uniform(0.001, 0.1, (rows, 1)) if per_row else np.full((rows, 1), rng.uniform(0.001, 0.1))).astype(np.float32)
    offset = -(2 ** (bits - 1)) + (0.5 if mid else 0.0)
    q = (step * (codes + offset)).astype(np.float32)
    c = GridCodec.detect(q, [0, cols])
    assert c is not None and (c.meta["bits"] == bits if every else c.meta["bits"] <= bits)
    np.testing.assert_allclose(c.dense(), q, rtol=1e-6, atol=1e-7 * np.abs(q).max())
    assert c.bits()["codes"] == c.meta["bits"] * rows * cols


def test_grid_codec_rejects_non_grids():
    q = np.array([[0.0, 1.0, np.sqrt(2.0), np.pi]], np.float32)
    assert GridCodec.detect(q, [0, 4]) is None
    assert BinaryCodec.detect(q) is None


def test_binary_codec_levels():
    q = np.array([[0.5, -0.5, 0.5], [-2.0, 2.0, 2.0]], np.float32)
    c = BinaryCodec.detect(q)
    assert c.meta["symmetric"] and c.bits() == {"codes": 6, "scales": 64}
    np.testing.assert_array_equal(c.dense(), q)
    q2 = np.array([[0.1, 0.3, 0.1], [0.1, 0.3, 0.3]], np.float32)  # bucket-style levels shared by the rows
    c2 = BinaryCodec.detect(q2)
    assert not c2.meta["symmetric"] and c2.bits() == {"codes": 6, "scales": 64}
    np.testing.assert_array_equal(c2.dense(), q2)


@settings(max_examples=30, deadline=None)
@given(M=st.integers(1, 9), N=st.integers(1, 9), K=st.sampled_from([1, 7, 64, 65, 130]), seed=st.integers(0, 2**31 - 1))
def test_w1a1_linear_matches_float64(M, N, K, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(M, K)).astype(np.float32)
    x[rng.random((M, K)) < 0.1] = 0.0  # sign(0) = +1
    b = rng.random((N, K)) < 0.5
    lo, hi = rng.normal(size=N).astype(np.float32), rng.normal(size=N).astype(np.float32)
    bias = rng.normal(size=N).astype(np.float32)
    w = np.where(b, hi[:, None], lo[:, None]).astype(np.float64)
    xs = np.maximum(np.abs(x).astype(np.float64).mean(1, keepdims=True), 1e-8) * np.where(x >= 0, 1.0, -1.0)
    ref = xs @ w.T + bias
    got = w1a1_linear(x, np.ascontiguousarray(pack_bits(np.where(b, 1.0, -1.0)).T), lo, hi, bias, K)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("act", ["sign", "sign_unscaled", "elastic"])
def test_xnor_path_takes_every_signed_binary_input(act, fp_tiny, tiny_splits, tmp_path):
    """binlab's scaled sign, BiBERT's unscaled sign and BiT's elastic sign (learned alpha and shift) all
    run through the XNOR kernel, with the fake-quant model's outputs."""
    q = ptq(fp_tiny, QuantSpec.simple("encoder", "bitnet", act=act))
    with torch.no_grad():
        q(next(iter(tiny_splits.test.batches(8)))[0])  # the elastic activation sets its alpha on a first batch
        for m in q.modules():
            if getattr(m, "move", None) is not None:
                m.move.normal_(0, 0.05)  # a learned shift, as after BiT's training
    info, packed, a, b = _round_trip(q, tmp_path / f"{act}.safetensors", tiny_splits.test)
    assert all(m.xnor for m in packed.modules() if isinstance(m, PackedLinear))
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.99
    x = torch.randn(3, 5, 32)
    lin = packed.layers[0].ffn.up
    with torch.no_grad():
        ref = q.layers[0].ffn.up(x)
        np.testing.assert_allclose(lin(x).numpy(), ref.numpy(), rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_every_bert_era_recipe_packs(fp_tiny, tiny_splits, tmp_path):
    """T9's note says every recipe's model writes to a packed file that gives the same predictions."""
    from binlab.training.recipes import RECIPES

    for name, recipe in RECIPES.items():
        q = ptq(fp_tiny, recipe.stages[-1].spec)
        with torch.no_grad():
            q(next(iter(tiny_splits.test.batches(8)))[0])  # learned activation scales start from a first batch
        _, packed, a, b = _round_trip(q, tmp_path / f"{name}.safetensors", tiny_splits.test)
        assert (a.argmax(1) == b.argmax(1)).mean() >= 0.99, name



@pytest.mark.parametrize("table, preset", [("T8", "tiny-lm"), ("T10", "tiny-lm"), ("T10", "tiny-lstm")])
def test_every_row_of_the_language_model_tables_packs(table, preset, fixture_data, tmp_path):
    """Every quantized row of T8 (the LLM-era methods) and T10 (the LSTM era), binarized as its spec says on a
    small causal transformer LM (and T10's on a small LSTM LM), writes to a packed file whose next-token logits
    equal the fake-quantized model's, in torch and in the torch-free runtime: the tables' rows all run through
    the packed path."""
    from binlab.experiments.catalog import EXPERIMENTS
    from binlab.presets import build_model, get_preset, load_data
    from binlab.runtime import standalone
    from binlab.training.calibration import calibration_set

    p = get_preset(preset)
    splits = load_data(p, source=str(fixture_data), val_size=40, test_size=20)
    model, calib = build_model(p, splits, seed=0).eval(), calibration_set(splits, 16)
    ids = torch.from_numpy(next(splits.test.padded(8))[0]).long()
    specs = {c.spec.to_json(): c.label for c in EXPERIMENTS[table].configs if c.spec.rules}
    assert len(specs) >= (10 if table == "T8" else 4)
    for i, (spec_json, label) in enumerate(specs.items()):
        q = ptq(model, QuantSpec.from_json(spec_json), calib=calib).eval()
        with torch.no_grad():
            q(ids)  # learned activation scales start from a first batch
            path = tmp_path / f"{i}.safetensors"
            save_packed(q, path, tokenizer=splits.tokenizer)
            want = q(ids).numpy()
            got = load_packed(path)(ids).numpy()
        lite = standalone.load(path).logits(ids.numpy())
        scale = np.abs(want).max()
        assert np.abs(got - want).max() <= 2e-3 * scale, label
        assert np.abs(lite - want).max() <= 2e-3 * scale, label
        assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.99, label


def test_codecs_hold_each_row_to_its_own_scale():
    """A row of tiny weights beside large ones: a shared coarse grid would round it to zero; the codec must not."""
    q = np.array([[1.0, -1.0, 0.0, 1.0], [1e-6, -1e-6, 0.0, 1e-6]], np.float32)
    c = GridCodec.detect(q, [0, 4])
    assert c is not None
    np.testing.assert_allclose(c.dense(), q, rtol=1e-5, atol=0)


def test_two_levels_shared_by_the_tensor_are_stored_once():
    q = np.array([[-1.0, 2.0, 2.0, -1.0], [2.0, 2.0, 2.0, 2.0]], np.float32)  # one row holds only one of the levels
    c = BinaryCodec.detect(q)
    assert c.bits() == {"codes": 8, "scales": 64}
    np.testing.assert_array_equal(c.dense(), q)


def test_pbllm_file_holds_only_the_binarized_weights_signs(fp_tiny, calib, tiny_splits, tmp_path):
    """PB-LLM's packed rows hold one sign bit per *binarized* weight (the salient ones have their
    8-bit codes instead), so the file's sign plane has N K - nnz bits and the codec counts exactly that."""
    from safetensors.numpy import load_file

    from binlab.runtime.export import SEP

    q = ptq(fp_tiny, QuantSpec.simple("encoder", "pbllm"), calib=calib)
    _round_trip(q, tmp_path / "m.safetensors", tiny_splits.test)
    t = load_file(str(tmp_path / "m.safetensors"))
    name = "layers.0.ffn.up"
    N, K = q.get_submodule(name).weight.shape
    nnz = len(t[f"{name}{SEP}codes"])
    assert 0 < nnz < N * K
    assert t[f"{name}{SEP}signs"].size == -(-(N * K - nnz) // 8)
    assert f"{name}{SEP}words" not in t
    packed = load_packed(tmp_path / "m.safetensors")
    assert packed.get_submodule(name).storage()["codes"] == (N * K - nnz) + 8 * nnz


def test_billm_blocks_codec_holds_what_billm_counts():
    """BiLLM's layout packed block by block: the decoded weight is the quantized one, the codec's bits are
    BiLLM's storage() count exactly, and an altered layout is refused."""
    from binlab.nn.quantize import MethodConfig, QuantLinear
    from binlab.runtime.encoders import encode
    from binlab.runtime.layouts import BlocksCodec

    rng = np.random.default_rng(3)
    W = rng.laplace(size=(24, 80)) * 0.05
    X = rng.normal(size=(80, 400)) * rng.uniform(0.2, 2, size=(80, 1))
    lin = torch.nn.Linear(80, 24, bias=False)
    lin.weight.data = torch.from_numpy(W).float()
    mod = QuantLinear.from_linear(lin, MethodConfig("billm", options={"blocksize": 32}))
    mod.quantizer.calibrate(torch.from_numpy(2 * X @ X.T / 400))
    codec = encode(mod)
    assert isinstance(codec, BlocksCodec) and codec.meta["blocks"] == [32, 32, 16]
    np.testing.assert_allclose(codec.dense(), mod.quantized_weight().detach().numpy(), rtol=1e-5, atol=1e-7)
    assert codec.bits() == mod.quantizer.storage((24, 80))
    with pytest.raises(ValueError, match="blocks"):
        BlocksCodec((24, 80), {"blocks": [32, 32, 17]}, codec.t)
    with pytest.raises(ValueError, match="scales"):
        BlocksCodec((24, 80), codec.meta, codec.t | {"scales": codec.t["scales"][:2]})


@pytest.mark.parametrize("n, m, cols", [(4, 8, 80), (6, 8, 70), (2, 4, 64), (3, 5, 52)])
def test_stbllm_nm_codec_holds_what_stbllm_counts(n, m, cols):
    """STBLLM's layout packed: the N:M positions as combination indices, the kept weights' signs, the
    three groups five to a byte; decoded it is the quantized weight, its bits are STBLLM's storage()."""
    from binlab.nn.quantize import MethodConfig, QuantLinear
    from binlab.runtime.encoders import encode
    from binlab.runtime.layouts import NMBlocksCodec, comb_rank, comb_unrank

    rng = np.random.default_rng(n + m + cols)
    W = rng.laplace(size=(20, cols)) * 0.05
    X = rng.normal(size=(cols, 300)) * rng.uniform(0.2, 2, size=(cols, 1))
    lin = torch.nn.Linear(cols, 20, bias=False)
    lin.weight.data = torch.from_numpy(W).float()
    mod = QuantLinear.from_linear(lin, MethodConfig("stbllm", options={"n": n, "m": m, "blocksize": 32}))
    mod.quantizer.calibrate(torch.from_numpy(2 * X @ X.T / 300))
    codec = encode(mod)
    assert isinstance(codec, NMBlocksCodec)
    np.testing.assert_allclose(codec.dense(), mod.quantized_weight().detach().numpy(), rtol=1e-5, atol=1e-7)
    assert codec.bits() == mod.quantizer.storage((20, cols))
    masks = rng.permuted(np.tile(np.arange(8) < 3, (50, 1)), axis=1)
    assert (comb_unrank(comb_rank(masks), 8, 3) == masks).all()
    assert sorted(comb_rank(np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1) if a + b + c == 2], bool))) == [0, 1, 2]


@pytest.mark.parametrize("variant", ["arb", "x", "rc"])
def test_arb_codec_holds_what_arb_counts(variant):
    """ARB-LLM's layout packed (the column-group bitmap, each group's mean and scales, or ARB-RC's row and
    column vectors): decoded it is the quantized weight; its bits are ARB's storage() count."""
    from binlab.nn.quantize import MethodConfig, QuantLinear
    from binlab.runtime.encoders import encode
    from binlab.runtime.layouts import ARBBlocksCodec

    rng = np.random.default_rng(11)
    W = rng.laplace(size=(16, 72)) * 0.05
    X = rng.normal(size=(72, 300)) * rng.uniform(0.2, 2, size=(72, 1))
    lin = torch.nn.Linear(72, 16, bias=False)
    lin.weight.data = torch.from_numpy(W).float()
    mod = QuantLinear.from_linear(lin, MethodConfig("arb", options={"variant": variant, "blocksize": 32, "iters": 5}))
    mod.quantizer.calibrate(torch.from_numpy(2 * X @ X.T / 300))
    codec = encode(mod)
    assert isinstance(codec, ARBBlocksCodec) and codec.rc == (variant == "rc")
    np.testing.assert_allclose(codec.dense(), mod.quantized_weight().detach().numpy(), rtol=1e-5, atol=1e-6)
    assert codec.bits() == mod.quantizer.storage((16, 72))


def test_ready_models_are_trained_once_then_read_from_the_cache(fp_tiny, tiny_splits):
    """The Deploy page's ready W1A1 model is QAT-trained (not the PTQ of the baseline), written once, and reused."""
    from binlab.lab.deploy import ready_packed, ready_path
    from binlab.runtime.export import ready_specs

    name = next(n for n in ready_specs() if n.startswith("W1A1"))
    events = []
    path = ready_packed("tiny", tiny_splits, fp_tiny, name, callback=events.append)
    assert path == ready_path("tiny", tiny_splits, name) and path.exists()
    assert any(e.get("kind") == "step" for e in events)  # it trained
    stamp = path.stat().st_mtime_ns
    events.clear()
    assert ready_packed("tiny", tiny_splits, fp_tiny, name, callback=events.append) == path
    assert path.stat().st_mtime_ns == stamp and not events  # read back, not trained again
    trained, _ = predict(load_packed(path), tiny_splits.test)
    first_guess, _ = predict(ptq(fp_tiny, ready_specs()[name]), tiny_splits.test)
    assert not np.allclose(trained, first_guess)


def _binary_w1a32_layer(rng, N: int = 48, K: int = 100, M: int = 40):
    """Random ±1 weights s (N, K) with per-row levels lo < 0 < hi, their codec, and float32 inputs x (M, K)."""
    from binlab.runtime.codecs import BinaryCodec

    s = np.where(rng.normal(size=(N, K)) >= 0, 1.0, -1.0)
    hi = rng.uniform(0.1, 0.5, N).astype(np.float32)
    lo = (-hi * rng.uniform(0.5, 1.5, N)).astype(np.float32)
    codec = BinaryCodec((N, K), {}, {"words": pack_bits(s), "lo": lo, "hi": hi})
    return s, lo, hi, codec, torch.from_numpy(rng.normal(size=(M, K)).astype(np.float32))


def test_w1a32_int8_inputs_path_equals_its_arithmetic():
    """The int8 W1A32 path computes (lo + hi)/2 sum(x) + (hi - lo)/2 (x~ . s), with x~ = (g/127) round(127 x / g)
    per token and s the weights' signs (a float64 reference), and stays within the rounding of 8-bit inputs
    of exact W1A32."""
    rng = np.random.default_rng(3)
    s, lo, hi, codec, x = _binary_w1a32_layer(rng)
    bias = torch.from_numpy(rng.normal(size=len(lo)).astype(np.float32))
    exact = PackedLinear(codec, bias)(x).numpy()
    fast_layer = PackedLinear(codec, bias, inputs="int8")
    fast = fast_layer(x).numpy()
    assert "path=int8" in fast_layer.extra_repr()
    x64 = x.numpy().astype(np.float64)
    g = np.maximum(np.abs(x64).max(1, keepdims=True), 1e-8)
    xq = np.clip(np.round(x64 * 127 / g), -127, 127) * g / 127
    lo64, hi64 = lo.astype(np.float64), hi.astype(np.float64)
    ref = (lo64 + hi64)[None] / 2 * x64.sum(1, keepdims=True) + (hi64 - lo64)[None] / 2 * (xq @ s.T) + bias.numpy()
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert np.abs(fast - exact).max() <= 0.02 * np.abs(exact).max()
    assert np.abs(fast - exact).max() > 0  # it is a different (rounded) computation
    few = PackedLinear(codec, bias, inputs="int8")(x[:3]).numpy()  # few rows: the exact lookup-table path
    np.testing.assert_allclose(few, exact[:3], rtol=1e-5, atol=1e-5)


def _round_bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> the nearest bfloat16 (ties to even), as float64: the top 16 bits of the float32 pattern after
    adding half of the dropped part's range (IEEE round to nearest even on the bit pattern)."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return r.view(np.float32).astype(np.float64)


def test_w1a32_bf16_inputs_path_equals_its_arithmetic():
    """The bf16 W1A32 path computes (lo + hi)/2 sum(x) + (hi - lo)/2 bf16(bf16(x) . s): inputs and the product
    rounded to bfloat16 (a float64 reference with its own rounding of the bit patterns), within that rounding of
    exact W1A32; an unknown input mode is refused."""
    s, lo, hi, codec, x = _binary_w1a32_layer(np.random.default_rng(4))
    exact = PackedLinear(codec, None)(x).numpy()
    layer = PackedLinear(codec, None, inputs="bf16")
    fast = layer(x).numpy()
    assert "path=bf16" in layer.extra_repr()
    x64 = x.numpy().astype(np.float64)
    p = _round_bf16((_round_bf16(x.numpy()) @ s.T).astype(np.float32))
    lo64, hi64 = lo.astype(np.float64), hi.astype(np.float64)
    ref = (lo64 + hi64)[None] / 2 * x64.sum(1, keepdims=True) + (hi64 - lo64)[None] / 2 * p
    # the float32 sums before the product's rounding may differ in their last bit between torch's GEMM and numpy,
    # which can move a rare product by one bfloat16 step (8 significant bits): allow that, and nothing more
    err, tight = np.abs(fast - ref), 1e-5 * np.abs(ref).max()
    assert (err <= (hi64 - lo64)[None] / 2 * np.abs(p) * 2.0 ** -7 + tight).all()
    assert (err > tight).mean() <= 0.02
    assert 0 < np.abs(fast - exact).max() <= 0.01 * np.abs(exact).max()
    assert _round_bf16(np.array([1 + 2 ** -8], np.float32))[0] == 1.0  # a tie goes to the even neighbour
    with pytest.raises(ValueError, match="inputs must be one of"):
        PackedLinear(codec, None, inputs="fp8")


def test_binarymos_packs_its_token_adaptive_layer(tmp_path):
    """BinaryMoS's experts and router travel in the file, and both runtimes mix the scales per token:
    with experts made different (as training makes them), packed logits equal the fake-quantized ones."""
    from binlab.runtime import standalone

    torch.manual_seed(0)
    m = build(ModelConfig(vocab_size=60, max_len=16, d_model=16, n_heads=2, d_ff=32, n_layers=1, dropout=0.0)).eval()
    quantize_(m, QuantSpec.simple("encoder", "binarymos"))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, QuantLinear):
                mod.qparams.s_in.mul_(1 + 0.5 * torch.rand_like(mod.qparams.s_in))
                mod.qparams.s_out.mul_(1 + 0.5 * torch.rand_like(mod.qparams.s_out))
                mod.qparams.router.weight.mul_(5.0)
    save_packed(m, tmp_path / "mos.safetensors")
    packed, lite = load_packed(tmp_path / "mos.safetensors"), standalone.load(tmp_path / "mos.safetensors")
    ids = torch.randint(1, 60, (4, 12))
    with torch.no_grad():
        a, b = m(ids).numpy(), packed(ids).numpy()
    c = lite.logits(ids.numpy())
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.abs(a).max())
    np.testing.assert_allclose(c, a, rtol=0, atol=1e-5 * np.abs(a).max())
    assert packed.layers[0].attn.q.codec.kind == "mos"
    layer = packed.layers[0].ffn.up  # a runtime with one fixed layer (the averaged experts) would not match
    x = torch.randn(5, 16)
    fixed = x @ torch.from_numpy(layer.codec.rows(slice(None))).T + layer.bias
    assert not torch.allclose(layer(x), fixed, atol=1e-4)
