"""Caches that are verified or rebuilt, writes that survive a full disk: damage gives a message or the
right number again, never a silently wrong one."""
import errno
import json
import sqlite3
import warnings

import numpy as np
import pytest


def _texts(fixture_data):
    import datasets

    return list(datasets.load_dataset(str(fixture_data))["train"]["text"])


def test_tokenizer_training_is_deterministic_and_tokenizes_as_trained(fixture_data, tmp_path, monkeypatch):
    """Two trainings in two empty caches give the same file; the canonical ids split every text into the
    same tokens as the trainer's own numbering of the same vocabulary."""
    from tokenizers import models

    import binlab.data as D

    texts = _texts(fixture_data)
    files, seen = [], []
    real = D._canonical_wordpiece
    monkeypatch.setattr(D, "_canonical_wordpiece", lambda vocab, m: (seen.append(dict(vocab)), real(vocab, m))[1])
    for k in range(2):
        monkeypatch.setenv("BINLAB_CACHE", str(tmp_path / f"c{k}"))
        files.append(D.get_tokenizer(D.TokenizerConfig("wordpiece", vocab_size=800), texts))
    assert files[0].to_str() == files[1].to_str() and len(seen) == 2
    from tokenizers import Tokenizer

    trained = Tokenizer.from_str(files[0].to_str())
    trained.model = models.WordPiece(seen[0], unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100)
    assert sorted(seen[0], key=seen[0].get)[:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    for t in texts[:300]:
        assert trained.encode(t).tokens == files[0].encode(t).tokens


def test_an_edited_tokenizer_cache_is_trained_again_to_the_same_file(fixture_data, tmp_path, monkeypatch):
    from binlab.data import TokenizerConfig, get_tokenizer

    monkeypatch.setenv("BINLAB_CACHE", str(tmp_path))
    texts = _texts(fixture_data)
    first = get_tokenizer(TokenizerConfig("wordpiece", vocab_size=800), texts).to_str()
    (path,) = tmp_path.glob("tokenizer-*.json")
    d = json.loads(path.read_text())
    vocab = d["model"]["vocab"]
    a, b = list(vocab)[10], list(vocab)[11]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # still a valid tokenizer, with two ids swapped
    path.write_text(json.dumps(d))
    with pytest.warns(UserWarning, match="does not match its hash"):
        again = get_tokenizer(TokenizerConfig("wordpiece", vocab_size=800), texts).to_str()
    assert again == first


def test_a_relabelled_encoded_split_is_encoded_again(fixture_data, tmp_path, monkeypatch):
    """Changing 20 labels of the cached test split (a valid file) is found: the split is encoded again
    and the evaluation sees the true labels."""
    from safetensors.numpy import load_file, save_file

    from binlab.presets import load_data

    monkeypatch.setenv("BINLAB_CACHE", str(tmp_path))
    first = load_data("tiny", source=str(fixture_data), val_size=50, test_size=60)
    hit = [p for p in tmp_path.glob("encoded-test-*.safetensors")]
    assert len(hit) == 1
    d = load_file(str(hit[0]))
    d["labels"][:20] = (d["labels"][:20] + 1) % 4
    from safetensors import safe_open

    with safe_open(str(hit[0]), framework="numpy") as f:
        meta = f.metadata()
    save_file(d, str(hit[0]), metadata=meta)  # the old hash kept: the content no longer matches it
    with pytest.warns(UserWarning, match="encoding it again"):
        again = load_data("tiny", source=str(fixture_data), val_size=50, test_size=60)
    assert np.array_equal(again.test.labels, first.test.labels)


def test_checkpoint_metadata_is_under_the_hash(tiny_model, tmp_path):
    from binlab.training.train import CheckpointError, load_checkpoint, save_checkpoint

    info = save_checkpoint(tiny_model, tmp_path / "m", {"val_accuracy": 0.774})
    model, meta = load_checkpoint(tmp_path / "m")
    assert meta["val_accuracy"] == 0.774
    payload = json.loads(info.read_text())
    payload["meta"]["val_accuracy"] = 0.574
    info.write_text(json.dumps(payload))
    with pytest.raises(CheckpointError, match="m.json does not match its hash"):
        load_checkpoint(tmp_path / "m")


def test_checkpoints_written_before_the_metadata_hash_still_load(tiny_model, tmp_path):
    from binlab.training.train import load_checkpoint, save_checkpoint

    info = save_checkpoint(tiny_model, tmp_path / "old", {"val_accuracy": 0.5})
    payload = json.loads(info.read_text())
    payload["format"] = "binlab-checkpoint-1"
    del payload["meta_sha256"]
    info.write_text(json.dumps(payload))
    assert load_checkpoint(tmp_path / "old")[1]["val_accuracy"] == 0.5


def test_a_full_disk_keeps_the_previous_checkpoint_and_leaves_no_temporary(tiny_model, tmp_path, monkeypatch):
    import safetensors.torch

    from binlab.training.train import load_checkpoint, save_checkpoint

    save_checkpoint(tiny_model, tmp_path / "m", {"run": 1})

    def full(state, path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError, match="free some disk space"):
        save_checkpoint(tiny_model, tmp_path / "m", {"run": 2})
    assert not list(tmp_path.glob("*.tmp*"))
    assert load_checkpoint(tmp_path / "m")[1] == {"run": 1}


def test_a_split_cache_that_cannot_be_written_is_only_a_warning(fixture_data, tmp_path, monkeypatch):
    import safetensors.numpy

    from binlab.presets import load_data

    monkeypatch.setenv("BINLAB_CACHE", str(tmp_path))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.numpy, "save_file", full)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = load_data("tiny", source=str(fixture_data), val_size=50, test_size=60)
    assert len(s.test) == 60 and any("could not cache" in str(w.message) for w in caught)
    assert not list(tmp_path.glob("*.tmp*"))


