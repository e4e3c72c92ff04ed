"""No import circles in hud (its own modules and the capabilities and harnesses it installs).

The graph is read from the source: every import an interpreter can run (at module level, in a
class body, or inside a function), except those under ``if TYPE_CHECKING:``. An import inside a
function may close a circle only when a comment (on its line or the line above) gives the
reason: keeping ``hud`` and the CLI quick to start is one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"hud": ROOT / "hud", "hud.capabilities": ROOT / "capabilities",
            "hud.harnesses": ROOT / "harnesses"}

@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    lazy: bool
    commented: bool


def modules(packages: dict[str, Path]) -> dict[str, Path]:
    found = {}
    for prefix, folder in packages.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if prefix == "hud" and parts[0] in ("capabilities", "harnesses"):
                continue  # installed from the top-level folders (see pyproject.toml)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((prefix, *parts))] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[Edge]:
    """Every import in ``path`` that names a module of ``known``, resolved to that module."""
    lines = path.read_text().splitlines()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def walk(node: ast.AST, lazy: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                yield from walk(ast.Module(body=child.orelse, type_ignores=[]), lazy)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, lazy
            yield from walk(child, lazy or isinstance(child, ast.FunctionDef
                                                      | ast.AsyncFunctionDef))

    for node, lazy in walk(ast.parse(path.read_text()), False):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" for alias in node.names]
        above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
        commented = above.startswith("#") or any(
            "#" in line for line in lines[node.lineno - 1: node.end_lineno])
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield Edge(name, target, node.lineno, lazy, commented)


def circles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def all_edges(packages: dict[str, Path] = PACKAGES) -> list[Edge]:
    known = modules(packages)
    return [edge for name, path in known.items() for edge in imports(name, path, known)]


def counted(edges: list[Edge]) -> list[Edge]:
    """The edges a circle may not run through: all but commented lazy ones."""
    return [e for e in edges if not (e.lazy and e.commented)]


def test_the_check_finds_circles_and_excuses_only_commented_lazy_imports(
        tmp_path: Path) -> None:
    files = {
        "__init__.py": "",
        "a.py": "from . import b\n",
        "b.py": "def f():\n    from .a import x\n",  # lazy, no reason given: a circle
        "c.py": "import pkg.d\n",
        "d.py": "def f():\n    # lazy: keeps start-up fast\n    from . import c\n",
        "e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .f import F\n",
        "f.py": "from .e import x\n",
        "sub/__init__.py": "",
        "sub/g.py": "class G:\n    from ..a import y\n",
    }
    for name, text in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    edges = all_edges({"pkg": tmp_path / "pkg"})
    assert circles(counted(edges)) == [["pkg.a", "pkg.b"]]
    assert {(e.source, e.target) for e in edges} == {
        ("pkg.a", "pkg.b"), ("pkg.b", "pkg.a"), ("pkg.c", "pkg.d"), ("pkg.d", "pkg.c"),
        ("pkg.f", "pkg.e"), ("pkg.sub.g", "pkg.a")}


def test_no_import_circles_in_hud() -> None:
    edges = all_edges()
    found = circles(counted(edges))
    details = [
        f"{' <-> '.join(circle)}: "
        + "; ".join(f"{e.source} line {e.line} imports {e.target}" for e in counted(edges)
                    if e.source in circle and e.target in circle)
        for circle in found
    ]
    assert not found, "import circles (break them, or comment a lazy import):\n" + "\n".join(
        details)
