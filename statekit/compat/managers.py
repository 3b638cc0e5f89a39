"""The legacy managers: seed 003's ``TradingStateManager`` and ``UnifiedStateManager``.

Sync objects with the legacy names, signatures and return shapes; each owns a
:class:`~statekit.compat.portal.Portal` and runs the async core
(:class:`~statekit.compat.legacy_state.LegacyState` over a ``TradingState``)
through it. There is no second implementation and no global instance:
:func:`get_state_manager` returns a new manager on every call.

**Store.** The configured store when one is configured, else a SQLite file
beside the legacy file (``state.json`` → ``state.statekit.db``); see
:func:`statekit.compat.legacy_state.settings_for`. The store is opened on first
use (or by ``initialize()``); an existing legacy file is then migrated into it
once (``auto_migrate``; the file is only read, never changed).

**Failures.** The legacy API answers with values, so:

- saves (``save_trading_state``, ``save_position``, ``create_snapshot``) return
  False and log the reason (logger ``statekit.compat``) — never raise, never
  save half a state (one atomic batch; on a store without atomic batches, such
  as InfluxDB, item by item: ``get_system_status()["atomic"]`` is False);
- ``health_check()`` and ``get_system_status()`` never raise: a store that
  cannot be reached is ``False`` / ``{"healthy": False, "error": ...}``;
- reads (``load_trading_state``, ``get_all_positions``, ``get_state_history``)
  raise :class:`~statekit.errors.StatekitError` when the store cannot be read:
  answering "no state" (None) then would make a bot believe it holds nothing
  and overwrite its positions. ``None`` means only "nothing was ever saved".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from statekit.compat.legacy_state import LegacyState, settings_for
from statekit.compat.legacy_state import database_type as _database_type
from statekit.compat.migration import MigrationReport, migrate_source
from statekit.compat.portal import Portal
from statekit.config import Settings, load_settings
from statekit.errors import ConfigError, StatekitError

__all__ = [
    "TradingStateManager",
    "UnifiedStateManager",
    "create_backward_compatible_manager",
    "create_enhanced_trading_state_manager",
    "get_state_manager",
]

log = logging.getLogger("statekit.compat")


def _close(portal: Portal, legacy: LegacyState) -> None:
    """Close a manager's store and portal (shutdown(), garbage collection or exit)."""
    try:
        portal.call(legacy.aclose)
    except StatekitError as exc:
        log.warning("closing the store %s: %s", legacy.shown_url, exc)
    finally:
        portal.close()


