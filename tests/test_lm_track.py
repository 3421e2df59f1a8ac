"""The language-model track: the causal LM, perplexity, the bigram floor, calibration, and the
calibrated PTQ methods (RTN, GPTQ, PB-LLM, BiLLM) against references written from the papers'
equations in numpy float64."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from binlab.methods import BINARIZERS

# ------------------------------------------------------------------------------------------------
# independent references (numpy, float64)


def np_minmax(w, bits):
    maxq = 2**bits - 1
    lo = np.minimum(w.min(1, keepdims=True), 0)
    hi = np.maximum(w.max(1, keepdims=True), 0)
    dead = (lo == 0) & (hi == 0)
    lo, hi = np.where(dead, -1, lo), np.where(dead, 1, hi)
    s = (hi - lo) / maxq
    z = np.round(-lo / s)
    return s, z


def np_quant(w, s, z, bits):
    return s * (np.clip(np.round(w / s) + z, 0, 2**bits - 1) - z)


def np_damped(W, H, damp=0.01):
    W, H = W.copy(), H.copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * np.mean(np.diag(H)) * np.eye(len(H))
    return W, H


def obs_reference(W, H, quant_col):
    """Optimal Brain Surgeon one column at a time, with explicit inverses (GPTQ eq. 2-3):
    quantize column j, then w_F -= (w_j - q_j) / [H_F^-1]_jj [H_F^-1]_{j,F} with F = {j, ..., n-1}."""
    W = W.copy()
    Q = np.zeros_like(W)
    n = W.shape[1]
    for j in range(n):
        Hf_inv = np.linalg.inv(H[j:, j:])
        q = quant_col(j, W[:, j])
        e = (W[:, j] - q) / Hf_inv[0, 0]
        W[:, j:] -= np.outer(e, Hf_inv[0, :])
        Q[:, j] = q
    return Q


def hf_inv_diag(H):
    """[H_F^-1]_jj for F = {j, ..., n-1} (what the Cholesky factor's diagonal squares to)."""
    return np.array([np.linalg.inv(H[j:, j:])[0, 0] for j in range(len(H))])


def layer(rows=6, cols=20, n=200, seed=0, dead=()):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(rows, cols)) * 0.05
    X = rng.normal(size=(cols, n)) * rng.uniform(0.2, 2.0, size=(cols, 1))  # unequal input scales
    X[1] += 0.8 * X[0]  # correlated inputs: compensation matters
    for d in dead:
        X[d] = 0
    H = 2 * X @ X.T / n
    return W, X, H


# ------------------------------------------------------------------------------------------------
# RTN and GPTQ


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_rtn_matches_the_minmax_grid(bits):
    W, _, _ = layer()
    s, z = np_minmax(W, bits)
    got = BINARIZERS["rtn"](bits=bits).quantize(torch.from_numpy(W)).numpy()
    np.testing.assert_allclose(got, np_quant(W, s, z, bits), atol=1e-12)
    assert all(len(np.unique(row)) <= 2**bits for row in got)


@pytest.mark.parametrize("bits,blocksize,dead", [(2, 128, ()), (3, 5, ()), (2, 7, (3,))])
def test_gptq_equals_obs_with_explicit_inverses(bits, blocksize, dead):
    W, X, H = layer(dead=dead)
    s, z = np_minmax(W, bits)  # the grid is fitted on the original rows
    Wd, Hd = np_damped(W, H)
    ref = obs_reference(Wd, Hd, lambda j, w: np_quant(w[:, None], s, z, bits)[:, 0])
    q = BINARIZERS["gptq"](bits=bits, blocksize=blocksize)
    q.calibrate(torch.from_numpy(H))
    got = q.quantize(torch.from_numpy(W)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-9)
    # and it pays: the layer's output error is below round-to-nearest's
    rtn = np_quant(W, s, z, bits)
    assert np.linalg.norm((W - got) @ X) < np.linalg.norm((W - rtn) @ X)


def test_gptq_act_order_is_obs_in_permuted_order():
    W, _, H = layer(seed=3)
    s, z = np_minmax(W, 2)
    perm = np.argsort(-np.diag(H), kind="stable")
    Wd, Hd = np_damped(W[:, perm], H[perm][:, perm])
    ref = obs_reference(Wd, Hd, lambda j, w: np_quant(w[:, None], s, z, 2)[:, 0])[:, np.argsort(perm)]
    q = BINARIZERS["gptq"](bits=2, act_order=True)
    q.calibrate(torch.from_numpy(H))
    np.testing.assert_allclose(q.quantize(torch.from_numpy(W)).numpy(), ref, atol=1e-9)


def test_gptq_without_calibration_says_what_to_do():
    with pytest.raises(ValueError, match="calibration"):
        BINARIZERS["gptq"]().quantize(torch.randn(4, 8))


# ------------------------------------------------------------------------------------------------
# PB-LLM


def test_pbllm_round_to_nearest_matches_reference():
    W, _, _ = layer(rows=8, cols=30)
    k = int(round(0.1 * W.size))
    thr = np.sort(np.abs(W).ravel())[-k]
    sal = np.abs(W) >= thr
    s, z = np_minmax(W, 8)
    alpha = np.array([np.abs(W[r][~sal[r]]).mean() for r in range(len(W))])[:, None]
    ref = np.where(sal, np_quant(W, s, z, 8), alpha * np.where(W >= 0, 1, -1))
    got = BINARIZERS["pbllm"](metric="magnitude", gptq=False).quantize(torch.from_numpy(W)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert sal.sum() == k


def test_pb_gptq_matches_obs_reference_with_hessian_salience():
    W, X, H = layer(rows=8, cols=24, seed=5)
    Wd, Hd = np_damped(W, H)
    score = Wd**2 / hf_inv_diag(Hd)[None, :]  # w^2 / U_jj^2 with U_jj^2 = [H_F^-1]_jj
    k = int(round(0.1 * W.size))
    sal = np.zeros(W.size, bool)
    sal[np.argsort(-score.ravel(), kind="stable")[:k]] = True
    sal = sal.reshape(W.shape)
    s, z = np_minmax(W, 8)
    alpha = np.array([np.abs(Wd[r][~sal[r]]).mean() for r in range(len(W))])

    def col(j, w):
        return np.where(sal[:, j], np_quant(w[:, None], s, z, 8)[:, 0], alpha * np.where(w >= 0, 1, -1))

    ref = obs_reference(Wd, Hd, col)
    q = BINARIZERS["pbllm"]()
    q.calibrate(torch.from_numpy(H))
    got = q.quantize(torch.from_numpy(W)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-9)
    plain = BINARIZERS["pbllm"](metric="hessian", gptq=False)
    plain.calibrate(torch.from_numpy(H))
    assert np.linalg.norm((W - got) @ X) < np.linalg.norm((W - plain.quantize(torch.from_numpy(W)).numpy()) @ X)


def test_pbllm_storage_by_hand():
    rows, cols = 64, 256
    n, k = rows * cols, round(0.1 * rows * cols)
    csr = k * 8 + (rows + 1) * 32  # 8-bit column index (256 columns) + row pointers
    want = (n - k) + 8 * k + min(n, csr) + 2 * rows * 32 + rows * 8
    assert sum(BINARIZERS["pbllm"]().storage((rows, cols)).values()) == want


@pytest.mark.parametrize("skew", [0.0, 0.8])
def test_pbllm_qat_equals_the_reference_code(skew):
    """PB-LLM's QAT layer against a port of its code (tests/reference/pbllm_ref.py): the two signed
    tails as the frozen mask, one alpha per matrix over the binarized weights, the identity
    estimator's gradient times alpha (0 on the frozen weights); on skewed weights the signed tails
    differ from the top |w|."""
    from tests.reference import pbllm_ref

    g = torch.Generator().manual_seed(0)
    w = (torch.randn(8, 40, generator=g, dtype=torch.float64) + skew).requires_grad_()
    up = torch.randn(8, 40, generator=g, dtype=torch.float64)
    q = BINARIZERS["pbllm"](metric="magnitude", gptq=False)
    out = q.train_forward(w, "identity", torch.full((8, 1), 3.0, dtype=torch.float64))
    (out * up).sum().backward()
    sal = pbllm_ref.qat_salient_mask(w.detach().numpy(), 0.1)
    assert (q._qat_mask.numpy() == sal).all()
    alpha = pbllm_ref.qat_binary_scale(w.detach().numpy(), sal)
    want = pbllm_ref.qat_binarize_except_salient(w.detach().numpy(), sal, alpha)
    np.testing.assert_allclose(out.detach().numpy()[~sal], want[~sal], atol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), pbllm_ref.qat_latent_grad(up.numpy(), sal, alpha), atol=1e-12)
    assert sum(q.storage((8, 40)).values()) == (320 - int(sal.sum())) + 8 * int(sal.sum()) + min(320, int(sal.sum()) * 6 + 9 * 32) + 2 * 8 * 32 + 8 * 8


