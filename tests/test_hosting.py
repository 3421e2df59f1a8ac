"""A lab a school can host: bounded method options, bounded uploads, safe server defaults, the data
source fixed by the server, and shared changes kept for the teacher."""
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from binlab.lab.runs import MAX_IMPORT_RUNS, Run, RunStore, export_json, import_json
from binlab.methods import BINARIZERS
from binlab.nn.quantize import MethodConfig, QuantSpec

ROOT = Path(__file__).resolve().parents[1]

# crafted links from a fault-and-abuse test: each asked for unbounded memory or time before options had bounds
CRAFTED = [
    ('{"rules": [{"target": "encoder", "method": {"method": "binarymos", "options": {"experts": 100000000}}}]}', "experts"),
    ('{"rules": [{"target": "encoder", "method": {"method": "arb", "options": {"iters": 1000000000}}}]}', "iters"),
    ('{"rules": [{"target": "encoder", "method": {"method": "stbllm", "options": {"m": 1000000000}}}]}', "option m"),
    ('{"rules": [{"target": "encoder", "method": {"method": "gptq", "options": {"blocksize": 1000000000}}}]}', "blocksize"),
    ('{"rules": [{"target": "encoder", "method": {"method": "bucket", "options": {"tau": 1e308}}}]}', "tau"),
    ('{"rules": [{"target": "encoder", "method": {"method": "uniform", "options": {"bits": true}}}]}', "bits"),
]


@pytest.mark.parametrize("spec,names", CRAFTED)
def test_crafted_links_are_refused_when_parsed(spec, names):
    with pytest.raises(ValueError, match=names):
        QuantSpec.from_json(spec)


def test_crafted_cli_options_are_refused_before_any_data_loads(capsys):
    from binlab.cli import main

    assert main(["eval", "--preset", "tiny", "--data", "/nonexistent", "--target", "encoder", "--method", "arb",
                 "--options", '{"iters": 1000000000}']) == 2
    err = capsys.readouterr().err
    assert "iters must be in [0, 100]" in err and "Traceback" not in err


def test_every_option_has_a_bounded_schema():
    for name, cls in BINARIZERS.items():
        for opt, s in cls.schema().items():
            assert s is not None, f"{name}.{opt} has no schema (add it to ui or bounds)"
            if s["kind"] in ("int", "float"):
                assert s["min"] <= s["max"] and abs(s["max"]) < 1e6, f"{name}.{opt}: {s}"
            elif s["kind"] == "choice":
                assert s["choices"], f"{name}.{opt}"
            else:
                assert s["kind"] == "bool", f"{name}.{opt}: {s}"
        MethodConfig(name, options=dict(cls.defaults()))  # the defaults are inside their own schema


def _numeric_options():
    return [(name, opt, s) for name, cls in sorted(BINARIZERS.items()) for opt, s in cls.schema().items() if s["kind"] in ("int", "float")]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(_numeric_options()), st.floats(-1e12, 1e12, allow_nan=False), st.booleans())
def test_values_outside_a_schema_are_refused_and_inside_it_accepted(case, x, as_int):
    name, opt, s = case
    v = int(x) if (s["kind"] == "int" or as_int) else x
    inside = s["min"] <= v <= s["max"] and not (s["kind"] == "int" and not isinstance(v, int))
    if inside:
        try:
            MethodConfig(name, options={opt: v})
        except ValueError as err:  # a cross-option rule (STBLLM's N <= M) may still say no, with a message
            assert str(err)
    else:
        with pytest.raises(ValueError, match="must be"):
            MethodConfig(name, options={opt: v})


@pytest.mark.parametrize("name", sorted(BINARIZERS))
def test_no_option_value_makes_a_method_store_more_than_two_fp32_copies(name):
    """The memory a quantizer may hold is bounded: at every option's schema extreme, what it stores for a
    384 x 1536 matrix (the largest linear of minilm-l2) stays under 64 bits per weight."""
    cls = BINARIZERS[name]
    for opt, s in cls.schema().items():
        for v in ([s["min"], s["max"]] if s["kind"] in ("int", "float") else s.get("choices") or [True, False]):
            try:
                q = MethodConfig(name, options={opt: v}).make()
            except ValueError:
                continue  # refused with a message: nothing allocated
            bits = sum(q.storage((384, 1536)).values())
            assert bits / (384 * 1536) <= 64, f"{name} {opt}={v}: {bits / (384 * 1536):.1f} bits per weight"


def _run(**kw) -> Run:
    base = dict(preset="tiny", mode="QAT", label="a run", spec="{}", rows=10, split="val", accuracy=50.0, low=40.0, high=60.0,
                size_bytes=1000.0, reduction=10.0, bits_per_weight=1.0)
    return Run(**(base | kw))


def test_uploads_are_bounded():
    with pytest.raises(ValueError, match=f"at most {MAX_IMPORT_RUNS} runs"):
        import_json(export_json([_run() for _ in range(MAX_IMPORT_RUNS + 1)]))
    with pytest.raises(ValueError, match="label"):
        _run(label="x" * 201)
    with pytest.raises(ValueError, match="classes"):
        _run(confusion=[[0] * 17] * 17)
    with pytest.raises(ValueError, match="MB"):
        import_json(" " * 2_000_001)
    assert len(import_json(export_json([_run() for _ in range(3)]))) == 3


