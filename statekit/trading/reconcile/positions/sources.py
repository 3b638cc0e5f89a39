"""Observing a symbol: what the exchange, the store and the store's read cache say.

A pass reads the store's position versions first and asks the exchange for the
whole account after (:func:`observe_pass`); one symbol's reconciliation reads the
primary's heads of its position and log, and what the read cache would serve
(:func:`read`), and may ask the exchange about that symbol alone (:func:`targeted`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pydantic

from statekit.backend import Backend, Record
from statekit.errors import ValidationError
from statekit.store import StateStore
from statekit.trading.errors import ReconcileError
from statekit.trading.exchange import ExchangePosition
from statekit.trading.models import Position
from statekit.trading.reconcile.base import Context
from statekit.trading.reconcile.positions.log import (
    ABSENT,
    DiscrepancyAction,
    Observation,
    ReportSource,
)
from statekit.trading.state import TradingState

__all__ = [
    "Listed",
    "Pass",
    "Seen",
    "Stored",
    "first_error",
    "netted",
    "observe_pass",
    "read",
    "targeted",
]


@dataclass(frozen=True, slots=True)
class Listed:
    """The exchange's word on one symbol: None in ``position`` means not listed."""

    position: ExchangePosition | None
    source: ReportSource

    @property
    def observation(self) -> Observation:
        p = self.position
        if p is None:
            return ABSENT
        return Observation(present=True, amount=p.amount, entry_price=p.entry_price)


@dataclass(frozen=True, slots=True)
class Stored:
    """The primary's head of ``position/<symbol>`` (None: absent or deleted)."""

    record: Record | None
    position: Position | None

    @property
    def version(self) -> int:
        return 0 if self.record is None else self.record.version

    @property
    def observation(self) -> Observation:
        p = self.position
        if p is None:
            return ABSENT
        return Observation(present=True, amount=p.amount, entry_price=p.entry_price)


@dataclass(frozen=True, slots=True)
class Pass:
    """What one observe() read: the store's versions first, the exchange's report after."""

    serial: int
    versions: dict[str, int]
    report: dict[str, ExchangePosition]
    report_at: datetime


@dataclass(slots=True)
class Seen:
    """What one symbol's store, read cache and discrepancy log hold.

    :param cache: what a cached read would return; None when the store has no cache
        or the cache holds nothing for the key.
    :param flag_open: the log's newest event is a flag (set when this step flags).
    """

    stored: Stored
    cache: Observation | None
    flag_open: bool


def netted(positions: Sequence[ExchangePosition]) -> dict[str, ExchangePosition]:
    """One entry per symbol. Several (a hedge-mode account's long and short) are netted;
    their entry prices cannot be, so the netted entry has none."""
    by_symbol: dict[str, ExchangePosition] = {}
    for p in positions:
        seen = by_symbol.get(p.symbol)
        if seen is None:
            by_symbol[p.symbol] = p
            continue
        by_symbol[p.symbol] = ExchangePosition(
            symbol=p.symbol, amount=seen.amount + p.amount, entry_price=None, at=max(seen.at, p.at)
        )
    return by_symbol


def _primary(store: StateStore) -> Backend:
    # A tiered store's reads go through its caches; the store's own truth is its origin.
    return store.backend.origin


async def observe_pass(ctx: Context, folder: str, serial: int) -> Pass:
    """The store's position versions under ``folder``, then the exchange's bulk report,
    each within the engine's scope."""
    # The store first, the exchange after: a store position whose version is still
    # the one seen here was written before the report was asked for, so the report
    # may overwrite it. One written since is judged on a targeted query instead.
    versions: dict[str, int] = {}
    async for record in ctx.store.scan(folder):  # a tiered store scans its primary
        symbol = record.key[len(folder) :]
        if ctx.scope.includes(symbol):
            versions[symbol] = record.version
    report_at = ctx.clock()
    listed = netted(await ctx.connector.fetch_positions())
    report = {s: p for s, p in listed.items() if ctx.scope.includes(s)}
    return Pass(serial, versions, report, report_at)


async def read(ctx: Context, *, prefix: str, key: str, position_key: str, log_key: str) -> Seen:
    """The primary's heads of the position and of its log (one round trip), and what
    the read cache holds for the position.

    :param prefix: the trading state's key prefix.
    :param key: the work key, named in errors.
    :raises ReconcileError: the stored position is not a valid position (terminal).
    """
    heads = await _primary(ctx.store).latest([position_key, log_key])
    stored = _parse_position(ctx, prefix, key, heads.get(position_key))
    log = heads.get(log_key)
    flag_open = (
        log is not None
        and isinstance(log.data, dict)
        and log.data.get("action") == DiscrepancyAction.FLAGGED.value
    )
    cache = await _cached(ctx, prefix, position_key)
    return Seen(stored, cache, flag_open)


def _parse_position(ctx: Context, prefix: str, key: str, record: Record | None) -> Stored:
    if record is None or record.deleted:
        return Stored(None, None)
    section = TradingState(ctx.store, prefix=prefix).positions
    try:
        return Stored(record, section.parse(record))
    except (pydantic.ValidationError, ValidationError) as exc:
        # Overwriting it would throw away what the bot stored without a word: a person
        # must look. The engine does not retry it until the key changes.
        raise ReconcileError(
            f"positions: {record.key!r} version {record.version} is not a valid position "
            f"({first_error(exc)}); fix or delete it",
            key=key,
            reason="InvalidStoredPosition",
            terminal=True,
        ) from None


async def _cached(ctx: Context, prefix: str, position_key: str) -> Observation | None:
    """What a cached read of the position would return without asking the primary;
    None when the store has no cache or the cache holds nothing for the key."""
    entries = await ctx.store.backend.cached([position_key])
    hit = position_key in entries
    head = entries.get(position_key)
    if not hit:
        return None
    if head is None or head.deleted:
        return ABSENT
    section = TradingState(ctx.store, prefix=prefix).positions
    try:
        p = section.parse(head)
    except (pydantic.ValidationError, ValidationError):
        return Observation(present=True)  # differs from any report: evicted
    return Observation(present=True, amount=p.amount, entry_price=p.entry_price)


async def targeted(ctx: Context, symbol: str) -> Listed:
    """Ask the exchange about ``symbol`` alone."""
    answer = await ctx.connector.fetch_positions([symbol])
    mine = netted([p for p in answer if p.symbol == symbol]).get(symbol)
    return Listed(mine, ReportSource.TARGETED)


def first_error(exc: Exception) -> str:
    """The first problem of a validation error, in one line."""
    if isinstance(exc, pydantic.ValidationError):
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "value"
        return f"{where}: {err['msg']}"
    return str(exc)
