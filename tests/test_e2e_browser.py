"""The lab in a real browser: streamlit run headless on a free localhost port, driven by Playwright
on Debian's Chromium. Moves the threshold slider and a component checkbox and checks that the
numbers shown change. Skipped (with the reason) where Chromium or Playwright is missing."""
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import make_ag_news_fixture

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
APP = Path(__file__).resolve().parents[1] / "app" / "Home.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, extra_env: dict | None = None):
    """The lab served headless on a free localhost port, the tiny baseline trained first in its cache:
    (process, url)."""
    env = {**os.environ, "BINLAB_DATA": str(data), "BINLAB_PRESET": "tiny", **(extra_env or {})}
    # train the tiny baseline once up front, in the cache the server will use
    subprocess.run([sys.executable, "-c", "from binlab.presets import *; get_baseline('tiny', load_data('tiny'))"], env=env, check=True)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read().strip() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail("streamlit did not become healthy in 60 s: " + proc.stdout.read().decode()[-2000:])


def need_browser():
    pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    need_browser()
    proc, url = start_server(make_ag_news_fixture(tmp_path_factory.mktemp("e2e_data"), n_train=900, n_test=300))
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def class_server(tmp_path_factory):
    """A classroom server (``binlab app --class --name e2e``), with its own cache folder: its own class store."""
    need_browser()
    data = make_ag_news_fixture(tmp_path_factory.mktemp("e2e_class_data"), n_train=900, n_test=300)
    proc, url = start_server(data, {"BINLAB_CLASS": "1", "BINLAB_CLASS_NAME": "e2e", "BINLAB_TEACHER_TOKEN": "e2e-token",
                                    "BINLAB_CACHE": str(tmp_path_factory.mktemp("e2e_class_cache"))})
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def metrics(page) -> tuple[str, str, str]:
    """(validation accuracy, model size, validation loss) as shown."""
    vals = page.locator('[data-testid="stMetricValue"]')
    loss = page.locator('[data-testid="stMetric"]').filter(has_text="validation loss").locator('[data-testid="stMetricValue"]')
    return vals.nth(0).inner_text(), vals.nth(1).inner_text(), loss.first.inner_text() if loss.count() else ""


def running(page) -> bool:
    return page.locator('[data-testid="stStatusWidget"]').is_visible()


def wait_settled(page, timeout: float = 90, quiet: float = 2.0) -> tuple:
    """Wait until the app is idle and the shown metrics have not moved for ``quiet`` seconds
    (keyboard steps on a slider queue several reruns; a change is not the end of them)."""
    deadline = time.time() + timeout
    last, since = metrics(page), time.time()
    while time.time() < deadline:
        page.wait_for_timeout(250)
        now = metrics(page)
        if now != last or running(page):
            last, since = now, time.time()
        elif time.time() - since >= quiet:
            return now
    return metrics(page)