def test_an_imported_run_never_replaces_a_stored_one(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    first = store.add(_run(label="mine"))
    again = store.add(import_json(export_json([_run(label="theirs", id=first.id)]))[0])
    assert again.id != first.id
    assert {r.label for r in store.list()} == {"mine", "theirs"} and store.get(first.id).label == "mine"


def test_damaged_run_records_are_counted_and_a_damaged_store_named(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    store.add(_run())
    with sqlite3.connect(store.path) as db:
        db.execute("INSERT INTO runs VALUES ('bad', 'tiny', 'now', '{not json')")
    assert len(store.list()) == 1 and store.skipped == 1
    bad = tmp_path / "broken.sqlite"
    RunStore(bad)
    data = bytearray(bad.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the first page's b-tree: damaged
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged"):
        RunStore(bad).list()


def test_the_lab_serves_this_machine_only_unless_asked(capsys):
    from binlab.cli import SAFE_SERVER, app_command, main

    cmd, env = app_command()
    assert cmd[cmd.index("--server.address") + 1] == "localhost" and env == {}
    for k, v in SAFE_SERVER.items():
        assert cmd[cmd.index(f"--{k}") + 1] == v
    assert SAFE_SERVER["client.showErrorDetails"] == "none" and SAFE_SERVER["browser.gatherUsageStats"] == "false"
    cmd, env = app_command(classroom=True, token="s3cret")
    assert cmd[cmd.index("--server.address") + 1] == "0.0.0.0" and env == {"BINLAB_CLASS": "1", "BINLAB_CLASS_NAME": "class", "BINLAB_TEACHER_TOKEN": "s3cret"}
    assert app_command(classroom=True, name="maths-3b")[1]["BINLAB_CLASS_NAME"] == "maths-3b"
    with pytest.raises(ValueError, match="class name"):
        app_command(classroom=True, name="../x")
    assert len(app_command(classroom=True)[1]["BINLAB_TEACHER_TOKEN"]) >= 12  # a token is made when none is given
    assert main(["app", "--port", "99999"]) == 2 and "between 1 and 65535" in capsys.readouterr().err
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "localhost" and cfg["browser"]["gatherUsageStats"] is False
    assert cfg["client"]["showErrorDetails"] == "none" and cfg["server"]["enableXsrfProtection"] is True
    from binlab.cli import FAST_SERVER  # the speed setting: in the config `make lab` reads and on binlab app's command line
    assert cfg["runner"]["postScriptGC"] is False and FAST_SERVER == {"runner.postScriptGC": "false"}
    assert cmd[cmd.index("--runner.postScriptGC") + 1] == "false"


def test_the_lab_server_gets_two_malloc_arenas_unless_set(monkeypatch):
    """binlab app starts the server with MALLOC_ARENA_MAX=2 (a class's sessions are threads: fewer arenas of freed
    memory), and leaves a value the person starting it set."""
    from binlab import cli

    seen = []
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd, env, cwd: seen.append(env) or 0)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert cli.main(["app"]) == 0 and seen[-1]["MALLOC_ARENA_MAX"] == "2"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert cli.main(["app"]) == 0 and seen[-1]["MALLOC_ARENA_MAX"] == "4"


def test_labels_are_shown_as_text():
    import sys

    sys.path.insert(0, str(ROOT / "app"))
    from common import chart_text, plain

    label = "[click](javascript:alert(1)) **bold** <b>x</b> :material/warning:"
    shown = plain(label)
    assert "](" not in shown.replace("\\]\\(", "") and "**" not in shown.replace("\\*\\*", "")
    assert "<b>" not in chart_text(label) and "&lt;b&gt;" in chart_text(label)


def test_a_spec_is_bounded_in_size_and_rules():
    from binlab.nn.quantize import MAX_RULES, MAX_SPEC_CHARS

    many = {"rules": [{"target": f"layers.{i}.attn.q", "method": {"method": "sign"}} for i in range(MAX_RULES + 1)]}
    with pytest.raises(ValueError, match=f"at most {MAX_RULES} rules"):
        QuantSpec.from_json(json.dumps(many))
    with pytest.raises(ValueError, match="characters of JSON"):
        QuantSpec.from_json(" " * (MAX_SPEC_CHARS + 1))
    with pytest.raises(ValueError, match="1 to 200 characters"):
        QuantSpec.from_json(json.dumps({"rules": [{"target": "x" * 201, "method": {"method": "sign"}}]}))
    assert len(QuantSpec.from_json(json.dumps({"rules": many["rules"][:MAX_RULES]})).rules) == MAX_RULES


def test_a_schemas_ends_are_values_the_method_accepts():
    """The schema's range is the method's own: each end of each numeric option makes a valid method (a
    cross-option rule aside: STBLLM's N <= M, checked with M at its largest)."""
    for name, cls in BINARIZERS.items():
        for opt, s in cls.schema().items():
            if s["kind"] in ("int", "float"):
                for v in (s["min"], s["max"]):
                    MethodConfig(name, options={opt: v} | ({"m": 16} if (name, opt) == ("stbllm", "n") else {})
                                 | ({"n": 2} if (name, opt, v) == ("stbllm", "m", 2) else {}))


def test_the_stated_time_bound_covers_every_option_range():
    """docs/results/bench-worst-case-scratch.json states the longest live change a link can ask for; it was
    measured at every end of every numeric option's current range, so a widened range fails here until the
    bench is run again (python bench/worst_case.py --preset scratch)."""
    d = json.loads((ROOT / "docs" / "results" / "bench-worst-case-scratch.json").read_text())
    measured = {(r["method"], json.dumps(r["options"], sort_keys=True)) for r in d["rows"] + d["refused"]}
    for name, cls in BINARIZERS.items():
        assert (name, "{}") in measured, name
        for opt, s in cls.schema().items():
            if s["kind"] in ("int", "float"):
                for v in (s["min"], s["max"]):
                    assert (name, json.dumps({opt: v})) in measured, f"{name} {opt}={v}: run bench/worst_case.py again"
    assert d["worst"]["seconds"] == max(r["seconds"] for r in d["rows"]) and d["val_rows"] == 1000
