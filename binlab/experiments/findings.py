"""Findings written from a table's rows (T6, T8, T9, T10): what the numbers say, in a sentence or two.

The rule every finding keeps (and ``tests/test_claims.py`` checks against the JSON): an ordering, a
"best" or a difference between two rows is stated only where its 95 % interval excludes zero
(:func:`compare`, from the rows' stored per-row results); a "best" is chosen on validation; a table
whose rows have one seed each states no ordering at all (one trained model per recipe says nothing
about the recipe's rank). Language-model rows compare by perplexity ratio (:func:`compare_perplexity`,
from their stored per-block log-likelihoods); a table stored without them states no ordering.
"""
from __future__ import annotations

from .catalog import is_control
from .stats import SeedDiff, SeedRatio, seed_diff, seed_ratio, unpack_correct, unpack_floats
from .texts import change_text, diff_text, ratio_text, vs_control_text


def seeds_of(r: dict) -> int:
    return len(r.get("random_seeds") or [0])


def _paired_seeds(a: dict, b: dict) -> bool:
    ba, bb = a.get("baseline_seeds") or [], b.get("baseline_seeds") or []
    return len(ba) > 1 and ba == bb and len(set(ba)) == len(ba)


def compare(a: dict, b: dict) -> SeedDiff | None:
    """Row ``a``'s accuracy minus row ``b``'s on the same test rows, with the two-stage interval of
    :func:`binlab.experiments.stats.seed_diff` (seeds paired when both rows' seed k started from the same
    baseline k); None when either row has no stored per-row results."""
    import numpy as np

    if not (a.get("test_correct_per_seed") and b.get("test_correct_per_seed")):
        return None
    xa = np.stack([unpack_correct(t) for t in a["test_correct_per_seed"]])
    xb = np.stack([unpack_correct(t) for t in b["test_correct_per_seed"]])
    if xa.shape[1] != xb.shape[1]:
        return None
    return seed_diff(xa, xb, paired_seeds=_paired_seeds(a, b))


def compare_perplexity(a: dict, b: dict) -> SeedRatio | None:
    """Row ``a``'s perplexity over row ``b``'s on the same test tokens, with the interval of
    :func:`binlab.experiments.stats.seed_ratio` from the rows' stored per-block NLL sums; None without them."""
    import numpy as np

    if not (a.get("test_nll_per_seed") and b.get("test_nll_per_seed")) or a.get("test_units") != b.get("test_units"):
        return None
    xa = np.stack([unpack_floats(t) for t in a["test_nll_per_seed"]])
    xb = np.stack([unpack_floats(t) for t in b["test_nll_per_seed"]])
    return seed_ratio(xa, xb, unpack_floats(a["test_units"]), paired_seeds=_paired_seeds(a, b))


def separated(a: dict, b: dict) -> int:
    """+1 when ``a`` is measurably better than ``b`` (more accurate: the interval of a - b above 0; for
    language models lower perplexity: the interval of the ratio below 1), -1 when measurably worse, 0 when
    the interval holds no difference or there is none. Rows with one seed are never separated: one
    trained model per recipe does not rank recipes."""
    if seeds_of(a) < 2 or seeds_of(b) < 2:
        return 0
    q = compare_perplexity(a, b)
    if q is not None:
        return 0 if q.within_noise else (1 if q.high < 1 else -1)
    d = compare(a, b)
    if d is None or d.within_noise:
        return 0
    return 1 if d.low > 0 else -1


CHANCE = 25.0  # AG_NEWS has 4 balanced classes


