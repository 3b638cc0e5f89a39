"""Desired and actual order state in the store: intents, their status, actual orders.

An **intent** is an order the strategy wants to exist (``intent/<id>``): symbol,
side, type, amount, price, time in force and an optional OCO group. Every change
of what it asks for moves its ``generation`` on by one; deleting it only marks it
``deleting`` (the engine's finalizer cancels its live order, then removes it).

Its **status** (``intent-status/<id>``) is written only by the engine holding the
scope's lease: the generation it last acted on (``observed_generation``), every
order it sent for the intent (its *legs*), the filled amount, the condition
(InSync, Pending, Drifted, Failed, Unknown) and the last error.

**Actual orders** (``order-actual/<client order id>``) are what the exchange last
reported about each order the engine sent, with an index by the exchange's own
order id. All three are versioned keys, so their full history stays in the store.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Self, TypeVar

from pydantic import Field, model_validator
from pydantic import ValidationError as PydanticError

from statekit.backend import ANY, Record, Write
from statekit.errors import AlreadyExists, ConflictError, NotFound, ValidationError
from statekit.store import StateStore
from statekit.trading import kinds
from statekit.trading.exchange import ExchangeOrder
from statekit.trading.models import (
    Money,
    OrderSide,
    OrderStatus,
    OrderType,
    Quantity,
    TimeInForce,
    UtcTime,
    _Model,
    to_json,
)

__all__ = [
    "ACTUAL_PREFIX",
    "INTENT_PREFIX",
    "STATUS_PREFIX",
    "ActualOrder",
    "ActualOrders",
    "Condition",
    "Intent",
    "IntentSpec",
    "IntentStatus",
    "IntentStore",
    "Leg",
    "Parsed",
    "actual_order_writes",
]

INTENT_PREFIX = "intent/"
STATUS_PREFIX = "intent-status/"
ACTUAL_PREFIX = "order-actual/"
_XID_PREFIX = "order-actual-xid/"
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
ZERO = Decimal(0)


def _now() -> datetime:
    return datetime.now(UTC)


def check_intent_id(intent_id: object) -> str:
    """Return ``intent_id`` if usable: 1-64 of ``[A-Za-z0-9_.:-]``; else ValidationError."""
    if not isinstance(intent_id, str) or not _ID.fullmatch(intent_id):
        raise ValidationError(
            f"intent id {intent_id!r} must be 1-64 characters of [A-Za-z0-9_.:-]",
            key=str(intent_id)[:64],
            reason="intent id",
        )
    return intent_id


class IntentSpec(_Model):
    """What the strategy wants: one order. ``amount`` is the total to fill over its life."""

    symbol: str = Field(min_length=1)
    side: OrderSide
    type: OrderType = OrderType.LIMIT
    amount: Quantity
    price: Money | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    oco_group: str | None = Field(default=None, pattern=_ID.pattern)

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.amount <= 0:
            raise ValueError(f"amount must be positive, not {self.amount}")
        if self.type is OrderType.LIMIT and (self.price is None or self.price <= 0):
            raise ValueError("a limit order needs a positive price")
        if self.type is OrderType.MARKET and self.price is not None:
            raise ValueError("a market order takes no price")
        if self.type not in (OrderType.LIMIT, OrderType.MARKET):
            raise ValueError(f"intents are limit or market orders, not {self.type.value}")
        return self


class Intent(_Model):
    """An intent as stored: the spec, its generation, and whether it is being deleted."""

    id: str
    uid: str = Field(min_length=1)
    """Random, new at each create: an id used again after a removal is another
    intent, whose orders get other client order ids."""
    spec: IntentSpec
    generation: int = Field(ge=1)
    deleting: bool = False
    created_at: UtcTime
    changed_at: UtcTime
    """When ``generation`` last moved: where reconciliation lag is counted from."""
    version: int = Field(default=0, exclude=True)
    """The store version of ``intent/<id>`` (not stored in the value)."""

    @classmethod
    def from_record(cls, record: Record) -> Intent:
        intent = cls.model_validate(record.data)
        intent.version = record.version
        return intent


class Condition(StrEnum):
    """Where an intent stands, as its status says."""

    IN_SYNC = "InSync"
    """The exchange matches the intent for its current generation (or the intent is done)."""
    PENDING = "Pending"
    """The engine acted (placed, cancelled) and waits to see the result."""
    DRIFTED = "Drifted"
    """The exchange differs in a way nobody asked for (an order cancelled outside the
    engine, an orphan); the engine is healing it."""
    FAILED = "Failed"
    """A terminal error (the exchange rejected the order, too many attempts): no retry
    until the intent changes."""
    UNKNOWN = "Unknown"
    """An outcome is unknown (no answer from the exchange); resolved by a query by
    client order id, never by assuming."""


class Leg(_Model):
    """One order the engine sent (or is sending) for an intent."""

    client_order_id: str
    generation: int
    attempt: int
    symbol: str
    side: OrderSide
    type: OrderType
    amount: Quantity
    price: Money | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    exchange_order_id: str | None = None
    status: OrderStatus | None = None
    """None: sent (or about to be) and the outcome is not known yet."""
    filled: Quantity = ZERO
    cancel_requested: bool = False
    absent: bool = False
    """The exchange confirmed (by client order id) it never accepted this order."""

    @property
    def live(self) -> bool:
        """It may still trade: accepted and not final, or its outcome is unknown."""
        return not self.absent and (self.status is None or not self.status.final)

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled


class IntentStatus(_Model):
    """What the engine knows and did about an intent (written under the scope's lease)."""

    intent_id: str
    observed_generation: int = 0
    condition: Condition = Condition.PENDING
    reason: str = ""
    message: str = ""
    since: UtcTime
    """When ``condition`` last changed."""
    legs: list[Leg] = Field(default_factory=list)
    stopped: str | None = None
    """Why the engine stopped trading this intent for good, whatever its generation
    (``OcoCancelled``: an OCO sibling filled; ``OcoSiblingDeleted``)."""
    done_generation: int = 0
    """The generation the engine finished (filled, IOC/FOK ended, OCO cancelled,
    rejected): nothing more is placed for it."""
    last_error: str | None = None
    synced_at: UtcTime | None = None
    """When the engine last compared it with the exchange."""
    version: int = Field(default=0, exclude=True)

    @classmethod
    def from_record(cls, record: Record) -> IntentStatus:
        status = cls.model_validate(record.data)
        status.version = record.version
        return status

    @property
    def filled(self) -> Decimal:
        """Filled over every leg of every generation."""
        return sum((leg.filled for leg in self.legs), ZERO)

    @property
    def live_legs(self) -> list[Leg]:
        return [leg for leg in self.legs if leg.live]

    @property
    def exchange_order_id(self) -> str | None:
        """The exchange id of the newest leg the exchange accepted."""
        for leg in reversed(self.legs):
            if leg.exchange_order_id:
                return leg.exchange_order_id
        return None

    def leg(self, client_order_id: str) -> Leg | None:
        for leg in self.legs:
            if leg.client_order_id == client_order_id:
                return leg
        return None


_M = TypeVar("_M")


class Parsed:
    """Intents and statuses parsed once per version, for a reader that looks at every
    one again and again without changing them (the engine's observe, each pass)."""

    def __init__(self) -> None:
        self._by_key: dict[str, tuple[int, Any]] = {}
        self._seen: set[str] = set()

    def get(self, record: Record, parse: Callable[[Record], _M]) -> _M:
        """``parse(record)``, or what it gave for this key's same version before."""
        self._seen.add(record.key)
        hit = self._by_key.get(record.key)
        if hit is not None and hit[0] == record.version:
            value: _M = hit[1]
            return value
        value = parse(record)
        self._by_key[record.key] = (record.version, value)
        return value

    def sweep(self) -> None:
        """Forget the keys not asked for since the last sweep (gone from the store)."""
        self._by_key = {k: v for k, v in self._by_key.items() if k in self._seen}
        self._seen = set()


class IntentStore:
    """Intents and their statuses in a store (seed 001's IntentStateStore, durable).

    :param store: the store; updates use compare-and-set, so it needs that capability.
    :param clock: the current UTC time (tests pass their own).
    """

    def __init__(
        self,
        store: StateStore,
        *,
        clock: Callable[[], datetime] = _now,
        parsed: Parsed | None = None,
        get_many: Callable[[Sequence[str]], Awaitable[dict[str, Record]]] | None = None,
    ) -> None:
        self.store = store
        self._clock = clock
        self._parsed = parsed
        self._get_many = get_many or store.get_many

    def _intent(self, record: Record) -> Intent:
        if self._parsed is None:
            return Intent.from_record(record)
        return self._parsed.get(record, Intent.from_record)

    def _status(self, record: Record) -> IntentStatus:
        if self._parsed is None:
            return IntentStatus.from_record(record)
        return self._parsed.get(record, IntentStatus.from_record)

    # -- intents (the strategy writes these) -----------------------------------------

    async def create(self, intent_id: str, spec: IntentSpec) -> Intent:
        """Store a new intent at generation 1.

        :raises AlreadyExists: an intent with this id exists (or is being deleted); a
            :class:`~statekit.errors.ConflictError`, with ``actual`` its head version.
        :raises ValidationError: a bad id, or an OCO group whose other legs trade
            another symbol.
        """
        check_intent_id(intent_id)
        await self._check_group(intent_id, spec)
        now = self._clock()
        intent = Intent(
            id=intent_id,
            uid=uuid.uuid4().hex[:12],
            spec=spec,
            generation=1,
            created_at=now,
            changed_at=now,
        )
        try:
            record = await self.store.put(
                INTENT_PREFIX + intent_id,
                to_json(intent),
                kind=kinds.INTENT,
                meta={"intent": "create"},
                expect=0,
            )
        except ConflictError as exc:
            raise AlreadyExists(
                exc.key,
                exc.actual,
                what="intent",
                message=f"intent {intent_id!r} exists already; update() changes it",
                backend=exc.backend,
            ) from None
        return Intent.from_record(record)

    async def get(self, intent_id: str) -> Intent | None:
        """The intent, or None when there is none (also once the engine removed it)."""
        record = await self.store.get(INTENT_PREFIX + check_intent_id(intent_id))
        return None if record is None else Intent.from_record(record)

    async def update(self, intent_id: str, **changes: object) -> Intent:
        """Change fields of an intent's spec (``price=...``, ``amount=...``); a real change
        moves its generation on. Retries its compare-and-set against concurrent updates.

        :raises NotFound: no such intent (a :class:`~statekit.errors.ValidationError`
            and a :class:`KeyError`).
        :raises ValidationError: it is being deleted, or the change makes a bad spec
            (nothing is stored then).
        """
        while True:
            current = await self._require(intent_id)
            try:
                spec = IntentSpec.model_validate({**current.spec.model_dump(), **changes})
            except PydanticError as exc:
                error = exc.errors()[0]
                where = ".".join(str(part) for part in error["loc"])
                raise ValidationError(
                    f"intent {intent_id!r}: {where + ': ' if where else ''}{error['msg']}",
                    key=INTENT_PREFIX + intent_id,
                    reason="spec",
                ) from exc
            if spec == current.spec:
                return current
            await self._check_group(intent_id, spec)
            record = await self._next_generation(current, "update", spec=spec)
            if record is not None:
                return Intent.from_record(record)

    async def delete(self, intent_id: str) -> Intent:
        """Ask for the intent to go: it is marked ``deleting``; the engine cancels its live
        order (and its OCO siblings'), then removes it. Deleting twice is harmless.

        :raises NotFound: no such intent (none was ever created, or the engine has
            removed it already).
        """
        while True:
            current = await self._require(intent_id, allow_deleting=True)
            if current.deleting:
                return current
            record = await self._next_generation(current, "delete", deleting=True)
            if record is not None:
                return Intent.from_record(record)

    async def _next_generation(self, current: Intent, why: str, **changes: object) -> Record | None:
        """Store ``current`` with ``changes`` as its next generation; None when another
        writer changed it meanwhile (the caller reads it again)."""
        changed = current.model_copy(
            update={**changes, "generation": current.generation + 1, "changed_at": self._clock()}
        )
        try:
            return await self.store.put(
                INTENT_PREFIX + current.id,
                to_json(changed),
                kind=kinds.INTENT,
                meta={"intent": why},
                expect=current.version,
            )
        except ConflictError:
            return None

    async def all(self, symbol: str | None = None, group: str | None = None) -> list[Intent]:
        """Every intent (deleting ones included), in id order, optionally of one symbol
        and/or one OCO group."""
        found = []
        async for record in self.store.scan(INTENT_PREFIX, kind=kinds.INTENT):
            intent = self._intent(record)
            if symbol is not None and intent.spec.symbol != symbol:
                continue
            if group is not None and intent.spec.oco_group != group:
                continue
            found.append(intent)
        return found

    async def group(self, group: str) -> list[Intent]:
        """The intents of one OCO group."""
        return await self.all(group=group)

    async def with_statuses(
        self, intent_ids: Sequence[str]
    ) -> list[tuple[Intent, IntentStatus | None]]:
        """The intents of ``intent_ids`` that exist, each with its status, in one read."""
        ids = [check_intent_id(i) for i in intent_ids]
        records = await self._get_many(
            [INTENT_PREFIX + i for i in ids] + [STATUS_PREFIX + i for i in ids]
        )
        found = []
        for intent_id in ids:
            record = records.get(INTENT_PREFIX + intent_id)
            if record is None:
                continue
            status = records.get(STATUS_PREFIX + intent_id)
            # A status is parsed afresh: its reader changes it (an intent is never changed).
            found.append(
                (
                    self._intent(record),
                    None if status is None else IntentStatus.from_record(status),
                )
            )
        return found

    # -- statuses (the engine writes these, fenced by its lease) ---------------------

    async def status(self, intent_id: str) -> IntentStatus | None:
        record = await self.store.get(STATUS_PREFIX + check_intent_id(intent_id))
        return None if record is None else IntentStatus.from_record(record)

    async def statuses(self) -> dict[str, IntentStatus]:
        found = {}
        async for record in self.store.scan(STATUS_PREFIX, kind=kinds.INTENT_STATUS):
            status = self._status(record)
            found[status.intent_id] = status
        return found

    def status_write(self, status: IntentStatus) -> Write:
        """The write storing ``status`` with compare-and-set on the version it was read at."""
        return Write(
            STATUS_PREFIX + status.intent_id,
            to_json(status),
            kinds.INTENT_STATUS,
            {"condition": status.condition.value, "reason": status.reason},
            status.version,
        )

    def removal_writes(self, intent: Intent, status: IntentStatus | None) -> list[Write]:
        """The writes that remove a finalized intent and its status (their history stays)."""
        writes = [
            Write(
                INTENT_PREFIX + intent.id, None, kinds.INTENT, {"intent": "removed"}, intent.version
            )
        ]
        if status is not None and status.version:
            writes.append(
                Write(
                    STATUS_PREFIX + intent.id,
                    None,
                    kinds.INTENT_STATUS,
                    {"intent": "removed"},
                    status.version,
                )
            )
        return writes

    async def history(self, intent_id: str, *, limit: int = 100) -> list[Record]:
        """The intent's versions, newest first (spec changes and the deletion)."""
        return await self.store.history(INTENT_PREFIX + check_intent_id(intent_id), limit=limit)

    async def status_history(self, intent_id: str, *, limit: int = 100) -> list[Record]:
        """The status's versions, newest first: every condition the engine recorded."""
        return await self.store.history(STATUS_PREFIX + check_intent_id(intent_id), limit=limit)

    # -- internals -------------------------------------------------------------------

    async def _require(self, intent_id: str, *, allow_deleting: bool = False) -> Intent:
        intent = await self.get(intent_id)
        if intent is None:
            raise NotFound(f"no intent {intent_id!r}", key=INTENT_PREFIX + intent_id, what="intent")
        if intent.deleting and not allow_deleting:
            raise ValidationError(
                f"intent {intent_id!r} is being deleted; create a new one instead",
                key=INTENT_PREFIX + intent_id,
                reason="deleting",
            )
        return intent

    async def _check_group(self, intent_id: str, spec: IntentSpec) -> None:
        if spec.oco_group is None:
            return
        for other in await self.group(spec.oco_group):
            if other.id != intent_id and other.spec.symbol != spec.symbol:
                raise ValidationError(
                    f"intent {intent_id!r}: OCO group {spec.oco_group!r} trades "
                    f"{other.spec.symbol} (intent {other.id!r}), not {spec.symbol}; the "
                    "legs of one group trade one symbol",
                    key=INTENT_PREFIX + intent_id,
                    reason="oco symbol",
                )


def actual_order_writes(
    intent_id: str, order: ExchangeOrder, *, new: bool, now: datetime
) -> list[Write]:
    """The writes recording ``order`` (keyed by its client order id) as an intent's
    actual order; ``new`` adds the index by the exchange's order id."""
    if order.client_order_id is None:
        raise ValidationError(
            f"order {order.id} has no client order id; the engine only tracks its own",
            reason="client order id",
        )
    actual = ActualOrder(intent_id=intent_id, order=order, synced_at=now)
    writes = [
        Write(ACTUAL_PREFIX + order.client_order_id, to_json(actual), kinds.ACTUAL_ORDER, {}, ANY)
    ]
    if new:
        writes.append(
            Write(
                _XID_PREFIX + order.id,
                {"client_order_id": order.client_order_id},
                kinds.INDEX,
                {},
                ANY,
            )
        )
    return writes


class ActualOrder(_Model):
    """What the exchange last reported about an order the engine sent."""

    intent_id: str
    order: ExchangeOrder
    synced_at: UtcTime
    version: int = Field(default=0, exclude=True)

    @classmethod
    def from_record(cls, record: Record) -> ActualOrder:
        actual = cls.model_validate(record.data)
        actual.version = record.version
        return actual


class ActualOrders:
    """Actual order state by client order id, with a lookup by exchange order id
    (seed 001's ActualStateStore, durable)."""

    def __init__(self, store: StateStore, *, clock: Callable[[], datetime] = _now) -> None:
        self.store = store
        self._clock = clock

    async def get(self, client_order_id: str) -> ActualOrder | None:
        record = await self.store.get(ACTUAL_PREFIX + client_order_id)
        return None if record is None else ActualOrder.from_record(record)

    async def by_exchange_id(self, exchange_order_id: str) -> ActualOrder | None:
        """The order with the exchange's id (what exchange callbacks carry)."""
        index = await self.store.get(_XID_PREFIX + exchange_order_id)
        if index is None or not isinstance(index.data, dict):
            return None
        client_order_id = index.data.get("client_order_id")
        return None if not isinstance(client_order_id, str) else await self.get(client_order_id)

    async def all(
        self, symbol: str | None = None, *, intent_id: str | None = None
    ) -> list[ActualOrder]:
        found = []
        async for record in self.store.scan(ACTUAL_PREFIX, kind=kinds.ACTUAL_ORDER):
            actual = ActualOrder.from_record(record)
            if symbol is not None and actual.order.symbol != symbol:
                continue
            if intent_id is not None and actual.intent_id != intent_id:
                continue
            found.append(actual)
        return found

    async def stale(self, max_age: float) -> list[ActualOrder]:
        """Orders not final whose last report is older than ``max_age`` seconds."""
        cutoff = self._clock() - timedelta(seconds=max_age)
        return [
            actual
            for actual in await self.all()
            if not actual.order.status.final and actual.synced_at < cutoff
        ]
