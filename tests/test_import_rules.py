"""The folder table in DESIGN.md: arrows point down and never up.

Checked on the source, every import (module level or lazy), so a shortcut taken inside a
function is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"modelops", "serving", "resources", "assets", "sensors", "jobs", "definitions", "demo"}
ALLOWED = {
    "modelops": {"modelops"},
    "serving": {"modelops", "serving"},
    "resources": {"modelops", "serving", "resources"},
    # One floor: assets, sensors and jobs import none of each other. What they share (fleet
    # schema, evidence windows, action vocabulary and run keys, the decision interface) is in
    # the core, and definitions.py hands the jobs to the sensor builders.
    "assets": {"modelops", "resources", "assets"},
    "jobs": {"modelops", "resources", "jobs"},
    "sensors": {"modelops", "resources", "sensors"},
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_folder_imports_only_what_the_design_allows(folder: str) -> None:
    bad = {
        str(p.relative_to(ROOT)): sorted(_imports(p) - ALLOWED[folder])
        for p in sorted((ROOT / folder).rglob("*.py"))
    }
    assert {k: v for k, v in bad.items() if v} == {}


# ---------------------------------------------------------------------- no import loop


def _module_files() -> dict[str, Path]:
    """Every module of ours by dotted name (a package by its name, from its __init__)."""
    out: dict[str, Path] = {}
    for top in sorted(OURS):
        paths = [ROOT / f"{top}.py"] if (ROOT / f"{top}.py").is_file() else []
        paths += sorted((ROOT / top).rglob("*.py")) if (ROOT / top).is_dir() else []
        for p in paths:
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _module_edges(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ours that `name` imports, at module level or lazily. An import under
    TYPE_CHECKING never runs, and a module's own parent packages are loaded before it anyway,
    so neither is an edge."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                subs = {f"{child.module}.{a.name}" for a in child.names}
                hits = subs & modules.keys()
                found.update(hits or {child.module})
                if hits != subs:
                    found.add(child.module)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return {m for m in found if m in modules and m != name and m not in ancestors}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_loop() -> None:
    """A loop, even one closed by a lazy import, means two modules hold one module's job."""
    modules = _module_files()
    graph = {n: _module_edges(n, p, modules) for n, p in modules.items()}
    assert _cycles(graph) == []


def test_the_loop_check_sees_a_lazy_loop() -> None:
    """The check itself: two modules that import each other, one of them lazily."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(graph) == [["a", "b"]]
    tree = "def f():\n    from modelops.evidence import WindowStats\n"
    p = ROOT / "tests" / "_loop_probe.py"
    try:
        p.write_text(tree)
        edges = _module_edges("demo.probe", p, {"modelops.evidence": p, "demo.probe": p})
    finally:
        p.unlink()
    assert edges == {"modelops.evidence"}


# ---------------------------------------------------------------------- public names


def _package_inits() -> list[Path]:
    return sorted(
        p
        for top in sorted(OURS)
        if (ROOT / top).is_dir()
        for p in (ROOT / top).rglob("__init__.py")
    )


def _bound_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = node.value
            assert isinstance(value, ast.List | ast.Tuple), "__all__ must be a literal list"
            return [ast.literal_eval(e) for e in value.elts]
    return None


@pytest.mark.parametrize("init", _package_inits(), ids=lambda p: str(p.relative_to(ROOT).parent))
def test_every_package_states_its_public_names(init: Path) -> None:
    tree = ast.parse(init.read_text(), str(init))
    declared = _declared_all(tree)
    assert declared is not None, f"{init.relative_to(ROOT)} has no __all__"
    assert sorted(set(declared) - _bound_names(tree)) == []
    assert len(declared) == len(set(declared))


@pytest.mark.parametrize("folder", ["assets", "jobs", "sensors"])
def test_dagster_floor_inits_only_reexport(folder: str) -> None:
    """The builders live in their own modules; an __init__ names what the package offers."""
    tree = ast.parse((ROOT / folder / "__init__.py").read_text())
    defined = [
        n.name
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    ]
    assert defined == []
