"""``python -m statekit.bench peers [--url postgresql://...]``: statekit beside eventsourcing.

The peer is the ``eventsourcing`` library (9.5, the ``bench-peers`` extra), on the same
server: SQLite files in the scratch folder without ``--url``, else the PostgreSQL of
``--url`` (statekit in a namespace of its own, eventsourcing in a schema of its own;
both dropped afterwards). One aggregate, a position, folded by the same plain Python on
both sides (:mod:`.positions`); a snapshot every 100 events on both. Two lines, each
timed in interleaved rounds (eventsourcing, EventStore, statekit, ...):

- ``append``: one event per call to one aggregate, durable when the call returns:
  ``app.save(position)`` beside ``store.put(stream, event, expect=version)``
  (:class:`~.statekit_side.StatekitSide`), with the snapshot in the same batch every
  100th event.
- ``rebuild``: the aggregate from its latest snapshot plus the 50 events after it
  (the mean for snapshots every 100): ``app.repository.get(id)`` beside a read of the
  snapshot key and of the stream's history after it.

``ratio`` is statekit's rate over eventsourcing's (> 1: statekit faster);
``event_store_*`` is the trading :class:`~statekit.trading.events.EventStore` doing the
same (its events are checked against the fold's rules and its projection is kept).
Without eventsourcing installed the benchmark prints one ``skipped`` line.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import statekit
from statekit.backend import JSON
from statekit.bench.harness import BenchConfig, Result, Timed, Workload, drop_namespace, measure
from statekit.bench.peers.positions import OPENING, SNAPSHOT_EVERY, Book, change_at
from statekit.bench.peers.statekit_side import EventStoreSide, StatekitSide
from statekit.errors import StatekitError
from statekit.store import StateStore

if TYPE_CHECKING:
    from statekit.bench.peers.eventsourcing_side import EventsourcingSide, PeerPosition

__all__ = ["AFTER_SNAPSHOT", "bench_peers"]

APPENDS = 200
"""Appends per round at most (``--n`` lowers it): each waits for its commit."""
REBUILDS = 100
"""Rebuilds per round at most (``--n`` lowers it)."""
AFTER_SNAPSHOT = SNAPSHOT_EVERY // 2
"""Events after the latest snapshot in the ``rebuild`` line."""
INSTALL = "pip install 'statekit[bench-peers]'"


def _timed(count: int, one: Callable[[int], Awaitable[None]]) -> Timed:
    async def run() -> float:
        started = time.perf_counter()
        for i in range(count):
            await one(i)
        return time.perf_counter() - started

    return run


async def _open_store(config: BenchConfig, scratch: Path, stack: AsyncExitStack) -> StateStore:
    if config.url is None:
        url = f"sqlite:///{scratch / 'statekit.db'}"
    elif config.url.split(":", 1)[0] in ("postgresql", "postgres"):
        namespace = f"bench_peers_{uuid.uuid4().hex[:8]}"
        url = f"{config.url}{'&' if '?' in config.url else '?'}namespace={namespace}"
    else:
        raise StatekitError("the peers benchmark runs on SQLite (no --url) or --url postgresql://")
    store = await stack.enter_async_context(await statekit.open(url))
    stack.push_async_callback(drop_namespace, store.backend)
    return store


async def _durability(store: StateStore, peer: EventsourcingSide) -> str:
    """Both sides' durability, the same or the run stops."""
    health = await store.health()
    if "synchronous_commit" in health.detail:
        ours = f"synchronous_commit={health.detail['synchronous_commit']}"
    else:
        ours = f"WAL synchronous={getattr(store.backend, 'synchronous', '?')}"
    theirs = peer.durability()
    if ours != theirs:
        raise StatekitError(f"peers bench: statekit runs {ours}, eventsourcing {theirs}")
    return ours


