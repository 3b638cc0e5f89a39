"""``python -m statekit.bench shards``: sharded reconcilers, 1, 2, 4... processes, one store.

For each process count ``P`` of ``--processes`` (``1,2,4``): a fresh store (a new
PostgreSQL namespace, dropped after, or a new SQLite file), ``--intents`` resting
GTC limit orders (10,000) over ``--symbols`` (100) created in it, one paper exchange
served over TCP by a process of its own (:mod:`statekit.testing.paper_remote`), and
``P`` shard processes, process ``i`` owning shard ``i`` of ``P``
(:class:`~statekit.trading.reconcile.ShardedEngines`). Every process opens the
store and connects first; then, at one signal, each runs passes of its shard until
one ends in sync. The time is from that signal to the last process done. The
exchange is then asked for its orders: exactly one open order per intent, no
client order id twice, or the run fails instead of printing.

One JSON line: ``seconds`` per process count, ``shards`` (per process count, each
shard's own ``[seconds, passes, cpu_seconds]`` from the signal to its pass in sync,
and ``exchange_cpu``: the exchange process's CPU seconds meanwhile), ``scaling``
(``t1/t2``, ``t1/t4``: the time with one process over the time with more; 2.0 would
be linear for 2), the
store's durability and ``cpus``. Each process has its own event loop and CPU, but
every one of them talks to the same store and the same exchange process, and the
machine's cores are shared by all of them: see docs/benchmarks.md for what limits it.

``python -m statekit.bench shards --url postgresql://... --intents 10000 --processes 1,2,4``;
without ``--url``, SQLite files in a temp folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import queue
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import statekit
from statekit.backend import JSON
from statekit.bench.harness import BenchConfig, Result, drop_namespace, positive
from statekit.bench.reconcile import intent_specs, paper_exchange, symbol_names
from statekit.config import load_settings
from statekit.errors import StatekitError
from statekit.testing.paper_remote import PaperExchangeServer, RemoteExchange
from statekit.trading.reconcile import IntentStore, ShardedEngines

__all__ = ["ShardsBench", "bench_shards", "main", "run_shards_bench"]

WORKERS = 64
"""Keys each shard's engine reconciles at once (their store writes share commits)."""
CALLS = 8
"""Exchange calls each shard's engine has in flight at once."""
PATIENCE = 3600.0
"""Seconds a run may take before it is reported stuck (a hang guard)."""


@dataclass(frozen=True)
class ShardsBench:
    """What to run: see the module docstring."""

    intents: int = 10_000
    symbols: int = 100
    processes: tuple[int, ...] = (1, 2, 4)
    store: str | None = None
    workers: int = WORKERS
    calls: int = CALLS


def _store_url(base: str | None, scratch: Path, processes: int) -> tuple[str, bool]:
    """A fresh store for one process count, and whether its namespace is dropped after."""
    tag = f"{processes}p_{uuid.uuid4().hex[:8]}"
    if base is None:
        return f"sqlite:///{scratch / f'shards-{tag}.db'}", False
    scheme = base.partition("://")[0]
    if scheme in ("postgres", "postgresql"):
        return f"{base}{'&' if '?' in base else '?'}namespace=bench_shards_{tag}", True
    if scheme == "sqlite":
        location, mark, options = base.partition("?")
        path = Path(location.removeprefix("sqlite://"))
        return f"sqlite://{path.with_name(f'{path.stem}-{tag}{path.suffix}')}{mark}{options}", False
    raise StatekitError(f"shards bench: a store several processes share, not {scheme}://")


def _serve_exchange(symbols: list[str], out: Any, go: Any, finished: Any, stop: Any) -> None:
    """The exchange process: serve a paper exchange until ``stop`` is set; report the
    CPU seconds it used from ``go`` to ``finished``."""

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        async with PaperExchangeServer(paper_exchange(symbols)) as server:
            out.put(server.url)
            await loop.run_in_executor(None, go.wait)
            cpu = time.process_time()
            await loop.run_in_executor(None, finished.wait)
            out.put(("exchange", round(time.process_time() - cpu, 3)))
            await loop.run_in_executor(None, stop.wait)

    asyncio.run(serve())


