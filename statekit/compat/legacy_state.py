"""The async side of the legacy drop-in: legacy dicts kept in a :class:`TradingState`.

Every sync manager in :mod:`statekit.compat` runs these coroutines through its
portal; the migration runs them too. Nothing here blocks.

Where the items live (``TradingState`` keys, with their kinds)::

    position/<symbol>   trading.legacy_position     an entry of active_positions
    pair/<pair>         trading.legacy_pair_state   an entry of pair_states
    portfolio           trading.legacy_portfolio    portfolio_data
    migration/<sha256>  compat.legacy_migration     a legacy file migrated (migration.py)

**Which store.** :func:`settings_for` picks it: the configured store when one
is configured (``STATEKIT_URL``, ``TRADING_STATE_DB_TYPE``, ``config.json``'s
``database``...), else a SQLite file beside the legacy path: ``state.json`` →
``state.statekit.db`` in the same folder; a folder ``backups/`` →
``backups/statekit.db``. With neither, the configured default
(``sqlite:///statekit.db``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from statekit.backend import JSON, Capability, Record
from statekit.codec import check_key, redact_url
from statekit.compat.legacy_format import legacy_object
from statekit.compat.loaded import LoadedState, touches
from statekit.compat.portal import Portal
from statekit.config import Settings
from statekit.errors import BackendUnavailable, StatekitError, ValidationError
from statekit.snapshots import SnapshotInfo
from statekit.store import StateStore
from statekit.trading import kinds
from statekit.trading.saved import Planned
from statekit.trading.state import INDEX_KEY, Item, SaveResult, TradingState

__all__ = [
    "DIRECTORY_STORE",
    "STORE_SUFFIX",
    "Connected",
    "LegacyState",
    "is_configured",
    "settings_for",
    "store_beside",
]

STORE_SUFFIX = ".statekit.db"
"""The SQLite file beside a legacy file: ``state.json`` → ``state.statekit.db``."""
DIRECTORY_STORE = "statekit.db"
"""The SQLite file inside a folder of legacy files."""

POSITIONS = "position/"
PAIR_STATES = "pair/"
PORTFOLIO = "portfolio"
KINDS = {POSITIONS: kinds.LEGACY_POSITION, PAIR_STATES: kinds.LEGACY_PAIR_STATE}
PORTFOLIO_KIND = kinds.LEGACY_PORTFOLIO

STATE_TYPES: Mapping[str, str] = {
    "position": POSITIONS,
    "positions": POSITIONS,
    "pair_state": PAIR_STATES,
    "pair_states": PAIR_STATES,
    "pair": PAIR_STATES,
    "portfolio": PORTFOLIO,
}
"""``get_state_history(state_type=...)`` names → a folder, or the portfolio key."""
_TYPE_OF = {POSITIONS: "position", PAIR_STATES: "pair_state", PORTFOLIO: "portfolio"}
_LEGACY_START = "p"
"""What every legacy key starts with, after the state's prefix."""
assert all(k.startswith(_LEGACY_START) for k in (POSITIONS, PAIR_STATES, PORTFOLIO))


def is_configured(settings: Settings) -> bool:
    """A store was chosen explicitly: a URL, or the database type or SQLite file."""
    if settings.url is not None and settings.url.get_secret_value():
        return True
    return bool({"database_type", "sqlite_path"} & settings.database.model_fields_set)


def store_beside(path: str | os.PathLike[str]) -> Path:
    """The SQLite file kept beside a legacy file or inside a folder of them."""
    place = Path(path).expanduser().absolute()
    if place.is_dir():
        return place / DIRECTORY_STORE
    return place.with_name(place.stem + STORE_SUFFIX)


def settings_for(path: str | os.PathLike[str] | None, settings: Settings) -> Settings:
    """A copy of ``settings`` whose ``store_url()`` is the store of legacy ``path``.

    The configured store when :func:`is_configured`, else :func:`store_beside`
    ``path`` (when there is a path).
    """
    chosen = settings.model_copy(deep=True)
    if path is not None and not is_configured(chosen):
        chosen.database.sqlite_path = os.fspath(store_beside(path))
    return chosen


def database_type(url: str) -> str:
    """The kind of database a store URL points at (``sqlite``, ``postgresql``...)."""
    scheme = urlsplit(url).scheme.lower()
    return {"postgres": "postgresql", "influxdbs": "influxdb"}.get(scheme, scheme)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


