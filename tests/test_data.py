import numpy as np
import pytest

from binlab.data import PAD_ID, DataConfig, DataUnavailableError, TokenizerConfig, cache_dir, get_tokenizer, load_raw, load_splits, resolve_source


def test_load_local_fixture(fixture_data):
    raw = load_raw(str(fixture_data))
    assert len(raw["train"]["label"]) == 600 and len(raw["test"]["label"]) == 200
    assert set(raw["train"]["label"]) == {0, 1, 2, 3}


def test_env_var_source(fixture_data, monkeypatch):
    monkeypatch.setenv("BINLAB_DATA", str(fixture_data))
    assert resolve_source() == str(fixture_data)
    assert resolve_source("explicit") == "explicit"


def test_missing_local_folder_gives_both_fixes(tmp_path):
    with pytest.raises(DataUnavailableError) as e:
        load_raw(str(tmp_path / "nope"))
    msg = str(e.value)
    assert "BINLAB_DATA" in msg and "fancyzhx/ag_news" in msg


def test_hub_unreachable_gives_both_fixes(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("BINLAB_DATA", raising=False)
    with pytest.raises(DataUnavailableError) as e:
        load_raw("someone/not-a-cached-dataset")
    assert "BINLAB_DATA" in str(e.value) and "hub" in str(e.value)


def test_splits_are_seeded_disjoint_and_sized(fixture_data):
    cfg = DataConfig(source=str(fixture_data), tokenizer=TokenizerConfig(vocab_size=300), max_len=32, val_size=100, train_size=300)
    a, b = load_splits(cfg), load_splits(cfg)
    assert (len(a.train), len(a.val), len(a.test)) == (300, 100, 200)
    np.testing.assert_array_equal(a.val.ids, b.val.ids)
    c = load_splits(DataConfig(source=str(fixture_data), tokenizer=TokenizerConfig(vocab_size=300), max_len=32, val_size=100, seed=1))
    assert not np.array_equal(a.val.labels, c.val.labels) or not np.array_equal(a.val.ids, c.val.ids)
    # every row starts with [CLS] and ends with [SEP], and respects max_len
    assert a.train.lengths.max() <= 32
    cls, sep = a.tokenizer.token_to_id("[CLS]"), a.tokenizer.token_to_id("[SEP]")
    assert all(a.train.ids[o] == cls for o in a.train.offsets[:-1])
    assert all(a.train.ids[o - 1] == sep for o in a.train.offsets[1:])


def test_tokenizer_is_cached_by_settings(fixture_data):
    texts = load_raw(str(fixture_data))["train"]["text"]
    before = set(cache_dir().glob("tokenizer-*.json"))
    t1 = get_tokenizer(TokenizerConfig(vocab_size=250), texts)
    mid = set(cache_dir().glob("tokenizer-*.json"))
    t2 = get_tokenizer(TokenizerConfig(vocab_size=250), texts)
    after = set(cache_dir().glob("tokenizer-*.json"))
    assert len(mid - before) <= 1 and after == mid  # second call wrote nothing new
    assert t1.get_vocab() == t2.get_vocab() and t1.token_to_id("[PAD]") == PAD_ID
    get_tokenizer(TokenizerConfig(vocab_size=260), texts)
    assert len(set(cache_dir().glob("tokenizer-*.json"))) == len(after) + 1  # other settings, other file


def test_batches_cover_every_row_once_with_dynamic_padding(tiny_splits):
    split = tiny_splits.train
    seen_labels, n = [], 0
    widths = []
    for x, y in split.batches(16, shuffle=True, seed=3):
        n += len(y)
        widths.append(x.shape[1])
        lens = (x != PAD_ID).sum(1)
        assert int(lens.max()) == x.shape[1]  # padded only to the longest row of the batch
        seen_labels.extend(y.tolist())
    assert n == len(split)
    assert sorted(seen_labels) == sorted(split.labels.tolist())
    assert min(widths) < max(widths)


def test_bad_config_messages():
    with pytest.raises(ValueError, match="max_len"):
        DataConfig(max_len=4)
    with pytest.raises(ValueError, match="kind"):
        TokenizerConfig(kind="bpe")


def test_shared_ag_news_loads(shared_data):
    raw = load_raw(str(shared_data))
    assert len(raw["test"]["label"]) == 7600
    assert len(raw["train"]["label"]) > 10000