# ------------------------------------------------------------------------------------------------
# BiLLM


def np_binarize_group(w, m, order):
    out = np.zeros_like(w)
    r = np.where(m, w, 0.0)
    for _ in range(order):
        cnt = np.maximum(m.sum(1, keepdims=True), 1)
        a = np.abs(r).sum(1, keepdims=True) / cnt
        b = np.where(m, a * np.where(r >= 0, 1, -1), 0.0)
        out += b
        r = np.where(m, r - b, 0.0)
    return out


def outlier_layer(rows=32, cols=256, seed=0, outliers=6):
    """Laplace weights and inputs with a few outlier channels (as LLM activations have)."""
    rng = np.random.default_rng(seed)
    W = rng.laplace(size=(rows, cols)) * 0.05
    X = rng.normal(size=(cols, 1000))
    X[rng.choice(cols, outliers, replace=False)] *= 20
    return W, 2 * X @ X.T / 1000


def test_centred_residual_matches_the_reference_code():
    from binlab.methods.billm import centred_residual
    from tests.reference.billm_ref import centred_residual as ref

    rng = np.random.default_rng(3)
    x = rng.laplace(size=(7, 30))
    m = rng.random(x.shape) > 0.4
    m[2] = False  # a row with no entries
    for order in (1, 2):
        np.testing.assert_allclose(centred_residual(torch.from_numpy(x), torch.from_numpy(m), order).numpy(),
                                   ref(x, m, order), atol=1e-12)


@pytest.mark.parametrize("seed, cols, blocksize", [(0, 256, 128), (1, 256, 128), (2, 64, 16), (3, 200, 128)])
def test_billm_equals_the_reference_procedure(seed, cols, blocksize):
    """BiLLM against an independent port of its reference code (tests/reference/billm_ref.py): the
    same salient columns and break-points (searched on the salience), the same compensation; the
    weights binarized as the paper writes it (the port's ``centred=False``)."""
    from tests.reference.billm_ref import billm as ref_billm

    W, H = outlier_layer(cols=cols, seed=seed)
    ref, stats = ref_billm(W, H, blocksize=blocksize, centred=False)
    q = BINARIZERS["billm"](blocksize=blocksize)
    q.calibrate(torch.from_numpy(H))
    np.testing.assert_allclose(q.quantize(torch.from_numpy(W)).numpy(), ref, atol=1e-9)
    assert q._salient_per_block == stats
    k = sum(s for _, s in stats)
    assert q.paper_bits() == pytest.approx(1 + k / cols)
    rows = W.shape[0]
    assert q.storage(W.shape) == {"codes": sum(rows * (c + s) for c, s in stats),
                                  "index": sum(c + rows * (c - s) for c, s in stats),
                                  "scales": 4 * rows * 32 * len(stats)}


def test_billm_keeps_few_salient_columns_when_inputs_have_outliers():
    """The salience ``w^2 / [H^-1]_jj^2`` singles out the outlier inputs' columns: the paper's
    ~8 % extra bits, not the 20-30 % a search on the weights picks."""
    W, H = outlier_layer(seed=5)
    q = BINARIZERS["billm"]()
    q.calibrate(torch.from_numpy(H))
    q.quantize(torch.from_numpy(W))
    assert q.paper_bits() < 1.10


# ------------------------------------------------------------------------------------------------
# calibration on a model


def test_calibration_hessian_equals_2xxT_over_non_padding_rows(tiny_model, tiny_splits):
    from binlab.data import PAD_ID
    from binlab.training.calibration import calibration_set, collect_hessians

    calib = calibration_set(tiny_splits, 16, seed=1)
    H = collect_hessians(tiny_model, calib, ["layers.0.attn.q"])["layers.0.attn.q"]
    xs = []
    with torch.no_grad():
        for x, _ in calib.batches(32):
            xs.append(tiny_model.embed(x)[x != PAD_ID].double())
    X = torch.cat(xs)
    torch.testing.assert_close(H, 2 * X.T @ X / len(X))


def test_calibration_rows_come_from_train_only(tiny_splits):
    from binlab.training.calibration import calibration_set

    calib = calibration_set(tiny_splits, 64, seed=3)
    rows = lambda s: {tuple(s.ids[s.offsets[i]:s.offsets[i + 1]]) for i in range(len(s))}  # noqa: E731
    assert rows(calib) <= rows(tiny_splits.train)
    assert len(calib) == 64 and calib.labels.tolist() != []
    with pytest.raises(ValueError):
        calibration_set(tiny_splits.test, 4)  # a bare split is refused: calibration draws from Splits.train


def test_sequential_calibration_sees_quantized_earlier_layers(fixture_data):
    from dataclasses import replace

    from binlab.nn.quantize import QuantSpec, quantize_
    from binlab.presets import build_model, get_preset, load_data
    from binlab.training.calibration import calibrate_, calibration_set

    p = get_preset("tiny")
    p = replace(p, model=replace(p.model, n_layers=2))
    splits = load_data(p, source=str(fixture_data), val_size=100, test_size=100)
    model = build_model(p, splits)
    calib = calibration_set(splits, 32)
    quantize_(model, QuantSpec.simple("encoder", "gptq", options={"bits": 2}))
    seq = calibrate_(model, calib, sequential=True)
    cache = {}
    fp = calibrate_(model, calib, sequential=False, cache=cache)
    assert set(cache) == {(n, "layer") for n in fp}
    torch.testing.assert_close(seq["layers.0.attn.q"], fp["layers.0.attn.q"])  # nothing before layer 0 is quantized
    assert not torch.allclose(seq["layers.1.attn.q"], fp["layers.1.attn.q"])  # layer 1 sees a 2-bit layer 0


def test_ptq_of_a_calibrated_method_without_data_is_a_clear_error(tiny_model):
    from binlab.nn.quantize import QuantSpec
    from binlab.training.qat import ptq

    with pytest.raises(ValueError, match="calibration data"):
        ptq(tiny_model, QuantSpec.simple("encoder", "billm"))
    with pytest.raises(ValueError, match="embedding"):
        from binlab.training.calibration import collect_hessians

        collect_hessians(tiny_model, None, ["embed.token"])


# ------------------------------------------------------------------------------------------------
# the causal LM


@pytest.fixture(scope="module")
def lm_splits(fixture_data):
    from binlab.presets import load_data

    return load_data("tiny-lm", source=str(fixture_data))


