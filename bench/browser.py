"""Benchmark: the lab as learners feel it, in a real browser (Playwright, headless Chromium), the
lab served locally from this machine.

    python bench/browser.py [--preset scratch] [--steps 8] [--learners 1,8,16,32] [--app-root DIR --out NAME]
    # writes docs/results/bench-browser-<preset>.{json,md}

- a step: on Binarize (live), one press of the right-arrow key on the threshold slider, then three times
  are read from the page: the first response (new numbers, a first look or the busy message, whichever
  shows first), the first numbers (the numbers caption changes: a first look on a small slice, or the
  final numbers when the configuration was measured before), and the final numbers (the final caption,
  "... change n, updated in ..." or "... measured before ...", changes; its change counter makes every
  move show new text, even where two configurations give the same numbers). Captions, not a status
  indicator, so a fast rerun is never missed;
- learners: for each count, as many browser pages at once, each loading the page and stepping the
  slider; a page that shows no numbers within 30 s is counted as slow, one that shows none within 120 s
  as failed (it never loaded); medians and 95th percentiles over every step that finished;
- timing: a watcher in the page (a MutationObserver) records when each caption changes, in the page's clock
  from the key's keydown event (``--watch poll``: read the page's whole text from here every 20 ms instead);
- servers: each row (and each ``--rounds`` repeat) on a fresh server after one warm-up page, so its learners
  step from the default to values no earlier row measured;
- ``--app-root``: serve the app of another checkout (e.g. a git worktree of an earlier commit) against
  this binlab; ``--compare-app DIR``: time every row with this app and with DIR's, each first in turn, and
  give the shift of the medians with a bootstrap interval over pages (``--compare-watch``: the two ways of timing).
The server, the computation and the browsers share this machine's cores; in a classroom the browsers run
on the learners' own machines, so with many learners these numbers are pessimistic (every page's
rendering takes CPU from the server here). The machine is printed with the numbers.
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
from binlab.experiments.provenance import cpu_flags  # noqa: E402 - not bench/common: the app has a module of that name

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def serve(preset: str, app_root: Path = ROOT, options: tuple[str, ...] = (), env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """The lab served for a class on a free port, in the environment ``binlab app`` gives it: (process, url).
    ``options``: Streamlit settings ``"section.name=value"`` given on its command line, over the lab's own
    (.streamlit/config.toml); ``env``: environment variables over those."""
    from binlab.cli import SERVER_ENV

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # a classroom server (binlab app --class --name bench), as a teacher starts it for a class
    env = {**SERVER_ENV, **os.environ, "BINLAB_PRESET": preset, "BINLAB_CLASS": "1", "BINLAB_CLASS_NAME": CLASS, "BINLAB_TEACHER_TOKEN": "bench",
           **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(app_root / "app" / "Home.py"), "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
                            + [x for o in options for x in (f"--{o.split('=', 1)[0]}", o.split("=", 1)[1])],
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


def server_memory(proc: subprocess.Popen) -> dict:
    """The served lab's memory now (Linux /proc), MiB: its peak resident set so far and its resident set."""
    from binlab.runtime.process import status_mib

    return {"server_peak_rss_mib": status_mib("VmHWM", proc.pid), "server_rss_mib": status_mib("VmRSS", proc.pid)}


CLASS = "bench"
NUMBERS = ("sizes are exact (", "First look:")  # the final numbers' caption, the first look's
BUSY = "The server is busy"
LOAD_SLOW_S, LOAD_FAILED_S = 30, 120  # a page without numbers after this long: slow; after this long: failed (never loaded)


async def texts(page) -> tuple[str, str, bool]:
    """(the final numbers' caption, the first look's caption, whether the busy message shows), read in one
    pass over the page's text (an element found and then read can be gone in between)."""
    lines = (await page.evaluate("document.body.innerText")).splitlines()
    pick = lambda needle: next((ln for ln in lines if needle in ln), "")  # noqa: E731
    return pick(NUMBERS[0]), pick(NUMBERS[1]), any(BUSY in ln for ln in lines)


