"""The BERT-era fully binary encoders (issue 12): each piece against a reference written from the
paper's equations (numpy / float64), and each recipe's smoke run on the tiny preset."""
import copy
import math

import numpy as np
import pytest
import torch

from binlab.methods import BINARIZERS, bwn, ternarize, tws_split
from binlab.methods.activations import ELASTIC, ElasticAct, _Elastic, elastic_levels, make_act
from binlab.methods.attention import ATTENTION, BiAttention, entropy, make_attention, maps
from binlab.nn.objective import dmd_loss, hidden_loss
from binlab.nn.quantize import MethodConfig, QuantSpec, Rule, quantize_
from binlab.runtime.size import model_size
from binlab.training.qat import QATConfig
from binlab.training.recipes import RECIPES, Ensemble, Stage, binarybert_spec, run, samme_update
from binlab.training.train import TrainConfig, evaluate

# ---------------------------------------------------------------------------------------------
# Bi-Attention


def _binary_entropy(p):
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def test_bi_attention_maximises_the_entropy_of_the_binary_attention():
    """BiBERT's argument (sec. 3.2): with sign-binarized Q and K the scores are symmetric about 0, so
    bool(S) = 1[S > 0] keeps about half the keys -- the Bernoulli code of maximal entropy (1 bit) --
    while any other threshold, and softmax-then-threshold, keep fewer or more."""
    g = torch.Generator().manual_seed(0)
    B, h, T, d = 8, 4, 32, 32
    q = torch.sign(torch.randn(B, h, T, d, generator=g))
    k = torch.sign(torch.randn(B, h, T, d, generator=g))
    s = q @ k.transpose(-2, -1) / math.sqrt(d)
    mask = torch.ones(B, 1, 1, T, dtype=torch.bool)
    a = BiAttention()(s, mask)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    s64 = s.double().numpy()
    h_bool = _binary_entropy(a.double().mean().item())
    assert h_bool > 0.97  # bits; the reference: the empirical rate of ones
    for tau in (-1.0, -0.5, 0.5, 1.0):
        assert _binary_entropy((s64 > tau).mean()) < h_bool
    # softmax then "keep above uniform" (binlab's binary01) keeps fewer keys: lower entropy of the code
    b01 = (make_attention("binary01")(s, mask) > 0).double().mean().item()
    assert _binary_entropy(b01) < h_bool


def test_bi_attention_masks_hidden_keys_and_uses_the_clipped_estimator():
    s = torch.tensor([[[[0.5, -2.0, 3.0, 0.2]]]], requires_grad=True)
    mask = torch.tensor([[[[True, True, True, False]]]])
    a = BiAttention()(s, mask)
    assert a.tolist() == [[[[1.0, 0.0, 1.0, 0.0]]]]  # 0.2 > 0 but hidden
    a.sum().backward()
    assert s.grad.tolist() == [[[[1.0, 0.0, 0.0, 0.0]]]]  # g 1[|S| < 1] on visible keys only


def test_bi_attention_equals_bibert_code_at_zero_and_at_the_clip_edges():
    """Against a port of BiBERT's quantizer (tests/reference/bibert_ref.py): a score of exactly 0
    keeps no key, and the estimator is 0 at |S| = 1."""
    from tests.reference.bibert_ref import bool_attention

    s = torch.tensor([[[[0.0, 1.0, -1.0, 0.999, -0.5, 2.0, 0.0, 1e-9]]]], dtype=torch.float64, requires_grad=True)
    g = torch.arange(1.0, 9.0, dtype=torch.float64).reshape(s.shape)
    a = BiAttention()(s, torch.ones(1, 1, 1, 8, dtype=torch.bool))
    (a * g).sum().backward()
    want_a, want_g = bool_attention(s.detach().numpy(), g.numpy())
    np.testing.assert_array_equal(a.detach().numpy(), want_a)
    np.testing.assert_array_equal(s.grad.numpy(), want_g)


