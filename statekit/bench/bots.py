"""``python -m statekit.bench bots``: many trading bots, each an OS process, on one store.

``--isolated N`` processes each write a namespace of their own and ``--shared M``
processes share one more namespace, all at once for ``--seconds S``; each process
is one bot of :mod:`statekit.bench.bots_process` (a cycle = an order placed with
``expect=0``, its fill saved with compare-and-set, the bot's position saved with
compare-and-set, and the namespace's shared counter incremented with
``store.update()``: four writes). Before them, one bot alone in one namespace runs
for the same time: the capacity of one process, the baseline of the ratios.

``--url`` picks the store (default: SQLite files in the scratch folder): on a server
each namespace is the URL's ``namespace`` option (``bench_bots_<run>_<label>``,
dropped afterwards); on SQLite a namespace is a file beside the one named
(``x-<label>.db``). One JSON line:

``alone``
    the lone bot: ``ops_s`` (writes/s), ``orders_s`` (cycles/s), ``p50_ms``/``p99_ms``.
``namespaces``
    per namespace (``isolated-0``... and ``shared``): ``bots``, ``ops_s``,
    ``orders_s`` (the sum of its bots' rates), ``p50_ms``, ``p99_ms``,
    ``conflicts_retried``.
``aggregate_ops_s``, ``aggregate_orders_s``, ``p50_ms``, ``p99_ms``, ``conflicts_retried``
    over every bot of the run.
``ratio_isolated_vs_alone``, ``ratio_shared_vs_alone``, ``ratio_aggregate_vs_alone``
    the median isolated namespace, the shared namespace and the whole run over the
    lone bot: 1.0 per isolated namespace means one more process cost the others
    nothing; the aggregate ratio is how many lone bots the run was worth.
``server_cpu_s``, ``server_cpu_us_per_write``, ``writes_per_server_core_s`` (also in ``alone``)
    the CPU the store's server processes spent over the run (found on this machine
    from the URL's loopback ports, :mod:`statekit.bench.servercpu`; replicas too when
    the URL names them), per write, and the writes one core takes at that cost: what
    sizes servers where the clients run out of cores first (docs/scaling.md). Disk
    waits are not CPU. None when no server process is found (SQLite: the store works
    inside the bots, in ``bots_cpu_s``; a remote server).
``lost_updates``
    always 0: every namespace's shared counter is checked to equal the cycles of
    its bots before the line is printed (a StatekitError otherwise).

The figures include the bots' own CPU: on a machine with fewer cores than
processes (``cpus`` in the line) the client, not the store, may be the limit.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import queue
import statistics
import time
import uuid
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from statekit.backend import JSON
from statekit.bench.bots_process import (
    READY_TIMEOUT,
    SHARED_KEY,
    WRITES_PER_CYCLE,
    BotReport,
    BotSpec,
    bot_process,
)
from statekit.bench.harness import BenchConfig, Result, drop_namespace
from statekit.bench.servercpu import server_processes, tree_cpu_seconds
from statekit.errors import ConfigError, StatekitError
from statekit.kit import with_options
from statekit.redact import redact_url

__all__ = [
    "Fleet",
    "FleetRun",
    "bench_bots",
    "namespace_url",
    "run_fleet",
    "server_cost",
]

JOIN_TIMEOUT = 60.0
"""Seconds to wait for a bot that reported its result to exit."""
SETTLE = 0.2
"""Seconds to let a server reap the connections of the bots that exited."""
POLL = 1.0
"""Seconds between looks at the bot processes while waiting for their messages."""


def namespace_url(base: str | None, namespace: str, scratch: Path) -> str:
    """The store URL of ``namespace``: the ``namespace`` option on a server URL, a file
    of its own on SQLite (``x-<namespace>.db`` beside ``x.db``; in ``scratch`` without
    a URL). A store that processes cannot share (``memory://``) is a ConfigError."""
    if base is None:
        return f"sqlite:///{scratch / f'bots-{namespace}.db'}"
    scheme = base.partition("://")[0].lower()
    if scheme == "sqlite":
        location, mark, options = base.partition("?")
        path = Path(location.removeprefix("sqlite://"))
        return f"sqlite://{path.with_name(f'{path.stem}-{namespace}{path.suffix}')}{mark}{options}"
    if scheme == "memory":
        raise ConfigError(
            "the bots benchmark runs bots in separate processes: give a store they can "
            "share (--url postgresql://..., redis://..., sqlite:///file.db)",
            source="url",
        )
    return with_options(base, namespace=namespace)


@dataclass(frozen=True, slots=True)
class Fleet:
    """Bots by namespace: ``label -> (namespace URL, bot names)``."""

    namespaces: Mapping[str, tuple[str, Sequence[str]]]

    @classmethod
    def plan(
        cls, base: str | None, scratch: Path, run: str, sizes: Iterable[tuple[str, int]]
    ) -> Fleet:
        """``sizes``: (label, bots) per namespace; namespaces named ``bench_bots_<run>_<label>``."""
        return cls(
            {
                label: (
                    namespace_url(base, f"bench_bots_{run}_{label}", scratch),
                    [f"{label}.{i}" for i in range(bots)],
                )
                for label, bots in sizes
                if bots
            }
        )

    def specs(self, **how: Any) -> list[BotSpec]:
        """One spec per bot; ``how`` is ``seconds=`` or ``cycles=``."""
        return [
            BotSpec(url, name, **how) for url, names in self.namespaces.values() for name in names
        ]


def _collect(
    messages: Any, count: int, kind: str, timeout: float, processes: Sequence[Any]
) -> list[Any]:
    """``count`` messages of ``kind`` from the bots; a bot's error, or a bot process
    that died without a word, raises at once."""
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(found) < count:
        try:
            what, payload = messages.get(timeout=POLL)
        except queue.Empty:
            dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise StatekitError(
                    f"bots benchmark: {len(dead)} bot processes died (exit codes {dead})"
                ) from None
            if time.monotonic() > deadline:
                raise StatekitError(
                    f"bots benchmark: {count - len(found)} bots silent for {timeout:.0f} s"
                ) from None
            continue
        if what == "error":
            raise StatekitError(f"bots benchmark: {payload}")
        if what == kind:
            found.append(payload)
    return found


@dataclass(frozen=True, slots=True)
class FleetRun:
    """What :func:`run_fleet` measured: each bot's report, and the CPU seconds the
    store's server processes spent from the go signal until every bot had closed its
    store (None: no server process found on this machine, e.g. SQLite)."""

    reports: list[BotReport]
    server_seconds: float | None


def run_fleet(
    specs: Sequence[BotSpec], timeout: float = READY_TIMEOUT, *, servers: Sequence[int] = ()
) -> FleetRun:
    """Run every bot in a process of its own, started together once all are ready.

    :param servers: pids of the store's server processes (:mod:`statekit.bench.servercpu`),
        whose CPU time over the run is measured.
    """
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    messages = context.Queue()
    processes = [
        context.Process(target=bot_process, args=(spec, go, messages), daemon=True)
        for spec in specs
    ]
    for process in processes:
        process.start()
    try:
        _collect(messages, len(specs), "ready", timeout, processes)
        before = tree_cpu_seconds(servers)
        go.set()
        reports: list[BotReport] = _collect(messages, len(specs), "done", timeout, processes)
    except BaseException:
        for process in processes:  # the run is void: no bot needs to finish
            process.terminate()
        raise
    finally:
        for process in processes:
            process.join(JOIN_TIMEOUT)
            if process.is_alive():
                process.terminate()
                process.join()
    # Joined: every bot closed its store, so the server's per-connection processes
    # (PostgreSQL) have exited and their CPU is in their parent's reaped time.
    time.sleep(SETTLE)
    return FleetRun(reports, tree_cpu_seconds(servers) - before if servers else None)


def _ms(latencies: Sequence[float], at: int) -> float:
    if len(latencies) < 2:
        return round(1000 * latencies[0], 3) if latencies else 0.0
    return round(1000 * statistics.quantiles(latencies, n=100)[at - 1], 3)


def _ops_s(reports: Sequence[BotReport]) -> float:
    """Writes per second: the sum of the bots' own rates."""
    return round(sum(r.ops / r.seconds for r in reports if r.seconds), 1)


def _summary(reports: Sequence[BotReport]) -> dict[str, JSON]:
    latencies = [s for r in reports for s in r.latencies]
    return {
        "bots": len(reports),
        "ops_s": _ops_s(reports),
        "orders_s": round(sum(r.cycles / r.seconds for r in reports if r.seconds), 1),
        "p50_ms": _ms(latencies, 50),
        "p99_ms": _ms(latencies, 99),
        "conflicts_retried": sum(r.conflicts for r in reports),
    }


async def _check_and_drop(fleet: Fleet, reports: Sequence[BotReport]) -> None:
    """Each namespace's shared counter holds its bots' cycles (no update lost); then
    the namespace is dropped where the backend can."""
    import statekit
    from statekit.config import load_settings

    cycles = {r.name: r.cycles for r in reports}
    settings = load_settings(config_file="", env_file="")
    for label, (url, names) in fleet.namespaces.items():
        async with await statekit.open(url, settings=settings) as store:
            record = await store.get(SHARED_KEY)
            counted = None if record is None else record.data
            expected = sum(cycles[name] for name in names)
            await drop_namespace(store.backend)
        if counted != expected:
            raise StatekitError(
                f"bots benchmark: namespace {label} counted {counted} fills, "
                f"its bots made {expected}: updates were lost"
            )


async def _measure(fleet: Fleet, seconds: float) -> FleetRun:
    import asyncio

    url = next(iter(fleet.namespaces.values()))[0]
    servers = server_processes(url)
    run = await asyncio.to_thread(run_fleet, fleet.specs(seconds=seconds), servers=servers)
    await _check_and_drop(fleet, run.reports)
    return run


def server_cost(run: FleetRun) -> dict[str, JSON]:
    """The server processes' CPU per write (replicas and standbys included when the URL
    names them), and the writes one core of such servers takes at that cost. Disk
    waits (fsync) are not CPU: a server bound by its disk takes fewer."""
    writes = sum(r.ops for r in run.reports)
    if run.server_seconds is None or not writes or run.server_seconds <= 0:
        return {
            "server_cpu_s": None,
            "server_cpu_us_per_write": None,
            "writes_per_server_core_s": None,
        }
    per_write = run.server_seconds / writes
    return {
        "server_cpu_s": round(run.server_seconds, 2),
        "server_cpu_us_per_write": round(1e6 * per_write, 1),
        "writes_per_server_core_s": round(1 / per_write),
    }


def _ratio(part: float | None, whole: float) -> JSON:
    return None if part is None or not whole else round(part / whole, 3)


async def bench_bots(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """The many-bots benchmark (see the module docstring)."""
    run = uuid.uuid4().hex[:8]
    sizes = [(f"isolated-{i}", 1) for i in range(config.isolated)] + [("shared", config.shared)]
    fleet = Fleet.plan(config.url, scratch, run, sizes)
    if not fleet.namespaces:
        raise ConfigError("the bots benchmark needs --isolated or --shared above 0", source="cli")
    lone_run = await _measure(Fleet.plan(config.url, scratch, run, [("alone", 1)]), config.seconds)
    fleet_run = await _measure(fleet, config.seconds)
    lone, reports = lone_run.reports, fleet_run.reports
    by_name = {r.name: r for r in reports}
    grouped = {label: [by_name[n] for n in names] for label, (_, names) in fleet.namespaces.items()}
    namespaces: dict[str, JSON] = {label: _summary(bots) for label, bots in grouped.items()}
    isolated = [_ops_s(bots) for label, bots in grouped.items() if label.startswith("isolated-")]
    everything = _summary(reports)
    alone = _ops_s(lone)
    yield {
        "backend": "bots",
        "workload": "many_bots",
        "store": redact_url(config.url) if config.url else "sqlite (scratch files)",
        "isolated": config.isolated,
        "shared": config.shared,
        "seconds": config.seconds,
        "writes_per_order": WRITES_PER_CYCLE,
        "alone": {**_summary(lone), **server_cost(lone_run)},
        "namespaces": namespaces,
        "aggregate_ops_s": everything["ops_s"],
        "aggregate_orders_s": everything["orders_s"],
        "p50_ms": everything["p50_ms"],
        "p99_ms": everything["p99_ms"],
        "conflicts_retried": everything["conflicts_retried"],
        "ratio_isolated_vs_alone": _ratio(statistics.median(isolated) if isolated else None, alone),
        "ratio_shared_vs_alone": _ratio(
            _ops_s(grouped["shared"]) if "shared" in grouped else None, alone
        ),
        "ratio_aggregate_vs_alone": _ratio(_ops_s(reports), alone),
        "lost_updates": 0,
        "bots_cpu_s": round(sum(r.cpu_seconds for r in reports), 2),
        **server_cost(fleet_run),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