#: the page's own watcher (``--watch observer``): a MutationObserver that, after each DOM change, reads the
#: captions (their elements' textContent: no layout) and, from the last right-arrow key press on, records in
#: the page's clock when the busy message, a changed caption and a changed final caption first appear; the
#: bench reads the record every 100 ms. Polling ``document.body.innerText`` every 20 ms instead (``--watch
#: poll``) lays the whole page out each time, in the browser that shares the server's cores.
WATCH_JS = """
(() => {
  const NUM = %s, FIRST = %s, BUSY = %s;
  const pick = (needle) => {
    for (const el of document.querySelectorAll('[data-testid="stCaptionContainer"]')) {
      if (el.textContent.includes(needle)) return el.textContent;
    }
    return "";
  };
  const busyNow = () => {
    for (const el of document.querySelectorAll('[data-testid="stAlertContainer"]')) {
      if (el.textContent.includes(BUSY)) return true;
    }
    return false;
  };
  const w = window.__blWatch = {key: null, final0: "", first0: "", response: null, first: null, final: null};
  const look = () => {
    if (w.key === null || w.final !== null) return;
    const now = performance.now() - w.key, fin = pick(NUM), fst = pick(FIRST);
    if (w.first === null && ((fin && fin !== w.final0) || (fst && fst !== w.first0))) w.first = now;
    if (w.response === null && (w.first !== null || busyNow())) w.response = now;
    if (fin && fin !== w.final0) w.final = now;
  };
  document.addEventListener("keydown", (e) => {
    if (e.key !== "ArrowRight") return;
    Object.assign(w, {key: performance.now(), final0: pick(NUM), first0: pick(FIRST), response: null, first: null, final: null});
  }, true);
  const start = () => new MutationObserver(look).observe(document.documentElement, {subtree: true, childList: true, characterData: true, attributes: false});
  if (document.documentElement) start(); else document.addEventListener("DOMContentLoaded", start);
})();
""" % (json.dumps(NUMBERS[0]), json.dumps(NUMBERS[1]), json.dumps(BUSY))
WATCHES = ("observer", "poll")


async def step_observed(page, thumb) -> dict:
    """One step timed by the page's watcher (:data:`WATCH_JS`): seconds from the key press (the page's
    keydown event) to each time; None past 60 s."""
    await thumb.focus(timeout=60_000)
    await page.keyboard.press("ArrowRight")
    t = time.perf_counter()
    w = {}
    while time.perf_counter() - t < 61:
        await page.wait_for_timeout(100)
        w = await page.evaluate("window.__blWatch")
        if w["final"] is not None:
            break
    sec = lambda k: None if w.get(k) is None or w[k] > 60_000 else w[k] / 1000  # noqa: E731
    return {"response_s": sec("response"), "first_s": sec("first"), "final_s": sec("final")}


async def step_polled(page, thumb) -> dict:
    """One step timed from here, reading the page's text every 20 ms; None past 60 s. Its reference text is read
    before the key press, so a rerun without the key just before it (the caption then says "measured before")
    counts as the key's: the page's watcher (:func:`step_observed`) takes its reference at the keydown."""
    step = {"response_s": None, "first_s": None, "final_s": None}
    final0, first0, _ = await texts(page)
    await thumb.focus(timeout=60_000)
    t = time.perf_counter()
    await page.keyboard.press("ArrowRight")
    while time.perf_counter() - t < 60 and step["final_s"] is None:
        await page.wait_for_timeout(20)
        now = time.perf_counter() - t
        final, first, busy = await texts(page)
        if step["first_s"] is None and ((final and final != final0) or (first and first != first0)):
            step["first_s"] = now
        if step["response_s"] is None and (step["first_s"] is not None or busy):
            step["response_s"] = now
        if final and final != final0:
            step["final_s"] = now
    return step


