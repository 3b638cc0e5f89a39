"""Idempotent order placement: each intended order reaches the exchange once.

An intended order is an :class:`OrderIntent`: which strategy, which signal, and
the order's parameters. Its **idempotency key** is a hash of those, with no
timestamp, so the same signal fired twice (a retry, a restarted process, a
duplicated message) has the same key; the exchange receives that key as the
order's client order id.

:class:`IdempotencyLedger` keeps one entry per key, ``idempotency/<key>``, and
follows one protocol (docs/idempotency.md):

1. **Reserve first.** The entry is written with ``expect=0`` *before* anything
   is sent, so of any number of concurrent callers (tasks or processes) exactly
   one wins; the others wait for its result. (Seed 000 checked a cache, placed,
   then cached: two concurrent duplicates both placed, and a crash after placing
   lost the key.)
2. **Send** ``create_order`` with ``client_order_id=key``; record the answer
   (``placed`` or ``rejected``) with compare-and-set on the version reserved.
3. **Never guess an unknown outcome.** A timeout or lost answer is resolved by
   asking the exchange for the client order id: found means placed; not found
   means not accepted, so sending again is safe (the exchange also refuses a
   second order with the same client id, and that refusal is resolved the
   same way).
4. **Recover** what a crash left ``reserved``: :meth:`IdempotencyLedger.recover`
   asks the exchange by client id and records the order it finds; it never
   places one.

Entries expire after a retention (24 hours by default, as Stripe keeps its
idempotency keys): an expired entry reads as absent, so replaying a signal
after the retention places it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from statekit.backend import JSON, Capability, Expect, Record
from statekit.errors import ConflictError, ValidationError
from statekit.store import StateStore
from statekit.trading import kinds
from statekit.trading.errors import (
    ExchangeError,
    ExchangeUnavailable,
    IdempotencyConflict,
    OrderRejected,
    RateLimited,
)
from statekit.trading.exchange import ExchangeConnector, ExchangeOrder
from statekit.trading.models import OrderSide, OrderType, TimeInForce

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_RETENTION",
    "KEY_LENGTH",
    "KEY_PREFIX",
    "KIND",
    "EntryStatus",
    "IdempotencyLedger",
    "LedgerEntry",
    "OrderIntent",
    "PlacedOrder",
    "Recovery",
    "Retry",
    "check_client_key",
    "idempotency_key",
]

KEY_PREFIX = "idempotency/"
"""Ledger entries live under this prefix: ``idempotency/<key>``."""
KIND = kinds.IDEMPOTENCY
"""The kind of ledger entries."""
KEY_LENGTH = 32
"""Characters in a key: ``sk`` and 30 hex digits (120 bits of sha256).

