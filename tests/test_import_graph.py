"""The psr package's import graph has no cycles.

The graph is built from the source alone (no module is imported): every ``import`` and
``from ... import`` statement in every module counts, including those inside functions and
methods (a cycle hidden by a deferred import is still a cycle: the two modules cannot be
understood, tested or moved apart) and relative forms (``from . import x``, ``from ..y import z``).
Only imports under ``if TYPE_CHECKING:`` are left out, as they never run.

An edge goes to the module a statement names: ``from psr.a import b`` is an edge to ``psr.a.b``
when that is a module, else to ``psr.a`` (``b`` is then a name defined in ``psr/a/__init__.py``
or ``psr/a.py``). Parent packages that Python runs on the way (``psr/a/__init__.py`` for
``import psr.a.b``) are not edges of their own: a package's ``__init__`` re-exporting its
submodules is the usual layout, not a knot.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "psr"


def module_files(root: Path = PKG) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file under ``root`` (a package dir)."""
    mods = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node in ``tree`` at any depth, except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The psr modules that module ``name`` (source at ``path``) imports, anywhere in its body."""
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()

    def add(target: str) -> None:
        # the longest prefix of ``target`` that is a psr module (``import psr.a.b`` with no
        # psr/a/b.py would fail at run time; the nearest existing module is the honest edge)
        parts = target.split(".")
        while parts:
            cand = ".".join(parts)
            if cand in mods:
                if cand != name:
                    found.add(cand)
                return
            parts.pop()

    for node in _imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
            continue
        if node.level:
            # relative: level 1 is this module's package (the module itself when it is a package)
            base = name.split(".") if is_pkg else name.split(".")[:-1]
            if node.level > 1:
                base = base[: len(base) - (node.level - 1)]
            if not base:
                raise ValueError(f"{path}:{node.lineno}: relative import beyond the top package")
            base_name = ".".join(base + ([node.module] if node.module else []))
        else:
            base_name = node.module or ""
        for alias in node.names:
            sub = f"{base_name}.{alias.name}"
            add(sub if sub in mods else base_name)
    return found


def import_graph(root: Path = PKG) -> dict[str, set[str]]:
    mods = module_files(root)
    return {name: imported_modules(name, path, mods) for name, path in mods.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component with more than one module
    (a module importing itself is left out by ``imported_modules``). Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        v = stack.pop()
                        on_stack.discard(v)
                        comp.append(v)
                        if v == node:
                            break
                    if len(comp) > 1:
                        comps.append(sorted(comp))
    return [_cycle_in(graph, set(comp)) for comp in comps]


def _cycle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first back to it)."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & comp):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, start]
                if nxt not in prev:
                    prev[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    raise AssertionError(f"no cycle through {start} in {sorted(comp)}")


def test_psr_import_graph_has_no_cycles():
    graph = import_graph()
    assert "psr.grader.extract" in graph and "psr.arith.checker" in graph  # the walk found modules
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in psr:\n" + "\n".join(" -> ".join(c) for c in cycles)


# -- the checker itself: it must see what it claims to see ---------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "pkg"


def test_finds_cycle_hidden_in_a_function(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import f\n",
        "pkg/b.py": "def f():\n    from pkg import a\n    return a\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg.b"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_finds_relative_and_three_module_cycles(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "from . import x\n",
        "pkg/sub/x.py": "from ..y import g\n",
        "pkg/y.py": "class C:\n    def m(self):\n        import pkg.sub.z\n",
        "pkg/sub/z.py": "from .x import *\n",
        "pkg/ok.py": "import os\nfrom pkg.sub import x\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg.sub"] == {"pkg.sub.x"}
    assert graph["pkg.sub.x"] == {"pkg.y"}
    assert graph["pkg.y"] == {"pkg.sub.z"}
    assert graph["pkg.ok"] == {"pkg.sub.x"}
    assert find_cycles(graph) == [["pkg.sub.x", "pkg.y", "pkg.sub.z", "pkg.sub.x"]]


def test_type_checking_imports_and_acyclic_graphs_pass(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.a import A\n",
        "pkg/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\nA = 1\n",
        "pkg/b.py": "from pkg import a\nB = 2\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg.a"] == set()
    assert find_cycles(graph) == []


def test_relative_import_beyond_the_top_is_an_error(tmp_path):
    pkg = _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from ... import x\n"})
    with pytest.raises(ValueError, match=r"a\.py:1: relative import beyond"):
        import_graph(pkg)
