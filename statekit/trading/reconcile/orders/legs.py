"""Leg bookkeeping: an intent's orders at the exchange (its *legs*), kept up to date and saved.

Each intent being reconciled is a :class:`Member`: the intent, its status as read
and as changed, and the exchange reports learnt since the last save. Its live legs
are brought up to what the exchange says (:func:`refresh`; an unknown outcome is
asked by client order id through the idempotency ledger), and what changed is
saved in one batch fenced by the engine's lease (:func:`save`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from statekit.backend import Record, Write
from statekit.errors import ConflictError
from statekit.trading.errors import ExchangeUnavailable, OrderNotFound
from statekit.trading.exchange import ExchangeOrder
from statekit.trading.idempotency import EntryStatus, LedgerEntry, OrderIntent
from statekit.trading.models import OrderStatus
from statekit.trading.reconcile.base import Context
from statekit.trading.reconcile.intents import (
    STATUS_PREFIX,
    Condition,
    Intent,
    IntentStatus,
    IntentStore,
    Leg,
    actual_order_writes,
)

__all__ = [
    "STRATEGY_PREFIX",
    "Member",
    "apply_report",
    "matches",
    "matches_params",
    "order_intent",
    "refresh",
    "save",
    "set_condition",
]

STRATEGY_PREFIX = "intent:"
"""The ledger's ``strategy_id`` of an intent's orders: ``intent:<id>``."""


@dataclass
class Member:
    """One intent being reconciled, with its status as read and as changed."""

    intent: Intent
    status: IntentStatus
    before: str  # the status's JSON as stored, to skip writes that change nothing
    clock: Callable[[], datetime]
    new_orders: list[ExchangeOrder] = field(default_factory=list)
    seen_orders: list[ExchangeOrder] = field(default_factory=list)
    removed: bool = False
    gone: bool = False  # its removal is stored
    was_synced: tuple[Condition, int | None] = field(init=False)
    """The stored status's condition and observed generation."""
    outcomes: list[tuple[LedgerEntry, ExchangeOrder]] = field(default_factory=list)
    """Ledger outcomes (held reservation, accepted order) stored with the next save."""

    def __post_init__(self) -> None:
        self.saved()

    def saved(self) -> None:
        """The status as it is now is what the store holds (``before``)."""
        self.before = self.status.model_dump_json()
        self.was_synced = (self.status.condition, self.status.observed_generation)

    @property
    def changed(self) -> bool:
        return self.status.model_dump_json() != self.before


def order_intent(intent: Intent, leg: Leg) -> OrderIntent:
    """The ledger's view of a leg: its client order id is this intent's key."""
    return OrderIntent(
        strategy_id=STRATEGY_PREFIX + intent.id,
        signal_id=f"{intent.uid}.g{leg.generation}.a{leg.attempt}",
        symbol=leg.symbol,
        side=leg.side,
        type=leg.type,
        amount=leg.amount,
        price=leg.price,
        time_in_force=leg.time_in_force,
    )


def matches_params(leg: Leg, intent: Intent) -> bool:
    """The leg is the order the intent describes, whatever its amount."""
    spec = intent.spec
    return (
        leg.symbol == spec.symbol
        and leg.side is spec.side
        and leg.type is spec.type
        and leg.price == spec.price
        and leg.time_in_force is spec.time_in_force
    )


def matches(leg: Leg, intent: Intent, remaining: Decimal) -> bool:
    """The leg is the order the intent wants now: its parameters, for what remains."""
    return matches_params(leg, intent) and leg.remaining == remaining


def set_condition(member: Member, condition: Condition, reason: str, message: str) -> None:
    """Set the member's condition (``since`` moves only when the condition changes)."""
    status = member.status
    if status.condition is not condition:
        status.since = member.clock()
    status.condition = condition
    status.reason = reason
    status.message = message
    if condition is Condition.IN_SYNC:
        status.observed_generation = member.intent.generation


# -- refreshing ----------------------------------------------------------------------------------


async def refresh(
    ctx: Context,
    member: Member,
    open_orders: dict[str, ExchangeOrder],
    *,
    resolve: bool,
    snapshot: bool,
) -> None:
    """Bring every live leg up to what the exchange says; unknown outcomes are asked
    by client order id. Raises ExchangeUnavailable when the exchange cannot say.

    :param open_orders: the pass's snapshot of open orders, by client order id.
    :param resolve: settle unknown outcomes through the ledger (a plan only reads).
    :param snapshot: the snapshot may answer for legs it lists.
    """
    for index, leg in enumerate(member.status.legs):
        if not leg.live:
            continue
        report: ExchangeOrder | None = None
        if snapshot and leg.client_order_id in open_orders and leg.status is not None:
            report = open_orders[leg.client_order_id]
        elif leg.exchange_order_id is not None:
            report = await _fetch(ctx, member, leg)
        else:
            report = await _resolve(ctx, member, index, resolve=resolve)
            if member.status.legs[index].status is OrderStatus.REJECTED:
                continue
            if report is None:
                # Never accepted. Still wanted: decide() sends it again, same id.
                if not _resend_wanted(member, leg) or not resolve:
                    member.status.legs[index] = leg.model_copy(update={"absent": True})
                continue
        if report is not None:
            apply_report(member, index, report)