32 alphanumerics fit the strictest common client-id rules (OKX ``clOrdId``:
up to 32 alphanumerics; Binance ``newClientOrderId`` and Bybit ``orderLinkId``:
up to 36 of ``[A-Za-z0-9_-]``...)."""
DEFAULT_RETENTION = timedelta(hours=24)
"""How long an entry answers for its key (Stripe keeps idempotency keys 24 hours)."""
DEFAULT_GRACE = 60.0
"""Seconds a ``reserved`` entry may stay unanswered before a duplicate caller
decides its placer died and resolves it itself."""
_CANONICAL_VERSION = "statekit.idempotency/1"
_RECORD_TRIES = 50
_CLIENT_KEY = re.compile(r"[A-Za-z0-9_-]{1,36}")
_PARAMS = ("strategy_id", "signal_id", "symbol", "side", "type", "amount", "price")
# Parameters added later: in the params (and the key) only when not at their default,
# so the keys of the intents that existed before them stay what they were.
_OPTIONAL_PARAMS = {"time_in_force": TimeInForce.GTC.value}


def _now() -> datetime:
    return datetime.now(UTC)


def _decimal(name: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str | float):
        raise ValidationError(
            f"{name} must be a Decimal, not {type(value).__name__}", reason=f"{name} type"
        )
    try:
        # A float goes through its shortest repr: 0.1 means Decimal("0.1") (as in the models).
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValidationError(f"{name} {value!r} is not a number", reason=name) from None
    if not number.is_finite() or number <= 0:
        raise ValidationError(f"{name} must be a finite number above 0, not {value!r}", reason=name)
    return number


def _canonical_number(value: Decimal) -> str:
    # normalize() makes 1.50 and 1.5 (and 1E+2 and 100) one text; "f" keeps it positional.
    return format(value.normalize(), "f")


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """One order a strategy means to place once: what identifies it and what it is.

    Amounts and prices are compared as numbers: ``Decimal("1.50")`` and
    ``Decimal("1.5")`` are the same intent (and key).

    :param strategy_id: the strategy firing it.
    :param signal_id: the signal (or leg of it) within the strategy; a new signal
        that wants a new order needs a new id.
    :param price: required for limit and stop-limit orders.
    :param time_in_force: sent with the order; part of the key only when it is
        not GTC, so a GTC intent has the key it had before time in force existed.
    """

    strategy_id: str
    signal_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    amount: Decimal
    price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC

    def __post_init__(self) -> None:
        for name in ("strategy_id", "signal_id", "symbol"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValidationError(f"{name} must be a non-empty str", reason=name)
        try:
            object.__setattr__(self, "side", OrderSide(self.side))
            object.__setattr__(self, "type", OrderType(self.type))
        except ValueError as exc:
            raise ValidationError(str(exc), reason="side or type") from None
        try:
            object.__setattr__(self, "time_in_force", TimeInForce(self.time_in_force))
        except ValueError as exc:
            raise ValidationError(str(exc), reason="time_in_force") from None
        object.__setattr__(self, "amount", _decimal("amount", self.amount))
        if self.price is not None:
            object.__setattr__(self, "price", _decimal("price", self.price))
        elif self.type in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            raise ValidationError(f"a {self.type.value} order needs a price", reason="price")

    def params(self) -> dict[str, str | None]:
        """The parameters as canonical text (numbers normalized), as stored in the entry.

        ``time_in_force`` is there only when it is not GTC (see :meth:`canonical`).
        """
        params: dict[str, str | None] = {
            "strategy_id": self.strategy_id,
            "signal_id": self.signal_id,
            "symbol": self.symbol,
            "side": self.side.value,
            "type": self.type.value,
            "amount": _canonical_number(self.amount),
            "price": None if self.price is None else _canonical_number(self.price),
        }
        if self.time_in_force is not TimeInForce.GTC:
            params["time_in_force"] = self.time_in_force.value
        return params

    def canonical(self) -> str:
        """The text hashed into the key: a versioned JSON array of the parameters.

        The parameters added after version 1 (``time_in_force``) are appended
        only when not at their default, so a key computed before they existed
        is still the key of the same intent.
        """
        params = self.params()
        fields = [_CANONICAL_VERSION, *(params[name] for name in _PARAMS)]
        fields += [params[name] for name in _OPTIONAL_PARAMS if name in params]
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))

    @property
    def key(self) -> str:
        """The idempotency key, also the client order id: ``sk`` + 30 hex digits."""
        digest = hashlib.sha256(self.canonical().encode()).hexdigest()
        return "sk" + digest[: KEY_LENGTH - 2]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> OrderIntent:
        """The intent back from :meth:`params` (as stored in a ledger entry)."""
        price = params.get("price")
        return cls(
            strategy_id=params["strategy_id"],
            signal_id=params["signal_id"],
            symbol=params["symbol"],
            side=OrderSide(params["side"]),
            type=OrderType(params["type"]),
            amount=Decimal(params["amount"]),
            price=None if price is None else Decimal(price),
            # an entry stored before time in force existed was a GTC order
            time_in_force=TimeInForce(params.get("time_in_force") or TimeInForce.GTC),
        )


def check_client_key(key: object) -> str:
    """Return ``key`` if exchanges accept it as a client order id, else raise ValidationError.

    Up to 36 characters of ``[A-Za-z0-9_-]``, which Binance, Bybit and most
    CCXT exchanges take (OKX: 32 alphanumerics; derived keys fit that too).
    """
    if not isinstance(key, str) or not _CLIENT_KEY.fullmatch(key):
        raise ValidationError(
            f"idempotency key {key!r} must be 1 to 36 characters of [A-Za-z0-9_-] "
            "(exchanges limit client order ids)",
            key=str(key),
            reason="client order id",
        )
    return key


def idempotency_key(
    *,
    strategy_id: str,
    signal_id: str,
    symbol: str,
    side: OrderSide | str,
    type: OrderType | str,
    amount: Decimal,
    price: Decimal | None = None,
    time_in_force: TimeInForce | str = TimeInForce.GTC,
) -> str:
    """The idempotency key (and client order id) of an order; see :class:`OrderIntent`."""
    return OrderIntent(
        strategy_id,
        signal_id,
        symbol,
        OrderSide(side),
        OrderType(type),
        amount,
        price,
        TimeInForce(time_in_force),
    ).key


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
        stored = {**_OPTIONAL_PARAMS, **self.params}
        given = {**_OPTIONAL_PARAMS, **intent.params()}
        return {
            name: (str(stored.get(name)), str(given[name]))
            for name in (*_PARAMS, *_OPTIONAL_PARAMS)
            if stored.get(name) != given[name]
        }


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


@dataclass(frozen=True, slots=True)
class Recovery:
    """What :meth:`IdempotencyLedger.recover` did.

    :param placed: entries found at the exchange and now recorded as placed.
    :param released: keys the exchange does not have: their reservation was
        dropped, so the signal, fired again, places the order.
    :param unresolved: keys still ``reserved`` because the exchange did not answer.
    """

    placed: list[PlacedOrder] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how patiently exchange calls are retried when they can be.

    A rate-limited request is sent again (nothing happened); an unanswered
    lookup is asked again. Waits grow ``backoff * 2**n`` up to ``max_backoff``,
    with jitter, and honour a rate limit's ``retry_after``.

    :param attempts: retries after the first try, per kind of failure.
    """

    attempts: int = 6
    backoff: float = 0.05
    max_backoff: float = 2.0

    async def pause(self, attempt: int, retry_after: float | None = None) -> None:
        delay = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, retry_after)
        await asyncio.sleep(delay)