async def learner(browser, url: str, steps: int, load_timeout: float, watch: str = "observer") -> dict:
    page = await browser.new_page(viewport={"width": 1400, "height": 1600})
    if watch == "observer":
        await page.add_init_script(WATCH_JS)
    t0 = time.perf_counter()
    try:
        await page.goto(url + "/binarize", wait_until="domcontentloaded", timeout=load_timeout * 1000)
        await page.get_by_text(NUMBERS[0], exact=False).first.wait_for(timeout=load_timeout * 1000)
    except Exception as err:  # noqa: BLE001 - a page that never showed its numbers
        await page.close()
        return {"failed": True, "load_s": time.perf_counter() - t0, "error": type(err).__name__, "steps": []}
    load = time.perf_counter() - t0
    thumb = page.get_by_role("slider").first
    out = []
    for _ in range(steps):
        try:
            step = await (step_observed if watch == "observer" else step_polled)(page, thumb)
        except Exception as err:  # noqa: BLE001 - a page too slow to take the key press: the step counts as timed out
            out.append({"response_s": None, "first_s": None, "final_s": None, "error": type(err).__name__})
            break
        out.append(step)
        await page.wait_for_timeout(300)
    await page.close()
    return {"failed": False, "load_s": load, "steps": out}


async def class_view(browser, url: str, pins: int) -> list[float | None]:
    """The Class page as a teacher watches it while one learner pins ``pins`` runs: for each pin, seconds
    from the learner's page confirming it ("Shared with class ...") to the Class page (open, never reloaded)
    listing it; None past 30 s."""
    teacher = await browser.new_page(viewport={"width": 1400, "height": 1600})
    await teacher.goto(url + "/classroom", wait_until="domcontentloaded", timeout=120_000)
    await teacher.get_by_text("pinned runs (", exact=False).first.wait_for(timeout=120_000)
    page = await browser.new_page(viewport={"width": 1400, "height": 1600})
    await page.goto(url + "/binarize", wait_until="domcontentloaded", timeout=120_000)
    await page.get_by_text(NUMBERS[0], exact=False).first.wait_for(timeout=120_000)
    nick = f"pinner-{int(time.time())}"  # a nickname of this run only: the class store keeps earlier runs' pins
    box = page.get_by_role("textbox", name=f"Your nickname in class {CLASS}")
    await box.fill(nick)
    await box.press("Enter")
    out = []
    for k in range(pins):
        final0, _, _ = await texts(page)
        await page.get_by_role("slider").first.focus()
        await page.keyboard.press("ArrowRight")  # a new configuration to pin
        t = time.perf_counter()
        while time.perf_counter() - t < 60 and (await texts(page))[0] in ("", final0):
            await page.wait_for_timeout(50)
        await page.get_by_role("link", name="Compare runs").click()
        await page.get_by_role("button", name="Pin this run").click()
        await page.get_by_text(f"Shared with class {CLASS} as {nick}").wait_for(timeout=60_000)
        t0 = time.perf_counter()
        seen = None
        while time.perf_counter() - t0 < 30:
            if f"{nick} ({k + 1})" in await teacher.evaluate("document.body.innerText"):
                seen = time.perf_counter() - t0
                break
            await teacher.wait_for_timeout(20)
        out.append(seen)
        await page.get_by_role("link", name="Binarize (live)").click()
        await page.get_by_text(NUMBERS[0], exact=False).first.wait_for(timeout=60_000)
    await page.close()
    await teacher.close()
    return out


