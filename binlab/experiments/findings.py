"""Findings written from a table's rows (T6, T8, T9, T10): what the numbers say, in a sentence or two."""
from __future__ import annotations

from .stats import spearman_rho
from .texts import diff_text

CHANCE = 25.0  # AG_NEWS has 4 balanced classes


def t6_finding(rows: list[dict]) -> str:
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
             f"QAT rows: mean of {seeds} seeds; in brackets the paired bootstrap 95 % interval of the change against fp32")
    return (f"**Finding** (generated from the rows above; {noise}; PB-LLM measured OPT language models zero-shot, this is a "
            "2-layer classifier): " + " ".join(out))


def _short(r: dict) -> str:
    rules = r.get("spec", {}).get("rules") or []
    return f"{rules[0]['method']['method']} {r['mode'].upper()}" if rules else r["label"]


def t8_finding(rows: list[dict]) -> str:
    """Does the small LM order the methods as the survey does (on LLaMA-7B): Spearman's rank correlation
    and the largest rank moves; and are the calibrated 1-bit-class PTQ methods ahead of plain sign/XNOR PTQ?"""
    fp = next((r["perplexity"] for r in rows if r["mode"] == "fp" and "perplexity" in r), None)
    surveyed = [(r, float(r["survey"].split("ppl ")[1].split()[0])) for r in rows
                if r.get("survey") and "ppl " in r["survey"] and "perplexity" in r]
    out = []
    if len(surveyed) >= 3:
        ours = {id(r): i for i, (r, _) in enumerate(sorted(surveyed, key=lambda t: t[0]["perplexity"]))}
        theirs = {id(r): i for i, (r, _) in enumerate(sorted(surveyed, key=lambda t: t[1]))}
        n = len(surveyed)
        rho = spearman_rho({id(r): ours[id(r)] for r, _ in surveyed}, theirs)
        moves = sorted(surveyed, key=lambda t: -abs(ours[id(t[0])] - theirs[id(t[0])]))[:3]
        out.append(f"Ranked by perplexity, the {n} methods the survey reports correlate with the survey's ranking at Spearman "
                   f"rho = {rho:.2f} (1: the same order). Ours, best first: "
                   + ", ".join(f"{_short(r)} {r['perplexity']:.1f}" for r, _ in sorted(surveyed, key=lambda t: t[0]['perplexity']))
                   + ". Largest moves (our rank vs the survey's, 1 = best): "
                   + ", ".join(f"{_short(r)} {ours[id(r)] + 1} vs {theirs[id(r)] + 1}" for r, _ in moves) + ".")
    plain = [r for r in rows if r["mode"] == "ptq" and r["label"].startswith(("sign", "XNOR")) and "perplexity" in r]
    calibrated = [r for r in rows if r["mode"] == "ptq" and r["label"].startswith(("PB-LLM", "BiLLM")) and "perplexity" in r]
    if plain and calibrated and fp:
        best_plain = min(plain, key=lambda r: r["perplexity"])
        worst_cal = max(calibrated, key=lambda r: r["perplexity"])
        ahead = worst_cal["perplexity"] < best_plain["perplexity"]
        out.append(f"PB-LLM and BiLLM PTQ {'are all ahead of' if ahead else 'are not all ahead of'} plain 1-bit PTQ: the worst of them, "
                   f"{_short(worst_cal)} ({worst_cal['label'].split('(')[0].strip()}), {worst_cal['perplexity']:.1f} vs the best plain, "
                   f"{_short(best_plain)}, {best_plain['perplexity']:.1f} (fp32 {fp:.1f}), at {worst_cal['bits_per_quantized_weight']:.2f} vs "
                   f"{best_plain['bits_per_quantized_weight']:.2f} stored bits per weight.")
    return ("**Finding** (generated from the rows above, one seed): " + " ".join(out)) if out else ""