def t6_finding(rows: list[dict], preset: str | None = None) -> str:
    """Does PB-LLM's finding -- the classic BNN methods fall to (or below) random -- hold here, under PTQ
    and under QAT? A method "fails" when its accuracy is within 5 points of chance (25 %)."""
    fp = next((r["accuracy"] for r in rows if r["mode"] == "fp"), None)
    classic = ("sign", "xnor", "bireal", "recu", "fda")
    out = []
    for mode in ("ptq", "qat"):
        rs = [r for r in rows if r["mode"] == mode and r["label"].split(" ")[0] in classic and "W1A1" not in r["label"]]
        if not rs or fp is None:
            continue
        fail = [r["label"].split(" ")[0] for r in rs if r["accuracy"] < CHANCE + 5]
        verdict = ("holds" if len(fail) == len(rs) else "does not hold" if not fail else f"holds only for {', '.join(fail)}")
        drops = ", ".join(f"{r['label'].split(' ')[0]} {r['accuracy']:.2f} % ({diff_text(r, fp)})" for r in rs)
        big = [r["label"].split(" ")[0] for r in rs if r["accuracy"] < fp - 5]
        bases = sorted({round(r["accuracy"] - r["diff"], 2) for r in rs if r.get("diff") is not None} | {round(fp, 2)})
        against = (f"fp32 {fp:.2f} %" if len(bases) == 1 else  # a merged table: rows compare with their own run's baseline
                   "fp32 of each row's own run (" + ", ".join(f"{b:.2f} %" for b in bases) + ")")
        out.append(f"Under {mode.upper()} PB-LLM's finding {verdict} ({len(fail)} of {len(rs)} classic methods within 5 points "
                   f"of chance, {CHANCE:.0f} %): {drops} against {against}."
                   + (f" More than 5 points below fp32: {', '.join(big)}." if big else " All within 5 points of fp32."))
    if not out:
        return ""
    seeds = max(len(r.get("random_seeds") or [0]) for r in rows if r["mode"] == "qat") if any(r["mode"] == "qat" for r in rows) else 1
    noise = ("one seed, so differences under about 1 point are within the test set's noise" if seeds == 1 else
             f"QAT rows: mean of {seeds} seeds; in brackets the 95 % interval of the change against fp32 over test rows and seeds")
    return (f"**Finding** (generated from the rows above; {noise}; PB-LLM measured OPT language models zero-shot, this is a "
            "2-layer classifier): " + " ".join(out))


def _short(r: dict) -> str:
    rules = r.get("spec", {}).get("rules") or []
    return f"{rules[0]['method']['method']} {r['mode'].upper()}" if rules else r["label"]


