"""Benchmark: a class on one lab server, each learner a Streamlit protocol client instead of a browser.

``bench/browser.py`` runs real browsers, but on the server's own cores, so with many learners it mostly
measures Chromium drawing pages. Here each learner speaks the page's own websocket protocol (the messages
a browser sends and receives: ``BackMsg`` / ``ForwardMsg``), costs the server's cores almost nothing, and
the server runs everything a browser makes it run: the page script of each session, its fragment rerun on
every slider move, the first look and the full numbers, the charts it sends. What is left out is the
browser's own drawing, which in a classroom happens on the learners' machines.

    python bench/protocol_class.py [--preset scratch] [--steps 8] [--learners 1,8,16,32] [--compare runner.postScriptGC=true]
    # writes docs/results/bench-protocol-<preset>.{json,md}

- a step: the threshold slider of Binarize (live) moved one notch to the right (what a right-arrow key
  press sends: the slider's new value, for the page's fragment), timed until the server has sent the
  first response (numbers or the busy message), the first numbers (the first look's caption, or the final
  caption of a configuration measured before) and the final numbers (the final caption); the same
  captions ``bench/browser.py`` reads, so the two benches time the same thing;
- two kinds of moves: ``same`` (every learner presses right from the default, as in ``bench/browser.py``:
  the first learner to reach a value measures it, the others get it as measured before) and ``new``
  (every move of every learner is a value nobody asked for before: the server evaluates each one);
- each learner sends, with every rerun, the value of every widget the page shows, as a browser does
  (tested against the messages Chromium sends);
- every class size gets a fresh server (``binlab app --class``), warmed by one page load, so no row
  reuses another's results; with ``--compare``, a second fresh server with other Streamlit settings runs
  the same moves just before or after (each first in turn), and the table shows both; 300 ms between a learner's final numbers and its next move, as in the
  browser bench; a page with no numbers after 30 s is slow, after 120 s failed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from browser import BUSY, LOAD_FAILED_S, NUMBERS, WORDS, cpu_flags, serve, server_memory, summary  # noqa: E402 - bench/browser.py

PAGE = "binarize"
STEP_TIMEOUT_S = 60


WIDGETS = ("checkbox", "selectbox", "slider", "number_input", "text_input", "file_uploader")


def widget_state(kind: str, el):
    """The value a browser page holds for a widget element the server just sent (``kind`` the element's type),
    as a ``WidgetState``; None for an element whose value a page does not send (a button, a chart). A page
    takes the element's value where the server set one, else its default, and keeps its own value after that."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    if kind not in WIDGETS or not el.id:
        return None
    ws = WidgetState(id=el.id)
    if kind == "checkbox":
        ws.bool_value = el.value if el.set_value else el.default
    elif kind == "selectbox":
        if el.set_value and el.HasField("raw_value"):
            ws.string_value = el.raw_value
        elif el.HasField("default") and 0 <= el.default < len(el.options):
            ws.string_value = el.options[el.default]
        else:
            return None  # nothing chosen: a page sends no value
    elif kind == "slider":
        ws.double_array_value.data.extend(el.value if el.set_value else el.default)
    elif kind == "number_input":
        v = el.value if el.set_value else el.default
        if el.data_type == el.INT:
            ws.int_value = int(v)
        else:
            ws.double_value = float(v)
    elif kind == "text_input":
        ws.string_value = el.value if el.set_value else el.default
    else:  # a file uploader with no file chosen
        ws.file_uploader_state_value.SetInParent()
    return ws


class Learner:
    """One learner's session, spoken over the websocket: the page's messages are read as they come, and
    what a browser would show is kept (the two captions, the busy message, the first slider), with the value
    of every widget the page shows, which each rerun sends, as a browser's does."""

    def __init__(self, ws, url: str = ""):
        self.ws, self.url = ws, url
        self.final = self.first = ""
        self.busy = False
        self.slider = self.fragment = self.page_hash = None
        self.widgets = {}  # widget id -> WidgetState: what the page holds
        self.sent = []  # every BackMsg sent, in order
        self.elements = []  # (type, label) of every element the server sent, and ("move", value) where a move was sent
        self.events = []  # (time.perf_counter(), "query" | "first" | "final", text): the page's URL query and its two captions, as they came
        self.runs_finished = 0
        self.changed = asyncio.Event()
        self.error: str | None = None

    async def read(self) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        try:
            async for raw in self.ws:
                fm = ForwardMsg()
                fm.ParseFromString(raw)
                kind = fm.WhichOneof("type")
                if kind == "navigation":  # the page the app's navigation chose (a new session names the main script first)
                    self.page_hash = fm.navigation.page_script_hash
                elif kind == "page_info_changed":  # the page wrote its URL query (Binarize: the configuration it is showing)
                    self.events.append((time.perf_counter(), "query", fm.page_info_changed.query_string))
                elif kind == "script_finished":
                    self.runs_finished += 1
                    self.changed.set()
                elif kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
                    el = fm.delta.new_element
                    what = el.WhichOneof("type")
                    sub = getattr(el, what) if what else None
                    self.elements.append((what, getattr(sub, "label", "")))
                    state = widget_state(what, sub)
                    if state is not None and (state.id not in self.widgets or getattr(sub, "set_value", False)):
                        self.widgets[state.id] = state
                    if what == "slider" and self.slider is None:
                        self.slider, self.fragment = el.slider, fm.delta.fragment_id
                    elif what == "markdown" and NUMBERS[0] in el.markdown.body:
                        self.final = el.markdown.body
                        self.events.append((time.perf_counter(), "final", self.final))
                    elif what == "markdown" and NUMBERS[1] in el.markdown.body:
                        self.first = el.markdown.body
                        self.events.append((time.perf_counter(), "first", self.first))
                    elif what == "alert" and BUSY in el.alert.body:
                        self.busy = True
                    elif what == "exception":
                        self.error = el.exception.type or "exception"
                    else:
                        continue
                    self.changed.set()
        except Exception as err:  # noqa: BLE001 - a closed connection ends the session
            self.error = type(err).__name__
            self.changed.set()

    async def wait(self, until, timeout: float) -> bool:
        """Wait until ``until()`` holds (checked on every element that could change it); False on timeout."""
        end = time.perf_counter() + timeout
        while not until():
            left = end - time.perf_counter()
            if left <= 0 or self.error:
                return until()
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass
        return True

    async def send(self, value: float | None = None) -> None:
        """A rerun: the page's first load (``value`` None), or the slider moved to ``value`` (the fragment only),
        with every widget's value, as a browser sends them."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg()
        cs = msg.rerun_script
        cs.page_name = PAGE
        if value is not None:
            self.elements.append(("move", value))
            cs.page_script_hash, cs.fragment_id = self.page_hash, self.fragment
            from streamlit.proto.WidgetStates_pb2 import WidgetState

            w = self.widgets.setdefault(self.slider.id, WidgetState(id=self.slider.id))
            del w.double_array_value.data[:]
            w.double_array_value.data.append(value)
        cs.widget_states.widgets.extend(self.widgets.values())
        cs.context_info.url = f"{self.url}/{PAGE}"
        self.sent.append(msg)
        await self.ws.send(msg.SerializeToString())


async def learner(url: str, values: list[float], settle: bool = False, sent: list | None = None, elements: list | None = None) -> dict:
    """Load the page, then move the slider to each of ``values`` in turn; the same record as bench/browser.py's.
    ``settle``: wait for the page's first run to finish before the first move (else a move follows the first
    numbers, as the browsers of bench/browser.py press); ``sent``: a list that receives every BackMsg sent;
    ``elements``: a list that receives :attr:`Learner.elements`."""
    import websockets

    t0 = time.perf_counter()
    try:
        async with websockets.connect(url.replace("http", "ws", 1) + "/_stcore/stream", subprotocols=["streamlit"],
                                      max_size=None, ping_interval=None, open_timeout=LOAD_FAILED_S) as ws:
            me = Learner(ws, url)
            if sent is not None:
                me.sent = sent
            if elements is not None:
                me.elements = elements
            reader = asyncio.create_task(me.read())
            await me.send()
            loaded = (lambda: me.runs_finished > 0 and bool(me.final)) if settle else (lambda: bool(me.final) and me.slider is not None)
            if not await me.wait(loaded, LOAD_FAILED_S - (time.perf_counter() - t0)):
                reader.cancel()
                return {"failed": True, "load_s": time.perf_counter() - t0, "error": me.error or "timeout", "steps": []}
            load, out = time.perf_counter() - t0, []
            for v in values:
                step = {"response_s": None, "first_s": None, "final_s": None}
                final0, first0 = me.final, me.first
                me.busy = False
                t = time.perf_counter()
                await me.send(v)

                def seen() -> bool:
                    now = time.perf_counter() - t
                    if step["first_s"] is None and (me.final != final0 or me.first != first0):
                        step["first_s"] = now
                    if step["response_s"] is None and (step["first_s"] is not None or me.busy):
                        step["response_s"] = now
                    if me.final != final0:
                        step["final_s"] = now
                    return step["final_s"] is not None
                if not await me.wait(seen, STEP_TIMEOUT_S):
                    out.append(step | {"error": me.error or "timeout"})
                    break
                out.append(step)
                await asyncio.sleep(0.3)
            reader.cancel()
            return {"failed": False, "load_s": load, "steps": out, "error": me.error}
    except Exception as err:  # noqa: BLE001 - a page that never loaded
        return {"failed": True, "load_s": time.perf_counter() - t0, "error": type(err).__name__, "steps": []}


def moves(n: int, steps: int, kind: str, seed: int = 0) -> list[list[float]]:
    """Each learner's slider values: ``same``, right from the default 0 in notches of 0.05 (as every browser
    in bench/browser.py does); ``new``, values no other move of the class uses (the slider's 121 notches
    from -3 to 3, the default left out, dealt at random; fewer steps when a class needs more than 120)."""
    if kind == "same":
        return [[round(0.05 * (k + 1), 2) for k in range(steps)] for _ in range(n)]
    notches = [round(0.05 * i, 2) for i in range(-60, 61) if i]
    random.Random(seed).shuffle(notches)
    per = min(steps, len(notches) // n)
    return [notches[i * per:(i + 1) * per] for i in range(n)]


async def one_class(url: str, plans: list[list[float]]) -> list[dict]:
    await learner(url, [])  # warm-up: the first session builds the lab's caches
    return list(await asyncio.gather(*(learner(url, vs) for vs in plans)))


def main():
    from binlab.experiments.provenance import RESULTS, machine

    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="scratch")
    ap.add_argument("--steps", type=int, default=8, help="moves per learner alone; half as many (at least 2) in a class")
    ap.add_argument("--learners", default="1,8,16,32", help="comma-separated class sizes")
    ap.add_argument("--moves", default="same,new", help="which kinds of moves: same, new or both")
    ap.add_argument("--out", default=None, help="results file stem (default bench-protocol-<preset>)")
    ap.add_argument("--render", action="store_true", help="rewrite the markdown from the committed JSON (no measuring)")
    ap.add_argument("--compare", action="append", default=[], metavar="SECTION.NAME=VALUE",
                    help="also time each row on a server with this Streamlit setting (repeatable: all of them on one "
                         "server), right after the lab's own, e.g. runner.postScriptGC=true; env:NAME=VALUE sets an "
                         "environment variable of that server instead, e.g. env:MALLOC_ARENA_MAX=16")
    args = ap.parse_args()
    if args.render:
        stem = RESULTS / (args.out or f"bench-protocol-{args.preset}")
        stem.with_suffix(".md").write_text(markdown(json.loads(stem.with_suffix(".json").read_text())))
        return
    counts = [int(x) for x in args.learners.split(",")]
    kinds = [k for k in args.moves.split(",") if k]
    if not set(kinds) <= {"same", "new"}:
        ap.error("--moves takes same, new or both")
    load0 = os.getloadavg()[0]
    compare = tuple(args.compare)
    out = {"preset": args.preset, "machine": machine(), "cpu_flags": cpu_flags(), "date": time.strftime("%Y-%m-%d"),
           "command": f"python bench/protocol_class.py --preset {args.preset} --steps {args.steps} --learners {args.learners} --moves {args.moves}"
           + "".join(f" --compare {o}" for o in compare),
           "load_average_start": load0, "by_moves": {}}
    if compare:
        out["compared"] = {"options": list(compare), "by_moves": {}}
    for kind in kinds:
        out["by_moves"][kind] = {}
        for i, n in enumerate(counts):
            plans = moves(n, args.steps if n == 1 else max(2, args.steps // 2), kind, seed=n)
            for options in (((), compare) if i % 2 == 0 else (compare, ())) if compare else ((),):  # each first in turn
                proc, url = serve(args.preset, options=tuple(o for o in options if not o.startswith("env:")),
                                  env=dict(o[4:].split("=", 1) for o in options if o.startswith("env:")))
                try:
                    runs = asyncio.run(one_class(url, plans))
                    memory = server_memory(proc)
                finally:
                    proc.terminate()
                    proc.wait(timeout=20)
                sm = summary(runs) | memory
                sm["errors"] = sorted({r["error"] for r in runs if r.get("error")} | {s["error"] for r in runs for s in r["steps"] if s.get("error")})
                print(kind, n, options or "the lab's settings", {k: v for k, v in sm.items() if k not in ("steps", "load_s")}, flush=True)
                if options:
                    out["compared"]["by_moves"].setdefault(kind, {})[str(n)] = sm
                    continue
                out["by_moves"][kind][str(n)] = sm
                w = WORDS.get(n, f"learners_{n}")
                out |= {f"{kind}_{w}_first_median_s": sm["first_median_s"], f"{kind}_{w}_first_p95_s": sm["first_p95_s"],
                        f"{kind}_{w}_final_median_s": sm["final_median_s"], f"{kind}_{w}_response_p95_s": sm["response_p95_s"],
                        f"{kind}_{w}_failed_pages": sm["failed_pages"]}
    out["load_average_end"] = os.getloadavg()[0]
    stem = RESULTS / (args.out or f"bench-protocol-{args.preset}")
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2))
    text = markdown(out)
    stem.with_suffix(".md").write_text(text)
    print(text)


def late(sm: dict, limit: float = 1.0) -> tuple[float | None, int, int]:
    """(the slowest first response, how many steps took longer than ``limit`` to show numbers or the busy
    message, how many steps) of one row: the issue's "numbers or a busy message within 1 s of every change"."""
    r = [s["response_s"] if s["response_s"] is not None else float("inf") for s in sm["steps"]]
    return (max(r) if r else None), sum(x > limit for x in r), len(r)