class LegacyState:
    """Legacy dicts (positions, pair states, portfolio) in one store, async.

    :param settings: the settings; ``settings.store_url()`` is the store (see
        :func:`settings_for`).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: StateStore | None = None
        self._state: TradingState | None = None
        self._url: str | None = None
        self._writing: asyncio.Lock | None = None
        self._loaded: LoadedState | None = None  # the last load (see load)

    def write_lock(self) -> asyncio.Lock:
        """Held by every save through this state, so they take turns.

        Racing ourselves would only burn the compare-and-set retries meant for
        other processes. Made on first use, in the loop these coroutines run on.
        """
        if self._writing is None:
            self._writing = asyncio.Lock()
        return self._writing

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The store URL (it may hold a password: show :attr:`shown_url`)."""
        if self._url is None:
            self._url = self.settings.store_url()
        return self._url

    @property
    def shown_url(self) -> str:
        """The store URL with its secrets replaced by ``***``."""
        try:
            return redact_url(self.url)
        except StatekitError:
            return "(no store URL: the configuration is invalid)"

    @property
    def opened(self) -> bool:
        return self._state is not None

    async def open(self) -> TradingState:
        """Open the store (once); the trading state over it."""
        if self._state is None:
            import statekit

            store = await statekit.open(self.url, settings=self.settings)
            # The legacy file was no better than item by item; get_system_status says which.
            self._store, self._state = store, TradingState(store, allow_non_atomic=True)
        return self._state

    @property
    def state(self) -> TradingState:
        """The open trading state. :raises StatekitError: :meth:`open` was not awaited."""
        if self._state is None:
            raise StatekitError("the legacy state is not open")
        return self._state

    async def aclose(self) -> None:
        """Close the store. Idempotent."""
        store, self._store, self._state = self._store, None, None
        self._loaded = None
        if store is not None:
            await store.aclose()

    # -- writes ------------------------------------------------------------------------

    def items(
        self,
        positions: Mapping[str, Any] | None,
        pair_states: Mapping[str, Any] | None,
        portfolio: Mapping[str, Any] | None,
    ) -> dict[str, dict[str, Item]]:
        """The ``save_items`` sections for a legacy state; a section given as None is left out.

        :raises ValidationError: a value breaks the rule of :func:`legacy_value`,
            a section is not a dict, or a symbol is not a usable key.
        """
        sections: dict[str, dict[str, Item]] = {}
        for folder, name, values in (
            (POSITIONS, "active_positions", positions),
            (PAIR_STATES, "pair_states", pair_states),
        ):
            if values is None:
                continue
            if not isinstance(values, Mapping):
                raise ValidationError(
                    f"{name}: must be a dict of symbol → dict, not {type(values).__name__}",
                    reason="not an object",
                )
            sections[folder] = self._section(folder, name, values)
        if portfolio is not None:
            sections.setdefault("", {})[self.key(PORTFOLIO)] = Item(
                PORTFOLIO_KIND, legacy_object(portfolio, "portfolio_data")
            )
        return sections

    def _section(self, folder: str, name: str, values: Mapping[Any, Any]) -> Planned:
        # An item equal (==) to what the last save stored is that stored value: it is
        # neither converted nor checked again (see ``save``), nor by the plan.
        kind = KINDS[folder]
        start = (self._state.prefix if self._state else "") + folder
        saved = self._state.last_saved() if self._state else None
        head_of = (saved.heads if saved is not None else {}).get
        items = Planned(saved)
        for symbol, data in values.items():
            if type(symbol) is str:
                key = start + symbol
                head = head_of(key)
                if head is not None and head.kind == kind and head.data == data:
                    items[key] = head
                    continue
            key = self.key(folder, symbol, name)
            items[key] = Item(kind, legacy_object(data, f"{name}.{symbol}"))
            items.others.append(key)
        return items

    def key(self, folder: str, symbol: object = "", section: str = "") -> str:
        """The store key of ``symbol`` in ``folder`` (or of the portfolio).

        :raises ValidationError: ``symbol`` is not a non-empty str usable in a key.
        """
        if folder == PORTFOLIO:
            return self.state.prefix + PORTFOLIO if self._state else PORTFOLIO
        if not isinstance(symbol, str) or not symbol:
            raise ValidationError(
                f"{section}: a symbol must be a non-empty str, not {symbol!r}", reason="symbol"
            )
        prefix = self._state.prefix if self._state else ""
        try:
            return check_key(f"{prefix}{folder}{symbol}")
        except ValidationError as exc:
            raise ValidationError(
                f"{section}.{symbol}: not usable as a symbol: {exc}", reason="symbol"
            ) from exc

    async def save(
        self,
        positions: Mapping[str, Any] | None,
        pair_states: Mapping[str, Any] | None,
        portfolio: Mapping[str, Any] | None = None,
        *,
        by: str | None = None,
        note: str | None = None,
    ) -> SaveResult:
        """Save a legacy state: one atomic batch (item by item on a store without batches).

        Each section given replaces that section (removed symbols are deleted);
        unchanged items are not rewritten; a section given as None is not touched.
        An item equal (``==``) to the value the last save stored is unchanged, as
        ``1`` and ``1.0`` always were: it is not converted again (a ``Decimal``
        equal to a stored float stays that float).
        """
        state = await self.open()
        sections = self.items(positions, pair_states, portfolio)
        async with self.write_lock():
            try:
                return await state.save_items(sections, by=by, note=note)
            finally:
                self._loaded = None  # changed() would list the keys; no need to ask

    async def save_position(
        self, symbol: str, data: Mapping[str, Any], *, by: str | None, note: str | None
    ) -> SaveResult:
        """Save one position, leaving the others as they are."""
        state = await self.open()
        key = self.key(POSITIONS, symbol, "position")
        item = Item(KINDS[POSITIONS], legacy_object(data, f"position.{symbol}"))
        async with self.write_lock():
            try:
                return await state.save_items({"": {key: item}}, by=by, note=note)
            finally:
                self._loaded = None

    # -- reads -------------------------------------------------------------------------

    async def section(self, folder: str) -> dict[str, JSON]:
        """The live items of a folder, by symbol, as stored."""
        state = await self.open()
        start = state.prefix + folder
        return {r.key[len(start) :]: r.data async for r in state.store.scan(start)}

    async def load(self) -> dict[str, Any] | None:
        """The legacy state dict; None when nothing was ever saved.

        ``{"active_positions": {...}, "pair_states": {...}, "timestamp": "<ISO UTC>"}``
        plus ``"portfolio_data"`` when a portfolio is stored. ``timestamp`` is
        when the state last changed. On a store that can say what changed since a
        point (``Capability.CHANGES``), the last load is kept in this process and
        handed out again (as fresh dicts) while none of its keys changed
        (:mod:`statekit.compat.loaded`).
        """
        state = await self.open()
        store = state.store
        if Capability.CHANGES not in store.capabilities:
            return await self._read(state)
        kept = self._loaded
        try:
            if kept is not None:
                now = await store.position() if kept.noisy else None
                listed = await store.changed(kept.stamp, state.prefix)
                if not touches(listed, self._starts(state), self._singles(state)):
                    if self._loaded is kept:  # a save meanwhile forgot it: stay forgotten
                        self._loaded = kept.moved(now, bool(listed))
                    return kept.copy()
            stamp = await store.position()  # before the reads: what commits later is listed
        except BackendUnavailable:
            # Nothing says what changed (a tiered store's primary is down): read it all,
            # as without the capability; its mirrors or journal may still answer.
            self._loaded = None
            return await self._read(state)
        kept = LoadedState.of(stamp, await self._read(state))
        self._loaded = kept
        return kept.copy()

    def _starts(self, state: TradingState) -> tuple[str, ...]:
        return tuple(state.prefix + folder for folder in KINDS)

    def _singles(self, state: TradingState) -> frozenset[str]:
        return frozenset({self.key(PORTFOLIO), state.prefix + INDEX_KEY})

    async def _read(self, state: TradingState) -> dict[str, Any] | None:
        """The legacy state dict as the store holds it (see :meth:`load`)."""
        # The positions, the pair states and the portfolio share their first letter:
        # one scan reads all three (not a scan each and a read); the index is read
        # meanwhile, so a small state is two reads queued together, one wait.
        index_key = state.prefix + INDEX_KEY
        reading = asyncio.ensure_future(state.store.get_many([index_key]))
        try:
            positions, pairs, portfolio, newest = await self._legacy_keys(state)
        except BaseException:
            reading.cancel()
            raise
        index = (await reading).get(index_key)
        if not positions and not pairs and portfolio is None and index is None:
            return None
        # A save that adds or removes no key leaves the index as it is: the state last
        # changed at its newest item, or at the index when a key went (the index is newer).
        stamps = [at for at in (newest, index.at if index is not None else None) if at]
        loaded: dict[str, Any] = {"active_positions": positions, "pair_states": pairs}
        if portfolio is not None:
            loaded["portfolio_data"] = portfolio.data
        loaded["timestamp"] = _iso(max(stamps)) if stamps else None
        return loaded

    async def _legacy_keys(
        self, state: TradingState
    ) -> tuple[dict[str, JSON], dict[str, JSON], Record | None, datetime | None]:
        """The positions and the pair states by symbol, the portfolio, and the newest
        ``at`` among them: one scan."""
        folders: dict[str, dict[str, JSON]] = {state.prefix + f: {} for f in KINDS}
        portfolio_key = self.key(PORTFOLIO)
        portfolio: Record | None = None
        newest: datetime | None = None
        async for record in state.store.scan(state.prefix + _LEGACY_START):
            key = record.key
            if key == portfolio_key:
                portfolio = record
            else:
                for start, into in folders.items():
                    if key.startswith(start):
                        into[key[len(start) :]] = record.data
                        break
                else:
                    continue
            if newest is None or record.at > newest:
                newest = record.at
        positions, pairs = folders.values()
        return positions, pairs, portfolio, newest

    async def history(self, state_type: str | None, limit: int) -> list[dict[str, Any]]:
        """Versions of the legacy items, newest first, as the legacy history dicts.

        Each: ``timestamp`` (ISO UTC), ``state_id`` (the key), ``state_type``
        (position, pair_state, portfolio), ``name``, ``version``, ``data`` (None
        when deleted), ``deleted``, ``user_id`` and ``description`` (the saver's,
        else e.g. ``"position EURUSD saved"``).
        """
        if limit < 1:
            raise ValidationError("limit must be >= 1", reason="limit")
        if state_type is None:
            wanted = [POSITIONS, PAIR_STATES, PORTFOLIO]
        elif state_type.lower() in STATE_TYPES:
            wanted = [STATE_TYPES[state_type.lower()]]
        else:
            known = ", ".join(sorted({"position", "pair_state", "portfolio"}))
            raise ValidationError(
                f"state_type {state_type!r} is unknown; use one of {known} (or None: all)",
                reason="state_type",
            )
        state = await self.open()
        keys = await self._keys_seen(limit)
        for folder in wanted:
            if folder != PORTFOLIO:
                keys |= {r.key async for r in state.store.scan(state.prefix + folder)}
        portfolio_key = self.key(PORTFOLIO)
        if PORTFOLIO in wanted:
            keys.add(portfolio_key)
        chosen: dict[str, str] = {}
        for key in keys:
            for folder in wanted:
                if folder == PORTFOLIO:
                    if key == portfolio_key:
                        chosen[key] = folder
                elif key.startswith(state.prefix + folder):
                    chosen[key] = folder
        pages = await asyncio.gather(*(state.store.history(k, limit=limit) for k in sorted(chosen)))
        records = sorted(
            (r for page in pages for r in page), key=lambda r: (r.at, r.key, r.version)
        )
        return [self._entry(r, chosen[r.key]) for r in reversed(records[-limit:])]

    async def _keys_seen(self, limit: int) -> set[str]:
        # Every save that changes something writes a new index version listing the keys
        # after it, so the keys of the newest `limit` versions are in the newest
        # `limit + 1` index versions (a deleted key is in the one before its deletion).
        state = self.state
        versions = await state.store.history(state.prefix + INDEX_KEY, limit=limit + 1)
        keys: set[str] = set()
        for record in versions:
            listed = record.data.get("keys") if isinstance(record.data, dict) else None
            if isinstance(listed, list):
                keys.update(k for k in listed if isinstance(k, str))
        return keys

    def _entry(self, record: Record, folder: str) -> dict[str, Any]:
        state_type = _TYPE_OF[folder]
        name = "" if folder == PORTFOLIO else record.key[len(self.state.prefix + folder) :]
        note = record.meta.get("note")
        by = record.meta.get("by")
        done = "deleted" if record.deleted else "saved"
        return {
            "timestamp": _iso(record.at),
            "state_id": record.key,
            "state_type": state_type,
            "name": name,
            "version": record.version,
            "data": record.data,
            "deleted": record.deleted,
            "user_id": by if isinstance(by, str) else None,
            "description": note
            if isinstance(note, str)
            else f"{state_type} {name} {done}".replace("  ", " "),
        }

    async def snapshot(self, description: str) -> SnapshotInfo:
        """Capture the whole store as a snapshot."""
        state = await self.open()
        return await state.store.snapshots.create(description, prefix=state.prefix)

    async def status(self) -> dict[str, Any]:
        """The status dict of ``get_system_status()`` (see the managers)."""
        state = await self.open()
        health = await state.store.health()
        positions = await self.section(POSITIONS)
        pairs = await self.section(PAIR_STATES)
        loaded = await self.load()
        return {
            "initialized": True,
            "healthy": health.ok,
            "database_type": database_type(self.url),
            "backend": state.store.backend.name,
            "store_url": self.shown_url,
            "atomic": state.atomic,
            "active_positions": len(positions),
            "pair_states": len(pairs),
            "has_portfolio": bool(loaded and "portfolio_data" in loaded),
            "last_saved": loaded["timestamp"] if loaded else None,
            "health": {
                "ok": health.ok,
                "latency_ms": round(health.latency_ms, 3),
                "detail": dict(health.detail),
            },
            "validation_enabled": self.settings.enable_validation,
            "cache_enabled": self.settings.cache.enabled,
            # The REST API needs the ``api`` extra (FastAPI, uvicorn).
            "api_available": importlib.util.find_spec("fastapi") is not None,
        }


class Connected(Protocol):
    """A manager the migration can work through: its portal and its open legacy state."""

    def _connection(self) -> tuple[Portal, LegacyState]: ...
