"""The modules of ``redaudit`` import each other one way: the intra-package import graph has no
cycle.

Every import counts, wherever it is written: at top level, inside a function (a lazy import for
start-up speed is fine, as long as it closes no circle), under ``if TYPE_CHECKING:``, and
``importlib.import_module("redaudit....")`` with a literal name. A lazy import that closes a
circle only hides it from the interpreter; the modules still depend on each other.

Edges: ``import a.b.c`` and ``from a.b import c`` (``c`` a submodule) point at ``a.b.c``;
``from a.b import name`` (``name`` defined in ``a/b/__init__.py``) points at the package ``a.b``.
The parent packages a dotted import also runs are not edges (every module would then depend on
``redaudit/__init__.py``, which is how Python packages work, not a knot).
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

PACKAGE = "redaudit"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file under the package (following the
    links that put ``cli/`` and ``migrations/`` inside it)."""
    modules: dict[str, Path] = {}
    files = (Path(folder) / name for folder, _, names in os.walk(root, followlinks=True) for name in names)
    for path in sorted(file for file in files if file.suffix == ".py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest module of the package that a dotted name names (None outside the package)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, modules: dict[str, Path]) -> set[str]:
    """The package modules that ``module`` imports anywhere in its source."""
    tree = ast.parse(modules[module].read_text(encoding="utf-8"), filename=str(modules[module]))
    package = module if _is_package(module, modules) else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (found := _resolve(alias.name, modules)) is not None:
                    targets.add(found)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source != PACKAGE and not source.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:
                    targets.add(submodule)
                elif (found := _resolve(source, modules)) is not None:
                    targets.add(found)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in {"import_module", "__import__"}))
              and (found := _resolve(node.args[0].value, modules)) is not None):
            targets.add(found)
    targets.discard(module)
    return targets


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imports_of(name, modules) for name in modules}


def knots(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative): the
    modules that import each other, directly or around a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
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
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle (first module repeated at the end) per knot."""
    return [_one_cycle(graph, set(component)) for component in knots(graph)]


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest cycle through the component's first module (breadth-first, inside it)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in its component")  # pragma: no cover


def test_the_package_imports_one_way():
    graph = import_graph()
    found = knots(graph)
    assert not found, "import cycles in redaudit/ (a circle, then every module caught in it):\n" + "\n".join(
        " -> ".join(_one_cycle(graph, set(knot))) + f"   [{', '.join(knot)}]" for knot in found)


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """The checker itself: cycles closed by a function-level import of a package's name, a
    TYPE_CHECKING import, a relative import and ``import_module`` are found; a submodule
    imported by name from its package points at the submodule, not at the package."""
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from redaudit.a import thing\n")
    (package / "a.py").write_text("def f():\n    from redaudit import version, __version__\n")
    (package / "version.py").write_text("")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import redaudit.sub.c\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "c.py").write_text("from .. import b\nfrom redaudit.sub import d\n")
    (package / "sub" / "d.py").write_text("import importlib\nimportlib.import_module('redaudit.sub.c')\n")
    (package / "e.py").write_text("import redaudit.version\nimport numpy\n")
    graph = import_graph(package)
    assert graph == {"redaudit": {"redaudit.a"}, "redaudit.a": {"redaudit", "redaudit.version"},
                     "redaudit.version": set(), "redaudit.b": {"redaudit.sub.c"}, "redaudit.sub": set(),
                     "redaudit.sub.c": {"redaudit.b", "redaudit.sub.d"}, "redaudit.sub.d": {"redaudit.sub.c"},
                     "redaudit.e": {"redaudit.version"}}
    assert sorted(cycles(graph)) == [["redaudit", "redaudit.a", "redaudit"],
                                     ["redaudit.b", "redaudit.sub.c", "redaudit.b"]]
    del graph["redaudit.a"]
    graph["redaudit.sub.c"] = set()
    graph["redaudit.a"] = {"redaudit.version"}
    assert cycles(graph) == []