async def _append_line(
    store: StateStore, peer: EventsourcingSide, config: BenchConfig, detail: dict[str, JSON]
) -> Result:
    ours, trading = StatekitSide(store, "append"), EventStoreSide(store, "append-es")
    for side in (ours, trading):
        await side.open(*OPENING)
    position = peer.open(*OPENING)
    appends = min(config.n, APPENDS)

    async def peer_append(i: int) -> None:
        peer.append(position, *change_at(i))

    async def our_append(i: int) -> None:
        await ours.append(*change_at(i))

    async def trading_append(i: int) -> None:
        await trading.append(*change_at(i))

    workload = Workload(
        "append",
        appends,
        _timed(appends, our_append),
        _timed(appends, peer_append),
        references={"event_store": _timed(appends, trading_append)},
        detail={
            **detail,
            "statekit": "store.put(stream, event, expect=version); the snapshot in the "
            f"same batch every {SNAPSHOT_EVERY}th",
            "peer": "eventsourcing app.save(aggregate) (snapshotting_intervals=100)",
        },
    )
    line = _as_peer_line(await measure("peers", workload, config.rounds))
    versions = {ours.version, trading.version, position.version}
    if versions != {1 + appends * config.rounds}:
        raise StatekitError(f"peers bench: the sides hold versions {sorted(versions)}")
    return line


async def _rebuild_line(
    store: StateStore, peer: EventsourcingSide, config: BenchConfig, detail: dict[str, JSON]
) -> Result:
    snapshots = max(1, min(10, config.n // 100))
    count = snapshots * SNAPSHOT_EVERY + AFTER_SNAPSHOT
    ours, trading = StatekitSide(store, "rebuild"), EventStoreSide(store, "rebuild-es")
    for side in (ours, trading):
        await side.open(*OPENING)
        for i in range(count - 1):
            await side.append(*change_at(i))
    position: PeerPosition = peer.open(*OPENING)
    for i in range(count - 1):
        position.modify(*change_at(i))
        if (i + 2) % SNAPSHOT_EVERY == 0 or i == count - 2:
            peer.app.save(position)  # a batch of events per transaction, to build faster
    rebuilds = min(config.n, REBUILDS)
    seen: dict[str, tuple[int, Book]] = {}

    async def peer_rebuild(_: int) -> None:
        got = peer.rebuild(position.id)
        seen["peer"] = (got.version, Book(got.amount, got.entry, got.realized))

    async def our_rebuild(_: int) -> None:
        seen["statekit"] = await ours.rebuild()

    async def trading_rebuild(_: int) -> None:
        seen["event_store"] = await trading.rebuild()

    workload = Workload(
        "rebuild",
        rebuilds,
        _timed(rebuilds, our_rebuild),
        _timed(rebuilds, peer_rebuild),
        references={"event_store": _timed(rebuilds, trading_rebuild)},
        detail={
            **detail,
            "events": count,
            "events_after_snapshot": AFTER_SNAPSHOT,
            "statekit": "store.get(snapshot) + store.history(stream, after=its version), folded",
            "peer": "eventsourcing app.repository.get(id) (snapshot + events after it)",
        },
    )
    line = _as_peer_line(await measure("peers", workload, config.rounds))
    if len({(v, b.amount, b.entry, b.realized) for v, b in seen.values()}) != 1:
        raise StatekitError(f"peers bench: the sides rebuilt different states: {seen}")
    return line


def _as_peer_line(line: Result) -> Result:
    """The harness's ``raw`` side is the peer here: name it so."""
    renamed: Result = {}
    for name, value in line.items():
        renamed[name.replace("raw_", "eventsourcing_") if name.startswith("raw_") else name] = value
    event_store, peer = line["event_store_ops_s"], line["raw_ops_s"]
    assert isinstance(event_store, float) and isinstance(peer, float)
    renamed["event_store_ratio"] = round(event_store / peer, 3)
    del renamed["ratio_vs_event_store"]
    return renamed


async def bench_peers(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """The ``append`` and ``rebuild`` lines (see the module docstring)."""
    try:
        from statekit.bench.peers.eventsourcing_side import EventsourcingSide
    except ImportError as exc:
        yield {
            "backend": "peers",
            "skipped": f"the eventsourcing peer is not installed ({exc.name}): {INSTALL}",
        }
        return
    async with AsyncExitStack() as stack:
        store = await _open_store(config, scratch, stack)
        if config.url is None:
            peer = EventsourcingSide(sqlite_path=scratch / "eventsourcing.db")
        else:
            peer = EventsourcingSide(url=config.url)
        stack.callback(peer.close)
        detail: dict[str, JSON] = {
            "store": store.backend.name,
            "durability": await _durability(store, peer),
            "snapshot_every": SNAPSHOT_EVERY,
        }
        yield await _append_line(store, peer, config, detail)
        yield await _rebuild_line(store, peer, config, detail)