def _shard_process(
    url: str, exchange_url: str, index: int, count: int, bench: ShardsBench, out: Any, go: Any
) -> None:
    asyncio.run(_shard(url, exchange_url, index, count, bench, out, go))


async def _shard(
    url: str, exchange_url: str, index: int, count: int, bench: ShardsBench, out: Any, go: Any
) -> None:
    settings = load_settings(config_file="", env_file="")
    async with await statekit.open(url, settings=settings) as store:
        exchange = RemoteExchange(exchange_url)
        engines = ShardedEngines(
            store,
            exchange,
            shards=count,
            own=[index],
            owner=f"bench-{index}",
            workers=bench.workers,
            calls=bench.calls,
            rate=1e9,
            burst=10**9,
            lease_ttl=60.0,
        )
        await exchange.fetch_balance()  # connected before the start
        out.put(("ready", index))
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        try:
            started, cpu = time.perf_counter(), time.process_time()
            await engines.converge(max_passes=10)
            took, cpu = time.perf_counter() - started, time.process_time() - cpu
            passes = sum(e.metrics.passes for e in engines.engines.values())
            out.put(("done", index, round(took, 3), passes, round(cpu, 3)))
        except (StatekitError, OSError) as exc:
            out.put(("failed", index, f"{type(exc).__name__}: {exc}"))
        finally:
            await engines.aclose()
            await exchange.aclose()


async def _check(url: str, exchange_url: str, intents: int) -> None:
    """One open order per intent at the exchange, no client order id twice."""
    exchange = RemoteExchange(exchange_url)
    try:
        orders = await exchange.orders()
    finally:
        await exchange.aclose()
    ids = [o.client_order_id for o in orders]
    if len(ids) != len(set(ids)):
        raise StatekitError("shards bench: a client order id was placed twice")
    async with await statekit.open(url, settings=load_settings(config_file="", env_file="")) as s:
        statuses = await IntentStore(s).statuses()
    live = {leg.client_order_id for st in statuses.values() for leg in st.live_legs}
    open_ids = {o.client_order_id for o in orders if not o.status.final}
    if len(open_ids) != intents or open_ids != live:
        raise StatekitError(
            f"shards bench: {len(open_ids)} open orders for {intents} intents "
            f"({len(open_ids ^ live)} not matching the statuses)"
        )


async def _prepare(url: str, bench: ShardsBench, symbols: Sequence[str]) -> str:
    """Create the intents in the fresh store; its durability, for the output."""
    async with await statekit.open(url, settings=load_settings(config_file="", env_file="")) as s:
        async for _ in s.scan("intent/"):
            raise StatekitError(f"shards bench: the store at {url} already has intents")
        store = IntentStore(s)
        for intent_id, spec in intent_specs(bench.intents, symbols):
            await store.create(intent_id, spec)
        detail = (await s.backend.health()).detail
    for name in ("synchronous_commit", "synchronous"):
        if name in detail:
            return f"{name}={detail[name]}"
    return "unknown"


async def _drop(url: str) -> None:
    async with await statekit.open(url, settings=load_settings(config_file="", env_file="")) as s:
        await drop_namespace(s.backend)


def _collect(
    out: Any, count: int, what: str, processes: Sequence[BaseProcess]
) -> list[tuple[Any, ...]]:
    """``count`` messages ``what`` from the shard processes; one that failed or died
    fails the run."""
    found: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + PATIENCE
    while len(found) < count:
        try:
            item = out.get(timeout=1.0)
        except queue.Empty:
            dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise StatekitError(f"shards bench: a shard process died ({dead})") from None
            continue
        if item[0] == "failed":
            raise StatekitError(f"shards bench: shard {item[1]} failed: {item[2]}")
        if item[0] == what:
            found.append(item)
    return found