class TradingStateManager:
    """The legacy JSON-file state manager, now over a statekit store.

    ``save_trading_state(active_positions, pair_states) -> bool`` and
    ``load_trading_state() -> dict | None`` as before; the first use migrates an
    existing ``state_file`` into the store once (the file is left as it is).

    :param state_file: the legacy JSON file (it need not exist).
    :param auto_migrate: migrate ``state_file`` on first use when it exists.
    :param settings: statekit settings (default: :func:`statekit.config.load_settings`).
    """

    def __init__(
        self,
        state_file: str | os.PathLike[str] = "state.json",
        *,
        auto_migrate: bool = True,
        settings: Settings | None = None,
    ) -> None:
        self._setup(Path(state_file), auto_migrate, settings or load_settings())

    def _setup(self, legacy_path: Path | None, auto_migrate: bool, settings: Settings) -> None:
        self.legacy_state_path = legacy_path
        self.auto_migrate = auto_migrate
        self.config: Settings = settings_for(legacy_path, settings)
        """statekit's settings for this manager; read when the store opens."""
        self.migration_report: MigrationReport | None = None
        """What the automatic migration did (None: none ran)."""
        self._lock = threading.Lock()
        self._portal: Portal | None = None
        self._legacy: LegacyState | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._ready = False  # opened and migrated: the fast path may skip the lock
        self._api: _ApiRun | None = None

    # -- the portal and the store ---------------------------------------------------------

    def _connection(self) -> tuple[Portal, LegacyState]:
        """The portal and the open legacy state, opening (and migrating) on first use."""
        portal, legacy = self._portal, self._legacy
        if self._ready and portal is not None and legacy is not None:
            return portal, legacy
        with self._lock:
            if self._portal is None or self._legacy is None:
                self._portal = Portal("statekit-compat")
                self._legacy = LegacyState(self.config)
                # Closes the store even when the bot never calls shutdown().
                self._finalizer = weakref.finalize(self, _close, self._portal, self._legacy)
            portal, legacy = self._portal, self._legacy
            if not self._ready:
                path = self.legacy_state_path
                migrate = self.auto_migrate and path is not None and path.is_file()
                portal.call(self._start, legacy, path if migrate else None)
                self._ready = True
        return portal, legacy

    async def _start(self, legacy: LegacyState, path: Path | None) -> None:
        """Open the store; migrate the legacy file at ``path`` (None: none to migrate)."""
        await legacy.open()
        if path is not None:
            report = await migrate_source(legacy, path)
            self.migration_report = report
            for failure in report.failures:
                log.warning("migrating %s: %s: %s", path, failure.item, failure.reason)
            if not report.already_migrated:
                log.info(
                    "migrated %s into %s: %d/%d items",
                    path,
                    legacy.shown_url,
                    report.successful_items,
                    report.total_items,
                )

    def close(self) -> None:
        """Same as :meth:`shutdown`."""
        self.shutdown()

    def shutdown(self) -> None:
        """Close the store and the portal. The manager opens again on its next use."""
        with self._lock:
            finalizer, self._finalizer = self._finalizer, None
            self._portal = self._legacy = None
            self._ready = False
        if finalizer is not None:
            finalizer()

    # -- the legacy calls -----------------------------------------------------------------

    def save_trading_state(
        self,
        active_positions: Mapping[str, Any],
        pair_states: Mapping[str, Any],
        portfolio_data: Mapping[str, Any] | None = None,
        user_id: str | None = None,
        *,
        description: str | None = None,
    ) -> bool:
        """Save the whole trading state; True when saved, False (logged) when not.

        The dicts are stored as given (see :mod:`statekit.compat.legacy_format`
        for datetimes, Decimals and NaN). Positions and pair states not given
        any more are deleted; unchanged ones are not rewritten. ``portfolio_data``
        None leaves the stored portfolio as it is.

        :param user_id: who saved (kept in each version's meta as ``by``).
        :param description: why (kept as ``note``).
        """
        try:
            portal, legacy = self._connection()
            portal.call(
                legacy.save,
                active_positions,
                pair_states,
                portfolio_data,
                by=user_id,
                note=description,
            )
        except StatekitError as exc:
            log.error("save_trading_state failed, nothing was saved: %s", exc)
            return False
        return True

    def load_trading_state(self) -> dict[str, Any] | None:
        """The saved state: ``active_positions``, ``pair_states``, ``timestamp``
        (ISO UTC, when it last changed), and ``portfolio_data`` when one was saved.

        :returns: None when nothing was ever saved.
        :raises StatekitError: the store cannot be read (see the module docstring).
        """
        portal, legacy = self._connection()
        return portal.call(legacy.load)

    def __enter__(self) -> Self:
        self._connection()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()