def niced_chromium(level: int) -> str:
    """A launcher that runs Chromium at CPU priority ``level`` (nice), so the lab server goes first: an
    approximation of a classroom, where the browsers run on the learners' machines."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="binlab-browser-")) / "chromium"
    path.write_text(f'#!/bin/sh\nexec nice -n {int(level)} {CHROMIUM} "$@"\n')
    path.chmod(0o755)
    return str(path)


async def run(url: str, steps: int, counts: list[int], browser_nice: int = 0, pins: int = 0,
              watch: str = "observer") -> tuple[dict[int, list[dict]], list]:
    """Rows for ``counts`` learners on the lab at ``url``, one after another, after one warm-up page (the first
    session builds the lab's caches); then the Class page timing with ``pins`` pins (0: none)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        exe = niced_chromium(browser_nice) if browser_nice else CHROMIUM
        browser = await p.chromium.launch(executable_path=exe, headless=True, args=ARGS)
        await learner(browser, url, 1, 120, watch)  # warm-up
        res = {}
        for n in counts:
            res[n] = list(await asyncio.gather(*(learner(browser, url, steps if n == 1 else max(2, steps // 2), LOAD_FAILED_S, watch)
                                                 for _ in range(n))))
        seen = await class_view(browser, url, pins) if pins else []
        await browser.close()
    return res, seen


WORDS = {1: "one_learner", 8: "eight_learners", 16: "sixteen_learners", 32: "thirty_two_learners"}


def summary(runs: list[dict]) -> dict:
    """Medians and 95th percentiles of each time over every finished step of ``runs`` (one per page)."""
    def q(xs, p):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))] if xs else None
    out = {"failed_pages": sum(r["failed"] for r in runs), "load_s": [r["load_s"] for r in runs],
           "slow_pages": sum(r["failed"] or r["load_s"] > LOAD_SLOW_S for r in runs),
           "timed_out_steps": sum(s["final_s"] is None for r in runs for s in r["steps"])}
    for k in ("response", "first", "final"):
        xs = [s[f"{k}_s"] for r in runs for s in r["steps"] if s[f"{k}_s"] is not None]
        out[f"{k}_median_s"], out[f"{k}_p95_s"] = (statistics.median(xs) if xs else None), q(xs, 0.95)
    out["steps"] = [s | {"page": j, "round": r.get("round")} for j, r in enumerate(runs) for s in r["steps"]]
    return out


def step_records(runs: list[dict], key: str) -> list[dict]:
    """The steps of ``runs`` that reached ``key``, as bench/class_load.py's :func:`median_gap` takes them: each
    tagged with its page ("learner") and round, the clusters its bootstrap resamples (a page's steps queue behind
    each other, so they are not independent draws)."""
    return [{"round": r.get("round"), "learner": j, key: st[key]} for j, r in enumerate(runs) for st in r["steps"] if st[key] is not None]