def t8_finding(rows: list[dict], preset: str | None = None) -> str:
    """Perplexity after each method against fp32, beside the survey's LLaMA-7B numbers. With seeds and stored
    per-block log-likelihoods, each ratio carries its interval, the best QAT row is chosen on validation and
    the survey's pairs are confirmed, reversed or left unseparated by those intervals; with one seed (or no
    stored log-likelihoods) no ranking is claimed and the survey's order is only quoted. A classifier
    preset's T8 has per-row results: there each row's change against fp32 carries its test-row interval,
    but one seed still ranks nothing."""
    fp_row = next((r for r in rows if r["mode"] == "fp"), None)
    if fp_row is None:
        return ""
    out = []
    if "perplexity" in fp_row:
        fp = fp_row["perplexity"]
        quantized = [r for r in rows if r["mode"] != "fp" and "perplexity" in r]
        seeded = lambda r: seeds_of(r) >= 2 and bool(r.get("ratio_ci95"))  # noqa: E731 - a row whose ratio has seeds and an interval
        short = lambda r: r["label"].split(" (")[0]  # noqa: E731
        ptq = [r for r in rows if r["mode"] == "ptq" and "perplexity" in r]
        if ptq:
            out.append(f"Post-training, perplexity against fp32 {fp:.1f}: " + "; ".join(
                f"{short(r)} {r['perplexity']:.1f}" + (f" (x fp32 {ratio_text(r)})" if seeded(r) else "") for r in ptq) + ".")
        with_ci = [r for r in quantized if seeded(r) and not is_control(r["mode"], r["label"])]
        if with_ci:
            level = [short(r) for r in with_ci if r["no_measurable_difference"]]
            out.append(f"Of the {len(with_ci)} rows with seeds, no measurable difference from fp32: " + ("; ".join(level) if level else "none") + ".")
        qat = [r for r in with_ci if r["mode"] == "qat" and r.get("ratio_vs_control_ci95")]
        if qat:
            out.append("After QAT, perplexity against each row's matched fp32 control: " + "; ".join(
                f"{short(r)} x {ratio_text(r, 'ratio_vs_control')}" for r in qat) + ".")
        with_val = [r for r in with_ci if r["mode"] == "qat" and r.get("val_perplexity")]
        if len(with_val) >= 2:
            best = min(with_val, key=lambda r: r["val_perplexity"])
            behind = [short(r) for r in with_val if r is not best and separated(best, r) > 0]
            level = [short(r) for r in with_val if r is not best and separated(best, r) == 0]
            out.append(f"Best QAT row by validation perplexity: {short(best)} (validation {best['val_perplexity']:.1f}, test "
                       f"{best['perplexity']:.1f}); on test it is measurably better than {'; '.join(behind) if behind else 'none of the others'}"
                       + (f", and cannot be separated from {'; '.join(level)}" if level else "") + ".")
        surveyed = [r for r in rows if r.get("survey") and "ppl " in r["survey"] and "perplexity" in r]
        if surveyed:
            order = sorted(surveyed, key=lambda r: float(r["survey"].split("ppl ")[1].split()[0]))
            out.append("The survey's order on LLaMA-7B (quoted), best first: " + " > ".join(_short(r) for r in order) + ".")
            tested = [r for r in order if seeded(r)]
            if len(tested) >= 2:
                out.append(_survey_pairs(tested, _short) + (f" Rows with one seed ({len(order) - len(tested)} of the survey's) are not tested."
                                                            if len(tested) < len(order) else ""))
        one_seed = [r for r in quantized if not seeded(r)]
        if one_seed:
            out.append(("The rows with one seed carry no interval on perplexity" if with_ci else
                        "With one seed and no interval on these perplexities, the table ranks none of the methods here")
                       + "; perplexity gaps between one-seed rows can be training noise.")
        seeds = max((seeds_of(r) for r in with_ci), default=1)
        note = (f"rows with {seeds} seeds, each from its own fp32 baseline, show x fp32 and x control as perplexity ratios with their "
                "95 % intervals over test rows and seeds" + ("; the other rows have one seed" if one_seed else "")) if with_ci else "one seed"
    else:
        acc = [r for r in rows if r["mode"] in ("ptq", "qat") and not r["label"].startswith("fp32 control") and r.get("accuracy") is not None]
        if acc:
            out.append(f"Against fp32 {fp_row['accuracy']:.2f} %: " + ", ".join(
                f"{_short(r)} {r['accuracy']:.2f} % ({diff_text(r, fp_row['accuracy'])})" for r in acc) + ".")
        out.append("One seed per row: the intervals hold the test rows' noise only, so the table ranks none of the methods.")
        note = "one seed; in brackets the change against fp32 with its test-row 95 % interval"
    return f"**Finding** (generated from the rows above, {note}): " + " ".join(out)


def _survey_pairs(ordered: list[dict], name) -> str:
    """How many of the pairs in a survey's order (``ordered``, best first) our intervals confirm, reverse or
    cannot separate (:func:`separated`)."""
    pairs = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]]
    sep = [(a, b, separated(a, b)) for a, b in pairs]
    agree = [f"{name(a)} > {name(b)}" for a, b, v in sep if v > 0]
    against = [f"{name(b)} > {name(a)}" for a, b, v in sep if v < 0]
    return (f"Of the survey's {len(pairs)} ordered pairs, our intervals confirm {len(agree)}" + (f" ({', '.join(agree)})" if agree else "")
            + f", reverse {len(against)}" + (f" ({', '.join(against)})" if against else "")
            + f" and cannot separate {len(pairs) - len(agree) - len(against)}.")


