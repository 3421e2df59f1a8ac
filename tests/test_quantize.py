import copy

import pytest
import torch

from binlab.nn.quantize import MethodConfig, QuantLinear, QuantSpec, Rule, current_plan, plan, quantize_, restore_
from binlab.training.qat import QATConfig, ptq, qat
from binlab.training.train import TrainConfig, evaluate


def test_groups_and_patterns(tiny_model):
    assert set(plan(tiny_model, QuantSpec.simple("QK"))) == {"layers.0.attn.q", "layers.0.attn.k"}
    assert set(plan(tiny_model, QuantSpec.simple("layers.*.ffn.*"))) == {"layers.0.ffn.up", "layers.0.ffn.down"}
    assert "head" not in plan(tiny_model, QuantSpec.simple("all-except-head"))
    assert "head" in plan(tiny_model, QuantSpec.simple("all"))
    assert set(plan(tiny_model, QuantSpec.simple("embeddings"))) == {"embed.token", "embed.pos"}
    # later rules win
    p = plan(tiny_model, QuantSpec((Rule("attention", MethodConfig("xnor")), Rule("QK", MethodConfig("sign")))))
    assert p["layers.0.attn.q"].method == "sign" and p["layers.0.attn.v"].method == "xnor"


def test_quantize_then_restore_is_bit_identical(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    ids = torch.randint(1, 100, (4, 12))
    tiny_model.eval()
    ref = tiny_model(ids)
    quantize_(tiny_model, QuantSpec.simple("all", "bucket", options={"tau": 0.5}))
    assert len(current_plan(tiny_model)) == 9  # 2 embeddings + 6 linears + head
    assert not torch.allclose(tiny_model(ids), ref)
    restore_(tiny_model)
    assert current_plan(tiny_model) == {}
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(tiny_model(ids), ref)


def test_requantize_keeps_unchanged_modules(tiny_model):
    quantize_(tiny_model, QuantSpec.simple("attention", "xnor"))
    q_before = tiny_model.layers[0].attn.q
    quantize_(tiny_model, QuantSpec((Rule("attention", MethodConfig("xnor")), Rule("layers.0.attn.k", MethodConfig("sign")))))
    assert tiny_model.layers[0].attn.q is q_before
    assert tiny_model.layers[0].attn.k.method.method == "sign"
    quantize_(tiny_model, QuantSpec.simple("ffn", "xnor"))
    assert not isinstance(tiny_model.layers[0].attn.q, QuantLinear)


def test_spec_json_round_trip():
    spec = QuantSpec((Rule("QK", MethodConfig("bucket", options={"tau": 0.25}, ste="tanh")),
                      Rule("layers.*.ffn.down", MethodConfig("xnor", act="binary01")),
                      Rule("embeddings", MethodConfig("uniform", options={"bits": 2}))), attn_probs="binary01")
    assert QuantSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("make,match", [
    (lambda m: plan(m, QuantSpec.simple("layers.*.attn.x")), "Groups"),
    (lambda m: MethodConfig("nope"), "choose one of"),
    (lambda m: MethodConfig("bucket", options={"tau": 9.0}), r"\[-3.0, 3.0\]"),
    (lambda m: MethodConfig("xnor", options={"tau": 0.1}), "valid options"),
    (lambda m: MethodConfig("xnor", ste="magic"), "choose one of"),
    (lambda m: QuantSpec.from_json("{bad"), "JSON"),
    (lambda m: QuantSpec.from_json('{"rules": [], "x": 1}'), "keys"),
])
def test_bad_specs_raise_clear_errors(tiny_model, make, match):
    with pytest.raises(ValueError, match=match):
        make(tiny_model)


def test_unknown_target_names_valid_choices(tiny_model):
    with pytest.raises(ValueError) as e:
        quantize_(tiny_model, QuantSpec.simple("QZ"))
    assert "QKV" in str(e.value) and "layers.0.attn.q" in str(e.value)


def test_ptq_does_not_touch_the_original(tiny_model):
    before = copy.deepcopy(tiny_model.state_dict())
    m = ptq(tiny_model, QuantSpec.simple("encoder", "xnor"))
    assert current_plan(m) and not current_plan(tiny_model)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k])


def test_qat_smoke_lowers_loss(tiny_splits):
    from binlab.presets import get_baseline, get_preset

    teacher, _ = get_baseline(get_preset("tiny"), tiny_splits)
    spec = QuantSpec.simple("all-except-head", "xnor")
    loss_ptq = evaluate(ptq(teacher, spec), tiny_splits.val).loss
    student, hist = qat(teacher, spec, tiny_splits.train, QATConfig(TrainConfig(epochs=2, lr=3e-3, distill=0.5)))
    assert evaluate(student, tiny_splits.val).loss < loss_ptq
    assert sum(hist["loss"][-5:]) < sum(hist["loss"][:5])
    assert current_plan(student)  # still quantized
    # latent weights moved, and the gradient reached them through the STE
    assert not torch.equal(student.layers[0].attn.q.weight, teacher.layers[0].attn.q.weight)


def test_w1a1_forward_and_backward(tiny_model):
    spec = QuantSpec((Rule("encoder", MethodConfig("xnor", act="sign")), Rule("layers.*.ffn.down", MethodConfig("xnor", act="binary01"))),
                     attn_probs="binary01")
    quantize_(tiny_model, spec)
    tiny_model.train()
    ids = torch.randint(1, 100, (3, 10))
    out = tiny_model(ids)
    out.sum().backward()
    assert tiny_model.layers[0].attn.q.weight.grad is not None and torch.isfinite(out).all()


def test_freeze_keeps_embeddings_fixed(tiny_splits):
    from binlab.presets import get_baseline, get_preset

    teacher, _ = get_baseline(get_preset("tiny"), tiny_splits)
    spec = QuantSpec.simple("all-except-head", "xnor")
    student, _ = qat(teacher, spec, tiny_splits.train, QATConfig(TrainConfig(epochs=0.3, lr=3e-3), freeze=("embed.token.*",)))
    assert torch.equal(student.embed.token.weight, teacher.embed.token.weight)


def test_from_json_raises_only_value_errors_on_any_input():
    """Fuzz: arbitrary JSON values, and specs with wrong types in every slot, give ValueError or a spec."""
    import json

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from binlab.methods import BINARIZERS
    from binlab.nn.quantize import QuantSpec

    scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
    values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=6), c, max_size=3)), max_leaves=8)
    methods = st.sampled_from(sorted(BINARIZERS))
    option_names = st.sampled_from(sorted({o for c in BINARIZERS.values() for o in c.options()} | {"bogus"}))
    rule = st.fixed_dictionaries({"target": st.one_of(st.sampled_from(["QK", "encoder", "layers.0.attn.q", "nope.*"]), values),
                                  "method": st.one_of(values, st.fixed_dictionaries(
                                      {"method": st.one_of(methods, values), "options": st.one_of(st.dictionaries(option_names, scalars, max_size=2), values)}))})
    spec = st.one_of(values, st.fixed_dictionaries({"rules": st.one_of(st.lists(rule, max_size=3), values)}))

    @settings(max_examples=300, deadline=None)
    @given(spec)
    def check(obj):
        try:
            text = json.dumps(obj)
        except (ValueError, TypeError):
            return
        try:
            QuantSpec.from_json(text)
        except ValueError:
            pass

    check()
    for bad in ("", "nul", "[", '{"rules": 3}', '{"rules": [{"target": "QK"}]}', '{"rules": [{"target": "QK", "method": {"method": "bucket", "options": {"tau": "x"}}}]}'):
        try:
            QuantSpec.from_json(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} parsed")
