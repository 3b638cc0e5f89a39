"""The import rules of issue 15, checked on the source: layers only point down.

- No import circle anywhere in ``statekit/`` or in a plugin package: every import
  counts, at module level, inside functions and under ``TYPE_CHECKING``.
- The core imports nothing from the layers above it (trading, tiered, api, compat,
  cli, bench, testing); those register through hooks (``statekit_declare_registries``,
  ``statekit_open_tiered``) like any third-party plugin.
- Opening a store imports only the plugin that serves its scheme.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import statekit
from statekit import ConfigError, PluginHost

ROOT = Path(__file__).resolve().parents[1]
# The package facade (statekit/__init__.py) is not in it: it re-exports the trading
# layer's errors on first use (``from statekit import FencedOff``), importing nothing
# of the layer with the core.
CORE = {
    "statekit.backend",
    "statekit.store",
    "statekit.opening",
    "statekit.host",
    "statekit.registry",
    "statekit.hookspecs",
    "statekit.errors",
    "statekit.codec",
    "statekit.snapshots",
    "statekit.worker",
    "statekit.redact",
    "statekit.backends",
    "statekit.backends.memory",
    "statekit.backends.sqlite",
}
ABOVE = ("trading", "tiered", "api", "compat", "cli", "bench", "testing")


def _modules(package: Path) -> dict[str, Path]:
    found = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ``known`` that ``name`` imports, wherever the import is."""
    found: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.add(sub if sub in known else module)
    return {m for m in found if m in known and m != name}


def _graph(package: Path) -> dict[str, set[str]]:
    known = _modules(package)
    return {name: _imports(name, path, known) for name, path in known.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
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
                        circles.append(sorted(component))
    return circles


PACKAGES = [ROOT / "statekit", *sorted(ROOT.glob("plugins/*/statekit_*"))]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_no_import_circle(package: Path) -> None:
    assert _circles(_graph(package)) == []


def test_the_circle_finder_finds_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]


def test_importing_statekit_imports_no_layer_above_the_core() -> None:
    program = (
        "import sys, statekit; print(sorted(m for m in sys.modules if m.startswith('statekit')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    loaded = [m for m in json.loads(out.stdout.replace("'", '"')) if m.split(".")[1:2]]
    assert [m for m in loaded if m.split(".")[1] in ABOVE] == []


def test_the_core_imports_nothing_from_the_layers_above_it() -> None:
    graph = _graph(ROOT / "statekit")
    assert set(graph) >= CORE, sorted(CORE - set(graph))
    upward = {
        (module, target)
        for module in CORE
        for target in graph[module]
        if target.split(".")[1:2] and target.split(".")[1] in ABOVE
    }
    assert upward == set()


def _open_in_a_fresh_process(tmp_path: Path, url: str) -> dict[str, object]:
    program = f"""
import asyncio, json, sys
import statekit

async def main():
    before = set(sys.modules)
    store = await statekit.open({url!r})
    await store.aclose()
    print(json.dumps({{"modules": len(sys.modules), "by_open": len(set(sys.modules) - before),
                       "names": sorted(sys.modules)}}))

asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


def test_opening_sqlite_imports_no_plugin_and_no_layer_above_the_core(tmp_path: Path) -> None:
    seen = _open_in_a_fresh_process(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    names = seen["names"]
    assert isinstance(names, list)
    plugins = [n for n in names if n.startswith("statekit_")]
    # Loading settings reads the settings dialects (the legacy TRADING_STATE_* names,
    # statekit.compat.settings), found through their entry-point group, and nothing else.
    dialects = {ep.value.split(":")[0] for ep in entry_points(group="statekit.settings_dialects")}
    dialects |= {d.rsplit(".", 1)[0] for d in dialects}
    layers = [
        n
        for n in names
        if n.startswith("statekit.") and n.split(".")[1] in ABOVE and n not in dialects
    ]
    assert (plugins, layers) == ([], []), seen["modules"]
    print(f"statekit.open('sqlite:///x.db'): {seen['modules']} modules, {seen['by_open']} by open")


def test_opening_a_plugin_scheme_imports_only_that_plugin(tmp_path: Path) -> None:
    pytest.importorskip("statekit_file")
    seen = _open_in_a_fresh_process(tmp_path, f"file://{tmp_path / 'folder'}")
    names = seen["names"]
    assert isinstance(names, list)
    packages = {n.split(".")[0] for n in names if n.startswith("statekit_")}
    assert packages == {"statekit_file"}


@pytest.mark.asyncio
async def test_tiers_need_the_tiered_plugin_through_statekit_open_tiered(tmp_path: Path) -> None:
    """``statekit.open`` asks for tiers through the ``statekit_open_tiered`` hook; with the
    built-in ``tiered`` plugin blocked, asking for one is a ConfigError, a plain open works."""
    host = PluginHost(autoload=False, blocked=["tiered"])
    with pytest.raises(ConfigError, match="'tiered' plugin, which is blocked"):
        await statekit.open("memory://", host=host, cache=True)
    store = await statekit.open("memory://", host=host)
    await store.aclose()
    tiered = await statekit.open("memory://", host=PluginHost(autoload=False), cache=True)
    assert type(tiered.backend).__name__ == "TieredBackend"
    await tiered.aclose()


def test_layers_declare_their_registries_through_statekit_declare_registries() -> None:
    host = PluginHost(autoload=False)
    fields = [cls.field for cls in host.declared_registries()]
    assert fields == ["backends", "validators", "caches", "connectors", "reconcilers"]
    blocked = PluginHost(autoload=False, blocked=["trading"])
    assert [cls.field for cls in blocked.declared_registries()] == [
        "backends",
        "validators",
        "caches",
    ]