def test_lm_is_causal_and_has_the_component_names(lm_splits):
    from binlab.nn.model import component_names
    from binlab.presets import build_model, get_preset

    m = build_model(get_preset("tiny-lm"), lm_splits).eval()
    names = component_names(m)
    assert {"embed.token", "layers.0.attn.q", "layers.0.ffn.down", "head"} <= set(names)
    x = torch.from_numpy(lm_splits.val.ids[:12].astype(np.int64))[None]
    y1 = m(x)
    x2 = x.clone()
    x2[0, 8:] = 5  # change the future
    y2 = m(x2)
    assert y1.shape == (1, 12, lm_splits.vocab_size)
    torch.testing.assert_close(y1[0, :8], y2[0, :8])  # earlier positions do not see it
    assert not torch.allclose(y1[0, 8:], y2[0, 8:])


def test_perplexity_is_exp_of_the_token_nll(lm_splits):
    from binlab.presets import build_model, get_preset
    from binlab.training.train import evaluate

    m = build_model(get_preset("tiny-lm"), lm_splits).eval()
    r = evaluate(m, lm_splits.val)
    nll, n = 0.0, 0
    with torch.no_grad():
        for i in range(len(lm_splits.val)):
            ids = torch.from_numpy(lm_splits.val.ids[lm_splits.val.offsets[i]:lm_splits.val.offsets[i + 1]].astype(np.int64))
            logp = torch.log_softmax(m(ids[None])[0].double(), -1)
            nll -= float(logp[torch.arange(len(ids) - 1), ids[1:]].sum())
            n += len(ids) - 1
    assert r.tokens == n
    assert r.perplexity == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert r.perplexity == pytest.approx(lm_splits.vocab_size, rel=0.5)  # untrained: about uniform


def test_lm_row_stores_block_sums_of_each_test_rows_nll(lm_splits):
    """A language model's table row keeps its test rows' NLL and token counts in blocks, from which the
    row's perplexity and any paired interval are recomputed; checked against a direct per-row loop."""
    from binlab.experiments.catalog import Config
    from binlab.experiments.rows import compute_row
    from binlab.experiments.stats import block_sums, unpack_floats
    from binlab.nn.quantize import QuantSpec
    from binlab.presets import build_model, get_preset
    from binlab.training.qat import QATConfig

    m = build_model(get_preset("tiny-lm"), lm_splits).eval()
    row = compute_row(Config("fp32", QuantSpec(()), "fp"), m, lm_splits, QATConfig())
    nll, units = unpack_floats(row["test_nll"]), unpack_floats(row["test_units"])
    per_row, counts = [], []
    with torch.no_grad():
        for i in range(len(lm_splits.test)):
            ids = torch.from_numpy(lm_splits.test.ids[lm_splits.test.offsets[i]:lm_splits.test.offsets[i + 1]].astype(np.int64))
            logp = torch.log_softmax(m(ids[None])[0].double(), -1)
            per_row.append(-float(logp[torch.arange(len(ids) - 1), ids[1:]].sum()))
            counts.append(len(ids) - 1)
    assert len(nll) == min(400, len(per_row))
    np.testing.assert_allclose(nll, block_sums(per_row), rtol=1e-5)
    np.testing.assert_array_equal(units, block_sums(counts))
    assert row["test_tokens"] == sum(counts)
    assert row["perplexity"] == pytest.approx(math.exp(sum(per_row) / sum(counts)), rel=1e-5)


def test_tiny_lm_trains_and_beats_its_start(lm_splits):
    from binlab.presets import build_model, get_preset
    from binlab.training.train import evaluate, train

    p = get_preset("tiny-lm")
    m = build_model(p, lm_splits)
    before = evaluate(m, lm_splits.val).perplexity
    hist = train(m, lm_splits.train, p.train, val_split=lm_splits.val)
    after = evaluate(m, lm_splits.val).perplexity
    assert after < 0.5 * before
    assert hist["val_perplexity"][-1] == pytest.approx(after, rel=1e-6)


def test_bigram_floor_matches_direct_counts(lm_splits):
    from binlab.nn.ngram import Bigram, _pairs, bigram_perplexity

    bg = Bigram(lm_splits.train, lm_splits.vocab_size)
    v, w = _pairs(lm_splits.train)
    V = lm_splits.vocab_size
    counts = np.zeros((V, V))
    np.add.at(counts, (v, w), 1)
    p1 = (np.bincount(w, minlength=V) + 1) / (len(w) + V)
    tv, tw = _pairs(lm_splits.test)
    cv = counts.sum(1)[tv]
    lam = 0.7
    p = np.where(cv > 0, lam * counts[tv, tw] / np.maximum(cv, 1) + (1 - lam) * p1[tw], p1[tw])
    assert bg.perplexity(lm_splits.test, lam) == pytest.approx(math.exp(-np.log(p).mean()), rel=1e-10)
    out = bigram_perplexity(lm_splits)
    assert out["test_perplexity"] < V  # far better than uniform


def test_lm_ptq_with_calibrated_methods_and_size(lm_splits):
    from binlab.nn.quantize import QuantSpec
    from binlab.presets import build_model, get_preset
    from binlab.runtime.size import model_size
    from binlab.training.calibration import calibration_set
    from binlab.training.qat import ptq
    from binlab.training.train import evaluate

    m = build_model(get_preset("tiny-lm"), lm_splits)
    calib = calibration_set(lm_splits, 32)
    for name in ("gptq", "pbllm", "billm"):
        q = ptq(m, QuantSpec.simple("encoder", name), calib=calib)
        r = evaluate(q, lm_splits.val)
        assert math.isfinite(r.perplexity)
        rep = model_size(q)
        quantized = [c for c in rep.components if c.method == name]
        assert len(quantized) == 6
        for c in quantized:  # every stored bit of the component, counted by hand from what the method keeps
            mod = q.get_submodule(c.name)
            rows, cols = mod.weight.shape
            n = rows * cols
            if name == "gptq":
                b = mod.quantizer.bits
                want = b * n + rows * 32 + rows * b  # codes, an fp32 scale and a b-bit zero per row
            elif name == "pbllm":
                k = round(0.1 * n)  # 10 % salient in 8 bits, the rest 1 bit; positions as CSR or a bitmap
                want = (n - k) + 8 * k + min(n, k * math.ceil(math.log2(cols)) + (rows + 1) * 32) + 2 * rows * 32 + rows * 8
            else:
                blocks = mod.quantizer._salient_per_block  # (columns, salient columns) of each block
                want = (sum(rows * (cb + kb) for cb, kb in blocks) + sum(cb + rows * (cb - kb) for cb, kb in blocks)
                        + 4 * rows * 32 * len(blocks))
            assert c.total_bits - c.bits["bias"] == want, (name, c.name)


# ------------------------------------------------------------------------------------------------
# ARB-LLM


def np_arb1(w, m, iters):
    """ARB order 1 from the paper's updates, one row at a time."""
    out = np.zeros_like(w)
    for r in range(len(w)):
        x = w[r][m[r]]
        if len(x) == 0:
            continue
        mu = x.mean()
        a = np.abs(x - mu).mean()
        b = np.where(x - mu >= 0, 1.0, -1.0)
        for _ in range(iters):
            mu = mu + (x - (a * b + mu)).mean()
            a = (b * (x - mu)).sum() / (b * b).sum()
            b = np.where(x - mu >= 0, 1.0, -1.0)
        out[r][m[r]] = a * b + mu
    return out


def test_arb_order1_matches_reference_and_beats_plain_binarization():
    from binlab.methods.arb import arb

    rng = np.random.default_rng(4)
    w = rng.laplace(size=(6, 30)) + 0.3
    m = rng.random(w.shape) > 0.3
    got, _ = arb(torch.from_numpy(w), torch.from_numpy(m), 1, 15)
    np.testing.assert_allclose(got.numpy(), np_arb1(w, m, 15), atol=1e-12)
    plain = np_binarize_group(w, m, 1)
    assert (((w - got.numpy()) * m) ** 2).sum() < (((w - plain) * m) ** 2).sum()