def t9_finding(rows: list[dict], preset: str | None = None) -> str:
    """The BERT-era W1A1 recipes: how far from fp32, which one is best *by validation*, and which pairs
    the test rows and seeds separate, against the survey's GLUE order (quoted). With one seed per row
    no ordering is stated."""
    fp_row = next((r for r in rows if r["mode"] == "fp"), None)
    if fp_row is None:
        return ""
    fp = fp_row["accuracy"]
    w1a1 = [r for r in rows if "W1A1" in r["label"] and r["mode"] == "qat"]
    glue = [(r, float(r["survey"].split("avg ")[1].split()[0])) for r in w1a1
            if r.get("survey") and "(W1A1" in r["survey"] and "-style" not in r["label"]]
    out = []
    name = lambda r: r["label"].split(":")[0]  # noqa: E731
    if glue:
        out.append("The survey's W1A1 order (GLUE, BERT-base, quoted), best first: "
                   + " > ".join(name(r) for r, _ in sorted(glue, key=lambda t: -t[1])) + ".")
    seeds = min((seeds_of(r) for r in w1a1), default=1)
    seeded = [r for r in w1a1 if seeds_of(r) >= 2]
    if w1a1 and not seeded:
        out.append(f"W1A1 rows against fp32 {fp:.2f} %: " + ", ".join(f"{name(r)} {r['accuracy']:.2f} % ({diff_text(r, fp)})" for r in w1a1)
                   + ". One seed per row: the intervals hold the test rows' noise only, so no ordering of the recipes is claimed.")
    elif seeds < 2:  # a one-seed screen, then the rows chosen on validation re-run with seeds

        def control(r: dict) -> str:
            return f"; against its matched control {vs_control_text(r)}" if r.get("diff_vs_control") is not None else ""

        ks = sorted({seeds_of(r) for r in seeded})
        out.append(f"Rows re-run with {' or '.join(map(str, ks))} seeds (against fp32 {fp:.2f} %): " + ", ".join(
            f"{name(r)}, validation {r['val_accuracy']:.2f} % (mean over seeds), test {r['accuracy']:.2f} % "
            f"({diff_text(r, fp)}{control(r)})" if r.get("val_accuracy") is not None else
            f"{name(r)}, test {r['accuracy']:.2f} % ({diff_text(r, fp)}{control(r)})" for r in seeded) + ".")
        def between(a: dict, b: dict) -> str:
            d = compare(a, b)
            if d is None:
                return f"{name(a)} and {name(b)}: not compared (no per-row results stored)"
            v = separated(a, b)
            ci = f"{100 * d.diff:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]"
            return (f"{name(a)} measurably {'ahead of' if v > 0 else 'behind'} {name(b)} ({ci} points)" if v
                    else f"{name(a)} and {name(b)}: no measurable difference ({ci} points)")

        pairs = [between(a, b) for i, a in enumerate(seeded) for b in seeded[i + 1:]]
        if pairs:
            out.append("Between them: " + "; ".join(pairs) + ".")
        single = [r for r in w1a1 if seeds_of(r) < 2]
        other = "The other W1A1 row has" if len(single) == 1 else f"The other {len(single)} W1A1 rows have"
        out.append(f"{other} one seed (the seeds column): " + ", ".join(
            f"{name(r)} {r['accuracy']:.2f} % ({diff_text(r, fp)})" for r in single)
                   + "; one trained model per recipe ranks none of them.")
    elif w1a1:
        with_val = [r for r in w1a1 if r.get("val_accuracy") is not None]
        best = max(with_val, key=lambda r: r["val_accuracy"]) if with_val else None
        if best is not None:
            sep = {name(r): separated(best, r) for r in w1a1 if r is not best}
            ahead, behind, level = ([n for n, v in sep.items() if v == k] for k in (1, -1, 0))
            out.append(f"Best W1A1 by validation ({seeds} seeds each): {name(best)}, validation {best['val_accuracy']:.2f} %, test "
                       f"{best['accuracy']:.2f} % ({diff_text(best, fp)} against fp32 {fp:.2f} %)."
                       + (f" On test it is measurably ahead of {', '.join(ahead)}" if ahead else "")
                       + (f"{';' if ahead else ' On test it is'} measurably behind {', '.join(behind)}" if behind else "")
                       + (f"{';' if ahead or behind else ' On test'} no measurable difference from {', '.join(level)}" if level else "") + ".")
        if len(glue) >= 2:
            out.append(_survey_pairs([r for r, _ in sorted(glue, key=lambda t: -t[1])], name))
    return ("**Finding** (generated from the rows above; in brackets the change against fp32 with its 95 % interval over "
            "test rows and seeds): " + " ".join(out)) if out else ""