def wait_for(page, predicate, timeout: float = 90) -> tuple:
    """Wait until ``predicate(metrics)`` holds and the app is idle; return the metrics then."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        page.wait_for_timeout(250)
        now = metrics(page)
        if predicate(now) and not running(page):
            return now
    return metrics(page)


def test_slider_and_checkbox_change_the_numbers(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(server + "/binarize", wait_until="networkidle")
        page.locator('[data-testid="stMetricValue"]').first.wait_for(timeout=60_000)
        # every encoder linear binarized
        before = metrics(page)
        page.get_by_role("button", name="encoder", exact=True).click()
        wait_for(page, lambda m: m[1] != before[1])
        m0 = wait_settled(page)
        assert re.match(r"\d+\.\d\d %", m0[0]), m0
        # the threshold slider: focus its thumb and step it far to the right with the keyboard
        thumb = page.get_by_role("slider").first
        thumb.focus()
        for _ in range(40):
            page.keyboard.press("ArrowRight")
        wait_for(page, lambda m: m != m0)
        m1 = wait_settled(page)
        # the loss moves with any change of the weights; the easy fixture's accuracy may stay put to two decimals
        # (it did on an AVX2 CI machine), so it is recorded, not required to move
        assert m1[2] != m0[2], "moving the threshold did not change the loss shown"
        assert m1[1] == m0[1], "moving the threshold must not change the size"
        # a component checkbox: binarize the token embedding as well
        box = page.get_by_role("checkbox", name="token", exact=True).first
        assert not box.is_checked()
        page.get_by_text("token", exact=True).first.click()
        m2 = wait_for(page, lambda m: m[1] != m1[1])
        assert box.is_checked(), "the token-embedding checkbox did not take the click"
        page.screenshot(path=str(tmp_path / "binarize.png"), full_page=True)
        # one more binarized matrix: the exact size must drop (on the easy fixture data the
        # accuracy can stay the same to two decimals, so it is recorded, not required to move)
        assert m2[1] != m1[1], "binarizing the token embedding did not change the size shown"
        assert "spec=" in page.url  # the configuration lives in the URL
        browser.close()
    assert (tmp_path / "binarize.png").stat().st_size > 10_000


def test_a_lesson_check_and_a_pinned_comparison(server):
    """In one browser session: answer a lesson and see it checked; binarize, then pin the run on Compare."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(server + "/lessons?lesson=6", wait_until="networkidle")
        page.get_by_text("Two +-1 vectors of length 256").wait_for(timeout=60_000)
        page.get_by_text("192", exact=True).click()
        page.get_by_role("button", name="Run the experiment").click()
        page.get_by_text("Not this time").wait_for(timeout=60_000)
        assert page.get_by_text("'128'").first.is_visible()
        # the Binarize page in the same session (the sidebar's link keeps the session), then Compare
        page.get_by_role("link", name="Binarize (live)").click()
        page.locator('[data-testid="stMetricValue"]').first.wait_for(timeout=60_000)
        page.get_by_role("link", name="Compare runs").click()
        page.get_by_role("button", name="Pin this run").click()
        page.get_by_text("Pinned as").wait_for(timeout=60_000)
        page.get_by_text("confusion matrices").first.wait_for(timeout=30_000)
        browser.close()


def pin_as(page, url: str, nick: str, button: str) -> None:
    """One learner: a nickname in the sidebar, a configuration on Binarize (a quick-select ``button``), pinned on Compare."""
    page.goto(url + "/binarize", wait_until="networkidle")
    page.locator('[data-testid="stMetricValue"]').first.wait_for(timeout=60_000)
    box = page.get_by_role("textbox", name="Your nickname in class e2e")
    box.fill(nick)
    box.press("Enter")
    before = metrics(page)
    page.get_by_role("button", name=button, exact=True).click()
    wait_for(page, lambda m: m[1] != before[1])
    page.get_by_role("link", name="Compare runs").click()
    page.get_by_role("button", name="Pin this run").click()
    page.get_by_text(f"Shared with class e2e as {nick}").wait_for(timeout=60_000)


