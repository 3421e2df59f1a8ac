"""The weight histogram the Binarize page draws: binned on the server over every weight; the live lab's
clones sharing what they measure."""
import time

import numpy as np
import pytest
import torch

from binlab.lab.live import component_view
from binlab.nn.model import ModelConfig, build
from binlab.nn.quantize import MethodConfig


def test_histograms_count_every_weight_and_match_numpy():
    torch.manual_seed(0)
    m = build(ModelConfig(vocab_size=30, max_len=8, d_model=32, n_heads=2, d_ff=64, n_layers=1))
    v = component_view(m, "layers.0.ffn.up", MethodConfig("bucket"), max_points=100)
    w = m.layers[0].ffn.up.weight.detach().double().numpy()
    z = (w - w.mean(1, keepdims=True)) / w.std(1, keepdims=True)
    h = v["latent_hist"]
    assert h["counts"].sum() == w.size and len(h["counts"]) == 120  # all 2,048 weights, though only 100 points are sampled
    ref, edges = np.histogram(z.ravel(), bins=120, range=(z.min(), z.max()))
    assert np.abs(h["counts"] - ref).sum() <= 2  # float32 vs float64 at bin edges
    np.testing.assert_allclose(h["centers"], (edges[:-1] + edges[1:]) / 2, rtol=1e-5, atol=1e-5)
    assert v["quantized_hist"]["counts"].sum() == w.size
    assert (v["quantized_hist"]["counts"] > 0).sum() <= 2 * 64  # bucket: two values per row (64 rows)


def test_clones_share_rows_and_results_but_not_models(tiny_splits):
    from binlab.lab.live import LiveLab
    from binlab.nn.quantize import QuantSpec, current_plan
    from binlab.presets import get_baseline

    fp, _ = get_baseline("tiny", tiny_splits)
    proto = LiveLab(fp, tiny_splits.val, val_rows=80)
    a, b = proto.clone(), proto.clone()
    s1 = QuantSpec.simple("encoder", "xnor")
    s2 = QuantSpec.simple("QK", "bucket", options={"tau": 0.5})
    ra = a.apply(s1)
    rb = b.apply(s1)  # the same spec: answered from the shared table, same numbers
    assert rb.get("shared") and rb["accuracy"] == ra["accuracy"] and rb["total_bytes"] == ra["total_bytes"]
    assert current_plan(a.model) == current_plan(b.model) and a.model is not b.model
    r2 = b.apply(s2)  # b's next change recomputes from the embeddings: equal to a fresh lab's full evaluation
    fresh = LiveLab(fp, tiny_splits.val, val_rows=80).apply(s2)
    assert r2["accuracy"] == fresh["accuracy"] and r2["loss"] == fresh["loss"]
    assert current_plan(a.model) != current_plan(b.model)  # a is untouched by b's change
    assert not current_plan(proto.model)  # the family's own model stays fp32