def test_arb_x_is_least_squares_in_the_calibration_metric():
    """After ARB-X the last-updated scale is the minimiser of (w - w_hat) S (w - w_hat)^T per row
    (its derivative is zero), and the calibration error is no larger than plain ARB's."""
    from binlab.methods.arb import arb, arb_x

    W, X, H = layer(rows=5, cols=16, seed=11)
    S = H / 2
    m = np.ones(W.shape, bool)
    m[:, :3] = False
    got = arb_x(torch.from_numpy(W), torch.from_numpy(m), torch.from_numpy(S), 1, 15).numpy()
    plain = arb(torch.from_numpy(W), torch.from_numpy(m), 1, 15)[0].numpy()
    for r in range(5):
        e_x, e_p = (W[r] * m[r] - got[r]), (W[r] * m[r] - plain[r])
        assert e_x @ S @ e_x <= e_p @ S @ e_p + 1e-15
        b = np.sign(got[r] - (got[r][m[r]].max() + got[r][m[r]].min()) / 2) * m[r]  # the row's signs
        assert abs(b @ S @ e_x) < 1e-9 * (abs(W[r]) @ S @ abs(W[r]))  # d/d alpha = -2 b S e = 0


@pytest.mark.parametrize("order", [1, 2])
def test_arb_fits_equal_the_reference_code(order):
    """ARB's and ARB-RC's refinements against ports of the code's functions (tests/reference/arb_ref.py)."""
    from binlab.methods.arb import arb, arb_rc
    from tests.reference import arb_ref

    rng = np.random.default_rng(5 + order)
    w = rng.laplace(size=(6, 24)) * rng.uniform(0.5, 2, size=(1, 24)) + 0.2
    m = rng.random(w.shape) > 0.25
    want_arb = (arb_ref.arb_fit_order1 if order == 1 else arb_ref.arb_fit_order2)(w, m, 15)
    want_rc = (arb_ref.rc_fit_order1 if order == 1 else arb_ref.rc_fit_order2)(w, m, 15)
    np.testing.assert_allclose(arb(torch.from_numpy(w), torch.from_numpy(m), order, 15)[0].numpy(), want_arb, atol=1e-8)
    np.testing.assert_allclose(arb_rc(torch.from_numpy(w), torch.from_numpy(m), order, 15).numpy(), want_rc, atol=1e-8)


@pytest.mark.parametrize("variant", ["arb", "x", "rc"])
def test_arb_groups_equal_the_reference_search(variant):
    """The salient columns, the column-group bitmap and the break-point split (ARB-X's weighted by
    the calibration Gram matrix) against a port of ARB-LLM's search (``--order2_group``)."""
    from binlab.methods.billm import salience
    from tests.reference import arb_ref

    for seed in range(3):
        W, H = outlier_layer(rows=24, cols=64, seed=seed, outliers=4)
        G = H / 2
        Hd = H + 0.01 * np.mean(np.diag(H)) * np.eye(len(H))
        u = np.diag(np.linalg.cholesky(np.linalg.inv(Hd)).T)
        ref = arb_ref.block_masks(W, u, variant, "hessian", 50, 1, G, True)
        q = BINARIZERS["arb"](variant=variant)
        sal, groups = q.block_groups(salience(torch.from_numpy(W), torch.from_numpy(u.copy())), torch.from_numpy(G))
        assert int(sal.sum()) == ref["k"]
        hi, lo, sparse, conc = ref["masks"]  # the code's order: CGB high, CGB low, sparse, concentrated
        mine = [m.numpy() for m, _ in groups]
        for got, want in zip(mine, (hi, lo, conc, sparse)):
            assert (got == want).all(), seed
        assert [o for _, o in groups] == [2, 2, 1, 1]


# ------------------------------------------------------------------------------------------------
# STBLLM


