"""The built-in ``positions`` reconciler: the exchange's report is the truth for positions.

One work key per symbol (``position:<symbol>``). Each pass reads the store's
positions first and then asks the exchange once for the whole account
(``fetch_positions()``); the keys are every symbol in either, within the
engine's scope. For each symbol it compares three sources: the **exchange**,
the **store** (the primary's ``position/<symbol>``) and, when the store is a
tiered store with a read cache, the **cache** (what a read would be served
without asking the primary). Then:

- **listed by the exchange**: a store position that differs in amount (beyond
  ``tolerance``; exact by default) or in entry price is written from the
  exchange: amount, entry price and ``last_updated`` change, every other field
  (the bot's own ones included) is kept. A cache entry that differs while the
  store is right is evicted.
- **not listed** while the store holds a non-zero amount: *not* removed. A
  single bulk answer that leaves a symbol out is no proof the position is flat
  (seed 000 deleted on it). The symbol is **flagged**, then asked about alone
  (``fetch_positions([symbol])``). Listed there: the store is updated from that
  answer (or the flag cleared). Confirmed absent (``confirmations`` times in a
  row, one per pass): the store position is removed, a tombstone version whose
  meta says why; its history keeps every earlier version. No answer: nothing
  changes and the key is retried with backoff.

Every difference is recorded as a new version of ``discrepancy/position/<symbol>``
(kind ``trading.discrepancy``): its history is the event log, read back typed with
:func:`discrepancies`. Every write is fenced by the engine's lease, and a record
and the fix it describes land in one atomic batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import pydantic
from pydantic import Field

from statekit.backend import ANY, Backend, Record, Write
from statekit.codec import check_key
from statekit.errors import ValidationError
from statekit.store import StateStore
from statekit.trading import kinds
from statekit.trading.errors import ExchangeUnavailable, RateLimited, ReconcileError
from statekit.trading.exchange import ExchangePosition
from statekit.trading.models import Direction, Money, Position, UtcTime, _Model, to_json
from statekit.trading.reconcile.base import Action, Context, Reconciler, Result
from statekit.trading.state import TradingState

__all__ = [
    "DISCREPANCY_FOLDER",
    "Discrepancy",
    "DiscrepancyAction",
    "Observation",
    "PositionReconciler",
    "ReportSource",
    "discrepancies",
]

DISCREPANCY_FOLDER = "discrepancy/position/"
"""The event log of ``symbol`` is the key ``<prefix>discrepancy/position/<symbol>``."""
KEY_PREFIX = "position:"
"""Work keys are ``position:<symbol>``."""
BY = "reconcile:positions"
"""The ``by`` meta of every write this reconciler makes."""
REMOVED_REASON = "exchange confirmed flat"
"""The ``reason`` meta of a removed position's tombstone."""
ZERO = Decimal(0)


# -- the event log ------------------------------------------------------------------------------


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


# -- what the sources say ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Listed:
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
class _Stored:
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
class _Pass:
    """What one observe() read: the store's versions first, the exchange's report after."""

    serial: int
    versions: dict[str, int]
    report: dict[str, ExchangePosition]
    report_at: datetime


def _netted(positions: Sequence[ExchangePosition]) -> dict[str, ExchangePosition]:
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


# -- the reconciler -----------------------------------------------------------------------------


