"""Deciding what to do next for one intent: cancel, place, resend, record, or nothing.

A decision is a list of steps; each pairs the :class:`Action` a plan shows with
what the reconciler does (``("cancel", leg)``, ``("place", None)``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from statekit.trading.models import OrderStatus, OrderType, TimeInForce
from statekit.trading.reconcile.base import Action
from statekit.trading.reconcile.intents import Condition, Intent, Leg
from statekit.trading.reconcile.orders.legs import Member, matches, matches_params
from statekit.trading.reconcile.orders.oco import stop_reason

__all__ = ["Step", "decide"]

Step = tuple[Action, tuple[str, Leg | None]]
"""(the action for plans, (what to do, the leg it is done to))."""


@dataclass(frozen=True, slots=True)
class _Steps:
    """Builds the steps of one member's decision."""

    name: str
    key: str
    intent: Intent

    def __call__(self, verb: str, detail: str, what: str, leg: Leg | None = None) -> Step:
        action = Action(
            self.name, self.key, verb, self.intent.spec.symbol, f"{self.intent.id}: {detail}"
        )
        return (action, (what, leg))


def decide(
    name: str, key: str, member: Member, members: Sequence[Member], *, max_attempts: int
) -> list[Step]:
    """What to do next for one member, as (action for plans, (step, leg)) pairs.

    :param name: the reconciler's name, in the actions.
    :param members: the work key's members (an OCO group's, or this one alone).
    :param max_attempts: legs placed per generation at most.
    """
    intent, status = member.intent, member.status
    step = _Steps(name, key, intent)
    stop = stop_reason(member, members)
    remaining = intent.spec.amount - status.filled
    if intent.deleting or stop is not None or remaining <= 0:
        return _wind_down(step, member, stop, remaining)
    if status.done_generation >= intent.generation:
        return []
    live = status.live_legs
    matching = [leg for leg in live if matches(leg, intent, remaining)][:1]
    others = [leg for leg in live if leg not in matching and leg.status is not None]
    if others:  # an amend is cancel first, place after: the old order may still fill
        return [step("cancel", f"{leg.client_order_id} replaced", "cancel", leg) for leg in others]
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
    return _next_leg(step, member, remaining, max_attempts)


def _wind_down(step: _Steps, member: Member, stop: str | None, remaining: Decimal) -> list[Step]:
    """The intent wants no more orders (deleting, stopped, filled): cancel what is live,
    then remove it (its finalizer) or record it done."""
    intent, status = member.intent, member.status
    if stop is not None and status.stopped != stop:
        # Recorded first, so it sticks (a deleted sibling is gone afterwards).
        return [step("record", stop, "stop:" + stop)]
    live = status.live_legs
    if live:
        why = _why(intent, stop, remaining)
        known = [leg for leg in live if leg.status is not None]
        if not known:
            return [step("resolve", "an order's outcome is unknown", "wait")]
        return [step("cancel", f"{leg.client_order_id} ({why})", "cancel", leg) for leg in known]
    if intent.deleting:
        return [step("remove", "finalizer done", "remove")]
    reason = "Filled" if remaining <= 0 else stop or "Done"
    settled = status.done_generation == intent.generation and status.reason == reason
    return [] if settled else [step("record", reason, "done:" + reason)]


def _next_leg(step: _Steps, member: Member, remaining: Decimal, max_attempts: int) -> list[Step]:
    """Nothing live matches: end the generation, or place a leg."""
    intent, status = member.intent, member.status
    spec = intent.spec
    mine = [leg for leg in status.legs if leg.generation == intent.generation and not leg.absent]
    last = mine[-1] if mine else None
    if last is not None and not last.live:
        if last.status is OrderStatus.REJECTED:
            return [step("record", "rejected", "failed:Rejected")]
        ended = last.type is OrderType.MARKET or last.time_in_force is not TimeInForce.GTC
        if ended and matches_params(last, intent):
            return [step("record", f"{last.time_in_force.value} order ended", "done:Ended")]
    attempts = max((leg.attempt for leg in mine), default=0)
    if attempts >= max_attempts:
        return [step("record", f"{attempts} attempts", "failed:TooManyAttempts")]
    drift = (
        last is not None
        and not last.live
        and not last.cancel_requested
        and last.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED)
        and matches_params(last, intent)
    )
    price = f" @ {spec.price}" if spec.price is not None else ""
    order = f"{spec.side.value} {remaining} {spec.symbol}{price}"
    if drift:
        return [step("place", f"re-place (drift) {order}", "place:drift")]
    return [step("place", order, "place")]


def _why(intent: Intent, stop: str | None, remaining: Decimal) -> str:
    if intent.deleting:
        return "intent deleted"
    return stop or ("filled" if remaining <= 0 else "not wanted")
