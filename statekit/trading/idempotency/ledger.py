"""The ledger: reserve first, send with the key as client order id, record the answer.

The protocol is the package's (:mod:`statekit.trading.idempotency`); this module
holds :class:`IdempotencyLedger`, which places, and answers duplicates with the
outcome of the first placer.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from statekit.backend import Capability, Write
from statekit.errors import ValidationError
from statekit.store import StateStore
from statekit.trading.errors import (
    ExchangeUnavailable,
    IdempotencyConflict,
    OrderRejected,
    RateLimited,
)
from statekit.trading.exchange import ExchangeConnector, ExchangeOrder
from statekit.trading.idempotency.entries import (
    EntryBook,
    EntryStatus,
    LedgerEntry,
    PlacedOrder,
    replace,
)
from statekit.trading.idempotency.keys import OrderIntent, check_client_key
from statekit.trading.idempotency.outcomes import Recovery, Retry, lookup, recover, resolve
from statekit.trading.models import OrderSide, OrderType, TimeInForce

__all__ = ["DEFAULT_GRACE", "DEFAULT_RETENTION", "IdempotencyLedger", "Recorder"]

Recorder = Callable[[LedgerEntry, ExchangeOrder], Awaitable[PlacedOrder]]
"""Records an accepted order as a held reservation's outcome (:meth:`IdempotencyLedger.send`)."""

DEFAULT_RETENTION = timedelta(hours=24)
"""How long an entry answers for its key (Stripe keeps idempotency keys 24 hours)."""
DEFAULT_GRACE = 60.0
"""Seconds a ``reserved`` entry may stay unanswered before a duplicate caller
decides its placer died and resolves it itself."""


def _now() -> datetime:
    return datetime.now(UTC)


