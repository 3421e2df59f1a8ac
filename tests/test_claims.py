"""Every sentence of the app, the notebooks and the README that states a result either agrees with the
committed measurements or is attributed to a paper. This scans the texts for the claims that the
committed results can check."""
import ast
import inspect
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
#: a sentence that says who found it ("X reports", "the seed's table"), not merely one that cites a paper
ATTRIBUTION = re.compile(r"\b(reports?|reported|finds|found|according to|the seed|seed's|the paper's|the survey's|"
                         r"the student project(?:'s)?)\b", re.I)
#: the documents that read the committed tables in words
RESULT_DOCS = [ROOT / "docs" / "findings.md", ROOT / "docs" / "benchmarks.md"]


def app_texts() -> list[tuple[str, str]]:
    """String literals of the app's pages (f-string parts included)."""
    out = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) > 20:
                out.append((str(path.relative_to(ROOT)), node.value))
    # adjacent literals are concatenated by the parser, so a sentence split over lines is one constant
    return out


def notebook_texts() -> list[tuple[str, str]]:
    out = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                out.append((nb.name, "".join(cell["source"])))
    return out


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n\n", text) if s.strip()]


ALL = app_texts() + notebook_texts() + [("README.md", (ROOT / "README.md").read_text())] \
    + [(str(p.relative_to(ROOT)), p.read_text()) for p in RESULT_DOCS]


def test_the_scan_sees_the_pages_and_notebooks():
    where = {w for w, _ in ALL}
    assert any(w.startswith("app/views/landscape") for w in where) and any(w.endswith(".ipynb") for w in where)


def test_landscape_claims_agree_with_the_committed_curvature():
    from binlab.probes.landscape import committed_curvature

    cv = committed_curvature("scratch")
    if cv is None:
        pytest.skip("no committed landscape bench")
    binary_sharper = cv["binary"] > cv["fp32"]
    wrong = re.compile(r"\b(flatter|smoother)\b" if binary_sharper else r"\b(steeper|sharper|more curved|more irregular)\b", re.I)
    bad = [(w, s) for w, t in ALL for s in sentences(t)
           if re.search(r"binar", s, re.I) and wrong.search(s) and not ATTRIBUTION.search(s)]
    assert not bad, f"unattributed landscape claims contradicted by {cv['file']}: {bad}"


def test_curvature_method_named_as_it_runs():
    from binlab.probes.landscape import curvature

    default = inspect.signature(curvature).parameters["method"].default
    other = "power iteration" if default == "lanczos" else "lanczos"
    bad = [(w, s) for w, t in app_texts() for s in sentences(t) if other in s.lower() and "eigen" in s.lower()]
    assert not bad, f"the pages name {other!r} but curvature() runs {default!r}: {bad}"


def _committed_numbers() -> set[str]:
    nums = set()
    for p in RESULTS.glob("*.json"):
        def walk(x):
            if isinstance(x, dict):
                for v in x.values():
                    walk(v)
            elif isinstance(x, list):
                for v in x:
                    walk(v)
            elif isinstance(x, (int, float)) and not isinstance(x, bool):
                for f in (x, 100 * x):
                    nums.update({f"{f:.2f}", f"{f:.1f}", f"{f:+.2f}"})
        walk(json.loads(p.read_text()))
    return nums


def test_readme_accuracies_are_committed_numbers():
    """Every 'NN.NN %' (and every signed '+-N.NN' point difference) in the README's results is in a committed file,
    or is attributed to the student project or a paper in the same sentence."""
    nums = _committed_numbers()
    text = (ROOT / "README.md").read_text()
    section = text.split("## Results", 1)[1].split("\n## ", 1)[0] if "## Results" in text else text
    section += "\n" + (ROOT / "docs" / "findings.md").read_text()
    bad = []
    for line in section.splitlines():
        for s in sentences(line):
            if ATTRIBUTION.search(s):
                continue
            for m in re.finditer(r"(?<![\d.])(\d{1,3}\.\d{2})\s*%", s):
                if m.group(1) not in nums:
                    bad.append((m.group(1), s[:120]))
    assert not bad, f"README numbers not found in docs/results/*.json: {bad}"


#: words that state an order, a "best" or a winner
ORDER = re.compile(r"\b(best|better|worse|ahead of|behind|beats?|outperforms?|outperformed|the same order|ranks?|ranked|"
                   r"cheapest|highest|lowest|strongest|weakest)\b", re.I)
