"""``sqlite:///path``: the embedded default, one file, no server.

- WAL journal; ``synchronous=FULL`` by default, so a commit that returned is on
  disk (``?synchronous=normal`` trades the last commits on power loss for speed).
- Group commit: appends that arrive while the writer commits go together into
  the next ``BEGIN IMMEDIATE`` transaction (one fsync), each in a ``SAVEPOINT``
  of its own (CAS check, version rows, head rows): a failing append (a conflict)
  rolls back alone. An append returns once its transaction is committed.
- Several processes may write one file, waiting up to ``busy_timeout`` seconds
  for another writer.
- ``watch`` polls the global commit sequence, so it sees other processes' commits.
- sqlite3 is blocking: writes and long reads run on two private threads (a
  writer and a reader connection). ``latest`` of a few keys (what ``get`` does)
  runs on the event loop on a third connection: a WAL read never waits for a
  writer; with no busy timeout there, a read that would wait goes to the reader.

URL forms: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, with
optional ``?synchronous=full|normal&busy_timeout=30&poll_interval=0.05`` (finite
seconds; ``poll_interval`` above 0). A new or empty file becomes a store; a file
holding another application's tables is refused, untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Self, TypeVar

from statekit.backend import (
    Backend,
    Capability,
    Guard,
    Health,
    Record,
    Write,
    check_expect,
    check_guard,
    counted_position,
)
from statekit.backends.sqlite_driver import (
    is_busy,
    key_range,
    parse_url,
    row_to_record,
    seconds,
    settle,
    translate,
)
from statekit.backends.sqlite_sql import (
    AS_OF,
    COLUMNS,
    INSERT_VERSION,
    MIGRATIONS,
    SCHEMA_VERSION,
    SELECT_HEAD,
    SELECT_HEAD_AT,
    UPSERT_HEAD,
)
from statekit.codec import from_micros, to_micros
from statekit.errors import BackendError, ConfigError
from statekit.hookspecs import hookimpl
from statekit.kit.follow import CommitFollower
from statekit.kit.guard import DriverGuard
from statekit.kit.records import appended, stored
from statekit.registry import BackendRegistry
from statekit.worker import Gathered, Outcome, Worker

__all__ = ["SqliteBackend"]

T = TypeVar("T")

ON_LOOP_KEYS = 16
"""``latest`` of at most this many keys reads on the event loop (module docstring)."""
CHANGED_ON_LOOP = 256
"""``changed()`` reads up to this many versions on the event loop, more in the reader thread."""

_SYNC_MODES = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}
_STATEKIT_TABLES = frozenset({"sk_versions", "sk_heads"})
"""Tables every statekit schema version has: a file with them is a statekit store."""


class SqliteBackend(Backend):
    """The embedded default backend. See the module docstring for its guarantees."""

    name = "sqlite"
    capabilities = frozenset(
        {
            Capability.ATOMIC_BATCH,
            Capability.COMPARE_AND_SET,
            Capability.WATCH,
            Capability.HISTORY,
            Capability.DURABLE,
            Capability.GUARDED_APPEND,
            Capability.CHANGES,
        }
    )

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "full",
        busy_timeout: float = 30.0,
        poll_interval: float = 0.05,
    ) -> None:
        self.path = Path(path)
        if synchronous.lower() not in _SYNC_MODES:
            raise ConfigError(
                f"sqlite synchronous={synchronous!r}; use one of {', '.join(_SYNC_MODES)}",
                source="url",
            )
        self.synchronous = _SYNC_MODES[synchronous.lower()]
        self.busy_timeout = seconds("busy_timeout", busy_timeout, zero_ok=True)
        self.poll_interval = seconds("poll_interval", poll_interval, zero_ok=False)
        self._writer_thread = Worker("statekit-sqlite-writer")
        self._reader_thread = Worker("statekit-sqlite-reader")
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._on_loop: sqlite3.Connection | None = None
        self._appends: Gathered[tuple[Any, ...]] = Gathered(self._writer_thread, self._append_group)
        self._guard = DriverGuard(
            self.name, str(self.path), errors=(sqlite3.Error,), translate=translate
        )
        self._commits = 0  # appends through this object, for its watchers
        self._waiters: set[asyncio.Future[None]] = set()

    @classmethod
    async def open(cls, url: str) -> Self:
        u, path = parse_url(url)
        backend = cls(
            path,
            synchronous=u.text("synchronous", "full"),  # checked (any case) by the constructor
            busy_timeout=u.seconds("busy_timeout", 30.0),
            poll_interval=u.seconds("poll_interval", 0.05, zero=False),
        )
        try:
            await backend._run_writer(backend._setup_writer)
            await backend._run_reader(backend._setup_reader)
            with backend._guard.calls():
                backend._on_loop = backend._setup_on_loop()
        except BaseException:
            await backend.aclose()
            raise
        return backend

    # -- threads and error translation (the one place sqlite3 errors become statekit's) --

    async def _run(self, worker: Worker, fn: Callable[..., T], *args: Any) -> T:
        with self._guard.calls():
            return await worker.submit(fn, *args)

    async def _run_writer(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(self._writer_thread, fn, *args)

    async def _run_reader(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(self._reader_thread, fn, *args)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=True
        )
        con.execute(f"PRAGMA synchronous = {self.synchronous}")
        return con

    def _setup_writer(self) -> None:
        con = self._writer = self._connect()
        self._refuse_foreign(con)  # before WAL: that would change the file's header
        deadline = time.monotonic() + self.busy_timeout
        while True:  # switching to WAL needs a moment alone with the file
            try:
                mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if str(mode).lower() != "wal":
            raise BackendError(
                f"sqlite {self.path}: could not switch to WAL (got {mode})", backend=self.name
            )
        self._migrate(con)

    def _refuse_foreign(self, con: sqlite3.Connection) -> None:
        """ConfigError when the file is another application's database.

        An empty file (or a new one) becomes a statekit store, and a statekit store
        is opened; a file that holds other tables and no statekit schema is refused
        rather than given statekit's tables beside its own.
        """
        # One statement, so the version and the tables are read from one snapshot.
        version, names = con.execute(
            "SELECT (SELECT user_version FROM pragma_user_version), "
            "group_concat(name, char(31)) FROM (SELECT name FROM sqlite_master "
            "WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY name)"
        ).fetchone()
        tables = set(names.split("\x1f")) if names else set()
        if not tables or (version > 0 and tables >= _STATEKIT_TABLES):
            return
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise ConfigError(
            f"sqlite {self.path} is not a statekit database: it holds other tables or views "
            f"({shown}) and no statekit schema; give statekit a file of its own",
            source="url",
        )

    def _migrate(self, con: sqlite3.Connection) -> None:
        # BEGIN IMMEDIATE: two processes opening a new file at once migrate one after the other.
        con.execute("BEGIN IMMEDIATE")
        try:
            current = con.execute("PRAGMA user_version").fetchone()[0]
            if current > SCHEMA_VERSION:
                raise BackendError(
                    f"sqlite {self.path}: schema version {current} was written by a newer "
                    f"statekit (this one knows {SCHEMA_VERSION}); upgrade statekit",
                    backend=self.name,
                )
            for version in range(current, SCHEMA_VERSION):
                for statement in MIGRATIONS[version]:
                    con.execute(statement)
            if current != SCHEMA_VERSION:
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _setup_reader(self) -> None:
        self._reader = self._connect()

    def _setup_on_loop(self) -> sqlite3.Connection:
        # No busy timeout: a read that would wait falls back to the reader thread.
        con = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA query_only = ON")
        return con

    # -- the contract --------------------------------------------------------------

    def _append_group(self, group: list[tuple[Any, ...]]) -> list[Outcome]:
        """Group commit: each append of ``group`` (the arguments of one
        :meth:`_append_sync`) in a savepoint of its own, all in one transaction."""
        con = self._writer
        assert con is not None
        outcomes: list[Outcome] = []
        try:
            con.execute("BEGIN IMMEDIATE")
            for args in group:
                con.execute("SAVEPOINT one_append")
                try:
                    outcomes.append((self._append_sync(*args), None))
                except Exception as exc:  # this append alone is undone; it gets the error
                    if not con.in_transaction:  # SQLite rolled back everything (disk full...)
                        raise
                    con.execute("ROLLBACK TO one_append")
                    outcomes.append((None, exc))
                con.execute("RELEASE one_append")
            con.execute("COMMIT")
        except Exception as exc:  # nothing of the group was committed
            if con.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
            return [
                outcomes[i] if i < len(outcomes) and outcomes[i][1] else (None, exc)
                for i in range(len(group))
            ]
        return outcomes

    def _append_sync(
        self, writes: Sequence[Write], guards: Sequence[Guard] = ()
    ) -> tuple[list[int], int]:
        """One append inside the writer's open transaction (:meth:`_append_group`)."""
        con = self._writer
        assert con is not None
        for guard in guards:  # checked under the write lock, with the writes
            found = con.execute(SELECT_HEAD, (guard.key,)).fetchone()
            version, live = found if found else (0, 0)
            check_guard(guard, version, not live, backend=self.name)
        versions = []
        latest = 0  # the newest previous `at` of the batch's keys
        for w in writes:
            row = con.execute(SELECT_HEAD_AT, (w.key,)).fetchone()
            head, live, head_at = row if row else (0, 0, None)
            check_expect(w, head, not live, backend=self.name)
            versions.append(head + 1)
            latest = max(latest, head_at or 0)
        # Read once the write lock is held: `at` then rises with the version
        # across every process writing this file (Backend.append).
        at = max(time.time_ns() // 1000, latest + 1)
        rows = [
            (w.key, v, w.kind, w.data_json(), w.meta_json(), at)
            for w, v in zip(writes, versions, strict=True)
        ]
        if len(rows) == 1:
            con.execute(INSERT_VERSION, rows[0])
            key, version, kind, data, _, _ = rows[0]
            con.execute(UPSERT_HEAD, (key, version, kind, data is not None))
        else:
            con.executemany(INSERT_VERSION, rows)
            con.executemany(
                UPSERT_HEAD, [(k, v, kind, d is not None) for k, v, kind, d, _, _ in rows]
            )
        return versions, at

    def _replicate_sync(self, rows: list[tuple[str, int, str, str | None, str, int]]) -> None:
        con = self._writer
        assert con is not None
        con.execute("BEGIN IMMEDIATE")
        try:
            for key, version, kind, data, meta, at in rows:
                inserted = con.execute(
                    "INSERT OR IGNORE INTO sk_versions (key, version, kind, data, meta, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (key, version, kind, data, meta, at),
                ).rowcount
                if inserted:  # a newer version than the head moves the head
                    con.execute(
                        UPSERT_HEAD + " WHERE excluded.version > sk_heads.version",
                        (key, version, kind, data is not None),
                    )
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    async def replicate(self, records: Sequence[Record]) -> None:
        await self._run_writer(self._replicate_sync, [stored(r) for r in records])

    async def append(
        self, writes: Sequence[Write], at: datetime, *, guards: Sequence[Guard] = ()
    ) -> list[Record]:
        with self._guard.calls():
            versions, stamped = await self._appends.submit((writes, guards))
        self._wake()
        return appended(writes, versions, from_micros(stamped))

    def _read_sync(
        self, key: str, after: int, before: int | None, limit: int | None, newest_first: bool
    ) -> list[Record]:
        assert self._reader is not None
        rows = self._reader.execute(
            f"SELECT {COLUMNS} FROM sk_versions WHERE key = ? AND version > ? AND version < ? "
            f"ORDER BY version {'DESC' if newest_first else 'ASC'} LIMIT ?",
            (key, after, before if before is not None else 2**62, limit if limit else -1),
        ).fetchall()
        return [row_to_record(r) for r in rows]

    async def read(
        self,
        key: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Record]:
        return await self._run_reader(self._read_sync, key, after, before, limit, newest_first)

    def _latest_sync(
        self, keys: Sequence[str], con: sqlite3.Connection | None = None
    ) -> dict[str, Record]:
        con = con or self._reader
        assert con is not None
        found: dict[str, Record] = {}
        for start in range(0, len(keys), 500):  # stay under SQLite's variable limit
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = con.execute(
                f"SELECT v.key, v.version, v.kind, v.data, v.meta, v.at FROM sk_heads h "
                f"JOIN sk_versions v ON v.key = h.key AND v.version = h.version "
                f"WHERE h.key IN ({marks})",
                tuple(chunk),
            ).fetchall()
            found.update((r[0], row_to_record(r)) for r in rows)
        return found

    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        if not keys:
            return {}
        if len(keys) <= ON_LOOP_KEYS:  # a few index probes: cheaper than a thread hand-off
            found = self._on_loop_read(self._latest_sync, keys)
            if found is not None:
                return found
        return await self._run_reader(self._latest_sync, keys)

    def _on_loop_read(self, fn: Callable[..., T | None], *args: Any) -> T | None:
        """``fn(*args, connection)`` on the event loop's own read connection, for reads
        too short to be worth a hand-off to the reader thread; None when it would have
        to wait on a lock (or says it is too long), for the caller to use the thread."""
        if self._on_loop is None:
            return None
        with self._guard.calls():
            try:
                return fn(*args, self._on_loop)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
        return None

    def _as_of_sync(self, keys: Sequence[str], at: int) -> dict[str, Record]:
        con = self._reader
        assert con is not None
        found: dict[str, Record] = {}
        for key in keys:
            row = con.execute(AS_OF, (key, at)).fetchone()
            if row is not None:
                found[key] = row_to_record(row)
        return found

    async def as_of(self, keys: Sequence[str], at: datetime) -> dict[str, Record]:
        if not keys:
            return {}
        return await self._run_reader(self._as_of_sync, keys, to_micros(at))

    def _scan_sync(
        self, low: str, first: bool, high: str, kind: str | None, page: int
    ) -> list[Record]:
        assert self._reader is not None
        kind_clause = " AND h.kind = ?" if kind is not None else ""
        rows = self._reader.execute(
            f"SELECT v.key, v.version, v.kind, v.data, v.meta, v.at FROM sk_heads h "
            f"JOIN sk_versions v ON v.key = h.key AND v.version = h.version "
            f"WHERE h.live = 1 AND h.key {'>=' if first else '>'} ? AND h.key < ?{kind_clause} "
            "ORDER BY h.key LIMIT ?",
            (low, high, *((kind,) if kind is not None else ()), page),
        ).fetchall()
        return [row_to_record(r) for r in rows]

    async def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        cursor, high = key_range(prefix)
        first = True
        # Pages by key, so no read transaction is held open while the caller works.
        while True:
            page = await self._run_reader(self._scan_sync, cursor, first, high, kind, 500)
            for record in page:
                yield record
            if len(page) < 500:
                return
            cursor, first = page[-1].key, False

    def _prune_sync(self, key: str, before_version: int) -> int:
        con = self._writer
        assert con is not None
        con.execute("BEGIN IMMEDIATE")
        try:
            cur = con.execute(
                "DELETE FROM sk_versions WHERE key = ? AND version < ? "
                "AND version < (SELECT version FROM sk_heads WHERE key = ?)",
                (key, before_version, key),
            )
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        return cur.rowcount

    async def prune(self, key: str, before_version: int) -> int:
        return await self._run_writer(self._prune_sync, key, before_version)

    def _last_seq_sync(self, con: sqlite3.Connection | None = None) -> int:
        con = con or self._reader
        assert con is not None
        return int(con.execute("SELECT COALESCE(MAX(seq), 0) FROM sk_versions").fetchone()[0])

    async def position(self) -> str:
        seq = self._on_loop_read(self._last_seq_sync)
        if seq is None:
            seq = await self._run_reader(self._last_seq_sync)
        return str(seq)

    def _changed_sync(
        self, seq: int, prefix: str, most: int | None, con: sqlite3.Connection | None = None
    ) -> list[str] | None:
        con = con or self._reader
        assert con is not None
        rows = con.execute(
            "SELECT key FROM sk_versions WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, -1 if most is None else most + 1),
        ).fetchall()
        if most is not None and len(rows) > most:
            return None  # too many for the event loop
        return sorted({key for (key,) in rows if key.startswith(prefix)})

    async def changed(self, since: str, prefix: str = "") -> list[str]:
        # Versions committed after a position have a larger seq (one writer at a time).
        seq = counted_position(since, backend=self.name)
        keys = self._on_loop_read(self._changed_sync, seq, prefix, CHANGED_ON_LOOP)
        if keys is None:
            keys = await self._run_reader(self._changed_sync, seq, prefix, None)
        assert keys is not None
        return keys

    def _changes_sync(self, seq: int, low: str, high: str) -> list[tuple[int, Record]]:
        assert self._reader is not None
        rows = self._reader.execute(
            f"SELECT seq, {COLUMNS} FROM sk_versions WHERE seq > ? AND key >= ? AND key < ? "
            "ORDER BY seq LIMIT 500",
            (seq, low, high),
        ).fetchall()
        return [(r[0], row_to_record(r[1:])) for r in rows]

    def _wake(self) -> None:
        """Wake this object's watchers: they read its commit at once, not after a poll."""
        self._commits += 1
        for waiter in list(self._waiters):
            waiter.get_loop().call_soon_threadsafe(settle, waiter)

    def _waiting(self) -> Callable[[float], Awaitable[None]]:
        """A watcher's wait: ``poll_interval`` (other processes' commits), or until this
        object commits (its own, at once)."""
        seen = self._commits

        async def wait(interval: float) -> None:
            nonlocal seen
            if seen == self._commits:  # nothing of ours since the last read began
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.add(waiter)
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
                    # cancellation that arrives as the waiter is woken (gh-86296), and
                    # a closing watcher's task then polls on forever.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(interval):
                            await waiter
                finally:
                    self._waiters.discard(waiter)
            seen = self._commits

        return wait

    async def watch(self, prefix: str = "") -> AsyncIterator[Record]:
        low, high = key_range(prefix)

        async def read(seq: int) -> tuple[list[Record], int]:
            changes = await self._run_reader(self._changes_sync, seq, low, high)
            return [record for _, record in changes], changes[-1][0] if changes else seq

        # retry=False: here BackendUnavailable is a lock held too long, for the caller.
        return await CommitFollower.start(
            lambda: self._run_reader(self._last_seq_sync),
            read,
            backend=self.name,
            where=str(self.path),
            interval=self.poll_interval,
            wait=self._waiting(),
            retry=False,
        )

    def _health_sync(self) -> dict[str, Any]:
        assert self._reader is not None
        con = self._reader
        return {
            "path": str(self.path.resolve()),
            "journal_mode": con.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": self.synchronous,
            "schema_version": con.execute("PRAGMA user_version").fetchone()[0],
            "keys": con.execute("SELECT COUNT(*) FROM sk_heads").fetchone()[0],
            "sqlite_version": sqlite3.sqlite_version,
        }

    async def health(self) -> Health:
        started = time.perf_counter()
        detail = await self._run_reader(self._health_sync)
        return Health(True, (time.perf_counter() - started) * 1000, detail)

    def _close_sync(self, con: sqlite3.Connection | None) -> None:
        if con is not None:
            con.close()

    async def aclose(self) -> None:
        if self._guard.closed:
            return
        await self._appends.close(self._guard.closed_error)
        on_loop, self._on_loop = self._on_loop, None
        if on_loop is not None:
            with contextlib.suppress(sqlite3.Error):
                on_loop.close()
        for worker, con in (
            (self._writer_thread, self._writer),
            (self._reader_thread, self._reader),
        ):
            # Closing is best effort: every commit is already in the file.
            with contextlib.suppress(sqlite3.Error):
                await worker.submit(self._close_sync, con)
            worker.stop()
        self._writer = self._reader = None
        self._guard.close()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": str(self.path), "synchronous": self.synchronous}


@hookimpl
def statekit_register_backends(registry: BackendRegistry) -> None:
    """The built-in ``sqlite:///path`` backend, the embedded default."""
    registry.add("sqlite", SqliteBackend)
