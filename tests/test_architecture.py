"""The structure the codebase keeps: layers that only point down, no import circle, no private name
reached from another module, pages that never ask which task they show, the seed's numbers typed once.

Every import counts, function-local ones included (they are read from the source, not from what a
run happened to import).
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: binlab's layers, bottom first. A module may import from its own layer's unit (the same package or
#: module) and from any layer below; never from a layer above, and never from another unit of its own
#: layer (training and runtime do not know each other). docs/architecture.md says what each one is.
LAYERS = [
    ("binlab.seed", "binlab.bits", "binlab.progress", "binlab.data"),  # constants, progress bars, AG_NEWS and tokenizers
    ("binlab.methods",),  # everything a learner picks from a registry: weight methods, estimators, activation and attention quantizers
    ("binlab.nn",),  # the models, quantize_/QuantSpec, the objective, pretrained loading
    ("binlab.training", "binlab.runtime"),  # train/PTQ/QAT/calibration/recipes; kernels/codecs/packed modules/export/size
    ("binlab.probes",),  # loss landscape and Hessian
    ("binlab.presets",),  # a preset resolved once: data, model, cached baseline, QAT budget
    ("binlab.experiments",),  # catalog, rows, stats, store, sweep, reports
    ("binlab.lab",),  # what the app and notebooks call
    ("binlab.cli",),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules(*folders: str) -> dict[str, Path]:
    return {_module_name(p): p for f in folders for p in sorted((ROOT / f).rglob("*.py"))}


BINLAB = _modules("binlab")


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the file, local ones included;
    ``from pkg import submodule`` counts as importing the submodule."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = [a.name for a in node.names if f"{mod}.{a.name}" in BINLAB]
            plain = [a.name for a in node.names if f"{mod}.{a.name}" not in BINLAB]
            out += [(f"{mod}.{s}", [], node.lineno) for s in subs]
            if plain:
                out.append((mod, plain, node.lineno))
    return out


def _internal(mod: str) -> str | None:
    """The binlab module an import names (a name inside a module resolves to that module)."""
    while mod and mod not in BINLAB:
        mod = mod.rpartition(".")[0]
    return mod or None


def _layer(mod: str) -> tuple[int, str]:
    for i, units in enumerate(LAYERS):
        for u in units:
            if mod == u or mod.startswith(u + "."):
                return i, u
    raise AssertionError(f"{mod} is in no layer: add it to LAYERS (and to docs/architecture.md)")


def _graph() -> dict[str, set[str]]:
    g = {}
    for name, path in BINLAB.items():
        g[name] = {t for m, _, _ in _imports(name, path) if m.startswith("binlab") and (t := _internal(m)) and t != name}
    return g


def test_every_module_has_a_layer():
    for name in BINLAB:
        if name != "binlab":
            _layer(name)


def test_layers_only_point_down():
    bad = []
    for name, path in BINLAB.items():
        if name == "binlab":
            continue
        here, unit = _layer(name)
        for m, _, line in _imports(name, path):
            target = _internal(m) if m.startswith("binlab") else None
            if target is None or target == "binlab":
                continue
            there, other = _layer(target)
            if there > here or (there == here and other != unit):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target} ({other}, layer {there}; this is {unit}, layer {here})")
    assert not bad, "imports that point up or sideways:\n" + "\n".join(bad)


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    assert not _cycles(_graph())


def test_the_circle_check_finds_a_circle():
    """The check itself can fail: a planted two-module circle is found."""
    g = {k: set(v) for k, v in _graph().items()}
    g["binlab.data"].add("binlab.methods.base")
    g["binlab.methods.base"].add("binlab.data")
    assert ["binlab.data", "binlab.methods.base"] in _cycles(g)


def test_no_private_name_from_another_module():
    bad = []
    for name, path in _modules("binlab", "app", "bench").items():
        for m, names, line in _imports(name, path):
            if not (m.startswith("binlab") or m in ("common",)):
                continue
            bad += [f"{path.relative_to(ROOT)}:{line} takes {n} from {m}" for n in names if n.startswith("_") and n != "__version__"]
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_no_module_is_a_mere_re_export_and_none_is_long():
    assert not (ROOT / "binlab" / "binarizers.py").exists()
    long = {n: len(p.read_text().splitlines()) for n, p in BINLAB.items() if len(p.read_text().splitlines()) > 600}
    assert not long, f"modules over 600 lines (split them by concept): {long}"


def test_data_depends_on_nothing_of_binlab():
    code = "import sys, binlab.data; print(sorted(m for m in sys.modules if m.startswith('binlab.') and m != 'binlab.data'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_one_list_of_components():
    import torch

    from binlab.nn.model import ModelConfig, build, component_names
    from binlab.nn.quantize import QuantSpec, quantizable, quantize_

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


def _app_sources() -> dict[Path, str]:
    return {p: p.read_text() for p in sorted((ROOT / "app").rglob("*.py"))}


def test_pages_never_ask_which_task_they_show():
    """A page asks the core for a metric object or a capability (binlab.nn.metric), never for the task's name."""
    bad = []
    for path, src in _app_sources().items():
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Constant) and node.value in ("lm", "classify"):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} the task name {node.value!r}")
            if isinstance(node, ast.Compare) and any(isinstance(x, ast.Attribute) and x.attr in ("task", "name") and "task" in ast.unparse(x)
                                                     for x in [node.left, *node.comparators]):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "preset" \
                    and any(isinstance(c, ast.Constant) for c in node.comparators):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)} (a preset's settings belong in binlab/presets.py)")
    assert not bad, "task or preset branches in app/:\n" + "\n".join(bad)


def test_pages_name_no_method_outside_the_registry():
    """Method and recipe names reach a page from the registries (binlab.methods, binlab.training.recipes), never typed there."""
    from binlab.methods import BINARIZERS
    from binlab.training.recipes import RECIPES

    names = set(BINARIZERS) | set(RECIPES)
    bad = [f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}" for path, src in _app_sources().items()
           for node in ast.walk(ast.parse(src)) if isinstance(node, ast.Constant) and node.value in names]
    assert not bad, "method names typed in app/ (take them from the registry):\n" + "\n".join(bad)


@pytest.mark.parametrize("planted", ['x = "lm"\n', 'if lab.task == y:\n    pass\n', 'm = "xnor"\n', 'if preset == "tiny":\n    pass\n'])
def test_the_page_checks_find_what_they_forbid(planted, monkeypatch):
    """The two checks above can fail: each planted line in a page is found."""
    monkeypatch.setattr(sys.modules[__name__], "_app_sources", lambda: {ROOT / "app" / "planted.py": planted})
    with pytest.raises(AssertionError):
        test_pages_never_ask_which_task_they_show()
        test_pages_name_no_method_outside_the_registry()
