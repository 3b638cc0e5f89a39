"""``mongodb://``: statekit's versioned keys in MongoDB, through PyMongo's async API.

- Two collections (:mod:`statekit_mongodb.documents`): ``statekit_versions``, whose
  unique index on ``(ns, key, v)`` lets exactly one writer create version n, and
  ``statekit_heads``, one document per key, moved with a conditional update on its
  version (the compare-and-set).
- One write (``put``, ``update``, ``delete``) needs no transaction: the head is
  moved with a conditional update on its version, carrying the new version as
  ``pending``; the version is then copied into the history and ``pending``
  cleared. Whoever meets a ``pending`` head (its writer is slow or died) finishes
  the copy first, so history stays gap-free (:mod:`statekit_mongodb.writes`).
- Several writes in one append run in a transaction where the deployment has them
  (a replica set, a sharded cluster, SecantusDB: decided at
  :meth:`MongoBackend.open` from ``hello``): read the heads, check every
  ``expect``, move the heads, insert the versions, commit; all or nothing. Without
  transactions (a standalone ``mongod``, or ``?transactions=off``)
  ``atomic_batch`` is not declared.
- PyMongo's errors become statekit's in one place (:mod:`statekit_mongodb.translate`),
  through the backend's :class:`~statekit.kit.DriverGuard`.
- ``watch`` follows ``statekit_versions`` through a change stream and resumes it
  with its resume token after a lost connection or a server restart
  (:mod:`statekit_mongodb.watch`). A standalone ``mongod`` has no change streams:
  there (or with ``?watch=poll``) every version is stored with its namespace's
  commit number ``seq``, and ``watch`` polls for new numbers
  (:mod:`statekit_mongodb.poll`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Self

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from statekit.backend import Backend, Capability, Health, Record, Write
from statekit.codec import from_micros, prefix_end, to_micros
from statekit.errors import CapabilityError, ConfigError, ValidationError
from statekit.kit import Watchers, appended
from statekit_mongodb.documents import HEADS, VERSIONS, create_indexes, to_record
from statekit_mongodb.options import (
    DEFAULT_DATABASE,
    DEFAULT_NAMESPACE,
    DEFAULT_POLL_INTERVAL,
    MongoOptions,
    Transactions,
    WatchMode,
)
from statekit_mongodb.poll import follow
from statekit_mongodb.translate import DRIVER_ERRORS, NAME, guard
from statekit_mongodb.watch import MongoWatch
from statekit_mongodb.writes import Writer

__all__ = ["MongoBackend"]

Document = dict[str, Any]

SCAN_PAGE = 500


class MongoBackend(Backend):
    """MongoDB through a ``pymongo.AsyncMongoClient``. Open with :meth:`open` or
    :meth:`from_client`."""

    name = NAME
    capabilities = frozenset({Capability.COMPARE_AND_SET, Capability.HISTORY, Capability.DURABLE})

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        options: MongoOptions,
        *,
        owns_client: bool,
    ) -> None:
        """Use :meth:`open` (a URL) or :meth:`from_client` (your client): they also
        look at the deployment and create the indexes.

        :param client: the PyMongo async client.
        :param options: the parsed URL (namespace, database...).
        :param owns_client: close ``client`` in :meth:`aclose`.
        """
        self.options = options
        self.namespace = options.namespace
        self._client = client
        self._owns_client = owns_client
        database = client[options.database]
        self._versions: AsyncCollection[Document] = database[VERSIONS]
        self._heads: AsyncCollection[Document] = database[HEADS]
        self.guard = guard(options)
        """Every driver call runs in it: errors translated in one place, the closed state."""
        self.writer = Writer(
            client, self._versions, self._heads, namespace=self.namespace, where=self.guard.where
        )
        """The write path: appends, pending heads, commit numbers."""
        self.transactions = False
        """Appends run in transactions (decided at open from ``hello``)."""
        self.change_streams = False
        """``watch`` uses change streams (decided at open from ``hello`` and ``watch=``)."""
        self.topology = "unknown"
        self._watches = Watchers()

    # -- opening -----------------------------------------------------------------------

    @classmethod
    async def open(cls, url: str) -> Self:
        """Connect to the deployment at ``url``, look at what it can do, create the indexes.

        :raises ConfigError: the URL is malformed or has an unknown option.
        :raises BackendUnavailable: no server answered within serverSelectionTimeoutMS.
        """
        options = MongoOptions.parse(url)
        opening = guard(options)
        try:
            with opening.calls():
                client: AsyncMongoClient[Document] = AsyncMongoClient(
                    options.uri, **options.client_kwargs
                )
        except ValueError as exc:  # PyMongo's URI parser: e.g. a port that is not a number
            raise ConfigError(
                f"mongodb URL {options.shown!r} is malformed: {opening.scrub(str(exc))}",
                source="url",
            ) from exc
        backend = cls(client, options, owns_client=True)
        try:
            await backend._prepare()
        except BaseException:
            await backend.aclose()
            raise
        return backend

    @classmethod
    async def from_client(
        cls,
        client: AsyncMongoClient[Document],
        *,
        namespace: str = DEFAULT_NAMESPACE,
        database: str = DEFAULT_DATABASE,
        transactions: Transactions = "auto",
        watch: WatchMode = "auto",
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> Self:
        """A backend on the caller's client, which :meth:`aclose` leaves open."""
        options = MongoOptions.for_client(
            namespace, database, transactions, watch=watch, poll_interval=poll_interval
        )
        backend = cls(client, options, owns_client=False)
        await backend._prepare()
        return backend

    async def _prepare(self) -> None:
        with self.guard.calls():
            hello = await self._client.admin.command("hello")
            replicated = "setName" in hello or hello.get("msg") == "isdbgrid"
            sessions = hello.get("logicalSessionTimeoutMinutes") is not None
            self.topology = (
                "sharded cluster"
                if hello.get("msg") == "isdbgrid"
                else f"replica set {hello['setName']}"
                if "setName" in hello
                else "standalone"
            )
            wanted = self.options.transactions
            if wanted == "on" and not (replicated and sessions):
                raise ConfigError(
                    f"{self.guard.where}: transactions=on, but the server is a "
                    f"{self.topology}; transactions need a replica set or a sharded cluster",
                    source="url",
                )
            if self.options.watch == "changestream" and not replicated:
                raise ConfigError(
                    f"{self.guard.where}: watch=changestream, but the server is a "
                    f"{self.topology}; change streams need a replica set or a sharded cluster",
                    source="url",
                )
            self.transactions = wanted != "off" and replicated and sessions
            self.change_streams = replicated and self.options.watch != "poll"
            self.writer.sequenced = not self.change_streams
            caps = set(type(self).capabilities) | {Capability.WATCH}
            if self.transactions:
                caps.add(Capability.ATOMIC_BATCH)
            self.capabilities = frozenset(caps)
            await create_indexes(self._versions, self._heads, sequenced=self.sequenced)

    # -- writing ---------------------------------------------------------------------

    async def append(self, writes: Sequence[Write], at: datetime) -> list[Record]:
        if not writes:
            return []
        if len(writes) > 1:
            if len({w.key for w in writes}) != len(writes):
                raise ValidationError("a key appears twice in one append", reason="duplicate")
            if not self.transactions:
                raise CapabilityError(
                    f"{self.guard.where}: a batch of {len(writes)} writes needs "
                    f"transactions, which this {self.topology} does not have",
                    backend=NAME,
                    capability=Capability.ATOMIC_BATCH.value,
                )
        with self.guard.calls():
            versions, stamped = await self.writer.append(writes)
        return appended(writes, versions, from_micros(stamped))

    async def replicate(self, records: Sequence[Record]) -> None:
        """Store ``records`` as given (a mirror of a tiered store); idempotent."""
        if records:
            with self.guard.calls():
                await self.writer.replicate(records)

    # -- reading -----------------------------------------------------------------------

    async def read(
        self,
        key: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Record]:
        versions: dict[str, Any] = {"$gt": after}
        if before is not None:
            versions["$lt"] = before
        if limit is not None and limit <= 0:
            return []
        with self.guard.calls():
            head = await self._heads.find_one(
                {"ns": self.namespace, "key": key, "pending": {"$exists": True}}
            )
            if head is not None:  # a write half done (its writer is slow or died): finish it
                await self.writer.finish_pending(head)
            cursor = self._versions.find(
                {"ns": self.namespace, "key": key, "v": versions}, {"_id": 0}
            ).sort("v", -1 if newest_first else 1)
            if limit is not None:
                cursor = cursor.limit(limit)
            docs = await cursor.to_list()
        return [to_record(doc) for doc in docs]

    async def as_of(self, keys: Sequence[str], at: datetime) -> dict[str, Record]:
        if not keys:
            return {}
        micros = to_micros(at)
        with self.guard.calls():
            # Writes half done (their writer is slow or died) are finished first.
            await self.writer.finish_stranded({"$in": list(keys)})
            docs = await asyncio.gather(
                *(
                    self._versions.find_one(query, projection, sort=sort)
                    for query, projection, sort in (self.as_of_query(k, micros) for k in keys)
                )
            )
        return {doc["key"]: to_record(doc) for doc in docs if doc is not None}

    def as_of_query(self, key: str, at: int) -> tuple[Document, Document, list[tuple[str, int]]]:
        """The ``find`` (filter, projection, sort) of ``key``'s newest version at or
        before ``at`` (µs): one seek of the ``(ns, key, at)`` index, read backwards.

        MongoDB answers it with one index key examined (IXSCAN, LIMIT 1). SecantusDB,
        the wire-protocol server the tests use, plans the same index but examines
        every key in the bounds before it sorts and limits: there it costs
        O(versions before ``at``) (docs/backends/mongodb.md).
        """
        return (
            {"ns": self.namespace, "key": key, "at": {"$lte": at}},
            {"_id": 0},
            [("at", -1)],
        )

    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        if not keys:
            return {}
        with self.guard.calls():
            docs = await self._heads.find(
                {"ns": self.namespace, "key": {"$in": list(keys)}}, {"_id": 0, "pending": 0}
            ).to_list()
        found = {doc["key"]: to_record(doc) for doc in docs}
        return {key: found[key] for key in keys if key in found}

    async def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        high = prefix_end(prefix)
        bounds: dict[str, str] = {"$gte": prefix}
        if high is not None:
            bounds["$lt"] = high
        # Keyset pages: no cursor stays open on the server while the caller works.
        while True:
            query: dict[str, Any] = {"ns": self.namespace, "key": dict(bounds), "live": True}
            if kind is not None:
                query["kind"] = kind
            with self.guard.calls():
                docs = (
                    await self._heads.find(query, {"_id": 0, "pending": 0})
                    .sort("key", 1)
                    .limit(SCAN_PAGE)
                    .to_list()
                )
            for doc in docs:
                yield to_record(doc)
            if len(docs) < SCAN_PAGE:
                return
            bounds.pop("$gte", None)
            bounds["$gt"] = docs[-1]["key"]

    async def prune(self, key: str, before_version: int) -> int:
        with self.guard.calls():
            head = await self._heads.find_one(
                {"ns": self.namespace, "key": key}, {"_id": 0, "v": 1}
            )
            if head is None:
                return 0
            # Heads only move up: what is below the head read here is never a head again.
            below = min(before_version, int(head["v"]))
            query: dict[str, Any] = {"ns": self.namespace, "key": key, "v": {"$lt": below}}
            if self.sequenced:
                # The namespace's highest number stays, so it never goes down, even
                # when replicate() stored an old version last (Writer.highest_seq).
                query["seq"] = {"$ne": await self.writer.highest_seq()}
            result = await self._versions.delete_many(query)
        return int(result.deleted_count)

    async def watch(self, prefix: str = "") -> AsyncIterator[Record]:
        self.guard.check_open()
        if not self.change_streams:
            return await follow(
                self.writer,
                self._versions,
                self.guard,
                self.namespace,
                prefix,
                interval=self.options.poll_interval,
                watchers=self._watches,
            )
        watch = MongoWatch(self._versions, self.guard, self.namespace, prefix)
        with self.guard.calls():
            await watch.start()
        self._watches.add(watch)
        watch.on_close(self._watches.discard)
        return watch

    # -- the rest ----------------------------------------------------------------------

    async def health(self) -> Health:
        with self.guard.calls():
            started = time.perf_counter()
            hello = await self._client.admin.command("hello")
            latency = (time.perf_counter() - started) * 1000
        detail: dict[str, Any] = {
            "topology": self.topology,
            "database": self.options.database,
            "namespace": self.namespace,
            "transactions": self.transactions,
            "watch": self.watch_method,
            "max_wire_version": hello.get("maxWireVersion"),
            "watchers": len(self._watches),
        }
        return Health(True, latency, detail)

    async def aclose(self) -> None:
        if not self.guard.close():
            return
        await self._watches.close_all()
        if self._owns_client:
            with contextlib.suppress(*DRIVER_ERRORS):
                await self._client.close()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "url": self.options.shown,
            "namespace": self.namespace,
            "database": self.options.database,
            "topology": self.topology,
            "transactions": self.transactions,
            "watch": self.watch_method,
        }

    @property
    def sequenced(self) -> bool:
        """Versions are stored with their commit number ``seq`` and ``watch`` polls (no
        change streams, or ``watch=poll``): decided at open."""
        return self.writer.sequenced

    @property
    def watch_method(self) -> str:
        """How ``watch`` follows commits: ``change streams`` or ``polling every <s> s``."""
        if self.change_streams:
            return "change streams"
        return f"polling every {self.options.poll_interval:g} s"

    # -- beyond the contract -------------------------------------------------------------

    async def drop_namespace(self, *, forget: bool = False) -> int:
        """Delete every key and version of this backend's namespace, and nothing else.

        Other namespaces in the same database are untouched. Returns how many keys
        were dropped. Not atomic with concurrent appends: stop the namespace's
        writers first.
        """
        with self.guard.calls():
            heads = await self._heads.delete_many({"ns": self.namespace})
            await self._versions.delete_many({"ns": self.namespace})
        return int(heads.deleted_count)
