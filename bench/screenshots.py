"""Screenshots of every page of the lab, for the README and the teacher's guide.

Serves the lab headless on a free localhost port (the preset's cached baseline; train it first),
opens each page in Chromium (Playwright) and saves ``docs/img/<page>.png``.

    python bench/screenshots.py --preset scratch      # needs Chromium (apt-get install chromium) and playwright

The Class page is shown with a demo class (``--class-name``, default ``screenshot-demo``, in the cache
folder's class store, emptied and filled anew on every run): three learners' pins, each a configuration measured here on the validation rows
(PTQ of the cached baseline, numbers as the Compare page would pin them), and a few lesson predictions.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "app"))

from sitemap import PAGES  # noqa: E402

OUT = ROOT / "docs" / "img"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slug(title: str) -> str:
    return title.lower().split(" (")[0].replace(" ", "-")


#: the demo class's pins: (learner, label, rules as (target, method)); every number on the page is measured
DEMO_PINS = (("ana", "xnor on the encoder", (("encoder", "xnor"),)),
             ("ana", "xnor on the encoder and embeddings", (("encoder", "xnor"), ("embeddings", "xnor"))),
             ("ben", "sign on the encoder", (("encoder", "sign"),)),
             ("ben", "bucket on everything but the head", (("encoder", "bucket"), ("embeddings", "bucket"))),
             ("chen", "bucket on the encoder", (("encoder", "bucket"),)),
             ("chen", "twn on the encoder", (("encoder", "twn"),)))
DEMO_PREDICTIONS = (("ana", 0), ("ben", 1), ("chen", 0))  # (learner, choice index) on lesson 1


def demo_class(name: str, preset: str) -> None:
    """Fill class ``name`` with :data:`DEMO_PINS`, each measured now (PTQ of the cached baseline on the
    validation rows), and :data:`DEMO_PREDICTIONS` on the first lesson."""
    from binlab.lab.classroom import ClassRoom
    from binlab.lab.lessons import LESSONS
    from binlab.lab.runs import measure
    from binlab.nn.quantize import MethodConfig, QuantSpec, Rule
    from binlab.presets import resolve
    from binlab.training.qat import ptq

    r = resolve(preset, os.environ.get("BINLAB_DATA"))
    hit = r.cached_baseline()
    if hit is None:
        raise SystemExit(f"no cached {preset} baseline: train it first (binlab train --preset {preset})")
    baseline, _ = hit
    room = ClassRoom(name)
    room.clear()  # every pin measured now, on the baseline the pages show
    for nick, label, rules in DEMO_PINS:
        spec = QuantSpec(tuple(Rule(t, MethodConfig(m)) for t, m in rules))
        run = measure(ptq(baseline, spec), baseline, r.splits.val, preset=preset, mode="PTQ", label=label, spec_json=spec.to_json())
        room.pin(nick, run)
        print(f"pinned {nick}: {label} ({run.accuracy:.2f} %)")
    lesson = next(iter(LESSONS.values()))
    for nick, choice in DEMO_PREDICTIONS:
        room.predict(nick, lesson.key, lesson.choices[choice])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="scratch")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=2200, help="the window's height (Streamlit scrolls inside it)")
    ap.add_argument("--wait", type=float, default=25.0, help="seconds to let each page finish its work")
    ap.add_argument("--pages", help="comma-separated page titles to capture (default: every page), e.g. Class")
    ap.add_argument("--class-name", default="screenshot-demo", help="the demo class the Class page shows (filled with measured pins)")
    args = ap.parse_args()
    wanted = {t.strip() for t in args.pages.split(",")} if args.pages else None
    if wanted is None or "Class" in wanted:
        demo_class(args.class_name, args.preset)
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    port = free_port()
    env = {**os.environ, "BINLAB_PRESET": args.preset}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "Home.py"), "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read().strip() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        OUT.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            for _, file, title, _, _ in PAGES:
                if wanted is not None and title not in wanted:
                    continue
                path = "" if file.endswith("home.py") else "/" + Path(file).stem
                if title == "Class":
                    path += f"?class={args.class_name}"
                page.goto(url + path)
                page.wait_for_selector("[data-testid='stApp']", timeout=60_000)
                end = time.time() + args.wait
                time.sleep(min(8.0, args.wait))  # charts draw after the script finishes
                while time.time() < end and page.locator("[data-testid='stStatusWidget']").count():
                    time.sleep(0.5)  # the page is still running
                page.screenshot(path=str(OUT / f"{slug(title)}.png"), full_page=True)
                print("saved", OUT / f"{slug(title)}.png")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
