"""The ``orders`` reconciler: observing the exchange's orders, and acting on decisions.

See the package docstring for what it does; :mod:`.legs` keeps the legs,
:mod:`.decide` decides, :mod:`.oco` handles groups.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from statekit.errors import ConflictError
from statekit.trading.errors import ExchangeUnavailable, OrderNotFound, OrderRejected, RateLimited
from statekit.trading.exchange import ExchangeOrder
from statekit.trading.idempotency import LedgerEntry, OrderIntent, PlacedOrder
from statekit.trading.idempotency.entries import replace
from statekit.trading.models import OrderStatus
from statekit.trading.reconcile.base import Action, Context, Reconciler, Result
from statekit.trading.reconcile.intents import (
    Condition,
    Intent,
    IntentStatus,
    IntentStore,
    Leg,
    Parsed,
)
from statekit.trading.reconcile.orders.decide import Step, decide
from statekit.trading.reconcile.orders.legs import (
    STRATEGY_PREFIX,
    Member,
    apply_report,
    order_intent,
    refresh,
    save,
    set_condition,
)
from statekit.trading.reconcile.orders.oco import group_settled, key_of, load

__all__ = ["IntentReconciler"]

_STEPS = 6  # decide-act rounds per key before handing it back to the queue
_CHUNK = 256
"""Intents observe looks at between two turns it gives the event loop: a worker
reconciling a changed intent meanwhile waits for one chunk, not for the whole pass."""
_EXCHANGE_STEPS = frozenset({"cancel", "place", "place:drift", "send", "wait"})
"""Steps that ask the exchange for something: the legs are looked at again after them."""


class IntentReconciler(Reconciler):
    """Intent-driven order reconciliation (package docstring).

    :param max_attempts: legs placed per generation at most (drift re-placements
        included) before the intent is Failed (``TooManyAttempts``).
    """

    name = "orders"

    def __init__(self, *, max_attempts: int = 5) -> None:
        self.max_attempts = max_attempts
        self._open: dict[str, ExchangeOrder] = {}
        self._snapshot_keys: set[str] = set()  # keys of the pass that took self._open
        self._groups: dict[str, list[str]] = {}  # OCO group -> intent ids, as last observed
        self._parsed = Parsed()  # observe's intents and statuses, parsed once per version

    # -- the reconciler contract -------------------------------------------------------

    def watch_prefixes(self) -> tuple[str, ...]:
        return ("intent/",)

    def key_for_change(self, key: str) -> str | None:
        # The group of an OCO leg is not known from the key alone: the intent's own
        # key is queued, and reconcile() widens it to its group.
        return "intent:" + key.removeprefix("intent/") if key.startswith("intent/") else None

    async def observe(self, ctx: Context) -> list[str]:
        """One bulk look at the exchange's open orders, then every intent and status; the
        keys returned are those the comparison says need work (level-triggered: a key
        left out now is compared again next pass)."""
        # The open orders first, the statuses after: an order in the snapshot was
        # placed after its leg was stored, so a leg missing from the statuses read
        # after it is a real orphan.
        opened = await ctx.connector.fetch_open_orders()
        self._open = {o.client_order_id: o for o in opened if o.client_order_id}
        store = IntentStore(ctx.store, clock=ctx.clock, parsed=self._parsed)
        statuses = await store.statuses()
        groups: dict[str, list[tuple[Intent, IntentStatus | None]]] = {}
        owned: set[str] = set()
        for count, intent in enumerate(await store.all(), 1):
            if not ctx.scope.includes(intent.spec.symbol):
                continue
            status = statuses.get(intent.id)
            groups.setdefault(key_of(intent), []).append((intent, status))
            if status is not None:
                owned.update(leg.client_order_id for leg in status.legs)
            await _breathe(count)
        self._parsed.sweep()
        keys: set[str] = set()
        for count, (key, members) in enumerate(groups.items(), 1):
            if not self._settled(members):
                keys.add(key)
            await _breathe(count)
        self._groups = {
            key.removeprefix("oco:"): [intent.id for intent, _ in members]
            for key, members in groups.items()
            if key.startswith("oco:")
        }
        for order in opened:
            cid = order.client_order_id
            if cid and cid not in owned and ctx.scope.includes(order.symbol):
                entry = await ctx.ledger.entry(cid)
                strategy = entry.params.get("strategy_id") if entry else None
                if strategy and strategy.startswith(STRATEGY_PREFIX):
                    keys.add("orphan:" + cid)
        # The snapshot speaks for these keys' first look in this pass only: a key
        # looked at later (a watch hint, a requeue) asks the exchange itself.
        self._snapshot_keys = set(keys)
        return sorted(keys)

    def _settled(self, members: Sequence[tuple[Intent, IntentStatus | None]]) -> bool:
        """Nothing to do, by this pass's snapshot: each intent's status is in sync (or
        done, or failed) for its generation, and every live leg is open at the
        exchange exactly as recorded (no fill, no cancel since)."""
        for intent, status in members:
            if status is None or intent.deleting:
                return False
            if status.condition is Condition.IN_SYNC:
                if status.observed_generation != intent.generation:
                    return False
            elif status.condition is not Condition.FAILED:
                return False
            if status.condition is Condition.FAILED and status.done_generation != intent.generation:
                return False
            live = status.live_legs
            if live and (status.stopped or status.done_generation == intent.generation):
                return False  # stopped or done, yet an order rests: to be cancelled
            for leg in live:
                report = self._open.get(leg.client_order_id)
                if report is None or leg.status is None:
                    return False
                if report.status is not leg.status or report.filled != leg.filled:
                    return False
        return group_settled([status for _, status in members])

    async def plan(self, ctx: Context, key: str) -> list[Action]:
        if key.startswith("orphan:"):
            order = await self._orphan(ctx, key.removeprefix("orphan:"))
            if order is None:
                return []
            return [self._action(key, "cancel", order.symbol, f"orphan order {order.id}")]
        members, group = await load(ctx, key, self._groups)
        if group is not None:
            members, _ = await load(ctx, f"oco:{group}", self._groups)
        for member in members:
            await refresh(ctx, member, self._open, resolve=False, snapshot=True)
        actions: list[Action] = []
        for member in members:
            actions += [a for a, _ in self._decide(key, member, members)]
        return actions

    async def reconcile(self, ctx: Context, key: str) -> Result:
        if key.startswith("orphan:"):
            return await self._reconcile_orphan(ctx, key)
        members, group = await load(ctx, key, self._groups, self._parsed)
        if group is not None:  # one worker per group: the group's own key does the work
            return Result(enqueue=[f"oco:{group}"])
        result = Result()
        snapshot = key in self._snapshot_keys
        self._snapshot_keys.discard(key)
        try:
            await self._rounds(ctx, key, members, result, snapshot=snapshot)
        except Exception:
            # What was learnt and done before the failure is kept (best effort),
            # so the next attempt starts from it.
            with contextlib.suppress(Exception):
                await save(ctx, members)
            raise
        await save(ctx, members)
        members = [m for m in members if not m.removed]
        if not members:
            return result
        settled = (Condition.IN_SYNC, Condition.FAILED)
        result.in_sync = all(m.status.condition in settled for m in members)
        result.failed = any(m.status.condition is Condition.FAILED for m in members)
        return result

    async def _rounds(
        self, ctx: Context, key: str, members: list[Member], result: Result, *, snapshot: bool
    ) -> None:
        """Refresh, decide and act until nothing is left to do (or out of rounds).

        In an OCO group at most one order is placed per round, and the group is
        looked at again before the next one: an order that filled on arrival
        stops its siblings before they are sent. After a round that only kept books
        (in sync, done, stopped...) and sent nothing, the exchange is not asked again:
        the next decision is made on what the last refresh said."""
        stale = True  # the legs need a look at the exchange before deciding
        for round_ in range(_STEPS + 2 * len(members)):
            present = [m for m in members if not m.removed]
            if not present:
                return
            if stale:
                for member in present:
                    await refresh(
                        ctx, member, self._open, resolve=True, snapshot=snapshot and round_ == 0
                    )
            steps = [
                (member, action, step)
                for member in present
                for action, step in self._decide(key, member, present)
            ]
            if not steps:
                return
            stale = any(step in _EXCHANGE_STEPS for _, _, (step, _) in steps)
            await self._act(ctx, key, members, steps, result)

    # -- deciding -------------------------------------------------------------------------

    def _decide(self, key: str, member: Member, members: Sequence[Member]) -> list[Step]:
        return decide(self.name, key, member, members, max_attempts=self.max_attempts)

    def _action(self, key: str, verb: str, symbol: str, detail: str) -> Action:
        return Action(self.name, key, verb, symbol, detail)

    # -- acting ---------------------------------------------------------------------------

    async def _act(
        self,
        ctx: Context,
        key: str,
        members: list[Member],
        steps: list[tuple[Member, Action, tuple[str, Leg | None]]],
        result: Result,
    ) -> None:
        for member, action, (step, leg) in steps:
            if step == "wait":
                raise ExchangeUnavailable(
                    f"{member.intent.id}: an order's outcome is still unknown",
                    exchange=ctx.connector.name,
                )
            result.actions.append(action)
            ctx.metrics.actions += 1
            if step == "cancel":
                assert leg is not None
                await self._cancel(ctx, member, leg)
            elif step == "remove":
                member.removed = True  # written with the others' statuses below
            elif step.startswith("stop:"):
                member.status.stopped = step.removeprefix("stop:")
            elif step.startswith("done:"):
                reason = step.removeprefix("done:")
                stop = reason if reason.startswith("Oco") else member.status.stopped
                member.status.done_generation = member.intent.generation
                member.status.stopped = stop
                set_condition(member, Condition.IN_SYNC, reason, "")
            elif step.startswith("failed:"):
                reason = step.removeprefix("failed:")
                member.status.done_generation = member.intent.generation
                ctx.metrics.terminal += 1
                message = member.status.last_error or reason
                ctx.metrics.last_error = f"{self.name}/{key}: {member.intent.id}: {message}"
                set_condition(member, Condition.FAILED, reason, message)
            elif step == "insync":
                set_condition(member, Condition.IN_SYNC, "Resting", "")
            elif step in ("place", "place:drift", "send"):
                if step == "place:drift":
                    ctx.metrics.drifts += 1
                    set_condition(
                        member,
                        Condition.DRIFTED,
                        "CancelledOutside",
                        "the order left the book without the engine asking; placing it again",
                    )
                await self._place(ctx, member, leg)
                if len(members) > 1:
                    break  # decide again before a sibling is sent
        if any(m.removed for m in members):
            await save(ctx, members)

    async def _cancel(self, ctx: Context, member: Member, leg: Leg) -> None:
        index = member.status.legs.index(leg)
        member.status.legs[index] = leg.model_copy(update={"cancel_requested": True})
        assert leg.exchange_order_id is not None
        try:
            report = await ctx.connector.cancel_order(leg.exchange_order_id, leg.symbol)
        except OrderNotFound:
            report = await ctx.connector.fetch_order(leg.exchange_order_id, leg.symbol)
        apply_report(member, index, report)
        set_condition(member, Condition.PENDING, "Cancelling", f"cancelled {leg.client_order_id}")

    async def _place(self, ctx: Context, member: Member, resend: Leg | None) -> None:
        intent, status = member.intent, member.status
        spec = intent.spec
        if resend is None:
            attempt = 1 + max(
                (leg.attempt for leg in status.legs if leg.generation == intent.generation),
                default=0,
            )
            leg = Leg(
                client_order_id="",  # derived below, from the leg itself
                generation=intent.generation,
                attempt=attempt,
                symbol=spec.symbol,
                side=spec.side,
                type=spec.type,
                amount=spec.amount - status.filled,
                price=spec.price,
                time_in_force=spec.time_in_force,
            )
            placing = order_intent(intent, leg)
            leg.client_order_id = placing.key
            status.legs.append(leg)
            if status.condition is not Condition.DRIFTED:
                set_condition(
                    member, Condition.PENDING, "Placing", f"placing {leg.client_order_id}"
                )
            # Stored (under the lease) before anything is sent, in one batch with the
            # ledger's reservation: a crash from here on leaves a leg whose outcome
            # the next holder asks the exchange about.
            held = await self._reserve(ctx, member, placing, leg.client_order_id)
        else:
            leg = resend
            placing = order_intent(intent, leg)
            held = None
        index = status.legs.index(leg)

        async def record(held: LedgerEntry, order: ExchangeOrder) -> PlacedOrder:
            # Stored with the member's next save (its status in sync, its order).
            member.outcomes.append((held, order))
            return PlacedOrder(held.key, order, replayed=False)

        try:
            if held is None:
                placed = await ctx.ledger.place_intent(ctx.connector, placing)
            else:
                placed = await ctx.ledger.send(ctx.connector, placing, held, record=record)
        except OrderRejected as exc:
            status.legs[index] = leg.model_copy(update={"status": OrderStatus.REJECTED})
            status.last_error = str(exc)
            return
        except RateLimited as exc:
            # Refused before taking effect, and the ledger dropped the reservation.
            status.legs[index] = leg.model_copy(update={"absent": True})
            status.last_error = str(exc)
            raise
        except ExchangeUnavailable as exc:
            status.last_error = str(exc)
            set_condition(member, Condition.UNKNOWN, "NoAnswer", str(exc))
            await save(ctx, [member])
            raise
        apply_report(member, index, placed.order)

    async def _reserve(
        self, ctx: Context, member: Member, placing: OrderIntent, key: str
    ) -> LedgerEntry | None:
        """Save the member with the ledger's reservation of ``placing`` (whose key,
        ``placing.key``, is ``key``: computed once); the held entry, or None when the
        key was reserved already (then the ledger places)."""
        entry, reserving = ctx.ledger.reservation(placing, ctx.connector.name, key=key)
        try:
            records = await save(ctx, [member], [reserving])
        except ConflictError as exc:
            if exc.key != reserving.key:
                raise
            await save(ctx, [member])
            return None
        return replace(entry, version=records[reserving.key].version)

    # -- orphans --------------------------------------------------------------------------

    async def _orphan(self, ctx: Context, cid: str) -> ExchangeOrder | None:
        """The open order ``cid`` if it is an intent's order that no status lists."""
        entry = await ctx.ledger.entry(cid)
        if entry is None:
            return None
        strategy = entry.params.get("strategy_id") or ""
        symbol = entry.params.get("symbol") or ""
        if not strategy.startswith(STRATEGY_PREFIX):
            return None
        intent_id = strategy.removeprefix(STRATEGY_PREFIX)
        status = await IntentStore(ctx.store).status(intent_id)
        if status is not None and status.leg(cid) is not None:
            return None
        order = await ctx.connector.fetch_order_by_client_id(cid, symbol)
        return order if order is not None and not order.status.final else None

    async def _reconcile_orphan(self, ctx: Context, key: str) -> Result:
        order = await self._orphan(ctx, key.removeprefix("orphan:"))
        if order is None:
            return Result()
        ctx.metrics.drifts += 1
        ctx.metrics.actions += 1
        await ctx.connector.cancel_order(order.id, order.symbol)
        return Result(
            actions=[self._action(key, "cancel", order.symbol, f"orphan order {order.id}")]
        )


async def _breathe(count: int) -> None:
    """Give the event loop a turn every :data:`_CHUNK` items of a long loop."""
    if count % _CHUNK == 0:
        await asyncio.sleep(0)