def t9_finding(rows: list[dict]) -> str:
    """Does our W1A1 ordering of the BERT-era methods match the survey's GLUE ordering, and how close is
    the best W1A1 row to fp32?"""
    fp = next((r["accuracy"] for r in rows if r["mode"] == "fp"), None)
    glue = [(r, float(r["survey"].split("avg ")[1].split()[0])) for r in rows
            if r.get("survey") and "(W1A1" in r["survey"] and "W1A1" in r["label"] and "-style" not in r["label"]]
    out = []
    if len(glue) >= 2:
        ours = [r["label"].split(" ")[0] for r, _ in sorted(glue, key=lambda t: -t[0]["accuracy"])]
        theirs = [r["label"].split(" ")[0] for r, _ in sorted(glue, key=lambda t: -t[1])]
        rank_o = {name: i for i, name in enumerate(ours)}
        rank_t = {name: i for i, name in enumerate(theirs)}
        rho = spearman_rho(rank_o, rank_t)
        out.append(f"W1A1 ordering of the recipes run as published (the '-style' rows excluded), best first: ours {' > '.join(ours)}; the survey's (GLUE) {' > '.join(theirs)}: "
                   + ("the same order." if ours == theirs else f"a different order (Spearman rho = {rho:.2f}).")
                   + " The accuracies: " + ", ".join(f"{r['label'].split(' ')[0]} {r['accuracy']:.2f} %" for r, _ in
                                                       sorted(glue, key=lambda t: -t[0]['accuracy'])) + ".")
    w1a1 = [r for r in rows if "W1A1" in r["label"] and r["mode"] == "qat"]
    if w1a1 and fp is not None:
        best = max(w1a1, key=lambda r: r["accuracy"])
        out.append(f"Best W1A1: {best['label'].split(':')[0]}, {best['accuracy']:.2f} % ({best['accuracy'] - fp:+.2f} against fp32 "
                   f"{fp:.2f} %) at {best['reduction_percent']:.2f} % reduction.")
    return ("**Finding** (generated from the rows above, one seed: differences under about 1 point are within the test "
            "set's noise): " + " ".join(out)) if out else ""


def t10_finding(rows: list[dict]) -> str:
    """The LSTM era's question: which part holds the bits (the size each PTQ row saves), what binarizing it
    costs (perplexity against fp32), and whether Zheng and Tang's reading holds here (binarizing the
    recurrent weights alone lowers perplexity after training; adding the embeddings does worse)."""
    def ppl(label_start: str, mode: str):
        return next((r for r in rows if r["label"].startswith(label_start) and r["mode"] == mode and "perplexity" in r), None)

    fp = next((r["perplexity"] for r in rows if r["mode"] == "fp" and "perplexity" in r), None)
    if fp is None:
        return ""
    out = []
    rec, emb = ppl("XNOR, recurrent weights only", "ptq"), ppl("XNOR, embeddings only", "ptq")
    if rec and emb:
        bigger = "the embeddings" if emb["reduction_percent"] > rec["reduction_percent"] else "the recurrent weights"
        out.append(f"Binarizing the embeddings saves {emb['reduction_percent']:.1f} % of the model, the recurrent weights "
                   f"{rec['reduction_percent']:.1f} %: {bigger} hold more of the bits. Post-training, XNOR on the recurrent weights gives "
                   f"perplexity {rec['perplexity']:.1f} and on the embeddings {emb['perplexity']:.1f} (fp32 {fp:.1f}).")
    w, wb = ppl("XNOR on LSTMs (Zheng and Tang): recurrent weights only", "qat"), ppl("XNOR on LSTMs (Zheng and Tang): recurrent weights and", "qat")
    ctl = next((r for r in rows if r["mode"] == "qat" and r["label"].startswith("fp32 control") and "perplexity" in r), None)
    if w and ctl:
        reg = w["perplexity"] < ctl["perplexity"]
        out.append(f"After QAT, weights-only XNOR reaches {w['perplexity']:.1f} against {ctl['perplexity']:.1f} for the fp32 control "
                   f"trained the same way: Zheng and Tang's 'binarization as a regularizer' {'holds' if reg else 'does not hold'} here"
                   + (f"; with the embeddings binarized too, {wb['perplexity']:.1f}." if wb else "."))
    lab = ppl("LAB: recurrent weights only", "qat")
    if lab and w:
        out.append(f"LAB on the recurrent weights: {lab['perplexity']:.1f}, against XNOR's {w['perplexity']:.1f} with the same training.")
    return ("**Finding** (generated from the rows above, one seed: LSTM-era papers measured word-level LSTMs on Penn "
            "Treebank, this is AG_NEWS text): " + " ".join(out)) if out else ""


FINDINGS = {"T6": t6_finding, "T8": t8_finding, "T9": t9_finding, "T10": t10_finding}
