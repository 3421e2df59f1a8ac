"""One row of a table: its store key (baseline, spec, budget, seed and a fingerprint of the code that
computes it) and its computation (train or quantize a copy of the baseline, then measure it).

The key includes :func:`code_fingerprint` (the training/quantization core and the source of each method
the row uses), so a fixed method never returns a stale cached number.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import time
from pathlib import Path

import numpy as np

from binlab.data import fingerprint
from binlab.methods import BINARIZERS, activations
from binlab.methods import attention as attention_mod
from binlab.methods import base as methods_base
from binlab.methods import ste as ste_mod
from binlab.nn import model as model_mod
from binlab.nn import objective as objective_mod
from binlab.nn import quantize as quantize_mod
from binlab.nn.quantize import QuantSpec
from binlab.runtime import size as size_mod
from binlab.runtime.size import model_size
from binlab.training import qat as qat_mod
from binlab.training import recipes as recipes_mod
from binlab.training import train as train_mod
from binlab.training.qat import QATConfig, ptq, qat
from binlab.training.train import evaluate, key_dict

from .budgets import budget_label
from .catalog import Config

CALIB_ROWS = 128  # calibration rows (train only) for the methods that need data, as in GPTQ and its successors


_CORE = (ste_mod, activations, attention_mod, quantize_mod, qat_mod, train_mod, model_mod, objective_mod, size_mod, recipes_mod)


_METHODS_DIR = Path(methods_base.__file__).parent


def _code_only(src: str) -> str:
    """Source text reduced to what it computes: the AST with docstrings removed (comments and formatting
    never reach the AST), so a documentation change does not invalidate cached results."""
    import ast
    import textwrap

    tree = ast.parse(textwrap.dedent(src))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


@functools.lru_cache(maxsize=1)
def _shared_code_hash() -> str:
    """The part every row shares (core, compute_row, all method modules), read once per process: the
    code a process runs is the code it imported."""
    h = hashlib.sha256()
    for mod in _CORE:
        h.update(_code_only(inspect.getsource(mod)).encode())
    h.update(_code_only(inspect.getsource(compute_row)).encode())
    for path in sorted(_METHODS_DIR.glob("*.py")):  # methods call each other (PB-LLM uses the k-bit quantizer)
        h.update(_code_only(path.read_text()).encode())
    return h.hexdigest()


def code_fingerprint(spec: QuantSpec) -> str:
    """A hash of the code a row depends on (docstrings and comments excluded): the training/quantization
    core, how a row is run, every method module, and every method class the spec uses (with its binlab
    base classes)."""
    h = hashlib.sha256(_shared_code_hash().encode())
    classes = set()
    for r in spec.rules:
        for k in BINARIZERS[r.method.method].__mro__:
            if k.__module__.startswith("binlab."):
                classes.add(k)
    for k in sorted(classes, key=lambda k: (k.__module__, k.__qualname__)):
        h.update(_code_only(inspect.getsource(k)).encode())
    return h.hexdigest()[:16]


def _mean_entropy(model, split, rows: int = 256) -> float | None:
    """Mean attention entropy (nats) over heads, layers and the first ``rows`` rows of ``split``,
    as the model computes its attention (BiBERT's argument: binarized attention should keep it high)."""
    from binlab.training.health import attention_entropy

    if not hasattr(model, "layers") or objective_mod.task_of(model) != "classify":
        return None
    ids = next(iter(split.head(rows).batches(rows)))[0]
    ent = attention_entropy(model, ids)
    return sum(ent.values()) / len(ent)


def row_key(c: Config, budget: QATConfig, key_base: str, code: str, test: bool = True) -> str:
    """The results-store key of one row: the baseline it starts from (``key_base``: the baseline's
    checkpoint stem, which holds its seed and data), the spec, mode, budget (with the QAT seed), the code
    that computes it, the calibration rows, the recipe, and whether the test split is evaluated."""
    from binlab.training.recipes import RECIPES

    recipe = RECIPES[c.recipe] if c.recipe else None
    return fingerprint([key_base, c.spec.to_json(), c.mode, key_dict(budget), code, CALIB_ROWS] + ([recipe.key()] if recipe else [])
                        + ([] if test else ["validation only"]))


def compute_row(c: Config, teacher, splits, budget: QATConfig, code: str | None = None, callback=None, calib=None,
                test: bool = True) -> dict:
    """Train (QAT with ``budget``, whose ``train.seed`` seeds data order and new parameters) or quantize
    (PTQ) a copy of ``teacher`` as ``c`` says and measure it: validation accuracy always, the test split
    only when ``test`` (a final configuration; selection runs look at validation alone). The row holds
    the per-row test correctness (``test_correct``, :func:`binlab.experiments.stats.pack_correct`), or for a language
    model the test rows' NLL sums and token counts in blocks of consecutive rows, in the split's order (``test_nll``, ``test_units``,
    :func:`binlab.experiments.stats.block_sums`), for paired intervals."""
    from binlab.training.recipes import RECIPES

    from .stats import pack_correct

    code = code or code_fingerprint(c.spec)
    recipe = RECIPES[c.recipe] if c.recipe else None
    t0 = time.perf_counter()
    if c.mode == "fp":
        model = teacher
    elif c.mode == "ptq":
        model = ptq(teacher, c.spec, calib=calib)
    elif recipe is not None:
        from binlab.training.recipes import run as run_recipe

        model = run_recipe(recipe, teacher, splits.train, budget, callback=callback, calib=calib, seed=budget.train.seed)
    else:
        model, _ = qat(teacher, c.spec, splits.train, budget, callback=callback, calib=calib)
    seconds = time.perf_counter() - t0
    model.cpu()
    s = model_size(model).summary()
    row = {"label": c.label, "mode": c.mode, "spec": json.loads(c.spec.to_json()), "random_seed": budget.train.seed,
           "megabytes": s["megabytes"], "reduction_percent": size_mod.reduction_against(model, teacher),
           "bits_per_quantized_weight": s["bits_per_quantized_weight"], "train_seconds": seconds, "code": code,
           "budget": budget_label(c.mode, budget, recipe)}
    if recipe is not None:
        row["recipe"] = c.recipe
    if splits.val is not None and len(splits.val):
        v = evaluate(model, splits.val)
        row |= {"val_perplexity": v.perplexity} if v.perplexity is not None else {"val_accuracy": 100 * v.accuracy}
    if test:  # one pass over the test split
        from binlab.training.train import classification_metrics, predict

        if objective_mod.task_of(model) == "lm":
            from .stats import block_sums, pack_floats

            nll, units, hits = train_mod.stats_on(model, splits.test)  # in batch (length-sorted) order
            order = np.argsort(splits.test.lengths, kind="stable")  # the order of EncodedSplit.padded
            nll, units = nll[np.argsort(order)], units[np.argsort(order)]  # back to the split's own order
            row |= {"accuracy": 100 * float(hits.sum() / units.sum()), "perplexity": objective_mod.perplexity(float(nll.sum() / units.sum())),
                    "test_tokens": int(units.sum()), "test_nll": pack_floats(block_sums(nll)), "test_units": pack_floats(block_sums(units))}
        else:
            logits, labels = predict(model, splits.test)
            r = classification_metrics(logits, labels)
            row |= {"accuracy": 100 * r.accuracy, "per_class": r.per_class, "test_correct": pack_correct(logits.argmax(1) == labels),
                    "attention_entropy": _mean_entropy(model, splits.test)}
    paper_bits = [m.quantizer.paper_bits() for m in quantize_mod.quantized_modules(model) if hasattr(m.quantizer, "paper_bits")]
    if paper_bits and all(b is not None for b in paper_bits):
        row["paper_bits"] = sum(paper_bits) / len(paper_bits)  # as the paper counts (e.g. BiLLM's 1 + salient fraction)
    return row
