"""Structure the codebase keeps: no import circle through data, one list of components, the seed's
numbers typed once."""
import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _relative_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out.add(node.module or "")
    return out


def test_data_depends_on_nothing_of_binlab_that_depends_on_it():
    # data -> pretrained -> model -> data was a circle; data now imports no other binlab module
    assert _relative_imports(ROOT / "binlab" / "data.py") == set()
    code = "import sys, binlab.data; print(sorted(m for m in sys.modules if m.startswith('binlab.') and m != 'binlab.data'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "binlab.model" not in out and "binlab.pretrained" not in out


def test_one_list_of_components():
    import torch

    from binlab.model import ModelConfig, build, component_names
    from binlab.quantize import QuantSpec, quantizable, quantize_

    torch.manual_seed(0)
    m = build(ModelConfig(vocab_size=30, max_len=8, d_model=8, n_heads=2, d_ff=16, n_layers=2))
    quantize_(m, QuantSpec.simple("QK", "fda"))  # FDA adds a training-only module with linears inside
    assert component_names(m) == list(quantizable(m))
    assert not any("train_aux" in n for n in component_names(m))


def test_the_seeds_numbers_are_typed_once():
    seed = ROOT / "binlab" / "seed.py"
    numbers = {f"{a}" for a, _, _ in __import__("binlab.seed", fromlist=["SEED"]).SEED.values()} | {"94.03", "71.03", "50.95"}
    bad = []
    for path in list((ROOT / "binlab").rglob("*.py")) + list((ROOT / "app").rglob("*.py")):
        if path == seed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, float) and f"{node.value}" in numbers:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value}")
    assert not bad, f"the seed's numbers belong in binlab/seed.py only: {bad}"