def serve_and_run(args, counts: list[int], watch: str, pins: int, app_root: Path = ROOT) -> tuple[dict[int, list[dict]], list]:
    """A fresh lab server for the app of ``app_root``, the rows for ``counts`` on it, the server stopped."""
    proc, url = serve(args.preset, app_root)
    try:
        return asyncio.run(run(url, args.steps, counts, args.browser_nice, pins, watch))
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main():
    from binlab.experiments.provenance import RESULTS, machine

    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="scratch")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--learners", default="1,8,16,32", help="comma-separated class sizes, each timed in turn")
    ap.add_argument("--app-root", default=None, help="serve the app of this checkout (default: this one)")
    ap.add_argument("--out", default=None, help="results file stem (default bench-browser-<preset>)")
    ap.add_argument("--class-pins", type=int, default=5, help="pins timed on the Class page after the class sizes (0: none)")
    ap.add_argument("--browser-nice", type=int, default=0,
                    help="run the browsers at this nice level (e.g. 19), so the server gets the cores first, as when "
                         "the learners' browsers run on their own machines")
    ap.add_argument("--watch", choices=WATCHES, default="observer",
                    help="how a step is timed: observer (the page records its own changes) or poll (read the page's text every 20 ms)")
    ap.add_argument("--compare-watch", action="store_true",
                    help="time each row twice, with each watch on a fresh server (each first in turn)")
    ap.add_argument("--compare-app", default=None, metavar="DIR",
                    help="time each row twice, the app of this checkout (or --app-root) and the app of DIR, each on a fresh server (each first in turn)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="time each row this many times (per variant, their order alternating), each on a fresh server")
    args = ap.parse_args()
    if args.compare_watch and args.compare_app:
        ap.error("--compare-watch and --compare-app: one comparison at a time")
    counts = [int(x) for x in args.learners.split(",")]
    load0 = os.getloadavg()[0]
    root = Path(args.app_root).resolve() if args.app_root else ROOT
    # the variants a row is timed with: (label, app root, watch); the first is the main one (its keys in the JSON)
    variants = [("this checkout" if not args.app_root else args.app_root, root, args.watch)]
    if args.compare_watch:
        variants = [(w, root, w) for w in ((args.watch,) + tuple(w for w in WATCHES if w != args.watch))]
    elif args.compare_app:
        variants.append((args.compare_app, Path(args.compare_app).resolve(), args.watch))
    rows = []  # (learners, variant label, runs)
    for i, n in enumerate(counts):  # each row on fresh servers: its learners step to values no earlier row measured
        runs = {v[0]: [] for v in variants}
        for k in range(args.rounds):
            for label, app_root, w in (variants if (i + k) % 2 == 0 else variants[::-1]):
                res, _ = serve_and_run(args, [n], w, 0, app_root)
                runs[label] += [r | {"round": k} for r in res[n]]
        rows += [(n, label, runs[label]) for label, _, _ in variants]
    seen = serve_and_run(args, [], args.watch, args.class_pins, root)[1] if args.class_pins else []
    command = (f"python bench/browser.py --preset {args.preset} --steps {args.steps} --learners {args.learners}"
               + (f" --app-root {args.app_root}" if args.app_root else "") + (f" --out {args.out}" if args.out else "")
               + (f" --browser-nice {args.browser_nice}" if args.browser_nice else "") + (f" --class-pins {args.class_pins}" if args.class_pins != 5 else "")
               + (f" --watch {args.watch}" if args.watch != "observer" else "") + (" --compare-watch" if args.compare_watch else "")
               + (f" --compare-app {args.compare_app}" if args.compare_app else "") + (f" --rounds {args.rounds}" if args.rounds != 1 else ""))
    out = {"preset": args.preset, "machine": machine(), "cpu_flags": cpu_flags(), "date": time.strftime("%Y-%m-%d"), "command": command,
           "app": "this checkout" if not args.app_root else f"the app of {args.app_root}", "load_average_start": load0,
           "load_average_end": os.getloadavg()[0], "browser_nice": args.browser_nice, "watch": args.watch,
           "compare_watch": args.compare_watch, "compare_app": args.compare_app, "variants": [v[0] for v in variants], "by_learners": {}, "rows": []}
    for n, label, runs in rows:
        sm = summary(runs)
        sm["round_final_medians_s"] = [statistics.median(xs) if xs else None for xs in
                                           ([s["final_s"] for r in runs if r.get("round") == k for s in r["steps"] if s["final_s"] is not None]
                                            for k in range(args.rounds))]
        if label != variants[0][0]:  # the shift of the main variant's medians against this one's
            sys.path.insert(0, str(ROOT / "bench"))
            from class_load import median_gap

            main_runs = next(rs for m, lb, rs in rows if m == n and lb == variants[0][0])
            for k in ("first_s", "final_s"):
                a, b = step_records(runs, k), step_records(main_runs, k)
                if a and b:
                    sm[f"{k[:-2]}_shift"] = median_gap(a, b, key=k)
        out["rows"].append({"learners": n, "variant": label, **sm})
        if label != variants[0][0]:
            continue
        out["by_learners"][str(n)] = sm
        k = WORDS.get(n, f"learners_{n}")
        out |= {f"{k}_first_median_s": sm["first_median_s"], f"{k}_first_p95_s": sm["first_p95_s"],
                f"{k}_final_median_s": sm["final_median_s"], f"{k}_response_p95_s": sm["response_p95_s"],
                f"{k}_failed_pages": sm["failed_pages"], f"{k}_pages_without_numbers_in_30_s": sm["slow_pages"]}
    done = [x for x in seen if x is not None]
    out |= {"class_page_pin_s": seen, "class_page_update_median_s": statistics.median(done) if done else None,
            "class_page_update_max_s": max(done) if done else None, "class_page_pins_missed": len(seen) - len(done)}
    stem = RESULTS / (args.out or f"bench-browser-{args.preset}")
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2))
    f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    timing = {"observer": "the page records when its text changes (a MutationObserver reading the captions after each DOM change, "
                          "in the page's clock from the key's keydown event; read from here every 100 ms)",
              "poll": "the bench reads the page's whole text (innerText, which lays the page out) every 20 ms"}
    md = [f"# Browser benchmark ({args.preset})", "", f"Machine: {out['machine']}; CPU flags: {' '.join(out['cpu_flags'])}. "
          f"Date: {out['date']}. 1-minute load average {load0:.2f} at the start, {out['load_average_end']:.2f} at the end. "
          f"Reproduce: `{command}`" + (f" (served: {out['app']})" if args.app_root else ""), "",
          "Headless Chromium against the lab served on the same machine, as a teacher starts it for a class (`binlab app --class`); a step is one right-arrow key press on the "
          "threshold slider of Binarize (live), timed until the page shows: a first response (numbers or the busy message), "
          "the first numbers (a first look on a small slice, or the final numbers of a configuration measured before), and "
          "the final numbers. Seconds; the learners of a row work at once, each page loading and then stepping. The browsers "
          "run on the server's own cores (in a classroom they run on the learners' machines), so rows with many learners "
          "are pessimistic" + (f"; here at nice {args.browser_nice}, so the server gets the cores first." if args.browser_nice else ".")
          + (" Each row on a fresh server, timed twice (each way first in turn): " + "; ".join(f"*{w}*: {timing[w]}" for w in WATCHES) + "."
             if args.compare_watch else f" Timing: {timing[args.watch]}.")
          + (f" Each row timed on two fresh servers (each first in turn{f', {args.rounds} rounds' if args.rounds > 1 else ''}): the app of this checkout and the app of `{args.compare_app}`."
             if args.compare_app else "" if args.compare_watch else f" Each row on a fresh server ({args.rounds} round{'s' if args.rounds > 1 else ''}), after one warm-up page."), "",
          "| learners |" + (" timed with |" if len(variants) > 1 else "") + " first response median / p95 | first numbers median / p95 | final numbers median / p95 | "
          "steps timed out (60 s) | pages without numbers in 30 s | pages that never loaded (120 s) | page loads s (median) |",
          "|---|" + ("---|" if len(variants) > 1 else "") + "---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        n = r["learners"]
        md.append(f"| {n} |" + (f" {r['variant']} |" if len(variants) > 1 else "") + f" {f(r['response_median_s'])} / {f(r['response_p95_s'])} | "
                  f"{f(r['first_median_s'])} / {f(r['first_p95_s'])} | {f(r['final_median_s'])} / {f(r['final_p95_s'])} | {r['timed_out_steps']} | "
                  f"{r['slow_pages']} of {len(r['load_s'])} | {r['failed_pages']} of {len(r['load_s'])} | {f(statistics.median(r['load_s']))} |")
    shifts = [r for r in out["rows"] if "final_shift" in r and "first_shift" in r]
    if shifts:
        md += ["", f"Median of *{variants[0][0]}* minus median of *{variants[1][0]}*, seconds, with a 95 % percentile-bootstrap "
               "interval that resamples whole pages of a round (a page's steps queue behind each other; bench/class_load.py's median_gap); per-round medians of the final numbers in brackets:", ""]
        for r in shifts:
            main = next(m for m in out["rows"] if m["learners"] == r["learners"] and m["variant"] == variants[0][0])
            fs, ls = r["first_shift"], r["final_shift"]
            md.append(f"- {r['learners']} learner{'s' if r['learners'] > 1 else ''}: first numbers {fs['gap_s']:+.2f} ({fs['ci95'][0]:+.2f} to "
                      f"{fs['ci95'][1]:+.2f}); final numbers {ls['gap_s']:+.2f} ({ls['ci95'][0]:+.2f} to {ls['ci95'][1]:+.2f}) "
                      f"[{', '.join(f(x) for x in main['round_final_medians_s'])} against {', '.join(f(x) for x in r['round_final_medians_s'])}]")
    if seen:
        md += ["", f"Class page (a teacher's page left open, refreshing by itself; one learner pins {len(seen)} runs, one after another): "
               f"seconds from the learner's page confirming a pin to the Class page listing it: median "
               f"{f(out['class_page_update_median_s'])}, largest {f(out['class_page_update_max_s'])}, not shown within 30 s: "
               f"{out['class_page_pins_missed']} ({', '.join(f(x) for x in seen)})."]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
