"""Which benchmarks exist and how to run one: the built-ins and the plugins' entry points.

Built-in benchmarks are named here as ``module:function`` inside this package and
imported only when they run, so ``import statekit.bench`` (what a plugin's benchmark
does for the harness) loads neither the trading layer nor the API, and no module of
the package imports the table that imports it. A plugin adds its benchmark in the
entry-point group :data:`ENTRY_POINT_GROUP`, e.g. in its pyproject::

    [project.entry-points."statekit.bench"]
    postgresql = "statekit_postgres.bench:bench"
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from importlib import import_module, metadata
from pathlib import Path

from statekit.bench.harness import BenchConfig, BenchRunner, Result
from statekit.errors import StatekitError

__all__ = ["BACKENDS", "COMMANDS", "ENTRY_POINT_GROUP", "command", "names", "run", "runner"]


def _builtin(target: str) -> BenchRunner:
    """The benchmark ``module:function`` of this package, imported when it is called."""
    module, function = target.split(":")

    def start(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
        found: BenchRunner = getattr(import_module(f"{__package__}.{module}"), function)
        return found(config, scratch)

    start.__qualname__ = start.__name__ = function
    start.__doc__ = f"``statekit.bench.{module}.{function}``, imported when it runs."
    return start


BACKENDS: dict[str, BenchRunner] = {
    "sqlite": _builtin("sqlite:bench_sqlite"),
    # The read cache in front of PostgreSQL (needs the postgres server).
    "tiered": _builtin("tiered:bench_tiered"),
    # The statekit.compat drop-in beside the legacy JSON file.
    "legacy": _builtin("legacy:bench_legacy"),
    "events": _builtin("events:bench_events"),
    "locks": _builtin("locks:bench_locks"),
    # statekit.api needs the api extra (fastapi): imported only when this one runs.
    "api": _builtin("api:bench_api"),
    # Time travel against history length, on the store of --url (default SQLite).
    "history": _builtin("history:bench_history"),
    # How fast a fallback journal drains into the primary of --url (default SQLite).
    "replay": _builtin("replay:bench_replay"),
    # The reconciliation engine and the paper exchange.
    "reconcile": _builtin("reconcile:bench_reconcile"),
    # statekit beside the eventsourcing library (the bench-peers extra), SQLite or --url.
    "peers": _builtin("peers:bench_peers"),
    # Sharded reconcilers in 1, 2, 4 processes against one store (--url, default SQLite).
    "shards": _builtin("shards:bench_shards"),
    # Many bot processes, in namespaces of their own and in one shared, on --url.
    "bots": _builtin("bots:bench_bots"),
}
"""Built-in backend name -> its benchmark."""

COMMANDS: dict[str, str] = {"shards": "shards:main"}
"""Built-in benchmarks with a command line of their own: ``python -m statekit.bench
<name> ...`` hands the rest of the line to this ``module:function`` (``argv -> status``)."""


def command(name: str) -> Callable[[Sequence[str]], int]:
    """The command line of the benchmark ``name`` of :data:`COMMANDS`, imported now."""
    module, function = COMMANDS[name].split(":")
    found: Callable[[Sequence[str]], int] = getattr(
        import_module(f"{__package__}.{module}"), function
    )
    return found


ENTRY_POINT_GROUP = "statekit.bench"
"""Plugins add their benchmark in this entry-point group, e.g.
``postgresql = "statekit_postgres.bench:bench"`` (a :data:`BenchRunner`)."""


def names() -> list[str]:
    """Every benchmark's name, built-in and installed, without importing any plugin."""
    return sorted({*BACKENDS, *(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))})


def runner(name: str) -> BenchRunner:
    """The benchmark called ``name``; a plugin's is imported only now."""
    if name in BACKENDS:
        return BACKENDS[name]
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP, name=name):
        loaded: BenchRunner = ep.load()
        return loaded
    raise StatekitError(f"no benchmark called {name!r} (installed: {', '.join(names())})")


async def run(backend: str, config: BenchConfig) -> AsyncGenerator[Result, None]:
    """Run one backend's benchmark in a scratch folder; yields each result as it is measured."""
    with tempfile.TemporaryDirectory(prefix="statekit-bench-", dir=config.directory) as scratch:
        async with aclosing(runner(backend)(config, Path(scratch))) as results:
            async for result in results:
                yield result
