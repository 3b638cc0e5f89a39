"""``python -m statekit.bench --backend mongodb``: statekit beside raw PyMongo (async).

Entry point ``mongodb`` in group ``statekit.bench``. Each workload pairs statekit
with what a PyMongo user writes by hand for the same data (each write's value,
its version, a history document), in collections of their own
(:class:`RawWriter`), never statekit's documents or protocol. Everything is
dropped afterwards.

- ``put``: ``store.put`` vs ``find_one_and_update`` of the head (``$inc`` version,
  ``$set`` value, upsert, returning the new version) then ``insert_one`` of the
  history document: two round trips, each atomic on one document, no
  transaction. A crash between them leaves a version without its history
  document; statekit's put leaves none (its ``pending`` protocol). The reference
  ``raw_transaction`` does the two in a transaction (atomic; a replica set).
- ``batch``: ``store.batch`` of :data:`BATCH_SIZE` writes vs one transaction: a
  ``bulk_write`` of the heads' ``$inc`` updates, a ``find`` of their new versions,
  one ``insert_many`` of the history, commit.
- ``concurrent``: 8 tasks of ``store.put`` on keys of their own vs 8 tasks of the
  raw put, on one client (PyMongo's pool); ``raw_transaction`` again as reference.

Both sides use the same client options, so the same write concern, printed as
``durability``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

import statekit
from statekit.backend import JSON, Write
from statekit.bench import BenchConfig, Plan, Result, Workload, measure, server_url
from statekit_mongodb.backend import MongoBackend
from statekit_mongodb.options import MongoOptions, with_namespace

__all__ = ["BATCH_SIZE", "RawWriter", "bench"]

BATCH_SIZE = 100
"""Writes per transaction in the ``batch`` workload (SecantusDB is a Python server:
100 keeps a round near a second)."""

Document = dict[str, Any]


class RawWriter:
    """The hand-written program: ``<prefix>_heads`` (``_id`` = the key, ``version``,
    ``value``, ``at``) and ``<prefix>_history`` (one document per version, unique
    on ``(key, version)``)."""

    def __init__(self, client: AsyncMongoClient[Document], database: str, prefix: str) -> None:
        self.client = client
        self.heads: AsyncCollection[Document] = client[database][f"{prefix}_heads"]
        self.history: AsyncCollection[Document] = client[database][f"{prefix}_history"]

    async def create(self) -> None:
        await self.history.create_index([("key", 1), ("version", 1)], unique=True)

    async def drop(self) -> None:
        await self.heads.drop()
        await self.history.drop()

    async def put(self, key: str, value: JSON, session: Any = None) -> int:
        """Move the head on and record the version; returns it."""
        at = datetime.now(UTC)
        head = await self.heads.find_one_and_update(
            {"_id": key},
            {"$inc": {"version": 1}, "$set": {"value": value, "at": at}},
            projection={"version": 1},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        assert head is not None  # upsert=True, returned AFTER
        version = int(head["version"])
        await self.history.insert_one(
            {"key": key, "version": version, "value": value, "at": at}, session=session
        )
        return version

    async def put_in_transaction(self, key: str, value: JSON) -> int:
        async with self.client.start_session() as session, await session.start_transaction():
            return await self.put(key, value, session)

    async def batch(self, items: list[tuple[str, JSON]]) -> None:
        at = datetime.now(UTC)
        keys = [key for key, _ in items]
        async with self.client.start_session() as session, await session.start_transaction():
            await self.heads.bulk_write(
                [
                    UpdateOne(
                        {"_id": key},
                        {"$inc": {"version": 1}, "$set": {"value": value, "at": at}},
                        upsert=True,
                    )
                    for key, value in items
                ],
                session=session,
            )
            versions = {
                doc["_id"]: doc["version"]
                async for doc in self.heads.find(
                    {"_id": {"$in": keys}}, {"version": 1}, session=session
                )
            }
            await self.history.insert_many(
                [
                    {"key": key, "version": versions[key], "value": value, "at": at}
                    for key, value in items
                ],
                session=session,
            )


async def bench(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """``put``, ``batch`` and ``concurrent`` through statekit next to raw PyMongo."""
    url = server_url(config, "secantus")
    tag = uuid.uuid4().hex[:12]
    statekit_url = with_namespace(url, f"bench_sk_{tag}")
    raw_options = MongoOptions.parse(with_namespace(url, f"bench_raw_{tag}"))
    async with AsyncExitStack() as stack:
        stack.push_async_callback(_drop, statekit_url)
        store = await stack.enter_async_context(await statekit.open(statekit_url))
        backend = store.backend
        assert isinstance(backend, MongoBackend)
        # The raw side connects with statekit's own client options.
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            raw_options.uri, **raw_options.client_kwargs
        )
        stack.push_async_callback(client.close)
        raw = RawWriter(client, raw_options.database, raw_options.namespace)
        await raw.create()
        stack.push_async_callback(raw.drop)
        detail: dict[str, JSON] = {
            "durability": "write concern "
            + str(client.write_concern.document or "server default (w:1)"),
            "topology": backend.topology,
            "keys": config.keys,
        }

        plan = Plan([f"bench/{i}" for i in range(config.keys)])
        batch_keys = [f"bench/batch/{i}" for i in range(BATCH_SIZE)]
        # Every key is written once first, so timed rounds update existing heads.
        for key, value in plan.items(len(plan.keys)) + plan.items(BATCH_SIZE, batch_keys):
            await raw.put(key, value)
            await store.put(key, value)

        yield await measure(
            "mongodb",
            Workload(
                "put",
                config.n,
                plan.puts(config.n, store.put),
                plan.puts(config.n, raw.put),
                {"raw_transaction": plan.puts(config.n, raw.put_in_transaction)},
                detail,
            ),
            config.rounds,
        )

        batches = max(2, config.n // BATCH_SIZE)

        async def statekit_batch(items: list[tuple[str, JSON]]) -> None:
            await store.batch([Write(k, v) for k, v in items])

        batch = Workload(
            "batch",
            batches * BATCH_SIZE,
            plan.batches(batches, batch_keys, statekit_batch),
            plan.batches(batches, batch_keys, raw.batch),
            detail={**detail, "batch_size": BATCH_SIZE},
        )
        yield await measure("mongodb", batch, config.rounds)

        writers = config.writers
        per_writer = max(1, config.n // writers)
        concurrent = Workload(
            "concurrent",
            per_writer * writers,
            plan.writers(per_writer, [store.put] * writers),
            plan.writers(per_writer, [raw.put] * writers),
            {"raw_transaction": plan.writers(per_writer, [raw.put_in_transaction] * writers)},
            {**detail, "writers": writers},
        )
        yield await measure("mongodb", concurrent, config.rounds)


async def _drop(url: str) -> None:
    async with await MongoBackend.open(url) as backend:
        await backend.drop_namespace()
