"""statekit's side of the peers benchmark: the position aggregate on a StateStore.

:class:`StatekitSide` is what a user moving from eventsourcing writes: their aggregate
stays their own class (here :class:`~statekit.bench.peers.positions.Book`), kept in
memory between events; each event is the next version of one key, written with
``expect=`` the version they hold (eventsourcing's optimistic concurrency: the
``(originator_id, originator_version)`` primary key); every :data:`SNAPSHOT_EVERY`
events the snapshot key is written in the same atomic batch. A rebuild reads the
snapshot, then the stream's history after it, and folds.

:class:`EventStoreSide` is the same position through statekit's trading
:class:`~statekit.trading.events.EventStore` (its events, rules, projection and
snapshots), reported beside it as the ``event_store`` reference.
"""

from __future__ import annotations

from decimal import Decimal

from statekit.backend import JSON, Write
from statekit.bench.peers.positions import SNAPSHOT_EVERY, Book
from statekit.errors import StatekitError
from statekit.store import StateStore
from statekit.trading import Position
from statekit.trading.events import (
    Aggregate,
    EventStore,
    PositionChange,
    PositionModified,
    PositionOpened,
    PositionOpening,
)

__all__ = ["PAGE", "EventStoreSide", "StatekitSide"]

PAGE = 1000
"""Events read per history call while rebuilding."""
EVENT_KIND = "peers.position_event"
SNAPSHOT_KIND = "peers.position_snapshot"


class StatekitSide:
    """One position aggregate: events as the versions of ``<name>/events``."""

    def __init__(self, store: StateStore, name: str) -> None:
        self.store = store
        self.stream = f"{name}/events"
        self.snapshots = f"{name}/snapshot"
        self.book = Book(Decimal(0), Decimal(0))
        self.version = 0

    async def open(self, amount: Decimal, price: Decimal) -> None:
        """The first event: the position opened (the key must not exist)."""
        event: dict[str, JSON] = {"type": "opened", "amount": str(amount), "price": str(price)}
        await self.store.put(self.stream, event, kind=EVENT_KIND, expect=0)
        self.book = Book(amount, price)
        self.version = 1

    async def append(self, by: Decimal, price: Decimal) -> None:
        """One change: folded in memory, stored as the next version (+ the snapshot)."""
        self.book.apply(by, price)
        self.version += 1
        event: dict[str, JSON] = {"type": "modified", "by": str(by), "price": str(price)}
        if self.version % SNAPSHOT_EVERY:
            await self.store.put(self.stream, event, kind=EVENT_KIND, expect=self.version - 1)
            return
        snapshot: dict[str, JSON] = {"version": self.version, "state": self.book.as_json()}
        await self.store.batch(
            [
                Write(self.stream, event, EVENT_KIND, {}, expect=self.version - 1),
                Write(self.snapshots, snapshot, SNAPSHOT_KIND, {}),
            ]
        )

    async def rebuild(self) -> tuple[int, Book]:
        """The aggregate from its latest snapshot and the events after it."""
        snap = await self.store.get(self.snapshots)
        version, book = 0, Book(Decimal(0), Decimal(0))
        if snap is not None:
            if not isinstance(snap.data, dict) or not isinstance(snap.data["version"], int):
                raise StatekitError(f"{self.snapshots}: not a snapshot")
            version = snap.data["version"]
            book = Book.from_json(snap.data["state"])
        while True:
            page = await self.store.history(
                self.stream, after=version, limit=PAGE, newest_first=False
            )
            if page and page[0].version != version + 1:
                raise StatekitError(f"{self.stream}: events after {version} are missing")
            for record in page:
                event = record.data
                assert isinstance(event, dict)
                if event["type"] == "opened":
                    book = Book(Decimal(str(event["amount"])), Decimal(str(event["price"])))
                else:
                    book.apply(Decimal(str(event["by"])), Decimal(str(event["price"])))
                version = record.version
            if len(page) < PAGE:
                return version, book


class EventStoreSide:
    """The same position through the trading EventStore (the ``event_store`` reference)."""

    def __init__(self, store: StateStore, name: str) -> None:
        self.events = EventStore(store, prefix=f"{name}/", snapshot_every=SNAPSHOT_EVERY)
        self.aggregate = Aggregate.position("PEER-USD")
        self.version = 0

    async def open(self, amount: Decimal, price: Decimal) -> None:
        """The first event: position_opened."""
        opening = PositionOpening(amount=amount, price=price)
        await self.events.append(self.aggregate, [PositionOpened(payload=opening)])
        self.version = 1

    async def append(self, by: Decimal, price: Decimal) -> None:
        """One position_modified event, expecting the version held."""
        event = PositionModified(payload=PositionChange(amount=by, price=price))
        await self.events.append(self.aggregate, [event], expect_version=self.version)
        self.version += 1

    async def rebuild(self) -> tuple[int, Book]:
        """EventStore.rebuild: the latest snapshot and the events after it, folded."""
        rebuilt = await self.events.rebuild(self.aggregate)
        state = rebuilt.state
        if not isinstance(state, Position):
            raise StatekitError(f"{self.aggregate}: no position after {rebuilt.version} events")
        zero = Decimal(0)
        book = Book(state.amount or zero, state.entry_price or zero, state.realized_pnl or zero)
        return rebuilt.version, book
