"""The ledger's entries: what ``idempotency/<key>`` holds, and how it changes.

An entry is ``reserved`` before anything is sent, then ``placed`` or
``rejected``. Every change is a compare-and-set on the entry's version, so of
several callers racing for a key exactly one writes; :class:`EntryBook` turns a
lost race into None (or, for a placed order, into the outcome already recorded).
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from statekit.backend import JSON, Expect, Record, Write
from statekit.errors import ConflictError, ValidationError
from statekit.store import StateStore
from statekit.trading import kinds
from statekit.trading.exchange import ExchangeOrder
from statekit.trading.idempotency.keys import OrderIntent, differences

__all__ = ["KEY_PREFIX", "KIND", "EntryBook", "EntryStatus", "LedgerEntry", "PlacedOrder"]

KEY_PREFIX = "idempotency/"
"""Ledger entries live under this prefix: ``idempotency/<key>``."""
KIND = kinds.IDEMPOTENCY
"""The kind of ledger entries."""
_RECORD_TRIES = 50


class EntryStatus(StrEnum):
    """Where a ledger entry stands."""

    RESERVED = "reserved"
    """Claimed by a placer; the outcome is not recorded yet (in flight, or its placer died)."""
    PLACED = "placed"
    """The exchange has the order; the entry holds it as first reported."""
    REJECTED = "rejected"
    """The exchange refused the order; final for this key (a new signal needs a new id)."""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One ledger entry as stored under ``idempotency/<key>``.

    :param version: the entry's version in the store (its compare-and-set token).
    :param reserved_at: when the key was first reserved; expiry counts from here.
    :param claimed_at: when the current owner took the entry (its placer, or a
        caller that took over a stale reservation).
    :param owner: a random id of the call that holds the entry.
    :param attempts: create_order requests sent for this key.
    """

    key: str
    version: int
    status: EntryStatus
    params: dict[str, str | None]
    exchange: str
    owner: str
    reserved_at: datetime
    claimed_at: datetime
    attempts: int = 0
    order: ExchangeOrder | None = None
    error: str | None = None

    @classmethod
    def from_record(cls, record: Record) -> LedgerEntry:
        data = record.data
        if not isinstance(data, dict):
            raise ValidationError(f"{record.key!r} is not a ledger entry", key=record.key)
        order = data.get("order")
        params = data["params"]
        assert isinstance(params, dict)
        return cls(
            key=str(data["key"]),
            version=record.version,
            status=EntryStatus(str(data["status"])),
            params={k: None if v is None else str(v) for k, v in params.items()},
            exchange=str(data["exchange"]),
            owner=str(data["owner"]),
            reserved_at=datetime.fromisoformat(str(data["reserved_at"])),
            claimed_at=datetime.fromisoformat(str(data["claimed_at"])),
            attempts=int(str(data.get("attempts", 0))),
            order=None if order is None else ExchangeOrder.model_validate(order),
            error=None if data.get("error") is None else str(data["error"]),
        )

    def to_json(self) -> dict[str, JSON]:
        data: dict[str, JSON] = {
            "key": self.key,
            "status": self.status.value,
            "params": dict(self.params),
            "exchange": self.exchange,
            "owner": self.owner,
            "reserved_at": self.reserved_at.isoformat(),
            "claimed_at": self.claimed_at.isoformat(),
            "attempts": self.attempts,
        }
        if self.order is not None:
            data["order"] = self.order.model_dump(mode="json", exclude_none=True)
        if self.error is not None:
            data["error"] = self.error
        return data

    def differences(self, intent: OrderIntent) -> dict[str, tuple[str, str]]:
        """The parameters where ``intent`` differs from this entry: ``{name: (stored, given)}``.

        A parameter left out of either (an entry stored before it existed, or
        one at its default) reads as its default.
        """
        return differences(self.params, intent)


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """The result of :meth:`IdempotencyLedger.place`: the one order of its key.

    :param key: the idempotency key, which is the order's client order id.
    :param order: the order as the exchange reported it when it was recorded.
    :param replayed: True when this call sent nothing and returns what an
        earlier call (or a concurrent duplicate) placed.
    """

    key: str
    order: ExchangeOrder
    replayed: bool

    @property
    def exchange_order_id(self) -> str:
        return self.order.id


def replace(entry: LedgerEntry, **changes: Any) -> LedgerEntry:
    """``entry`` with ``changes`` (a copy; entries are frozen)."""
    return dataclasses.replace(entry, **changes)


