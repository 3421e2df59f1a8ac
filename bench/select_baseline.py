"""Choose a preset's baseline learning rate on validation: train the fp32 baseline at each candidate rate
(cached, so the chosen one is the baseline every table then loads) and keep the lowest validation
perplexity (language models) or the highest validation accuracy (classifiers). The test split is not
evaluated here: it is for the final tables.

    python bench/select_baseline.py --preset lstm --lr 0.002 0.005 0.01
    # writes docs/results/select-baseline-lstm.{json,md}; set the preset's lr to the chosen one
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from binlab.experiments.provenance import RESULTS, machine
from binlab.presets import get_baseline, get_preset, load_data
from binlab.progress import training_bar


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="lstm")
    ap.add_argument("--lr", type=float, nargs="+", required=True)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    p = get_preset(args.preset)
    splits = load_data(p, args.data)
    rows = []
    for lr in args.lr:
        cfg = replace(p.train, lr=lr)
        _, meta = get_baseline(p, splits, cfg, callback=training_bar())
        rows.append({"lr": lr, "epochs": cfg.epochs, "schedule": cfg.schedule, "val_perplexity": meta.get("val_perplexity"),
                     "val_accuracy": meta["val_accuracy"], "train_seconds": meta["history"]["seconds"]})
        print(rows[-1], flush=True)
    lm = rows[0]["val_perplexity"] is not None
    best = min(rows, key=lambda r: r["val_perplexity"]) if lm else max(rows, key=lambda r: r["val_accuracy"])
    out = {"preset": p.name, "machine": machine(), "date": time.strftime("%Y-%m-%d"), "train": {k: v for k, v in vars(p.train).items() if k != "lr"},
           "val_rows": len(splits.val), "metric": "val_perplexity" if lm else "val_accuracy", "rows": rows, "chosen_lr": best["lr"]}
    from pathlib import Path

    stem = Path(args.out) / f"select-baseline-{p.name}"
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    metric = "validation perplexity" if lm else "validation accuracy %"
    lines = [f"# Baseline learning rate chosen on validation ({p.name})", "",
             f"Machine: {out['machine']}. Date: {out['date']}. Reproduce: `python bench/select_baseline.py --preset {p.name} --lr "
             + " ".join(f"{r['lr']:g}" for r in rows) + "`", "",
             f"Each row trains the fp32 baseline from scratch ({rows[0]['epochs']:g} epochs, {rows[0]['schedule']} schedule, seed 0) at one "
             f"learning rate and measures it on the {len(splits.val):,} validation rows; the test split is not evaluated. "
             f"Chosen: **lr {best['lr']:g}** (the {'lowest' if lm else 'highest'} {metric}), the preset's baseline from then on. "
             "One seed per rate: a choice by protocol, not evidence that the neighbours are worse by this much. Train s is the "
             "time recorded when each baseline was trained; a run that shared the 2 cores with other work took longer."
             + (" The chosen rate is the largest tried and the metric was still improving toward it: a larger rate may do better."
                if best["lr"] == max(r["lr"] for r in rows) and len(rows) > 1 else "")
             + (" The chosen rate is the smallest tried: a smaller rate may do better." if best["lr"] == min(r["lr"] for r in rows)
                and len(rows) > 1 else ""), "",
             f"| lr | {metric} | train s |", "|---|---|---|"]
    for r in rows:
        v = f"{r['val_perplexity']:.2f}" if lm else f"{100 * r['val_accuracy']:.2f}"
        lines.append(f"| {r['lr']:g} | {v} | {r['train_seconds']:.0f} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"chosen lr {best['lr']:g}; wrote {stem}.json/.md")
    return out


if __name__ == "__main__":
    main()
