"""Deciding one symbol: what to do when the exchange lists a position, or does not.

The exchange's report is the truth: a listed position the store does not match
is written from it, a stale read cache is evicted; an unlisted one the store
holds is flagged, and removed only once targeted queries confirm it absent.
"""

from __future__ import annotations

from decimal import Decimal

from statekit.trading.reconcile.positions.log import DiscrepancyAction, Observation, ReportSource
from statekit.trading.reconcile.positions.sources import Listed, Seen, Stored
from statekit.trading.reconcile.positions.writes import REMOVED_REASON, Recorder

__all__ = ["SymbolStep"]


class SymbolStep:
    """Reconciling (or planning) one symbol: what was read, what is done, the result.

    :param tolerance: amounts that differ by at most this much are equal.
    :param confirmations: targeted queries that must confirm an absence before removal.
    """

    def __init__(
        self, seen: Seen, recorder: Recorder, *, tolerance: Decimal, confirmations: int
    ) -> None:
        self.seen = seen
        self.recorder = recorder
        self.tolerance = tolerance
        self.confirmations = confirmations

    @property
    def stored(self) -> Stored:
        return self.seen.stored

    @property
    def cache(self) -> Observation | None:
        return self.seen.cache

    def note(self, verb: str, detail: str) -> None:
        """Add an action to the result (and so to a plan)."""
        self.recorder.note(verb, detail)

    def _differences(self, exchange: Observation, other: Observation) -> list[str]:
        """The fields in which ``other`` differs from a listed ``exchange`` position."""
        assert exchange.amount is not None
        fields: list[str] = []
        if (
            not other.present
            or other.amount is None
            or abs(other.amount - exchange.amount) > self.tolerance
        ):
            fields.append("amount")
        if exchange.entry_price is not None and other.entry_price != exchange.entry_price:
            fields.append("entry_price")
        return fields

    async def follow(self, listed: Listed) -> None:
        """The exchange lists the position: the store follows it; a stale cache is evicted."""
        assert listed.position is not None
        exchange = listed.observation
        where = _where(listed)
        fields = self._differences(exchange, self.stored.observation)
        if fields:
            held = "no position" if not self.stored.observation.present else "another position"
            await self.recorder.record(
                "update",
                f"{_amounts(self.stored.observation)} -> {_amounts(exchange)} ({where})",
                DiscrepancyAction.UPDATED,
                fields,
                listed,
                f"the store held {held} than {where} lists",
                [self.recorder.position_write(listed.position)],
            )
            return
        stale = [] if self.cache is None else self._differences(exchange, self.cache)
        if stale:
            await self.recorder.record(
                "evict",
                "the read cache is stale",
                DiscrepancyAction.EVICTED,
                stale,
                listed,
                f"the store matches {where}; the read cache does not",
                [],
            )
            await self.recorder.evict()
        elif self.seen.flag_open:
            await self.recorder.record(
                "record",
                f"flag cleared: {where} lists it as stored",
                DiscrepancyAction.CLEARED,
                [],
                listed,
                f"{where} lists the position as the store holds it",
                [],
                drift=False,
            )

    async def settle_absent(self, listed: Listed) -> None:
        """Not listed, and the store holds no non-zero amount: nothing for the exchange to
        contradict, unless the read cache still serves a position."""
        if self.cache is not None and self.cache.holds_position:
            await self.recorder.record(
                "evict",
                "the read cache serves a position the store does not hold",
                DiscrepancyAction.EVICTED,
                ["amount"],
                listed,
                "the read cache serves a position that neither the store nor the exchange has",
                [],
            )
            await self.recorder.evict()
        elif self.seen.flag_open:
            await self.recorder.record(
                "record",
                "flag cleared: the store no longer holds a position",
                DiscrepancyAction.CLEARED,
                [],
                listed,
                "the store no longer holds a position",
                [],
                drift=False,
            )

    async def flag(self, listed: Listed) -> None:
        """Record that the exchange did not list a position the store holds; change nothing."""
        where = _where(listed)
        await self.recorder.record(
            "flag",
            f"absent from {where}; kept until a targeted query confirms it",
            DiscrepancyAction.FLAGGED,
            ["amount"],
            listed,
            f"{where} does not list a position the store holds",
            [],
        )
        self.seen.flag_open = True

    def wait(self, count: int) -> None:
        """Confirmed absent, but not as many times in a row as required yet."""
        self.note(
            "flag",
            f"absent from a targeted query ({count}/{self.confirmations} confirmations); kept",
        )
        self.recorder.result.in_sync = False

    async def remove(self, listed: Listed) -> None:
        """Confirmed flat: remove the store position (a tombstone; its history stays)."""
        n = self.confirmations
        await self.recorder.record(
            "remove",
            f"confirmed flat by {n} targeted quer{'y' if n == 1 else 'ies'}",
            DiscrepancyAction.REMOVED,
            ["amount"],
            listed,
            REMOVED_REASON,
            [self.recorder.removal()],
            drift=False,  # counted when it was flagged
        )


def _where(listed: Listed) -> str:
    return "the bulk report" if listed.source is ReportSource.BULK else "a targeted query"


def _amounts(seen: Observation) -> str:
    if not seen.present:
        return "none"
    price = "" if seen.entry_price is None else f" @ {seen.entry_price}"
    return f"{seen.amount}{price}"
