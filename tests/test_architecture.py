"""The direction of dependencies in the workspace, checked on the source itself.

plugins and examples  ──►  plugin-sdk  ◄──  kernel

A plugin that imports the kernel, an SDK module that imports the kernel, or a kernel module that
imports a plugin by name would quietly break the promise that plugins are installable on their
own and that built-ins have no back door.

Inside the kernel, the rooms stand on floors (``KERNEL_FLOORS``) and a room imports only rooms on
lower floors; no modules of the kernel or the SDK import each other in a loop, type-only imports
included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_SOURCES = sorted(ROOT.glob("plugins/*/src")) + sorted(ROOT.glob("examples/*/src"))
PLUGIN_DISTRIBUTIONS = sorted(p.parent for p in ROOT.glob("plugins/*/pyproject.toml")) + sorted(
    p.parent for p in ROOT.glob("examples/*/pyproject.toml")
)


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def top_package(module: str) -> str:
    return module.split(".", 1)[0]


def python_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.py") if "gen" not in path.parts)


def violations(folder: Path, forbidden: set[str] | None, allowed_prefix: str = "") -> list[str]:
    found = []
    for path in python_files(folder):
        for line, module in imported_modules(path):
            package = top_package(module)
            bad = package in forbidden if forbidden is not None else False
            if allowed_prefix and package.startswith(allowed_prefix) and package != "pyspire_sdk":
                bad = True
            if bad:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


def plugin_packages() -> set[str]:
    return {
        package.name
        for source in PLUGIN_SOURCES
        for package in source.iterdir()
        if package.is_dir() and (package / "__init__.py").exists()
    }


@pytest.mark.parametrize("distribution", PLUGIN_DISTRIBUTIONS, ids=lambda p: p.name)
def test_plugins_import_only_the_sdk_never_the_kernel(distribution: Path) -> None:
    """Every Python file of a plugin distribution (its code, its tests, its benchmarks), since a
    plugin's tests and benchmarks must run where only the SDK is installed."""
    assert violations(distribution, {"pyspire"}) == []


def test_sdk_does_not_import_the_kernel_or_a_plugin() -> None:
    forbidden = {"pyspire", *plugin_packages()}
    assert violations(ROOT / "plugin-sdk" / "src", forbidden) == []


def test_kernel_imports_no_plugin_by_name() -> None:
    assert violations(ROOT / "kernel" / "src", plugin_packages()) == []


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    """The scanner itself must catch an offending import, or the tests above prove nothing."""
    offending = tmp_path / "pkg" / "mod.py"
    offending.parent.mkdir()
    offending.write_text("import os\nfrom pyspire.catalog import discover\n")
    found = [module for _, module in imported_modules(offending)]
    assert "pyspire.catalog" in found
    assert top_package("pyspire.catalog") == "pyspire"


@pytest.mark.parametrize("source", PLUGIN_SOURCES, ids=lambda p: p.parent.name)
def test_plugin_distribution_declares_only_the_sdk_from_this_workspace(source: Path) -> None:
    import tomllib

    project = tomllib.loads((source.parent / "pyproject.toml").read_text())["project"]
    workspace = [dep for dep in project.get("dependencies", []) if dep.startswith("pyspire")]
    assert all(dep.startswith("pyspire-plugin-sdk") for dep in workspace), workspace
    entry_points = project.get("entry-points", {}).get("pyspire.plugins", {})
    assert entry_points, "a plugin must declare an entry point in group 'pyspire.plugins'"


# The kernel's rooms stand on floors, ground first: a room imports only rooms on lower floors
# (and the SDK), so that each can be read, tested and changed knowing only what stands below
# it. Rooms on one floor do not import each other. A new room needs a floor here.
KERNEL_FLOORS: tuple[frozenset[str], ...] = (
    frozenset({"tasks", "waiting", "collector", "telemetry", "catalog", "proto", "der"}),
    frozenset({"ca", "registry", "transport"}),
    frozenset({"config"}),
    frozenset({"agent"}),
    frozenset({"server"}),
    frozenset({"cli"}),
)
KERNEL_SOURCE = ROOT / "kernel" / "src"
SDK_SOURCE = ROOT / "plugin-sdk" / "src"


