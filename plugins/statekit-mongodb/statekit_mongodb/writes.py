"""The write path of a MongoDB namespace: appends, pending heads and commit numbers.

A :class:`Writer` appends to the two collections of one namespace
(:mod:`statekit_mongodb.documents`):

- **One write** needs no transaction: the head is moved with a conditional update
  on its version (the compare-and-set), carrying the new version as ``pending``;
  the version is then copied into the history and ``pending`` cleared. Whoever
  meets a ``pending`` head (its writer is slow or died) finishes the copy first
  (:meth:`Writer.finish_pending`), so history stays gap-free.
- **Several writes** run in one transaction: read the heads, check every
  ``expect``, move the heads, insert the versions, commit; all or nothing.
- An attempt that loses a race to another writer (a head moved under it, a write
  conflict, a duplicate version) starts over, for up to :data:`RACE_SECONDS`.
- Where ``watch`` polls (:attr:`Writer.sequenced`), every version is stored with
  its namespace's next commit number ``seq``, taken by the insert itself
  (:meth:`Writer.store_version`, :mod:`statekit_mongodb.poll`).

Its calls raise PyMongo's errors: the backend runs them in its DriverGuard.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

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

from statekit.backend import Record, Write, check_expect, next_at
from statekit.codec import from_micros, to_micros
from statekit.errors import BackendUnavailable
from statekit.kit import stored
from statekit_mongodb.documents import head_document, version_document
from statekit_mongodb.translate import DRIVER_ERRORS, NAME

__all__ = ["RACE_SECONDS", "SEQ_ATTEMPTS", "Writer"]

Document = dict[str, Any]

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


class Writer:
    """Appends to one namespace's collections. See the module docstring.

    :param client: the PyMongo client (its sessions run the transactions).
    :param versions: ``statekit_versions``.
    :param heads: ``statekit_heads``.
    :param namespace: whose keys these are.
    :param where: how messages name the store (``mongodb <redacted URL>``).
    """

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        versions: AsyncCollection[Document],
        heads: AsyncCollection[Document],
        *,
        namespace: str,
        where: str,
    ) -> None:
        self._client = client
        self._versions = versions
        self._heads = heads
        self.namespace = namespace
        self.where = where
        self.sequenced = False
        """Versions are stored with their commit number ``seq`` (the backend decides it
        at open: where ``watch`` polls)."""
        self._seq_seen = 0
        """A ``seq`` this writer saw stored: the namespace's highest is at least this."""

    async def append(self, writes: Sequence[Write]) -> tuple[list[int], int]:
        """Append ``writes`` (one, or several in a transaction), starting over while it
        loses races; the new versions and the ``at`` (µs) they were stored with."""
        deadline = time.monotonic() + RACE_SECONDS
        attempt = 0
        while attempt == 0 or time.monotonic() < deadline:
            try:
                if len(writes) == 1:  # the common put: no transaction needed
                    version, stamped = await self._one(writes[0])
                    return [version], stamped
                return await self._in_transaction(writes)
            except _Raced:
                pass
            except PyMongoError as exc:
                if not (_duplicate(exc) or _transient(exc)):
                    raise
            await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
            attempt += 1
        raise BackendUnavailable(
            f"{self.where}: {attempt} attempts in {RACE_SECONDS:g} s at an append lost a race "
            f"to other writers of {[w.key for w in writes][:3]}",
            backend=NAME,
        )

    async def _in_transaction(self, writes: Sequence[Write]) -> tuple[list[int], int]:
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
                        await self.finish_pending(half_done)
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
                    first = await self.highest_seq(session) + 1
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

    async def _one(self, write: Write) -> tuple[int, int]:
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
            await self.finish_pending(head)
            raise _Raced  # read the head again
        at = _next_at([int(head["at"])] if head else ())
        doc = version_document(ns, write, current + 1, at)
        if head is None:
            await self._heads.insert_one({**head_document(doc), "pending": doc})
            await self.finish_pending({**head_document(doc), "pending": doc})
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
        await self.finish_pending({**head_document(doc), "pending": doc})
        return True

    async def finish_pending(self, head: Mapping[str, Any]) -> None:
        """Copy a head's pending version into the history (once) and clear it.

        ``pending`` is cleared only after the version is stored (and numbered): the
        key's next version cannot start before, so a key's numbers follow its versions.
        """
        pending = dict(head["pending"])
        pending.pop("_id", None)
        await self.store_version(pending)
        await self._heads.update_one(
            {"ns": head["ns"], "key": head["key"], "v": pending["v"]}, {"$unset": {"pending": ""}}
        )

    async def store_version(self, doc: Mapping[str, Any]) -> None:
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
            seq = await self.highest_seq() + 1
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
            f"{self.where}: {SEQ_ATTEMPTS} attempts at numbering version "
            f"{doc['v']} of {doc['key']!r} lost to other writers; it is committed and the "
            "next reader, writer or watcher of the key stores it",
            backend=NAME,
        )

    async def highest_seq(self, session: AsyncClientSession | None = None) -> int:
        """The namespace's highest commit number, 0 before the first.

        It never goes down (the version holding it is its key's head, which prune
        keeps), so the search starts at the highest seen: an index range of what
        was added since, not the namespace's whole history. Only
        :meth:`MongoBackend.drop_namespace` lowers it: then the search starts over at 1.
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

    async def finish_stranded(self, bounds: Mapping[str, Any]) -> None:
        """Finish the writes under ``bounds`` whose writer moved the head and then died."""
        stranded = await self._heads.find(
            {"ns": self.namespace, "key": dict(bounds), "pending": {"$exists": True}}
        ).to_list()
        for head in stranded:
            await self.finish_pending(head)

    async def replicate(self, records: Sequence[Record]) -> None:
        """Store ``records`` as given (a mirror of a tiered store); idempotent."""
        ns = self.namespace
        docs: list[Document] = [
            {"ns": ns, "key": key, "v": v, "kind": kind, "data": data, "meta": meta, "at": at}
            for key, v, kind, data, meta, at in map(stored, records)
        ]
        newest: dict[str, Document] = {}
        for doc in docs:
            if doc["key"] not in newest or doc["v"] > newest[doc["key"]]["v"]:
                newest[doc["key"]] = doc
        if self.sequenced:  # numbered one by one, each key's versions in order
            for doc in sorted(docs, key=lambda d: (d["key"], d["v"])):
                await self.store_version(doc)
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


def _next_at(previous: Iterable[int]) -> int:
    """The ``at`` (µs) of an append: this host's clock, past every previous ``at``
    (:func:`statekit.backend.next_at`)."""
    return to_micros(next_at(datetime.now(UTC), (from_micros(at) for at in previous)))


def _duplicate(exc: PyMongoError) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors", [])
        return bool(errors) and all(e.get("code") == _DUPLICATE_KEY for e in errors)
    return False


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