def test_two_learners_in_one_class_see_each_others_pins(class_server):
    """Two learners (two browser sessions) pin runs in one class; each sees both pins on the Class page,
    which refreshes by itself (no reload), and the teacher's token is not needed for any of it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        ada = browser.new_context(viewport={"width": 1400, "height": 1800}).new_page()
        bob = browser.new_context(viewport={"width": 1400, "height": 1800}).new_page()
        pin_as(ada, class_server, "ada", "encoder")
        bob.goto(class_server + "/classroom", wait_until="networkidle")
        bob.get_by_text("pinned runs (tiny): ada (1)").wait_for(timeout=60_000)  # ada's pin, seen by bob
        pin_as(bob, class_server, "bob", "QK")
        # ada opens the Class page and waits there: bob's second pin appears without a reload
        ada.get_by_role("link", name="Class").click()
        ada.get_by_text("pinned runs (tiny): ada (1), bob (1)").wait_for(timeout=60_000)
        bob.get_by_role("link", name="Compare runs").click()
        bob.get_by_role("button", name="Pin this run").click()
        bob.get_by_text("Shared with class e2e as bob").wait_for(timeout=60_000)
        ada.get_by_text("pinned runs (tiny): ada (1), bob (2)").wait_for(timeout=30_000)
        browser.close()


# a watcher in the page: each time an element container's data-stale attribute turns "true", its computed
# opacity and transition duration at that moment (Chromium's own style resolution is the reference)
STALE_JS = """
window.__stale = [];
new MutationObserver((ms) => {
  for (const m of ms) {
    const el = m.target;
    if (el.getAttribute('data-stale') === 'true' && el.getAttribute('data-testid') === 'stElementContainer') {
      const cs = getComputedStyle(el);
      window.__stale.push([cs.opacity, cs.transitionDuration]);
    }
  }
}).observe(document.documentElement, {subtree: true, attributes: true, attributeFilter: ['data-stale']});
"""


def test_the_live_page_does_not_fade_what_a_move_refreshes(server):
    """Binarize (live) reruns at every slider notch; Streamlit would fade the parts being refreshed (a CSS
    transition of 1 s after 0.5 s, drawn frame by frame while the server computes). The page turns that off:
    every element the browser marks stale during the moves keeps full opacity and no transition."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(server + "/binarize", wait_until="networkidle")
        page.get_by_text("sizes are exact (", exact=False).first.wait_for(timeout=60_000)
        m0 = wait_settled(page)
        page.evaluate(STALE_JS)
        thumb = page.get_by_role("slider").first
        thumb.focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
            page.wait_for_timeout(400)
        wait_settled(page)
        seen = page.evaluate("window.__stale")
        browser.close()
    assert m0 is not None
    assert seen, "no element was marked stale during three moves: the test saw no rerun"
    assert all(op == "1" for op, _ in seen), f"stale elements fade: opacities {sorted({op for op, _ in seen})}"
    assert all(set(d.split(", ")) == {"0s"} for _, d in seen), f"stale elements transition: {sorted({d for _, d in seen})}"


def test_the_browser_bench_watcher_times_what_polling_sees(server):
    """bench/browser.py's page watcher (a MutationObserver, times in the page's clock from the keydown) against
    polling the page's text from outside every 20 ms, on the same key press of a settled page: the watcher sees the
    first and the final numbers, within half a second of polling."""
    import asyncio
    import importlib.util

    from playwright.async_api import async_playwright

    spec = importlib.util.spec_from_file_location("browser_bench", Path(__file__).resolve().parents[1] / "bench" / "browser.py")
    bb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bb)

    async def steps():
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=bb.ARGS)
            page = await browser.new_page(viewport={"width": 1400, "height": 1600})
            await page.add_init_script(bb.WATCH_JS)
            await page.goto(server + "/binarize", wait_until="domcontentloaded")
            await page.get_by_text(bb.NUMBERS[0], exact=False).first.wait_for(timeout=60_000)
            out = []
            for _ in range(2):
                # settled: a rerun of the page alone (no key) changes the caption too ("measured before ..."), and
                # polling, which reads its reference before the key press, would count that change as the key's
                last, since = await bb.texts(page), time.time()
                while time.time() - since < 1.5:
                    await page.wait_for_timeout(200)
                    now = await bb.texts(page)
                    if now != last:
                        last, since = now, time.time()
                polled = await bb.step_polled(page, page.get_by_role("slider").first)
                out.append((polled, await page.evaluate("window.__blWatch")))
            await browser.close()
            return out

    for polled, watched in asyncio.run(steps()):
        assert polled["final_s"] is not None, polled
        assert watched["key"] is not None and watched["final"] is not None and watched["first"] is not None, watched
        obs_first, obs_final = watched["first"] / 1000, watched["final"] / 1000
        assert 0 < obs_first <= obs_final
        assert abs(polled["final_s"] - obs_final) < 0.5, (watched, polled)
