"""No import cycle between the modules of the packages (issue 13; ARCHITECTURE.md's import direction).

A cycle is what forced bottom-of-file imports between scsi/device_server.py and the command
modules.  The graph is read from the source (every ``import`` statement that runs: module level and
inside functions), leaving out imports under ``if TYPE_CHECKING:`` — they never run, and exist for
annotations whose types refer to each other (a command table's handlers take a context that names
the table).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("target", "scsi", "storage", "replication", "tools")


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def runtime_imports(source: str) -> set[str]:
    """``sanlab.*`` modules a module's source imports when it runs."""
    found: set[str] = set()

    def walk(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node):
                walk(node.orelse)
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sanlab."):
                if node.module.count(".") == 1:  # from sanlab.scsi import sbc, spc
                    found.update(f"{node.module}.{alias.name}" for alias in node.names)
                else:
                    found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("sanlab."))
            walk([c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)])
            for handler in getattr(node, "handlers", []):
                walk(handler.body)

    walk(ast.parse(source).body)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module → the modules of these packages it imports at run time."""
    graph = {f"sanlab.{pkg}.{f.stem}": runtime_imports(f.read_text())
             for pkg in PACKAGES for f in sorted((root / pkg).glob("*.py"))}
    return {mod: {d for d in deps if d in graph} for mod, deps in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_a_cycle() -> None:
    graph = {"sanlab.scsi.a": runtime_imports("from sanlab.scsi import b\n"),
             "sanlab.scsi.b": runtime_imports("def f() -> None:\n    from sanlab.scsi.a import x\n"),
             "sanlab.scsi.c": runtime_imports("if TYPE_CHECKING:\n    from sanlab.scsi.a import y\n")}
    assert cycles(graph) == [["sanlab.scsi.a", "sanlab.scsi.b"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    graph = import_graph()
    assert any(mod.startswith(f"sanlab.{package}.") for mod in graph) or package == "replication"
    assert [c for c in cycles(graph) if any(m.startswith(f"sanlab.{package}.") for m in c)] == []
