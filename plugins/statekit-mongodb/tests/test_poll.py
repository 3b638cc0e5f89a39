"""The polling watch (``watch=poll``, what a standalone mongod gets): every committed
version arrives once, each key's in order, with writers in several tasks and processes,
conflicts, holes in the numbers, stranded writes and versions from an older release."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from statekit_mongodb import MongoBackend
from statekit_mongodb.options import with_namespace

from statekit.backend import Capability, Record, Write
from statekit.errors import ConfigError, ConflictError
from statekit.store import StateStore
from statekit.testing import fresh_namespace

from .conftest import drop, open_or_skip

Opener = Callable[..., Awaitable[MongoBackend]]

HANG = 120.0
"""Seconds after which a watcher that has not delivered is hung (only fails on a hang)."""

END = "c/~end"
"""Written after every other commit: the watcher has everything once it sees this."""

WRITER = """
import asyncio, sys
import statekit

def bump(value):
    return (value or 0) + 1

async def main(url, name, count):
    async with await statekit.open(url) as store:
        for i in range(count):
            await store.update("c/shared", bump, retries=100_000, max_backoff=0.02)
            await store.put(f"c/{name}/{i % 3}", {"i": i})

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""
"""A writer process: its own interpreter, its own client."""


def now() -> datetime:
    return datetime.now(UTC)


async def poll_backend(open_backend: Opener, mongo_url: str, tag: str) -> MongoBackend:
    backend = await open_backend(tag, mongo_url + "&watch=poll")
    assert backend.sequenced and not backend.change_streams
    return backend


async def take_until(it: AsyncIterator[Record], last_key: str) -> list[Record]:
    """Everything ``it`` delivers up to and including the first record of ``last_key``."""
    got: list[Record] = []

    async def take() -> None:
        async for record in it:
            got.append(record)
            if record.key == last_key:
                return

    await asyncio.wait_for(take(), HANG)
    return got


async def stored(backend: MongoBackend, prefix: str) -> list[tuple[str, int]]:
    """Every stored (key, version) under ``prefix``, tombstones included."""
    heads = await backend._heads.find({"ns": backend.namespace}, {"key": 1}).to_list()
    keys = sorted(h["key"] for h in heads if h["key"].startswith(prefix))
    return [(r.key, r.version) for key in keys for r in await backend.read(key)]


def assert_once_and_in_order(got: list[Record], expected: list[tuple[str, int]]) -> None:
    seen = [(r.key, r.version) for r in got]
    twice = [item for item, n in Counter(seen).items() if n > 1]
    assert not twice, f"delivered twice: {twice[:5]}"
    assert sorted(seen) == sorted(expected), "missed or extra commits"
    per_key: dict[str, list[int]] = {}
    for key, version in seen:
        per_key.setdefault(key, []).append(version)
    for key, versions in per_key.items():
        assert versions == sorted(versions), f"{key} out of order: {versions}"


@pytest.mark.asyncio
async def test_poll_sees_every_commit_of_tasks_and_processes_once(
    open_backend: Opener, mongo_url: str
) -> None:
    watcher = await poll_backend(open_backend, mongo_url, "pollmany")
    url = with_namespace(mongo_url + "&watch=poll", watcher.namespace)
    writer = await MongoBackend.open(url)
    store = StateStore(writer)
    await store.put("c/before", 0)  # committed before the watch: not delivered
    it = await watcher.watch("c/")
    try:

        async def task_writer(n: int) -> None:
            for i in range(15):
                await store.update("c/shared", lambda v: (v or 0) + 1, retries=100_000)
                await store.put(f"c/task{n}/{i % 4}", i)
                if writer.transactions and i % 5 == 0:  # numbered inside a transaction
                    await store.batch([Write(f"c/task{n}/x", i), Write(f"c/task{n}/y", i)])
            await store.delete(f"c/task{n}/0")

        processes = [
            await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, url, name, "12")
            for name in ("proc0", "proc1", "proc2")
        ]
        await asyncio.gather(*(task_writer(n) for n in range(4)))
        for process in processes:
            assert await asyncio.wait_for(process.wait(), HANG) == 0
        await store.put(END, "done")
        got = await take_until(it, END)
    finally:
        await it.aclose()  # type: ignore[attr-defined]
        await store.aclose()
    expected = [kv for kv in await stored(watcher, "c/") if kv != ("c/before", 1)]
    assert_once_and_in_order(got, expected)
    shared = [r.version for r in got if r.key == "c/shared"]
    assert shared == list(range(1, 4 * 15 + 3 * 12 + 1))


@pytest.mark.asyncio
async def test_conflicts_and_holes_in_the_numbers_do_not_stall_the_watcher(
    open_backend: Opener, mongo_url: str
) -> None:
    backend = await poll_backend(open_backend, mongo_url, "pollcas")
    store = StateStore(backend, owns_backend=False)
    it = await backend.watch("c/")
    try:
        head = await store.put("c/cas", 0)

        async def racer(i: int, expect: int) -> Record | None:
            try:
                return await store.put("c/cas", i, expect=expect)
            except ConflictError:
                return None

        winners: list[Record] = []
        for _ in range(5):  # each round: six writers expect the same head, one wins
            results = await asyncio.gather(*(racer(i, head.version) for i in range(6)))
            won = [r for r in results if r is not None]
            assert len(won) == 1
            winners += won
            head = won[0]
        # Versions pruned before the watcher looked leave holes in the numbers.
        for i in range(5):
            await store.put("c/pruned", i)
        assert await backend.prune("c/pruned", 5) == 4
        await store.put(END, "done")
        got = await take_until(it, END)
    finally:
        await it.aclose()  # type: ignore[attr-defined]
    assert [(r.key, r.version) for r in got] == [
        ("c/cas", 1),
        *[("c/cas", r.version) for r in winners],
        ("c/pruned", 5),
        (END, 1),
    ]