def test_attention_registry_and_entropy_closed_form():
    assert {"binary01", "bibert", "elastic01"} <= set(ATTENTION)
    with pytest.raises(ValueError, match="unknown attention"):
        make_attention("nope")
    T = 6
    w = torch.full((1, 1, T, T), 1.0 / T)
    mask = torch.ones(1, 1, 1, T, dtype=torch.bool)
    e = entropy(w, mask, torch.ones(1, T, dtype=torch.bool))
    assert e.item() == pytest.approx(math.log(T))  # uniform attention: ln n
    one_hot = torch.eye(T)[None, None]
    assert entropy(one_hot, mask, torch.ones(1, T, dtype=torch.bool)).item() == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# BiT's elastic activation


def _surrogate(x, alpha, b, signed, bits, frozen):
    """LSQ's straight-through surrogate of BiT's quantizer, written from the equations: the value
    alpha * (clamp(x'/alpha) + c) with the rounding residual c frozen (signed 1-bit: alpha sign(x'),
    the sign frozen), x' = x + b. Its exact derivatives are what the estimator claims."""
    qn, qp = elastic_levels(signed, bits)
    xp = x + b
    if signed and bits == 1:
        return alpha * frozen  # frozen = sign(x'), constant
    return alpha * (torch.clamp(xp / alpha, qn, qp) + frozen)


@pytest.mark.parametrize("signed,bits", [(True, 1), (False, 1), (True, 4), (False, 2)])
def test_elastic_gradients_match_finite_differences(signed, bits):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 16, generator=g, dtype=torch.float64) * 0.8 + (0.0 if signed else 0.5)
    alpha = torch.tensor(0.7 if bits == 1 else 0.3, dtype=torch.float64)
    b = torch.randn(16, generator=g, dtype=torch.float64) * 0.1
    up = torch.randn(6, 16, generator=g, dtype=torch.float64)  # dL/dy
    # the module's gradients
    xa, aa, ba = x.clone().requires_grad_(), alpha.clone().requires_grad_(), b.clone().requires_grad_()
    y = _Elastic.apply(xa + ba, aa, signed, bits)
    (y * up).sum().backward()
    # value: the forward is the quantizer itself
    qn, qp = elastic_levels(signed, bits)
    xp = (x + b)
    want = alpha * (torch.where(xp >= 0, 1.0, -1.0).double() if (signed and bits == 1) else torch.clamp(torch.round(xp / alpha), qn, qp))
    assert torch.allclose(y.detach(), want)
    # reference: central finite differences of the surrogate (rounding frozen at the evaluation point)
    q0 = xp / alpha
    frozen = torch.where(xp >= 0, 1.0, -1.0).double() if (signed and bits == 1) else torch.round(torch.clamp(q0, qn, qp)) - torch.clamp(q0, qn, qp)
    gs = 1.0 / math.sqrt(x.numel() * qp)
    eps = 1e-6
    L = lambda xx, aa_, bb: float((_surrogate(xx, aa_, bb, signed, bits, frozen) * up).sum())  # noqa: E731
    d_alpha = (L(x, alpha + eps, b) - L(x, alpha - eps, b)) / (2 * eps)
    assert aa.grad.item() == pytest.approx(gs * d_alpha, rel=1e-6, abs=1e-9)
    if not (signed and bits == 1):  # signed 1-bit: the surrogate's sign is frozen, the estimator is the clip window
        d_b = torch.tensor([(L(x, alpha, b + eps * torch.eye(16, dtype=torch.float64)[j]) - L(x, alpha, b - eps * torch.eye(16, dtype=torch.float64)[j])) / (2 * eps)
                            for j in range(16)], dtype=torch.float64)
        assert torch.allclose(ba.grad, d_b, atol=1e-6)
    else:
        inside = ((xp / alpha).abs() <= 1).double()
        assert torch.allclose(xa.grad, up * inside)


def test_elastic_initialises_from_the_first_batch_and_has_a_shift_only_on_linears():
    x = torch.randn(4, 10) * 2
    act = ElasticAct("elastic", True, 1, features=10)
    act(x)
    assert act.alpha.item() == pytest.approx(2 * x.abs().mean().item(), rel=1e-5)
    u = make_act("elastic01_4")
    u(x.abs())
    assert u.alpha.item() == pytest.approx(4 * x.abs().mean().item() / math.sqrt(15), rel=1e-4)  # from the unshifted input (BiT)
    assert make_act("lsq4", features=10).move is None and make_act("elastic", features=10).move is not None
    assert set(ELASTIC) >= {"elastic", "elastic01", "lsq1", "lsq01_4"}