class UnifiedStateManager(TradingStateManager):
    """The legacy unified interface: state, snapshots, history, status, health.

    Use as a context manager, or call :meth:`initialize` and :meth:`shutdown`.

    :param auto_migrate: migrate ``legacy_state_path`` on first use when it exists.
    :param legacy_state_path: the legacy JSON file (None: there is none). Without
        a configured store, the store is the SQLite file beside it.
    :param settings: statekit settings (default: :func:`statekit.config.load_settings`).
    """

    def __init__(
        self,
        auto_migrate: bool = True,
        legacy_state_path: str | os.PathLike[str] | None = None,
        *,
        settings: Settings | None = None,
    ) -> None:
        path = None if legacy_state_path is None else Path(legacy_state_path)
        self._setup(path, auto_migrate, settings or load_settings())

    @property
    def enhanced_manager(self) -> UnifiedStateManager:
        """This manager (seed code passes ``manager.enhanced_manager`` to the migration)."""
        return self

    def initialize(self) -> bool:
        """Open the store and run the automatic migration; True.

        :raises StatekitError: the configuration is invalid or the store cannot
            be opened (a bot should not start without its state).
        """
        self._connection()
        return True

    def save_position(
        self,
        pair: str,
        position_data: Mapping[str, Any],
        user_id: str | None = None,
        description: str | None = None,
    ) -> bool:
        """Save one position (the others stay); True when saved, False (logged) when not."""
        try:
            portal, legacy = self._connection()
            portal.call(legacy.save_position, pair, position_data, by=user_id, note=description)
        except StatekitError as exc:
            log.error("save_position(%r) failed, nothing was saved: %s", pair, exc)
            return False
        return True

    def get_all_positions(self) -> dict[str, Any]:
        """Every stored position, by symbol, as saved.

        :raises StatekitError: the store cannot be read.
        """
        portal, legacy = self._connection()
        return portal.call(legacy.section, "position/")

    def get_state_history(
        self, state_type: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` versions of the saved items, newest first.

        Each is a dict: ``timestamp`` (ISO UTC), ``state_id`` (the store key,
        ``position/EURUSD``), ``state_type`` (``position``, ``pair_state`` or
        ``portfolio``), ``name``, ``version``, ``data`` (None when deleted),
        ``deleted``, ``user_id`` and ``description``.

        :param state_type: ``position``, ``pair_state`` or ``portfolio``; None for all.
        :raises StatekitError: unknown ``state_type``, or the store cannot be read.
        """
        portal, legacy = self._connection()
        return portal.call(legacy.history, state_type, limit)

    def create_snapshot(self, description: str = "") -> bool:
        """Capture the whole store as a snapshot; True when made, False (logged) when not."""
        try:
            portal, legacy = self._connection()
            info = portal.call(legacy.snapshot, description)
        except StatekitError as exc:
            log.error("create_snapshot failed: %s", exc)
            return False
        log.info("snapshot %s: %d keys", info.id, info.keys)
        return True

    def health_check(self) -> bool:
        """True when the store answers and reports itself healthy. Never raises."""
        try:
            portal, legacy = self._connection()
            return portal.call(legacy.state.store.health).ok
        except StatekitError as exc:
            log.warning("health check failed: %s", exc)
            return False

    def get_system_status(self) -> dict[str, Any]:
        """The manager's status. Never raises.

        ``initialized``, ``healthy``, ``database_type`` (sqlite, postgresql,
        influxdb...), ``backend``, ``store_url`` (secrets masked), ``atomic``
        (saves are one atomic batch), ``active_positions`` and ``pair_states``
        (counts), ``has_portfolio``, ``last_saved``, ``health`` (ok, latency_ms,
        detail), ``validation_enabled``, ``cache_enabled``, ``api_available``,
        ``legacy_state_path``, ``migration`` (the automatic migration's report)
        and ``timestamp``; ``error`` when the store cannot be reached.
        """
        extra: dict[str, Any] = {
            "legacy_state_path": None
            if self.legacy_state_path is None
            else os.fspath(self.legacy_state_path),
            "migration": None if self.migration_report is None else self.migration_report.as_dict(),
            "timestamp": datetime.now(UTC).isoformat(),
        }
        try:
            portal, legacy = self._connection()
            return {**portal.call(legacy.status), **extra}
        except StatekitError as exc:
            shown = LegacyState(self.config).shown_url
            try:
                kind = _database_type(self.config.store_url())
            except ConfigError:
                kind = self.config.database.database_type
            return {
                "initialized": False,
                "healthy": False,
                "error": str(exc),
                "database_type": kind,
                "store_url": shown,
                "atomic": None,
                "active_positions": None,
                "pair_states": None,
                **extra,
            }

    async def start_api_server(self, *, host: str | None = None, port: int | None = None) -> None:
        """Serve the REST + WebSocket API over this manager's store until cancelled.

        Host, port, API key and CORS origins come from ``config.api`` (127.0.0.1:8000
        by default; a non-loopback host needs ``config.api.api_key``). Cancelling the
        task stops the server gracefully. The store is served from this manager's
        portal thread, so the sync calls keep working meanwhile.

        :param host: overrides ``config.api.host``; ``port`` overrides ``config.api.port``.
        :raises ConfigError: a non-loopback host without an API key, or a busy port.
        """
        portal, legacy = self._connection()
        # The store lives on the portal's loop: the server runs there too, and this
        # coroutine waits on it (cancelling this cancels the server, gracefully).
        run = _ApiRun(self.config, legacy, host, port)
        try:
            await asyncio.wrap_future(portal.submit(run.serve))
        except asyncio.CancelledError:
            with contextlib.suppress(StatekitError):  # the portal closed meanwhile
                portal.call(run.stop)
            raise

    def start_api_server_sync(self, *, host: str | None = None, port: int | None = None) -> str:
        """Start the API in the background (the portal thread) and return its URL
        (``http://127.0.0.1:8000``) once it accepts connections.

        :meth:`shutdown` (or :meth:`stop_api_server`) stops it. Calling it again while
        it runs returns the same URL.

        :param host: overrides ``config.api.host``; ``port`` overrides ``config.api.port``
            (0: a free port).
        :raises ConfigError: a non-loopback host without an API key, or a busy port.
        """
        portal, legacy = self._connection()
        with self._lock:
            if self._api is not None and not self._api.done.done():
                return self._api.ready.result()
        run = _ApiRun(self.config, legacy, host, port)
        run.done = portal.submit(run.serve)
        waiting: list[concurrent.futures.Future[Any]] = [run.done, run.ready]
        concurrent.futures.wait(waiting, return_when=concurrent.futures.FIRST_COMPLETED)
        if not run.ready.done():
            run.done.result()  # raises why it did not start
            raise StatekitError("the API server stopped before it started")
        with self._lock:
            self._api = run
        url = run.ready.result()
        log.info("API server on %s", url)
        return url

    def stop_api_server(self) -> None:
        """Stop the server :meth:`start_api_server_sync` started (nothing when none runs)."""
        with self._lock:
            run, self._api = self._api, None
            portal = self._portal
        if run is None or portal is None:
            return
        with contextlib.suppress(StatekitError):  # the portal closed: so did the server
            portal.call(run.stop)

    def shutdown(self) -> None:
        """Stop the API server (when started), close the store and the portal."""
        self.stop_api_server()
        super().shutdown()


class _ApiRun:
    """One run of the API server over a manager's store, on the manager's portal loop."""

    def __init__(
        self, settings: Settings, legacy: LegacyState, host: str | None, port: int | None
    ) -> None:
        self.settings = settings
        self.legacy = legacy
        self.host = host
        self.port = port
        self.ready: concurrent.futures.Future[str] = concurrent.futures.Future()
        """The URL served, once the server accepts connections."""
        self.done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._task: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        """:func:`statekit.api.serve` over the manager's open store, until stopped."""
        try:
            from statekit.api import serve
        except ImportError as exc:
            raise ConfigError(
                f"the REST API needs the api extra: pip install 'statekit[api]' ({exc})",
                source="api",
            ) from None
        self._task = asyncio.current_task()
        await serve(
            self.settings,
            store=self.legacy.state.store,
            host=self.host,
            port=self.port,
            ready=self.ready.set_result,
        )

    async def stop(self) -> None:
        """Stop the server gracefully and wait until it has."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])


def create_backward_compatible_manager(
    state_file: str | os.PathLike[str] = "state.json",
) -> UnifiedStateManager:
    """A manager for an existing legacy state file: the drop-in for ``TradingStateManager``.

    It migrates ``state_file`` on first use (once) and has the whole
    :class:`UnifiedStateManager` API.
    """
    return UnifiedStateManager(auto_migrate=True, legacy_state_path=state_file)


def get_state_manager(
    auto_migrate: bool = True, legacy_state_path: str | os.PathLike[str] | None = None
) -> UnifiedStateManager:
    """A new :class:`UnifiedStateManager` on every call (there is no global one).

    Keep the one you get and pass it along; two managers over the same store
    are safe (saves are compare-and-set) but each has its own portal thread.
    """
    return UnifiedStateManager(auto_migrate=auto_migrate, legacy_state_path=legacy_state_path)


_CONFIG_KEYS: Mapping[str, Mapping[str, str]] = {
    "influxdb": {"url": "influxdb_url", "token": "influxdb_token", "org": "influxdb_org"}
    | {"bucket": "influxdb_bucket"},
    "postgresql": {"host": "postgres_host", "port": "postgres_port", "database": "postgres_db"}
    | {"db": "postgres_db", "dbname": "postgres_db", "user": "postgres_user"}
    | {"username": "postgres_user", "password": "postgres_password"},
    "sqlite": {"path": "sqlite_path", "sqlite_path": "sqlite_path"},
    "memory": {},
}


def create_enhanced_trading_state_manager(
    database_type: str = "sqlite",
    database_config: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
) -> UnifiedStateManager:
    """A manager over the database described (seed 003's manual-migration target).

    :param database_type: ``sqlite``, ``memory``, ``postgresql`` (or ``postgres``),
        ``influxdb``; or any store URL scheme, with ``database_config={"url": ...}``.
    :param database_config: influxdb: ``url``, ``token``, ``org``, ``bucket``;
        postgresql: ``host``, ``port``, ``database``, ``user``, ``password`` (or
        ``dsn``/``url``: a ``postgresql://`` URL); sqlite: ``path``. Over the
        configured settings.
    :raises ConfigError: an unknown database type or ``database_config`` key.
    """
    kind = database_type.strip().lower()
    kind = "postgresql" if kind == "postgres" else kind
    config = dict(database_config or {})
    names = _CONFIG_KEYS.get(kind)
    overrides: dict[str, Any] = {}
    if names is None or (kind != "influxdb" and ("url" in config or "dsn" in config)):
        url = config.pop("url", None) or config.pop("dsn", None)
        if not isinstance(url, str) or not url:
            raise ConfigError(
                f"database_type {database_type!r}: give database_config={{'url': '{kind}://...'}}"
                f" or use one of {', '.join(sorted(_CONFIG_KEYS))}",
                source="database_config",
            )
        overrides["url"] = url
        names = {}
    unknown = sorted(set(config) - set(names))
    if unknown:
        raise ConfigError(
            f"database_config for {kind}: unknown key(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(names)) or 'none'}",
            source="database_config",
        )
    if "url" not in overrides:
        overrides["database"] = {"database_type": kind, **{names[k]: v for k, v in config.items()}}
    if settings is None:
        chosen = load_settings(**overrides)
    else:
        chosen = _apply(settings.model_copy(deep=True), overrides)
    return UnifiedStateManager(auto_migrate=False, settings=chosen)


def _apply(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    if "url" in overrides:
        settings.url = overrides["url"]
    for name, value in overrides.get("database", {}).items():
        setattr(settings.database, name, value)
    return settings
