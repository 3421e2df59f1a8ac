"""What a learner or a teacher reads speaks of the product: no history of how it was made."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: words that tell the story of the work instead of the product ("this stop", "the previous stop", a commit
#: hash as history, "the issue asks")
PROCESS = re.compile(r"\b(this|the previous|previous|the last|last|earlier|next) stops?\b|\b(two|three|four) stops\b"
                     r"|\bcommit [0-9a-f]{7,40}\b|\bthe issue (asks|says|wants)\b", re.IGNORECASE)


def _read() -> dict[Path, str]:
    files = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md")) + sorted((ROOT / "app").rglob("*.py")) \
        + sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "binlab").rglob("*.py"))
    return {p: p.read_text() for p in files}


def test_no_process_words_in_what_users_read():
    bad = [f"{p.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}: {m.group(0)!r}"
           for p, text in _read().items() for m in PROCESS.finditer(text)]
    assert not bad, "process words in the product (say what the product does, not how it came to be):\n" + "\n".join(bad)


def test_the_scan_finds_them():
    for text in ("re-run this stop", "the AVX2-only machine of the previous stop", "see commit 97b3db0", "the issue asks 1 s"):
        assert PROCESS.search(text), text
    for text in ("a stop sign", "st.stop()", "stops the page", "this session's runs"):
        assert not PROCESS.search(text), text