async def _fetch(ctx: Context, member: Member, leg: Leg) -> ExchangeOrder:
    """The report of an accepted leg, by its exchange order id."""
    assert leg.exchange_order_id is not None
    try:
        return await ctx.connector.fetch_order(leg.exchange_order_id, leg.symbol)
    except OrderNotFound:
        # The exchange had it. "Not found" now is not proof it is gone.
        report = await ctx.connector.fetch_order_by_client_id(leg.client_order_id, leg.symbol)
        if report is None:
            set_condition(
                member,
                Condition.UNKNOWN,
                "Missing",
                f"order {leg.exchange_order_id} was accepted but the exchange "
                "reports neither it nor its client order id; asking again later",
            )
            raise ExchangeUnavailable(
                f"order {leg.exchange_order_id} ({leg.client_order_id}) is "
                "missing from the exchange's reports",
                exchange=ctx.connector.name,
            ) from None
        return report


async def _resolve(
    ctx: Context, member: Member, index: int, *, resolve: bool
) -> ExchangeOrder | None:
    """The order of a leg whose outcome is unknown, asked by client order id through
    the ledger (which records what it learns; a plan only reads)."""
    leg = member.status.legs[index]
    entry = await ctx.ledger.entry(leg.client_order_id)
    if entry is not None and entry.status is EntryStatus.REJECTED:
        member.status.legs[index] = leg.model_copy(update={"status": OrderStatus.REJECTED})
        member.status.last_error = entry.error
        return None
    if not resolve:
        if entry is not None and entry.order is not None:
            return entry.order
        return await ctx.connector.fetch_order_by_client_id(leg.client_order_id, leg.symbol)
    placed = await ctx.ledger.resolve(ctx.connector, leg.client_order_id, leg.symbol)
    return None if placed is None else placed.order


def apply_report(member: Member, index: int, report: ExchangeOrder) -> None:
    """Record what the exchange reports of the leg at ``index`` (fills only grow)."""
    leg = member.status.legs[index]
    new = leg.exchange_order_id is None
    if not new and leg.status is report.status and leg.filled >= report.filled:
        return  # nothing new: no write (an idle pass writes nothing)
    member.status.legs[index] = leg.model_copy(
        update={
            "exchange_order_id": report.id,
            "status": report.status,
            # Fills only grow: an older report never takes a fill back.
            "filled": max(leg.filled, report.filled),
        }
    )
    (member.new_orders if new else member.seen_orders).append(report)


def _resend_wanted(member: Member, leg: Leg) -> bool:
    """An unsent leg is sent again (same client order id) only while it is still
    exactly the order the intent wants."""
    intent = member.intent
    return (
        not intent.deleting
        and member.status.stopped is None
        and leg.generation == intent.generation
        and leg is member.status.legs[-1]
        and matches(leg, intent, intent.spec.amount - member.status.filled)
    )


# -- saving --------------------------------------------------------------------------------------


def _order_writes(member: Member) -> list[Write]:
    """The actual-order records of what the exchange reported since the last save
    (the newest report per order)."""
    now = member.clock()
    new_ids = {o.client_order_id for o in member.new_orders}
    latest = {o.client_order_id: o for o in [*member.new_orders, *member.seen_orders]}
    writes: list[Write] = []
    for cid, order in latest.items():
        writes += actual_order_writes(member.intent.id, order, new=cid in new_ids, now=now)
    member.new_orders.clear()
    member.seen_orders.clear()
    return writes


async def save(
    ctx: Context, members: Sequence[Member], extra: Sequence[Write] = ()
) -> dict[str, Record]:
    """Store what changed (statuses, actual orders, removals, ledger outcomes) and
    ``extra`` in one fenced batch; the records stored, by key.

    A ledger outcome refused by its compare-and-set (the reservation was taken
    over) is recorded by the ledger on its own, and the rest saved without it.
    """
    outcomes = [o for member in members if not member.gone for o in member.outcomes]
    if outcomes:
        ledger = ctx.ledger
        recording = [ledger.placed_write(held, order) for held, order in outcomes]
        try:
            records = await _save(ctx, members, [*extra, *recording])
        except ConflictError as exc:
            if exc.key not in {w.key for w in recording}:
                raise
            for held, order in outcomes:
                await ledger.record_placed(held, order)
            records = None
        for member in members:
            member.outcomes.clear()
        if records is not None:
            return records
    return await _save(ctx, members, extra)


async def _save(
    ctx: Context, members: Sequence[Member], extra: Sequence[Write]
) -> dict[str, Record]:
    store = IntentStore(ctx.store, clock=ctx.clock)
    writes: list[Write] = list(extra)
    synced: list[Member] = []
    removing: list[Member] = []
    taken = [(member, list(member.new_orders), list(member.seen_orders)) for member in members]
    for member in members:
        if member.gone:
            continue
        writes += _order_writes(member)
        if member.removed:
            status = member.status if member.status.version else None
            writes += store.removal_writes(member.intent, status)
            removing.append(member)
            continue
        if not member.changed:
            continue
        if member.status.condition is Condition.IN_SYNC and member.was_synced != (
            Condition.IN_SYNC,
            member.intent.generation,
        ):
            synced.append(member)
        member.status.synced_at = ctx.clock()
        writes.append(store.status_write(member.status))
    if not writes:
        return {}
    try:
        records = await ctx.write(writes)
    except ConflictError:
        for member, new, seen in taken:  # not stored: kept for the next save
            member.new_orders[:0], member.seen_orders[:0] = new, seen
        raise
    for member in removing:
        member.gone = True
    by_key = {r.key: r for r in records}
    for member in members:
        record = by_key.get(STATUS_PREFIX + member.status.intent_id)
        if record is not None:
            member.status.version = record.version
            member.saved()
    now = ctx.clock()
    for member in synced:
        ctx.metrics.observe_lag((now - member.intent.changed_at).total_seconds())
    return by_key