def _module_name(source: Path, path: Path) -> str:
    parts = list(path.relative_to(source).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(*sources: Path) -> dict[str, Path]:
    """Every module of ``sources`` (generated code included), by dotted name."""
    return {_module_name(source, path): path for source in sources for path in source.rglob("*.py")}


def _imports(name: str, path: Path, tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, dotted name) for everything ``tree`` imports, anywhere in the file (a function's
    body, ``if TYPE_CHECKING:``); ``from a import b`` gives both ``a`` and ``a.b``, and a
    relative import is made absolute."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """For each module, the modules of ``modules`` it imports, each with the first line that
    does (a name imported from a package counts as that package, unless it is a module)."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, imported in _imports(name, path, tree):
            target = imported
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The sets of modules that import each other in a loop (strongly connected components of
    more than one module), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def kernel_room(module: str) -> str | None:
    """The room of a kernel module: ``pyspire.ca.manager`` is in ``ca``, ``pyspire.tasks`` is a
    room of its own; None outside the kernel."""
    parts = module.split(".")
    return parts[1] if parts[0] == "pyspire" and len(parts) > 1 else None


def arrows_up(graph: dict[str, dict[str, int]], floors: tuple[frozenset[str], ...]) -> list[str]:
    """Each import from one kernel room to another on the same floor or a higher one."""
    floor_of = {room: number for number, rooms in enumerate(floors) for room in rooms}
    found = []
    for module, edges in sorted(graph.items()):
        room = kernel_room(module)
        if room is None:
            continue
        for target, line in sorted(edges.items()):
            other = kernel_room(target)
            if other is None or other == room:
                continue
            if room not in floor_of or other not in floor_of:
                found.append(f"{module}:{line} imports {target}: a room without a floor")
            elif floor_of[other] >= floor_of[room]:
                found.append(
                    f"{module}:{line} imports {target}: {room} (floor {floor_of[room] + 1}) "
                    f"imports {other} (floor {floor_of[other] + 1})"
                )
    return found


def test_kernel_rooms_import_only_lower_floors() -> None:
    graph = import_graph(_modules(KERNEL_SOURCE))
    assert arrows_up(graph, KERNEL_FLOORS) == []


def test_every_kernel_room_has_a_floor() -> None:
    rooms = {path.stem for path in (KERNEL_SOURCE / "pyspire").iterdir()}
    rooms -= {"__init__", "py", "__pycache__"}
    assert rooms == set().union(*KERNEL_FLOORS)


def test_no_import_circle_in_the_kernel_or_the_sdk() -> None:
    """Type-only imports count: a circle that only ``if TYPE_CHECKING:`` hides is still one
    fact defined above what uses it."""
    assert circles(import_graph(_modules(KERNEL_SOURCE, SDK_SOURCE))) == []


def test_the_layering_checks_see_an_arrow_up_and_a_circle(tmp_path: Path) -> None:
    package = tmp_path / "pyspire"
    (package / "telemetry").mkdir(parents=True)
    (package / "transport").mkdir()
    (package / "__init__.py").write_text("")
    (package / "telemetry" / "__init__.py").write_text("")
    (package / "transport" / "__init__.py").write_text("")
    (package / "telemetry" / "audit.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from pyspire.transport import peer\n"
    )
    (package / "transport" / "peer.py").write_text("from ..telemetry.audit import AuditLog\n")
    graph = import_graph(_modules(tmp_path))
    assert graph["pyspire.telemetry.audit"] == {"pyspire.transport": 3, "pyspire.transport.peer": 3}
    assert graph["pyspire.transport.peer"] == {"pyspire.telemetry.audit": 1}
    floors = (frozenset({"telemetry"}), frozenset({"transport"}))
    found = arrows_up(graph, floors)
    assert (
        "pyspire.telemetry.audit:3 imports pyspire.transport.peer: telemetry (floor 1) imports "
        "transport (floor 2)"
    ) in found
    assert not any(arrow.startswith("pyspire.transport.peer") for arrow in found)
    assert circles(graph) == [["pyspire.telemetry.audit", "pyspire.transport.peer"]]
    assert arrows_up(graph, (frozenset({"telemetry", "transport"}),)) != []
    assert arrows_up(graph, (frozenset({"telemetry"}),)) != []
