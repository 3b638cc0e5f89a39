"""TradingState: positions, orders, balances, pair states and the portfolio over a store.

Every item is one versioned key, so each has its full history and ``as_of``::

    position/<symbol>   kind trading.position    (or trading.legacy_position, see below)
    order/<id>          kind trading.order
    balance/<asset>     kind trading.balance
    pair/<pair>         kind trading.pair_state  (or trading.legacy_pair_state)
    portfolio           kind trading.portfolio   (or trading.legacy_portfolio)
    trading/index       kind trading.index: the keys of the state after each save() that
                        added or removed one

The kinds are in :mod:`statekit.trading.kinds`.

``save()`` writes a whole trading state as **one atomic batch**: changed items
get a new version, items no longer present are deleted, unchanged items are
left alone (their history does not grow), and every write is checked against
the version read (compare-and-set), so no save overwrites a version it has not
seen: when two processes change the same item or the keys, the later one
re-reads and saves again. A state that saved before plans from what it saved
instead of reading every head again, and checks the index instead of
rewriting it when no key came or went (:mod:`statekit.trading.saved` says when
it reads, what that cannot see, and what the index's history then holds).

The ``trading.legacy_*`` kinds hold the free-form dicts of the legacy drop-in
(:mod:`statekit.compat`) exactly as the bot gave them; the typed readers here
turn them into models (``Position.from_legacy``). Saving through this API
stores the typed kind from then on; the key and its history stay the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from statekit.backend import ANY, JSON, Capability, Expect, Guard, Record, Write
from statekit.errors import ConflictError, ValidationError
from statekit.store import StateStore
from statekit.trading import kinds
from statekit.trading.models import Balance, Order, PairState, Portfolio, Position, to_json
from statekit.trading.saved import Head, Item, Planned, SavedHeads

__all__ = ["Item", "SaveResult", "Section", "TradingSnapshot", "TradingState"]

M = TypeVar("M", bound=BaseModel)

_IMMUTABLE = frozenset({str, int, float, bool, Decimal, datetime, date, time, type(None)})

INDEX_KEY = "trading/index"
SAVE_RETRIES = 5
"""Times ``save`` re-reads and tries again when another writer moved an item meanwhile."""


_Dumped = tuple[BaseModel, dict[str, Any], dict[str, Any] | None, str, Item]
"""A model as :meth:`Section.items_of` last turned it into JSON: the model, its
fields and its extra fields then, its key and its item."""


class Section(Generic[M]):
    """One sort of item (positions, orders…): typed get, save, delete, list, history.

    :param state: the trading state it belongs to.
    :param folder: the key prefix of its items (``position/``).
    :param kind: the kind typed saves store.
    :param model: the pydantic model of an item.
    :param name_field: the model field that names an item (``symbol``).
    :param legacy: ``(kind, parse)`` for items the legacy drop-in stored.
    """

    def __init__(
        self,
        state: TradingState,
        folder: str,
        kind: str,
        model: type[M],
        name_field: str,
        legacy: tuple[str, Callable[[str, dict[str, Any]], M]] | None = None,
    ) -> None:
        self._state = state
        self.folder = folder
        self.kind = kind
        self.model = model
        self.name_field = name_field
        self._legacy = legacy
        # id(model) -> the model as last turned into JSON (see _Dumped)
        self._dumped: dict[int, _Dumped] = {}
        self._dumped_ids: dict[str, int] = {}  # key -> the id its memo is kept under

    def key(self, name: str) -> str:
        """The store key of the item called ``name``."""
        if not isinstance(name, str) or not name:
            raise ValidationError(
                f"a {self.kind} needs a non-empty string name, not {name!r}", reason="name"
            )
        return f"{self._state.prefix}{self.folder}{name}"

    def name_of(self, key: str) -> str:
        return key[len(self._state.prefix) + len(self.folder) :]

    def parse(self, record: Record) -> M:
        """The model held by ``record`` (of this section's kind or its legacy kind)."""
        if not isinstance(record.data, dict):
            raise ValidationError(f"{record.key!r} holds no object", key=record.key)
        if self._legacy is not None and record.kind == self._legacy[0]:
            return self._legacy[1](self.name_of(record.key), record.data)
        return self.model.model_validate(record.data)

    def item(self, value: M) -> tuple[str, Item]:
        """``value`` as the key and item ``save`` stores."""
        if not isinstance(value, self.model):
            raise ValidationError(
                f"expected a {self.model.__name__}, not {type(value).__name__}", reason="type"
            )
        return self.key(getattr(value, self.name_field)), Item(self.kind, to_json(value))

    def items_of(self, values: Iterable[M]) -> Planned:
        """:meth:`item` of each value, by key, reusing the JSON of a model handed over
        before and unchanged since.

        The same object whose fields (all immutable: text, numbers, times, enums)
        are equal to what they were when it was last turned into JSON gives that JSON.
        """
        # The hot loop of a save of a large book: a dict lookup and two dict
        # comparisons per unchanged model (no attribute access on a memo).
        saved = self._state.last_saved()
        items = Planned(saved)
        others = items.others
        dumped = self._dumped
        recall = dumped.get
        head_of = (saved.heads if saved is not None else {}).get
        for value in values:
            memo = recall(id(value))
            # The memo holds ``value``, so no other object can have its id meanwhile.
            if memo is not None:
                kept, fields, extra, key, item = memo
                if kept is value and value.__dict__ == fields and value.__pydantic_extra__ == extra:
                    head = head_of(key)
                    if (
                        head is not item
                        and head is not None
                        and head.kind == item.kind
                        and head.data == item.data
                    ):
                        # The stored head stands for it from now on: the plan sees it as is.
                        dumped[id(value)] = (kept, fields, extra, key, head)
                        item = head
                    if head is not item:
                        others.append(key)
                    items[key] = item
                    continue
            key, item = self.item(value)
            items[key] = item
            others.append(key)
            self._remember(key, value, item)
        if len(dumped) > len(items):  # items no longer handed over (closed, filled) go
            for memo in [m for m in dumped.values() if m[3] not in items]:
                self._forget(memo[3])
        return items

    def _remember(self, key: str, value: M, item: Item) -> None:
        self._forget(key)
        extra = value.__pydantic_extra__
        kept = [*value.__dict__.values(), *(extra.values() if extra else ())]
        if type(value) is self.model and all(
            type(v) in _IMMUTABLE or isinstance(v, Enum) for v in kept
        ):
            extra = dict(extra) if extra is not None else None
            self._dumped[id(value)] = (value, dict(value.__dict__), extra, key, item)
            self._dumped_ids[key] = id(value)

    def _forget(self, key: str) -> None:
        old = self._dumped_ids.pop(key, None)
        if old is not None and (memo := self._dumped.get(old)) is not None and memo[3] == key:
            del self._dumped[old]

    async def save(
        self, value: M, *, by: str | None = None, note: str | None = None, expect: Expect = ANY
    ) -> Record:
        """Store ``value`` as the new version of its item."""
        key, item = self.item(value)
        try:
            return await self._state.store.put(
                key, item.data, kind=item.kind, meta=_meta(by, note), expect=expect
            )
        finally:
            self._state.forget_saved()

    async def get(self, name: str, *, as_of: datetime | None = None) -> M | None:
        """The item called ``name`` (now, or as it was at ``as_of``); None when absent."""
        record = await self._state.store.get(self.key(name), as_of=as_of)
        return None if record is None else self.parse(record)

    async def delete(self, name: str, *, by: str | None = None, note: str | None = None) -> None:
        """Delete the item (a tombstone version: its history stays)."""
        try:
            await self._state.store.delete(self.key(name), meta=_meta(by, note))
        finally:
            self._state.forget_saved()

    async def all(self) -> dict[str, M]:
        """Every live item, by name, in name order."""
        return {
            self.name_of(r.key): self.parse(r)
            async for r in self._state.store.scan(self._state.prefix + self.folder)
        }

    async def history(self, name: str, *, limit: int = 100) -> list[Record]:
        """Versions of the item, newest first (tombstones included, data as stored)."""
        return await self._state.store.history(self.key(name), limit=limit)


@dataclass
class TradingSnapshot:
    """A whole trading state, as :meth:`TradingState.load` returns it."""

    positions: dict[str, Position] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    balances: dict[str, Balance] = field(default_factory=dict)
    pair_states: dict[str, PairState] = field(default_factory=dict)
    portfolio: Portfolio | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    """The writes of one save attempt (the index last) and what they leave listed."""

    writes: list[Write]
    unchanged: int
    listed: list[str]
    read: bool
    """Planned from heads just read from the store (not from the last save's)."""
    guards: tuple[Guard, ...]
    """The index's version, when the save checks it instead of writing it."""
    indexed: bool
    """The last write is a new version of the index."""


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What :meth:`TradingState.save` changed."""

    written: int
    deleted: int
    unchanged: int
    records: list[Record]


class TradingState:
    """The trading state of one account in a store. See the module docstring.

    :param store: an open store.
    :param prefix: put before every key (``"acct-1/"``), to keep several accounts in one store.
    :param allow_non_atomic: let ``save`` write item by item on a store without
        atomic batches (see :attr:`atomic`).
    """

    def __init__(
        self, store: StateStore, *, prefix: str = "", allow_non_atomic: bool = False
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.allow_non_atomic = allow_non_atomic
        self._saved: SavedHeads | None = None
        self._forgotten = 0  # bumped by forget_saved(): heads planned before are stale
        self.positions: Section[Position] = Section(
            self,
            "position/",
            kinds.POSITION,
            Position,
            "symbol",
            legacy=(kinds.LEGACY_POSITION, _legacy_pos),
        )
        self.orders: Section[Order] = Section(self, "order/", kinds.ORDER, Order, "id")
        self.balances: Section[Balance] = Section(self, "balance/", kinds.BALANCE, Balance, "asset")
        self.pair_states: Section[PairState] = Section(
            self,
            "pair/",
            kinds.PAIR_STATE,
            PairState,
            "pair",
            legacy=(kinds.LEGACY_PAIR_STATE, _legacy_pair),
        )

    @property
    def atomic(self) -> bool:
        """``save`` is one atomic, compare-and-set batch on this store.

        A store without atomic batches (InfluxDB) refuses ``save`` with
        CapabilityError, unless the state was made with ``allow_non_atomic=True``:
        then ``save`` writes item by item, and a crash part way leaves part of
        the new state (the legacy drop-in allows it: its JSON-file original was
        no better, and ``get_system_status()`` says so).
        """
        caps = self.store.capabilities
        return Capability.ATOMIC_BATCH in caps and Capability.COMPARE_AND_SET in caps

    @property
    def _guarded(self) -> bool:
        """A save that adds or removes no key checks the index instead of writing it."""
        return self.atomic and Capability.GUARDED_APPEND in self.store.capabilities

    # -- the portfolio: one item ---------------------------------------------------------

    @property
    def portfolio_key(self) -> str:
        return f"{self.prefix}portfolio"

    async def save_portfolio(
        self, portfolio: Portfolio, *, by: str | None = None, note: str | None = None
    ) -> Record:
        """Store ``portfolio`` as the new version of the portfolio."""
        try:
            return await self.store.put(
                self.portfolio_key, to_json(portfolio), kind=kinds.PORTFOLIO, meta=_meta(by, note)
            )
        finally:
            self.forget_saved()

    async def portfolio(self, *, as_of: datetime | None = None) -> Portfolio | None:
        """The portfolio (now, or at ``as_of``); None when never saved."""
        record = await self.store.get(self.portfolio_key, as_of=as_of)
        return None if record is None else _parse_portfolio(record)

    # -- the whole state -----------------------------------------------------------------

    def sections(self) -> list[Section[Any]]:
        return [self.positions, self.orders, self.balances, self.pair_states]

    async def save(
        self,
        *,
        positions: Mapping[str, Position] | list[Position] | None = None,
        orders: Mapping[str, Order] | list[Order] | None = None,
        balances: Mapping[str, Balance] | list[Balance] | None = None,
        pair_states: Mapping[str, PairState] | list[PairState] | None = None,
        portfolio: Portfolio | None = None,
        by: str | None = None,
        note: str | None = None,
    ) -> SaveResult:
        """Save a whole trading state as one atomic batch.

        Each section given replaces that section: its items not given are
        deleted. A section left out (None) is not touched. See the module docstring.
        """
        wanted: dict[str, dict[str, Item]] = {}
        given: list[tuple[Section[Any], Any]] = [
            (self.positions, positions),
            (self.orders, orders),
            (self.balances, balances),
            (self.pair_states, pair_states),
        ]
        for section, values in given:
            if values is not None:
                items = values.values() if isinstance(values, Mapping) else values
                wanted[section.folder] = section.items_of(items)
        if portfolio is not None:
            wanted[""] = {self.portfolio_key: Item(kinds.PORTFOLIO, to_json(portfolio))}
        return await self.save_items(wanted, by=by, note=note)

    async def save_items(
        self,
        sections: Mapping[str, Mapping[str, Item]],
        *,
        by: str | None = None,
        note: str | None = None,
    ) -> SaveResult:
        """Save items by key as one atomic batch; ``sections`` maps a folder to its items.

        A folder's stored items that are not given are deleted (folder ``""``
        holds single items like the portfolio and deletes nothing). The building
        block of :meth:`save` and of the legacy drop-in.

        A state that saved before plans from what it saved (:mod:`statekit.trading.saved`)
        and reads the store only when that is unknown or another writer moved on.
        """
        atomic = self.atomic
        if atomic or not self.allow_non_atomic:
            self.store.require(Capability.ATOMIC_BATCH, "saving a whole trading state")
            self.store.require(Capability.COMPARE_AND_SET, "saving a whole trading state")
        meta = _meta(by, note)
        saved = self._saved if atomic else None
        if saved is not None and not saved.covers(
            (self.prefix + f for f in sections if f), sections.get("", {})
        ):
            saved = None
        attempt = 0
        while True:
            generation = self._forgotten
            if saved is None:
                saved = await self._read_heads(sections)
            plan = self._plan(saved, sections, meta, atomic)
            if not plan.writes:
                self._keep(saved, atomic, generation)
                return SaveResult(0, 0, plan.unchanged, [])
            try:
                if atomic:
                    records = await self.store.append(plan.writes, guards=plan.guards)
                else:  # refused above unless the caller allowed it: see ``atomic``
                    records = [(await self.store.append([w]))[0] for w in plan.writes]
            except ConflictError:
                self._saved = None
                if plan.read:  # planned from what the store held: another writer is busy
                    if attempt == SAVE_RETRIES - 1:
                        raise
                    await asyncio.sleep(0.005 * 2**attempt)
                    attempt += 1
                saved = None
                continue
            index = records.pop() if plan.indexed else None  # bookkeeping, not an item
            self._keep(saved.applied(records, plan.listed, index), atomic, generation)
            deleted = sum(1 for r in records if r.deleted)
            return SaveResult(len(records) - deleted, deleted, plan.unchanged, records)

    def _keep(self, saved: SavedHeads, atomic: bool, generation: int) -> None:
        # Heads of an older index version never replace newer ones (tasks finishing
        # late), nor do heads planned before a single-item write through this state.
        # A save that only guarded the index leaves its version: two different heads at
        # one index version cannot be ordered, so neither is kept (the next save reads).
        current = self._saved
        if generation != self._forgotten or not atomic:
            self._saved = None
        elif current is None or current is saved or current.index_version < saved.index_version:
            self._saved = saved
        elif current.index_version == saved.index_version:
            self._saved = None

    def forget_saved(self) -> None:
        """Forget the heads of the last save: the next save reads the store again.

        Called after every single-item write through this state (``Section.save``,
        ``save_portfolio``...), which the remembered heads would not show.
        """
        self._saved = None
        self._forgotten += 1

    def saved_head(self, key: str) -> Head | None:
        """The version, kind and value ``key`` had after this state's last save (None: unknown)."""
        saved = self._saved
        return None if saved is None else saved.heads.get(key)

    def last_saved(self) -> SavedHeads | None:
        """What this state's last save left (None: unknown, the next save reads)."""
        return self._saved

    def saved_heads(self) -> Mapping[str, Head]:
        """The live keys after this state's last save, with their heads (empty: unknown)."""
        saved = self._saved
        return {} if saved is None else saved.heads

    async def _read_heads(self, sections: Mapping[str, Mapping[str, Item]]) -> SavedHeads:
        index_key = self.prefix + INDEX_KEY
        records: list[Record] = []
        folders = [self.prefix + folder for folder in sections if folder]
        for folder in folders:
            records += [record async for record in self.store.scan(folder)]
        # A scanned folder's live items are all read already; one not there is absent
        # or deleted, which ``expect=0`` checks. Single items are read here.
        singles = list(sections.get("", {}))
        heads = await self.store.get_many([*singles, index_key])
        index = heads.pop(index_key, None)
        return SavedHeads.read([*records, *heads.values()], folders, singles, index)

    def _plan(
        self,
        saved: SavedHeads,
        sections: Mapping[str, Mapping[str, Item]],
        meta: dict[str, JSON],
        atomic: bool,
    ) -> _Plan:
        writes: list[Write] = []
        unchanged = 0
        head_of = saved.heads.get
        heads = saved.heads
        for folder, items in sections.items():
            found = 0
            todo: Iterable[str] = items
            if type(items) is Planned and items.trusted(saved):
                todo = dict.fromkeys(items.others)  # every other item is its head: unchanged
                found = len(items) - len(todo)
                unchanged += found
            for key in todo:
                item = items[key]
                head = head_of(key)
                if head is item:  # handed over as the stored head: unchanged (the usual case)
                    found += 1
                    unchanged += 1
                    continue
                if head is not None:
                    found += 1
                    same = head.data is item.data or head.data == item.data
                    if same and head.kind == item.kind:
                        unchanged += 1
                        continue
                expect = (head.version if head is not None else 0) if atomic else ANY
                writes.append(Write(key, item.data, item.kind, meta, expect))
            members = saved.members.get(self.prefix + folder) if folder else None
            if members and found < len(members):
                for key in sorted(members.difference(items)):
                    head = heads[key]
                    expect = head.version if atomic else ANY
                    writes.append(Write(key, None, head.kind, meta, expect))
        listed = saved.listed
        guards: tuple[Guard, ...] = ()
        indexed = False
        if writes:
            index_key = self.prefix + INDEX_KEY
            gone = {w.key for w in writes if w.data is None}
            added = {w.key for w in writes if w.data is not None} - saved.listed_set
            if gone or added:  # a save that adds or removes no key lists the same keys
                listed = sorted((saved.listed_set - gone) | added)
            if not (gone or added) and saved.index_current and self._guarded:
                # The same keys: the index stays as it is, checked, not rewritten.
                guards = (Guard(index_key, saved.index_version),)
            else:
                expect = saved.index_version if atomic else ANY
                keys: list[JSON] = [*listed]
                writes.append(Write(index_key, {"keys": keys}, kinds.INDEX, meta, expect))
                indexed = True
        return _Plan(writes, unchanged, listed, saved is not self._saved, guards, indexed)

    async def load(self, *, as_of: datetime | None = None) -> TradingSnapshot:
        """The whole trading state now, or as it was at ``as_of``.

        ``as_of`` reads every item that is live now or was listed by the index
        at ``as_of`` (the keys after the last ``save`` before it that added or
        removed one), each as of that moment.
        """
        snapshot = TradingSnapshot()
        if as_of is None:
            records = [r async for r in self.store.scan(self.prefix)]
        else:
            keys = {r.key async for r in self.store.scan(self.prefix)}
            index = await self.store.get(self.prefix + INDEX_KEY, as_of=as_of)
            listed = index.data.get("keys") if index and isinstance(index.data, dict) else None
            if isinstance(listed, list):
                keys.update(k for k in listed if isinstance(k, str))
            found = await self.store.get_many(sorted(keys), as_of=as_of)
            records = list(found.values())
        targets: list[tuple[Section[Any], dict[str, Any]]] = [
            (self.positions, snapshot.positions),
            (self.orders, snapshot.orders),
            (self.balances, snapshot.balances),
            (self.pair_states, snapshot.pair_states),
        ]
        for record in records:
            if record.key == self.portfolio_key:
                snapshot.portfolio = _parse_portfolio(record)
                continue
            for section, into in targets:
                if record.key.startswith(self.prefix + section.folder):
                    into[section.name_of(record.key)] = section.parse(record)
                    break
        return snapshot


def _meta(by: str | None, note: str | None) -> dict[str, JSON]:
    meta: dict[str, JSON] = {}
    if by is not None:
        meta["by"] = by
    if note is not None:
        meta["note"] = note
    return meta


def _legacy_pos(symbol: str, data: dict[str, Any]) -> Position:
    return Position.from_legacy(symbol, data)


def _legacy_pair(pair: str, data: dict[str, Any]) -> PairState:
    return PairState.from_legacy(pair, data)


def _parse_portfolio(record: Record) -> Portfolio:
    if not isinstance(record.data, dict):
        raise ValidationError(f"{record.key!r} holds no object", key=record.key)
    if record.kind == kinds.LEGACY_PORTFOLIO:
        return Portfolio.from_legacy(record.data)
    return Portfolio.model_validate(record.data)
