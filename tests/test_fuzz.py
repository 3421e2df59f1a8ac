"""Bad input is a ValueError that says what is wrong, never another exception: spec JSON (any text,
any JSON value, near-valid specs with wrong types and out-of-range options) and CLI arguments."""
import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binlab.methods import BINARIZERS
from binlab.nn.quantize import QuantSpec, quantize_

JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
VALUES = (st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.floats() | st.text(max_size=6)
          | st.lists(st.integers(), max_size=3) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def near_valid_specs(draw):
    """Specs that are valid JSON objects of the right outline, with anything in the fields."""
    method = draw(st.sampled_from(sorted(BINARIZERS)) | st.text(max_size=6))
    known = list(BINARIZERS[method].options()) if method in BINARIZERS else []
    keys = st.sampled_from(known) | st.text(max_size=6) if known else st.text(max_size=6)
    rule = {"target": draw(st.sampled_from(["QK", "encoder", "layers.0.attn.q", "embed.token", "head", "*", "layers.9.ffn.up", ""])
                           | VALUES),
            "method": {"method": method, "options": draw(st.dictionaries(keys, VALUES, max_size=3)),
                       **({"ste": draw(st.none() | st.text(max_size=6) | st.sampled_from(["clipped", "identity"]))} if draw(st.booleans()) else {}),
                       **({"act": draw(st.none() | st.sampled_from(["sign", "elastic", "bogus"]) | VALUES)} if draw(st.booleans()) else {})}}
    spec = {"rules": draw(st.lists(st.just(rule), max_size=2))}
    if draw(st.booleans()):
        spec["attn_probs"] = draw(st.none() | st.sampled_from(["bibert", "binary01", "nope"]) | VALUES)
    if draw(st.booleans()):
        spec["attn_residual"] = draw(VALUES)
    return spec


def _parse(text):
    try:
        return QuantSpec.from_json(text)
    except ValueError as err:
        assert str(err), "a ValueError must say what is wrong"
        return None


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60))
def test_any_text_parses_or_is_a_value_error(text):
    _parse(text)


@settings(max_examples=200, deadline=None)
@given(value=JSON)
def test_any_json_value_parses_or_is_a_value_error(value):
    _parse(json.dumps(value))


@pytest.fixture(scope="module")
def tiny_fp():
    from binlab.nn.model import ModelConfig, build

    torch.manual_seed(0)
    return build(ModelConfig(vocab_size=40, max_len=16, d_model=16, n_heads=2, d_ff=32, n_layers=1)).eval()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=near_valid_specs())
def test_near_valid_specs_parse_and_apply_or_are_value_errors(spec, tiny_fp):
    """Whatever parses also applies (quantize, forward) or fails with a ValueError; nothing else escapes."""
    import copy

    parsed = _parse(json.dumps(spec, allow_nan=True))
    if parsed is None:
        return
    model = copy.deepcopy(tiny_fp)
    try:
        quantize_(model, parsed)
    except ValueError:
        return
    needs_data = any(getattr(m, "quantizer", None) is not None and m.quantizer.needs_calibration for m in model.modules())
    if needs_data:
        return  # calibrated methods say so with a ValueError at forward time: tested in test_lm_track
    with torch.no_grad():
        out = model(torch.randint(1, 40, (2, 7)))
    assert out.shape == (2, 4)


@pytest.mark.parametrize("tau", [math.inf, -math.inf, math.nan, 1e300])
def test_non_finite_options_are_value_errors(tau):
    with pytest.raises(ValueError):
        QuantSpec.from_json(json.dumps({"rules": [{"target": "QK", "method": {"method": "bucket", "options": {"tau": tau}}}]}))


@pytest.mark.parametrize("argv,fragment", [
    (["eval", "--preset", "nope"], "unknown preset"),
    (["eval", "--preset", "tiny", "--spec", "{not json"], "not valid JSON"),
    (["eval", "--preset", "tiny", "--target", "QK", "--method", "nope"], "unknown method"),
    (["eval", "--preset", "tiny", "--target", "QK", "--method", "bucket", "--options", "{bad"], "options"),
    (["eval", "--preset", "tiny", "--target", "QK", "--method", "bucket", "--options", "[1, 2]"], "options"),
    (["size", "--preset", "tiny", "--target", "QK", "--method", "bucket", "--options", '{"tau": "high"}'], "tau"),
    (["train", "--preset", "tiny", "--train-rows", "0"], "train-rows"),
    (["landscape", "slice", "--preset", "tiny", "--rows", "0"], "rows"),
    (["export", "--preset", "tiny", "--out", "/tmp/x.safetensors"], "nothing to pack"),
])
def test_cli_bad_arguments_are_one_line_errors(argv, fragment, fixture_data, capsys, monkeypatch):
    from binlab.cli import main

    monkeypatch.setenv("BINLAB_DATA", str(fixture_data))
    rc = main(argv)
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert rc == 2 and last.startswith("error: ") and fragment in last, err


@pytest.mark.parametrize("name", sorted(BINARIZERS))
def test_the_option_schema_agrees_with_each_method(name):
    """Every value a widget generated from the schema can take (its ends, its choices, its lab default)
    makes a valid method, and the schema names only real options."""
    from binlab.nn.quantize import MethodConfig

    cls = BINARIZERS[name]
    assert set(cls.ui) <= set(cls.options())
    for k, ui in cls.ui.items():
        values = {"bool": [True, False], "choice": list(ui.get("choices", []))}.get(ui["kind"], [ui.get("min"), ui.get("max")])
        if "lab_default" in ui:
            values.append(ui["lab_default"])
            if ui["kind"] in ("float", "int"):
                assert ui["min"] <= ui["lab_default"] <= ui["max"]
            elif ui["kind"] == "choice":
                assert ui["lab_default"] in ui["choices"]
        if ui.get("none"):
            values.append(None)
        for v in values:
            opts = {k: v}
            for other, u in cls.ui.items():  # an option bounded by this one follows it down, as its widget does
                if u.get("at_most") == k and v is not None:
                    opts[other] = min(cls.defaults()[other], v)
            MethodConfig(name, options=opts)  # raises if the method refuses a value its widget offers


def test_damaged_cache_files_are_rebuilt_with_a_warning(fixture_data, tmp_path, monkeypatch):
    """A cached tokenizer or encoded split that no longer parses is a cache miss (with a warning), never a
    traceback; the same rows come back, token for token (WordPiece training is deterministic)."""
    import numpy as np

    from binlab.presets import load_data

    monkeypatch.setenv("BINLAB_CACHE", str(tmp_path))
    first = load_data("tiny", source=str(fixture_data), val_size=50, test_size=60)
    for f in list(tmp_path.glob("tokenizer-*.json")) + list(tmp_path.glob("encoded-*.safetensors")):
        f.write_bytes(b"{ this is not what was written")
    with pytest.warns(UserWarning, match="tokenizer"):
        again = load_data("tiny", source=str(fixture_data), val_size=50, test_size=60)
    assert len(again.train) == len(first.train) and np.array_equal(first.test.labels, again.test.labels)
    assert np.array_equal(first.train.lengths, again.train.lengths) and np.array_equal(first.train.ids, again.train.ids)
    assert first.tokenizer.to_str() == again.tokenizer.to_str()