#: phrases that decline to order (a sentence saying the intervals cannot separate two rows is fine)
DECLINES = re.compile(r"no measurable|cannot be told apart|not claimed|no ordering|within (?:the )?(?:test set's )?noise|ranks none|"
                      r"not ranked|rank nothing|is not decided|cannot separate|nor an order|does not support|do not support", re.I)
INTERVAL = re.compile(r"\[([+−-]?\d+\.\d+), ([+−-]?\d+\.\d+)\]")


#: a ratio with its interval ("×1.0139 [1.0131, 1.0147]", "x control 1.02 [...]"): no difference is 1, not 0
RATIO = re.compile(r"[×x]\s*(?:[a-z0-9]+\s+)?\d+\.\d+\s*$")


def _supports(s: str, m: re.Match) -> bool:
    """Whether the interval ``m`` in sentence ``s`` excludes no difference: 1 for a ratio, 0 for a difference."""
    lo, hi = (float(x.replace("−", "-")) for x in m.groups())
    if RATIO.search(s[max(0, m.start() - 30):m.start()]):
        return lo > 1 or hi < 1
    return lo > 0 or hi < 0


def test_a_ratio_interval_must_exclude_one():
    """The ordering check reads "×1.02 [0.99, 1.05]" as a ratio (holds 1: no support) and "+0.4 [0.1, 0.7]" as a difference."""
    held = "A is ahead of B (×1.02 [0.99, 1.05])."
    apart = "A is ahead of B (×1.02 [1.01, 1.05])."
    diff = "A is ahead of B (+0.40 [+0.10, +0.70])."
    assert [all(_supports(t, m) for m in INTERVAL.finditer(t)) for t in (held, apart, diff)] == [False, True, True]


def test_readme_and_findings_order_only_what_an_interval_supports():
    """A sentence of the README's results or docs/findings.md that orders rows ("best", "ahead of",
    "cheapest" ...) is attributed to a paper, or declines the order, or carries intervals that all
    exclude 0."""
    text = (ROOT / "README.md").read_text()
    docs = [("README.md", text.split("## Results", 1)[1].split("\n## ", 1)[0] if "## Results" in text else text),
            ("docs/findings.md", (ROOT / "docs" / "findings.md").read_text())]
    bad = []
    for where, t in docs:
        for s in sentences(t):
            if not ORDER.search(s) or ATTRIBUTION.search(s) or DECLINES.search(s):
                continue
            cis = list(INTERVAL.finditer(s))
            if not cis or not all(_supports(s, m) for m in cis):
                bad.append((where, s[:160]))
    assert not bad, f"orderings without an interval that supports them: {bad}"


def test_generated_findings_order_only_what_the_json_intervals_support():
    """Each committed table's finding is what the finding code writes from its JSON today; a table whose
    rows have one seed each orders nothing; and every "A > B" a finding states outside the survey's
    quoted order is backed by the rows' stored per-row results (interval of A - B above 0)."""
    from binlab.experiments.findings import FINDINGS, _short, finding_of, separated

    def row(rows, name):
        """A finding names a row by its label up to the colon, or (the survey's pairs) as 'method MODE'."""
        hits = [r for r in rows if r["label"].split(":")[0] == name] or [r for r in rows if r.get("survey") and _short(r) == name]
        assert len(hits) == 1, f"{name!r} names {len(hits)} rows"
        return hits[0]

    checked = 0
    for p in sorted(RESULTS.glob("T*.json")):
        payload = json.loads(p.read_text())
        if payload["experiment"] not in FINDINGS:
            continue
        finding = payload.get("finding") or ""
        assert finding == finding_of(payload), f"{p.name}: stale finding (run binlab experiments render)"
        qat = [r for r in payload["rows"] if r["mode"] == "qat"]
        one_seed = all(len(r.get("random_seeds") or [0]) < 2 for r in qat)
        for s in sentences(finding):
            if "quoted" in s:  # the survey's own order, attributed
                continue
            if one_seed:
                assert not ORDER.search(s) or DECLINES.search(s), f"{p.name}: a one-seed table orders rows: {s[:160]}"
            for a, b in re.findall(r"([\w\-() ]+?) > ([\w\-() ]+?)(?=[,;.)])", s):  # confirmed and reversed pairs included
                ra, rb = row(payload["rows"], a.rsplit("(", 1)[-1].strip()), row(payload["rows"], b.strip())
                assert separated(ra, rb) > 0, f"{p.name}: {a} > {b} without an interval above 0"
        checked += 1
    assert checked >= 4
