"""Execute every course notebook top to bottom in fast mode, and keep logic out of notebooks."""
import ast
import os
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import make_ag_news_fixture

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
MAX_DEF_LINES = 8  # a widget callback may be a few lines; logic belongs in binlab


def test_there_is_a_notebook_per_lesson():
    from binlab.lab.lessons import LESSONS

    assert [p.name for p in NOTEBOOKS] == sorted(les.notebook for les in LESSONS.values())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_defines_no_core_logic(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and "Learning goals" in nb.cells[0].source
    assert "Exercises" in nb.cells[-1].source
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "import binlab" in code or "from binlab" in code
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            assert node.end_lineno - node.lineno + 1 <= MAX_DEF_LINES, f"{path.name}: {node.name} is too long for a notebook"
            assert not isinstance(node, ast.ClassDef), f"{path.name}: classes belong in binlab"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_outputs_come_from_the_code_they_show(path):
    """The course renders on GitHub: every notebook is committed with the outputs of a full run
    (``python -m binlab.lab.course notebooks/*.ipynb``) stamped with the fingerprint of its code cells,
    so an edit to a code cell without re-running fails here. Every code cell ran (in order, without an
    error), figures are pictures GitHub shows, and a cell that took over 20 s on the full run has its run
    time written in the markdown before it."""
    from binlab.lab import course

    nb = nbformat.read(path, as_version=4)
    stamp = nb.metadata.get("binlab")
    assert stamp, f"{path.name}: no committed outputs; run python -m binlab.lab.course {path.relative_to(NB_DIR.parent)}"
    assert stamp["code"] == course.code_fingerprint(nb), f"{path.name}: its outputs are older than its code; run it again"
    assert stamp["preset"] == "scratch" and "FAST=1: small data" not in "".join(str(o) for c in nb.cells for o in c.get("outputs", []))
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), f"{path.name}: not run top to bottom"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert sum(bool(c.outputs) for c in code) >= len(code) // 2, f"{path.name}: most cells show nothing"
    figures = [o for o in outputs if o["output_type"] == "display_data" and "text/html" in o.get("data", {})]
    assert not [f for f in figures if "plotly" in f["data"]["text/html"]], f"{path.name}: interactive figures (GitHub drops them); install kaleido"
    assert len(stamp["cell_seconds"]) == len(code)
    for i, (cell, sec) in enumerate(zip(code, stamp["cell_seconds"])):
        if sec > 20:
            before = nb.cells[nb.cells.index(cell) - 1]
            assert before.cell_type == "markdown" and ("minute" in before.source or "seconds" in before.source), (
                f"{path.name}: code cell {i + 1} took {sec:.0f} s and the text before it does not say how long it runs")


@pytest.fixture(scope="module")
def nb_env(tmp_path_factory):
    data = make_ag_news_fixture(tmp_path_factory.mktemp("nb_data"), n_train=1500, n_test=300)
    old = dict(os.environ)
    os.environ.update({"FAST": "1", "BINLAB_DATA": str(data), "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")})
    yield
    os.environ.clear()
    os.environ.update(old)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_fast_mode(path, nb_env):
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NB_DIR)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_execute_stamps_outputs_with_the_code_that_made_them(tmp_path, monkeypatch):
    """course.execute runs a notebook, keeps its outputs and stamps the fingerprint of its code cells, so
    outputs older than the code they show are detectable; it refuses FAST runs (the course's outputs
    come from the full presets)."""
    from binlab.lab import course

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("x = 6 * 7\nprint(x)"),
                nbformat.v4.new_code_cell("print('done')")]
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    monkeypatch.delenv("FAST", raising=False)
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    stamp = course.execute(path, timeout=120)
    ran = nbformat.read(path, as_version=4)
    assert ran.cells[1].outputs[0]["text"].strip() == "42"
    assert ran.metadata["binlab"] == stamp and stamp["code"] == course.code_fingerprint(ran) and len(stamp["cell_seconds"]) == 2
    ran.cells[2].source = "print('changed')"
    assert course.code_fingerprint(ran) != stamp["code"]  # an edit after the run shows
    monkeypatch.setenv("FAST", "1")
    with pytest.raises(ValueError, match="unset FAST"):
        course.execute(path)