class EntryBook:
    """The entries in ``store``; every write is a compare-and-set on the entry's version.

    :param clock: the time stamped on reservations and claims.
    """

    def __init__(self, store: StateStore, clock: Callable[[], datetime]) -> None:
        self.store = store
        self._clock = clock

    async def get(self, key: str) -> LedgerEntry | None:
        """The live entry of ``key`` (expired ones included)."""
        record = await self.store.get(KEY_PREFIX + key)
        return None if record is None else LedgerEntry.from_record(record)

    async def scan(self) -> AsyncIterator[LedgerEntry]:
        """Every live entry, in key order."""
        async for record in self.store.scan(KEY_PREFIX, kind=KIND):
            yield LedgerEntry.from_record(record)

    async def reserve(
        self, intent: OrderIntent, key: str, exchange: str, *, expect: Expect
    ) -> LedgerEntry | None:
        """Write a fresh ``reserved`` entry; None when another caller got there first."""
        return await self.write(self.fresh(intent, key, exchange), expect)

    async def claim(self, entry: LedgerEntry, exchange: str) -> LedgerEntry | None:
        """Take over a stale reservation; None when another caller took it first."""
        mine = replace(entry, owner=uuid.uuid4().hex, claimed_at=self._clock(), exchange=exchange)
        return await self.write(mine, entry.version)

    def fresh(self, intent: OrderIntent, key: str, exchange: str) -> LedgerEntry:
        """A new ``reserved`` entry (not stored: version 0)."""
        now = self._clock()
        return LedgerEntry(
            key=key,
            version=0,
            status=EntryStatus.RESERVED,
            params=intent.params(),
            exchange=exchange,
            owner=uuid.uuid4().hex,
            reserved_at=now,
            claimed_at=now,
        )

    @staticmethod
    def entry_write(entry: LedgerEntry, expect: Expect) -> Write:
        """The write storing ``entry`` if its head is ``expect``."""
        return Write(
            KEY_PREFIX + entry.key,
            entry.to_json(),
            KIND,
            {"status": entry.status.value, "owner": entry.owner},
            expect,
        )

    async def write(self, entry: LedgerEntry, expect: Expect) -> LedgerEntry | None:
        """Store ``entry`` if its head is ``expect``; None when it is not."""
        try:
            (record,) = await self.store.append([self.entry_write(entry, expect)])
        except ConflictError:
            return None
        return replace(entry, version=record.version)

    async def record_placed(
        self, held: LedgerEntry, order: ExchangeOrder, *, replayed: bool
    ) -> PlacedOrder:
        """Record ``order`` (which the exchange holds) as this key's result."""
        placed = replace(held, status=EntryStatus.PLACED, order=order, error=None)
        expect = held.version
        for _ in range(_RECORD_TRIES):
            if await self.write(placed, expect) is not None:
                return PlacedOrder(held.key, order, replayed=replayed)
            # Someone took the entry over meanwhile. The exchange holds our order, so
            # that is the truth whatever they wrote, unless they recorded it already.
            current = await self.get(held.key)
            if current is not None and current.status is EntryStatus.PLACED:
                assert current.order is not None
                return PlacedOrder(held.key, current.order, replayed=replayed)
            expect = 0 if current is None else current.version
        raise ConflictError(KEY_PREFIX + held.key, expect, expect + 1)

    async def record_rejected(self, held: LedgerEntry, error: str) -> None:
        rejected = replace(held, status=EntryStatus.REJECTED, error=error)
        # A conflict means another caller took over and will record its own answer.
        await self.write(rejected, held.version)

    async def release(self, held: LedgerEntry) -> None:
        """Drop a reservation known not to have reached the exchange."""
        # A conflict: another caller holds it now; the outcome is theirs to record.
        with contextlib.suppress(ConflictError):
            await self.store.delete(
                KEY_PREFIX + held.key,
                meta={"status": "released", "owner": held.owner},
                expect=held.version,
            )

    async def expire(self, entry: LedgerEntry) -> bool:
        """Delete an expired entry; False when it was written again meanwhile."""
        try:
            await self.store.delete(
                KEY_PREFIX + entry.key, meta={"status": "expired"}, expect=entry.version
            )
        except ConflictError:
            return False  # written again meanwhile: it is someone's live entry now
        return True