class IdempotencyLedger:
    """Places each intended order once, whatever retries, duplicates and crashes happen.

    See the module docstring for the protocol. The store needs compare-and-set.

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

    # -- reading -------------------------------------------------------------------

    async def entry(self, key: str) -> LedgerEntry | None:
        """The live entry of ``key`` (expired ones included; see :meth:`expired`)."""
        record = await self.store.get(KEY_PREFIX + key)
        return None if record is None else LedgerEntry.from_record(record)

    async def entries(self) -> AsyncIterator[LedgerEntry]:
        """Every live entry, in key order."""
        async for record in self.store.scan(KEY_PREFIX, kind=KIND):
            yield LedgerEntry.from_record(record)

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
        held = await self._reserve(connector, intent, key, expect=0)
        resolve_first = False
        delay = self.poll
        while held is None:
            entry = await self.entry(key)
            if entry is None:
                held = await self._reserve(connector, intent, key, expect=0)
                continue
            if self.expired(entry):
                # Treated as absent; the exchange may still hold the old order (see docs).
                held = await self._reserve(connector, intent, key, expect=entry.version)
                continue
            differences = entry.differences(intent)
            if differences:
                names = ", ".join(
                    f"{n}: {stored} != {given}" for n, (stored, given) in differences.items()
                )
                raise IdempotencyConflict(
                    f"idempotency key {key} is in use with other parameters ({names})",
                    key=key,
                    differences=differences,
                )
            if entry.status is EntryStatus.PLACED:
                assert entry.order is not None
                return PlacedOrder(key, entry.order, replayed=True)
            if entry.status is EntryStatus.REJECTED:
                raise OrderRejected(
                    f"order {key} was rejected: {entry.error}", exchange=entry.exchange
                )
            if (self._clock() - entry.claimed_at).total_seconds() >= self.grace:
                held = await self._claim(entry, connector.name)
                resolve_first = held is not None
                continue
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(self.max_poll, delay * 2)
        return await self._complete(connector, intent, held, resolve_first=resolve_first)

    async def _reserve(
        self, connector: ExchangeConnector, intent: OrderIntent, key: str, *, expect: Expect
    ) -> LedgerEntry | None:
        """Write a fresh ``reserved`` entry; None when another caller got there first."""
        now = self._clock()
        entry = LedgerEntry(
            key=key,
            version=0,
            status=EntryStatus.RESERVED,
            params=intent.params(),
            exchange=connector.name,
            owner=uuid.uuid4().hex,
            reserved_at=now,
            claimed_at=now,
        )
        return await self._write(entry, expect)

    async def _claim(self, entry: LedgerEntry, exchange: str) -> LedgerEntry | None:
        """Take over a stale reservation; None when another caller took it first."""
        mine = _replace(entry, owner=uuid.uuid4().hex, claimed_at=self._clock(), exchange=exchange)
        return await self._write(mine, entry.version)

    async def _write(self, entry: LedgerEntry, expect: Expect) -> LedgerEntry | None:
        try:
            record = await self.store.put(
                KEY_PREFIX + entry.key,
                entry.to_json(),
                kind=KIND,
                meta={"status": entry.status.value, "owner": entry.owner},
                expect=expect,
            )
        except ConflictError:
            return None
        return _replace(entry, version=record.version)

    async def _complete(
        self,
        connector: ExchangeConnector,
        intent: OrderIntent,
        held: LedgerEntry,
        *,
        resolve_first: bool,
    ) -> PlacedOrder:
        """Send the order of a held reservation and record the outcome."""
        if resolve_first:  # a request may have been sent before: ask before sending
            found = await self._lookup(connector, held.key, intent.symbol)
            if found is not None:
                return await self._record_placed(held, found, replayed=True)
        rate_limited = unknown = 0
        while True:
            held = _replace(held, attempts=held.attempts + 1)  # stored with the outcome
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
                    await self._release(held)
                    raise
                await self.retry.pause(rate_limited, exc.retry_after)
                rate_limited += 1
                continue
            except OrderRejected as exc:
                # Also what a duplicate client id gets: is our order there already?
                found = await self._lookup(connector, held.key, intent.symbol)
                if found is not None:
                    return await self._record_placed(held, found, replayed=False)
                await self._record_rejected(held, str(exc))
                raise
            except ExchangeUnavailable as exc:  # the order may or may not exist
                found = await self._lookup(connector, held.key, intent.symbol)
                if found is not None:
                    return await self._record_placed(held, found, replayed=False)
                if unknown >= self.retry.attempts:
                    await self._release(held)  # known not placed: a later call may try again
                    raise ExchangeUnavailable(
                        f"order {held.key}: no answer after {unknown + 1} attempts; the "
                        "exchange does not have it, and the reservation was dropped",
                        exchange=exc.exchange,
                    ) from exc
                await self.retry.pause(unknown)
                unknown += 1
                continue
            return await self._record_placed(held, order, replayed=False)

    async def _lookup(
        self, connector: ExchangeConnector, key: str, symbol: str
    ) -> ExchangeOrder | None:
        """Ask the exchange for the order of this key, retrying while it does not answer.

        :raises ExchangeUnavailable: no answer after the retries; the entry stays reserved.
        """
        last: ExchangeError | None = None
        for attempt in range(self.retry.attempts + 1):
            try:
                return await connector.fetch_order_by_client_id(key, symbol)
            except RateLimited as exc:
                last = exc
                await self.retry.pause(attempt, exc.retry_after)
            except ExchangeUnavailable as exc:
                last = exc
                await self.retry.pause(attempt)
        raise ExchangeUnavailable(
            f"order {key}: outcome unknown (the exchange did not answer the lookup by "
            "client order id); the entry stays reserved, recover() resolves it",
            exchange=connector.name,
        ) from last

    async def _record_placed(
        self, held: LedgerEntry, order: ExchangeOrder, *, replayed: bool
    ) -> PlacedOrder:
        """Record ``order`` (which the exchange holds) as this key's result."""
        placed = _replace(held, status=EntryStatus.PLACED, order=order, error=None)
        expect = held.version
        for _ in range(_RECORD_TRIES):
            if await self._write(placed, expect) is not None:
                return PlacedOrder(held.key, order, replayed=replayed)
            # Someone took the entry over meanwhile. The exchange holds our order, so
            # that is the truth whatever they wrote, unless they recorded it already.
            current = await self.entry(held.key)
            if current is not None and current.status is EntryStatus.PLACED:
                assert current.order is not None
                return PlacedOrder(held.key, current.order, replayed=replayed)
            expect = 0 if current is None else current.version
        raise ConflictError(KEY_PREFIX + held.key, expect, expect + 1)

    async def _record_rejected(self, held: LedgerEntry, error: str) -> None:
        rejected = _replace(held, status=EntryStatus.REJECTED, error=error)
        # A conflict means another caller took over and will record its own answer.
        await self._write(rejected, held.version)

    async def _release(self, held: LedgerEntry) -> None:
        """Drop a reservation known not to have reached the exchange."""
        # A conflict: another caller holds it now; the outcome is theirs to record.
        with contextlib.suppress(ConflictError):
            await self.store.delete(
                KEY_PREFIX + held.key,
                meta={"status": "released", "owner": held.owner},
                expect=held.version,
            )

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
        entry = await self.entry(key)
        if entry is None:
            found = await self._lookup(connector, key, symbol)
            return None if found is None else PlacedOrder(key, found, replayed=True)
        if entry.status is EntryStatus.PLACED:
            assert entry.order is not None
            return PlacedOrder(key, entry.order, replayed=True)
        if entry.status is EntryStatus.REJECTED:
            return None
        held = await self._claim(entry, connector.name)
        if held is None:
            raise ExchangeUnavailable(
                f"order {key}: another caller took its reservation over meanwhile; "
                "its outcome is theirs to record",
                exchange=connector.name,
            )
        found = await self._lookup(connector, key, symbol)
        if found is None:
            await self._release(held)
            return None
        return await self._record_placed(held, found, replayed=True)

    async def recover(self, connector: ExchangeConnector, *, older_than: float = 0.0) -> Recovery:
        """Resolve every entry left ``reserved`` by asking the exchange by client order id.

        Found: recorded as placed. Not found: the reservation is dropped (the
        order was never accepted; a signal fired again places it). Recovery
        never sends an order: after a crash, whether a stale signal should still
        trade is the strategy's call. Run it at start-up, after a crash.

        :param older_than: only entries whose holder took them at least this many
            seconds ago (leave in-flight placements of live processes alone).
        """
        recovery = Recovery()
        stale = [
            entry
            async for entry in self.entries()
            if entry.status is EntryStatus.RESERVED
            and (self._clock() - entry.claimed_at).total_seconds() >= older_than
        ]
        for entry in stale:
            held = await self._claim(entry, connector.name)
            if held is None:
                continue  # someone else is resolving it
            symbol = held.params["symbol"]
            assert symbol is not None
            try:
                found = await self._lookup(connector, held.key, symbol)
            except ExchangeUnavailable:
                recovery.unresolved.append(held.key)
                continue
            if found is not None:
                recovery.placed.append(await self._record_placed(held, found, replayed=True))
            else:
                await self._release(held)
                recovery.released.append(held.key)
        return recovery

    async def purge(self) -> int:
        """Delete expired entries (their history stays until pruned); returns how many."""
        purged = 0
        expired = [entry async for entry in self.entries() if self.expired(entry)]
        for entry in expired:
            try:
                await self.store.delete(
                    KEY_PREFIX + entry.key, meta={"status": "expired"}, expect=entry.version
                )
                purged += 1
            except ConflictError:
                pass  # written again meanwhile: it is someone's live entry now
        return purged


def _replace(entry: LedgerEntry, **changes: Any) -> LedgerEntry:
    return dataclasses.replace(entry, **changes)