class IdempotencyLedger:
    """Places each intended order once, whatever retries, duplicates and crashes happen.

    See the package docstring for the protocol. The store needs compare-and-set.

    :param store: where entries live (``idempotency/<key>``).
    :param retention: how long an entry answers for its key; after it, the key
        reads as absent and a replay places again.
    :param grace: seconds a reservation may stay without an outcome before a
        duplicate caller resolves it itself (its placer presumably died).
    :param retry: retries of rate-limited and unanswered exchange calls.
    :param poll: first wait (seconds) of a duplicate polling for the first
        placer's outcome; it doubles up to ``max_poll``.
    :param clock: the time source for expiry and grace (tests pass their own).
    """

    def __init__(
        self,
        store: StateStore,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        grace: float = DEFAULT_GRACE,
        retry: Retry | None = None,
        poll: float = 0.005,
        max_poll: float = 0.25,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        store.require(Capability.COMPARE_AND_SET, "IdempotencyLedger")
        if retention <= timedelta(0):
            raise ValidationError("retention must be positive", reason="retention")
        self.store = store
        self.retention = retention
        self.grace = grace
        self.retry = retry or Retry()
        self.poll = poll
        self.max_poll = max_poll
        self._clock = clock
        self._book = EntryBook(store, clock)

    # -- reading -------------------------------------------------------------------

    async def entry(self, key: str) -> LedgerEntry | None:
        """The live entry of ``key`` (expired ones included; see :meth:`expired`)."""
        return await self._book.get(key)

    async def entries(self) -> AsyncIterator[LedgerEntry]:
        """Every live entry, in key order."""
        async for entry in self._book.scan():
            yield entry

    def expired(self, entry: LedgerEntry) -> bool:
        """True when ``entry`` is past the retention and so no longer answers for its key."""
        return self._clock() >= entry.reserved_at + self.retention

    # -- placing -------------------------------------------------------------------

    async def place(
        self,
        connector: ExchangeConnector,
        *,
        strategy_id: str,
        signal_id: str,
        symbol: str,
        side: OrderSide | str,
        type: OrderType | str,
        amount: Decimal,
        price: Decimal | None = None,
        time_in_force: TimeInForce | str = TimeInForce.GTC,
        key: str | None = None,
    ) -> PlacedOrder:
        """Place the order of this signal once; every duplicate gets the same result.

        :param time_in_force: sent with the order (GTC, IOC, FOK); part of the
            derived key only when it is not GTC.
        :param key: an idempotency key of the caller's own (Stripe style), up to 36
            of ``[A-Za-z0-9_-]``; by default the key is derived from all the
            parameters (:class:`OrderIntent`), so a changed amount or price is
            another key, and another order. With a key of its own, a caller that
            reuses it with other parameters gets IdempotencyConflict.

        :raises IdempotencyConflict: the key is in use with other parameters.
        :raises OrderRejected: the exchange refused it (now or for an earlier call).
        :raises ExchangeUnavailable: the outcome could not be learnt; the entry
            stays ``reserved`` and :meth:`recover` (or a later duplicate) resolves it.
        :raises RateLimited: still rate-limited after the retries; nothing was
            placed and the reservation was dropped.
        """
        intent = OrderIntent(
            strategy_id,
            signal_id,
            symbol,
            OrderSide(side),
            OrderType(type),
            amount,
            price,
            TimeInForce(time_in_force),
        )
        return await self.place_intent(connector, intent, key=key)

    async def place_intent(
        self, connector: ExchangeConnector, intent: OrderIntent, *, key: str | None = None
    ) -> PlacedOrder:
        """:meth:`place` for an :class:`OrderIntent` built beforehand."""
        key = intent.key if key is None else check_client_key(key)
        book = self._book
        held = await book.reserve(intent, key, connector.name, expect=0)
        resolve_first = False
        delay = self.poll
        while held is None:
            entry = await self.entry(key)
            if entry is None:
                held = await book.reserve(intent, key, connector.name, expect=0)
                continue
            if self.expired(entry):
                # Treated as absent; the exchange may still hold the old order (see docs).
                held = await book.reserve(intent, key, connector.name, expect=entry.version)
                continue
            done = _outcome(key, entry, intent)
            if done is not None:
                return done
            if (self._clock() - entry.claimed_at).total_seconds() >= self.grace:
                held = await book.claim(entry, connector.name)
                resolve_first = held is not None
                continue
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(self.max_poll, delay * 2)
        return await self._complete(connector, intent, held, resolve_first=resolve_first)

    def reservation(
        self, intent: OrderIntent, exchange: str, *, key: str | None = None
    ) -> tuple[LedgerEntry, Write]:
        """A fresh ``reserved`` entry for ``intent`` and the write storing it
        (``expect=0``), for a caller that stores it atomically with writes of its own
        (the state saying an order is being sent). Once it is stored, hand
        ``replace(entry, version=<its record's version>)`` to :meth:`send`; a
        ConflictError on it means the key is taken: use :meth:`place_intent`.
        """
        key = intent.key if key is None else check_client_key(key)
        entry = self._book.fresh(intent, key, exchange)
        return entry, self._book.entry_write(entry, 0)

    def placed_write(self, held: LedgerEntry, order: ExchangeOrder) -> Write:
        """The write recording ``order`` as the outcome of the reservation ``held``
        (compare-and-set on its version), for a caller storing it with its own writes;
        on a ConflictError on it, record with :meth:`record_placed` instead."""
        placed = replace(held, status=EntryStatus.PLACED, order=order, error=None)
        return self._book.entry_write(placed, held.version)

    async def record_placed(self, held: LedgerEntry, order: ExchangeOrder) -> PlacedOrder:
        """Record ``order`` as the outcome of ``held`` (retrying past a takeover)."""
        return await self._book.record_placed(held, order, replayed=False)

    async def send(
        self,
        connector: ExchangeConnector,
        intent: OrderIntent,
        held: LedgerEntry,
        *,
        record: Recorder | None = None,
    ) -> PlacedOrder:
        """Send the order of a reservation the caller stored (:meth:`reservation`),
        with :meth:`place_intent`'s retries and outcomes.

        :param record: records an accepted order instead of the ledger writing its
            outcome alone (e.g. storing :meth:`placed_write` with the caller's own
            state); it returns the PlacedOrder. Rejections, lookups and dropped
            reservations are recorded by the ledger as usual.
        """
        return await self._complete(connector, intent, held, resolve_first=False, record=record)

    async def _complete(
        self,
        connector: ExchangeConnector,
        intent: OrderIntent,
        held: LedgerEntry,
        *,
        resolve_first: bool,
        record: Recorder | None = None,
    ) -> PlacedOrder:
        """Send the order of a held reservation and record the outcome."""
        book = self._book
        if resolve_first:  # a request may have been sent before: ask before sending
            found = await lookup(connector, held.key, intent.symbol, self.retry)
            if found is not None:
                return await book.record_placed(held, found, replayed=True)
        rate_limited = unknown = 0
        while True:
            held = replace(held, attempts=held.attempts + 1)  # stored with the outcome
            try:
                order = await connector.create_order(
                    intent.symbol,
                    intent.type,
                    intent.side,
                    intent.amount,
                    intent.price,
                    client_order_id=held.key,
                    time_in_force=intent.time_in_force,
                )
            except RateLimited as exc:  # refused before taking effect
                if rate_limited >= self.retry.attempts:
                    await book.release(held)
                    raise
                await self.retry.pause(rate_limited, exc.retry_after)
                rate_limited += 1
                continue
            except OrderRejected as exc:
                # Also what a duplicate client id gets: is our order there already?
                found = await lookup(connector, held.key, intent.symbol, self.retry)
                if found is not None:
                    return await book.record_placed(held, found, replayed=False)
                await book.record_rejected(held, str(exc))
                raise
            except ExchangeUnavailable as exc:  # the order may or may not exist
                found = await lookup(connector, held.key, intent.symbol, self.retry)
                if found is not None:
                    return await book.record_placed(held, found, replayed=False)
                if unknown >= self.retry.attempts:
                    await book.release(held)  # known not placed: a later call may try again
                    raise ExchangeUnavailable(
                        f"order {held.key}: no answer after {unknown + 1} attempts; the "
                        "exchange does not have it, and the reservation was dropped",
                        exchange=exc.exchange,
                    ) from exc
                await self.retry.pause(unknown)
                unknown += 1
                continue
            if record is not None:
                return await record(held, order)
            return await book.record_placed(held, order, replayed=False)

    # -- recovery and retention ----------------------------------------------------

    async def resolve(
        self, connector: ExchangeConnector, key: str, symbol: str
    ) -> PlacedOrder | None:
        """Settle one key's outcome by asking the exchange by client order id; never sends.

        ``placed``: its order, as recorded. ``reserved``: the reservation is taken
        over (whatever its age: call this only for keys no live caller is placing,
        e.g. the reconciliation engine's own) and resolved like :meth:`recover`
        does: found, recorded as placed; not found, the reservation is dropped and
        None returned. ``rejected``: None. No entry (never reserved, or purged):
        the exchange is asked, and nothing is recorded.

        :raises ExchangeUnavailable: the exchange did not answer; nothing changed.
        """
        return await resolve(self._book, connector, key, symbol, self.retry)

    async def recover(self, connector: ExchangeConnector, *, older_than: float = 0.0) -> Recovery:
        """Resolve every entry left ``reserved`` by asking the exchange by client order id.

        Found: recorded as placed. Not found: the reservation is dropped (the
        order was never accepted; a signal fired again places it). Recovery
        never sends an order: after a crash, whether a stale signal should still
        trade is the strategy's call. Run it at start-up, after a crash.

        :param older_than: only entries whose holder took them at least this many
            seconds ago (leave in-flight placements of live processes alone).
        """
        return await recover(
            self._book, connector, self.retry, older_than=older_than, clock=self._clock
        )

    async def purge(self) -> int:
        """Delete expired entries (their history stays until pruned); returns how many."""
        purged = 0
        expired = [entry async for entry in self.entries() if self.expired(entry)]
        for entry in expired:
            if await self._book.expire(entry):
                purged += 1
        return purged


def _outcome(key: str, entry: LedgerEntry, intent: OrderIntent) -> PlacedOrder | None:
    """What a duplicate gets from an entry another caller holds: its recorded order,
    its rejection, or a conflict; None while the outcome is not recorded yet."""
    differences = entry.differences(intent)
    if differences:
        names = ", ".join(f"{n}: {stored} != {given}" for n, (stored, given) in differences.items())
        raise IdempotencyConflict(
            f"idempotency key {key} is in use with other parameters ({names})",
            key=key,
            differences=differences,
        )
    if entry.status is EntryStatus.PLACED:
        assert entry.order is not None
        return PlacedOrder(key, entry.order, replayed=True)
    if entry.status is EntryStatus.REJECTED:
        raise OrderRejected(f"order {key} was rejected: {entry.error}", exchange=entry.exchange)
    return None
