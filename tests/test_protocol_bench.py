"""bench/protocol_class.py's learners speak the page's websocket protocol instead of driving a browser:
one such learner against the lab served on the tiny fixture must load Binarize (live), move the threshold
slider and see the server send new numbers, as a browser would show them."""
import asyncio
import importlib.util
import sys
import time
from pathlib import Path

import pytest
from conftest import make_ag_news_fixture
from test_e2e_browser import start_server

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("protocol_class", BENCH / "protocol_class.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.STEP_TIMEOUT_S = 40
    return mod


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    data = make_ag_news_fixture(tmp_path_factory.mktemp("protocol_data"), n_train=900, n_test=300)
    proc, url = start_server(data, {"BINLAB_CACHE": str(tmp_path_factory.mktemp("protocol_cache"))})
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_a_protocol_learner_moves_the_slider_and_gets_new_numbers(bench, url):
    r = asyncio.run(bench.learner(url, [0.05, 0.1]))
    assert not r["failed"], r
    assert r["error"] is None and len(r["steps"]) == 2, r
    for step in r["steps"]:  # each move: new first numbers, then new final numbers, in that order
        assert step.get("error") is None, step
        assert 0 < step["response_s"] <= step["first_s"] <= step["final_s"] < 40, step


def test_a_move_the_page_cannot_take_is_not_counted(bench, url, monkeypatch):
    """A value sent for a widget the page does not have brings no new numbers (the page answers with an
    error): the step must end without times, not be counted as numbers shown."""
    monkeypatch.setattr(bench, "STEP_TIMEOUT_S", 8)
    orig = bench.Learner.send

    async def wrong_widget(self, value=None):
        if value is not None:
            self.slider = type(self.slider)(id="no-such-widget", step=self.slider.step)
        await orig(self, value)
    monkeypatch.setattr(bench.Learner, "send", wrong_widget)
    r = asyncio.run(bench.learner(url, [0.05]))
    assert not r["failed"]
    assert r["steps"] and r["steps"][0]["final_s"] is None and r["steps"][0].get("error") in ("timeout", "exception"), r


def test_moves_new_never_repeat_a_value(bench):
    for n in (1, 8, 32):
        plans = bench.moves(n, 4, "new", seed=n)
        flat = [v for p in plans for v in p]
        assert len(flat) == len(set(flat)) and 0.0 not in flat and all(-3 <= v <= 3 for v in flat)
        assert all(len(p) == min(4, 120 // n) for p in plans)
    same = bench.moves(3, 2, "same")
    assert same == [[0.05, 0.1]] * 3


def test_a_protocol_learner_sends_what_a_browser_sends(bench, url):
    """Chromium as the reference: after one right-arrow press on the threshold slider, the rerun a protocol
    learner sends carries the same widget values, page and fragment as the one the browser sends (both after
    the page's first run has finished), and its move brings new final numbers."""
    from playwright.sync_api import sync_playwright
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from test_e2e_browser import CHROMIUM, need_browser, wait_settled

    need_browser()

    def state(cs) -> tuple:
        vals = {w.id: (w.WhichOneof("value"), str(getattr(w, w.WhichOneof("value"))).strip()) for w in cs.widget_states.widgets}
        return vals, cs.page_script_hash, cs.fragment_id

    frames = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.on("websocket", lambda ws: ws.on("framesent", lambda f: frames.append(f)))
        page.goto(url + "/binarize", wait_until="networkidle")
        page.get_by_text("sizes are exact (", exact=False).first.wait_for(timeout=60_000)
        wait_settled(page)  # the page's run finished: every widget shown
        n = len(frames)
        page.get_by_role("slider").first.focus()
        page.keyboard.press("ArrowRight")
        deadline = time.time() + 30
        while len(frames) == n and time.time() < deadline:
            page.wait_for_timeout(50)
        browser.close()
    msgs = [BackMsg.FromString(f if isinstance(f, bytes) else f.encode("latin1")) for f in frames[n:]]
    reruns = [m.rerun_script for m in msgs if m.HasField("rerun_script")]
    assert reruns, "the browser sent no rerun for the key press"
    reference = state(reruns[0])
    value = reruns[0].widget_states.widgets  # the browser's new slider value: the learner moves to the same
    tau = next(w.double_array_value.data[0] for w in value if w.WhichOneof("value") == "double_array_value")

    sent = []
    r = asyncio.run(bench.learner(url, [tau], settle=True, sent=sent))
    assert not r["failed"] and r["steps"] and r["steps"][0]["final_s"] is not None, r
    assert len(sent) == 2  # the page's load, then the move
    ours = state(sent[1].rerun_script)
    assert ours[1:] == reference[1:], "page or fragment differ from the browser's"
    assert ours[0] == reference[0], {k: (ours[0].get(k), reference[0].get(k)) for k in set(ours[0]) | set(reference[0])
                                     if ours[0].get(k) != reference[0].get(k)}


def test_a_threshold_move_redraws_the_results_not_the_choice_of_components(bench, url):
    """A move of the threshold slider reruns only the part of the page that depends on it (the method's
    options and the results): the server sends the slider and the new numbers again, but neither the
    component checkboxes nor the method's select box, which the page's first run did send."""
    els = []
    r = asyncio.run(bench.learner(url, [0.05], settle=True, elements=els))
    assert not r["failed"] and r["steps"][0]["final_s"] is not None, r
    cut = next(i for i, (what, _) in enumerate(els) if what == "move")
    load, move = els[:cut], els[cut + 1:]
    for part in (load, move):  # both runs: the slider and the final numbers
        assert ("slider", "") not in part and any(w == "slider" for w, _ in part), part
        assert any(w == "markdown" for w, _ in part)
    assert ("checkbox", "head") in load and ("selectbox", "Binarizer") in load, load
    assert ("checkbox", "head") not in move and ("selectbox", "Binarizer") not in move, move


@pytest.fixture(scope="module")
def drag_bench(bench):
    spec = importlib.util.spec_from_file_location("drag", BENCH / "drag.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_drag_reads_the_value_a_run_shows_from_the_pages_url(drag_bench):
    """bench/drag.py times a drag to the numbers of its last value: the captions that follow the first URL
    query naming that value (a stale run's captions before it do not count)."""
    import json
    import urllib.parse

    def query(tau):
        rule = {"target": "layers.0.attn.q", "method": {"method": "bucket", "options": {"tau": tau}}}
        return urllib.parse.urlencode({"preset": "tiny", "spec": json.dumps({"rules": [rule], "attn_probs": None})})
    assert drag_bench.tau_of(query(0.15)) == 0.15 and drag_bench.tau_of("preset=tiny") is None
    assert drag_bench.tau_of(urllib.parse.urlencode({"spec": "not json"})) is None
    events = [(1.0, "query", query(0.1)), (1.1, "first", "a"), (1.2, "final", "b"), (1.3, "query", query(0.15)), (1.4, "first", "c"), (1.7, "final", "d")]
    first, final = drag_bench.last_value_times(events, 0, 0.15, 1.0)
    assert first == pytest.approx(0.4) and final == pytest.approx(0.7)
    assert drag_bench.last_value_times(events[:4], 0, 0.15, 1.0) == (None, None)  # its run has sent no caption yet
    assert drag_bench.last_value_times(events, 0, 0.2, 1.0) == (None, None)
    assert drag_bench.plan(2, 3) == [[0.05, 0.1, 0.15], [0.2, 0.25, 0.3]]


def test_a_dragging_learner_gets_the_numbers_of_the_last_value(drag_bench, url):
    steps = asyncio.run(drag_bench.dragger(url, drag_bench.plan(2, 3), 0.05))
    assert len(steps) == 2
    for s in steps:
        assert s["final_s"] is not None and 0 < s["first_s"] <= s["final_s"] < 40, s
        assert 1 <= s["finals_sent"] <= 3, s


#: loaded by the server of `paced_url` (a sitecustomize module on its PYTHONPATH): every batch of every evaluation
#: takes 0.15 s more, so the tiny lab's full numbers (its 300 rows after the first look, 5 batches) take about 0.75 s
PACED = '''
import os
import pathlib
import time

from binlab.nn import objective

_stats = objective.stats_from_states


def _paced(*args, **kwargs):
    time.sleep(0.15)
    return _stats(*args, **kwargs)


objective.stats_from_states = _paced
pathlib.Path(os.environ["BINLAB_TEST_PACED"]).touch()
'''


@pytest.fixture(scope="module")
def paced_url(tmp_path_factory):
    import os

    hook = tmp_path_factory.mktemp("paced")
    (hook / "sitecustomize.py").write_text(PACED)
    marker = hook / "loaded"
    data = make_ag_news_fixture(tmp_path_factory.mktemp("paced_data"), n_train=900, n_test=300)
    path = os.pathsep.join([str(hook)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    proc, url = start_server(data, {"BINLAB_CACHE": str(tmp_path_factory.mktemp("paced_cache")), "PYTHONPATH": path,
                                    "BINLAB_TEST_PACED": str(marker)})
    yield url, marker
    proc.terminate()
    proc.wait(timeout=10)


def test_a_move_made_while_the_numbers_refine_stops_the_older_change(drag_bench, paced_url):
    """Three notches 0.1 s apart on a server whose evaluations are slowed: the first notch's full numbers are
    still computing when the next notches arrive, so its evaluation stops and only the last value's full
    numbers are computed and sent (a lab whose changes run to their end sends the first notch's too)."""
    url, marker = paced_url
    steps = asyncio.run(drag_bench.dragger(url, [[0.05, 0.1, 0.15]], 0.1))
    assert marker.exists(), "the server did not load the slowing hook"
    s = steps[0]
    assert s["final_s"] is not None and s["first_s"] <= s["final_s"], s
    assert s["finals_sent"] == 1, s