def test_nm_mask_keeps_exactly_n_of_every_m():
    from binlab.methods.stbllm import nm_mask

    score = torch.randn(7, 40)
    for n, m in ((4, 8), (6, 8), (2, 4)):
        keep = nm_mask(score, n, m)
        groups = keep.reshape(7, 40 // m, m)
        assert torch.all(groups.sum(2) == n)
        # the kept ones are the group's best
        s = score.reshape(7, 40 // m, m)
        assert torch.all(s.masked_fill(~groups, float("inf")).min(2).values >= s.masked_fill(groups, -float("inf")).max(2).values)


def test_stbllm_importance_and_mask_equal_the_reference_code():
    """The importance score and the N:M mask against a port of STBLLM's code
    (tests/reference/stbllm_ref.py): ``||X_j||^0.5`` on the positive relative term, no
    standardisation; on a layer with outlier input channels the mask keeps their weights."""
    from binlab.methods.stbllm import importance, nm_mask
    from tests.reference import stbllm_ref

    W, H = outlier_layer(rows=16, cols=64, seed=6, outliers=4)
    xnorm = stbllm_ref.xnorm_from_hessian(H)
    want = stbllm_ref.importance(W, xnorm)
    got = importance(torch.from_numpy(W), torch.from_numpy(np.diag(H).copy())).numpy()
    ratio = got / want
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-12)  # equal up to one constant factor
    for n in (2, 4, 6):
        keep = nm_mask(torch.from_numpy(got), n, 8).numpy()
        assert (keep == stbllm_ref.nm_mask(want, n, 8)).all()
    outl = np.argsort(-np.diag(H))[:4]
    assert keep[:, outl].mean() > 0.9  # n = 6 of 8: the outlier channels' weights are kept


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stbllm_block_equals_the_reference_searches(seed):
    """One block (no compensation yet): the salient columns, the 160-quantile three-group split and
    the binarized weights (the paper's per-row alpha over the kept entries of the code's groups)."""
    from tests.reference import stbllm_ref
    from tests.reference.billm_ref import plain_residual

    W, H = outlier_layer(rows=16, cols=64, seed=seed, outliers=4)
    q = BINARIZERS["stbllm"](n=4, m=8, blocksize=64)
    q.calibrate(torch.from_numpy(H))
    got = q.quantize(torch.from_numpy(W)).numpy()
    keep = stbllm_ref.nm_mask(stbllm_ref.importance(W, stbllm_ref.xnorm_from_hessian(H)), 4, 8)
    Hd = H + 0.01 * np.mean(np.diag(H)) * np.eye(len(H))
    u = np.diag(np.linalg.cholesky(np.linalg.inv(Hd)).T)
    g1, g2, g3, sal = stbllm_ref.block_masks(W * keep, u)
    want = plain_residual(W, sal & keep, 2) + sum(plain_residual(W, g & keep, 1) for g in (g1, g2, g3))
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert q._stats[0][1] == int(sal[0].sum())


def test_stbllm_layerwise_rule_equals_the_reference_code():
    from binlab.training.allocation import allocate_n
    from tests.reference import stbllm_ref

    for ratios in ([0.1, 0.3, 0.2, 0.9], [0.5, 0.5, 0.6], [1.0, 0.0], [0.2, 0.25, 0.3, 0.35, 0.4], [0.0, 0.01, 0.5, 0.02]):
        assert allocate_n(ratios, 4, 8) == [int(x) for x in stbllm_ref.layerwise_n(ratios, 4, 8)], ratios
    assert allocate_n([0.3, 0.3], 4, 8) == [4, 4]
    assert allocate_n([0.0, 1.0], 7, 8) == [6, 8]  # clipped to m


def test_stbllm_is_n_m_sparse_and_counts_its_storage():
    from binlab.methods.stbllm import importance, nm_mask

    W, X, H = layer(rows=8, cols=32, seed=12)
    q = BINARIZERS["stbllm"](n=4, m=8)
    q.calibrate(torch.from_numpy(H))
    got = q.quantize(torch.from_numpy(W)).numpy()
    keep = nm_mask(importance(torch.from_numpy(W), torch.from_numpy(np.diag(H).copy())), 4, 8).numpy()
    assert np.all(got[~keep] == 0) and np.all(got[keep] != 0)
    c, k, kept, ks = q._stats[0]
    assert kept == 8 * 32 // 2
    st = q.storage(W.shape)
    assert st["codes"] == kept + ks
    assert st["index"] == 8 * 4 * 7 + 32 + 8 * math.ceil((kept - ks) / 5)  # C(8,4) = 70 -> 7 bits per group
    assert st["scales"] == 5 * 8 * 32
    assert q.paper_bits() == pytest.approx((kept + ks) / W.size)


# ------------------------------------------------------------------------------------------------
# OneBit


def test_svid_is_the_rank1_svd_of_abs_w_and_the_nmf_optimum():
    from binlab.methods.onebit import svid

    rng = np.random.default_rng(13)
    W = rng.normal(size=(9, 14))
    a, b = svid(torch.from_numpy(W))
    U, S, Vt = np.linalg.svd(np.abs(W))
    np.testing.assert_allclose(np.outer(a.numpy(), b.numpy()), S[0] * np.outer(U[:, 0], Vt[0]), atol=1e-10)
    assert (a.numpy() >= 0).all() and (b.numpy() >= 0).all()
    # rank-1 NMF by Lee-Seung multiplicative updates from a random start reaches the same product
    x, y = rng.uniform(0.1, 1, 9), rng.uniform(0.1, 1, 14)
    A = np.abs(W)
    for _ in range(3000):
        x *= (A @ y) / (x * (y @ y))
        y *= (A.T @ x) / (y * (x @ x))
    np.testing.assert_allclose(np.outer(x, y), np.outer(a.numpy(), b.numpy()), rtol=1e-6, atol=1e-8)


def test_onebit_value_vectors_are_learned_stored_and_counted(tiny_model, tiny_splits):
    from binlab.nn.quantize import QuantSpec
    from binlab.runtime.size import model_size
    from binlab.training.qat import QATConfig, qat
    from binlab.training.train import TrainConfig

    spec = QuantSpec.simple("encoder", "onebit")
    student, _ = qat(tiny_model, spec, tiny_splits.train.head(128),
                     QATConfig(TrainConfig(epochs=1, lr=1e-2, warmup=0.0, device="cpu", distill=0.5), hidden_distill=1.0))
    mod = student.get_submodule("layers.0.attn.q")
    from binlab.methods.onebit import svid

    a0, b0 = svid(tiny_model.get_submodule("layers.0.attn.q").weight.detach())
    assert not torch.allclose(mod.qparams.a, a0)  # learned, not recomputed
    w = mod.weight.detach()
    torch.testing.assert_close(mod.quantized_weight(), torch.where(w >= 0, 1.0, -1.0) * torch.outer(mod.qparams.a, mod.qparams.b).detach())
    assert "layers.0.attn.q.qparams.a" in student.state_dict()
    rep = model_size(student)
    names = [c.name for c in rep.components]
    assert not any("qparams" in n for n in names)
    c = next(c for c in rep.components if c.name == "layers.0.attn.q")
    assert c.bits["codes"] == w.numel() and c.bits["scales"] == 32 * sum(w.shape)


def test_onebit_layer_equals_the_reference_code(tiny_model, tiny_splits):
    """OneBit's layer against a port of its code (tests/reference/onebit_ref.py): the output
    LayerNorm in the forward, QAT's start from ``0.01 sign(W)``, and the ``1.001 - tanh^2`` estimator
    on the raw latent weight."""
    from binlab.nn.quantize import MethodConfig, QuantLinear, QuantSpec
    from binlab.training.qat import QATConfig, qat
    from binlab.training.train import TrainConfig
    from tests.reference import onebit_ref

    g = torch.Generator().manual_seed(3)
    lin = torch.nn.Linear(12, 7).double()
    torch.nn.init.normal_(lin.weight, std=0.2, generator=g)
    q = QuantLinear.from_linear(lin, MethodConfig("onebit")).double().train()
    x = torch.randn(4, 5, 12, generator=g, dtype=torch.float64)
    a, b = q.qparams.a.detach().numpy(), q.qparams.b.detach().numpy()
    y = q(x)
    want = onebit_ref.onebit_forward(x.numpy(), lin.weight.detach().numpy(), a, b, lin.bias.detach().numpy())
    np.testing.assert_allclose(y.detach().numpy(), want, atol=1e-10)
    up = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (y * up).sum().backward()
    # the latent's gradient: dL/dsign(W) * g(W) with the code's estimator on the raw weight
    s = lin.weight.detach().sign().requires_grad_()
    ys = torch.nn.functional.layer_norm(torch.nn.functional.linear(x * q.qparams.b.detach(), s) * q.qparams.a.detach(), (7,)) + lin.bias.detach()
    (ys * up).sum().backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), s.grad.numpy() * onebit_ref.sign_estimator_grad(lin.weight.detach().numpy()), atol=1e-10)
    off = QuantLinear.from_linear(lin, MethodConfig("onebit", options={"out_norm": False})).double().eval()
    np.testing.assert_allclose(off(x).detach().numpy(), x.numpy() @ off.quantized_weight().detach().numpy().T + lin.bias.detach().numpy(), atol=1e-10)
    # QAT starts from 0.01 sign(W), the value vectors from SVID of the trained W (one step, lr ~ 0)
    from binlab.methods.onebit import svid

    w0 = tiny_model.get_submodule("layers.0.attn.q").weight.detach().clone()
    student, _ = qat(tiny_model, QuantSpec.simple("layers.0.attn.q", "onebit"), tiny_splits.train.head(8),
                     QATConfig(TrainConfig(epochs=1, lr=1e-12, warmup=0.0, batch_size=8, device="cpu")))
    mod = student.get_submodule("layers.0.attn.q")
    torch.testing.assert_close(mod.weight.detach(), 0.01 * torch.where(w0 >= 0, 1.0, -1.0), atol=1e-9, rtol=0)
    a0, b0 = svid(w0)
    torch.testing.assert_close(torch.outer(mod.qparams.a, mod.qparams.b).detach(), torch.outer(a0, b0), atol=1e-6, rtol=1e-4)
    assert torch.equal(tiny_model.get_submodule("layers.0.attn.q").weight.detach(), w0)  # the teacher is untouched


def test_hidden_loss_matches_reference():
    from binlab.nn.objective import hidden_loss

    torch.manual_seed(0)
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    hs = [torch.randn(2, 4, 3) for _ in range(3)]
    ht = [torch.randn(2, 4, 3) for _ in range(3)]
    want = 0.0
    for s, t in zip(hs[:-1], ht[:-1]):
        terms = []
        for i in range(2):
            for j in range(4):
                if ids[i, j] != 0:
                    d = s[i, j] / s[i, j].norm() - t[i, j] / t[i, j].norm()
                    terms.append(float((d**2).sum()))
        want += np.mean(terms)
    assert float(hidden_loss(hs, ht, ids)) == pytest.approx(want, rel=1e-6)


# ------------------------------------------------------------------------------------------------
# OAC


def test_output_hessian_is_the_mean_outer_product_of_per_row_weight_gradients(lm_splits):
    """OAC has no public reference code: its Hessian is checked against the paper's stated definition
    (the mean of per-row weight-gradient outer products) computed directly, one row at a time."""
    from binlab.nn.objective import row_stats
    from binlab.presets import build_model, get_preset
    from binlab.training.calibration import calibration_set, collect_output_hessians

    m = build_model(get_preset("tiny-lm"), lm_splits).eval()
    calib = calibration_set(lm_splits, 6, seed=2)
    got = collect_output_hessians(m, calib, ["layers.0.ffn.down"])["layers.0.ffn.down"]
    W = m.get_submodule("layers.0.ffn.down").weight
    want = torch.zeros(W.shape[1], W.shape[1], dtype=torch.float64)
    for i in range(len(calib)):
        ids = torch.from_numpy(calib.ids[calib.offsets[i]:calib.offsets[i + 1]].astype(np.int64))[None]
        m.zero_grad()
        nll, _, _ = row_stats(m(ids), ids, torch.zeros(1, dtype=torch.long), "lm")
        nll.sum().backward()
        G = W.grad.double()
        want += G.T @ G
    torch.testing.assert_close(got, want / len(calib))