class PositionReconciler(Reconciler):
    """Position reconciliation with the exchange as the source of truth (module docstring).

    :param prefix: the trading state's key prefix (``"acct-1/"``), as ``TradingState(prefix=)``.
    :param tolerance: amounts that differ by at most this much are equal (default 0:
        exact Decimal comparison). Entry prices are always compared exactly.
    :param confirmations: consecutive targeted queries (one per pass) that must confirm
        a position absent before it is removed from the store.
    :raises ValidationError: a negative or non-Decimal tolerance, confirmations below 1.
    """

    name = "positions"

    def __init__(
        self, *, prefix: str = "", tolerance: Decimal = ZERO, confirmations: int = 1
    ) -> None:
        if not isinstance(tolerance, Decimal) or not tolerance.is_finite() or tolerance < 0:
            raise ValidationError(
                f"tolerance must be a finite Decimal >= 0, not {tolerance!r}", reason="tolerance"
            )
        if isinstance(confirmations, bool) or not isinstance(confirmations, int):
            raise ValidationError(
                f"confirmations must be an int, not {confirmations!r}", reason="confirmations"
            )
        if confirmations < 1:
            raise ValidationError(
                f"confirmations must be at least 1, not {confirmations}", reason="confirmations"
            )
        if not isinstance(prefix, str):
            raise ValidationError(f"prefix must be a string, not {prefix!r}", reason="prefix")
        self.prefix = prefix
        self.tolerance = tolerance
        self.confirmations = confirmations
        self._pass: _Pass | None = None
        self._passes = 0
        # Per symbol, how many passes in a row a targeted query confirmed it absent, and
        # the last such pass. In memory: a new holder starts from 0, which only delays.
        self._confirmed: dict[str, tuple[int, int]] = {}

    # -- keys --------------------------------------------------------------------------------

    def key_of(self, symbol: str) -> str:
        """The work key of ``symbol``."""
        return KEY_PREFIX + symbol

    def position_key(self, symbol: str) -> str:
        """The store key of ``symbol``'s position (TradingState's ``position/<symbol>``)."""
        return f"{self.prefix}position/{symbol}"

    def log_key(self, symbol: str) -> str:
        """The store key of ``symbol``'s discrepancy log."""
        return f"{self.prefix}{DISCREPANCY_FOLDER}{symbol}"

    def _symbol(self, ctx: Context, key: str) -> str:
        symbol = key.removeprefix(KEY_PREFIX)
        if not key.startswith(KEY_PREFIX) or not symbol:
            raise ReconcileError(
                f"positions: unknown work key {key!r} (expected 'position:<symbol>')",
                key=key,
                reason="BadKey",
                terminal=True,
            )
        try:
            check_key(self.position_key(symbol))
            check_key(self.log_key(symbol))
        except ValidationError as exc:
            raise ReconcileError(
                f"positions: the symbol {symbol!r} cannot name a store key ({exc.reason})",
                key=key,
                reason="BadSymbol",
                terminal=True,
            ) from None
        if not ctx.scope.includes(symbol):
            raise ReconcileError(
                f"positions: {symbol!r} is outside the scope {ctx.scope.name!r}",
                key=key,
                reason="OutOfScope",
                terminal=True,
            )
        return symbol

    # -- the reconciler contract -------------------------------------------------------------

    async def observe(self, ctx: Context) -> list[str]:
        # The store first, the exchange after: a store position whose version is still
        # the one seen here was written before the report was asked for, so the report
        # may overwrite it. One written since is judged on a targeted query instead.
        folder = self.prefix + "position/"
        versions: dict[str, int] = {}
        async for record in ctx.store.scan(folder):  # a tiered store scans its primary
            symbol = record.key[len(folder) :]
            if ctx.scope.includes(symbol):
                versions[symbol] = record.version
        report_at = ctx.clock()
        listed = _netted(await ctx.connector.fetch_positions())
        report = {s: p for s, p in listed.items() if ctx.scope.includes(s)}
        self._passes += 1
        self._pass = _Pass(self._passes, versions, report, report_at)
        for symbol in report:  # listed again: any earlier confirmation was wrong
            self._confirmed.pop(symbol, None)
        return [self.key_of(s) for s in sorted(versions.keys() | report.keys())]

    async def plan(self, ctx: Context, key: str) -> list[Action]:
        try:
            return (await self._reconcile(ctx, key, apply=False)).actions
        except ReconcileError as exc:
            if not exc.terminal:
                raise
            # One key that cannot be reconciled does not hide what the others would do.
            symbol = key.removeprefix(KEY_PREFIX)
            return [Action(self.name, key, "fail", symbol, f"{exc.reason}: {exc}")]

    async def reconcile(self, ctx: Context, key: str) -> Result:
        return await self._reconcile(ctx, key, apply=True)

    # -- one symbol --------------------------------------------------------------------------

    async def _reconcile(self, ctx: Context, key: str, *, apply: bool) -> Result:
        symbol = self._symbol(ctx, key)
        step = _Step(self, ctx, key, symbol, apply=apply and not ctx.dry_run)
        step.report_at = None if self._pass is None else self._pass.report_at
        await step.read()
        listed = self._from_report(symbol, step.stored.version) or await step.targeted()
        if listed.position is None and step.stored.observation.holds_position:
            if not step.flag_open:
                await step.flag(listed)
            if listed.source is ReportSource.BULK:
                try:
                    listed = await step.targeted()
                except (ExchangeUnavailable, RateLimited) as exc:
                    if step.apply:
                        raise  # retried with backoff; the store is left as it is
                    step.note("resolve", f"targeted query failed ({exc}); nothing would change")
                    return step.result
        if listed.position is not None:
            if step.apply:
                self._confirmed.pop(symbol, None)
            await step.follow(listed)
        elif not step.stored.observation.holds_position:
            await step.settle_absent(listed)
        else:
            count, serial = self._confirmation(symbol)
            if count >= self.confirmations:
                await step.remove(listed)
                if step.apply:
                    self._confirmed.pop(symbol, None)
            else:
                if step.apply:
                    self._confirmed[symbol] = (count, serial)
                step.wait(count)
        return step.result

    def _confirmation(self, symbol: str) -> tuple[int, int]:
        """The confirmations of ``symbol``'s absence counting this one, and this pass's serial;
        a pass counts once however often its key is retried (0: no pass, each call counts)."""
        serial = 0 if self._pass is None else self._pass.serial
        count, last = self._confirmed.get(symbol, (0, -1))
        return (count if serial and last == serial else count + 1), serial

    def _from_report(self, symbol: str, version: int) -> _Listed | None:
        """The bulk report's word on ``symbol``, when it can be trusted for it; None when
        no pass has a report, or the store position changed since the pass read it."""
        current = self._pass
        if current is None or current.versions.get(symbol, 0) != version:
            return None
        return _Listed(current.report.get(symbol), ReportSource.BULK)


