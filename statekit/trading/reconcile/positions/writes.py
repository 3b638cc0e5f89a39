"""Writing what was decided: the actions of a result, the discrepancy events, the fixes.

When applying, an event and the fix it describes land in one batch fenced by the
engine's lease; a plan only notes the actions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pydantic

from statekit.backend import ANY, Write
from statekit.trading import kinds
from statekit.trading.errors import ReconcileError
from statekit.trading.exchange import ExchangePosition
from statekit.trading.models import Direction, Position, to_json
from statekit.trading.reconcile.base import Action, Context, Result
from statekit.trading.reconcile.positions.log import Discrepancy, DiscrepancyAction
from statekit.trading.reconcile.positions.sources import Listed, Seen, first_error

__all__ = ["BY", "REMOVED_REASON", "Recorder"]

BY = "reconcile:positions"
"""The ``by`` meta of every write this reconciler makes."""
REMOVED_REASON = "exchange confirmed flat"
"""The ``reason`` meta of a removed position's tombstone."""


class Recorder:
    """The writes of one symbol's reconciliation (or, with ``apply`` False, its plan).

    :param name: the reconciler's name, in the actions.
    :param seen: what the sources held when read; events record it.
    :param report_at: when the pass's bulk report was fetched, recorded in events.
    """

    def __init__(
        self,
        ctx: Context,
        *,
        name: str,
        key: str,
        symbol: str,
        position_key: str,
        log_key: str,
        seen: Seen,
        apply: bool,
        report_at: datetime | None,
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.key = key
        self.symbol = symbol
        self.position_key = position_key
        self.log_key = log_key
        self.seen = seen
        self.apply = apply
        self.report_at = report_at
        self.result = Result()

    def note(self, verb: str, detail: str) -> None:
        """Add an action to the result (and so to a plan)."""
        self.result.actions.append(Action(self.name, self.key, verb, self.symbol, detail))

    async def record(
        self,
        verb: str,
        detail: str,
        action: DiscrepancyAction,
        fields: list[str],
        listed: Listed,
        reason: str,
        writes: list[Write],
        *,
        drift: bool = True,
    ) -> None:
        """Note the action; when applying, store the event and ``writes`` in one fenced
        batch (the record and its fix land together, or neither does)."""
        self.note(verb, detail)
        if not self.apply:
            return
        ctx = self.ctx
        event = Discrepancy(
            symbol=self.symbol,
            fields=fields,
            exchange=listed.observation,
            store=self.seen.stored.observation,
            cache=self.seen.cache,
            action=action,
            reason=reason,
            source=listed.source,
            at=ctx.clock(),
            report_at=self.report_at,
            exchange_at=None if listed.position is None else listed.position.at,
            holder=ctx.lease.holder,
            pass_number=ctx.metrics.passes + 1,
        )
        log = Write(self.log_key, to_json(event), kinds.DISCREPANCY, {"by": BY}, ANY)
        await ctx.store.batch([*writes, log], fence=ctx.lease)
        ctx.metrics.actions += 1
        if drift:
            ctx.metrics.drifts += 1

    async def evict(self) -> None:
        """Evict the position from the store's read cache (when applying)."""
        if not self.apply:
            return
        await self.ctx.store.backend.evict([self.position_key])

    def position_write(self, reported: ExchangePosition) -> Write:
        """The store position from the exchange's: amount, entry price and last_updated
        change, every other field (the bot's own ones too) stays."""
        stored = self.seen.stored
        current = stored.position
        data: dict[str, Any] = {} if current is None else current.model_dump(exclude_none=True)
        data.update(symbol=self.symbol, amount=reported.amount, last_updated=self.ctx.clock())
        if reported.entry_price is not None:
            data["entry_price"] = reported.entry_price
        if data.get("direction") is not None and reported.amount != 0:
            # The model refuses a direction that contradicts the amount's sign.
            data["direction"] = Direction.LONG if reported.amount > 0 else Direction.SHORT
        try:
            position = Position.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ReconcileError(
                f"positions: the exchange's report of {self.symbol!r} ({reported.amount} @ "
                f"{reported.entry_price}) makes no valid position: {first_error(exc)}",
                key=self.key,
                reason="InvalidReport",
                terminal=True,
            ) from None
        return Write(
            self.position_key,
            to_json(position),
            kinds.POSITION,
            {"by": BY, "reason": "exchange report"},
            stored.version,  # 0: must still be absent; CAS against a concurrent writer
        )

    def removal(self) -> Write:
        """The tombstone of the stored position (its history stays)."""
        record = self.seen.stored.record
        assert record is not None
        return Write(
            self.position_key,
            None,
            record.kind,
            {"by": BY, "reason": REMOVED_REASON},
            record.version,
        )
