"""The fallback journal: writes accepted while the primary is down, kept durably in order."""

from __future__ import annotations

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
        uncertain INTEGER NOT NULL   -- 1: the primary may have committed it already
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

    One journal belongs to one process: two processes replaying one journal
    would apply its writes twice. Give each process its own path.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._worker = Worker("statekit-fallback-journal")
        self._con: sqlite3.Connection | None = None

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

    def _add(self, text: str, at: int, uncertain: bool) -> None:
        assert self._con is not None
        self._con.execute(
            "INSERT INTO journal (writes, at, uncertain) VALUES (?, ?, ?)", (text, at, uncertain)
        )

    async def add(self, writes: Sequence[Write], at_micros: int, *, uncertain: bool) -> None:
        """Keep ``writes`` (durably, when this returns) after every earlier entry."""
        await self._run(self._add, _encode(writes), at_micros, uncertain)

    def _first(self) -> JournalEntry | None:
        assert self._con is not None
        row = self._con.execute(
            "SELECT seq, writes, at, uncertain FROM journal ORDER BY seq LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return JournalEntry(row[0], _decode(row[1]), row[2], bool(row[3]))

    async def first(self) -> JournalEntry | None:
        """The oldest deferred append, or None when the journal is empty."""
        entry: JournalEntry | None = await self._run(self._first)
        return entry

    def _count(self) -> tuple[int, int]:
        assert self._con is not None
        pending = self._con.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
        rejected = self._con.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]
        return int(pending), int(rejected)

    async def counts(self) -> tuple[int, int]:
        """``(pending, rejected)``."""
        counts: tuple[int, int] = await self._run(self._count)
        return counts

    def _remove(self, seq: int, reason: str | None) -> None:
        assert self._con is not None
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            if reason is not None:
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

    async def done(self, seq: int) -> None:
        """The entry reached the primary: forget it."""
        await self._run(self._remove, seq, None)

    async def reject(self, seq: int, reason: str) -> None:
        """The primary refused the entry: keep it, with why, among the rejected."""
        await self._run(self._remove, seq, reason)

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
        if self._con is not None:
            await self._run(self._con.close)
            self._con = None
        self._worker.stop()