def markdown(out: dict) -> str:
    f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    kinds = list(out["by_moves"])
    md = [f"# A class on one server, learners as protocol clients ({out['preset']})", "",
          f"Machine: {out['machine']}; CPU flags: {' '.join(out['cpu_flags'])}. Date: {out['date']}. 1-minute load average "
          f"{out['load_average_start']:.2f} at the start, {out['load_average_end']:.2f} at the end. Reproduce: `{out['command']}`"
          + (f". This run: {out['note']}." if out.get("note") else ""), "",
          "Each learner is a client of the page's websocket protocol (no browser), so the server's two cores run only the lab: "
          "every session's page script, its fragment rerun on each move, the first look, the full numbers and the charts it "
          "sends; in a classroom the drawing happens on the learners' machines. A step is one notch of the threshold slider "
          "of Binarize (live), timed until the server has sent the first response (numbers or the busy message), the first "
          "numbers and the final numbers (the captions bench/browser.py reads). Seconds; a fresh server (`binlab app --class`) "
          "for each row; the learners of a row work at once.", "",
          "- *same*: every learner presses right from the default, as the browsers of bench/browser.py do: the first to reach "
          "a value measures it, the others get its numbers (measured before, or waited for while it is measured);",
          "- *new*: every move is a value nobody asked for before, so the server evaluates each one (a first look on 200 "
          "rows, then all 1,000).", "",
          "| moves | learners | server | first response median / p95 / slowest | steps over 1 s without a response | first numbers median / p95 | "
          "final numbers median / p95 | steps timed out (60 s) | pages that never loaded (120 s) | page loads s (median) | server memory MiB (peak) |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    other = out.get("compared")
    for kind in kinds:
        for n, sm in out["by_moves"][kind].items():
            for label, row in (("the lab's", sm), (", ".join(other["options"]) if other else "", (other or {}).get("by_moves", {}).get(kind, {}).get(n))):
                if row is None:
                    continue
                slowest, over, steps = late(row)
                md.append(f"| {kind} | {n} | {label} | {f(row['response_median_s'])} / {f(row['response_p95_s'])} / {f(slowest)} | {over} of {steps} | "
                          f"{f(row['first_median_s'])} / {f(row['first_p95_s'])} | {f(row['final_median_s'])} / {f(row['final_p95_s'])} | "
                          f"{row['timed_out_steps']} | {row['failed_pages']} of {n} | {f(statistics.median(row['load_s']))} | "
                          f"{f(row.get('server_peak_rss_mib'))} |")
    if other:
        md += ["", f"Each row is timed on two fresh servers, one after the other (each first in turn), with the same moves: "
               f"the lab's settings (`binlab app`, .streamlit/config.toml) and {', '.join(f'`{o}`' for o in other['options'])}."]
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
