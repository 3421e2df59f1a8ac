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

    python bench/class_load.py --preset scratch --learners 8     # docs/results/bench-class-load-<preset>.{json,md}
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


def one_round(lab: LiveLab, learners: int, changes: int, seed: int) -> list[dict]:
    """One class: ``learners`` threads, each ``changes`` changes; returns one record per change. Rounds with
    the same ``seed`` make the same changes with the same think times."""
    clones = [lab.clone() for _ in range(learners)]
    LiveLab._shared_results.clear()  # every change is new to the server
    out, errors, lock, start = [], [], threading.Lock(), threading.Barrier(learners)

    def learner(i: int):
        try:
            rng = random.Random(seed * 1000 + i)
            me = clones[i]
            start.wait()
            time.sleep(rng.uniform(0, 0.5))  # learners do not all press at the same instant
            for k in range(changes):
                tau = -1.0 + 0.005 * (i * changes + k)  # a configuration no other learner of this round measures
                spec = QuantSpec((Rule("layers.0.attn.q", MethodConfig("bucket", options={"tau": round(tau, 4)})),))
                t0 = time.perf_counter()
                me.glance(spec)
                t1 = time.perf_counter()
                me.apply(spec)
                t2 = time.perf_counter()
                with lock:
                    out.append({"learner": i, "change": k, "first_s": t1 - t0, "final_s": t2 - t0})
                time.sleep(rng.uniform(0.2, 1.0))
        except BaseException as err:  # a learner that fails fails the bench, not silently its numbers
            errors.append(err)
            start.abort()

    threads = [threading.Thread(target=learner, args=(i,)) for i in range(learners)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} learner(s) failed: {errors[0]!r}") from errors[0]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="scratch")
    ap.add_argument("--data", default=None)
    ap.add_argument("--learners", type=int, default=8)
    ap.add_argument("--changes", type=int, default=5, help="changes per learner per round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per setting (alternating)")
    args = ap.parse_args()
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
        aside = r % 2 == 0 if (r // 2) % 2 == 0 else r % 2 == 1  # on, off, off, on, ...: neither always goes first
        GATE.step_aside = aside
        results[aside] += one_round(lab, args.learners, args.changes, seed=r // 2)
    GATE.step_aside = True

    def summary(rows):
        f, g = [x["first_s"] for x in rows], [x["final_s"] for x in rows]
        return {"changes": len(rows), "first_median_s": statistics.median(f), "first_p95_s": _p95(f),
                "final_median_s": statistics.median(g), "final_p95_s": _p95(g)}

    payload = {"preset": p.name, "machine": machine(), "cpu_flags": cpu_flags(), "threads": torch.get_num_threads(),
               "gate_slots": GATE.slots, "date": time.strftime("%Y-%m-%d"), "learners": args.learners, "changes": args.changes,
               "rounds": args.rounds, "live_rows": len(lab.val), "glance_rows": len(lab.glance_val),
               "load_average": [load0, os.getloadavg()[0]],
               "step_aside": summary(results[True]), "hold": summary(results[False]),
               "records": {"step_aside": results[True], "hold": results[False]},
               "command": f"python bench/class_load.py --preset {p.name} --learners {args.learners} --changes {args.changes} --rounds {args.rounds}"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"bench-class-load-{p.name}"
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    a, h = payload["step_aside"], payload["hold"]
    md = [f"# Many learners on one server, without browsers ({p.name})", "",
          f"Machine: {payload['machine']}, {payload['threads']} torch threads, {GATE.slots} evaluation(s) at a time; CPU flags: "
          f"{' '.join(payload['cpu_flags'])}. Date: {payload['date']}. 1-minute load average {load0:.2f} at the start, "
          f"{payload['load_average'][1]:.2f} at the end.", f"Reproduce: `{payload['command']}`", "",
          f"{args.learners} learners (threads, each with its own clone of the Binarize page's lab: {len(lab.val)} validation rows, a "
          f"first look on {len(lab.glance_val)}), each making {args.changes} threshold changes nobody measured before, thinking "
          "0.2-1.0 s between them; seconds from a change to its first numbers and to its final numbers, the evaluation queue "
          f"included. The two settings alternate over {2 * args.rounds} rounds (on, off, off, on ...; the same changes and think times in each pair of rounds).", "",
          "| server setting | changes | first numbers median / p95 s | final numbers median / p95 s |", "|---|---|---|---|",
          f"| a full evaluation steps aside between batches for waiting first looks (the lab's setting) | {a['changes']} | "
          f"**{a['first_median_s']:.2f}** / {a['first_p95_s']:.2f} | {a['final_median_s']:.2f} / {a['final_p95_s']:.2f} |",
          f"| a full evaluation holds its slot to the end | {h['changes']} | **{h['first_median_s']:.2f}** / {h['first_p95_s']:.2f} | "
          f"{h['final_median_s']:.2f} / {h['final_p95_s']:.2f} |"]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
