"""The discrepancy log: what the ``positions`` reconciler found and did, one event a version.

Each symbol's log is the key ``discrepancy/position/<symbol>`` (kind
``trading.discrepancy``); its history is the event log, read back typed with
:func:`discrepancies`.
"""

from __future__ import annotations

from enum import StrEnum

import pydantic
from pydantic import Field

from statekit.backend import Record
from statekit.errors import ValidationError
from statekit.store import StateStore
from statekit.trading import kinds
from statekit.trading.models import Money, UtcTime, _Model

__all__ = [
    "ABSENT",
    "DISCREPANCY_FOLDER",
    "Discrepancy",
    "DiscrepancyAction",
    "Observation",
    "ReportSource",
    "discrepancies",
]

DISCREPANCY_FOLDER = "discrepancy/position/"
"""The event log of ``symbol`` is the key ``<prefix>discrepancy/position/<symbol>``."""


class DiscrepancyAction(StrEnum):
    """What the reconciler did about a discrepancy."""

    UPDATED = "updated"
    """The store position was written from the exchange's report."""
    REMOVED = "removed"
    """The store position was removed: targeted queries confirmed the exchange has none."""
    FLAGGED = "flagged"
    """The bulk report left out a position the store holds; nothing was changed yet."""
    CLEARED = "cleared"
    """A flag ended without a change: a targeted query listed the position as stored
    (the bulk report's omission was the exchange's), or the store no longer holds it."""
    EVICTED = "evicted"
    """The store was right and a read cache was not: the cache entry was evicted."""


class ReportSource(StrEnum):
    """Which exchange answer a discrepancy was judged on."""

    BULK = "bulk"
    """The pass's one ``fetch_positions()`` for the whole account."""
    TARGETED = "targeted"
    """``fetch_positions([symbol])``, asked about this symbol alone."""


class Observation(_Model):
    """What one source says about a symbol's position.

    :param present: the exchange listed it / the store or cache holds it.
    :param amount: signed (negative: short); None when not present or not recorded.
    :param entry_price: None when not present or not reported.
    """

    present: bool
    amount: Money | None = None
    entry_price: Money | None = None

    @property
    def holds_position(self) -> bool:
        """Present with a non-zero amount."""
        return self.present and self.amount is not None and self.amount != 0


ABSENT = Observation(present=False)


class Discrepancy(_Model):
    """One event of a symbol's discrepancy log (``discrepancy/position/<symbol>``).

    :param symbol: the instrument.
    :param fields: what differs (``amount``, ``entry_price``); empty for a ``cleared`` event.
    :param exchange: what the exchange reported (``present=False``: not listed).
    :param store: what the store held before the action.
    :param cache: what the store's read cache held, when it held anything for the key.
    :param action: what was done.
    :param reason: why, in a sentence.
    :param source: which exchange answer the decision rests on.
    :param at: when it was decided (the engine's clock).
    :param report_at: when the pass's bulk report was fetched (the engine's clock).
    :param exchange_at: the exchange's own time for the position, when it listed it.
    :param holder: the lease holder (engine) that decided it.
    :param pass_number: the engine's pass it happened in (its ``passes`` count + 1).
    """

    symbol: str = Field(min_length=1)
    fields: list[str] = Field(default_factory=list)
    exchange: Observation
    store: Observation
    cache: Observation | None = None
    action: DiscrepancyAction
    reason: str
    source: ReportSource
    at: UtcTime
    report_at: UtcTime | None = None
    exchange_at: UtcTime | None = None
    holder: str | None = None
    pass_number: int = 0


async def discrepancies(
    store: StateStore, symbol: str | None = None, limit: int = 100, *, prefix: str = ""
) -> list[Discrepancy]:
    """The recorded discrepancies, newest first: of ``symbol``, or of every symbol.

    :param store: the store the engine wrote to.
    :param symbol: one symbol's log (None: every symbol's, merged by commit time).
    :param limit: at most this many events.
    :param prefix: the reconciler's ``prefix`` (the trading state's account prefix).
    :raises ValidationError: a record of the log is not a discrepancy.
    """
    if limit < 1:
        raise ValidationError(f"limit must be at least 1, not {limit}", reason="limit")
    folder = prefix + DISCREPANCY_FOLDER
    if symbol is not None:
        keys = [folder + symbol]
    else:
        keys = [r.key async for r in store.scan(folder, kind=kinds.DISCREPANCY)]
    records: list[Record] = []
    for key in keys:
        records += [r for r in await store.history(key, limit=limit) if not r.deleted]
    # The writing store stamps ``at`` on commit, strictly increasing: one order for all keys.
    records.sort(key=lambda r: (r.at, r.key, r.version), reverse=True)
    return [_parse_discrepancy(r) for r in records[:limit]]


def _parse_discrepancy(record: Record) -> Discrepancy:
    try:
        return Discrepancy.model_validate(record.data)
    except pydantic.ValidationError as exc:
        raise ValidationError(
            f"{record.key!r} version {record.version} is not a discrepancy: {exc}",
            key=record.key,
            reason="not a discrepancy",
        ) from None
