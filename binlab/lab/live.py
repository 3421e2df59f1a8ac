"""The computations behind the Streamlit lab, with no widgets: the app is a thin layer over these.

- :class:`LiveLab` keeps one working copy of a trained model and re-binarizes it (PTQ) on every
  change, measuring validation accuracy (a language model: perplexity) on pre-batched rows, exact
  size, and weight statistics. Methods that need data are calibrated on training rows, each
  component's Hessian computed once from the full-precision model and cached.
- :func:`component_view` gives what the histogram of one weight matrix draws.
- :func:`sensitivity` binarizes each component alone (and the QK/QV/KV pairs) and measures.
"""
from __future__ import annotations

import copy
import fnmatch
import itertools
import json
import os
import threading
import time
import weakref
from collections import OrderedDict
from typing import Callable

import numpy as np
import torch

from binlab.data import PAD_ID, EncodedSplit
from binlab.experiments.stats import ratio_interval, wilson_interval
from binlab.nn.metric import Metric, headline, task_info
from binlab.nn.objective import perplexity, task_of
from binlab.nn.quantize import GROUPS, MethodConfig, QuantSpec, Rule, current_plan, quantizable, quantize_
from binlab.runtime.size import model_size
from binlab.training.train import EVAL_BATCH, stats_on

from .gate import GATE
from .scores import accuracy_keys, accuracy_metric, lm_metrics, next_token_metric, perplexity_metric

#: a first look's place in the evaluation gate: ahead of full evaluations (binlab.lab.gate)
GLANCE_PRIORITY = 1
#: longest wait for another clone measuring the same configuration before measuring it here instead
SAME_WAIT_S = 120.0
#: MiB of layer inputs all labs of a server keep together (``BINLAB_LAYER_CACHE_MB``): each learner's lab keeps the
#: input of every layer from its last evaluation, so its next change recomputes only from the layer it touches
#: (83 MiB a learner on ``scratch``, 1,000 rows). Past this, the labs that evaluated longest ago drop theirs and their
#: next change recomputes from the embeddings (the same numbers, a little later): a class's memory stays bounded.
LAYER_CACHE_MB = 1024

PARTS = (("Q", "attn.q"), ("K", "attn.k"), ("V", "attn.v"), ("O", "attn.o"), ("FFN up", "ffn.up"), ("FFN down", "ffn.down"),
         ("W_ih", "rnn.ih"), ("W_hh", "rnn.hh"))  # the transformer's parts, then the LSTM's (binlab.nn.lstm)


def layout(model) -> dict:
    """Component names arranged like the model: embeddings, one row per layer (the parts it has), head."""
    names = set(quantizable(model))
    n_layers = len({n.split(".")[1] for n in names if n.startswith("layers.")})
    return {
        "embeddings": [n for n in ("embed.token", "embed.pos") if n in names],
        "layers": [[(label, f"layers.{i}.{part}") for label, part in PARTS if f"layers.{i}.{part}" in names] for i in range(n_layers)],
        "head": "head",
    }


def ui_spec(components: list[str], method: MethodConfig, attn_probs: str | None = None) -> QuantSpec:
    """The spec the lab's component picker describes: one method on the chosen components."""
    return QuantSpec(tuple(Rule(c, method) for c in components), attn_probs=attn_probs)


def spec_components(spec: QuantSpec) -> tuple[list[str], MethodConfig | None]:
    """Inverse of :func:`ui_spec` for specs whose rules name single components."""
    comps = [r.target for r in spec.rules]
    return comps, (spec.rules[0].method if spec.rules else None)


def widget_representable(spec: QuantSpec, names: list[str]) -> bool:
    """Whether the Binarize page's widgets (one method on a set of single components, its input
    binarizer on the linears only) can show ``spec``; other specs (per-rule methods, groups and
    patterns) are applied as they are. The attention quantizers have widgets of their own."""
    if spec.attn_residual or any(r.target not in names for r in spec.rules):
        return False
    if len({(r.method.method, json.dumps(r.method.options, sort_keys=True), r.method.ste) for r in spec.rules}) > 1:
        return False
    if any(r.method.act is not None for r in spec.rules if r.target.startswith("embed.")):
        return False
    return len({r.method.act for r in spec.rules if not r.target.startswith("embed.")}) <= 1


