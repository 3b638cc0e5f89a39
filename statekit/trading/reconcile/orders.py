"""The built-in ``orders`` reconciler: make the exchange's orders match the intents.

One work key per intent (``intent:<id>``), or per OCO group (``oco:<group>``, its
legs reconciled together), plus ``orphan:<client order id>`` for an open order the
engine sent that no intent owns any more. For each, after refreshing what the
exchange says about the intent's orders (*legs*):

- **unknown outcome** (sent, no answer): asked by client order id. Found: recorded.
  Not found, and still wanted: sent again with the *same* client order id through
  the idempotency ledger (the exchange refuses a second order with one id, and the
  ledger resolves that refusal by the same query). Never assumed placed or lost.
- **not wanted** (deleting, filled, an OCO sibling triggered): live legs are cancelled;
  once none is live, a deleting intent is removed (its finalizer) and any other is
  marked done.
- **wanted**: a live leg matching the desired order (symbol, side, type, price,
  time in force, and the remaining amount: the intent's amount minus everything
  filled on every leg) is kept; any other live leg is cancelled first (an amend is
  cancel-and-replace: nothing new is placed while an old order may still fill);
  with no live leg, a new leg is placed, its client order id derived from
  (intent uid, generation, attempt), after its status is stored under the lease.
- a resting GTC leg that ended cancelled or expired without the engine asking is
  **drift**: placed again (a new attempt), up to ``max_attempts`` per generation.
  An IOC/FOK or market leg that ended is the end of that generation. A rejected leg
  is a terminal failure until the intent changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from statekit.backend import Write
from statekit.trading.errors import (
    ExchangeUnavailable,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    ReconcileError,
)
from statekit.trading.exchange import ExchangeOrder
from statekit.trading.idempotency import EntryStatus, OrderIntent
from statekit.trading.models import OrderStatus, OrderType, TimeInForce
from statekit.trading.reconcile.base import Action, Context, Reconciler, Result
from statekit.trading.reconcile.intents import (
    Condition,
    Intent,
    IntentStatus,
    IntentStore,
    Leg,
    actual_order_writes,
)

__all__ = ["STRATEGY_PREFIX", "IntentReconciler"]

STRATEGY_PREFIX = "intent:"
"""The ledger's ``strategy_id`` of an intent's orders: ``intent:<id>``."""
ZERO = Decimal(0)
_STEPS = 6  # decide-act rounds per key before handing it back to the queue
_Step = tuple[Action, tuple[str, "Leg | None"]]


@dataclass
class _Member:
    """One intent being reconciled, with its status as read and as changed."""

    intent: Intent
    status: IntentStatus
    before: str  # the status's JSON as read, to skip writes that change nothing
    clock: Callable[[], datetime]
    new_orders: list[ExchangeOrder] = field(default_factory=list)
    seen_orders: list[ExchangeOrder] = field(default_factory=list)
    removed: bool = False
    gone: bool = False  # its removal is stored

    @property
    def changed(self) -> bool:
        return self.status.model_dump_json() != self.before


def _order_intent(intent: Intent, leg: Leg) -> OrderIntent:
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


class IntentReconciler(Reconciler):
    """Intent-driven order reconciliation (module docstring).

    :param max_attempts: legs placed per generation at most (drift re-placements
        included) before the intent is Failed (``TooManyAttempts``).
    """

    name = "orders"

    def __init__(self, *, max_attempts: int = 5) -> None:
        self.max_attempts = max_attempts
        self._open: dict[str, ExchangeOrder] = {}
        self._snapshot_keys: set[str] = set()  # keys of the pass that took self._open
        self._groups: dict[str, list[str]] = {}  # OCO group -> intent ids, as last observed

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
        store = IntentStore(ctx.store, clock=ctx.clock)
        statuses = await store.statuses()
        groups: dict[str, list[tuple[Intent, IntentStatus | None]]] = {}
        owned: set[str] = set()
        for intent in await store.all():
            if not ctx.scope.includes(intent.spec.symbol):
                continue
            status = statuses.get(intent.id)
            groups.setdefault(self._key_of(intent), []).append((intent, status))
            if status is not None:
                owned.update(leg.client_order_id for leg in status.legs)
        keys = {key for key, members in groups.items() if not self._settled(members)}
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
        if len(members) > 1:  # OCO: once a leg filled, no other leg may rest
            filled = [s for _, s in members if s is not None and s.filled > 0]
            resting = [s for _, s in members if s is not None and s.live_legs]
            if filled and any(s not in filled for s in resting):
                return False
        return True

    async def plan(self, ctx: Context, key: str) -> list[Action]:
        if key.startswith("orphan:"):
            order = await self._orphan(ctx, key.removeprefix("orphan:"))
            if order is None:
                return []
            return [self._action(key, "cancel", order.symbol, f"orphan order {order.id}")]
        members, group = await self._load(ctx, key)
        if group is not None:
            members, _ = await self._load(ctx, f"oco:{group}")
        for member in members:
            await self._refresh(ctx, member, resolve=False, snapshot=True)
        actions: list[Action] = []
        for member in members:
            actions += [a for a, _ in self._decide(key, member, members)]
        return actions

    async def reconcile(self, ctx: Context, key: str) -> Result:
        if key.startswith("orphan:"):
            return await self._reconcile_orphan(ctx, key)
        members, group = await self._load(ctx, key)
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
                await self._save(ctx, members)
            raise
        await self._save(ctx, members)
        members = [m for m in members if not m.removed]
        if not members:
            return result
        settled = (Condition.IN_SYNC, Condition.FAILED)
        result.in_sync = all(m.status.condition in settled for m in members)
        result.failed = any(m.status.condition is Condition.FAILED for m in members)
        return result

    async def _rounds(
        self, ctx: Context, key: str, members: list[_Member], result: Result, *, snapshot: bool
    ) -> None:
        """Refresh, decide and act until nothing is left to do (or out of rounds).

        In an OCO group at most one order is placed per round, and the group is
        looked at again before the next one: an order that filled on arrival
        stops its siblings before they are sent."""
        for round_ in range(_STEPS + 2 * len(members)):
            present = [m for m in members if not m.removed]
            if not present:
                return
            for member in present:
                await self._refresh(ctx, member, resolve=True, snapshot=snapshot and round_ == 0)
            steps = [
                (member, action, step)
                for member in present
                for action, step in self._decide(key, member, present)
            ]
            if not steps:
                return
            await self._act(ctx, key, members, steps, result)

    # -- loading and refreshing -----------------------------------------------------------

    def _key_of(self, intent: Intent) -> str:
        group = intent.spec.oco_group
        return f"oco:{group}" if group else f"intent:{intent.id}"

    async def _load(self, ctx: Context, key: str) -> tuple[list[_Member], str | None]:
        """The members of a work key, read in one round trip; for the key of an intent
        in an OCO group, no members and the group (whose key does the work)."""
        store = IntentStore(ctx.store, clock=ctx.clock)
        if key.startswith("oco:"):
            group = key.removeprefix("oco:")
            ids = self._groups.get(group)
            if ids is None:  # not seen by the last observe: find its members
                ids = [intent.id for intent in await store.group(group)]
            pairs = [p for p in await store.with_statuses(ids) if p[0].spec.oco_group == group]
        elif key.startswith("intent:"):
            pairs = await store.with_statuses([key.removeprefix("intent:")])
            if pairs and pairs[0][0].spec.oco_group:
                return [], pairs[0][0].spec.oco_group
        else:
            raise ReconcileError(f"orders: unknown work key {key!r}", key=key, terminal=True)
        members = []
        for intent, status in pairs:
            if not ctx.scope.includes(intent.spec.symbol):
                continue
            status = status or IntentStatus(intent_id=intent.id, since=ctx.clock())
            members.append(_Member(intent, status, status.model_dump_json(), ctx.clock))
        return members, None

    async def _refresh(
        self, ctx: Context, member: _Member, *, resolve: bool, snapshot: bool
    ) -> None:
        """Bring every live leg up to what the exchange says; unknown outcomes are asked
        by client order id. Raises ExchangeUnavailable when the exchange cannot say."""
        for index, leg in enumerate(member.status.legs):
            if not leg.live:
                continue
            report: ExchangeOrder | None = None
            if snapshot and leg.client_order_id in self._open and leg.status is not None:
                report = self._open[leg.client_order_id]
            elif leg.exchange_order_id is not None:
                try:
                    report = await ctx.connector.fetch_order(leg.exchange_order_id, leg.symbol)
                except OrderNotFound:
                    # The exchange had it. "Not found" now is not proof it is gone.
                    report = await ctx.connector.fetch_order_by_client_id(
                        leg.client_order_id, leg.symbol
                    )
                    if report is None:
                        self._set(
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
            else:
                report = await self._resolve(ctx, member, index, resolve=resolve)
                if member.status.legs[index].status is OrderStatus.REJECTED:
                    continue
                if report is None:
                    # Never accepted. Still wanted: _decide sends it again, same id.
                    if not self._resend_wanted(member, leg) or not resolve:
                        member.status.legs[index] = leg.model_copy(update={"absent": True})
                    continue
            if report is not None:
                self._apply_report(member, index, report)

    async def _resolve(
        self, ctx: Context, member: _Member, index: int, *, resolve: bool
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

    def _apply_report(self, member: _Member, index: int, report: ExchangeOrder) -> None:
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

    def _resend_wanted(self, member: _Member, leg: Leg) -> bool:
        """An unsent leg is sent again (same client order id) only while it is still
        exactly the order the intent wants."""
        intent = member.intent
        return (
            not intent.deleting
            and member.status.stopped is None
            and leg.generation == intent.generation
            and leg is member.status.legs[-1]
            and self._matches(leg, intent, intent.spec.amount - member.status.filled)
        )

    # -- deciding -------------------------------------------------------------------------

    def _decide(self, key: str, member: _Member, members: Sequence[_Member]) -> list[_Step]:
        """What to do next for one member, as (action for plans, (step, leg)) pairs."""
        intent, status = member.intent, member.status
        spec = intent.spec
        name = intent.id

        def step(verb: str, detail: str, what: str, leg: Leg | None = None) -> _Step:
            return (self._action(key, verb, spec.symbol, f"{name}: {detail}"), (what, leg))

        live = status.live_legs
        stop = self._stop_reason(member, members)
        remaining = spec.amount - status.filled
        if intent.deleting or stop is not None or remaining <= 0:
            if stop is not None and status.stopped != stop:
                # Recorded first, so it sticks (a deleted sibling is gone afterwards).
                return [step("record", stop, "stop:" + stop)]
            if live:
                why = self._why(intent, stop, remaining)
                known = [leg for leg in live if leg.status is not None]
                if not known:
                    return [step("resolve", "an order's outcome is unknown", "wait")]
                return [
                    step("cancel", f"{leg.client_order_id} ({why})", "cancel", leg) for leg in known
                ]
            if intent.deleting:
                return [step("remove", "finalizer done", "remove")]
            reason = "Filled" if remaining <= 0 else stop or "Done"
            settled = status.done_generation == intent.generation and status.reason == reason
            return [] if settled else [step("record", reason, "done:" + reason)]
        if status.done_generation >= intent.generation:
            return []
        matching = [leg for leg in live if self._matches(leg, intent, remaining)][:1]
        others = [leg for leg in live if leg not in matching and leg.status is not None]
        if others:  # an amend is cancel first, place after: the old order may still fill
            return [
                step("cancel", f"{leg.client_order_id} replaced", "cancel", leg) for leg in others
            ]
        if matching:
            leg = matching[0]
            if leg.status is None:  # confirmed never accepted: sent again, same id
                return [step("place", f"resend {leg.client_order_id}", "send", leg)]
            if (
                status.condition is Condition.IN_SYNC
                and status.observed_generation == intent.generation
            ):
                return []
            return [step("record", "in sync", "insync", leg)]
        # Nothing live matches: end the generation, or place a leg.
        mine = [
            leg for leg in status.legs if leg.generation == intent.generation and not leg.absent
        ]
        last = mine[-1] if mine else None
        if last is not None and not last.live:
            if last.status is OrderStatus.REJECTED:
                return [step("record", "rejected", "failed:Rejected")]
            ended = last.type is OrderType.MARKET or last.time_in_force is not TimeInForce.GTC
            if ended and self._matches_params(last, intent):
                return [step("record", f"{last.time_in_force.value} order ended", "done:Ended")]
        attempts = max((leg.attempt for leg in mine), default=0)
        if attempts >= self.max_attempts:
            return [step("record", f"{attempts} attempts", "failed:TooManyAttempts")]
        drift = (
            last is not None
            and not last.live
            and not last.cancel_requested
            and last.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED)
            and self._matches_params(last, intent)
        )
        price = f" @ {spec.price}" if spec.price is not None else ""
        order = f"{spec.side.value} {remaining} {spec.symbol}{price}"
        if drift:
            return [step("place", f"re-place (drift) {order}", "place:drift")]
        return [step("place", order, "place")]

    def _stop_reason(self, member: _Member, members: Sequence[_Member]) -> str | None:
        """Why an OCO leg must not trade (sticky once recorded), or None."""
        if member.status.stopped is not None:
            return member.status.stopped
        group = member.intent.spec.oco_group
        if group is None or len(members) < 2:
            return None
        if any(m.intent.deleting for m in members if m is not member):
            return "OcoSiblingDeleted"
        filled = [m for m in members if m.status.filled > 0]
        if filled:
            winner = min(filled, key=lambda m: (-m.status.filled, m.intent.id))
            if winner is not member:
                return "OcoCancelled"
        return None

    def _matches_params(self, leg: Leg, intent: Intent) -> bool:
        spec = intent.spec
        return (
            leg.symbol == spec.symbol
            and leg.side is spec.side
            and leg.type is spec.type
            and leg.price == spec.price
            and leg.time_in_force is spec.time_in_force
        )

    def _matches(self, leg: Leg, intent: Intent, remaining: Decimal) -> bool:
        return self._matches_params(leg, intent) and leg.remaining == remaining

    def _why(self, intent: Intent, stop: str | None, remaining: Decimal) -> str:
        if intent.deleting:
            return "intent deleted"
        return stop or ("filled" if remaining <= 0 else "not wanted")

    def _action(self, key: str, verb: str, symbol: str, detail: str) -> Action:
        return Action(self.name, key, verb, symbol, detail)

    # -- acting ---------------------------------------------------------------------------

    async def _act(
        self,
        ctx: Context,
        key: str,
        members: list[_Member],
        steps: list[tuple[_Member, Action, tuple[str, Leg | None]]],
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
                self._set(member, Condition.IN_SYNC, reason, "")
            elif step.startswith("failed:"):
                reason = step.removeprefix("failed:")
                member.status.done_generation = member.intent.generation
                ctx.metrics.terminal += 1
                message = member.status.last_error or reason
                ctx.metrics.last_error = f"{self.name}/{key}: {member.intent.id}: {message}"
                self._set(member, Condition.FAILED, reason, message)
            elif step == "insync":
                self._set(member, Condition.IN_SYNC, "Resting", "")
            elif step in ("place", "place:drift", "send"):
                if step == "place:drift":
                    ctx.metrics.drifts += 1
                    self._set(
                        member,
                        Condition.DRIFTED,
                        "CancelledOutside",
                        "the order left the book without the engine asking; placing it again",
                    )
                await self._place(ctx, member, leg)
                if len(members) > 1:
                    break  # decide again before a sibling is sent
        if any(m.removed for m in members):
            await self._save(ctx, members)

    async def _cancel(self, ctx: Context, member: _Member, leg: Leg) -> None:
        index = member.status.legs.index(leg)
        member.status.legs[index] = leg.model_copy(update={"cancel_requested": True})
        assert leg.exchange_order_id is not None
        try:
            report = await ctx.connector.cancel_order(leg.exchange_order_id, leg.symbol)
        except OrderNotFound:
            report = await ctx.connector.fetch_order(leg.exchange_order_id, leg.symbol)
        self._apply_report(member, index, report)
        self._set(member, Condition.PENDING, "Cancelling", f"cancelled {leg.client_order_id}")

    async def _place(self, ctx: Context, member: _Member, resend: Leg | None) -> None:
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
            order_intent = _order_intent(intent, leg)
            leg.client_order_id = order_intent.key
            status.legs.append(leg)
            if status.condition is not Condition.DRIFTED:
                self._set(member, Condition.PENDING, "Placing", f"placing {leg.client_order_id}")
            # Stored (under the lease) before anything is sent: a crash from here on
            # leaves a leg whose outcome the next holder asks the exchange about.
            await self._save(ctx, [member])
        else:
            leg = resend
            order_intent = _order_intent(intent, leg)
        index = status.legs.index(leg)
        try:
            placed = await ctx.ledger.place_intent(ctx.connector, order_intent)
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
            self._set(member, Condition.UNKNOWN, "NoAnswer", str(exc))
            await self._save(ctx, [member])
            raise
        self._apply_report(member, index, placed.order)

    # -- recording ------------------------------------------------------------------------

    def _set(self, member: _Member, condition: Condition, reason: str, message: str) -> None:
        status = member.status
        if status.condition is not condition:
            status.since = member.clock()
        status.condition = condition
        status.reason = reason
        status.message = message
        if condition is Condition.IN_SYNC:
            status.observed_generation = member.intent.generation

    def _order_writes(self, member: _Member) -> list[Write]:
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

    async def _save(self, ctx: Context, members: Sequence[_Member]) -> None:
        store = IntentStore(ctx.store, clock=ctx.clock)
        writes: list[Write] = []
        synced: list[_Member] = []
        removing: list[_Member] = []
        for member in members:
            if member.gone:
                continue
            writes += self._order_writes(member)
            if member.removed:
                status = member.status if member.status.version else None
                writes += store.removal_writes(member.intent, status)
                removing.append(member)
                continue
            if not member.changed:
                continue
            was = IntentStatus.model_validate_json(member.before)
            if member.status.condition is Condition.IN_SYNC and (
                was.condition is not Condition.IN_SYNC
                or was.observed_generation != member.intent.generation
            ):
                synced.append(member)
            member.status.synced_at = ctx.clock()
            writes.append(store.status_write(member.status))
        if not writes:
            return
        records = await ctx.store.batch(writes, fence=ctx.lease)
        for member in removing:
            member.gone = True
        by_key = {r.key: r for r in records}
        for member in members:
            record = by_key.get(store.status_write(member.status).key)
            if record is not None:
                member.status.version = record.version
                member.before = member.status.model_dump_json()
        now = ctx.clock()
        for member in synced:
            ctx.metrics.observe_lag((now - member.intent.changed_at).total_seconds())

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
