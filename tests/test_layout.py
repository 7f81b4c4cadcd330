"""The package's imports point one way: no module imports, directly or through others, itself.

Every import counts, at module level or inside a function (a lazy import still ties the two
modules together), except those under `if TYPE_CHECKING:`, which never run. `from scadles.a
import b` is an edge to `scadles.a.b` when b is a submodule, else to `scadles.a`.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Return every import statement of tree outside `if TYPE_CHECKING:` blocks."""
    out: list[ast.Import | ast.ImportFrom] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            out.append(node)
        elif not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)):
            out += _imports(node)
    return out


def import_graph() -> dict[str, set[str]]:
    """Return module -> the scadles modules it imports."""
    files = {_module_name(p): p for p in (SRC / "scadles").rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        for node in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]  # fmt: skip
            graph[mod] |= {t for t in targets if t in files and t != mod}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """Return one import cycle as a list of modules, or [] when there is none."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return [*stack[stack.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return []

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return []


def test_find_cycle_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 50 and graph["scadles.engine"]  # the parser sees the package
    assert find_cycle(graph) == []


def test_stages_do_not_import_the_layers_above_them() -> None:
    """The core never imports the runner, the CLI, the reports' renderers or reproduce."""
    graph = import_graph()
    above = ("scadles.training", "scadles.cli", "scadles.reproduce", "scadles.api")
    core = [m for m in graph if m.count(".") and m.split(".")[1] in {
        "engine", "exchange", "grads", "feeds", "compress", "data", "nn", "live", "clock",
        "timing", "comm", "policies", "aggregate"}]  # fmt: skip
    bad = [(m, n) for m in core for n in graph[m] if n.startswith(above)]
    assert core and bad == []
