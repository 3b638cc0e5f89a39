"""OCO groups: intents whose orders are one-cancels-the-other, reconciled together.

The work key of an intent in a group is the group's, ``oco:<group>``; once a
member's order has filled, every other member stops (``OcoCancelled``), and the
deletion of one member stops the others (``OcoSiblingDeleted``).
"""

from __future__ import annotations

from collections.abc import Sequence

from statekit.trading.errors import ReconcileError
from statekit.trading.reconcile.base import Context
from statekit.trading.reconcile.intents import Intent, IntentStatus, IntentStore, Parsed
from statekit.trading.reconcile.orders.legs import Member

__all__ = ["group_settled", "key_of", "load", "stop_reason"]


def key_of(intent: Intent) -> str:
    """The work key of ``intent``: its group's, or its own."""
    group = intent.spec.oco_group
    return f"oco:{group}" if group else f"intent:{intent.id}"


async def load(
    ctx: Context, key: str, groups: dict[str, list[str]], parsed: Parsed | None = None
) -> tuple[list[Member], str | None]:
    """The members of a work key, read in one round trip; for the key of an intent
    in an OCO group, no members and the group (whose key does the work).

    :param groups: each group's intent ids, as the last observe saw them.
    :param parsed: intents parsed before (by observe), reused at the same version.
    """
    store = IntentStore(ctx.store, clock=ctx.clock, parsed=parsed, get_many=ctx.get_many)
    if key.startswith("oco:"):
        group = key.removeprefix("oco:")
        ids = groups.get(group)
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
        members.append(Member(intent, status, status.model_dump_json(), ctx.clock))
    return members, None


def group_settled(statuses: Sequence[IntentStatus | None]) -> bool:
    """False when a member has filled while another still rests (it is to be cancelled)."""
    if len(statuses) > 1:  # OCO: once a leg filled, no other leg may rest
        filled = [s for s in statuses if s is not None and s.filled > 0]
        resting = [s for s in statuses if s is not None and s.live_legs]
        if filled and any(s not in filled for s in resting):
            return False
    return True


def stop_reason(member: Member, members: Sequence[Member]) -> str | None:
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
