"""The class store: shared by every learner's session, consistent with many writers at once."""
import multiprocessing as mp

import pytest

from binlab.lab.classroom import ClassRoom, check_class_name, check_nick
from binlab.lab.runs import Run


def _run(acc: float, label: str = "r", preset: str = "scratch", ppl: float | None = None) -> Run:
    return Run(preset=preset, mode="PTQ", label=label, spec='{"rules": []}', rows=100, split="val", accuracy=acc,
               low=acc - 1, high=acc + 1, size_bytes=1e5, reduction=90.0, bits_per_weight=1.0, perplexity=ppl)


def _writer(path, i, n):
    room = ClassRoom("algebra-1", path)
    for j in range(n):
        room.pin(f"learner{i}", _run(50 + j, label=f"{i}-{j}"))
    room.predict(f"learner{i}", "components", ("QK", "QV", "KV")[i % 3])


def test_thirty_writers_at_once_lose_nothing(tmp_path):
    path = tmp_path / "classes.sqlite"
    ClassRoom("algebra-1", path)  # created once, as the server does at start
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, i, 20)) for i in range(30)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    room = ClassRoom("algebra-1", path)
    pins = room.pins()
    assert len(pins) == 30 * 20
    assert {r.label for _, r in pins} == {f"{i}-{j}" for i in range(30) for j in range(20)}
    assert room.tally("components") == {"QK": 10, "QV": 10, "KV": 10}
    assert len(room.learners()) == 30


def test_predictions_reveals_answers_and_the_best_runs(tmp_path):
    room, other = ClassRoom("c1", tmp_path / "s.sqlite"), ClassRoom("c2", tmp_path / "s.sqlite")
    room.predict("ann", "qat", "higher")
    room.predict("ann", "qat", "within noise")  # a second answer replaces the first
    room.predict("bo", "qat", "higher")
    assert room.tally("qat") == {"within noise": 1, "higher": 1}
    assert other.tally("qat") == {}  # classes do not see each other
    assert not room.revealed("qat") and room.answer("qat") is None
    room.record_answer("qat", ["higher"], "QAT 85.1 % vs PTQ 80.2 %")
    room.reveal("qat")
    assert room.revealed("qat") and room.answer("qat") == (["higher"], "QAT 85.1 % vs PTQ 80.2 %")
    room.reveal("qat", shown=False)
    assert not room.revealed("qat")
    for acc, who in ((80.0, "ann"), (86.0, "bo"), (83.0, "cy")):
        room.pin(who, _run(acc, label=who))
    room.pin("cy", _run(0.0, preset="lm", ppl=150.0))
    assert [n for n, _ in room.best("scratch")] == ["bo", "cy", "ann"]
    room.pin("ann", _run(0.0, preset="lm", ppl=140.0))
    assert [r.perplexity for _, r in room.best("lm")] == [140.0, 150.0]  # perplexity: lower is better


def test_a_learner_keeps_at_most_fifty_pins_and_names_are_checked(tmp_path):
    room = ClassRoom("c", tmp_path / "s.sqlite")
    for j in range(55):
        room.pin("ann", _run(float(j), label=str(j)))
    labels = [r.label for _, r in room.pins()]
    assert len(labels) == 50 and labels[0] == "5" and labels[-1] == "54"  # the oldest went first
    for bad in ("", " ", "x" * 25, "a\x00b"):
        with pytest.raises(ValueError, match="nickname"):
            check_nick(bad)
    assert check_nick("  Ann  ") == "Ann"
    for bad in ("", "-x", "a b", "a/b", "x" * 41, "../etc"):
        with pytest.raises(ValueError, match="class name"):
            check_class_name(bad)
    with pytest.raises(ValueError, match="class name"):
        ClassRoom("../x", tmp_path / "s.sqlite")


def test_clear_forgets_one_class_only(tmp_path):
    room, other = ClassRoom("c1", tmp_path / "s.sqlite"), ClassRoom("c2", tmp_path / "s.sqlite")
    for r in (room, other):
        r.pin("ann", _run(80.0))
        r.predict("ann", "qat", "higher")
        r.record_answer("qat", ["higher"], "measured")
        r.reveal("qat")
    room.clear()
    assert room.pins() == [] and room.tally("qat") == {} and room.answer("qat") is None and not room.revealed("qat")
    assert room.learners() == []
    assert len(other.pins()) == 1 and other.tally("qat") == {"higher": 1} and other.revealed("qat")  # untouched