def t10_finding(rows: list[dict], preset: str | None = None) -> str:
    """The LSTM era's question: which part holds the bits (the size each PTQ row saves), what binarizing it
    costs (perplexity against fp32; accuracy on a classifier preset), and whether Zheng and Tang's reading
    holds here (binarizing the recurrent weights alone helps after training; adding the embeddings does
    worse). With seeds and stored per-row results each comparison carries its interval (a perplexity ratio,
    or an accuracy difference), and only a separated one is stated as a difference; with one seed nothing is
    ranked. On a transformer preset (``preset`` not an LSTM one) the same rows binarize the encoder linears,
    and the text says so."""
    part = "the recurrent weights" if preset is None or "lstm" in preset else "the encoder linears"
    lm = any("perplexity" in r for r in rows)
    key = "perplexity" if lm else "accuracy"

    def row(label_start: str, mode: str):
        return next((r for r in rows if r["label"].startswith(label_start) and r["mode"] == mode and key in r), None)

    def val(r: dict) -> str:
        return f"{r[key]:.1f}" if lm else f"{r[key]:.2f} %"

    def points(r: dict, k: str) -> str:  # an accuracy change in points with its interval
        return change_text(r[k], r[f"{k}_ci95"], " points", ", ")

    def vs_fp(r: dict) -> str:
        return f"x fp32 {ratio_text(r)}" if lm else f"against fp32 {points(r, 'diff')}"

    def vs_ctl(r: dict, its: str = "") -> str:
        return f"x {its}control {ratio_text(r, 'ratio_vs_control')}" if lm else f"against {its or 'its '}control {points(r, 'diff_vs_control')}"

    def interval(r: dict, against: str):  # (low, high) of the change, oriented so that > 0 is better
        if lm:
            ci = r.get("ratio_ci95" if against == "fp" else "ratio_vs_control_ci95")
            return (1 - ci[1], 1 - ci[0]) if ci else None
        return r.get("diff_ci95" if against == "fp" else "diff_vs_control_ci95")

    def verdict(a: dict, b: dict, better: str, worse: str, level: str) -> str:
        return {1: better, -1: worse, 0: level}[separated(a, b)]

    fp = next((r[key] for r in rows if r["mode"] == "fp" and key in r), None)
    if fp is None:
        return ""
    metric, cost = ("perplexity", "cost perplexity") if lm else ("accuracy", "cost accuracy")
    out = []
    rec, emb = row("XNOR, recurrent weights only", "ptq"), row("XNOR, embeddings only", "ptq")
    if rec and emb:
        bigger = "the embeddings" if emb["reduction_percent"] > rec["reduction_percent"] else part
        both_ci = (rec.get("ratio_ci95") and emb.get("ratio_ci95")) if lm else (rec.get("diff_ci95") and emb.get("diff_ci95"))
        out.append(f"Binarizing the embeddings saves {emb['reduction_percent']:.1f} % of the model, {part} "
                   f"{rec['reduction_percent']:.1f} %: {bigger} hold more of the bits. Post-training, XNOR on {part} gives "
                   f"{metric} {val(rec)} and on the embeddings {val(emb)} (fp32 {val({key: fp})}"
                   + ((f"; x fp32 {ratio_text(rec)} and {ratio_text(emb)}" if lm else f"; {points(rec, 'diff')} and {points(emb, 'diff')}")
                      if both_ci else "") + ").")
    w, wb = row("XNOR on LSTMs (Zheng and Tang): recurrent weights only", "qat"), row("XNOR on LSTMs (Zheng and Tang): recurrent weights and", "qat")
    ctl = next((r for r in rows if w and r["label"] == w.get("control") and key in r), None)
    lab = row("LAB: recurrent weights only", "qat")
    seeded = bool(w and seeds_of(w) >= 2 and interval(w, "fp") and interval(w, "control"))
    if w and ctl and seeded:
        (lo_fp, hi_fp), (lo_ctl, _) = interval(w, "fp"), interval(w, "control")
        reading = (f"holds here: better {metric} than fp32 and than its control" if lo_fp > 0 and lo_ctl > 0 else
                   "holds against fp32 but not against the control trained the same way, so the gain is the extra training, not "
                   "binarization" if lo_fp > 0 else
                   f"is not reproduced here: binarized, {part} {cost}" if hi_fp < 0 else
                   "is not decided: the interval against fp32 holds no change")
        out.append(f"After QAT ({seeds_of(w)} seeds each), XNOR on {part} alone: {vs_fp(w)}, {vs_ctl(w, 'its fp32 ')}; Zheng and Tang's "
                   f"reading (a regularizer) {reading}.")
        e = row("XNOR: embeddings only", "qat")
        if e and interval(e, "control"):
            out.append(f"The embeddings alone (XNOR, QAT): {vs_ctl(e)}, "
                       + verdict(e, w, f"measurably better than {part} alone", f"measurably worse than {part} alone",
                                 f"not separated from {part} alone")
                       + f", while saving {e['reduction_percent']:.1f} % of the model against {w['reduction_percent']:.1f} %.")
        if wb and interval(wb, "control"):
            out.append(f"With the embeddings binarized too: {vs_ctl(wb)}, "
                       + verdict(wb, w, f"measurably better than {part} alone.", f"measurably worse than {part} alone (their \"overfit\" "
                                 "reading predicts worse).", f"not separated from {part} alone."))
        if lab and interval(lab, "control"):
            out.append(f"LAB on {part}: {vs_ctl(lab)}, "
                       + verdict(lab, w, "measurably better than XNOR with the same training.", "measurably worse than XNOR with the "
                                 "same training.", "not separated from XNOR with the same training."))
        note = (f"{seeds_of(w)} seeds for the QAT rows, " + ("perplexity ratios" if lm else "accuracy differences in points")
                + " with 95 % intervals over test " + ("text" if lm else "rows") + " and seeds")
    else:
        if w and ctl:
            out.append(f"After QAT, XNOR on {part} alone reaches {metric} {val(w)}, its fp32 control trained the same way "
                       f"{val(ctl)}" + (f", and with the embeddings binarized too {val(wb)}" if wb else "")
                       + f". One seed and no interval on {metric}: whether binarization acts as a regularizer here (Zheng and "
                       "Tang's reading) is not decided by this table.")
        if lab and w:
            out.append(f"LAB on {part}: {val(lab)}; XNOR with the same training {val(w)}.")
        note = "one seed"
    return ("**Finding** (generated from the rows above, " + note + "; LSTM-era papers measured word-level LSTMs on Penn "
            "Treebank, this is AG_NEWS " + ("text" if lm else "classification") + "): " + " ".join(out)) if out else ""


FINDINGS = {"T6": t6_finding, "T8": t8_finding, "T9": t9_finding, "T10": t10_finding}


def finding_of(payload: dict) -> str | None:
    """The generated finding of a table's JSON payload (its rows, read for its preset), or None for a table without one."""
    fn = FINDINGS.get(payload.get("experiment"))
    return fn(payload["rows"], preset=payload.get("preset")) if fn else None
