"""Benchmark: a learner dragging the threshold faster than the numbers follow, over the page's protocol.

    python bench/drag.py [--preset scratch] [--drags 8] [--moves 5] [--gap 0.12] [--rounds 3] [--compare-app DIR]
    # writes docs/results/bench-drag-<preset>.{json,md} (--out to name it)

A drag is ``--moves`` notches of the threshold slider of Binarize (live) sent ``--gap`` seconds apart, as a
held arrow key or a dragged slider sends them; Streamlit folds the moves that arrive while a run goes on into
one rerun, which starts when that run ends. Each drag is timed from its last move until the server has sent
the first numbers and the final numbers of that last value (the page writes the configuration it is showing
into its URL query, and its captions follow), and counts the final captions the server sent during the drag
(full evaluations that ran to their end). Every value is new to the server. One learner, a protocol client
(``bench/protocol_class.py``), so the server's two cores run only the lab; each round on fresh servers; with
``--compare-app DIR`` the same drags against the app of DIR, each first in turn.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from browser import LOAD_FAILED_S, cpu_flags, serve  # noqa: E402 - bench/browser.py
from class_load import median_gap  # noqa: E402
from protocol_class import STEP_TIMEOUT_S, Learner  # noqa: E402


def tau_of(query: str) -> float | None:
    """The threshold of the configuration a page's URL query names (its first rule's ``tau``), or None."""
    spec = urllib.parse.parse_qs(query).get("spec")
    try:
        rules = json.loads(spec[0])["rules"] if spec else []
    except (ValueError, KeyError, TypeError):
        return None
    tau = rules[0]["method"].get("options", {}).get("tau") if rules else None
    return None if tau is None else float(tau)


def last_value_times(events: list, since: int, value: float, t: float) -> tuple[float | None, float | None]:
    """Seconds from ``t`` to the first numbers and to the final numbers of the run showing ``value``: the
    captions that follow the first URL query naming it among ``events[since:]`` (a configuration measured
    before has no first look: its final caption is its first numbers)."""
    start = next((i for i in range(since, len(events)) if events[i][1] == "query" and tau_of(events[i][2]) is not None
                  and abs(tau_of(events[i][2]) - value) < 1e-9), None)
    if start is None:
        return None, None
    final = next((e[0] for e in events[start:] if e[1] == "final"), None)
    first = next((e[0] for e in events[start:] if e[1] in ("first", "final")), None)
    return (None if first is None else first - t), (None if final is None else final - t)


async def dragger(url: str, drags: list[list[float]], gap: float) -> list[dict]:
    """One learner: load Binarize (live), then each drag in turn (its moves ``gap`` s apart), waiting for the
    last value's final numbers and 1 s more before the next drag."""
    import websockets

    async with websockets.connect(url.replace("http", "ws", 1) + "/_stcore/stream", subprotocols=["streamlit"],
                                  max_size=None, ping_interval=None, open_timeout=LOAD_FAILED_S) as ws:
        me = Learner(ws, url)
        reader = asyncio.create_task(me.read())
        await me.send()
        if not await me.wait(lambda: me.runs_finished > 0 and bool(me.final), LOAD_FAILED_S):
            reader.cancel()
            raise RuntimeError(f"the page did not load: {me.error}")
        out = []
        for values in drags:
            since = len(me.events)
            for v in values[:-1]:
                await me.send(v)
                await asyncio.sleep(gap)
            t = time.perf_counter()
            await me.send(values[-1])
            done = await me.wait(lambda: last_value_times(me.events, since, values[-1], t)[1] is not None, STEP_TIMEOUT_S)
            first, final = last_value_times(me.events, since, values[-1], t)
            await asyncio.sleep(1.0)  # the runs of this drag are over before the next one starts
            out.append({"first_s": first, "final_s": final if done else None,
                        "finals_sent": sum(1 for e in me.events[since:] if e[1] == "final"), "moves": values})
        reader.cancel()
        return out


def plan(drags: int, moves: int) -> list[list[float]]:
    """Right from the slider's default 0 in notches of 0.05: every value new to the server."""
    return [[round(0.05 * (d * moves + k + 1), 2) for k in range(moves)] for d in range(drags)]


