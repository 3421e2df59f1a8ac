"""The LSTM era: the recurrent language model against torch.nn.LSTM, its components under quantize_,
and loss-aware binarization (LAB) against the port of its reference code (tests/reference/lab_ref.py)."""
import numpy as np
import pytest
import torch

from binlab.methods import BINARIZERS
from binlab.nn.model import ModelConfig, build
from binlab.nn.quantize import MethodConfig, QuantSpec, quantizable, quantize_, resolve
from tests.reference import lab_ref

CFG = ModelConfig(task="lm", arch="lstm", vocab_size=60, max_len=16, d_model=8, n_heads=1, d_ff=8, n_layers=2, dropout=0.0)


def test_the_lstm_is_torchs_lstm_with_named_matrices():
    """Same weights in torch.nn.LSTM (an independent implementation of the same cell) give the same states."""
    torch.manual_seed(0)
    m = build(CFG).eval()
    assert list(quantizable(m)) == ["embed.token", "layers.0.rnn.ih", "layers.0.rnn.hh", "layers.1.rnn.ih", "layers.1.rnn.hh", "head"]
    ref = torch.nn.LSTM(8, 8, num_layers=2, batch_first=True)
    with torch.no_grad():
        for i in range(2):
            getattr(ref, f"weight_ih_l{i}").copy_(m.layers[i].rnn.ih.weight)
            getattr(ref, f"weight_hh_l{i}").copy_(m.layers[i].rnn.hh.weight)
            getattr(ref, f"bias_ih_l{i}").copy_(m.layers[i].rnn.ih.bias)
            getattr(ref, f"bias_hh_l{i}").zero_()
        ids = torch.randint(1, 60, (3, 11))
        torch.testing.assert_close(m(ids), m.head(ref(m.embed(ids))[0]), rtol=0, atol=1e-5)
    assert resolve(m, "recurrent") == ["layers.0.rnn.ih", "layers.0.rnn.hh", "layers.1.rnn.ih", "layers.1.rnn.hh"]
    assert resolve(m, "encoder") == resolve(m, "recurrent")
    with pytest.raises(ValueError, match="language model"):
        ModelConfig(arch="lstm")


def test_the_step_by_step_path_equals_the_fused_one():
    """With an input quantizer on W_hh the recurrence runs in Python; with a plain XNOR W_hh, in torch's
    kernel: the same binary weights give the same output."""
    torch.manual_seed(1)
    m = build(CFG).eval()
    ids = torch.randint(1, 60, (2, 9))
    quantize_(m, QuantSpec.simple("recurrent", "xnor"))
    fused = m(ids)
    quantize_(m, QuantSpec.simple("recurrent", MethodConfig("xnor", act="sign_unscaled")))
    looped = m(ids)
    # the loop path is a different function (sign inputs), so check it against a hand-written loop instead
    with torch.no_grad():
        x = m.embed(ids)
        for layer in m.layers:
            r = layer.rnn
            gx = r.ih(x)
            h = torch.zeros(2, 8)
            c = torch.zeros(2, 8)
            out = []
            for t in range(ids.shape[1]):
                hb = torch.where(h >= 0, 1.0, -1.0)
                z = gx[:, t] + hb @ r.hh.quantized_weight().T
                i, f, g, o = z.chunk(4, -1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                out.append(h)
            x = torch.stack(out, 1)
        torch.testing.assert_close(looped, m.head(x), rtol=0, atol=1e-5)
    assert not torch.allclose(fused, looped)


def test_lab_is_the_reference_binarization():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (16, 24))
    acc = rng.gamma(0.5, 1e-4, (16, 24))  # a second moment: positive, uneven across weights
    q = BINARIZERS["lab"]()
    q.set_second_moment(torch.tensor(acc, dtype=torch.float64))
    np.testing.assert_allclose(q(torch.tensor(w)).numpy(), lab_ref.binarize(w, acc), rtol=1e-12)
    # one scale per gate matrix, as the code keeps an LSTM's four gates apart
    q4 = BINARIZERS["lab"](blocks=4)
    q4.set_second_moment(torch.tensor(acc, dtype=torch.float64))
    ref4 = np.concatenate([lab_ref.binarize(w[4 * j:4 * j + 4], acc[4 * j:4 * j + 4]) for j in range(4)])
    np.testing.assert_allclose(q4(torch.tensor(w)).numpy(), ref4, rtol=1e-12)
    # no optimizer yet: XNOR's per-tensor scale, mean |w|
    q0 = BINARIZERS["lab"]()
    np.testing.assert_allclose(q0(torch.tensor(w)).numpy(), np.abs(w).mean() * np.where(w >= 0, 1, -1), rtol=1e-12)
    assert q.storage((16, 24)) == {"codes": 16 * 24, "scales": 32} and q4.storage((16, 24))["scales"] == 4 * 32
    with pytest.raises(ValueError, match="equal blocks"):
        BINARIZERS["lab"](blocks=5).storage((16, 24))


