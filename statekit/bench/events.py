"""``python -m statekit.bench events``: rebuilding a long aggregate, and appending events.

Two lines, on SQLite (WAL, synchronous=FULL: every append is on disk when it returns):

- ``rebuild``: one position aggregate of ``100 * n`` events (100,000 by default) plus
  the 99 after its last snapshot, the worst case for ``snapshot_every=100``; the
  median time of :meth:`EventStore.rebuild` from the latest snapshot beside a fold
  of every event (``use_snapshot=False``), and ``speedup``, their ratio. The
  stream is built once, in batches, through the backend's ``replicate`` (what a
  mirror writes: versions as given), from events the fold has checked.
- ``append``: :meth:`EventStore.append` of one ``position_modified`` event with
  ``expect_version`` (the event, the projection ``position/<symbol>`` and, every
  100th, the snapshot in one transaction) beside the event store a user writes by
  hand with :mod:`sqlite3` on tables of its own (:class:`_RawEvents`, no statekit
  code or SQL): one transaction per event that reads what statekit's append reads
  (the stream's last version and the projection's state), checks, and writes the
  event, the projection and every 100th snapshot, at the same durability.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import statekit
from statekit.backend import JSON, Record
from statekit.backends.sqlite import SqliteBackend
from statekit.bench.harness import BenchConfig, Result, Workload, measure
from statekit.errors import StatekitError
from statekit.trading import kinds
from statekit.trading.events import (
    EVENT_KINDS,
    SNAPSHOT_KIND,
    Aggregate,
    AggregateState,
    EventStore,
    PositionChange,
    PositionModified,
    PositionOpened,
    PositionOpening,
    State,
    apply,
    event_json,
)
from statekit.trading.models import Position, to_json

__all__ = ["EVENTS_PER_N", "bench_events"]

EVENTS_PER_N = 100
"""The rebuilt aggregate has ``EVENTS_PER_N * n`` events (``--n 1000``: 100,000)."""
BUILD_CHUNK = 10_000
"""Versions per ``replicate`` call while building the stream."""
SLOW_ROUNDS = 2
"""Rounds at most for the full fold, which takes seconds per round."""
APPENDS = 100
"""Appends per round at most (``--n`` lowers it): each waits for its fsync."""
APPEND_ROUNDS = 5
"""Append rounds at most (``--rounds`` lowers it)."""


def _change(i: int) -> tuple[Decimal, Decimal]:
    """The i-th modification: grow by 1 and shrink by 1 by turns, at moving prices."""
    return (Decimal(1 if i % 2 == 0 else -1), Decimal(100 + i % 50))


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


async def _build(events: EventStore, aggregate: Aggregate, count: int) -> None:
    """``count`` checked events of ``aggregate`` with their snapshots and projection."""
    backend = events.store.backend
    key = events.stream_key(aggregate)
    kind = EVENT_KINDS[aggregate.type]
    at = datetime.now(UTC)
    state: State = None
    chunk: list[Record] = []
    snapshots = 0
    for version in range(1, count + 1):
        if version == 1:
            event: PositionOpened | PositionModified = PositionOpened(
                payload=PositionOpening(amount=Decimal(1), price=Decimal(100)), at=at
            )
        else:
            amount, price = _change(version)
            event = PositionModified(payload=PositionChange(amount=amount, price=price), at=at)
        state = apply(aggregate, state, event, key=key)
        chunk.append(Record(key, version, kind, event_json(event), {}, at))
        if version % events.snapshot_every == 0:
            snapshots += 1
            assert state is not None
            snap: dict[str, JSON] = {"version": version, "state": to_json(state)}
            chunk.append(
                Record(events.snapshot_key(aggregate), snapshots, SNAPSHOT_KIND, snap, {}, at)
            )
        if len(chunk) >= BUILD_CHUNK or version == count:
            await backend.replicate(chunk)
            chunk = []
    assert isinstance(state, Position)
    meta: dict[str, JSON] = {"event_version": count, "stream": key}
    await backend.replicate(
        [Record(events.projection_key(aggregate), 1, kinds.POSITION, to_json(state), meta, at)]
    )


async def _median_ms(rounds: int, run: Callable[[], Awaitable[None]]) -> float:
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        await run()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000


_RAW_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (stream TEXT NOT NULL, version INTEGER NOT NULL, "
    "type TEXT NOT NULL, data TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (stream, version))",
    "CREATE TABLE IF NOT EXISTS positions (symbol TEXT PRIMARY KEY, version INTEGER NOT NULL, "
    "state TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS snapshots (stream TEXT NOT NULL, version INTEGER NOT NULL, "
    "state TEXT NOT NULL, PRIMARY KEY (stream, version))",
)


class _RawEvents:
    """The event store a user writes by hand with :mod:`sqlite3` (nothing of statekit).

    Tables of its own: ``events`` (one row per event, primary key (stream, version)),
    ``positions`` (the projection: the current state and the event version it is at) and
    ``snapshots`` (every 100th state). An append is one ``BEGIN IMMEDIATE`` transaction that
    does what statekit's does: read the stream's last version and the projection's state,
    refuse when the version is not the expected one or the change breaks the position's
    rules, then insert the event, upsert the projection (and insert the snapshot), commit.
    """

    def __init__(self, path: Path, synchronous: str, symbol: str) -> None:
        self.con = sqlite3.connect(path, isolation_level=None)
        self.con.execute("PRAGMA journal_mode = WAL")
        self.con.execute(f"PRAGMA synchronous = {synchronous}")
        for statement in _RAW_SCHEMA:
            self.con.execute(statement)
        self.stream = f"position/{symbol}"
        self.symbol = symbol

    def durability(self) -> str:
        mode = self.con.execute("PRAGMA journal_mode").fetchone()[0]
        level = self.con.execute("PRAGMA synchronous").fetchone()[0]
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return f"{str(mode).upper()} synchronous={names.get(level, level)}"

    def version(self) -> int:
        row = self.con.execute("SELECT MAX(version) FROM events WHERE stream = ?", (self.stream,))
        return int(row.fetchone()[0] or 0)

    def append(self, expect: int, type_: str, amount: Decimal, price: Decimal) -> None:
        """One event after version ``expect``, with its projection (and snapshot)."""
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            head = con.execute(
                "SELECT MAX(version) FROM events WHERE stream = ?", (self.stream,)
            ).fetchone()[0]
            if (head or 0) != expect:
                raise RuntimeError(f"{self.stream} is at version {head}, not {expect}")
            row = con.execute(
                "SELECT version, state FROM positions WHERE symbol = ?", (self.symbol,)
            ).fetchone()
            now = datetime.now(UTC).isoformat()
            state = self._fold(json.loads(row[1]) if row else None, type_, amount, price, now)
            version = expect + 1
            event = {"event_id": uuid.uuid4().hex, "amount": str(amount), "price": str(price)}
            con.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                (self.stream, version, type_, _compact(event), now),
            )
            con.execute(
                "INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT (symbol) "
                "DO UPDATE SET version = excluded.version, state = excluded.state",
                (self.symbol, version, _compact(state)),
            )
            if version % 100 == 0:
                con.execute(
                    "INSERT INTO snapshots VALUES (?, ?, ?)",
                    (self.stream, version, _compact(state)),
                )
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def _fold(
        self, state: dict[str, str] | None, type_: str, amount: Decimal, price: Decimal, now: str
    ) -> dict[str, str]:
        """The position after the event; the rules a user checks (no statekit code)."""
        if price <= 0 or amount == 0:
            raise ValueError(f"{self.symbol}: price {price}, amount {amount}")
        if type_ == "position_opened":
            if state is not None and Decimal(state["amount"]) != 0:
                raise ValueError(f"{self.symbol} is open already")
            held, entry, realized = amount, price, Decimal(0)
        else:
            if state is None:
                raise ValueError(f"{self.symbol} is not open")
            held, entry = Decimal(state["amount"]), Decimal(state["entry_price"])
            realized = Decimal(state["realized_pnl"])
            after = held + amount
            if after == 0 or (after > 0) != (held > 0):
                raise ValueError(f"{self.symbol}: {amount} closes or flips {held}")
            if (amount > 0) == (held > 0):
                entry = (entry * abs(held) + price * abs(amount)) / abs(after)
            else:
                realized += (price - entry) * -amount
            held = after
        return {
            "symbol": self.symbol,
            "amount": str(held),
            "entry_price": str(entry),
            "realized_pnl": str(realized),
            "last_updated": now,
        }

    def close(self) -> None:
        self.con.close()


async def _rebuild_line(events: EventStore, config: BenchConfig, durability: str) -> Result:
    """The ``rebuild`` line: a long aggregate rebuilt from its snapshot and in full."""
    long = Aggregate.position("BENCH-USD")
    count = EVENTS_PER_N * config.n + events.snapshot_every - 1
    started = time.perf_counter()
    await _build(events, long, count)
    build_s = time.perf_counter() - started

    rebuilt: dict[bool, AggregateState] = {}

    async def with_snapshot() -> None:
        rebuilt[True] = await events.rebuild(long)

    async def without_snapshot() -> None:
        rebuilt[False] = await events.rebuild(long, use_snapshot=False)

    fast_ms = await _median_ms(config.rounds, with_snapshot)
    full_ms = await _median_ms(min(config.rounds, SLOW_ROUNDS), without_snapshot)
    fast, full = rebuilt[True], rebuilt[False]
    if fast.state != full.state or fast.version != count:
        raise StatekitError("events bench: the snapshot rebuild differs from the full fold")
    return {
        "backend": "events",
        "workload": "rebuild",
        "events": count,
        "snapshot_every": events.snapshot_every,
        "events_after_snapshot": fast.folded,
        "with_snapshot_ms": round(fast_ms, 3),
        "without_snapshot_ms": round(full_ms, 1),
        "speedup": round(full_ms / fast_ms, 1),
        "full_fold_events_s": round(count / (full_ms / 1000), 1),
        "build_s": round(build_s, 2),
        "durability": durability,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


async def _append_line(
    events: EventStore, config: BenchConfig, scratch: Path, synchronous: str
) -> Result:
    """The ``append`` line: one event at a time beside the same event store by hand."""
    # Appends: a fresh position on each side, opened before the timed rounds.
    target = Aggregate.position("APPEND-USD")
    raw = _RawEvents(scratch / "raw.db", synchronous, target.id)
    try:
        raw.append(0, "position_opened", Decimal(1), Decimal(100))
        await events.append(
            target,
            [PositionOpened(payload=PositionOpening(amount=Decimal(1), price=Decimal(100)))],
        )
        if raw.durability() != f"WAL synchronous={synchronous}":
            raise StatekitError(f"raw side runs {raw.durability()}")
        appends = min(config.n, APPENDS)
        rounds = min(config.rounds, APPEND_ROUNDS)
        changes = [_change(i) for i in range(appends)]

        async def statekit_append() -> float:
            version = await events.version(target)
            begun = time.perf_counter()
            for amount, price in changes:
                event = PositionModified(payload=PositionChange(amount=amount, price=price))
                await events.append(target, [event], expect_version=version)
                version += 1
            return time.perf_counter() - begun

        async def raw_append() -> float:
            version = raw.version()
            begun = time.perf_counter()
            for amount, price in changes:
                raw.append(version, "position_modified", amount, price)
                version += 1
            return time.perf_counter() - begun

        workload = Workload(
            "append",
            appends,
            statekit_append,
            raw_append,
            detail={
                "durability": raw.durability(),
                "writes_per_event": "event + projection (+ snapshot every 100)",
                "raw": "sqlite3 by hand, tables of its own; one transaction per event: read "
                "the stream's last version and the projection, check, insert the event, "
                "upsert the projection (+ the snapshot)",
            },
        )
        line = await measure("events", workload, rounds)
        check = await events.rebuild(target, use_snapshot=False)
        if check.version != 1 + appends * rounds:
            raise StatekitError("events bench: appends went missing")
        return line
    finally:
        raw.close()


async def bench_events(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """The ``rebuild`` and ``append`` lines (see the module docstring)."""
    async with await statekit.open(f"sqlite:///{scratch / 'events.db'}") as store:
        backend = store.backend
        assert isinstance(backend, SqliteBackend)
        events = EventStore(store)
        yield await _rebuild_line(events, config, f"WAL synchronous={backend.synchronous}")
        yield await _append_line(events, config, scratch, backend.synchronous)
