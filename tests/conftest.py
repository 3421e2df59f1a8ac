"""Shared fixtures: an isolated cache folder, a tiny AG_NEWS-shaped dataset in HF layout, and
the real ../shared/ag_news when it exists."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "ag_news"

WORDS = {
    0: "government minister election war president talks embassy troops nation summit",
    1: "match team season coach player goal league championship score tournament",
    2: "shares profit market stocks company investors earnings bank economy oil",
    3: "software computer internet researchers space microsoft google users chip science",
}
NOISE = "the a of in on and to for with said new after from by at is was".split()


def make_ag_news_fixture(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Write a tiny, learnable AG_NEWS look-alike in the Hugging Face parquet layout."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)

    def rows(n):
        texts, labels = [], []
        for i in range(n):
            y = i % 4
            words = [rng.choice(WORDS[y].split()) for _ in range(rng.randint(3, 7))] + [rng.choice(NOISE) for _ in range(rng.randint(4, 12))]
            rng.shuffle(words)
            texts.append(" ".join(words))
            labels.append(y)
        return pa.table({"text": texts, "label": labels})

    (root / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(rows(n_train), root / "data" / "train-00000-of-00001.parquet")
    pq.write_table(rows(n_test), root / "data" / "test-00000-of-00001.parquet")
    return root


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Every test session gets its own cache folder; nothing depends on a developer's data/cache."""
    cache = tmp_path_factory.mktemp("binlab-cache")
    old = os.environ.get("BINLAB_CACHE")
    os.environ["BINLAB_CACHE"] = str(cache)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield cache
    if old is None:
        os.environ.pop("BINLAB_CACHE", None)
    else:
        os.environ["BINLAB_CACHE"] = old


@pytest.fixture(scope="session")
def aot_built(_isolated_cache):
    """The runtime's kernels compiled ahead of time into this session's cache (binlab.runtime.aot); the
    tests that need them are skipped, saying why, where this machine cannot compile them (no C compiler)."""
    from binlab.runtime import aot

    try:
        return aot.build()
    except RuntimeError as err:
        pytest.skip(f"the kernels cannot be compiled ahead of time here: {err}")


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory) -> Path:
    return make_ag_news_fixture(tmp_path_factory.mktemp("ag_news_fixture"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "data").exists():
        pytest.skip("../shared/ag_news not present")
    return SHARED


@pytest.fixture(scope="session")
def tiny_splits(fixture_data):
    from binlab.presets import load_data

    return load_data("tiny", source=str(fixture_data), val_size=100, test_size=200)


@pytest.fixture(scope="module")
def fp_tiny(tiny_splits):
    """The tiny preset's trained fp32 baseline (cached on disk after the first test that needs it)."""
    from binlab.presets import get_baseline

    return get_baseline("tiny", tiny_splits)[0]


@pytest.fixture(scope="module")
def calib(tiny_splits):
    """Calibration rows (train only) for the methods that need data."""
    from binlab.training.calibration import calibration_set

    return calibration_set(tiny_splits)


@pytest.fixture()
def tiny_model(tiny_splits):
    from binlab.presets import build_model, get_preset

    return build_model(get_preset("tiny"), tiny_splits, seed=0)