def test_cli_bad_paths_and_numbers_give_one_line(tmp_path, capsys):
    """Each: exit code 2 and one plain line naming the value, before any data is loaded; no traceback."""
    from binlab.cli import main

    cases = [(["eval", "--preset", "tiny", "--data", "/nonexistent", "--spec", str(tmp_path)], "is not a file"),
             (["eval", "--preset", "tiny", "--data", "/nonexistent", "--spec", "/dev/zero"], "is not a file"),  # endless
             (["export", "--preset", "tiny", "--data", "/nonexistent", "--target", "encoder", "--out", str(tmp_path)], "is a folder"),
             (["experiments", "run", "T4", "--preset", "tiny", "--only", "a"], "configuration indices"),
             (["landscape", "slice", "--preset", "tiny", "--data", "/nonexistent", "--span", "inf"], "positive finite number")]
    for argv, words in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, (argv, err)
    for argv, words in [(["experiments", "run", "T4", "--epochs", "nan"], "finite number"),
                        (["experiments", "run", "T4", "--lr", "-1"], "> 0")]:
        with pytest.raises(SystemExit) as hit:
            main(argv)
        assert hit.value.code == 2 and words in capsys.readouterr().err, argv


def test_a_packed_model_refuses_another_tokenizer_and_a_folder(tiny_splits, tiny_model, tmp_path, fixture_data, monkeypatch):
    from binlab.data import TokenizerConfig, get_tokenizer
    from binlab.nn.quantize import QuantSpec
    from binlab.runtime.export import load_packed, save_packed
    from binlab.training.qat import ptq

    q = ptq(tiny_model, QuantSpec.simple("encoder", "xnor"))
    with pytest.raises(ValueError, match="is a folder"):
        save_packed(q, tmp_path)
    path = tmp_path / "m.safetensors"
    save_packed(q, path, tokenizer=tiny_splits.tokenizer)
    assert load_packed(path, tokenizer=tiny_splits.tokenizer) is not None
    monkeypatch.setenv("BINLAB_CACHE", str(tmp_path / "other"))
    other = get_tokenizer(TokenizerConfig("wordpiece", vocab_size=300), _texts(fixture_data))
    with pytest.raises(ValueError, match="another tokenizer"):
        load_packed(path, tokenizer=other)
    assert not list(tmp_path.glob("*.tmp*"))


def test_a_changed_result_row_is_computed_again_not_shown(tmp_path):
    from binlab.experiments.store import ResultStore

    store = ResultStore(tmp_path / "results.sqlite")
    assert store.put("k1", {"label": "x", "accuracy": 77.60}) and store.put("k2", {"label": "y", "accuracy": 50.0})
    assert store.get("k1") == {"label": "x", "accuracy": 77.6}
    with sqlite3.connect(store.path) as db:
        body = db.execute("SELECT body FROM results WHERE key = 'k1'").fetchone()[0]
        db.execute("UPDATE results SET body = ? WHERE key = 'k1'", (body.replace("77.6", "67.6"),))
    with pytest.warns(UserWarning, match="damaged"):
        assert [r["key"] for r in store.rows()] == ["k2"]
    with pytest.warns(UserWarning, match="damaged"):
        assert store.get("k1") is None  # and it is removed, so the row is computed again
    assert "k1" not in store.keys() and store.put("k1", {"label": "x", "accuracy": 77.6})


def test_eval_prints_only_json_on_stdout(fixture_data, capsys):
    """Progress and notes go to stderr, so `binlab eval ... > out.json` is JSON."""
    from binlab.cli import main

    assert main(["eval", "--preset", "tiny", "--data", str(fixture_data), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["accuracy"] >= 0


def test_a_grid_with_a_fractional_batch_size_is_a_message(tmp_path):
    from binlab.experiments.grids import load_grid

    grid = tmp_path / "g.yaml"
    grid.write_text("presets: [tiny]\nbudgets:\n  - {epochs: 1, batch_size: 2.5}\nspecs:\n"
                    '  - {label: "x", mode: qat, spec: {"rules": [{"target": "encoder", "method": {"method": "xnor"}}]}}\n')
    with pytest.raises(ValueError, match="batch_size must be a whole number"):
        load_grid(grid)


def test_a_damaged_results_store_is_named(tmp_path):
    from binlab.experiments.store import ResultStore

    store = ResultStore(tmp_path / "results.sqlite")
    store.put("k", {"label": "x"})
    data = bytearray(store.path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)
    store.path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="results store .* is damaged"):
        store.rows()