def test_lab_reads_the_optimizers_second_moment_as_the_code_accumulates_it(tiny_splits):
    """QAT with LAB: each step's gradient with respect to the binary weight, run through the code's
    accumulator, gives the second moment LAB holds; latent weights stay in [-1, 1]."""
    from binlab.training.qat import QATConfig, qat
    from binlab.training.train import TrainConfig

    torch.manual_seed(0)
    model = build(ModelConfig(vocab_size=tiny_splits.vocab_size, max_len=64, d_model=16, n_heads=2, d_ff=32, n_layers=1, dropout=0.0))
    grads: dict[str, list[np.ndarray]] = {}
    seen = {}
    import binlab.training.qat as q_mod

    real_train = q_mod.train

    def train_with_hooks(student, *a, **k):  # each step's gradient, captured through the weights' hooks
        for name, mod in student.named_modules():
            if hasattr(mod, "quantizer") and mod.method.method == "lab":
                seen[name] = mod
                mod.weight.register_hook(lambda g, n=name: grads.setdefault(n, []).append(g.detach().double().numpy().copy()))
        return real_train(student, *a, **k)

    q_mod.train = train_with_hooks
    try:
        cfg = QATConfig(TrainConfig(epochs=1, batch_size=64, lr=1e-2, warmup=0.0, distill=0.0, grad_clip=0.0))
        qat(model, QuantSpec.simple("layers.0.ffn.*", "lab"), tiny_splits.train.head(256), cfg)
    finally:
        q_mod.train = real_train
    assert set(seen) == {"layers.0.ffn.up", "layers.0.ffn.down"}
    for name, mod in seen.items():
        acc = np.zeros(mod.weight.shape)
        for g in grads[name]:  # identity estimator: the latent gradient is the gradient w.r.t. the binary weight
            acc = lab_ref.accumulate(acc, g)
        v = mod.quantizer._v.double().numpy()
        np.testing.assert_allclose(v, acc, rtol=1e-4, atol=1e-12)
        assert len(grads[name]) == 4 and mod.weight.abs().max() <= 1.0
        np.testing.assert_allclose(mod.quantizer(mod.weight.detach().double()).numpy(),
                                   lab_ref.binarize(mod.weight.detach().double().numpy(), acc), rtol=1e-4)


def test_the_lab_lays_out_and_probes_an_lstm(tiny_splits):
    """The Binarize page's layout and the Sensitivity page's probe work on a recurrent model (no attention
    pairs or groups offered where there is no attention)."""
    from binlab.lab.live import layout, sensitivity

    torch.manual_seed(0)
    cfg = ModelConfig(task="lm", arch="lstm", vocab_size=tiny_splits.vocab_size, max_len=64, d_model=16, n_heads=1, d_ff=16, n_layers=2, dropout=0.0)
    m = build(cfg).eval()
    lay = layout(m)
    assert lay["embeddings"] == ["embed.token"] and lay["head"] == "head"
    assert lay["layers"] == [[("W_ih", f"layers.{i}.rnn.ih"), ("W_hh", f"layers.{i}.rnn.hh")] for i in range(2)]
    rows = sensitivity(m, tiny_splits.val, MethodConfig("xnor"), val_rows=40)
    labels = [r["label"] for r in rows]
    assert "L1 W_hh" in labels and "recurrent" in labels and "QK" not in labels and "attention" not in labels
    assert all(np.isfinite(r["perplexity"]) for r in rows)


def test_t10_runs_on_the_tiny_lstm(fixture_data, tmp_path):
    """The LSTM era's table runs end to end on the test preset: every row has a perplexity, a size and the
    bits its method stores (the test fixture's vocabulary is tiny, so which part holds the bits is the
    lstm preset's question, not this one's)."""
    import json

    from binlab.experiments import tables

    md = tables.run("T10", preset="tiny-lstm", source=str(fixture_data), fast=True, out_dir=tmp_path, only=[0, 1, 2, 6])
    rows = {r["label"]: r for r in json.loads(md.with_suffix(".json").read_text())["rows"]}
    assert all(np.isfinite(r["perplexity"]) and r["megabytes"] > 0 for r in rows.values())
    rec, emb = rows["XNOR, recurrent weights only (PTQ)"], rows["XNOR, embeddings only (PTQ)"]
    assert emb["reduction_percent"] > 0 and rec["reduction_percent"] > 0 and rows["fp32 baseline"]["reduction_percent"] == 0
    assert rows["LAB: recurrent weights only, one scale per gate, QAT"]["bits_per_quantized_weight"] < 1.1