@pytest.mark.parametrize("name, signed, bits", [("elastic", True, 1), ("elastic01", False, 1), ("elastic01_2", False, 2),
                                                ("elastic4", True, 4), ("lsq01_4", False, 4)])
def test_elastic_equals_bits_reference_code(name, signed, bits):
    """Value, input gradient and step-size gradient against a port of BiT's quantizers
    (tests/reference/bit_ref.py): the unsigned k-bit path takes the tensor's minimum off and puts it back."""
    from tests.reference.bit_ref import elastic, init_alpha

    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 12, generator=g, dtype=torch.float64) * 0.9 + 0.3
    up = torch.randn(5, 12, generator=g, dtype=torch.float64)
    act = make_act(name).double()
    xa = x.clone().requires_grad_()
    y = act(xa)
    (y * up).sum().backward()
    alpha = init_alpha(x.numpy(), bits, signed)
    assert act.alpha.item() == pytest.approx(alpha, rel=1e-6)
    want_y, want_dx, want_da = elastic(x.numpy(), act.alpha.item(), bits, signed, up.numpy())
    nonzero = x.numpy() != 0
    np.testing.assert_allclose(y.detach().numpy()[nonzero], want_y[nonzero], atol=1e-12)
    np.testing.assert_allclose(xa.grad.numpy(), want_dx, atol=1e-12)
    assert act.alpha.grad.item() == pytest.approx(want_da, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# BinaryBERT's ternary weight splitting


@pytest.mark.parametrize("per_channel", [False, True])
def test_tws_split_is_exact(per_channel):
    w = torch.randn(32, 24, dtype=torch.float64) * 0.02
    w1, w2 = tws_split(w, per_channel)
    t, _, _ = ternarize(w, per_channel)
    # reference: TWN from its definition, in numpy
    wn = w.numpy()
    groups = wn if per_channel else wn.reshape(1, -1)
    ref = []
    for row in groups:
        d = 0.7 * np.abs(row).mean()
        big = np.abs(row) > d
        a = np.abs(row[big]).mean()
        ref.append(a * np.sign(row) * big)
    assert np.allclose(t.numpy(), np.array(ref).reshape(wn.shape))
    assert torch.allclose(w1 + w2, w)
    assert torch.allclose(bwn(w1, per_channel) + bwn(w2, per_channel), t, atol=1e-15)


def test_splitting_a_ternary_model_gives_the_same_outputs(tiny_model, tiny_splits):
    """The ternary model (TWN weights, LSQ inputs), split into the binary model, computes the same function
    (in float64: in float32 the split's rounding, ~1e-9, can flip a 1-bit activation sitting on its threshold).
    The untrained model's zero biases would put integer sums of +-1 products exactly on sign's threshold, so
    they get small random values first, as a trained model has."""
    m = copy.deepcopy(tiny_model).double().eval()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.01)
    quantize_(m, binarybert_spec("twn", 1))
    ids = next(iter(tiny_splits.test.head(32).batches(32)))[0]
    with torch.no_grad():
        before = m(ids)  # initialises the LSQ scales
        quantize_(m, binarybert_spec("binarybert", 1))
        after = m(ids)
    assert m.layers[0].attn.q.method.method == "binarybert"
    assert torch.allclose(before, after, atol=1e-12), (before - after).abs().max()
    s = model_size(m)
    q = next(c for c in s.components if c.name == "layers.0.attn.q")
    assert q.bits["codes"] == 2 * q.n_weights  # two binary matrices per split linear


# ---------------------------------------------------------------------------------------------
# BiBERT's weights and direction-matching distillation


def test_bibert_weight_binarizer_against_numpy():
    w = torch.randn(8, 12) * 0.05 + 0.01
    q = BINARIZERS["bibert"]()(w)
    wn = w.numpy()
    ref = np.abs(wn).mean(1, keepdims=True) * np.where(wn - wn.mean(1, keepdims=True) >= 0, 1.0, -1.0)
    assert np.allclose(q.numpy(), ref)


