"""Every public class, function and method of the packages has a docstring (ARCHITECTURE.md convention 12)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("target", "scsi", "storage", "replication", "tools")


def _undocumented(path: Path) -> list[str]:
    missing: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                    and not child.name.startswith("_"):
                if ast.get_docstring(child) is None:
                    missing.append(f"{prefix}{child.name} (line {child.lineno})")
                if isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(path.read_text()), "")
    return missing


@pytest.mark.parametrize("package", PACKAGES)
def test_public_symbols_have_docstrings(package: str) -> None:
    found = {str(p.relative_to(REPO)): m for p in sorted((REPO / package).rglob("*.py")) if (m := _undocumented(p))}
    assert not found, found
