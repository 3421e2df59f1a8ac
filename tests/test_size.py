import math

from binlab.nn.model import Classifier, ModelConfig
from binlab.nn.quantize import MethodConfig, QuantSpec, Rule, quantize_
from binlab.runtime.size import model_size

CFG = ModelConfig(vocab_size=100, max_len=16, d_model=8, n_heads=2, d_ff=16, n_layers=2)


def hand_count_fp32(c: ModelConfig) -> int:
    d, f, v, L = c.d_model, c.d_ff, c.vocab_size, c.max_len
    emb = v * d + L * d + 2 * d
    layer = 4 * (d * d + d) + 2 * d + (d * f + f) + (f * d + d) + 2 * d
    head = d * c.n_classes + c.n_classes
    return emb + c.n_layers * layer + head


def test_fp32_model_matches_hand_count():
    m = Classifier(CFG)
    r = model_size(m)
    assert r.n_params == hand_count_fp32(CFG) == sum(p.numel() for p in m.parameters())
    assert r.total_bits == 32 * r.n_params
    assert r.reduction == 0.0


def test_quantized_sizes_match_hand_count():
    m = Classifier(CFG)
    spec = QuantSpec((Rule("encoder", MethodConfig("xnor")),  # per-channel alpha
                      Rule("embed.token", MethodConfig("uniform", options={"bits": 2})),
                      Rule("layers.1.ffn.up", MethodConfig("bucket"))))
    quantize_(m, spec)
    d, f, n = CFG.d_model, CFG.d_ff, hand_count_fp32(CFG)
    # encoder linears: 1 bit per weight + 32-bit alpha per output row; bias stays fp32
    xnor_bits = lambda o, i: o * i + 32 * o + 32 * o  # noqa: E731
    enc = 2 * (4 * xnor_bits(d, d) + xnor_bits(d, f)) + xnor_bits(f, d)  # layer 1 ffn.up is bucket
    bucket = f * d + 2 * 32 * f + 32 * f
    emb = 2 * CFG.vocab_size * d + 32 * CFG.vocab_size
    quantized_params = 2 * (4 * (d * d + d) + (d * f + f) + (f * d + d)) + CFG.vocab_size * d
    rest = 32 * (n - quantized_params)
    r = model_size(m)
    assert r.total_bits == enc + bucket + emb + rest
    assert math.isclose(r.reduction, 100 * (32 * n - r.total_bits) / (32 * n))


def test_cli_size_json(fixture_data, capsys):
    """`binlab size --json` prints the same report as model_size, with total_bytes."""
    import json

    from binlab.cli import main
    from binlab.nn.quantize import QuantSpec, quantize_
    from binlab.presets import build_model, get_preset, load_data
    from binlab.runtime.size import model_size

    assert main(["size", "--preset", "tiny", "--data", str(fixture_data), "--target", "encoder", "--method", "xnor", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    p = get_preset("tiny")
    m = build_model(p, load_data(p, source=str(fixture_data)))
    quantize_(m, QuantSpec.simple("encoder", "xnor"))
    rep = model_size(m)
    assert out["summary"]["total_bytes"] == rep.total_bytes == rep.total_bits / 8
    assert {c["name"] for c in out["components"] if c["method"] == "xnor"} == {f"layers.0.{n}" for n in
                                                                              ("attn.q", "attn.k", "attn.v", "attn.o", "ffn.up", "ffn.down")}