@pytest.mark.asyncio
async def test_a_write_whose_writer_died_is_delivered(open_backend: Opener, mongo_url: str) -> None:
    """The writer moved the head (the commit) and died before storing the version:
    nobody touches the key again, and the watcher still delivers it (its sweep)."""
    backend = await poll_backend(open_backend, mongo_url, "pollstranded")
    await backend.append([Write("s/k", "v1")], now())
    it = await backend.watch("s/")
    try:
        pending = {
            "ns": backend.namespace,
            "key": "s/k",
            "v": 2,
            "kind": "state",
            "data": '"v2"',
            "meta": "{}",
            "at": 1,
        }
        await backend._heads.update_one(
            {"ns": backend.namespace, "key": "s/k"},
            {"$set": {**pending, "live": True, "pending": pending}},
        )
        got = await take_until(it, "s/k")
    finally:
        await it.aclose()  # type: ignore[attr-defined]
    assert [(r.key, r.version, r.data) for r in got] == [("s/k", 2, "v2")]
    assert [r.version for r in await backend.read("s/k")] == [1, 2]


@pytest.mark.asyncio
async def test_versions_of_an_older_release_do_not_get_in_the_way(
    open_backend: Opener, mongo_url: str
) -> None:
    """Version documents without ``seq`` (the previous release wrote none) are neither
    delivered nor in the way of numbering."""
    backend = await poll_backend(open_backend, mongo_url, "polllegacy")
    old = {"ns": backend.namespace, "kind": "state", "meta": "{}", "at": 1}
    legacy = [{**old, "key": "o/a", "v": v, "data": str(v)} for v in (1, 2)]
    await backend._versions.insert_many([dict(doc) for doc in legacy])
    await backend._heads.insert_one({**legacy[-1], "live": True})
    it = await backend.watch("o/")
    try:
        await backend._versions.insert_one({**old, "key": "o/b", "v": 1, "data": "1"})
        await backend.append([Write("o/a", 3, expect=2)], now())
        await backend.append([Write("o/c", 1)], now())
        got = await take_until(it, "o/c")
    finally:
        await it.aclose()  # type: ignore[attr-defined]
    assert [(r.key, r.version) for r in got] == [("o/a", 3), ("o/c", 1)]
    assert [r.data for r in await backend.read("o/a")] == [1, 2, 3]


@pytest.mark.asyncio
async def test_a_watch_over_a_prefix(open_backend: Opener, mongo_url: str) -> None:
    backend = await poll_backend(open_backend, mongo_url, "pollprefix")
    store = StateStore(backend, owns_backend=False)
    async with store.watch("p/") as under_p, store.watch("") as everything:
        for key in ["p/a", "pa", "q/a", "p/b", "p", "p/a"]:
            await store.put(key, key)
        await store.delete("p/b")
        await store.put("p/~end", 0)
        got = await take_until(under_p, "p/~end")
        assert [(r.key, r.version) for r in got] == [
            ("p/a", 1),
            ("p/b", 1),
            ("p/a", 2),
            ("p/b", 2),
            ("p/~end", 1),
        ]
        assert got[3].deleted
        every = await take_until(everything, "p/~end")
        assert [r.key for r in every] == ["p/a", "pa", "q/a", "p/b", "p", "p/a", "p/b", "p/~end"]


@pytest.mark.asyncio
async def test_watch_mode_is_chosen_at_open_and_reported(
    open_backend: Opener, mongo_url: str
) -> None:
    polled = await open_backend("pollmode", mongo_url + "&watch=poll&poll_interval=0.2")
    assert Capability.WATCH in polled.capabilities
    assert (await polled.health()).detail["watch"] == "polling every 0.2 s"
    assert polled.describe()["watch"] == "polling every 0.2 s"
    auto = await open_backend("pollauto")
    assert Capability.WATCH in auto.capabilities
    if auto.topology == "standalone":
        assert auto.sequenced and auto.describe()["watch"] == "polling every 0.05 s"
        with pytest.raises(ConfigError, match="watch=changestream"):
            await open_or_skip(mongo_url + "&watch=changestream")
    else:
        assert auto.change_streams and not auto.sequenced
        assert (await auto.health()).detail["watch"] == "change streams"
        streamed = await open_backend("pollcs", mongo_url + "&watch=changestream")
        assert streamed.change_streams


@pytest.mark.asyncio
async def test_numbers_start_over_after_drop_namespace(mongo_url: str) -> None:
    url = with_namespace(mongo_url + "&watch=poll", fresh_namespace("pollagain"))
    backend = await open_or_skip(url)
    try:
        await backend.append([Write("k", 1)], now())
        await backend.append([Write("k", 2)], now())
        assert await backend.writer.highest_seq() == 2
        await backend.drop_namespace()
        await backend.append([Write("k", 3)], now())
        assert await backend.writer.highest_seq() == 1
    finally:
        await backend.aclose()
        await drop(url)
