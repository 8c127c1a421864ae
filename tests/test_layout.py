"""The package's shape: no import cycle, layers import downwards only, no oversized module."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mtdense"
MAX_LINES = 700


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str], top_level_only: bool) -> set[str]:
    """mtdense modules ``path`` imports (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # imports for type checkers only never run
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in modules}
    return found


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    return {name: _imports(path, set(files), top_level_only) - {name} for name, path in files.items()}


def test_no_import_cycle_between_modules():
    """Counting imports inside functions too: a deferred import still ties two modules together."""
    graph = _graph(top_level_only=False)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            # a package importing its own submodules is how a package is assembled, not a cycle
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                if not all(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(cycle, cycle[1:])):
                    pytest.fail("import cycle: " + " -> ".join(cycle))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)


@pytest.mark.parametrize("layer, above", [
    ("mtdense.data", ("mtdense.inference", "mtdense.deploy", "mtdense.teachers", "mtdense.train", "mtdense.commands", "mtdense.outputs")),
    ("mtdense.models", ("mtdense.data", "mtdense.inference", "mtdense.deploy", "mtdense.teachers", "mtdense.train", "mtdense.commands")),
    ("mtdense.deploy", ("mtdense.inference", "mtdense.teachers", "mtdense.train", "mtdense.commands")),
])
def test_layers_import_downwards_only(layer, above):
    graph = _graph(top_level_only=False)
    wrong = sorted(f"{m} imports {d}" for m, deps in graph.items() if m == layer or m.startswith(layer + ".")
                   for d in deps if d.startswith(above))
    assert not wrong, wrong


def test_no_module_is_oversized():
    big = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"