def test_t10_finding_reads_the_rows():
    """The generated finding names the part that holds more bits (exact sizes) and, with one seed and no
    interval on perplexity, leaves Zheng and Tang's regularizer reading undecided whichever way the
    numbers fall."""
    from binlab.experiments.catalog import control
    from binlab.experiments.findings import t10_finding

    def rows(w_ppl):
        return [{"label": "fp32 baseline", "mode": "fp", "perplexity": 150.0, "reduction_percent": 0.0},
                {"label": "XNOR, recurrent weights only (PTQ)", "mode": "ptq", "perplexity": 400.0, "reduction_percent": 19.0},
                {"label": "XNOR, embeddings only (PTQ)", "mode": "ptq", "perplexity": 300.0, "reduction_percent": 38.0},
                {"label": "XNOR on LSTMs (Zheng and Tang): recurrent weights only, QAT", "mode": "qat", "perplexity": w_ppl,
                 "reduction_percent": 19.0, "control": control().label},
                {"label": control().label, "mode": "qat", "perplexity": 149.0, "reduction_percent": 0.0}]

    for w in (160.0, 140.0):
        text = t10_finding(rows(w))
        assert "the embeddings hold more of the bits" in text and "its fp32 control trained the same way 149.0" in text
        assert "is not decided" in text and " holds" not in text
    assert t10_finding([]) == ""
    # with seeds: the verdict follows the intervals of the ratios against fp32 and against the control
    cases = {((0.93, 0.97), (0.95, 0.99)): "holds here", ((0.93, 0.97), (1.01, 1.03)): "not against the control",
             ((1.02, 1.05), (1.03, 1.06)): "is not reproduced", ((0.98, 1.02), (0.99, 1.03)): "is not decided"}
    for (ci_fp, ci_ctl), want in cases.items():
        rs = rows(150.0)
        rs[3] |= {"random_seeds": [0, 1, 2], "ratio": sum(ci_fp) / 2, "ratio_ci95": list(ci_fp),
                  "ratio_vs_control": sum(ci_ctl) / 2, "ratio_vs_control_ci95": list(ci_ctl)}
        text = t10_finding(rs)
        assert want in text and "3 seeds" in text, (want, text)
    # on a transformer preset the same rows binarize the encoder linears, and the text names them
    rs = rows(150.0)
    assert "the recurrent weights" in t10_finding(rs, preset="lstm")
    on_lm = t10_finding(rs, preset="lm")
    assert "the encoder linears" in on_lm and "recurrent" not in on_lm


def test_t10_finding_on_a_classifier_reads_accuracy_intervals():
    """On a classifier preset (scratch) the rows carry accuracy, not perplexity: the verdicts follow the
    accuracy differences' intervals (higher is better, so the orientation flips against perplexity)."""
    from binlab.experiments.catalog import control
    from binlab.experiments.findings import t10_finding

    def rows():
        return [{"label": "fp32 baseline", "mode": "fp", "accuracy": 87.0, "reduction_percent": 0.0},
                {"label": "XNOR, recurrent weights only (PTQ)", "mode": "ptq", "accuracy": 70.0, "reduction_percent": 4.0,
                 "diff": -17.0, "diff_ci95": [-18.0, -16.0]},
                {"label": "XNOR, embeddings only (PTQ)", "mode": "ptq", "accuracy": 80.0, "reduction_percent": 90.0,
                 "diff": -7.0, "diff_ci95": [-8.0, -6.0]},
                {"label": "XNOR on LSTMs (Zheng and Tang): recurrent weights only, QAT", "mode": "qat", "accuracy": 86.0,
                 "reduction_percent": 4.0, "control": control().label},
                {"label": control().label, "mode": "qat", "accuracy": 87.1, "reduction_percent": 0.0}]

    text = t10_finding(rows(), preset="scratch")
    assert "accuracy 70.00 % and on the embeddings 80.00 % (fp32 87.00 %" in text and "-17.00 points [-18.00, -16.00]" in text
    assert "the embeddings hold more of the bits" in text and "the encoder linears" in text and "is not decided" in text
    cases = {((+0.2, +0.9), (+0.1, +0.5)): "holds here", ((+0.2, +0.9), (-0.5, -0.1)): "not against the control",
             ((-1.5, -0.4), (-1.2, -0.3)): "is not reproduced here: binarized, the encoder linears cost accuracy",
             ((-0.3, +0.4), (-0.3, +0.3)): "is not decided"}
    for (ci_fp, ci_ctl), want in cases.items():
        rs = rows()
        rs[3] |= {"random_seeds": [0, 1, 2], "diff": sum(ci_fp) / 2, "diff_ci95": list(ci_fp),
                  "diff_vs_control": sum(ci_ctl) / 2, "diff_vs_control_ci95": list(ci_ctl)}
        text = t10_finding(rs, preset="scratch")
        assert want in text and "accuracy differences in points" in text, (want, text)
    # the embeddings-only QAT row is set beside the linears-only one, with the share of the model each saves
    rs[3] |= {"reduction_percent": 4.0}
    rs.append({"label": "XNOR: embeddings only, QAT", "mode": "qat", "accuracy": 86.5, "reduction_percent": 90.0,
               "random_seeds": [0, 1, 2], "diff": -0.5, "diff_ci95": [-0.9, -0.1], "diff_vs_control": -0.6,
               "diff_vs_control_ci95": [-1.0, -0.2], "control": control().label})
    text = t10_finding(rs, preset="scratch")
    assert "The embeddings alone (XNOR, QAT): against its control -0.60 points [-1.00, -0.20]" in text
    assert "saving 90.0 % of the model against 4.0 %" in text