def test_layer_inputs_stay_within_the_servers_budget(tiny_splits, monkeypatch):
    """Each lab keeps every layer's input for its next change; all labs together keep at most
    BINLAB_LAYER_CACHE_MB: the labs that evaluated longest ago drop theirs, and their next change gives the
    numbers of a full evaluation all the same."""
    from collections import OrderedDict

    import pytest

    from binlab.lab.live import LiveLab, layer_cache_bytes
    from binlab.nn.quantize import QuantSpec
    from binlab.presets import get_baseline

    monkeypatch.setattr(LiveLab, "_kept", OrderedDict())  # this test's labs only
    fp, _ = get_baseline("tiny", tiny_splits)
    proto = LiveLab(fp, tiny_splits.val, val_rows=80)
    one = sum(t.numel() * t.element_size() for xs in proto._inputs for t in xs)  # one lab's layer inputs
    assert one > 0
    monkeypatch.setenv("BINLAB_LAYER_CACHE_MB", str(2.5 * one / 2**20))  # room for two labs
    labs = [proto.clone() for _ in range(4)]
    specs = [QuantSpec.simple("QK", "bucket", options={"tau": t}) for t in (0.1, 0.2, 0.3, 0.4, 0.5)]
    for lab, spec in zip(labs, specs):
        lab.apply(spec)
    kept = [lab._inputs is not None for lab in [proto, *labs]]
    assert kept == [False, False, False, True, True], kept  # the two that evaluated last
    assert sum(n for _, _, n in LiveLab._kept.values()) <= layer_cache_bytes()
    r = labs[0].apply(specs[4])  # dropped: recomputed from the embeddings, the numbers of a full evaluation
    fresh = LiveLab(fp, tiny_splits.val, val_rows=80).apply(specs[4])
    assert r["loss"] == fresh["loss"] and r["accuracy"] == fresh["accuracy"]
    monkeypatch.setenv("BINLAB_LAYER_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="BINLAB_LAYER_CACHE_MB"):
        layer_cache_bytes()


def test_a_weight_view_is_computed_once_for_the_clones_of_a_lab(tiny_splits, monkeypatch):
    """Learners on the same configuration share the histogram of a weight matrix (LiveLab.view): computed
    once, equal to component_view's; another configuration computes its own."""
    from binlab.lab import live
    from binlab.nn.quantize import QuantSpec
    from binlab.presets import get_baseline

    monkeypatch.setattr(live.LiveLab, "_shared_views", {})
    fp, _ = get_baseline("tiny", tiny_splits)
    proto = live.LiveLab(fp, tiny_splits.val, val_rows=40)
    a, b = proto.clone(), proto.clone()
    spec = QuantSpec.simple("QK", "bucket", options={"tau": 0.3})
    mc = MethodConfig("bucket", options={"tau": 0.3})
    a.apply(spec)
    b.apply(spec)
    calls, orig = [], live.component_view
    monkeypatch.setattr(live, "component_view", lambda *args, **kw: calls.append(1) or orig(*args, **kw))
    va, vb = a.view("layers.0.attn.q", mc), b.view("layers.0.attn.q", mc)
    assert len(calls) == 1 and vb is va
    ref = orig(a.model, "layers.0.attn.q", mc)  # the full view, sampled points and all
    for k in ("latent_hist", "quantized_hist"):
        np.testing.assert_array_equal(va[k]["counts"], ref[k]["counts"])
    assert va["relative_error"] == ref["relative_error"] and va["threshold"] == ref["threshold"] and va["levels"] == ref["levels"]
    assert va["latent"].size == 0 and ref["latent"].size > 0
    b.apply(QuantSpec.simple("QK", "bucket", options={"tau": 0.6}))
    b.view("layers.0.attn.q", mc)
    assert len(calls) == 2  # another configuration: its own view


def _same_spec_at_once(lab, n, spec, monkeypatch, fail_first=False):
    """``n`` clones of ``lab`` asked for ``spec`` at the same instant (threads): (their apply() results, how
    many full evaluations and first looks ran). ``fail_first``: the first full evaluation raises."""
    import threading

    from binlab.lab.live import GLANCE_PRIORITY, LiveLab

    calls = {"full": 0, "glance": 0}
    lock = threading.Lock()
    stats = LiveLab._stats

    def counted_stats(self, first, stop, priority=0, superseded=None):
        kind = "glance" if priority == GLANCE_PRIORITY else "full"
        with lock:
            calls[kind] += 1
            fail = fail_first and kind == "full" and calls["full"] == 1
        time.sleep(0.3 if kind == "full" else 0.2)  # long enough that every other clone asks while this one measures
        if fail:
            raise RuntimeError("the first evaluation fails")
        return stats(self, first, stop, priority, superseded)
    monkeypatch.setattr(LiveLab, "_stats", counted_stats)
    clones = [lab.clone() for _ in range(n)]
    out, errors, go = [None] * n, [], threading.Barrier(n)

    def learner(i):
        go.wait()
        try:
            clones[i].glance(spec)
            out[i] = clones[i].apply(spec)
        except RuntimeError as err:
            errors.append(err)
    threads = [threading.Thread(target=learner, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out, calls, errors


def test_learners_asking_for_the_same_change_at_once_share_one_evaluation(tiny_splits, monkeypatch):
    """A class told to try the same threshold: the first clone measures it, the others wait for its
    numbers (one full evaluation and one first look, not one each), and the numbers equal a lab's own."""
    from binlab.lab.live import LiveLab
    from binlab.nn.quantize import QuantSpec
    from binlab.presets import get_baseline

    fp, _ = get_baseline("tiny", tiny_splits)
    spec = QuantSpec.simple("QK", "bucket", options={"tau": 0.35})
    alone = LiveLab(fp, tiny_splits.val, val_rows=80, glance_rows=20).apply(spec)
    out, calls, errors = _same_spec_at_once(LiveLab(fp, tiny_splits.val, val_rows=80, glance_rows=20), 4, spec, monkeypatch)
    assert not errors and calls == {"full": 1, "glance": 1}, calls
    assert sum(bool(r.get("shared")) for r in out) == 3
    assert all(r["accuracy"] == alone["accuracy"] and r["loss"] == alone["loss"] for r in out)
    monkeypatch.setattr(LiveLab, "share_in_flight", False)  # the setting bench/class_load.py compares against
    out, calls, errors = _same_spec_at_once(LiveLab(fp, tiny_splits.val, val_rows=80, glance_rows=20), 3, spec, monkeypatch)
    assert not errors and calls["full"] == 3 and all(r["accuracy"] == alone["accuracy"] for r in out)


def test_a_failed_evaluation_leaves_the_waiting_learners_to_measure(tiny_splits, monkeypatch):
    """When the clone measuring a change fails, the clones waiting for it measure it themselves (no hang,
    no missing numbers)."""
    from binlab.lab.live import LiveLab
    from binlab.nn.quantize import QuantSpec
    from binlab.presets import get_baseline

    fp, _ = get_baseline("tiny", tiny_splits)
    spec = QuantSpec.simple("QK", "bucket", options={"tau": 0.45})
    alone = LiveLab(fp, tiny_splits.val, val_rows=80, glance_rows=20).apply(spec)
    t0 = time.perf_counter()
    out, calls, errors = _same_spec_at_once(LiveLab(fp, tiny_splits.val, val_rows=80, glance_rows=20), 3, spec, monkeypatch, fail_first=True)
    assert len(errors) == 1 and time.perf_counter() - t0 < 30
    done = [r for r in out if r is not None]
    assert len(done) == 2 and calls["full"] == 2 and all(r["accuracy"] == alone["accuracy"] for r in done), calls


def test_full_numbers_after_a_first_look_compute_only_the_other_rows(tiny_splits, monkeypatch):
    """A change's first look measures the first look's rows; the full numbers that follow reuse them and compute
    only the other rows (the lab's batches put the first look's rows first), and equal the numbers of a lab that
    never took a first look. A first look at another configuration is not reused."""
    from binlab.lab.live import LiveLab
    from binlab.nn.quantize import QuantSpec
    from binlab.presets import get_baseline

    fp, _ = get_baseline("tiny", tiny_splits)
    lab = LiveLab(fp, tiny_splits.val, val_rows=80, glance_rows=20)
    ref = LiveLab(fp, tiny_splits.val, val_rows=80, glance_rows=20)  # the same rows in the same batches, no first looks
    seen, stats = [], LiveLab._stats

    def spy(self, first, stop, priority=0, superseded=None):
        if self is lab:
            seen.append((first, stop))
        return stats(self, first, stop, priority, superseded)
    monkeypatch.setattr(LiveLab, "_stats", spy)
    g0, g1 = lab._groups
    assert len(g0) and len(g1) and sum(len(y) for _, y in (lab.batches[b] for b in g0)) == 20
    specs = [QuantSpec.simple("QK", "bucket", options={"tau": t}) for t in (0.1, 0.6)] + [QuantSpec.simple("encoder", "xnor"), QuantSpec()]
    losses = set()
    for spec in specs:
        seen.clear()
        g = lab.glance(spec)
        r, want = lab.apply(spec), ref.apply(spec)
        assert seen == [(g0.start, g0.stop), (g1.start, g1.stop)], seen
        assert r["rows"] == want["rows"] == 80 and g["rows"] == 20
        assert r["loss"] == want["loss"] and r["accuracy"] == want["accuracy"], spec
        losses.add(r["loss"])
    assert len(losses) == len(specs)  # the configurations differ in their numbers: a reused wrong slice would show
    seen.clear()
    looked, moved = (QuantSpec.simple("QK", "bucket", options={"tau": t}) for t in (0.2, 0.3))  # new to both labs
    lab.glance(looked)
    r = lab.apply(moved)  # the learner moved on before the full numbers: every row is computed
    assert seen == [(g0.start, g0.stop), (g0.start, g1.stop)] and r["loss"] == ref.apply(moved)["loss"]


def test_an_evaluation_superseded_by_a_newer_change_stops_and_leaves_the_lab_sound(tiny_splits):
    """A learner's newer change stops the running full evaluation between batches, or its first look or full
    evaluation while they wait for a turn (Superseded): nothing is stored for it, no turn is left held, and
    the lab's next numbers, for another configuration or the same one, equal those of a lab that never
    stopped."""
    import threading

    from binlab.lab.gate import GATE, Superseded
    from binlab.lab.live import LiveLab
    from binlab.nn.quantize import QuantSpec, Rule
    from binlab.presets import get_baseline

    fp, _ = get_baseline("tiny", tiny_splits)
    lab = LiveLab(fp, tiny_splits.val, val_rows=80, glance_rows=20, batch_size=8)
    ref = LiveLab(fp, tiny_splits.val, val_rows=80, glance_rows=20, batch_size=8)
    assert len(lab._groups[1]) >= 4  # batches enough for a stop between them
    a, b = QuantSpec.simple("QK", "bucket", options={"tau": 0.4}), QuantSpec.simple("encoder", "xnor")
    lab.apply(QuantSpec.simple("QK", "bucket", options={"tau": 0.9}))  # layer inputs kept from another configuration
    lab.glance(a)
    asked = []

    def after_two():  # the learner moves again while the second batch of the rest computes
        asked.append(1)
        return len(asked) > 2
    with pytest.raises(Superseded):
        lab.apply(a, superseded=after_two)
    assert len(asked) == 3 and lab.measured(a) is None
    assert GATE._running == 0 and GATE._queue == []
    head = QuantSpec(a.rules + (Rule("head", MethodConfig("xnor")),))  # differs from `a` only after the last layer
    for spec in (head, b, a):  # the rows the stopped evaluation never reached must not pass for `a`'s
        r, want = lab.apply(spec), ref.apply(spec)
        assert (r["loss"], r["accuracy"], r["rows"]) == (want["loss"], want["accuracy"], 80), spec

    held, release = threading.Event(), threading.Event()

    def busy():  # other learners' evaluations take every slot
        with GATE(0):
            held.set()
            release.wait(10)
    holders = [threading.Thread(target=busy) for _ in range(GATE.slots)]
    for t in holders:
        held.clear()
        t.start()
        held.wait(5)
    c = QuantSpec.simple("QK", "bucket", options={"tau": 1.3})
    try:
        for step in (lab.glance, lab.apply):
            with pytest.raises(Superseded):
                step(c, superseded=lambda: True)
    finally:
        release.set()
        for t in holders:
            t.join(5)
    assert lab.measured(c) is None and GATE._running == 0 and GATE._queue == []
    assert lab.apply(c)["loss"] == ref.apply(c)["loss"]


def test_progress_bars_follow_the_work(capsys):
    from binlab.progress import grid_bar, training_bar

    cb = training_bar("qat")
    for s in range(1, 5):
        cb({"kind": "step", "step": s, "total": 4, "loss": 1.0 / s})
    cb({"kind": "eval", "step": 4, "val_accuracy": 0.5})
    g = grid_bar("slice")
    for d in range(1, 10):
        g(d, 9)
    err = capsys.readouterr().err
    assert "qat" in err and "4/4" in err and "slice" in err and "9/9" in err