def row_correctness(model, batches) -> tuple[np.ndarray, float]:
    """Per-row correctness (in batch order) and the mean cross-entropy (classifiers)."""
    nll, _, hits = stats_on(model, batches)
    return hits.astype(bool), float(nll.mean())


def first_changed_layer(changed: set[str], n_layers: int) -> int:
    """The first layer whose output a change of these components alters: -1 for the embeddings,
    ``i`` for a part of layer i, ``n_layers`` for the head alone, ``n_layers + 1`` for no change."""
    idx = [n_layers + 1]
    for n in changed:
        if n.startswith("embed."):
            idx.append(-1)
        elif n.startswith("layers."):
            idx.append(int(n.split(".")[1]))
        else:
            idx.append(n_layers)
    return min(idx)


def stratified_rows(labels: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` indices of ``labels`` taken round-robin over the classes in order of appearance
    (a fixed, balanced slice; all rows when ``n`` is at least their number)."""
    if n >= len(labels):
        return np.arange(len(labels))
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    out, i = [], 0
    while len(out) < n:
        for idx in by_class:
            if i < len(idx) and len(out) < n:
                out.append(int(idx[i]))
        i += 1
    return np.sort(np.asarray(out))


#: rows per batch of the live lab's evaluations. Rows are sorted by length and a batch is padded to its longest
#: row, so the batch holding the longest rows (AG_NEWS has rows of 128 tokens) pads the most; 32 rows instead of 64
#: cut minilm-l2's first look (120 rows) from 10,560 padded tokens to 8,128 (docs/results/bench-live-loop-minilm-l2-batch.md
#: times both, change by change), and a running full evaluation steps aside for a waiting first look after a smaller batch
LIVE_BATCH = 32


def layer_cache_bytes() -> int:
    """Bytes of layer inputs all labs of this process keep together: ``BINLAB_LAYER_CACHE_MB`` (MiB), else
    :data:`LAYER_CACHE_MB`."""
    raw = os.environ.get("BINLAB_LAYER_CACHE_MB", "").strip()
    try:
        mb = float(raw) if raw else LAYER_CACHE_MB
    except ValueError:
        raise ValueError(f"BINLAB_LAYER_CACHE_MB must be a number of MiB, got {raw!r}") from None
    if mb < 0:
        raise ValueError(f"BINLAB_LAYER_CACHE_MB must be 0 or more, got {raw!r}")
    return int(mb * 2**20)


class LiveLab:
    """One working copy of a baseline that follows the spec it is given (PTQ), fast enough for a slider.

    ``calib`` (training rows, :func:`binlab.training.calibration.calibration_set`) lets methods that need data
    (GPTQ, PB-LLM, BiLLM ...) run; their Hessians come from the full-precision model and are cached
    per component, so a change of options never recomputes them.

    Many learners on one server: build one lab per baseline and give each session :meth:`clone`
    (a copy of the model; the evaluated rows, the baseline's numbers and the Hessians are shared, not
    recomputed), and clones answer a spec any of them has measured from a shared table of results."""

    #: (lab family, spec JSON) -> the numbers apply() returned: identical for every clone of one lab
    _shared_results: dict = {}
    #: (lab family, spec JSON) -> a first look's numbers (glance()): identical for every clone of one lab
    _shared_glances: dict = {}
    #: (lab family, spec JSON, component, method key) -> :meth:`view`'s histograms: identical for every clone of one lab
    _shared_views: dict = {}
    #: (table id, lab family, spec JSON) -> an Event set when the clone measuring it is done (see _once)
    _inflight: dict = {}
    _inflight_lock = threading.Lock()
    #: False: every clone measures a configuration itself, even while another is measuring it (bench/class_load.py's comparison)
    share_in_flight = True
    #: family numbers: never reused (an ``id()`` can be, once a lab is freed, and would hand a new lab old results)
    _families = itertools.count()
    #: the labs keeping layer inputs, least recently stored first: id(lab) -> (weak reference, the inputs' id, bytes)
    _kept: "OrderedDict[int, tuple]" = OrderedDict()
    _kept_lock = threading.Lock()

    def __init__(self, baseline: torch.nn.Module, val: EncodedSplit, val_rows: int = 1000, batch_size: int = LIVE_BATCH, device: str = "auto",
                 calib: EncodedSplit | None = None, glance_rows: int | None = None):
        from binlab.training.train import pick_device

        self.device = pick_device(device)  # a GPU when there is one
        self.model = copy.deepcopy(baseline).to(self.device).eval()
        self.task = task_of(self.model)
        self.info = task_info(self.model)  # what the headline metric is and what the model can do
        self.val = val.head(val_rows)
        # the first look's rows: a fixed slice of the same rows, stratified by class (a language model: the first rows)
        glance_rows = self.info.glance_rows if glance_rows is None else glance_rows  # the task's (binlab.nn.metric.TASKS)
        idx = np.arange(min(glance_rows, len(self.val))) if self.task == "lm" else stratified_rows(self.val.labels, glance_rows)
        self.glance_val = self.val.subset(idx)
        self.glance_batches = list(self.glance_val.batches(batch_size, device=self.device))
        # padded once, reused on every change: the first look's rows, then the others, so that the full numbers of a
        # change reuse its first look's rows and compute only the rest (every per-row array below is in this order)
        rest = self.val.subset(np.setdiff1d(np.arange(len(self.val)), idx))
        self.batches = self.glance_batches + list(rest.batches(batch_size, device=self.device))
        self._groups = (range(len(self.glance_batches)), range(len(self.glance_batches), len(self.batches)))  # first look, rest
        self.calib = calib
        self.hessians: dict[tuple[str, str], torch.Tensor] = {}  # (component, "layer" | "output") -> H
        self.spec = QuantSpec()
        self._inputs: list | None = None  # per batch: the input of every layer (None: not computed), see _plans
        self._plans: list = [None, None]  # per group of batches: the configuration its kept inputs were computed in
        self._first_look = None  # (spec JSON, configuration, per-row stats) of this lab's last first look
        self.baseline_nll, self.units, hits = self._stats(self._groups[0].start, len(self.batches))
        self.baseline_correct = hits.astype(bool) if self.task == "classify" else hits
        self.baseline_accuracy = float(hits.sum() / self.units.sum())
        self.fp_size = model_size(self.model).summary()
        self.family = next(LiveLab._families)  # clones share it (and so their measured results)
        n = len(self.glance_val)  # (NLL, units, hits) of fp32 on the first look's rows: the first of every row
        self.glance_base = (self.baseline_nll[:n], self.units[:n], hits[:n])

    @classmethod
    def for_page(cls, baseline: torch.nn.Module, splits, preset=None) -> "LiveLab":
        """The lab the Binarize page builds (its benches build the same): the task's ``live_rows`` of the
        validation split, the preset's first look (``Preset.glance_rows``, else the task's) and 128
        calibration rows from the training split for the methods that need data. ``preset``: a
        :class:`binlab.presets.Preset` or its name (None: the task's first look)."""
        from binlab.presets import get_preset
        from binlab.training.calibration import calibration_set

        p = get_preset(preset) if isinstance(preset, str) else preset
        return cls(baseline, splits.val, val_rows=task_info(baseline).live_rows, calib=calibration_set(splits),
                   glance_rows=None if p is None else p.glance_rows)

    def clone(self) -> "LiveLab":
        """A lab for another learner: its own copy of the model (at the fp32 baseline), everything else shared."""
        from binlab.nn.quantize import restore_

        new = copy.copy(self)
        new.model = restore_(copy.deepcopy(self.model))
        new.spec = QuantSpec()
        new._inputs, new._plans, new._first_look = None, [None, None], None  # its next evaluation computes every layer
        return new

    def _configuration(self) -> tuple:
        """What the kept layer inputs depend on: the binarization plan and the attention settings."""
        return current_plan(self.model), (self.spec.attn_probs, self.spec.attn_qkv, self.spec.attn_residual)

    def _start(self, group: int, now: tuple, inputs) -> int:
        """The layer a group of batches recomputes from in configuration ``now``: the first layer that changed since
        its inputs were kept (-1: the embeddings; ``n_layers``: the head alone)."""
        then = self._plans[group]
        if inputs is None or then is None or then[1] != now[1]:
            return -1
        changed = {n for n in set(then[0]) | set(now[0]) if then[0].get(n) != now[0].get(n)}
        return min(first_changed_layer(changed, len(self.model.layers)), len(self.model.layers))

    @torch.inference_mode()
    def _stats(self, first: int, stop: int, priority: int = 0, superseded=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-row (NLL, units, hits) on the lab's batches ``first`` to ``stop`` (whole groups: the first look's, the
        rest's, or both), each group recomputed only from the first layer that changed since its layer inputs were
        kept, so the result equals a full evaluation of the same batches (tested). ``priority`` in the evaluation gate
        (a first look: :data:`GLANCE_PRIORITY`); a full evaluation steps aside between batches for waiting first looks.
        ``superseded``: see :meth:`apply` (checked while waiting for the gate and, in a full evaluation, between batches)."""
        with GATE(priority, superseded) as turn:  # one evaluation per free core set at a time (binlab.lab.gate)
            return self._stats_locked(first, stop, turn.checkpoint if priority == 0 else (lambda: None))

    def _stats_locked(self, first: int, stop: int, checkpoint=lambda: None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from binlab.nn import objective

        m = self.model
        m.eval()
        now = self._configuration()
        inputs = self._inputs  # read once: another lab may drop them (_keep_inputs) while this evaluation runs
        groups = [g for g, r in enumerate(self._groups) if len(r) and first <= r.start < stop]
        starts = {g: self._start(g, now, inputs) for g in groups}
        out = [[], [], []]
        new_inputs = list(inputs) if inputs is not None else [None] * len(self.batches)
        for g in groups:
            start = starts[g]
            for b in self._groups[g]:
                x, y = self.batches[b]
                if b > first:
                    checkpoint()  # a waiting first look (another learner's) goes ahead of the rest of this evaluation
                k = max(start, 0)
                xs = list(inputs[b][: k + 1]) if start >= 0 else [m.embed(x)]
                key_mask = x != PAD_ID
                for layer in m.layers[k:]:
                    xs.append(layer(xs[-1], key_mask))
                new_inputs[b] = xs
                for acc, v in zip(out, objective.stats_from_states(m, xs[-1], x, y)):
                    acc.append(v.double().cpu())
            self.last_start = start  # the layer this group started from (-1: the embeddings)
        plans = [now if g in groups else (self._plans[g] if inputs is not None else None) for g in range(len(self._groups))]
        self._plans = plans
        self._keep_inputs(new_inputs)
        return tuple(torch.cat(v).numpy() if v else np.zeros(0) for v in out)

    def _keep_inputs(self, inputs: list[list[torch.Tensor]]) -> None:
        """Keep ``inputs`` (every layer's input, per batch) for the next change, within :func:`layer_cache_bytes`
        for all labs together: the labs that stored theirs longest ago drop them first (never this one)."""
        nbytes = sum(t.numel() * t.element_size() for xs in inputs if xs is not None for t in xs)
        budget = layer_cache_bytes()
        with LiveLab._kept_lock:
            self._inputs = inputs
            kept = LiveLab._kept
            kept.pop(id(self), None)
            for key, (ref, which, _) in list(kept.items()):  # labs freed, or whose inputs were dropped since
                lab = ref()
                if lab is None or id(lab._inputs) != which:
                    del kept[key]
            kept[id(self)] = (weakref.ref(self), id(inputs), nbytes)
            total = sum(n for _, _, n in kept.values())
            while total > budget and len(kept) > 1:
                key, (ref, which, n) = next(iter(kept.items()))
                del kept[key]
                lab = ref()
                if lab is not None and id(lab._inputs) == which:
                    lab._inputs = None  # its next change starts from the embeddings
                total -= n

    def hessian(self, name: str, kind: str = "layer") -> torch.Tensor:
        """The full-precision Hessian of a component on the calibration rows (cached): ``"layer"``
        (GPTQ's ``2 X X^T / N``) or ``"output"`` (OAC's output-adaptive one)."""
        from binlab.nn.quantize import quantized_modules
        from binlab.training.calibration import bypassed, collect_hessians, collect_output_hessians

        if self.calib is None:
            raise ValueError("this lab has no calibration data (pass calib=...)")
        if (name, kind) not in self.hessians:
            collect = collect_output_hessians if kind == "output" else collect_hessians
            with bypassed(quantized_modules(self.model)):
                self.hessians[(name, kind)] = collect(self.model, self.calib, [name])[name]
        return self.hessians[(name, kind)]

    def _metrics(self, nll, units, hits, out: dict, base: tuple | None = None) -> dict:
        """``metric``: the task's headline :class:`~binlab.nn.metric.Metric` against fp32 on the same rows;
        ``more``: the others a page shows beside it (a classifier's loss, a language model's next-token accuracy);
        and the same numbers as plain keys (``accuracy``, ``diff_low`` ...; a language model adds :func:`lm_metrics`'s).
        ``base``: fp32's (NLL, hits) on those rows (default: the lab's rows)."""
        base_nll, base_hits = base if base is not None else (self.baseline_nll, self.baseline_correct)
        if self.info.name == "lm":
            lm = lm_metrics(nll, units, base_nll)
            acc = next_token_metric(hits, base_hits, units)
            return accuracy_keys(acc) | lm | {"metric": perplexity_metric(nll, units, base_nll, m=lm), "more": [acc]}
        acc = accuracy_metric(hits.astype(bool), base_hits.astype(bool))
        loss = Metric("validation loss", out["loss"], higher_is_better=False, rows=len(nll), reference=out["baseline_loss"],
                      change=out["loss"] - out["baseline_loss"])
        return accuracy_keys(acc) | {"metric": acc, "more": [loss]}

    def _switch(self, spec: QuantSpec) -> None:
        """Binarize to ``spec`` (only changed components are redone; methods that need data calibrated)."""
        from binlab.training.calibration import calibrate_, needs_calibration

        quantize_(self.model, spec)
        self.spec = spec
        todo = needs_calibration(self.model)
        if todo:
            if self.calib is None:
                raise ValueError(f"{todo[0]}'s method needs calibration data, and this lab has none (pass calib=...)")
            calibrate_(self.model, self.calib, sequential=False, cache=self.hessians)

    @staticmethod
    def _once(table: dict, key: tuple, compute: Callable[[], dict]) -> tuple[dict, bool]:
        """``table[key]``, computed by one clone only: when learners ask for the same configuration at
        once (a class told to try the same threshold), the first one measures it and the others wait
        for its numbers instead of queueing the same evaluation again. Returns (numbers, whether another
        clone measured them). A clone whose wait ends without numbers (the first one failed, or took
        longer than ``SAME_WAIT_S``) measures it itself."""
        flight = (id(table),) + key

        def store(out: dict) -> tuple[dict, bool]:
            if len(table) > 2000:
                table.clear()
            table[key] = out
            return out, False
        for _ in range(2):
            done = table.get(key)
            if done is not None:
                return done, True
            if not LiveLab.share_in_flight:
                break
            with LiveLab._inflight_lock:
                event = LiveLab._inflight.get(flight)
                mine = event is None
                if mine:
                    event = LiveLab._inflight[flight] = threading.Event()
            if mine:
                try:
                    return store(compute())
                finally:
                    with LiveLab._inflight_lock:
                        LiveLab._inflight.pop(flight, None)
                    event.set()
            event.wait(SAME_WAIT_S)
        done = table.get(key)
        return (done, True) if done is not None else store(compute())

    def view(self, name: str, method: MethodConfig | None) -> dict:
        """:func:`component_view` of component ``name`` under ``method`` in this lab's current configuration,
        histograms only (no sampled points), computed once for all clones of the lab: learners trying the
        same configuration share it (at most 256 kept)."""
        key = (self.family, self.spec.to_json(), name, None if method is None else method.key())
        out = LiveLab._shared_views.get(key)
        if out is None:
            out = component_view(self.model, name, method, max_points=0, hessian=self.hessian)
            if len(LiveLab._shared_views) >= 256:
                LiveLab._shared_views.clear()
            LiveLab._shared_views[key] = out
        return out

    def measured(self, spec: QuantSpec) -> dict | None:
        """The numbers :meth:`apply` already returned for ``spec`` on this lab's rows (any clone's), or None."""
        return LiveLab._shared_results.get((self.family, spec.to_json()))

    def glance(self, spec: QuantSpec, superseded=None) -> dict:
        """A first look at ``spec``: binarized as :meth:`apply` does, measured on a fixed slice of the
        lab's rows (``glance_rows``, default the task's ``glance_rows``: 200 stratified by class on a classifier, the
        first 60 on a language model) with the same keys as :meth:`apply`
        (``rows`` says how many) plus ``first_look: True``; the size is exact already. A following
        :meth:`apply` of the same spec gives the full numbers, equal to an evaluation without the first look, and
        computes only the rows the first look did not (the lab's batches hold the first look's rows first).
        ``superseded``: as in :meth:`apply` (checked while the first look waits for its turn)."""
        t0 = time.perf_counter()
        self._switch(spec)

        def measure() -> dict:
            g = self._groups[0]
            nll, units, hits = self._stats(g.start, g.stop, priority=GLANCE_PRIORITY, superseded=superseded)
            self._first_look = (spec.to_json(), self._configuration(), (nll, units, hits))  # apply() reuses these rows
            base_nll, base_units, base_hits = self.glance_base
            size = model_size(self.model).summary()
            out = {"loss": float(nll.sum() / units.sum()), "baseline_loss": float(base_nll.sum() / base_units.sum()), **size,
                   "fp32_bytes": self.fp_size["total_bytes"], "rows": len(nll), "baseline_accuracy": 100 * float(base_hits.sum() / base_units.sum())}
            return out | self._metrics(nll, units, hits, out, base=(base_nll, base_hits))
        out, _ = self._once(LiveLab._shared_glances, (self.family, spec.to_json()), measure)
        return out | {"seconds": time.perf_counter() - t0, "first_look": True}

    def apply(self, spec: QuantSpec, superseded=None) -> dict:
        """Binarize to ``spec`` (only changed components are redone) and measure; returns plain numbers.

        Accuracies on the sample carry their 95 % Wilson interval (``accuracy_low``/``accuracy_high``), and
        the change against fp32 on the same rows its paired 95 % interval (``diff_low``/``diff_high``) and
        McNemar p-value; ``within_noise`` is True when that interval contains 0 (:mod:`binlab.experiments.stats`).
        A language model adds :func:`lm_metrics` (perplexity; ``accuracy`` is next-token top-1).

        ``superseded``: a check (no arguments) that says the learner has made a newer change: then the evaluation
        stops where it stands, while it waits for its turn or between batches, with
        :class:`~binlab.lab.gate.Superseded`; nothing is stored, the model is left binarized to ``spec``, and
        the next call measures whatever it is asked as if this one had not run (tested)."""

        t0 = time.perf_counter()
        self._switch(spec)
        looked, self._first_look = self._first_look, None

        def measure() -> dict:
            g0, g1 = self._groups
            if looked is not None and looked[0] == spec.to_json() and looked[1] == self._configuration() == self._plans[0]:
                # this lab's first look at this configuration measured its first rows: only the rest is computed
                rest = self._stats(g1.start, g1.stop, superseded=superseded) if len(g1) else (np.zeros(0),) * 3
                nll, units, hits = (np.concatenate([a, b]) for a, b in zip(looked[2], rest))
            else:
                nll, units, hits = self._stats(g0.start, g1.stop, superseded=superseded)
            size = model_size(self.model).summary()
            out = {"loss": float(nll.sum() / units.sum()), "baseline_loss": float(self.baseline_nll.sum() / self.units.sum()), **size,
                   "fp32_bytes": self.fp_size["total_bytes"], "rows": len(nll), "baseline_accuracy": 100 * self.baseline_accuracy}
            out |= self._metrics(nll, units, hits, out)
            return out | {"seconds": time.perf_counter() - t0}
        out, shared = self._once(LiveLab._shared_results, (self.family, spec.to_json()), measure)
        if shared:  # another learner measured this spec on the same rows (before, or just now): the same numbers
            self._inputs = None  # this copy's layer inputs are not computed: the next change starts from the embeddings
            self._plans = [None, None]
            return out | {"seconds": time.perf_counter() - t0, "shared": True}
        return out


def compare_models(model_a: torch.nn.Module, model_b: torch.nn.Module, val: EncodedSplit, val_rows: int = 1000,
                   batch_size: int = EVAL_BATCH, reference_label: str = "B") -> dict:
    """Accuracy of A and B on the same rows, each with its 95 % interval, and A - B with its paired
    95 % interval and McNemar p-value (percent points). Language models: next-token accuracy and
    perplexity, with delta-method intervals (:func:`lm_metrics`, B as the reference). ``metric``: A's
    headline :class:`~binlab.nn.metric.Metric` against B (named ``reference_label``); ``metric_b``: B's."""
    rows = val.head(val_rows)
    out = {}
    correct = []
    if task_of(model_a) == "lm":
        st = [stats_on(m.eval(), list(rows.batches(batch_size, device=next(m.parameters()).device))) for m in (model_a, model_b)]
        units = st[0][1]
        for tag, (nll, _, hits) in zip("ab", st):
            r = ratio_interval(hits, units)
            out.update({f"accuracy_{tag}": 100 * r.value, f"low_{tag}": 100 * r.low, f"high_{tag}": 100 * r.high,
                        f"perplexity_{tag}": perplexity(float(nll.sum() / units.sum()))})
        lm = lm_metrics(st[0][0], units, st[1][0])
        acc = next_token_metric(st[0][2], st[1][2], units)
        out["metric"] = perplexity_metric(st[0][0], units, st[1][0], reference_label=reference_label, m=lm)
        out["metric_b"] = headline(task_info("lm"), out["perplexity_b"], rows=len(units), tokens=int(units.sum()))
        return out | {"diff": acc.change, "diff_low": acc.change_low, "diff_high": acc.change_high, "p_value": float("nan"),
                      "within_noise": acc.within_noise, "rows": len(units), **lm}
    for tag, m in (("a", model_a), ("b", model_b)):
        dev = next(m.parameters()).device
        c, _ = row_correctness(m.eval(), list(rows.batches(batch_size, device=dev)))
        lo, hi = wilson_interval(int(c.sum()), len(c))
        out.update({f"accuracy_{tag}": 100 * float(c.mean()), f"low_{tag}": 100 * lo, f"high_{tag}": 100 * hi})
        correct.append(c)
    m = accuracy_metric(correct[0], correct[1], reference_label=reference_label)
    out["metric"] = m
    out["metric_b"] = headline(task_info("classify"), out["accuracy_b"], low=out["low_b"], high=out["high_b"], rows=len(correct[1]))
    return out | {k: v for k, v in accuracy_keys(m).items() if k.startswith(("diff", "p_", "within"))} | {"rows": len(correct[0])}


def _histogram(v: np.ndarray, bins: int) -> dict:
    """Counts of ``v`` in ``bins`` equal bins: ``{"centers", "counts", "width"}`` (what a page draws: a
    histogram of every weight, binned here instead of sending the points to the browser)."""
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo + 1e-6
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    return {"centers": (edges[:-1] + edges[1:]) / 2, "counts": counts, "width": float(edges[1] - edges[0])}


def component_view(model: torch.nn.Module, name: str, method: MethodConfig | None, max_points: int = 200_000,
                   hessian: Callable[[str], torch.Tensor] | None = None) -> dict:
    """Latent and quantized weights of one component for a histogram, plus error statistics.

    With a per-channel method the values are shown per row in std units, ``(w - mean_row) / std_row``,
    so a bucket threshold ``tau`` is one vertical line for every row. A method that needs data gets
    the component's Hessian from ``hessian(name)`` (:meth:`LiveLab.hessian`). ``max_points``: how many
    (latent, quantized) pairs to sample for a scatter; 0 gives the histograms only.
    """
    mod = quantizable(model).get(name)
    if mod is None:
        raise ValueError(f"no component {name!r}; choose one of {list(quantizable(model))}")
    w = mod.weight.detach().float().cpu()
    q = w
    if method is not None:
        quantizer = method.make()  # for stochastic: the first draw of a fresh instance
        if quantizer.needs_calibration:
            if hessian is None:
                raise ValueError(f"{method.method} needs calibration data to show its values")
            quantizer.calibrate(hessian(name, getattr(quantizer, "hessian_kind", "layer")).cpu())
        q = quantizer(w)
    # methods without a per_channel option work per row (ReCU, BiLLM, OneBit) or have no scale (sign): show row units
    per_channel = bool(method is not None and getattr(method.make(), "per_channel", True))
    w2, q2 = w.reshape(w.shape[0], -1), q.reshape(q.shape[0], -1)
    if per_channel:
        mu, sd = w2.mean(1, keepdim=True), w2.std(1, keepdim=True, unbiased=False).clamp_min(1e-12)
    else:
        mu, sd = w2.mean().reshape(1, 1), w2.std(unbiased=False).clamp_min(1e-12).reshape(1, 1)
    wn, qn = ((w2 - mu) / sd).flatten(), ((q2 - mu) / sd).flatten()
    hists = {k: _histogram(v.numpy(), bins) for k, v, bins in (("latent_hist", wn, 120), ("quantized_hist", qn, 240))}
    if max_points <= 0:  # histograms only
        wn, qn = wn[:0], qn[:0]
    elif wn.numel() > max_points:
        idx = torch.randperm(wn.numel(), generator=torch.Generator().manual_seed(0))[:max_points]
        wn, qn = wn[idx], qn[idx]
    err = float(((q - w) ** 2).sum())
    energy = float((w**2).sum())
    out = {"name": name, "shape": tuple(w.shape), "latent": wn.numpy(), "quantized": qn.numpy(), "units": "std of its row" if per_channel else "std of the matrix",
           "relative_error": err / max(energy, 1e-30), "sqnr_db": 10 * np.log10(max(energy, 1e-30) / max(err, 1e-30)),
           "threshold": None, "levels": None, **hists}
    if method is not None and method.method == "bucket":
        b = method.make()
        t, lo, hi = b.levels(w)
        norm = lambda v: float((((v - mu) / sd) if per_channel else (v - mu) / sd).mean())  # noqa: E731
        out["threshold"], out["levels"] = norm(t), (norm(lo), norm(hi))
    return out


def sensitivity(baseline: torch.nn.Module, val: EncodedSplit, method: MethodConfig, callback=None, val_rows: int = 1000,
                calib: EncodedSplit | None = None) -> list[dict]:
    """PTQ accuracy (a language model: also perplexity) when each component alone, each attention
    pair, and a few groups are binarized."""
    lab = LiveLab(baseline, val, val_rows, calib=calib)
    lay = layout(lab.model)
    targets = [(f"L{i} {label}", name, "component") for i, row in enumerate(lay["layers"]) for label, name in row]
    targets += [(n, n, "component") for n in lay["embeddings"]] + [("head", "head", "component")]
    targets += [(g, g, "pair") for g in ("QK", "QV", "KV")] + [(g, g, "group") for g in ("attention", "ffn", "recurrent", "all-except-head", "all")]
    names = list(quantizable(lab.model))
    targets = [t for t in targets if t[2] == "component" or any(fnmatch.fnmatchcase(n, pat) for n in names for pat in GROUPS[t[1]])]
    rows = []
    for i, (label, target, kind) in enumerate(targets):
        r = lab.apply(QuantSpec((Rule(target, method),)))
        rows.append({"label": label, "target": target, "kind": kind, "accuracy": r["accuracy"], "drop": r["baseline_accuracy"] - r["accuracy"],
                     "drop_low": -r["diff_high"], "drop_high": -r["diff_low"], "within_noise": r["within_noise"],
                     "accuracy_low": r["accuracy_low"], "accuracy_high": r["accuracy_high"], "reduction_percent": r["reduction_percent"],
                     **({"perplexity": r["perplexity"], "ppl_ratio": r["ppl_ratio"]} if "perplexity" in r else {}),
                     "metric": r["metric"]})
        if callback:
            callback(i + 1, len(targets), label)
    return rows


def quantized_for_viewing(baseline: torch.nn.Module, spec: QuantSpec, splits, rows: int = 64) -> torch.nn.Module:
    """A PTQ copy of ``baseline`` under ``spec`` for the attention viewer, with its data-initialised
    quantizers (BiT's and LSQ's scales) set from ``rows`` validation rows rather than from the one
    sentence being looked at."""
    from binlab.training.calibration import calibration_set
    from binlab.training.qat import ptq

    m = ptq(baseline, spec, calib=calibration_set(splits))
    ids = next(iter(splits.val.head(rows).batches(rows, device=next(m.parameters()).device)))[0]
    with torch.no_grad():
        m(ids)
    return m
