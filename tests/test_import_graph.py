"""The package's import structure, read from the source with ``ast`` (nothing is imported).

Stages are thin peers over the library: a stage module never imports another stage, the library
(everything outside ``stages/``, ``cli.py`` and ``__main__.py``) never imports a stage or the CLI,
and the project's module-level imports form no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "wafersage"
#: Entry points: the only modules outside ``stages/`` allowed to import stages or the CLI.
ENTRY_POINTS = ("wafersage.cli", "wafersage.__main__")


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """``{dotted name: file}`` of every module under ``package`` (a package is its ``__init__``)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _absolute(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    base = name.split(".") if is_package else name.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, path: Path, known: dict[str, Path], top_level_only: bool = False) -> set[str]:
    """The project modules ``name`` imports (``from pkg import mod`` counts as importing ``mod``);
    with ``top_level_only``, only the statements run at import time of the module body."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, name, path.name == "__init__.py") if node.level else node.module
            # ``from pkg import mod`` imports ``mod``; ``from mod import obj`` imports ``mod``
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            # the longest known module the dotted name starts with
            parts = target.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts:
                out.add(".".join(parts))
    out.discard(name)
    return out


def _is_stage(name: str) -> bool:
    return name.startswith("wafersage.stages.")


def stage_peer_imports(package: Path = PACKAGE) -> list[str]:
    """``"a -> b"`` for every stage module ``a`` that imports another stage module ``b``."""
    known = modules(package)
    return sorted(
        f"{m} -> {t}"
        for m, path in known.items()
        if _is_stage(m)
        for t in imports(m, path, known)
        if _is_stage(t)
    )


def library_stage_imports(package: Path = PACKAGE) -> list[str]:
    """``"a -> b"`` for every library module ``a`` that imports a stage or the CLI."""
    known = modules(package)
    return sorted(
        f"{m} -> {t}"
        for m, path in known.items()
        if m not in ENTRY_POINTS and m != "wafersage.stages" and not _is_stage(m)
        for t in imports(m, path, known)
        if t == "wafersage.stages" or _is_stage(t) or t == "wafersage.cli"
    )


def import_cycles(package: Path = PACKAGE) -> list[list[str]]:
    """The strongly connected components (more than one module) of the module-level import graph.

    Importing ``a.b.c`` runs ``a`` and ``a.b`` first, so a module also depends on its parent
    packages."""
    known = modules(package)
    graph: dict[str, set[str]] = {}
    for m, path in known.items():
        deps = imports(m, path, known, top_level_only=True)
        for d in list(deps):
            parts = d.split(".")
            deps |= {".".join(parts[:i]) for i in range(1, len(parts))} & set(known)
        deps -= {m} | {".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)}
        graph[m] = deps
    # Tarjan's algorithm, iterative
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
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
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_the_package_is_found():
    known = modules()
    assert "wafersage.cli" in known and "wafersage.stages.sft" in known


def test_no_stage_imports_another_stage():
    assert stage_peer_imports() == []


def test_the_library_imports_no_stage_and_not_the_cli():
    assert library_stage_imports() == []


def test_module_level_imports_have_no_cycle():
    assert import_cycles() == []


def test_the_checks_see_violations(tmp_path):
    pkg = tmp_path / "wafersage"
    (pkg / "stages").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("from wafersage.stages import a\n")
    (pkg / "stages" / "__init__.py").write_text("")
    (pkg / "stages" / "a.py").write_text("def f():\n    from wafersage.stages.b import g\n")
    (pkg / "stages" / "b.py").write_text("from wafersage import lib\n")
    (pkg / "lib.py").write_text("import wafersage.other\n\ndef h():\n    from wafersage.stages import b\n")
    (pkg / "other.py").write_text("from . import lib\n")
    assert stage_peer_imports(pkg) == ["wafersage.stages.a -> wafersage.stages.b"]
    assert library_stage_imports(pkg) == ["wafersage.lib -> wafersage.stages.b"]
    assert import_cycles(pkg) == [["wafersage.lib", "wafersage.other"]]