def _one_count(
    spawn: SpawnContext, bench: ShardsBench, scratch: Path, processes: int
) -> tuple[float, str, dict[str, JSON]]:
    """Seconds for ``processes`` shard processes to converge, the store's durability, and
    each shard's own ``[seconds, passes, cpu seconds]`` with the exchange's CPU seconds."""
    symbols = symbol_names(bench.symbols)
    url, drop = _store_url(bench.store, scratch, processes)
    out, stop, go, finished = spawn.Queue(), spawn.Event(), spawn.Event(), spawn.Event()
    exchange = spawn.Process(target=_serve_exchange, args=(symbols, out, go, finished, stop))
    shards: list[BaseProcess] = []
    try:
        durability = asyncio.run(_prepare(url, bench, symbols))
        exchange.start()
        exchange_url = out.get(timeout=60)
        shards = [
            spawn.Process(
                target=_shard_process, args=(url, exchange_url, i, processes, bench, out, go)
            )
            for i in range(processes)
        ]
        for p in shards:
            p.start()
        _collect(out, processes, "ready", shards)
        started = time.perf_counter()
        go.set()
        done = _collect(out, processes, "done", shards)
        seconds = time.perf_counter() - started
        finished.set()
        ((_, exchange_cpu),) = _collect(out, 1, "exchange", [exchange])
        for p in shards:
            p.join(timeout=60)
        asyncio.run(_check(url, exchange_url, bench.intents))
        each: dict[str, JSON] = {str(d[1]): [d[2], d[3], d[4]] for d in sorted(done)}
        each["exchange_cpu"] = exchange_cpu
        return seconds, durability, each
    finally:
        stop.set()
        for p in [*shards, exchange]:
            if p.pid is not None:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
                    p.join()
        if drop:
            asyncio.run(_drop(url))


def run_shards_bench(bench: ShardsBench, scratch: Path) -> Result:
    """Run every process count of ``bench``; the JSON line."""
    spawn = multiprocessing.get_context("spawn")
    seconds: dict[str, float] = {}
    shards: dict[str, JSON] = {}
    durability = ""
    for processes in bench.processes:
        took, durability, each = _one_count(spawn, bench, scratch, processes)
        seconds[str(processes)] = round(took, 3)
        shards[str(processes)] = each
    first = seconds.get("1")
    scaling = {
        f"t1/t{p}": round(first / t, 3) for p, t in seconds.items() if first and p != "1" and t
    }
    store = "sqlite" if bench.store is None else bench.store.partition("://")[0]
    return {
        "benchmark": "shards",
        "store": store,
        "durability": durability,
        "intents": bench.intents,
        "symbols": bench.symbols,
        "processes": list(bench.processes),
        "workers": bench.workers,
        "calls": bench.calls,
        "seconds": seconds,  # type: ignore[dict-item]
        "scaling": scaling,  # type: ignore[dict-item]
        "shards": shards,
        "cpus": os.cpu_count() or 0,
        "python": platform.python_version(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


async def bench_shards(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """The :data:`statekit.bench.BACKENDS` entry: ``--n`` intents, ``--url`` the store,
    1, 2 and 4 processes."""
    bench = ShardsBench(intents=config.n, store=config.url)
    yield await asyncio.to_thread(run_shards_bench, bench, scratch)


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of counts like 1,2,4: {text!r}") from None
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"counts must be >= 1, each once: {text!r}")
    return counts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m statekit.bench shards",
        description="Sharded reconcilers in 1, 2, 4... processes against one store and one "
        "paper exchange process; one JSON line.",
    )
    parser.add_argument(
        "--url", default=None, help="store URL (postgresql://..., sqlite:///...; default SQLite)"
    )
    parser.add_argument("--intents", type=positive, default=10_000, help="default %(default)s")
    parser.add_argument("--symbols", type=positive, default=100, help="default %(default)s")
    parser.add_argument(
        "--processes", type=_counts, default=(1, 2, 4), help="process counts (default 1,2,4)"
    )
    parser.add_argument(
        "--workers", type=positive, default=WORKERS, help="keys per shard (default %(default)s)"
    )
    parser.add_argument(
        "--calls", type=positive, default=CALLS, help="exchange calls per shard (%(default)s)"
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="folder for the SQLite files (default: temp)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.dir is not None and not args.dir.is_dir():
        print(f"statekit.bench shards: --dir {args.dir} is not a folder", file=sys.stderr)
        return 2
    bench = ShardsBench(
        intents=args.intents,
        symbols=args.symbols,
        processes=args.processes,
        store=args.url,
        workers=args.workers,
        calls=args.calls,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="statekit-bench-", dir=args.dir) as scratch:
            result = run_shards_bench(bench, Path(scratch))
    except (StatekitError, sqlite3.Error, OSError) as exc:
        print(f"statekit.bench shards: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
