"""Benchmark: the lab as learners feel it, in a real browser (Playwright, headless Chromium), the
lab served locally from this machine.

    python bench/browser.py [--preset scratch] [--steps 8] [--learners 8]
    # writes docs/results/bench-browser-<preset>.{json,md}

- one learner: on Binarize (live), each press of the right-arrow key on the threshold slider until
  the page shows the new evaluation (the caption's "updated in ..." changes); median over ``steps``;
- eight learners: as many browser pages at once, each loading the page and stepping the slider;
  a page that shows no numbers within 30 s counts as failed; median over every step that finished.
The server, the browsers and the computation share this machine's cores, as in a classroom with one
lab server; the machine is printed with the numbers.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import cpu_flags  # noqa: E402 - bench/common.py

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def serve(preset: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "BINLAB_PRESET": preset}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "Home.py"), "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read().strip() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the lab did not start within 120 s")


async def caption(page) -> str:
    loc = page.get_by_text("updated in", exact=False)
    return await loc.first.inner_text() if await loc.count() else ""


async def learner(browser, url: str, steps: int, load_timeout: float) -> dict:
    page = await browser.new_page(viewport={"width": 1400, "height": 1600})
    t0 = time.perf_counter()
    try:
        await page.goto(url + "/binarize", wait_until="domcontentloaded", timeout=load_timeout * 1000)
        await page.get_by_text("updated in", exact=False).first.wait_for(timeout=load_timeout * 1000)
    except Exception as err:  # noqa: BLE001 - a page that never showed its numbers
        await page.close()
        return {"failed": True, "load_s": time.perf_counter() - t0, "error": type(err).__name__, "steps": []}
    load = time.perf_counter() - t0
    thumb = page.get_by_role("slider").first
    times = []
    for _ in range(steps):
        before = await caption(page)
        await thumb.focus()
        t = time.perf_counter()
        await page.keyboard.press("ArrowRight")
        while time.perf_counter() - t < 60:
            await page.wait_for_timeout(20)
            if await caption(page) != before:
                break
        times.append(time.perf_counter() - t)
        await page.wait_for_timeout(300)
    await page.close()
    return {"failed": False, "load_s": load, "steps": times}


async def run(url: str, steps: int, learners: int) -> tuple[dict, list[dict]]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        await learner(browser, url, 1, 120)  # warm-up: the first session builds the lab's caches
        one = await learner(browser, url, steps, 120)
        many = await asyncio.gather(*(learner(browser, url, max(2, steps // 2), 30) for _ in range(learners)))
        await browser.close()
    return one, list(many)


def main():
    from binlab.experiments.provenance import RESULTS, machine

    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="scratch")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--learners", type=int, default=8)
    args = ap.parse_args()
    proc, url = serve(args.preset)
    try:
        one, many = asyncio.run(run(url, args.steps, args.learners))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    done = [t for r in many for t in r["steps"]]
    out = {"preset": args.preset, "machine": machine(), "cpu_flags": cpu_flags(), "date": time.strftime("%Y-%m-%d"),
           "command": f"python bench/browser.py --preset {args.preset} --steps {args.steps} --learners {args.learners}",
           "one_learner_median_s": statistics.median(one["steps"]), "one_learner_steps_s": one["steps"],
           "one_learner_load_s": one["load_s"], "learners": args.learners,
           "eight_learners_median_s": statistics.median(done) if done else None,
           "eight_learners_failed_pages": sum(r["failed"] for r in many),
           "eight_learners_load_s": [r["load_s"] for r in many]}
    stem = RESULTS / f"bench-browser-{args.preset}"
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2))
    md = [f"# Browser benchmark ({args.preset})", "", f"Machine: {out['machine']}; CPU flags: {' '.join(out['cpu_flags'])}. "
          f"Date: {out['date']}. Reproduce: `{out['command']}`", "",
          "Headless Chromium against the lab served on the same machine; a step is one right-arrow key press on the "
          "threshold slider of Binarize (live), timed until the page shows the new evaluation.", "",
          f"- one learner: median **{out['one_learner_median_s']:.2f} s** per step (page load {out['one_learner_load_s']:.1f} s); steps: "
          + ", ".join(f"{t:.2f}" for t in one["steps"]),
          f"- {args.learners} learners at once: median **" + (f"{out['eight_learners_median_s']:.2f} s" if done else "-")
          + f"** per step; pages that showed no numbers within 30 s: **{out['eight_learners_failed_pages']}** of {args.learners}; "
          "page loads " + ", ".join(f"{t:.1f}" for t in out["eight_learners_load_s"]) + " s"]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
