"""How each row was trained, as the tables print it: the baseline's and the QAT budget's labels.

The QAT budget itself belongs to the preset (:attr:`binlab.presets.Preset.qat`).
"""
from __future__ import annotations

from binlab.presets import get_preset
from binlab.training.qat import QATConfig


def baseline_budget(preset: str) -> str:
    """How the preset's fp32 baseline was trained, for the fp rows' budget cell."""
    p = get_preset(preset)
    how = "fine-tuned from all-MiniLM-L6-v2" if p.pretrained else "from scratch"
    return f"{p.train.epochs:g} ep {how}"


def fill_budgets(payload: dict) -> dict:
    for r in payload["rows"]:
        if r["mode"] == "fp":
            r["budget"] = baseline_budget(payload["preset"])
    return payload


def budget_label(mode: str, budget: QATConfig, recipe=None) -> str:
    if recipe is not None:
        from binlab.training.recipes import stage_budget

        steps = " -> ".join(f"{stage_budget(budget, st).train.epochs:.3g} ep" for st in recipe.stages)
        t = budget.train
        return (f"{recipe.ensemble} members x " if recipe.ensemble > 1 else "") + f"{len(recipe.stages)} stage(s): {steps}" + \
            f" (QAT, KD {', '.join(sorted({f'{stage_budget(budget, st).train.distill:g}' for st in recipe.stages}))}" + \
            (f", lr {t.lr:g})")
    if mode != "qat":
        return "-" if mode == "fp" else "none (PTQ)"
    t = budget.train
    return (("from scratch " if budget.from_scratch else "QAT ") + f"{t.epochs:g} ep" + (f" + KD {t.distill:g}" if t.distill else ", no KD")
            + (f" + hidden {budget.hidden_distill:g}" if budget.hidden_distill else "")
            + (f" (DAD gamma {budget.dad_gamma:g})" if budget.dad_gamma else ""))


#: the seed's training budget, for every row that has a seed number
SEED_BUDGET = "10 ep from scratch, no KD"
