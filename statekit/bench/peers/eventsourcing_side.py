"""The peer: the same position aggregate with the ``eventsourcing`` library (9.5).

Written as its documentation shows: an ``Aggregate`` whose ``@event`` methods fold the
changes, an ``Application`` with ``snapshotting_intervals`` (a snapshot every
:data:`SNAPSHOT_EVERY` events), ``app.save(aggregate)`` after each change and
``app.repository.get(id)`` to rebuild it (the latest snapshot, then the events after it).
It runs on its own SQLite file (eventsourcing's ``sqlite`` module: WAL, the driver's
default ``synchronous``) or in its own PostgreSQL schema (``postgres`` module, psycopg 3),
which :meth:`EventsourcingSide.close` drops. Its calls block, so they run on the calling
thread, as in a program written with it. Imports only the library and the shared fold.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID, uuid4

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from psycopg import sql

from statekit.bench.peers.positions import SNAPSHOT_EVERY, change

__all__ = ["EventsourcingSide", "PeerPosition"]


class PeerPosition(Aggregate):
    """A position: opened, then changed by signed amounts."""

    @event("Opened")
    def __init__(self, amount: Decimal, price: Decimal) -> None:
        self.amount = amount
        self.entry = price
        self.realized = Decimal(0)

    @event("Modified")
    def modify(self, by: Decimal, price: Decimal) -> None:
        """Grow or shrink the position (:func:`~statekit.bench.peers.positions.change`)."""
        self.amount, self.entry, self.realized = change(
            self.amount, self.entry, self.realized, by, price
        )


class PeerPositions(Application[UUID]):
    """The application: positions, a snapshot every :data:`SNAPSHOT_EVERY` events."""

    snapshotting_intervals = {PeerPosition: SNAPSHOT_EVERY}  # the library's API


class EventsourcingSide:
    """One eventsourcing application on SQLite (``sqlite_path``) or PostgreSQL (``url``)."""

    def __init__(self, *, sqlite_path: Path | None = None, url: str | None = None) -> None:
        self.schema: str | None = None
        self.conninfo: dict[str, Any] = {}
        if url is not None:
            parts = urlsplit(url)
            self.conninfo = {
                "host": parts.hostname or "localhost",
                "port": parts.port or 5432,
                "user": unquote(parts.username or "postgres"),
                "password": unquote(parts.password or ""),
                "dbname": parts.path.lstrip("/") or "postgres",
            }
            self.schema = f"peers_es_{uuid4().hex[:8]}"
            with psycopg.connect(**self.conninfo, autocommit=True) as con:
                con.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
            env = {
                "PERSISTENCE_MODULE": "eventsourcing.postgres",
                "POSTGRES_DBNAME": self.conninfo["dbname"],
                "POSTGRES_HOST": self.conninfo["host"],
                "POSTGRES_PORT": str(self.conninfo["port"]),
                "POSTGRES_USER": self.conninfo["user"],
                "POSTGRES_PASSWORD": self.conninfo["password"],
                "POSTGRES_SCHEMA": self.schema,
            }
        elif sqlite_path is not None:
            env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(sqlite_path)}
        else:
            raise ValueError("EventsourcingSide needs sqlite_path or url")
        self.app = PeerPositions(env=env)

    def open(self, amount: Decimal, price: Decimal) -> PeerPosition:
        """A new position aggregate, saved."""
        position = PeerPosition(amount, price)
        self.app.save(position)
        return position

    def append(self, position: PeerPosition, by: Decimal, price: Decimal) -> None:
        """One change: the event folded in, then saved (and a snapshot every 100th)."""
        position.modify(by, price)
        self.app.save(position)

    def rebuild(self, position_id: UUID) -> PeerPosition:
        """The position from its latest snapshot and the events after it."""
        found: PeerPosition = self.app.repository.get(position_id)
        return found

    def durability(self) -> str:
        """What a commit waits for, read back from the library's own connection."""
        datastore: Any = self.app.factory.datastore  # type: ignore[attr-defined]
        if self.schema is None:
            pool = datastore.pool
            con = pool.get_connection(is_writer=False)
            try:
                raw = con._sqlite_conn  # the sqlite3 connection the library made
                mode = raw.execute("PRAGMA journal_mode").fetchone()[0]
                level = raw.execute("PRAGMA synchronous").fetchone()[0]
            finally:
                pool.put_connection(con)
            names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
            return f"{str(mode).upper()} synchronous={names.get(level, level)}"
        with datastore.get_connection() as con:
            row = con.execute("SHOW synchronous_commit").fetchone()
        return f"synchronous_commit={row['synchronous_commit']}"

    def close(self) -> None:
        """Close the application; drop the PostgreSQL schema it wrote."""
        self.app.close()
        if self.schema is not None:
            with psycopg.connect(**self.conninfo, autocommit=True) as con:
                drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                con.execute(drop.format(sql.Identifier(self.schema)))
