"""``mongodb://``: statekit's versioned keys in MongoDB, through PyMongo's async API.

- Two collections (:mod:`statekit_mongodb.documents`): ``statekit_versions``, whose
  unique index on ``(ns, key, v)`` lets exactly one writer create version n, and
  ``statekit_heads``, one document per key, moved with a conditional update on its
  version (the compare-and-set).
- One write (``put``, ``update``, ``delete``) needs no transaction: the head is
  moved with a conditional update on its version, carrying the new version as
  ``pending``; the version is then copied into the history and ``pending``
  cleared. Whoever meets a ``pending`` head (its writer is slow or died) finishes
  the copy first, so history stays gap-free.
- Several writes in one append run in a transaction where the deployment has them
  (a replica set, a sharded cluster, SecantusDB: decided at
  :meth:`MongoBackend.open` from ``hello``): read the heads, check every
  ``expect``, move the heads, insert the versions, commit; all or nothing. Without
  transactions (a standalone ``mongod``, or ``?transactions=off``)
  ``atomic_batch`` is not declared.
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
import random
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Self

from pymongo import AsyncMongoClient, InsertOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from statekit.backend import Backend, Capability, Health, Record, Write, check_expect
from statekit.codec import from_micros, prefix_end, to_micros
from statekit.errors import (
    BackendError,
    BackendUnavailable,
    CapabilityError,
    ConfigError,
    StatekitError,
    ValidationError,
)
from statekit.kit import CommitFollower, Watchers
from statekit.kit.follow import Closable
from statekit_mongodb.documents import (
    HEADS,
    VERSIONS,
    head_document,
    to_record,
    version_document,
)
from statekit_mongodb.options import (
    DEFAULT_DATABASE,
    DEFAULT_NAMESPACE,
    DEFAULT_POLL_INTERVAL,
    MongoOptions,
    Transactions,
    WatchMode,
)
from statekit_mongodb.poll import follow
from statekit_mongodb.translate import DRIVER_ERRORS, NAME, translate
from statekit_mongodb.watch import MongoWatch

__all__ = ["MongoBackend"]

Document = dict[str, Any]

SCAN_PAGE = 500
RACE_SECONDS = 10.0
"""Appends that lose a race (a write conflict, a head moved under them) start over, with
a jittered backoff, for this long before giving up with BackendUnavailable: bounded by
time, not by a count, because five writers of one key (processes or store objects)
could lose 50 races in a row on SecantusDB. A failed ``expect`` is never retried: it is
a ConflictError at once."""
SEQ_ATTEMPTS = 200
"""Tries at numbering one version when other writers keep taking the number first."""
_DUPLICATE_KEY = 11000


class _Raced(Exception):
    """Another writer moved a head between our read and our write: start over."""


def _duplicate(exc: PyMongoError) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors", [])
        return bool(errors) and all(e.get("code") == _DUPLICATE_KEY for e in errors)
    return False


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
        self._closed = False
        self.transactions = False
        """Appends run in transactions (decided at open from ``hello``)."""
        self.change_streams = False
        """``watch`` uses change streams (decided at open from ``hello`` and ``watch=``)."""
        self.sequenced = False
        """Versions are stored with their commit number ``seq`` and ``watch`` polls
        (no change streams, or ``watch=poll``)."""
        self.topology = "unknown"
        self._seq_seen = 0
        """A ``seq`` this backend saw stored: the namespace's highest is at least this."""
        self._watches = Watchers()

    # -- opening -----------------------------------------------------------------------

    @classmethod
    async def open(cls, url: str) -> Self:
        """Connect to the deployment at ``url``, look at what it can do, create the indexes.

        :raises ConfigError: the URL is malformed or has an unknown option.
        :raises BackendUnavailable: no server answered within serverSelectionTimeoutMS.
        """
        options = MongoOptions.parse(url)
        try:
            client: AsyncMongoClient[Document] = AsyncMongoClient(
                options.uri, **options.client_kwargs
            )
        except DRIVER_ERRORS as exc:
            raise translate(exc, where=options.shown, scrub=options.scrub) from exc
        except ValueError as exc:  # PyMongo's URI parser: e.g. a port that is not a number
            raise ConfigError(
                f"mongodb URL {options.shown!r} is malformed: {options.scrub(str(exc))}",
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
        with self._driver():
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
                    f"mongodb {self.options.shown}: transactions=on, but the server is a "
                    f"{self.topology}; transactions need a replica set or a sharded cluster",
                    source="url",
                )
            if self.options.watch == "changestream" and not replicated:
                raise ConfigError(
                    f"mongodb {self.options.shown}: watch=changestream, but the server is a "
                    f"{self.topology}; change streams need a replica set or a sharded cluster",
                    source="url",
                )
            self.transactions = wanted != "off" and replicated and sessions
            self.change_streams = replicated and self.options.watch != "poll"
            self.sequenced = not self.change_streams
            caps = set(type(self).capabilities) | {Capability.WATCH}
            if self.transactions:
                caps.add(Capability.ATOMIC_BATCH)
            self.capabilities = frozenset(caps)
            await self._versions.create_index(
                [("ns", 1), ("key", 1), ("v", 1)], unique=True, name="ns_key_v"
            )
            # as_of: the newest version at or before a time is one lookup.
            await self._versions.create_index([("ns", 1), ("key", 1), ("at", 1)], name="ns_key_at")
            if self.sequenced:
                # Unique: one version per number. Partial: versions without `seq` (an
                # older release, change streams) are not in it.
                await self._versions.create_index(
                    [("ns", 1), ("seq", 1)],
                    unique=True,
                    name="ns_seq_unique",
                    partialFilterExpression={"seq": {"$exists": True}},
                )
                # What the queries on `seq` use: SecantusDB plans no query with a
                # partial index (a real mongod may use either).
                await self._versions.create_index([("ns", 1), ("seq", -1)], name="ns_seq")
            await self._heads.create_index([("ns", 1), ("key", 1)], unique=True, name="ns_key")

    # -- the one place driver errors become statekit's ---------------------------------

    def _translate(self, exc: BaseException) -> StatekitError:
        return translate(exc, where=self.options.shown, scrub=self.options.scrub)

    @contextlib.contextmanager
    def _driver(self) -> Iterator[None]:
        """Translate what a driver call raises (every driver call runs inside this)."""
        if self._closed:
            raise BackendError(f"mongodb {self.options.shown}: the backend is closed", backend=NAME)
        try:
            yield
        except DRIVER_ERRORS as exc:
            if self._closed:
                raise BackendError(
                    f"mongodb {self.options.shown}: the backend is closed", backend=NAME
                ) from exc
            raise self._translate(exc) from exc

    # -- append ------------------------------------------------------------------------

    async def append(self, writes: Sequence[Write], at: datetime) -> list[Record]:
        if not writes:
            return []
        keys = [w.key for w in writes]
        if len(writes) > 1:
            if len(set(keys)) != len(keys):
                raise ValidationError("a key appears twice in one append", reason="duplicate")
            if not self.transactions:
                raise CapabilityError(
                    f"mongodb {self.options.shown}: a batch of {len(writes)} writes needs "
                    f"transactions, which this {self.topology} does not have",
                    backend=NAME,
                    capability=Capability.ATOMIC_BATCH.value,
                )
        deadline = time.monotonic() + RACE_SECONDS
        attempt = 0
        with self._driver():
            while attempt == 0 or time.monotonic() < deadline:
                try:
                    if len(writes) == 1:  # the common put: no transaction needed
                        version, stamped = await self._append_one(writes[0])
                        versions = [version]
                    else:
                        versions, stamped = await self._append_in_transaction(writes)
                except _Raced:
                    pass
                except PyMongoError as exc:
                    if not (_duplicate(exc) or _transient(exc)):
                        raise
                else:
                    at = from_micros(stamped)
                    return [
                        Record(w.key, v, w.kind, w.data, dict(w.meta), at)
                        for w, v in zip(writes, versions, strict=True)
                    ]
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
                attempt += 1
        raise BackendUnavailable(
            f"mongodb {self.options.shown}: {attempt} attempts in {RACE_SECONDS:g} s at an "
            "append lost a race "
            f"to other writers of {keys[:3]}",
            backend=NAME,
        )

    async def _append_in_transaction(self, writes: Sequence[Write]) -> tuple[list[int], int]:
        """One attempt: read the heads, check, move the heads, insert the versions, commit.

        Returns the new versions and the batch's ``at`` (µs): this host's clock, past
        every key's previous version (the heads are read in the transaction, and a
        head moved meanwhile aborts it)."""
        ns = self.namespace
        keys = [w.key for w in writes]
        async with self._client.start_session() as session:
            await session.start_transaction()
            try:
                heads = {
                    doc["key"]: doc
                    async for doc in self._heads.find(
                        {"ns": ns, "key": {"$in": keys}},
                        {"_id": 0, "ns": 1, "key": 1, "v": 1, "live": 1, "at": 1, "pending": 1},
                        session=session,
                    )
                }
                unfinished = [head for head in heads.values() if "pending" in head]
                if unfinished:  # a single write is half done: finish it, then start over
                    await _abort(session)
                    for half_done in unfinished:
                        await self._finish_pending(half_done)
                    raise _Raced
                docs: list[Document] = []
                ops: list[InsertOne[Document] | UpdateOne] = []
                updates = 0
                at = _next_at(int(head["at"]) for head in heads.values())
                for write in writes:
                    head = heads.get(write.key)
                    current = int(head["v"]) if head else 0
                    check_expect(
                        write, current, head is not None and not head["live"], backend=NAME
                    )
                    doc = version_document(ns, write, current + 1, at)
                    docs.append(doc)
                    if head is None:
                        ops.append(InsertOne(head_document(doc)))
                    else:
                        updates += 1
                        ops.append(
                            UpdateOne(
                                {
                                    "ns": ns,
                                    "key": write.key,
                                    "v": current,
                                    "pending": {"$exists": False},
                                },
                                {"$set": head_document(doc)},
                            )
                        )
                result = await self._heads.bulk_write(ops, ordered=True, session=session)
                if result.matched_count != updates:
                    raise _Raced
                if self.sequenced:  # numbers taken inside the transaction: all or none
                    first = await self._highest_seq(session) + 1
                    for n, doc in enumerate(docs):
                        doc["seq"] = first + n
                await self._versions.insert_many(docs, ordered=True, session=session)
                await session.commit_transaction()
                if self.sequenced:
                    self._seq_seen = max(self._seq_seen, int(docs[-1]["seq"]))
            except BaseException:
                await _abort(session)
                raise
        return [int(doc["v"]) for doc in docs], at

    async def _append_one(self, write: Write) -> tuple[int, int]:
        """One attempt at a single write, no transaction: move the head (the
        compare-and-set, carrying the new version as ``pending``), copy the version
        into the history, clear ``pending``. Twice as fast as a transaction on
        SecantusDB, and as safe: whoever meets a ``pending`` head finishes it first.

        Returns the version and its ``at`` (µs): this host's clock, past the head's
        (the head move is conditional on the head read, so its ``at`` cannot change)."""
        ns = self.namespace
        expect = write.expect
        if isinstance(expect, int) and expect > 0:
            # The head must be `expect`: try the move at once, read only when it fails
            # (or when the head's time is not before the clock's).
            at = _next_at(())
            doc = version_document(ns, write, expect + 1, at)
            if await self._move_head(write.key, expect, doc, earlier_than=at):
                return expect + 1, at
        head = await self._heads.find_one({"ns": ns, "key": write.key})
        current = int(head["v"]) if head else 0
        # A pending version is committed (its head moved): a write expecting another
        # head fails here at once, without finishing someone else's copy.
        check_expect(write, current, head is not None and not head["live"], backend=NAME)
        if head is not None and "pending" in head:
            await self._finish_pending(head)
            raise _Raced  # read the head again
        at = _next_at([int(head["at"])] if head else ())
        doc = version_document(ns, write, current + 1, at)
        if head is None:
            await self._heads.insert_one({**head_document(doc), "pending": doc})
            await self._finish_pending({**head_document(doc), "pending": doc})
        elif not await self._move_head(write.key, current, doc):
            raise _Raced
        return current + 1, at

    async def _move_head(
        self, key: str, current: int, doc: Document, *, earlier_than: int | None = None
    ) -> bool:
        """Move the head from version ``current`` to ``doc`` and copy ``doc`` into the
        history; False (nothing written) when the head is not ``current`` any more, or
        (with ``earlier_than``) its ``at`` is not before that."""
        query: Document = {
            "ns": self.namespace,
            "key": key,
            "v": current,
            "pending": {"$exists": False},
        }
        if earlier_than is not None:
            query["at"] = {"$lt": earlier_than}
        moved = await self._heads.update_one(
            query, {"$set": {**head_document(doc), "pending": doc}}
        )
        if moved.matched_count != 1:
            return False
        await self._finish_pending({**head_document(doc), "pending": doc})
        return True

    async def _finish_pending(self, head: Mapping[str, Any]) -> None:
        """Copy a head's pending version into the history (once) and clear it.

        ``pending`` is cleared only after the version is stored (and numbered): the
        key's next version cannot start before, so a key's numbers follow its versions.
        """
        pending = dict(head["pending"])
        pending.pop("_id", None)
        await self._store_version(pending)
        await self._heads.update_one(
            {"ns": head["ns"], "key": head["key"], "v": pending["v"]}, {"$unset": {"pending": ""}}
        )

    async def _store_version(self, doc: Mapping[str, Any]) -> None:
        """Insert the version ``doc`` into the history unless it is there already.

        When :attr:`sequenced`, with the next commit number: the highest ``seq`` of
        the namespace plus one, taken by this very insert (the unique ``(ns, seq)``
        index lets one writer have it; the others read the highest again). So no
        number is ever taken and left unused, and n + 1 is stored only once n is
        visible: what :class:`~statekit_mongodb.poll.MongoPoll` relies on.
        """
        if not self.sequenced:
            with contextlib.suppress(DuplicateKeyError):  # someone else copied it already
                await self._versions.insert_one(dict(doc))
            return
        for attempt in range(SEQ_ATTEMPTS):
            seq = await self._highest_seq() + 1
            try:
                await self._versions.insert_one({**doc, "seq": seq})
            except DuplicateKeyError:
                stored = await self._versions.find_one(
                    {"ns": doc["ns"], "key": doc["key"], "v": doc["v"]}, {"_id": 1}
                )
                if stored is not None:  # someone else copied it already
                    return
                # Another writer took `seq` first: read the highest again.
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
                continue
            self._seq_seen = max(self._seq_seen, seq)
            return
        raise BackendUnavailable(
            f"mongodb {self.options.shown}: {SEQ_ATTEMPTS} attempts at numbering version "
            f"{doc['v']} of {doc['key']!r} lost to other writers; it is committed and the "
            "next reader, writer or watcher of the key stores it",
            backend=NAME,
        )

    async def _highest_seq(self, session: AsyncClientSession | None = None) -> int:
        """The namespace's highest commit number, 0 before the first.

        It never goes down (the version holding it is its key's head, which prune
        keeps), so the search starts at the highest seen: an index range of what
        was added since, not the namespace's whole history. Only
        :meth:`drop_namespace` lowers it: then the search starts over at 1.
        """
        for low in dict.fromkeys((max(self._seq_seen, 1), 1)):
            top = await self._versions.find_one(
                {"ns": self.namespace, "seq": {"$gte": low}},
                {"_id": 0, "seq": 1},
                sort=[("seq", -1)],
                session=session,
            )
            if top is not None:
                self._seq_seen = int(top["seq"])
                return self._seq_seen
        self._seq_seen = 0
        return 0

    async def _finish_stranded(self, bounds: Mapping[str, Any]) -> None:
        """Finish the writes under ``bounds`` whose writer moved the head and then died."""
        stranded = await self._heads.find(
            {"ns": self.namespace, "key": dict(bounds), "pending": {"$exists": True}}
        ).to_list()
        for head in stranded:
            await self._finish_pending(head)

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
        with self._driver():
            head = await self._heads.find_one(
                {"ns": self.namespace, "key": key, "pending": {"$exists": True}}
            )
            if head is not None:  # a write half done (its writer is slow or died): finish it
                await self._finish_pending(head)
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
        with self._driver():
            # Writes half done (their writer is slow or died) are finished first.
            await self._finish_stranded({"$in": list(keys)})
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
        with self._driver():
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
            with self._driver():
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
        with self._driver():
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
                # when replicate() stored an old version last (_highest_seq).
                query["seq"] = {"$ne": await self._highest_seq()}
            result = await self._versions.delete_many(query)
        return int(result.deleted_count)

    async def watch(self, prefix: str = "") -> AsyncIterator[Record]:
        with self._driver():
            watch: MongoWatch | CommitFollower[int]
            if self.change_streams:
                watch = MongoWatch(self, self._versions, prefix)
                await watch.start()
            else:
                watch = await follow(self, self._versions, prefix)
                watch.on_close(self._forget_watch)
        self._watches.add(watch)
        return watch

    async def replicate(self, records: Sequence[Record]) -> None:
        """Store ``records`` as given (a mirror of a tiered store); idempotent."""
        if not records:
            return
        ns = self.namespace
        docs: list[Document] = [
            {
                "ns": ns,
                "key": r.key,
                "v": r.version,
                "kind": r.kind,
                "data": Write(r.key, r.data).data_json(),
                "meta": Write(r.key, None, meta=r.meta).meta_json(),
                "at": to_micros(r.at),
            }
            for r in records
        ]
        newest: dict[str, Document] = {}
        for doc in docs:
            if doc["key"] not in newest or doc["v"] > newest[doc["key"]]["v"]:
                newest[doc["key"]] = doc
        with self._driver():
            if self.sequenced:  # numbered one by one, each key's versions in order
                for doc in sorted(docs, key=lambda d: (d["key"], d["v"])):
                    await self._store_version(doc)
            else:
                try:
                    await self._versions.insert_many(docs, ordered=False)
                except BulkWriteError as exc:
                    if not _duplicate(exc):
                        raise
            moves = [
                UpdateOne(
                    {"ns": ns, "key": key, "v": {"$lt": doc["v"]}},
                    {"$set": head_document(doc)},
                    upsert=True,
                )
                for key, doc in newest.items()
            ]
            try:  # a head already newer makes the upsert collide on (ns, key): keep it
                await self._heads.bulk_write(moves, ordered=False)
            except BulkWriteError as exc:
                if not _duplicate(exc):
                    raise

    # -- the rest ----------------------------------------------------------------------

    async def health(self) -> Health:
        with self._driver():
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
        if self._closed:
            return
        self._closed = True
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
        with self._driver():
            heads = await self._heads.delete_many({"ns": self.namespace})
            await self._versions.delete_many({"ns": self.namespace})
        return int(heads.deleted_count)

    def _forget_watch(self, watch: Closable) -> None:
        self._watches.discard(watch)


def _next_at(previous: Iterable[int]) -> int:
    """The ``at`` (µs) of an append: this host's clock, past every previous ``at``."""
    clock = to_micros(datetime.now(UTC))
    latest = max(previous, default=clock - 1)
    return clock if clock > latest else latest + 1


def _transient(exc: PyMongoError) -> bool:
    """A transaction the server aborted (write conflict): the append may start over.

    Connection errors are not started over here (they carry the same label inside a
    transaction): the caller gets BackendUnavailable at once.
    """
    if isinstance(exc, ConnectionFailure):
        return False
    return exc.has_error_label("TransientTransactionError") or (
        isinstance(exc, OperationFailure) and exc.code == 112
    )


async def _abort(session: AsyncClientSession) -> None:
    if session.in_transaction:
        with contextlib.suppress(*DRIVER_ERRORS):
            await session.abort_transaction()
