"""Screenshots of every page of the lab, for the README and the teacher's guide.

Serves the lab headless on a free localhost port (the preset's cached baseline; train it first),
opens each page in Chromium (Playwright) and saves ``docs/img/<page>.png``.

    python bench/screenshots.py --preset scratch      # needs Chromium (apt-get install chromium) and playwright
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="scratch")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=2200, help="the window's height (Streamlit scrolls inside it)")
    ap.add_argument("--wait", type=float, default=25.0, help="seconds to let each page finish its work")
    args = ap.parse_args()
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
                path = "" if file.endswith("home.py") else "/" + Path(file).stem
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
