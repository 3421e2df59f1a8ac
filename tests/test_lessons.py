"""Lessons: every lesson runs on the tiny preset and answers with one of its choices; the answers agree
with independent computations; a prediction is judged only against what the run measured."""
import numpy as np
import pytest

from binlab.lab.lessons import LESSONS, Context, Outcome, check, lesson


@pytest.fixture(scope="module")
def ctx(tiny_splits):
    from binlab.presets import get_baseline

    return Context(get_baseline("tiny", tiny_splits)[0], tiny_splits, fast=True)


@pytest.mark.parametrize("key", list(LESSONS))
def test_every_lesson_runs_and_answers_with_its_choices(key, ctx):
    les = LESSONS[key]
    out = les.run(ctx)
    assert out.answers and set(out.answers) <= set(les.choices)
    assert out.summary and out.figure["x"] and len(out.figure["x"]) == len(out.figure["y"])


def test_binarizer_lesson_agrees_with_numpy(ctx):
    w = ctx.baseline.get_submodule("layers.0.ffn.up").weight.detach().double().numpy()
    sign = np.where(w >= 0, 1.0, -1.0)
    xnor = np.abs(w).mean(1, keepdims=True) * sign
    # bucket: the best two-means split of each sorted row, by brute force over every cut
    bucket = np.empty_like(w)
    for i, row in enumerate(w):
        s = np.sort(row)
        best = min(range(1, len(s)), key=lambda c: ((s[:c] - s[:c].mean()) ** 2).sum() + ((s[c:] - s[c:].mean()) ** 2).sum())
        t = s[best - 1]
        lo, hi = row[row <= t].mean(), row[row > t].mean()
        bucket[i] = np.where(row <= t, lo, hi)
    err = {c: np.linalg.norm(w - q) / np.linalg.norm(w) for c, q in zip(LESSONS["binarizers"].choices, (sign, xnor, bucket))}
    out = LESSONS["binarizers"].run(ctx)
    assert out.answers == (min(err, key=err.get),)


def test_xnor_lesson_is_the_closed_form(ctx):
    assert LESSONS["xnor"].run(ctx).answers == (str(256 - 2 * 64),)


def test_check_judges_against_the_measurement_only():
    les = LESSONS["components"]
    tie = Outcome(("QK", "QV"), "a tie")
    assert check(les, "QV", tie)[0] and check(les, "QK", tie)[0] and not check(les, "KV", tie)[0]
    assert "Not this time" in check(les, "KV", tie)[1]
    with pytest.raises(ValueError, match="choices"):
        check(les, "QQ", tie)
    assert lesson(2) is les and lesson("2") is les and lesson("components") is les
    with pytest.raises(ValueError, match="unknown lesson"):
        lesson(8)


def test_the_notebooks_check_block_never_answers_for_the_learner(ctx, capsys):
    """course.answer with no prediction shows the measurement and judges nothing; with a choice's number it
    judges that choice; a number out of range is refused."""
    from binlab.lab import course

    les = course.ask("xnor")
    assert "0: " in capsys.readouterr().out
    out = course.answer(les, None, ctx.baseline, ctx.splits, fast=True)
    said = capsys.readouterr().out
    assert "No prediction written" in said and "Yes:" not in said and "Not this time" not in said
    right = les.choices.index(out.answers[0])
    course.answer(les, right, ctx.baseline, ctx.splits, fast=True)
    assert capsys.readouterr().out.startswith("Yes:")
    course.answer(les, (right + 1) % len(les.choices), ctx.baseline, ctx.splits, fast=True)
    assert capsys.readouterr().out.startswith("Not this time")
    with pytest.raises(ValueError, match="choice's number"):
        course.answer(les, len(les.choices), ctx.baseline, ctx.splits, fast=True)


def test_bits_by_part_counts_every_parameter_once():
    """bits_by_part of an fp32 model is 32 bits per parameter, grouped by the parameter's name (an
    independent count from named_parameters), for a transformer and an LSTM."""
    from binlab.lab.teaching import bits_by_part
    from binlab.nn.model import ModelConfig, build

    for cfg in (ModelConfig(vocab_size=300, max_len=16, d_model=16, n_heads=2, d_ff=32, n_layers=2),
                ModelConfig(task="lm", arch="lstm", vocab_size=300, max_len=16, d_model=16, n_heads=1, d_ff=16, n_layers=2)):
        m = build(cfg)
        expect = {"embeddings": 0, "layers": 0, "head": 0}
        for name, p in m.named_parameters():
            expect["embeddings" if name.startswith("embed.") else "layers" if name.startswith("layers.") else "head"] += 32 * p.numel()
        assert bits_by_part(m) == expect
        les = LESSONS["eras"]
        out = les.run(Context(m, None))
        big = max(expect, key=expect.get)
        assert out.answers[0].startswith("the " + {"embeddings": "embeddings", "layers": "layers", "head": "head"}[big])
