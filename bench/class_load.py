"""Benchmark: many learners on one lab server, without browsers: what the server makes each learner wait.

Each learner is a thread with its own clone of the page's lab (``LiveLab.for_page``), as the server gives
each session one. A learner makes ``--changes`` changes of the threshold on one component (each a
configuration nobody measured before), and for each waits for the first look (``glance``), then the full
numbers (``apply``), then thinks for a random 0.2-1.0 s. Timed per change: seconds from the change to the
first numbers and to the final numbers, the evaluation gate's queue included (``binlab.lab.gate``).

Two server settings are compared in alternating rounds of the same class (the same changes, the same think
times): a running full evaluation that steps aside between batches for waiting first looks
(``EvalGate.step_aside``, the lab's setting), and one that holds its slot to the end. The browsers of
``bench/browser.py`` add the page's drawing on top; here the learners cost the server nothing but their
evaluations.

With ``--same`` every learner makes the same changes, within half a second of each other (a class told
to try the same thresholds), and the settings compared are a clone that waits for the numbers of a
configuration another clone is measuring (``LiveLab.share_in_flight``, the lab's setting) and one that
measures it again.

    python bench/class_load.py --preset scratch --learners 8          # docs/results/bench-class-load-<preset>.{json,md}
    python bench/class_load.py --preset scratch --learners 8 --same   # docs/results/bench-class-load-<preset>-same.{json,md}
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import threading
import time

import torch

from binlab.experiments.provenance import RESULTS, cpu_flags, machine
from binlab.lab.gate import GATE
from binlab.lab.live import LiveLab
from binlab.nn.quantize import MethodConfig, QuantSpec, Rule
from binlab.presets import get_baseline, get_preset, load_data


def _p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def one_round(lab: LiveLab, learners: int, changes: int, seed: int, rnd: int = 0, same: bool = False) -> list[dict]:
    """One class: ``learners`` threads, each ``changes`` changes; returns one record per change. Rounds with
    the same ``seed`` make the same changes with the same think times. ``same``: every learner's k-th change
    is the same configuration (a class told to try the same thresholds), each learner starting at once."""
    clones = [lab.clone() for _ in range(learners)]
    LiveLab._shared_results.clear()  # every change is new to the server
    LiveLab._shared_glances.clear()
    out, errors, lock, start = [], [], threading.Lock(), threading.Barrier(learners)
    go = threading.Barrier(learners)

    def learner(i: int):
        try:
            rng = random.Random(seed * 1000 + i)
            me = clones[i]
            start.wait()
            time.sleep(rng.uniform(0, 0.5))  # learners do not all press at the same instant
            for k in range(changes):
                # a configuration no other learner of this round measures, or (same) the one all of them try
                tau = -1.0 + 0.005 * (k if same else i * changes + k)
                spec = QuantSpec((Rule("layers.0.attn.q", MethodConfig("bucket", options={"tau": round(tau, 4)})),))
                t0 = time.perf_counter()
                me.glance(spec)
                t1 = time.perf_counter()
                me.apply(spec)
                t2 = time.perf_counter()
                with lock:
                    out.append({"round": rnd, "learner": i, "change": k, "first_s": t1 - t0, "final_s": t2 - t0})
                if same:
                    go.wait()  # the class moves on together
                time.sleep(rng.uniform(0.2, 1.0))
        except BaseException as err:  # a learner that fails fails the bench, not silently its numbers
            errors.append(err)
            start.abort()
            go.abort()

    threads = [threading.Thread(target=learner, args=(i,)) for i in range(learners)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} learner(s) failed: {errors[0]!r}") from errors[0]
    return out


def median_gap(a: list[dict], b: list[dict], key: str = "first_s", draws: int = 4000, seed: int = 0) -> dict:
    """Median of ``b`` minus median of ``a`` (seconds) with a 95 % percentile-bootstrap interval that resamples
    whole learners of a round (their changes queue behind each other, so they are not independent draws);
    records without a round are grouped by learner alone."""
    import numpy as np

    def clusters(recs):
        groups = {}
        for x in recs:
            groups.setdefault((x.get("round"), x["learner"]), []).append(x[key])
        return list(groups.values())

    ca, cb = clusters(a), clusters(b)
    rng = np.random.default_rng(seed)

    def med(cs, pick):
        return float(np.median(np.concatenate([cs[i] for i in pick])))

    gaps = [med(cb, rng.integers(0, len(cb), len(cb))) - med(ca, rng.integers(0, len(ca), len(ca))) for _ in range(draws)]
    point = float(np.median([x[key] for x in b]) - np.median([x[key] for x in a]))
    return {"gap_s": point, "ci95": [float(np.percentile(gaps, 2.5)), float(np.percentile(gaps, 97.5))], "clusters": [len(ca), len(cb)]}


def _machine_lines(payload: dict) -> list[str]:
    """The machine, load and command lines both tables start with."""
    return [f"Machine: {payload['machine']}, {payload['threads']} torch threads, {payload['gate_slots']} evaluation(s) at a time; CPU flags: "
            f"{' '.join(payload['cpu_flags'])}. Date: {payload['date']}. 1-minute load average {payload['load_average'][0]:.2f} at the start, "
            f"{payload['load_average'][1]:.2f} at the end.", f"Reproduce: `{payload['command']}`", ""]


def markdown(payload: dict) -> str:
    a, h = payload["step_aside"], payload["hold"]
    gap = payload.get("first_gap") or median_gap(payload["records"]["step_aside"], payload["records"]["hold"])
    fgap = payload.get("final_gap") or median_gap(payload["records"]["step_aside"], payload["records"]["hold"], "final_s")
    rounds = payload["rounds"]
    return "\n".join([
        f"# Many learners on one server, without browsers ({payload['preset']})", "",
        *_machine_lines(payload),
        f"{payload['learners']} learners (threads, each with its own clone of the Binarize page's lab: {payload['live_rows']} validation rows, a "
        f"first look on {payload['glance_rows']}), each making {payload['changes']} threshold changes nobody measured before, thinking "
        "0.2-1.0 s between them; seconds from a change to its first numbers and to its final numbers, the evaluation queue "
        f"included. The two settings alternate over {2 * rounds} rounds (on, off, off, on ...; the same changes and think times "
        "in each pair of rounds).", "",
        "| server setting | changes | first numbers median / p95 s | final numbers median / p95 s |", "|---|---|---|---|",
        f"| a full evaluation steps aside between batches for waiting first looks (the lab's setting) | {a['changes']} | "
        f"**{a['first_median_s']:.2f}** / {a['first_p95_s']:.2f} | {a['final_median_s']:.2f} / {a['final_p95_s']:.2f} |",
        f"| a full evaluation holds its slot to the end | {h['changes']} | **{h['first_median_s']:.2f}** / {h['first_p95_s']:.2f} | "
        f"{h['final_median_s']:.2f} / {h['final_p95_s']:.2f} |", "",
        f"Holding minus stepping aside, medians: first numbers {gap['gap_s']:+.2f} s [{gap['ci95'][0]:+.2f}, {gap['ci95'][1]:+.2f}], "
        f"final numbers {fgap['gap_s']:+.2f} s [{fgap['ci95'][0]:+.2f}, {fgap['ci95'][1]:+.2f}] (95 % percentile bootstrap that "
        f"resamples whole learners, {gap['clusters'][0]} and {gap['clusters'][1]} groups of changes, since one learner's changes "
        "queue behind each other and are not independent)."]) + "\n"


def markdown_same(payload: dict) -> str:
    """The --same comparison: clones that share a configuration another is measuring, against each measuring it."""
    a, h = payload["share"], payload["alone"]
    gap, fgap = payload["first_gap"], payload["final_gap"]
    return "\n".join([
        f"# A class trying the same changes at once, without browsers ({payload['preset']})", "",
        *_machine_lines(payload),
        f"{payload['learners']} learners (threads, each with its own clone of the Binarize page's lab: {payload['live_rows']} validation rows, a "
        f"first look on {payload['glance_rows']}) make the same {payload['changes']} threshold changes, each change within half a second "
        "of the others (a class told to try the same thresholds), then think 0.2-1.0 s; seconds from a change to its first numbers "
        f"and to its final numbers. The two settings alternate over {2 * payload['rounds']} rounds (on, off, off, on ...).", "",
        "| server setting | changes | first numbers median / p95 s | final numbers median / p95 s |", "|---|---|---|---|",
        f"| a learner asking for a configuration another is measuring waits for its numbers (the lab's setting) | {a['changes']} | "
        f"**{a['first_median_s']:.2f}** / {a['first_p95_s']:.2f} | **{a['final_median_s']:.2f}** / {a['final_p95_s']:.2f} |",
        f"| every learner measures it again | {h['changes']} | **{h['first_median_s']:.2f}** / {h['first_p95_s']:.2f} | "
        f"**{h['final_median_s']:.2f}** / {h['final_p95_s']:.2f} |", "",
        f"Measuring again minus sharing, medians: first numbers {gap['gap_s']:+.2f} s [{gap['ci95'][0]:+.2f}, {gap['ci95'][1]:+.2f}], "
        f"final numbers {fgap['gap_s']:+.2f} s [{fgap['ci95'][0]:+.2f}, {fgap['ci95'][1]:+.2f}] (95 % percentile bootstrap that "
        f"resamples whole learners, {gap['clusters'][0]} and {gap['clusters'][1]} groups of changes)."]) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="scratch")
    ap.add_argument("--data", default=None)
    ap.add_argument("--learners", type=int, default=8)
    ap.add_argument("--changes", type=int, default=5, help="changes per learner per round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per setting (alternating)")
    ap.add_argument("--same", action="store_true",
                    help="every learner makes the same changes at once; compares sharing a measurement in progress with measuring it again "
                         "(docs/results/bench-class-load-<preset>-same)")
    ap.add_argument("--render", action="store_true", help="rewrite the markdown from the committed JSON (no measuring)")
    args = ap.parse_args()
    name = f"bench-class-load-{args.preset}" + ("-same" if args.same else "")
    if args.render:
        stem = RESULTS / name
        payload = json.loads(stem.with_suffix(".json").read_text())
        stem.with_suffix(".md").write_text((markdown_same if args.same else markdown)(payload))
        return
    if not (1 <= args.learners * args.changes <= 800):
        raise SystemExit("learners x changes must be 1 to 800 (the thresholds stay within the bucket method's range)")
    p = get_preset(args.preset)
    splits = load_data(p, source=args.data)
    model, _ = get_baseline(p, splits)
    lab = LiveLab.for_page(model, splits, p)
    lab.clone().apply(QuantSpec.simple("QK", "bucket"))  # warm-up
    load0 = os.getloadavg()[0]
    results = {True: [], False: []}
    for r in range(2 * args.rounds):
        on = r % 2 == 0 if (r // 2) % 2 == 0 else r % 2 == 1  # on, off, off, on, ...: neither always goes first
        if args.same:
            LiveLab.share_in_flight = on
        else:
            GATE.step_aside = on
        results[on] += one_round(lab, args.learners, args.changes, seed=r // 2, rnd=r, same=args.same)
    GATE.step_aside = LiveLab.share_in_flight = True

    def summary(rows):
        f, g = [x["first_s"] for x in rows], [x["final_s"] for x in rows]
        return {"changes": len(rows), "first_median_s": statistics.median(f), "first_p95_s": _p95(f),
                "final_median_s": statistics.median(g), "final_p95_s": _p95(g)}

    payload = {"preset": p.name, "machine": machine(), "cpu_flags": cpu_flags(), "threads": torch.get_num_threads(),
               "gate_slots": GATE.slots, "date": time.strftime("%Y-%m-%d"), "learners": args.learners, "changes": args.changes,
               "rounds": args.rounds, "live_rows": len(lab.val), "glance_rows": len(lab.glance_val),
               "load_average": [load0, os.getloadavg()[0]],
               **({"share": summary(results[True]), "alone": summary(results[False]),
                   "records": {"share": results[True], "alone": results[False]}} if args.same else
                  {"step_aside": summary(results[True]), "hold": summary(results[False]),
                   "records": {"step_aside": results[True], "hold": results[False]}}),
               "first_gap": median_gap(results[True], results[False]), "final_gap": median_gap(results[True], results[False], "final_s"),
               "command": f"python bench/class_load.py --preset {p.name} --learners {args.learners} --changes {args.changes} --rounds {args.rounds}"
                          + (" --same" if args.same else "")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / name
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    text = (markdown_same if args.same else markdown)(payload)
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
