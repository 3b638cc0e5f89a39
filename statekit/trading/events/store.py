"""EventStore: order and position events over a StateStore, one key per aggregate.

Layout (``prefix`` as in :class:`~statekit.trading.TradingState`)::

    events/order/<id>          one version per event: version n is event n
    events/position/<symbol>
    snapshots/order/<id>       {"version": n, "state": {...}}, every ``snapshot_every`` events
    snapshots/position/<symbol>
    order/<id>                 the projection: TradingState's order, as of the last event
    position/<symbol>          the projection: TradingState's position

Appending event n is a write of the stream key with ``expect=n-1``, so two
writers appending to one aggregate cannot both win: the other gets
:class:`~statekit.errors.ConflictError` with the version it lost to. Reading
since a version is the key's history from there (indexed in every backend),
never a scan. See docs/events.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from statekit.backend import ANY, JSON, Capability, Expect, Record, Write
from statekit.errors import ConflictError, HistoryUnavailable, ValidationError
from statekit.store import Retention, StateStore
from statekit.trading.events.fold import State, apply
from statekit.trading.events.models import (
    EVENT_KINDS,
    SNAPSHOT_KIND,
    Aggregate,
    AggregateType,
    Event,
    event_json,
    parse_event,
)
from statekit.trading.models import Order, Position, to_json
from statekit.trading.state import Section, TradingState

__all__ = ["DEFAULT_SNAPSHOT_EVERY", "AggregateState", "EventStore"]

DEFAULT_SNAPSHOT_EVERY = 100
"""Events between two aggregate snapshots: a rebuild folds at most this many minus one."""
PAGE = 2000
"""Events read per history call while folding."""


@dataclass(frozen=True, slots=True)
class AggregateState:
    """An aggregate's state at a version, and how it was found.

    :param aggregate: whose state.
    :param version: the last event folded in (0: no events).
    :param state: the Order or Position (None before the first event).
    :param snapshot_version: the snapshot the fold started from (0: from the first event).
    :param folded: events folded on top of it.
    """

    aggregate: Aggregate
    version: int
    state: State
    snapshot_version: int = 0
    folded: int = 0


class EventStore:
    """Order and position events with aggregate versions, snapshots and projections.

    :param store: an open store with compare-and-set and history (every built-in
        and server backend but InfluxDB).
    :param prefix: put before every key, as TradingState's ``prefix``.
    :param snapshot_every: write an aggregate snapshot when an event's version
        is a multiple of this.
    :param projections: keep ``order/<id>`` and ``position/<symbol>`` in step.
    :param retries: how often :meth:`append` without ``expect_version`` re-reads
        and tries again when another writer appended first.
    """

    def __init__(
        self,
        store: StateStore,
        *,
        prefix: str = "",
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        projections: bool = True,
        retries: int = 20,
    ) -> None:
        store.require(Capability.COMPARE_AND_SET, "the event store (versions are events)")
        store.require(Capability.HISTORY, "the event store (events are a key's history)")
        if snapshot_every < 1:
            raise ValidationError("snapshot_every must be >= 1", reason="snapshot_every")
        self.store = store
        self.prefix = prefix
        self.snapshot_every = snapshot_every
        self.projections = projections
        self.retries = retries
        self.trading = TradingState(store, prefix=prefix)
        """The TradingState whose ``order/`` and ``position/`` keys are the projections."""

    @property
    def atomic(self) -> bool:
        """An event, its projection and its snapshot are written as one atomic batch.

        Without atomic batches the event is written first, then the projection
        (a crash in between leaves the projection behind: :meth:`rebuild_projections`
        catches it up, and so does the aggregate's next append).
        """
        return Capability.ATOMIC_BATCH in self.store.capabilities

    # -- keys ----------------------------------------------------------------------------

    def stream_key(self, aggregate: Aggregate) -> str:
        """The key whose versions are the aggregate's events."""
        return f"{self.prefix}events/{aggregate.type.value}/{aggregate.id}"

    def snapshot_key(self, aggregate: Aggregate) -> str:
        """The key whose head is the aggregate's latest snapshot."""
        return f"{self.prefix}snapshots/{aggregate.type.value}/{aggregate.id}"

    def projection_key(self, aggregate: Aggregate) -> str:
        """TradingState's key for the aggregate: ``order/<id>`` or ``position/<symbol>``."""
        return self._section(aggregate.type).key(aggregate.id)

    def _section(self, type_: AggregateType) -> Section[Order] | Section[Position]:
        return self.trading.orders if type_ is AggregateType.ORDER else self.trading.positions

    # -- writing -------------------------------------------------------------------------

    async def append(
        self,
        aggregate: Aggregate,
        events: Sequence[Event],
        *,
        expect_version: int | None = None,
        meta: Mapping[str, JSON] | None = None,
    ) -> list[Event]:
        """Append ``events`` to the aggregate, in order; returns them as stored.

        Every event is checked against the state it follows (the fold's rules)
        before the first one is written: a bad event stores nothing. Each event
        is one atomic batch with its projection (and snapshot, every
        ``snapshot_every`` events) where the backend has atomic batches.

        :param expect_version: the aggregate's version you decided on: the
            append fails with ConflictError unless it still is (nothing stored).
            None: append after whatever is there, re-checking the events
            against the newer state when another writer got in first.
        :param meta: stored with each event's version (``by``, ``note``...).
        :raises ValidationError: an event cannot follow the aggregate's state.
        :raises ConflictError: ``expect_version`` did not hold, or another writer
            got in between two of several events (those before it are stored).
        """
        pending = list(events)
        if not pending:
            return []
        for event in pending:
            if event.aggregate_id not in (None, aggregate.id):
                raise ValidationError(
                    f"{aggregate}: event {event.event_id} is for {event.aggregate_id!r}",
                    key=self.stream_key(aggregate),
                    reason="wrong aggregate",
                )
        key = self.stream_key(aggregate)
        stored: list[Event] = []
        attempt = 0
        while pending:
            state, head = await self._head(aggregate)
            if expect_version is not None and head != expect_version:
                raise ConflictError(key, expect_version, head, backend=self.store.backend.name)
            planned = self._plan(aggregate, state, head, pending, key)
            try:
                for event, after in planned:
                    await self._write(aggregate, event, after, meta or {})
                    stored.append(event)
                    pending.pop(0)
                    if expect_version is not None:
                        expect_version = event.version
            except ConflictError:
                if expect_version is not None or attempt >= self.retries:
                    raise
                # Full jitter: competing appenders spread out instead of colliding again.
                await asyncio.sleep(random.uniform(0, min(0.2, 0.002 * 2**attempt)))
                attempt += 1
        return stored

    def _plan(
        self, aggregate: Aggregate, state: State, head: int, events: list[Event], key: str
    ) -> list[tuple[Event, State]]:
        planned: list[tuple[Event, State]] = []
        version = head
        for event in events:
            version += 1
            if event.version not in (0, version):
                raise ValidationError(
                    f"{aggregate}: event {event.event_id} says version {event.version}, "
                    f"but it would be version {version}",
                    key=key,
                    reason="wrong version",
                )
            stamped = event.model_copy(update={"aggregate_id": aggregate.id, "version": version})
            state = apply(aggregate, state, stamped, key=key)
            planned.append((stamped, state))
        return planned

    async def _write(
        self, aggregate: Aggregate, event: Event, state: State, meta: Mapping[str, JSON]
    ) -> None:
        version = event.version
        key = self.stream_key(aggregate)
        writes = [
            Write(key, event_json(event), EVENT_KINDS[aggregate.type], meta, expect=version - 1)
        ]
        snapshot = version % self.snapshot_every == 0
        if not self.atomic:
            await self.store.append(writes)  # the event first: it is the truth
            if self.projections:
                await self._project(aggregate, state, version)
            if snapshot:
                await self._snapshot_write(aggregate, state, version)
            return
        if self.projections:
            writes.append(self._projection_write(aggregate, state, version, ANY))
        if snapshot:
            writes.append(self._snapshot_of(aggregate, state, version))
        await self.store.batch(writes)

    def _projection_write(
        self, aggregate: Aggregate, state: State, version: int, expect: Expect
    ) -> Write:
        assert state is not None
        section = self._section(aggregate.type)
        meta: dict[str, JSON] = {"event_version": version, "stream": self.stream_key(aggregate)}
        return Write(
            self.projection_key(aggregate), to_json(state), section.kind, meta, expect=expect
        )

    def _snapshot_of(self, aggregate: Aggregate, state: State, version: int) -> Write:
        data: dict[str, JSON] = {"version": version, "state": None}
        if state is not None:
            data["state"] = to_json(state)
        return Write(self.snapshot_key(aggregate), data, SNAPSHOT_KIND, {})

    async def _snapshot_write(self, aggregate: Aggregate, state: State, version: int) -> None:
        await self.store.append([self._snapshot_of(aggregate, state, version)])

    async def _project(self, aggregate: Aggregate, state: State, version: int) -> bool:
        """Write the projection unless a newer one is there; True when written.

        Compare-and-set on the projection keeps it monotone: a slow writer's older
        state never overwrites a newer one.
        """
        key = self.projection_key(aggregate)
        while True:
            head = await self.store.get(key)
            if head is not None and (_event_version(head) or 0) >= version:
                return False
            expect = head.version if head is not None else 0
            try:
                await self.store.append([self._projection_write(aggregate, state, version, expect)])
                return True
            except ConflictError:
                continue  # someone else wrote it: look again

    # -- reading -------------------------------------------------------------------------

    async def version(self, aggregate: Aggregate) -> int:
        """The aggregate's version: how many events it has (0: none)."""
        record = await self.store.get(self.stream_key(aggregate))
        return 0 if record is None else record.version

    async def _head(self, aggregate: Aggregate) -> tuple[State, int]:
        """The state at the head, from the projection when it is current, else by folding."""
        key = self.stream_key(aggregate)
        if not self.projections:
            rebuilt = await self.rebuild(aggregate)
            return rebuilt.state, rebuilt.version
        found = await self.store.get_many([key, self.projection_key(aggregate)])
        stream = found.get(key)
        if stream is None:
            return None, 0
        projection = found.get(self.projection_key(aggregate))
        if (
            projection is not None
            and _event_version(projection) == stream.version
            and projection.meta.get("stream") == key
        ):
            return self._section(aggregate.type).parse(projection), stream.version
        rebuilt = await self.rebuild(aggregate)
        return rebuilt.state, rebuilt.version

    async def _pages(
        self, aggregate: Aggregate, after: int, limit: int | None = None
    ) -> AsyncIterator[list[Record]]:
        """The stream's versions after ``after``, a page at a time, without gaps.

        :raises HistoryUnavailable: versions right after ``after`` were pruned.
        """
        key = self.stream_key(aggregate)
        expected = after + 1
        left = limit

        def fetch(after: int, left: int | None) -> asyncio.Task[list[Record]]:
            size = PAGE if left is None else min(PAGE, left)
            return asyncio.ensure_future(
                self.store.history(key, after=after, limit=size, newest_first=False)
            )

        # The next page is read while the caller folds this one.
        pending = fetch(after, left) if left is None or left > 0 else None
        try:
            while pending is not None:
                page = await pending
                pending = None
                if not page:
                    return
                if page[0].version != expected:
                    raise HistoryUnavailable(
                        f"{aggregate}: events {expected}..{page[0].version - 1} of {key!r} were "
                        "pruned; the aggregate can only be rebuilt from a snapshot at or after "
                        f"version {page[0].version - 1}",
                        key=key,
                    )
                expected = page[-1].version + 1
                if left is not None:
                    left -= len(page)
                if len(page) == PAGE and (left is None or left > 0):
                    pending = fetch(expected - 1, left)
                yield page
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending

    def _event(self, aggregate: Aggregate, record: Record) -> Event:
        if not isinstance(record.data, dict):
            raise ValidationError(
                f"{record.key!r} version {record.version} holds no event", key=record.key
            )
        return parse_event({**record.data, "aggregate_id": aggregate.id, "version": record.version})

    async def read(
        self, aggregate: Aggregate, *, since: int = 0, limit: int | None = None
    ) -> list[Event]:
        """The aggregate's events after version ``since``, oldest first.

        :raises HistoryUnavailable: some of them were pruned.
        """
        return [
            self._event(aggregate, record)
            async for page in self._pages(aggregate, since, limit)
            for record in page
        ]

    async def rebuild(self, aggregate: Aggregate, *, use_snapshot: bool = True) -> AggregateState:
        """The aggregate's current state: its latest snapshot plus the events after it.

        :param use_snapshot: False folds every event from the first (to check a snapshot,
            or to time the difference).
        :raises HistoryUnavailable: events needed were pruned (after the snapshot,
            or any when ``use_snapshot`` is False).
        """
        state: State = None
        version = snapshot_version = 0
        if use_snapshot:
            snap = await self.store.get(self.snapshot_key(aggregate))
            if snap is not None:
                snapshot_version, state = self._parse_snapshot(aggregate, snap)
                version = snapshot_version
        key = self.stream_key(aggregate)
        folded = 0
        async for page in self._pages(aggregate, version):
            for record in page:
                state = apply(aggregate, state, self._event(aggregate, record), key=key)
            folded += len(page)
            version = page[-1].version
        return AggregateState(aggregate, version, state, snapshot_version, folded)

    def _parse_snapshot(self, aggregate: Aggregate, record: Record) -> tuple[int, State]:
        data = record.data
        version = data.get("version") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(version, int) or version < 0:
            raise ValidationError(f"{record.key!r} holds no snapshot", key=record.key)
        raw = data.get("state")
        if raw is None:
            return version, None
        model = Order if aggregate.type is AggregateType.ORDER else Position
        return version, model.model_validate(raw)

    async def reconstruct_order_state(self, order_id: str) -> Order | None:
        """The order as its events tell it (seed 000's name); None when never placed."""
        state = (await self.rebuild(Aggregate.order(order_id))).state
        assert state is None or isinstance(state, Order)
        return state

    async def reconstruct_position_state(self, symbol: str) -> Position | None:
        """The position in ``symbol`` as its events tell it; None when never opened."""
        state = (await self.rebuild(Aggregate.position(symbol))).state
        assert state is None or isinstance(state, Position)
        return state

    # -- snapshots, retention, projections -----------------------------------------------

    async def snapshot(self, aggregate: Aggregate) -> int:
        """Write a snapshot of the aggregate's state now; returns its version (0: no events)."""
        rebuilt = await self.rebuild(aggregate)
        if rebuilt.version == 0:
            return 0
        if rebuilt.snapshot_version != rebuilt.version:
            await self._snapshot_write(aggregate, rebuilt.state, rebuilt.version)
        return rebuilt.version

    async def prune(self, aggregate: Aggregate) -> int:
        """Drop the events the latest snapshot covers; returns how many were dropped.

        The one safe retention for an event stream: every event after the
        snapshot stays, so :meth:`rebuild` still works; :meth:`read` from before
        the snapshot raises HistoryUnavailable from then on. Without a snapshot
        nothing is dropped.
        """
        snap = await self.store.get(self.snapshot_key(aggregate))
        if snap is None:
            return 0
        version, _ = self._parse_snapshot(aggregate, snap)
        if version < 1:
            return 0
        # An absolute cut, not keep_last: appends meanwhile cannot move it past the snapshot.
        return await self.store.prune(
            self.stream_key(aggregate), Retention(before_version=version + 1)
        )

    async def aggregates(self, type_: AggregateType) -> list[Aggregate]:
        """Every aggregate of ``type_`` that has events, in id order."""
        folder = f"{self.prefix}events/{type_.value}/"
        return [Aggregate(type_, r.key[len(folder) :]) async for r in self.store.scan(folder)]

    async def rebuild_projections(self, type_: AggregateType | None = None) -> int:
        """Bring every projection (of ``type_``, or all) up to its stream's state.

        The catch-up after a crash between an event and its projection on a
        backend without atomic batches, or after projections were off or
        overwritten. Returns how many projections were written.
        """
        written = 0
        for each in [type_] if type_ is not None else list(AggregateType):
            for aggregate in await self.aggregates(each):
                written += await self._catch_up(aggregate)
        return written

    async def _catch_up(self, aggregate: Aggregate) -> int:
        key = self.projection_key(aggregate)
        section = self._section(aggregate.type)
        while True:
            rebuilt = await self.rebuild(aggregate)
            if rebuilt.state is None:
                return 0
            data = to_json(rebuilt.state)
            current = await self.store.get(key)
            if current is not None:
                seen = _event_version(current) or 0
                if seen > rebuilt.version:
                    return 0  # an append landed meanwhile and wrote a newer one
                if (
                    seen == rebuilt.version
                    and current.data == data
                    and current.kind == section.kind
                ):
                    return 0
            try:
                await self.store.append(
                    [
                        self._projection_write(
                            aggregate,
                            rebuilt.state,
                            rebuilt.version,
                            current.version if current else 0,
                        )
                    ]
                )
                return 1
            except ConflictError:
                continue  # written meanwhile: look again


def _event_version(record: Record) -> int | None:
    value = record.meta.get("event_version")
    return value if isinstance(value, int) and not isinstance(value, bool) else None