class _Step:
    """Reconciling (or planning) one symbol: what was read, what is done, the result."""

    def __init__(
        self, reconciler: PositionReconciler, ctx: Context, key: str, symbol: str, *, apply: bool
    ) -> None:
        self.r = reconciler
        self.ctx = ctx
        self.key = key
        self.symbol = symbol
        self.apply = apply
        self.position_key = reconciler.position_key(symbol)
        self.log_key = reconciler.log_key(symbol)
        self.stored = _Stored(None, None)
        self.cache: Observation | None = None
        self.flag_open = False
        self.report_at: datetime | None = None
        self.result = Result()

    # -- reading -----------------------------------------------------------------------------

    async def read(self) -> None:
        """The primary's heads of the position and of its log (one round trip), and what
        the read cache holds for the position."""
        heads = await _primary(self.ctx.store).latest([self.position_key, self.log_key])
        self.stored = self._parse_position(heads.get(self.position_key))
        log = heads.get(self.log_key)
        self.flag_open = (
            log is not None
            and isinstance(log.data, dict)
            and log.data.get("action") == DiscrepancyAction.FLAGGED.value
        )
        self.cache = await self._cached()

    def _parse_position(self, record: Record | None) -> _Stored:
        if record is None or record.deleted:
            return _Stored(None, None)
        section = TradingState(self.ctx.store, prefix=self.r.prefix).positions
        try:
            return _Stored(record, section.parse(record))
        except (pydantic.ValidationError, ValidationError) as exc:
            # Overwriting it would throw away what the bot stored without a word: a person
            # must look. The engine does not retry it until the key changes.
            raise ReconcileError(
                f"positions: {record.key!r} version {record.version} is not a valid position "
                f"({_first_error(exc)}); fix or delete it",
                key=self.key,
                reason="InvalidStoredPosition",
                terminal=True,
            ) from None

    async def _cached(self) -> Observation | None:
        """What a cached read of the position would return without asking the primary;
        None when the store has no cache or the cache holds nothing for the key."""
        entries = await self.ctx.store.backend.cached([self.position_key])
        hit = self.position_key in entries
        head = entries.get(self.position_key)
        if not hit:
            return None
        if head is None or head.deleted:
            return ABSENT
        section = TradingState(self.ctx.store, prefix=self.r.prefix).positions
        try:
            p = section.parse(head)
        except (pydantic.ValidationError, ValidationError):
            return Observation(present=True)  # differs from any report: evicted
        return Observation(present=True, amount=p.amount, entry_price=p.entry_price)

    async def targeted(self) -> _Listed:
        """Ask the exchange about this symbol alone."""
        answer = await self.ctx.connector.fetch_positions([self.symbol])
        mine = _netted([p for p in answer if p.symbol == self.symbol]).get(self.symbol)
        return _Listed(mine, ReportSource.TARGETED)

    # -- deciding ----------------------------------------------------------------------------

    def _differences(self, exchange: Observation, other: Observation) -> list[str]:
        """The fields in which ``other`` differs from a listed ``exchange`` position."""
        assert exchange.amount is not None
        fields: list[str] = []
        if (
            not other.present
            or other.amount is None
            or abs(other.amount - exchange.amount) > self.r.tolerance
        ):
            fields.append("amount")
        if exchange.entry_price is not None and other.entry_price != exchange.entry_price:
            fields.append("entry_price")
        return fields

    async def follow(self, listed: _Listed) -> None:
        """The exchange lists the position: the store follows it; a stale cache is evicted."""
        assert listed.position is not None
        exchange = listed.observation
        where = _where(listed)
        fields = self._differences(exchange, self.stored.observation)
        if fields:
            held = "no position" if not self.stored.observation.present else "another position"
            await self._record(
                "update",
                f"{_amounts(self.stored.observation)} -> {_amounts(exchange)} ({where})",
                DiscrepancyAction.UPDATED,
                fields,
                listed,
                f"the store held {held} than {where} lists",
                [self._position_write(listed.position)],
            )
            return
        stale = [] if self.cache is None else self._differences(exchange, self.cache)
        if stale:
            await self._record(
                "evict",
                "the read cache is stale",
                DiscrepancyAction.EVICTED,
                stale,
                listed,
                f"the store matches {where}; the read cache does not",
                [],
            )
            await self._evict()
        elif self.flag_open:
            await self._record(
                "record",
                f"flag cleared: {where} lists it as stored",
                DiscrepancyAction.CLEARED,
                [],
                listed,
                f"{where} lists the position as the store holds it",
                [],
                drift=False,
            )

    async def settle_absent(self, listed: _Listed) -> None:
        """Not listed, and the store holds no non-zero amount: nothing for the exchange to
        contradict, unless the read cache still serves a position."""
        if self.cache is not None and self.cache.holds_position:
            await self._record(
                "evict",
                "the read cache serves a position the store does not hold",
                DiscrepancyAction.EVICTED,
                ["amount"],
                listed,
                "the read cache serves a position that neither the store nor the exchange has",
                [],
            )
            await self._evict()
        elif self.flag_open:
            await self._record(
                "record",
                "flag cleared: the store no longer holds a position",
                DiscrepancyAction.CLEARED,
                [],
                listed,
                "the store no longer holds a position",
                [],
                drift=False,
            )

    async def flag(self, listed: _Listed) -> None:
        """Record that the exchange did not list a position the store holds; change nothing."""
        where = _where(listed)
        await self._record(
            "flag",
            f"absent from {where}; kept until a targeted query confirms it",
            DiscrepancyAction.FLAGGED,
            ["amount"],
            listed,
            f"{where} does not list a position the store holds",
            [],
        )
        self.flag_open = True

    def wait(self, count: int) -> None:
        """Confirmed absent, but not as many times in a row as required yet."""
        self.note(
            "flag",
            f"absent from a targeted query ({count}/{self.r.confirmations} confirmations); kept",
        )
        self.result.in_sync = False

    async def remove(self, listed: _Listed) -> None:
        """Confirmed flat: remove the store position (a tombstone; its history stays)."""
        record = self.stored.record
        assert record is not None
        n = self.r.confirmations
        await self._record(
            "remove",
            f"confirmed flat by {n} targeted quer{'y' if n == 1 else 'ies'}",
            DiscrepancyAction.REMOVED,
            ["amount"],
            listed,
            REMOVED_REASON,
            [
                Write(
                    self.position_key,
                    None,
                    record.kind,
                    {"by": BY, "reason": REMOVED_REASON},
                    record.version,
                )
            ],
            drift=False,  # counted when it was flagged
        )

    def note(self, verb: str, detail: str) -> None:
        """Add an action to the result (and so to a plan)."""
        self.result.actions.append(Action(self.r.name, self.key, verb, self.symbol, detail))

    # -- writing -----------------------------------------------------------------------------

    def _position_write(self, reported: ExchangePosition) -> Write:
        """The store position from the exchange's: amount, entry price and last_updated
        change, every other field (the bot's own ones too) stays."""
        current = self.stored.position
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
                f"{reported.entry_price}) makes no valid position: {_first_error(exc)}",
                key=self.key,
                reason="InvalidReport",
                terminal=True,
            ) from None
        return Write(
            self.position_key,
            to_json(position),
            kinds.POSITION,
            {"by": BY, "reason": "exchange report"},
            self.stored.version,  # 0: must still be absent; CAS against a concurrent writer
        )

    async def _record(
        self,
        verb: str,
        detail: str,
        action: DiscrepancyAction,
        fields: list[str],
        listed: _Listed,
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
            store=self.stored.observation,
            cache=self.cache,
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

    async def _evict(self) -> None:
        if not self.apply:
            return
        await self.ctx.store.backend.evict([self.position_key])


def _where(listed: _Listed) -> str:
    return "the bulk report" if listed.source is ReportSource.BULK else "a targeted query"


def _amounts(seen: Observation) -> str:
    if not seen.present:
        return "none"
    price = "" if seen.entry_price is None else f" @ {seen.entry_price}"
    return f"{seen.amount}{price}"


def _first_error(exc: Exception) -> str:
    if isinstance(exc, pydantic.ValidationError):
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "value"
        return f"{where}: {err['msg']}"
    return str(exc)
