"""The fallback journal: writes accepted while the primary is down, kept durably in order."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from statekit.backend import ANY, JSON, Write
from statekit.codec import from_micros
from statekit.errors import BackendError
from statekit.worker import Worker

__all__ = ["FallbackJournal", "JournalEntry", "Rejected"]

T = TypeVar("T")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS journal (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        writes    TEXT    NOT NULL,  -- JSON list of writes, one atomic batch
        at        INTEGER NOT NULL,  -- microseconds since the epoch, UTC
        uncertain INTEGER NOT NULL,  -- 1: it may have reached the primary (a call was made)
        sent_at   INTEGER            -- when it was first sent (microseconds), if uncertain
    )""",
    """CREATE TABLE IF NOT EXISTS rejected (
        seq     INTEGER PRIMARY KEY,
        writes  TEXT    NOT NULL,
        at      INTEGER NOT NULL,
        reason  TEXT    NOT NULL
    )""",
)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One deferred append (a batch is one entry: it replays all or none)."""

    seq: int
    writes: list[Write]
    at_micros: int
    uncertain: bool
    """It may have reached the primary already: replay looks its write ids up first."""
    sent_micros: int | None = None
    """When it was first sent (an uncertain entry cannot have landed before)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A deferred append the primary refused at replay (a failed ``expect``)."""

    seq: int
    writes: list[dict[str, Any]]
    at: str
    reason: str


def _encode(writes: Sequence[Write]) -> str:
    return json.dumps(
        [
            {
                "key": w.key,
                "data": w.data_json(),
                "kind": w.kind,
                "meta": dict(w.meta),
                "expect": None if w.expect is ANY else w.expect,
            }
            for w in writes
        ],
        ensure_ascii=False,
    )


def _decode(text: str) -> list[Write]:
    writes = []
    for item in json.loads(text):
        data: JSON = None if item["data"] is None else json.loads(item["data"])
        expect = ANY if item["expect"] is None else int(item["expect"])
        writes.append(
            Write(item["key"], data, item["kind"], item["meta"], expect, encoded=item["data"])
        )
    return writes


class FallbackJournal:
    """A SQLite file (WAL, synchronous=FULL) holding deferred appends in arrival order.

    Appends made at the same time share one transaction (group commit): each
    :meth:`add` returns once its entry is durable, after every earlier one.

    One journal belongs to one process: two processes replaying one journal
    would apply its writes twice. Give each process its own path.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._worker = Worker("statekit-fallback-journal")
        self._con: sqlite3.Connection | None = None
        self._queued: list[tuple[str, int, bool, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: str | Path) -> FallbackJournal:
        journal = cls(Path(path))
        await journal._run(journal._setup)
        return journal

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await self._worker.submit(fn, *args)
        except sqlite3.Error as exc:
            raise BackendError(
                f"fallback journal {self.path}: {type(exc).__name__}: {exc}", backend="journal"
            ) from exc

    def _setup(self) -> None:
        con = self._con = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = FULL")
        for statement in SCHEMA:
            con.execute(statement)
        columns = {row[1] for row in con.execute("PRAGMA table_info(journal)")}
        if "sent_at" not in columns:  # a journal of statekit < 0.2: uncertain since accepted
            con.execute("ALTER TABLE journal ADD COLUMN sent_at INTEGER")
            con.execute("UPDATE journal SET sent_at = at WHERE uncertain = 1")

    def _transaction(self, statement: str, rows: Sequence[tuple[Any, ...]]) -> None:
        assert self._con is not None
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            con.executemany(statement, rows)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    async def add(self, writes: Sequence[Write], at_micros: int, *, uncertain: bool) -> None:
        """Keep ``writes`` (durably, when this returns) after every earlier entry.

        Cancelling the caller does not take the entry back: it may still be kept.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((_encode(writes), at_micros, uncertain, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush(), name="statekit-fallback-journal-flush"
            )
        await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._queued:
            group, self._queued = self._queued, []
            try:
                await self._run(
                    self._transaction,
                    "INSERT INTO journal (writes, at, uncertain, sent_at) VALUES (?, ?, ?, ?)",
                    [
                        (text, at, uncertain, at if uncertain else None)
                        for text, at, uncertain, _ in group
                    ],
                )
            except BaseException as exc:
                for *_, future in group:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                for *_, future in group:
                    if not future.done():
                        future.set_result(None)

    def _batch(self, after: int, max_writes: int) -> list[JournalEntry]:
        assert self._con is not None
        entries: list[JournalEntry] = []
        size = 0
        rows = self._con.execute(
            "SELECT seq, writes, at, uncertain, sent_at FROM journal WHERE seq > ? ORDER BY seq",
            (after,),
        )
        for seq, text, at, uncertain, sent_at in rows:
            writes = _decode(text)
            if entries and size + len(writes) > max_writes:
                break
            entries.append(JournalEntry(seq, writes, at, bool(uncertain), sent_at))
            size += len(writes)
        return entries

    async def batch(self, max_writes: int, *, after: int = 0) -> list[JournalEntry]:
        """The oldest entries after sequence number ``after``, in order, holding at most
        ``max_writes`` writes (but always one entry, when there is one)."""
        entries: list[JournalEntry] = await self._run(self._batch, after, max_writes)
        return entries

    async def first(self) -> JournalEntry | None:
        """The oldest deferred append, or None when the journal is empty."""
        entries = await self.batch(1)
        return entries[0] if entries else None

    def _count(self) -> tuple[int, int]:
        assert self._con is not None
        pending = self._con.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
        rejected = self._con.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]
        return int(pending), int(rejected)

    async def counts(self) -> tuple[int, int]:
        """``(pending, rejected)``."""
        counts: tuple[int, int] = await self._run(self._count)
        return counts

    def _oldest(self) -> int | None:
        assert self._con is not None
        row = self._con.execute("SELECT MIN(at) FROM journal").fetchone()
        return None if row[0] is None else int(row[0])

    async def oldest(self) -> int | None:
        """When the oldest pending entry was accepted (microseconds since the epoch)."""
        oldest: int | None = await self._run(self._oldest)
        return oldest

    async def sent(self, seqs: Sequence[int], at_micros: int) -> None:
        """Mark entries about to be sent to the primary at ``at_micros``: if the outcome is
        then lost (the call fails, the process dies), replay looks their write ids up
        before resending them. The first send time is kept."""
        if seqs:
            await self._run(
                self._transaction,
                "UPDATE journal SET uncertain = 1, sent_at = COALESCE(sent_at, ?) WHERE seq = ?",
                [(at_micros, seq) for seq in seqs],
            )

    async def unsent(self, seqs: Sequence[int]) -> None:
        """Entries marked :meth:`sent` that were not sent after all (nor landed before)."""
        if seqs:
            await self._run(
                self._transaction,
                "UPDATE journal SET uncertain = 0, sent_at = NULL WHERE seq = ?",
                [(seq,) for seq in seqs],
            )

    async def done(self, seqs: Sequence[int]) -> None:
        """The entries reached the primary: forget them."""
        if seqs:
            await self._run(
                self._transaction, "DELETE FROM journal WHERE seq = ?", [(seq,) for seq in seqs]
            )

    def _reject(self, seq: int, reason: str) -> None:
        assert self._con is not None
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute(
                "INSERT INTO rejected (seq, writes, at, reason) "
                "SELECT seq, writes, at, ? FROM journal WHERE seq = ?",
                (reason, seq),
            )
            con.execute("DELETE FROM journal WHERE seq = ?", (seq,))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    async def reject(self, seq: int, reason: str) -> None:
        """The primary refused the entry: keep it, with why, among the rejected."""
        await self._run(self._reject, seq, reason)

    def _rejected(self) -> list[Rejected]:
        assert self._con is not None
        rows = self._con.execute(
            "SELECT seq, writes, at, reason FROM rejected ORDER BY seq"
        ).fetchall()
        return [
            Rejected(seq, json.loads(writes), from_micros(at).isoformat(), reason)
            for seq, writes, at, reason in rows
        ]

    async def rejected(self) -> list[Rejected]:
        """Deferred appends the primary refused at replay, oldest first."""
        rows: list[Rejected] = await self._run(self._rejected)
        return rows

    async def aclose(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._con is not None:
            await self._run(self._con.close)
            self._con = None
        self._worker.stop()