def main():
    from binlab.experiments.provenance import RESULTS, machine

    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="scratch")
    ap.add_argument("--drags", type=int, default=8, help="drags per server")
    ap.add_argument("--moves", type=int, default=5, help="slider notches per drag")
    ap.add_argument("--gap", type=float, default=0.12, help="seconds between a drag's moves")
    ap.add_argument("--rounds", type=int, default=3, help="fresh servers per app")
    ap.add_argument("--compare-app", default=None, metavar="DIR", help="also drag against the app of DIR (each first in turn)")
    ap.add_argument("--out", default=None, help="results file stem (default bench-drag-<preset>)")
    args = ap.parse_args()
    if args.moves < 2 or args.drags * args.moves > 60:
        ap.error("a drag needs 2 moves or more, and all drags at most 60 notches (the slider's right half)")
    variants = [("this checkout", ROOT)] + ([(args.compare_app, Path(args.compare_app).resolve())] if args.compare_app else [])
    load0 = os.getloadavg()[0]
    runs = {label: [] for label, _ in variants}
    for k in range(args.rounds):
        for label, root in (variants if k % 2 == 0 else variants[::-1]):
            proc, url = serve(args.preset, root)
            try:
                steps = asyncio.run(dragger(url, plan(args.drags, args.moves), args.gap))
            finally:
                proc.terminate()
                proc.wait(timeout=20)
            runs[label] += [s | {"round": k, "learner": i} for i, s in enumerate(steps)]
            print(label, k, [round(s["final_s"], 2) if s["final_s"] is not None else None for s in steps], flush=True)
    command = (f"python bench/drag.py --preset {args.preset} --drags {args.drags} --moves {args.moves} --gap {args.gap} --rounds {args.rounds}"
               + (f" --compare-app {args.compare_app}" if args.compare_app else "") + (f" --out {args.out}" if args.out else ""))
    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    rows = []
    for label, _ in variants:
        steps = runs[label]
        done = [s for s in steps if s["final_s"] is not None]
        finals = sorted(s["final_s"] for s in done)
        rows.append({"variant": label, "drags": len(steps), "timed_out": len(steps) - len(done),
                     "first_median_s": med([s["first_s"] for s in done if s["first_s"] is not None]), "final_median_s": med(finals),
                     "final_p95_s": finals[min(len(finals) - 1, int(round(0.95 * (len(finals) - 1))))] if finals else None,
                     "finals_sent_median": med([s["finals_sent"] for s in steps]),
                     "round_final_medians_s": [med([s["final_s"] for s in done if s["round"] == k]) for k in range(args.rounds)]})
    out = {"preset": args.preset, "machine": machine(), "cpu_flags": cpu_flags(), "date": time.strftime("%Y-%m-%d"), "command": command,
           "load_average_start": load0, "load_average_end": os.getloadavg()[0], "drags": args.drags, "moves": args.moves, "gap_s": args.gap,
           "rows": rows, "steps": runs}
    if args.compare_app:
        main_done = [s for s in runs[variants[0][0]] if s["final_s"] is not None and s["first_s"] is not None]
        other_done = [s for s in runs[variants[1][0]] if s["final_s"] is not None and s["first_s"] is not None]
        out["shift"] = {k: median_gap(other_done, main_done, key=k) for k in ("first_s", "final_s")}  # this checkout minus the other
    out |= {"final_median_s": rows[0]["final_median_s"], "first_median_s": rows[0]["first_median_s"]}
    stem = RESULTS / (args.out or f"bench-drag-{args.preset}")
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2))
    f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    md = [f"# Dragging the threshold ({args.preset})", "",
          f"Machine: {out['machine']}; CPU flags: {' '.join(out['cpu_flags'])}. Date: {out['date']}. 1-minute load average {load0:.2f} at the "
          f"start, {out['load_average_end']:.2f} at the end. Reproduce: `{command}`", "",
          f"One learner (a protocol client: no browser) on a fresh lab server per round ({args.rounds} rounds"
          + (", each app first in turn" if args.compare_app else "") + f"); a drag is {args.moves} notches of the threshold slider of Binarize "
          f"(live) sent {args.gap} s apart, every value new to the server; timed from the drag's last move until the server sent the "
          "first numbers and the final numbers of that last value. *Final captions sent*: full evaluations of the drag's values "
          "that ran to their end (the last value's included). Seconds.", "",
          "| app | drags | first numbers median | final numbers median / p95 | final captions sent per drag (median) | final numbers, median per round | timed out (60 s) |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['variant']} | {r['drags']} | {f(r['first_median_s'])} | {f(r['final_median_s'])} / {f(r['final_p95_s'])} | "
                  f"{f(r['finals_sent_median'])} | {', '.join(f(x) for x in r['round_final_medians_s'])} | {r['timed_out']} |")
    if "shift" in out:
        fs, ls = out["shift"]["first_s"], out["shift"]["final_s"]
        md += ["", f"Median of *this checkout* minus median of *{variants[1][0]}*, with a 95 % percentile-bootstrap interval over drags: "
               f"first numbers {fs['gap_s']:+.2f} s ({fs['ci95'][0]:+.2f} to {fs['ci95'][1]:+.2f}), final numbers {ls['gap_s']:+.2f} s "
               f"({ls['ci95'][0]:+.2f} to {ls['ci95'][1]:+.2f})."]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
