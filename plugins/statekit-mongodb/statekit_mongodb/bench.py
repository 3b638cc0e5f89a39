"""``python -m statekit.bench --backend mongodb``: statekit beside raw PyMongo (async).

Entry point ``mongodb`` in group ``statekit.bench``. Each workload pairs statekit
with the shortest ``AsyncMongoClient`` program that stores the same documents
with the same operations and round trips, in a namespace of its own, on the same
collections and indexes. Both namespaces are dropped afterwards.

- ``put``: ``store.put`` (find the head, move it with a conditional update, insert
  the version, clear ``pending``) vs those four operations by hand.
- ``batch``: ``store.batch`` of :data:`BATCH_SIZE` writes vs the same transaction
  by hand (find the heads, one ``bulk_write`` of conditional updates, one
  ``insert_many``, commit).
- ``concurrent``: 8 tasks of ``store.put`` on keys of their own vs 8 tasks of the
  raw put, on one client (PyMongo's pool).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

import statekit
from statekit.backend import JSON, Write
from statekit.bench import BenchConfig, Plan, Result, Workload, measure, server_url
from statekit.codec import dumps, to_micros
from statekit_mongodb.backend import MongoBackend
from statekit_mongodb.documents import HEADS, VERSIONS
from statekit_mongodb.options import MongoOptions, with_namespace

__all__ = ["BATCH_SIZE", "RawWriter", "bench"]

BATCH_SIZE = 100
"""Writes per transaction in the ``batch`` workload (SecantusDB is a Python server:
100 keeps a round near a second)."""

Document = dict[str, Any]


class RawWriter:
    """What a hand-written program sends for ``put`` and ``batch``: the same documents."""

    def __init__(self, client: AsyncMongoClient[Document], database: str, namespace: str) -> None:
        self.client = client
        self.heads: AsyncCollection[Document] = client[database][HEADS]
        self.versions: AsyncCollection[Document] = client[database][VERSIONS]
        self.ns = namespace

    def _version(self, key: str, version: int, value: JSON, at: int) -> Document:
        return {
            "ns": self.ns,
            "key": key,
            "v": version,
            "kind": "state",
            "data": dumps(value),
            "meta": "{}",
            "at": at,
        }

    @staticmethod
    def _head(doc: Document) -> Document:
        return {
            **{k: doc[k] for k in ("ns", "key", "v", "kind", "data", "meta", "at")},
            "live": True,
        }

    async def put(self, key: str, value: JSON) -> None:
        head = await self.heads.find_one({"ns": self.ns, "key": key})
        current = head["v"] if head else 0
        doc = self._version(key, current + 1, value, to_micros(datetime.now(UTC)))
        if head is None:
            await self.heads.insert_one({**self._head(doc), "pending": doc})
        else:
            moved = await self.heads.update_one(
                {"ns": self.ns, "key": key, "v": current, "pending": {"$exists": False}},
                {"$set": {**self._head(doc), "pending": doc}},
            )
            assert moved.matched_count == 1
        await self.versions.insert_one(dict(doc))
        await self.heads.update_one(
            {"ns": self.ns, "key": key, "v": current + 1}, {"$unset": {"pending": ""}}
        )

    async def batch(self, items: list[tuple[str, JSON]]) -> None:
        at = to_micros(datetime.now(UTC))
        keys = [key for key, _ in items]
        async with self.client.start_session() as session:
            await session.start_transaction()
            heads = {
                doc["key"]: doc
                async for doc in self.heads.find(
                    {"ns": self.ns, "key": {"$in": keys}},
                    {"_id": 0, "ns": 1, "key": 1, "v": 1, "live": 1, "pending": 1},
                    session=session,
                )
            }
            docs, ops = [], []
            for key, value in items:
                current = heads[key]["v"]
                doc = self._version(key, current + 1, value, at)
                docs.append(doc)
                ops.append(
                    UpdateOne(
                        {"ns": self.ns, "key": key, "v": current, "pending": {"$exists": False}},
                        {"$set": self._head(doc)},
                    )
                )
            await self.heads.bulk_write(ops, ordered=True, session=session)
            await self.versions.insert_many(docs, ordered=True, session=session)
            await session.commit_transaction()


async def bench(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """``put``, ``batch`` and ``concurrent`` through statekit next to raw PyMongo."""
    url = server_url(config, "secantus")
    tag = uuid.uuid4().hex[:12]
    statekit_url = with_namespace(url, f"bench_sk_{tag}")
    raw_options = MongoOptions.parse(with_namespace(url, f"bench_raw_{tag}"))
    async with AsyncExitStack() as stack:
        stack.push_async_callback(_drop, statekit_url)
        stack.push_async_callback(_drop, with_namespace(url, raw_options.namespace))
        store = await stack.enter_async_context(await statekit.open(statekit_url))
        backend = store.backend
        assert isinstance(backend, MongoBackend)
        # The raw side connects with statekit's own client options.
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            raw_options.uri, **raw_options.client_kwargs
        )
        stack.push_async_callback(client.close)
        raw = RawWriter(client, raw_options.database, raw_options.namespace)
        detail: dict[str, JSON] = {
            "topology": backend.topology,
            "keys": config.keys,
            "write_concern": str(client.write_concern.document or "server default"),
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
                detail=detail,
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
            detail={**detail, "writers": writers},
        )
        yield await measure("mongodb", concurrent, config.rounds)


async def _drop(url: str) -> None:
    async with await MongoBackend.open(url) as backend:
        await backend.drop_namespace()
