"""The house: edge_runtime arranged by role, with no import circle.

The import graph is built with `ast` from every import statement of every module of
edge_runtime: those at module level AND those inside functions (a deferred import is still a
dependency: today's circle cli -> server -> service -> cli closed through one), except those under
`if TYPE_CHECKING:` (never run). An import of a package counts as an edge to its `__init__`, not to
every module inside it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.procs import REPO

PKG = REPO / "edge_runtime"
SERVE = {"server", "service", "startup", "uploads", "recent", "metrics", "watch", "options"}
DEVICE = {"doctor", "targets", "memory", "bench"}
RECORDS = {"DEFAULT_TOP_K", "prediction_record", "format_prediction"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(pkg: Path = PKG) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(pkg.rglob("*.py")) if "__pycache__" not in p.parts}


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` that module `name` imports (anywhere in it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m in modules and m != name}


def _graph(pkg: Path = PKG) -> dict[str, set[str]]:
    modules = _modules(pkg)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_graph_sees_the_imports():
    """The graph is not empty by accident: known edges are in it, deferred ones included."""
    graph = _graph()
    assert "edge_runtime.cli" in graph["edge_runtime.__main__"]
    assert "edge_runtime.classifier" in graph["edge_runtime.device.bench"]
    # service imports the watcher inside a method: a deferred import is an edge too
    assert "edge_runtime.serve.watch" in graph["edge_runtime.serve.service"]
    assert "edge_runtime.records" in graph["edge_runtime.serve.service"]


def test_no_import_cycle_in_edge_runtime():
    assert _cycles(_graph()) == []


def test_no_import_cycle_in_edgeship():
    """The desktop package too: its stages, and deploy's targets, import without a circle."""
    graph = _graph(REPO / "edgeship")
    assert "edgeship.deploy.pi.bundle" in graph["edgeship.deploy.cli"]
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    """The finder itself: a three-module circle like the one this layout opened."""
    graph = {"cli": {"server"}, "server": {"service"}, "service": {"cli"}, "errors": set()}
    assert _cycles(graph) == [["cli", "server", "service"]]


def test_cli_is_imported_only_by_main():
    """Inside edge_runtime only `__main__` imports `cli` (the desktop's edgeship may use it)."""
    importers = {name for name, deps in _graph().items() if "edge_runtime.cli" in deps}
    assert importers == {"edge_runtime.__main__"}


def test_edge_runtime_is_arranged_by_role():
    for sub, expected in (("serve", SERVE), ("device", DEVICE)):
        folder = PKG / sub
        assert (folder / "__init__.py").is_file(), f"{folder} is not a package"
        present = {p.stem for p in folder.glob("*.py")} - {"__init__"}
        assert expected <= present, f"missing in {sub}/: {sorted(expected - present)}"
    assert (PKG / "serve" / "page.html").is_file()
    top = {p.stem for p in PKG.glob("*.py")}
    assert not top & (SERVE - {"options"} | DEVICE | {"serve_options"}), "left at the top level"
    assert not (PKG / "page.html").exists()


def test_records_live_in_the_core():
    """The prediction record is a core module's: cli and the service both take it from there."""
    tree = ast.parse((PKG / "records.py").read_text(encoding="utf-8"))
    defined = {getattr(n, "name", None) for n in tree.body} | {
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
    }
    assert defined >= RECORDS
    graph = _graph()
    assert "edge_runtime.records" in graph["edge_runtime.cli"]
    upward = ("edge_runtime.serve", "edge_runtime.device", "edge_runtime.cli")
    assert not {d for d in graph["edge_runtime.records"] if d.startswith(upward)}