def test_dmd_loss_against_a_float64_reference():
    g = torch.Generator().manual_seed(2)
    ids = torch.tensor([[5, 6, 7, 0], [5, 6, 0, 0]])  # 0 = padding
    mk = lambda: tuple(torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64) for _ in range(3))  # noqa: E731
    s, t = [mk(), mk()], [mk(), mk()]
    got = dmd_loss(s, t, ids).item()
    valid = (ids != 0).numpy().astype(float)
    m = valid[:, None, :, None] * valid[:, None, None, :]
    ref = 0.0
    for fs, ft in zip(s, t):
        for a, b in zip(fs, ft):
            pa = np.einsum("bhtd,bhsd->bhts", a.numpy(), a.numpy()) * m
            pb = np.einsum("bhtd,bhsd->bhts", b.numpy(), b.numpy()) * m
            ref += np.sqrt(((pa / np.sqrt((pa**2).sum()) - pb / np.sqrt((pb**2).sum())) ** 2).sum())
    assert got == pytest.approx(ref, rel=1e-10)
    assert dmd_loss(s, s, ids).item() == pytest.approx(0.0, abs=1e-12)


def test_hidden_loss_kinds_against_references():
    g = torch.Generator().manual_seed(3)
    ids = torch.tensor([[5, 6, 0], [7, 0, 0]])
    hs = [torch.randn(2, 3, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    ht = [torch.randn(2, 3, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    v = (ids != 0).numpy()
    mse = sum(((a.numpy()[v] - b.numpy()[v]) ** 2).mean() for a, b in zip(hs, ht))
    assert hidden_loss(hs, ht, ids, "mse").item() == pytest.approx(mse)
    bib = sum(np.sqrt(((a.numpy()[v] / np.sqrt((a.numpy()[v] ** 2).sum()) - b.numpy()[v] / np.sqrt((b.numpy()[v] ** 2).sum())) ** 2).sum())
              for a, b in zip(hs, ht))
    assert hidden_loss(hs, ht, ids, "bibert").item() == pytest.approx(bib)
    with pytest.raises(ValueError, match="hidden distillation kind"):
        hidden_loss(hs, ht, ids, "nope")


# ---------------------------------------------------------------------------------------------
# BEBERT


def test_samme_update_by_hand():
    w = np.full(4, 0.25)
    wrong = np.array([1.0, 0.0, 0.0, 0.0])
    nw, a, err = samme_update(w, wrong, 4)
    assert err == pytest.approx(0.25)
    assert a == pytest.approx(math.log(3) + math.log(3))
    raw = np.array([0.25 * 9, 0.25, 0.25, 0.25])  # exp(a) = 9 on the wrong row
    assert np.allclose(nw, raw / raw.sum())


def test_ensemble_combines_weighted_logits_and_counts_every_member(tiny_model, tiny_splits):
    a, b = copy.deepcopy(tiny_model).eval(), copy.deepcopy(tiny_model).eval()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.01)
    e = Ensemble([a, b], [1.0, 3.0]).eval()
    ids = next(iter(tiny_splits.test.head(8).batches(8)))[0]
    with torch.no_grad():
        assert torch.allclose(e(ids), 0.25 * a(ids) + 0.75 * b(ids), atol=1e-6)
    assert model_size(e).total_bits == model_size(a).total_bits + model_size(b).total_bits
    assert 0.0 <= evaluate(e, tiny_splits.test).accuracy <= 1.0


# ---------------------------------------------------------------------------------------------
# specs and recipes


def test_spec_json_round_trip_with_qkv_and_attention():
    spec = RECIPES["bibert"].spec
    assert QuantSpec.from_json(spec.to_json()) == spec
    plain = QuantSpec((Rule("QK", MethodConfig("xnor")),))
    assert "attn_qkv" not in plain.to_json()  # old specs keep their JSON
    with pytest.raises(ValueError, match="attn_qkv"):
        QuantSpec(attn_qkv="nope")
    with pytest.raises(ValueError):
        QuantSpec.from_json('{"rules": [], "attn_probs": "sideways"}')


def test_stage_validation():
    with pytest.raises(ValueError, match="frac"):
        Stage(QuantSpec(), 0.0)
    with pytest.raises(ValueError, match="teacher"):
        Stage(QuantSpec(), 1.0, "nobody")


@pytest.fixture(scope="module")
def tiny_teacher(tiny_splits):
    from binlab.presets import build_model, get_preset
    from binlab.training.train import train as fit

    m = build_model(get_preset("tiny"), tiny_splits, seed=0)
    fit(m, tiny_splits.train.head(640), TrainConfig(epochs=2, lr=3e-3, warmup=0.0, batch_size=32, seed=0, device="cpu"))
    return m.eval()


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_recipe_lowers_the_loss_on_the_tiny_preset(name, tiny_teacher, tiny_splits):
    """A recipe's first stage lowers the training loss, distilling from a trained tiny teacher, and
    every later stage (and member) ends below the loss peak its change of quantizer causes."""
    recipe = RECIPES[name]
    train = tiny_splits.train.head(320)
    cfg = QATConfig(TrainConfig(epochs=3, lr=3e-3, warmup=0.0, batch_size=32, seed=0, device="cpu", distill=0.5))
    losses: dict = {}
    cb = lambda ev: losses.setdefault((ev.get("member", 0), ev["stage"]), []).append(ev["loss"]) if ev.get("kind") == "step" else None  # noqa: E731
    torch.manual_seed(0)
    out = run(recipe, copy.deepcopy(tiny_teacher), train, cfg, callback=cb)
    assert len(losses) == len(recipe.stages) * recipe.ensemble
    stages = list(losses.items())
    first = stages[0][1]
    assert np.mean(first[-5:]) < np.mean(first[:5]), (name, first[:5], first[-5:])  # training from the fp32 model lowers the loss
    for stage, ls in stages[1:]:  # a later stage starts near its predecessor's optimum; a change of quantizer bumps the loss first
        assert len(ls) >= 10
        peak = max(np.mean(ls[i:i + 5]) for i in range(len(ls) // 2 - 4))  # the first half's worst window
        assert np.mean(ls[-5:]) < peak, (name, stage, ls)  # the last window is not part of the peak it must beat
    assert evaluate(out, tiny_splits.val).accuracy > 0.3
    if recipe.ensemble > 1:
        assert isinstance(out, Ensemble) and len(out.members) == recipe.ensemble


def test_attention_maps_follow_the_spec(tiny_model, tiny_splits):
    ids = next(iter(tiny_splits.test.head(4).batches(4)))[0]
    m = copy.deepcopy(tiny_model)
    fp = maps(m, ids)
    assert len(fp) == len(m.layers) and fp[0][0].shape[:2] == (ids.shape[0], m.layers[0].attn.n_heads)
    assert torch.allclose(fp[0][0].sum(-1), torch.ones(()))  # softmax rows
    quantize_(m, RECIPES["bibert"].spec)
    b = maps(m, ids)[0][0]
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    quantize_(m, QuantSpec())  # restored: back to softmax
    assert m.layers[0].attn.prob_quantizer is None and m.layers[0].attn.qkv_quantizer is None


def test_bits_ladder_starts_the_1bit_step_from_the_w1a2_quantizers(tiny_model, tiny_splits):
    """BiT's second step loads the W1A2 student: every elastic quantizer's step size and shift carry over."""
    from binlab.methods.activations import ElasticAct
    from binlab.training.recipes import bit_spec

    ids = next(iter(tiny_splits.test.head(8).batches(8)))[0]
    m = copy.deepcopy(tiny_model).eval()
    quantize_(m, bit_spec(2))
    with torch.no_grad():
        m(ids)  # the quantizers take their scale from a first batch
        acts = {n: a for n, a in m.named_modules() if isinstance(a, ElasticAct)}
        for i, a in enumerate(acts.values()):
            a.alpha.fill_(0.1 + 0.01 * i)
            if a.move is not None:
                a.move.fill_(0.02 * i)
    learned = {n: (a.alpha.item(), None if a.move is None else a.move.clone()) for n, a in acts.items()}
    quantize_(m, bit_spec(1))
    after = {n: a for n, a in m.named_modules() if isinstance(a, ElasticAct)}
    assert set(after) == set(learned) and len(after) >= 5
    for n, a in after.items():
        assert a.bits == 1 and bool(a.initialized)
        assert a.alpha.item() == pytest.approx(learned[n][0])
        if a.move is not None:
            assert torch.equal(a.move, learned[n][1])


def test_bipft_residual_starts_as_a_no_op_and_learns(tiny_model, tiny_splits):
    """BiPFT's estimators start at zero contribution (the layer computes what it did without them);
    at the first step P_q, M_q and p_v get a gradient and P_k, M_k none (they enter only through
    products with P_q X and M_q X, which are 0); the size counts them as fp32: (4 r + 1)(d + 1) per layer."""
    ids = next(iter(tiny_splits.test.head(8).batches(8)))[0]
    # softmax attention here: on an untrained model the attention is near uniform, and BiT's {0,1}
    # quantizer (threshold 2 / T at its data initialisation) would keep no key, leaving V without a gradient
    base = QuantSpec(RECIPES["bit"].spec.rules, attn_qkv="elastic")
    m = copy.deepcopy(tiny_model).eval()
    quantize_(m, base)
    with torch.no_grad():
        before = m(ids)
    size_before = model_size(m).total_bits
    from dataclasses import replace

    quantize_(m, replace(base, attn_residual=1))
    with torch.no_grad():
        after = m(ids)
    assert torch.allclose(before, after, atol=1e-6)
    d = m.config.d_model
    assert model_size(m).total_bits - size_before == 32 * (4 * 1 + 1) * (d + 1) * m.config.n_layers
    m.train()
    m(ids).sum().backward()
    r = m.layers[0].attn.residual
    for i, learns in enumerate((True, False, True, False)):  # P_q, P_k, M_q, M_k
        assert (r.maps.grad[i].abs().sum() > 0) == learns, i
    assert r.v.grad.abs().sum() > 0
    spec = replace(base, attn_residual=2)
    assert QuantSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="attn_residual"):
        QuantSpec(attn_residual=-1)


def test_t9_rows_name_their_methods_and_the_finding_compares_orderings():
    from binlab.experiments.catalog import EXPERIMENTS, Config
    from binlab.experiments.findings import t9_finding

    labels = [c.label for c in EXPERIMENTS["T9"].configs]
    for name in ("BiBERT", "BiT", "BinaryBERT", "BEBERT", "two-stage"):
        assert any(label.startswith(name) for label in labels), name
    assert all("W1A1" in c.label or "W1A4" in c.label for c in EXPERIMENTS["T9"].configs if c.mode != "fp" and "control" not in c.label)
    assert any(c.mode == "fp" for c in EXPERIMENTS["T9"].configs)
    with pytest.raises(ValueError, match="final spec"):
        Config("x", QuantSpec(), "qat", recipe="bibert")
    rows = [{"label": "fp32 baseline", "mode": "fp", "accuracy": 90.0},
            {"label": "BiT W1A1", "mode": "qat", "accuracy": 89.0, "survey": "GLUE avg 78.0 (W1A1)", "reduction_percent": 95.0},
            {"label": "BiBERT W1A1", "mode": "qat", "accuracy": 88.0, "survey": "GLUE avg 67.0 (W1A1)", "reduction_percent": 95.0},
            {"label": "BinaryBERT W1A1", "mode": "qat", "accuracy": 87.0, "survey": "GLUE avg 50.1 (W1A1)", "reduction_percent": 92.0}]
    f = t9_finding(rows)  # one seed each: no ordering, no "best"
    assert "no ordering of the recipes is claimed" in f and "Best" not in f and "BiT W1A1 89.00 %" in f
    # three seeds with per-row results: BiT clearly ahead of BiBERT and BinaryBERT, which the rows cannot tell apart
    from binlab.experiments.stats import pack_correct, unpack_correct

    rng = np.random.default_rng(0)
    n = 3000
    truth = rng.random(n) < 0.85
    rows[0] |= {"test_correct_per_seed": [pack_correct(truth)] * 3, "random_seeds": [0, 1, 2], "baseline_seeds": [0, 1, 2]}
    for r, flip, val in ((rows[1], 0.02, 88.0), (rows[2], 0.10, 89.0), (rows[3], 0.10, 87.5)):
        per = [pack_correct(truth ^ (rng.random(n) < flip)) for _ in range(3)]
        r |= {"test_correct_per_seed": per, "random_seeds": [0, 1, 2], "baseline_seeds": [0, 1, 2], "val_accuracy": val,
              "accuracy": 100 * float(np.mean([unpack_correct(t).mean() for t in per]))}
    f = t9_finding(rows)
    # best by validation is BiBERT (89.0), although BiT is best on test: the finding says so, with what test separates
    assert "Best W1A1 by validation (3 seeds each): BiBERT W1A1" in f and "measurably behind BiT W1A1" in f
    assert "no measurable difference from BinaryBERT W1A1" in f
    assert "our intervals confirm 2 (BiT W1A1 > BiBERT W1A1, BiT W1A1 > BinaryBERT W1A1), reverse 0 and cannot separate 1" in f
    # a one-seed screen with the rows chosen on validation re-run with seeds: the seeded rows are compared with
    # each other and their controls, the one-seed rows listed and not ranked, no "best" over the whole table
    screen = [dict(r) for r in rows]
    single = screen[3]
    for k in ("test_correct_per_seed", "baseline_seeds"):
        single.pop(k)
    single |= {"random_seeds": [0], "diff": -3.0, "diff_ci95": [-3.5, -2.5]}
    screen[1] |= {"diff_vs_control": -1.0, "diff_vs_control_ci95": [-1.6, -0.4]}
    f = t9_finding(screen)
    assert "Rows re-run with 3 seeds" in f and "BiBERT W1A1, validation 89.00 % (mean over seeds)" in f
    assert "against its matched control -1.00 [-1.60, -0.40]" in f
    from binlab.experiments.findings import compare

    bit, bibert = (next(r for r in screen if r["label"].split(":")[0] == n) for n in ("BiT W1A1", "BiBERT W1A1"))
    d = compare(bit, bibert)  # the pair's interval, printed with the claim
    assert d.low > 0
    assert f"Between them: BiT W1A1 measurably ahead of BiBERT W1A1 ({100 * d.diff:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}] points)." in f
    assert "The other W1A1 row has one seed" in f and f"BinaryBERT W1A1 {single['accuracy']:.2f} % (-3.00 [-3.50, -2.50])" in f
    assert "Best" not in f and "One seed per row" not in f


def test_bert_era_logit_term_is_the_codes_soft_cross_entropy():
    """``kd_loss(form="soft_ce")`` equals a port of the BERT-era codes' ``soft_cross_entropy``
    (tests/reference/bert_kd_ref.py); BiBERT's, BiT's and BinaryBERT's stages use it at T = 1, and
    BiPFT fine-tunes with cross-entropy only, as its code does."""
    from binlab.nn.objective import kd_loss
    from binlab.training.qat import QATConfig
    from binlab.training.recipes import RECIPES, stage_budget
    from tests.reference.bert_kd_ref import soft_cross_entropy

    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(6, 4, generator=g, dtype=torch.float64) * 2, torch.randn(6, 4, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 4, (6,), generator=g)
    got = kd_loss(s, t, None, y, "classify", 1.0, 1.0, form="soft_ce")
    assert got.item() == pytest.approx(soft_cross_entropy(s.numpy(), t.numpy()), rel=1e-12)
    mixed = kd_loss(s, t, None, y, "classify", 0.5, 1.0, form="soft_ce")
    ce = torch.nn.functional.cross_entropy(s, y).item()
    assert mixed.item() == pytest.approx(0.5 * ce + 0.5 * soft_cross_entropy(s.numpy(), t.numpy()), rel=1e-12)
    with pytest.raises(ValueError, match="form"):
        kd_loss(s, t, None, y, "classify", 1.0, 1.0, form="other")
    base = QATConfig()
    for name in ("bibert", "bit", "binarybert", "bebert"):
        for stage in RECIPES[name].stages:
            tr = stage_budget(base, stage).train
            assert (tr.kd_form, tr.temperature) == ("soft_ce", 1.0), name
    (bipft,) = RECIPES["bipft"].stages
    b = stage_budget(base, bipft)
    assert b.train.distill == 0.0 and b.hidden_distill == 0.0

