"""The layers: monitor's packages import one another without cycles, and the pure core
(``monitor.domain``, ``monitor.risk``) imports no adapter, no I/O library and reads no file.

Read from the source with ``ast``, so an import inside a function or under
``TYPE_CHECKING`` counts as much as one at the top.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "monitor"

PURE_MAY_IMPORT = {
    "domain": ("monitor.domain", "monitor.errors"),
    "risk": ("monitor.domain", "monitor.errors", "monitor.risk"),
}
"""What of monitor each pure package may import: the core below it, and the error tree."""

IO_MODULES = frozenset(
    {
        "aiohttp", "apscheduler", "asyncio", "asyncpg", "http", "importlib", "io", "json",
        "logging", "orjson", "os", "pathlib", "prometheus_client", "shutil", "socket",
        "sqlalchemy", "sqlite3", "subprocess", "sys", "tempfile", "time", "urllib", "yaml",
    }
)  # fmt: skip
"""Libraries that do I/O, read the environment or the clock, or decode files: none of them
belongs in the pure core, which is handed decoded values and ``now``."""

FILE_METHODS = frozenset({"open", "read_text", "read_bytes", "write_text", "write_bytes"})


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                yield node.lineno, ".".join([*base, *([node.module] if node.module else [])])
            elif node.module is not None:
                yield node.lineno, node.module


def layer(module: str) -> str | None:
    """``monitor.risk.rules`` -> ``risk``; ``monitor.poller`` -> ``poller``; None outside."""
    parts = module.split(".")
    return parts[1] if parts[0] == "monitor" and len(parts) > 1 else None


def layer_graph() -> dict[str, dict[str, list[str]]]:
    """layer -> imported layer -> where (``path:line``)."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = layer(module_name(path))
        if source is None:
            continue
        for line, name in imports(path):
            target = layer(name)
            if target is not None and target != source:
                where = f"{path.relative_to(PACKAGE.parent)}:{line}"
                graph.setdefault(source, {}).setdefault(target, []).append(where)
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components with more than one layer (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in graph.get(node, {}):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
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


def test_cycles_finds_a_cycle_between_two_layers() -> None:
    graph = {"risk": {"config": ["a"]}, "config": {"risk": ["b"], "domain": ["c"]}}
    assert cycles(graph) == [["config", "risk"]]
    assert cycles({"config": {"risk": ["b"]}}) == []


def test_the_layers_of_monitor_import_one_another_without_cycles() -> None:
    graph = layer_graph()
    assert {"risk", "config", "daemon"} <= graph.keys()  # the scan did see the package
    explained = [
        f"{a} -> {b} ({', '.join(graph[a][b])})"
        for component in cycles(graph)
        for a in component
        for b in component
        if b in graph.get(a, {})
    ]
    assert explained == []


@pytest.mark.parametrize("package", sorted(PURE_MAY_IMPORT))
def test_the_pure_core_imports_no_adapter_and_no_io_library(package: str) -> None:
    allowed = PURE_MAY_IMPORT[package]
    offending = []
    files = sorted((PACKAGE / package).glob("*.py"))
    for path in files:
        for line, name in imports(path):
            inside = name == "monitor" or name.startswith("monitor.")
            permitted = any(name == a or name.startswith(f"{a}.") for a in allowed)
            if (inside and not permitted) or name.split(".")[0] in IO_MODULES:
                offending.append(f"{path.name}:{line}: {name}")
    assert files
    assert offending == []


@pytest.mark.parametrize("package", sorted(PURE_MAY_IMPORT))
def test_the_pure_core_opens_no_file(package: str) -> None:
    offending = []
    for path in sorted((PACKAGE / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in FILE_METHODS:
                offending.append(f"{path.name}:{node.lineno}: {name}()")
    assert offending == []