def test_oac_is_billm_with_the_output_hessian(lm_splits):
    """OAC (no public code) is BiLLM's procedure with the output-adaptive Hessian in place of GPTQ's:
    checked against the port of BiLLM's reference procedure (tests/reference/billm_ref.py) run on that Hessian."""
    from binlab.nn.quantize import QuantSpec, quantize_
    from binlab.presets import build_model, get_preset
    from binlab.training.calibration import calibrate_, calibration_set, collect_output_hessians

    m = build_model(get_preset("tiny-lm"), lm_splits)
    calib = calibration_set(lm_splits, 8)
    quantize_(m, QuantSpec.simple("layers.0.attn.v", "oac"))
    hs = calibrate_(m, calib)
    with torch.no_grad():
        from binlab.nn.quantize import quantized_modules
        from binlab.training.calibration import bypassed

        with bypassed(quantized_modules(m)):
            want = collect_output_hessians(m, calib, ["layers.0.attn.v"])["layers.0.attn.v"]
    torch.testing.assert_close(hs["layers.0.attn.v"], want)
    mod = m.get_submodule("layers.0.attn.v")
    from tests.reference.billm_ref import billm as ref_billm

    ref, _ = ref_billm(mod.weight.detach().double().numpy(), want.double().numpy(), centred=False)
    np.testing.assert_allclose(mod.quantized_weight().detach().double().numpy(), ref, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# DB-LLM, BinaryMoS, FBI-LLM


def test_dbllm_starts_as_nearest_rounding_onto_the_2bit_grid():
    """DB-LLM has no public reference code: the tests check the paper's stated properties (the dual
    binarization starts as the nearest point of the 2-bit grid; the scales learn through the product;
    deviation-aware distillation weighs units by entropy)."""
    rng = np.random.default_rng(14)
    W = rng.normal(size=(4, 64)) * 0.05
    q = BINARIZERS["dbllm"](group=32).quantize(torch.from_numpy(W)).numpy()
    for r in range(4):
        for g in range(2):
            w = W[r, 32 * g:32 * (g + 1)]
            s = np.abs(w).max() / 2
            levels = np.array([-s, 0, s, 2 * s])
            want = levels[np.abs(w[:, None] - levels[None]).argmin(1)]
            np.testing.assert_allclose(q[r, 32 * g:32 * (g + 1)], want, atol=1e-12)
    st = BINARIZERS["dbllm"](group=32).storage((4, 64))
    assert st == {"codes": 2 * 256, "scales": 2 * 4 * 2 * 32}


def test_dbllm_scales_learn_through_the_product():
    lin = torch.nn.Linear(16, 3, bias=False)
    from binlab.nn.quantize import MethodConfig, QuantLinear

    q = QuantLinear.from_linear(lin, MethodConfig("dbllm", options={"group": 8})).train()
    R = torch.randn(3, 16)
    (q.quantized_weight() * R).sum().backward()
    w = lin.weight.detach()
    a1, a2 = q.qparams.a1.detach().repeat_interleave(8, 1), q.qparams.a2.detach().repeat_interleave(8, 1)
    b1 = (w - (a1 + a2) / 2 >= 0).double()
    b2 = (-(w - a1 * b1 - a2 / 2) >= 0).double()
    want_a1 = (R * b1).reshape(3, 2, 8).sum(2)
    torch.testing.assert_close(q.qparams.a1.grad.double(), want_a1)
    assert torch.all(lin.weight.grad == R)  # identity estimator for the latent weights
    del b2


def test_dad_weights_units_by_entropy():
    from binlab.nn.objective import kd_loss

    torch.manual_seed(1)
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    y = torch.zeros(5, dtype=torch.long)
    got = float(kd_loss(s, t, None, y, "classify", 1.0, 1.0, dad_gamma=1.0))
    ps, pt = torch.softmax(s.double(), -1), torch.softmax(t.double(), -1)
    kl = (pt * (pt.log() - ps.log())).sum(-1)
    H = lambda p: -(p * p.log()).sum(-1)  # noqa: E731
    w = H(pt) * H(ps)
    assert got == pytest.approx(float((w / w.mean() * kl).mean()), rel=1e-5)
    plain = float(kd_loss(s, t, None, y, "classify", 1.0, 1.0))
    assert plain == pytest.approx(float(kl.mean()), rel=1e-5)


def test_binarymos_starts_as_onebit_and_routes_per_token():
    from binlab.methods.onebit import svid
    from binlab.nn.quantize import MethodConfig, QuantLinear

    torch.manual_seed(0)
    lin = torch.nn.Linear(12, 5)
    q = QuantLinear.from_linear(lin, MethodConfig("binarymos")).eval()
    x = torch.randn(7, 12)
    a, b = svid(lin.weight.detach())
    want = torch.nn.functional.linear(x, torch.where(lin.weight >= 0, 1.0, -1.0) * torch.outer(a, b), lin.bias)
    torch.testing.assert_close(q(x), want)  # identical experts: every mixture is the SVID layer
    with torch.no_grad():
        q.qparams.s_in[0] *= 2  # experts differ: tokens now get different scales
    y = q(x)
    g = torch.softmax(q.qparams.router(x), -1)
    s_in, s_out = g @ q.qparams.s_in, g @ q.qparams.s_out
    ref = ((x * s_in) @ torch.where(lin.weight >= 0, 1.0, -1.0).T) * s_out + lin.bias
    torch.testing.assert_close(y, ref)
    q.train()
    q(x).sum().backward()
    assert q.qparams.router.weight.grad.abs().sum() > 0 and lin.weight.grad.abs().sum() > 0
    st = BINARIZERS["binarymos"]().storage((5, 12))
    assert st == {"codes": 60, "scales": 4 * 17 * 32, "router": 4 * 12 * 32}


def test_fbi_column_scale_and_shift_and_training_from_scratch(lm_splits):
    from binlab.nn.quantize import QuantSpec
    from binlab.presets import build_model, get_preset
    from binlab.training.qat import QATConfig, qat
    from binlab.training.train import TrainConfig

    rng = np.random.default_rng(15)
    W = rng.normal(size=(6, 9))
    beta = W.mean(0)
    alpha = np.abs(W - beta).mean(0)
    np.testing.assert_allclose(BINARIZERS["fbi"]().quantize(torch.from_numpy(W)).numpy(), np.where(W >= 0, 1, -1) * alpha + beta, atol=1e-12)
    teacher = build_model(get_preset("tiny-lm"), lm_splits, seed=3)
    cfg = QATConfig(TrainConfig(epochs=0.2, lr=1e-3, distill=1.0, temperature=1.0, device="cpu"), from_scratch=True)
    student, hist = qat(teacher, QuantSpec.simple("encoder", "fbi"), lm_splits.train, cfg)
    assert not torch.allclose(student.embed.token.weight, teacher.embed.token.weight)  # not a copy of the teacher
    assert hist["loss"][-1] < hist["loss"][0]


# ------------------------------------------------------------------------------------------------
# what works on a classifier works on the LM: landscape probes, packed inference


def test_landscape_and_packing_on_the_lm(lm_splits):
    from binlab.nn.quantize import QuantSpec
    from binlab.presets import build_model, get_preset
    from binlab.probes.landscape import interpolate, slice_model
    from binlab.runtime.packed import pack_model
    from binlab.training.calibration import calibration_set
    from binlab.training.qat import ptq
    from binlab.training.train import evaluate

    m = build_model(get_preset("tiny-lm"), lm_splits)
    calib = calibration_set(lm_splits, 16)
    out = interpolate(m, QuantSpec.simple("encoder", "gptq", options={"bits": 2}), lm_splits.val, alphas=[0.0, 1.0], rows=32, calib=calib)
    fp = evaluate(m, lm_splits.val.head(32))
    q = evaluate(ptq(m, QuantSpec.simple("encoder", "gptq", options={"bits": 2}), calib=calib), lm_splits.val.head(32))
    assert out["loss"][0][0] == pytest.approx(fp.loss, rel=1e-5) and out["loss"][0][1] == pytest.approx(q.loss, rel=1e-4)
    s = slice_model(m, lm_splits.val, QuantSpec.simple("encoder", "xnor"), steps=3, two_d=False, rows=16)
    assert np.isfinite(s["loss"]).all()
    fq = ptq(m, QuantSpec.simple("encoder", "xnor"))
    packed, names = pack_model(fq)
    assert len(names) == 6
    x = torch.from_numpy(lm_splits.val.ids[:20].astype(np.int64))[None]
    torch.testing.assert_close(packed(x), fq(x), rtol=1e-4, atol=1e-4)


def test_stbllm_layerwise_allocation_gives_more_to_the_layer_with_outliers(lm_splits):
    from dataclasses import replace

    from binlab.presets import build_model, get_preset
    from binlab.training.allocation import layerwise_nm
    from binlab.training.calibration import calibration_set
    from binlab.training.qat import ptq

    p = get_preset("tiny-lm")
    p = replace(p, model=replace(p.model, n_layers=2))
    m = build_model(p, lm_splits)
    with torch.no_grad():  # plant outliers in layer 1
        w = m.layers[1].ffn.up.weight
        w[:, :3] *= 40
    calib = calibration_set(lm_splits, 16)
    spec, alloc = layerwise_nm(m, calib, n=4, m=8)
    assert alloc[1] > alloc[0] and sum(alloc.values()) / 2 == pytest.approx(4, abs=0.5)
    q = ptq(m, spec, calib=calib)
    kept = (q.layers[1].ffn.up.quantized_weight() != 0).double().mean()
    assert float(kept) == pytest.approx(alloc[1] / 8)


def test_storage_by_hand_for_the_other_llm_methods():
    rows, cols = 48, 300
    n = rows * cols
    assert BINARIZERS["rtn"](bits=3).storage((rows, cols)) == {"codes": 3 * n, "scales": rows * 32, "zeros": rows * 3}
    groups = rows * math.ceil(cols / 128)
    assert BINARIZERS["gptq"](bits=2, group=128).storage((rows, cols)) == {"codes": 2 * n, "scales": groups * 32, "zeros": groups * 2}
    assert BINARIZERS["onebit"]().storage((rows, cols)) == {"codes": n, "scales": (rows + cols) * 32}
    assert BINARIZERS["fbi"]().storage((rows, cols)) == {"codes": n, "scales": 2 * cols * 32}
    W, _, H = layer(rows=rows, cols=cols, seed=16)
    # per block per row: alpha and mu of 4 groups (3 + 3 for the two order-2 CGB groups, 2 + 2), or
    # ARB-RC's row and column vectors of 6 terms; the CGB bitmap adds a bit per salient weight
    for variant, per_block in (("arb", lambda c: 10 * rows), ("x", lambda c: 10 * rows), ("rc", lambda c: 6 * (rows + c))):
        q = BINARIZERS["arb"](variant=variant, iters=2)
        q.calibrate(torch.from_numpy(H))
        q.quantize(torch.from_numpy(W))
        blocks = q._salient_per_block
        assert [c for c, _ in blocks] == [128, 128, 44]
        st = q.storage((rows, cols))
        assert st["codes"] == sum(rows * (c + k) for c, k in blocks)
        assert st["index"] == sum(c + rows * (c - k) + rows * k for c, k in blocks)
        assert st["scales"] == 32 * sum(per_block(c) for c, _ in blocks)


# ------------------------------------------------------------------------------------------------
# the live lab reuses the outputs of layers before the first changed one


@pytest.mark.parametrize("preset", ["tiny", "tiny-lm"])
def test_live_lab_partial_recompute_equals_full_evaluation(preset, fixture_data):
    from dataclasses import replace

    from binlab.lab.live import LiveLab
    from binlab.nn.quantize import MethodConfig, QuantSpec, Rule
    from binlab.presets import build_model, get_preset, load_data
    from binlab.training.calibration import calibration_set
    from binlab.training.train import stats_on

    p = get_preset(preset)
    p = replace(p, model=replace(p.model, n_layers=2))
    splits = load_data(p, source=str(fixture_data), val_size=100, test_size=50)
    lab = LiveLab(build_model(p, splits), splits.val, val_rows=64, calib=calibration_set(splits, 16))
    specs = [QuantSpec.simple("layers.1.attn.q", "xnor"),  # layer 1 only: layer 0's outputs are reused
             QuantSpec.simple(["layers.1.attn.q", "head"], "xnor"),  # + the head alone
             QuantSpec.simple(["layers.1.attn.q", "layers.0.ffn.up"], "xnor"),  # back to layer 0
             QuantSpec((Rule("layers.1.attn.q", MethodConfig("gptq", options={"bits": 2})),)),  # a calibrated method
             QuantSpec.simple("embed.token", "bucket"),
             QuantSpec(QuantSpec.simple("encoder", "sign").rules, attn_probs="binary01"),
             QuantSpec()]
    starts = []
    for spec in specs:
        r = lab.apply(spec)
        starts.append(lab.last_start)
        nll, units, hits = stats_on(lab.model, lab.batches)
        assert r["loss"] == pytest.approx(float(nll.sum() / units.sum()), rel=1e-6), spec
        assert r["accuracy"] == pytest.approx(100 * float(hits.sum() / units.sum()), rel=1e-9)
    assert starts == [1, 2, 0, 0, -1, -1, -1]  # layer 1; the head alone; layer 0; ...; embeddings; attention probabilities


@pytest.mark.parametrize("preset", ["tiny", "tiny-lm"])
def test_first_look_then_full_numbers_equal_a_full_evaluation(preset, fixture_data):
    """Progressive results: a change's first look is measured on a fixed, class-stratified slice of the
    lab's rows and equals a direct evaluation of that slice; the full numbers that follow equal those of
    a lab that never took a first look (the partial recompute still starts from the right layer)."""
    from dataclasses import replace

    import numpy as np

    from binlab.lab.live import LiveLab, stratified_rows
    from binlab.nn.quantize import MethodConfig, QuantSpec, Rule
    from binlab.presets import build_model, get_preset, load_data
    from binlab.training.calibration import calibration_set
    from binlab.training.train import stats_on

    p = get_preset(preset)
    p = replace(p, model=replace(p.model, n_layers=2))
    splits = load_data(p, source=str(fixture_data), val_size=100, test_size=50)
    model, calib = build_model(p, splits), calibration_set(splits, 16)
    # b: the same rows in the same batches, never taking a first look
    a, b = LiveLab(model, splits.val, val_rows=80, calib=calib, glance_rows=30), LiveLab(model, splits.val, val_rows=80, calib=calib, glance_rows=30)
    specs = [QuantSpec.simple("layers.1.attn.q", "xnor"), QuantSpec.simple(["layers.1.attn.q", "layers.0.ffn.up"], "xnor"),
             QuantSpec((Rule("layers.1.attn.q", MethodConfig("gptq", options={"bits": 2})),)), QuantSpec()]
    for spec in specs:
        g = a.glance(spec)
        assert g["first_look"] and g["rows"] == len(a.glance_val) < len(a.val)
        nll, units, hits = stats_on(a.model, a.glance_batches)
        assert g["loss"] == pytest.approx(float(nll.sum() / units.sum()), rel=1e-6)
        assert g["metric"].rows == len(a.glance_val)
        full, plain = a.apply(spec), b.apply(spec)
        assert full["loss"] == pytest.approx(plain["loss"], rel=1e-12) and full["accuracy"] == pytest.approx(plain["accuracy"], rel=1e-12)
        assert g["total_bytes"] == full["total_bytes"]  # the size is exact from the first look on
        assert a.last_start == b.last_start
    # the task's default first look: 200 stratified rows on a classifier (all 80 here), 60 on a language model
    assert len(LiveLab(model, splits.val, val_rows=80).glance_val) == (60 if preset == "tiny-lm" else 80)
    if preset == "tiny":  # the slice is balanced over the classes
        labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
        assert list(stratified_rows(labels, 4)) == [0, 3, 5, 9] and len(stratified_rows(labels, 20)) == 10


def test_the_page_lab_takes_the_presets_first_look(tiny_model, tiny_splits):
    """LiveLab.for_page builds what the Binarize page measures: the task's live rows and the preset's
    first look (minilm-l2 sets a smaller one, its rows cost more), else the task's; a preset with a
    first look of no rows is refused."""
    from dataclasses import replace

    from binlab.lab.live import LiveLab, stratified_rows
    from binlab.nn.metric import task_info
    from binlab.presets import get_preset

    assert get_preset("minilm-l2").glance_rows == 120 and get_preset("scratch").glance_rows is None
    tiny = get_preset("tiny")
    own = LiveLab.for_page(tiny_model, tiny_splits, replace(tiny, glance_rows=20))
    assert len(own.val) == min(task_info(tiny_model).live_rows, len(tiny_splits.val))
    assert len(own.glance_val) == 20  # the preset's
    assert own.calib is not None  # the methods that need data can run on the page
    idx = stratified_rows(own.val.labels, 20)
    assert (own.glance_val.labels == own.val.labels[idx]).all()  # the same stratified slice as glance_rows=20 picks
    task_default = LiveLab.for_page(tiny_model, tiny_splits, "tiny")
    assert len(task_default.glance_val) == min(task_info(tiny_model).glance_rows, len(task_default.val))
    with pytest.raises(ValueError, match="glance_rows"):
        replace(tiny, glance_rows=0)


def test_pbllm_paper_bits_is_the_papers_count():
    assert BINARIZERS["pbllm"]().paper_bits() == pytest.approx(1.7)  # PB-LLM's "1.7 bits" at 10 % salient


def test_cli_generate_and_eval_on_the_lm(fixture_data, capsys):
    import json

    from binlab.cli import main

    assert main(["generate", "--preset", "tiny-lm", "--data", str(fixture_data), "--prompt", "team wins", "--tokens", "5",
                 "--target", "encoder", "--method", "gptq", "--options", '{"bits": 2}']) == 0
    text = capsys.readouterr().out
    g = json.loads(text[text.index("{"):])
    assert g["prompt"] == "team wins" and isinstance(g["fp32"], str) and isinstance(g["binarized"], str)
    assert main(["eval", "--preset", "tiny-lm", "--data", str(fixture_data), "--target", "encoder", "--method", "billm", "--split", "val"]) == 0
    text = capsys.readouterr().out
    r = json.loads(text[text.index("{"):])
    assert r["perplexity"] > 1 and r["tokens"] > 0
    assert main(["generate", "--preset", "tiny", "--data", str(fixture_data), "--prompt", "x"]) == 2  # a classifier: a clear error


@pytest.mark.parametrize("argv", [["landscape", "slice", "--rows", "0"], ["landscape", "slice", "--steps", "1"],
                                  ["landscape", "curvature", "--k", "0"], ["landscape", "slice", "--span", "-1"],
                                  ["eval", "--target", "layers.9.attn.q"], ["eval", "--spec", "{not json"],
                                  ["train", "--preset", "nope"]])
def test_cli_edge_cases_are_errors_not_tracebacks(argv, fixture_data, capsys):
    from binlab.cli import main

    args = argv + ([] if "--preset" in argv else ["--preset", "tiny"]) + ["--data", str(fixture_data)]
    assert main(args) == 2
    assert "error:" in capsys.readouterr().err


def test_train_rows_and_the_time_estimate(fixture_data, capsys):
    import json

    from binlab.cli import main
    from binlab.presets import build_model, get_preset, load_data
    from binlab.training.train import estimate_seconds

    assert main(["train", "--preset", "tiny", "--data", str(fixture_data), "--train-rows", "60", "--epochs", "1"]) == 0
    cap = capsys.readouterr()
    assert "60 rows x 1 epochs: expected about" in cap.err
    assert json.loads(cap.out[cap.out.index("{"):])["preset"] == "tiny"
    assert main(["train", "--preset", "tiny", "--data", str(fixture_data), "--train-rows", "0"]) == 2  # a clear error
    p = get_preset("tiny")
    splits = load_data(p, source=str(fixture_data))
    est = estimate_seconds(build_model(p, splits), splits.train, p.train)
    assert 0 < est < 600


# ------------------------------------------------------------------------------------------------
# QAT health


def test_health_measures_against_references(tiny_model, tiny_splits):
    from binlab.nn.quantize import QuantSpec, quantize_
    from binlab.training.health import attention_entropy, flip_ratio, outside_clip, signs
    from binlab.training.qat import QATConfig, qat
    from binlab.training.train import TrainConfig

    m = tiny_model
    quantize_(m, QuantSpec.simple("encoder", "xnor"))
    s0 = signs(m)
    w = m.layers[0].attn.q.weight
    with torch.no_grad():
        w[0, :4] *= -1  # flip 4 signs (none of them zero)
    assert flip_ratio(s0, signs(m))["layers.0.attn.q"] == pytest.approx(4 / w.numel())
    oc = outside_clip(m)["layers.0.attn.q"]
    x = w.detach()
    want = float((x.abs() > 3 * x.std(1, keepdim=True)).double().mean())
    assert oc == pytest.approx(want)
    ids = next(iter(tiny_splits.val.head(8).batches(8)))[0]
    ent = attention_entropy(m, ids)
    assert set(ent) == {"L0.h0", "L0.h1"}
    n_real = (ids != 0).sum(1).double()
    assert all(0 <= v <= float(torch.log(n_real.max())) + 1e-6 for v in ent.values())  # between one-hot and uniform
    events = []
    qat(tiny_model, QuantSpec.simple("encoder", "xnor"), tiny_splits.train.head(128),
        QATConfig(TrainConfig(epochs=1, lr=1e-2, warmup=0.0, device="cpu")), val_split=tiny_splits.val, callback=events.append, health_every=2)
    hs = [e for e in events if e["kind"] == "health"]
    assert len(hs) == 2 and all(0 <= v <= 1 for e in hs for v in e["flip"].values())
    assert any(v > 0 for e in hs for v in e["flip"].values())  # a lr of 1e-2 flips some signs


def test_a_new_lab_never_inherits_a_freed_labs_results(tiny_model, tiny_splits):
    """Labs share measured results by family; a family number is never reused, so a lab built after
    another was freed (which may get the same id()) measures its own model."""
    import gc

    from binlab.lab.live import LiveLab
    from binlab.nn.quantize import QuantSpec

    spec = QuantSpec.simple("encoder", "xnor")
    families = set()
    for _ in range(5):
        lab = LiveLab(tiny_model, tiny_splits.val, val_rows=20, device="cpu")
        assert lab.family not in families
        families.add(lab.family)
        lab.apply(spec)
        del lab
        gc.collect()
    assert LiveLab(tiny_model, tiny_splits.val, val_rows=20, device="cpu").measured(spec) is None
