"""bench/protocol_class.py's learners speak the page's websocket protocol instead of driving a browser:
one such learner against the lab served on the tiny fixture must load Binarize (live), move the threshold
slider and see the server send new numbers, as a browser would show them."""
import asyncio
import importlib.util
import sys
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
