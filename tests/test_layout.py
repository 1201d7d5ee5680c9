"""The package's floors (README, "Layout"): no module imports a floor above its own, and no module imports
a private (``_name``) object of another module. Walks every ``import`` in ``graphneg/``, including the
lazy ones inside functions, with :mod:`ast` (nothing is imported to check it)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "graphneg"

#: floor of each top-level name under ``graphneg`` (the README's layout section draws the same floors)
FLOORS = {
    # ground: the batch graph and small ops that know only torch / PyG
    "graph": 0, "ops": 0, "validation": 0, "precision": 0, "distributed": 0, "progress": 0,
    # layers, samplers, evaluation
    "nn": 1, "sampling": 1, "metrics": 1,
    # losses and data
    "losses": 2, "data": 2,
    # LightningModules and Lightning side jobs
    "models": 3, "callbacks": 3, "checkpoint": 3, "runs": 3,
    # the command line, the package's own __init__
    "cli": 4, "__init__": 4,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _floor(module: str) -> int:
    parts = module.split(".")
    if parts == ["graphneg"]:
        return FLOORS["__init__"]
    top = parts[1]
    if top not in FLOORS:
        raise AssertionError(f"graphneg.{top} has no floor in tests/test_layout.py FLOORS: add it (and to the README)")
    return FLOORS[top]


def _imports(path: Path):
    """``(line, imported module, imported names)`` of every graphneg import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("graphneg"):
                    yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([mod] if mod else []))
            if mod.startswith("graphneg"):
                yield node.lineno, mod, [a.name for a in node.names]


def _all_files():
    return sorted(PACKAGE.rglob("*.py"))


def test_walker_sees_the_imports_it_should():
    # the walker itself, on a file whose imports are known: graph.py imports the kNN kernel and validation
    found = {mod for _, mod, _ in _imports(PACKAGE / "graph.py")}
    assert {"graphneg.ops.knn", "graphneg.validation"} <= found
    assert _floor("graphneg.nn.gca_gnn") == 1 and _floor("graphneg.models.metric") == 3


@pytest.mark.parametrize("path", _all_files(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_upward_import_and_no_private_name(path):
    me = _module_name(path)
    my_floor = _floor(me)
    problems = []
    for line, mod, names in _imports(path):
        if _floor(mod) > my_floor:
            problems.append(f"line {line}: {me} (floor {my_floor}) imports {mod} (floor {_floor(mod)})")
        if mod != me:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                problems.append(f"line {line}: {me} imports private {private} from {mod}")
    assert not problems, "\n".join(problems)
