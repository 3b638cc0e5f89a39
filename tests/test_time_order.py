"""Time order and time travel in the core: next_at, the default Backend.as_of search,
retention by age, and update() bounded by time rather than by a count."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

import statekit
from statekit import ConflictError, Retention, StateStore
from statekit.backend import MICROSECOND, Backend, Record, next_at
from statekit.backends.memory import MemoryBackend
from statekit.config import Settings
from statekit.errors import CapabilityError
from statekit.testing import server_url
from statekit.testing.history import assert_true_history

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class CountingDefault(MemoryBackend):
    """A backend that keeps the contract's default ``as_of`` (a search over read())."""

    as_of = Backend.as_of

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def read(
        self,
        key: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Record]:
        self.reads += 1
        return await super().read(
            key, after=after, before=before, limit=limit, newest_first=newest_first
        )


@pytest_asyncio.fixture
async def plain() -> AsyncIterator[tuple[StateStore, CountingDefault]]:
    backend = CountingDefault()
    async with StateStore(backend) as store:
        yield store, backend


def test_next_at_is_the_clock_unless_a_previous_at_is_not_before_it() -> None:
    assert next_at(T0, []) == T0
    assert next_at(T0, [None, T0 - MICROSECOND]) == T0
    assert next_at(T0, [T0]) == T0 + MICROSECOND
    assert next_at(T0, [T0 - MICROSECOND, T0 + timedelta(seconds=5), None]) == (
        T0 + timedelta(seconds=5, microseconds=1)
    )


@pytest.mark.asyncio
async def test_default_as_of_is_exact_and_searches(
    plain: tuple[StateStore, CountingDefault],
) -> None:
    store, backend = plain
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for n in range(300):
        if rng.random() < 0.1:
            await store.delete("k")
        else:
            await store.put("k", n)
    await assert_true_history(store, "k", seed=seed)
    backend.reads = 0
    records = await store.history("k", limit=300, newest_first=False)
    backend.reads = 0
    await store.get("k", as_of=records[150].at)
    # About log2(300) + 2 reads, far from the 300 versions a walk would decode.
    assert backend.reads <= 12, f"seed {seed}: {backend.reads} reads"


@pytest.mark.asyncio
async def test_default_as_of_across_gaps_and_prunes(
    plain: tuple[StateStore, CountingDefault],
) -> None:
    _, backend = plain
    copies = [Record("m", v, "state", v, {}, T0 + timedelta(seconds=v)) for v in (3, 4, 8, 13)]
    await backend.replicate(copies)
    assert await backend.as_of(["m"], T0 + timedelta(seconds=2)) == {}
    for record, until in zip(copies, [4, 8, 13, 99], strict=True):
        for second in range(record.version, until):
            found = await backend.as_of(["m"], T0 + timedelta(seconds=second, milliseconds=1))
            assert found == {"m": record}


@pytest.mark.asyncio
async def test_retention_by_age_drops_exactly_what_is_older(
    plain: tuple[StateStore, CountingDefault],
) -> None:
    store, backend = plain
    old = datetime.now(UTC) - timedelta(days=3)
    await backend.replicate(
        [Record("r", v, "state", v, {}, old + timedelta(hours=v)) for v in range(1, 41)]
    )
    # Versions written more than 2 days ago: those at old + 1 h ... + 24 h.
    assert await store.prune("r", Retention(older_than=timedelta(days=2))) == 24
    kept = await store.history("r", limit=100, newest_first=False)
    assert [r.version for r in kept] == list(range(25, 41))
    assert await store.prune("r", Retention(older_than=timedelta(days=30))) == 0
    assert await store.prune("r", Retention(older_than=timedelta(seconds=1))) == 15


@pytest.mark.asyncio
async def test_update_gives_up_after_retry_for_not_after_a_count() -> None:
    async with StateStore(MemoryBackend()) as store:
        await store.put("n", 0)
        calls = 0

        async def interfering(value: object) -> int:
            nonlocal calls
            calls += 1
            await store.put("n", -calls)  # another writer gets in first, every time
            return 1

        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ConflictError):
            await store.update("n", interfering, retry_for=0.3, backoff=0.001, max_backoff=0.01)
        assert loop.time() - started >= 0.25  # it kept trying for the time it was given
        assert calls > 11  # more than the old default count of 10 retries


async def _contend(store: StateStore, tasks: int, each: int) -> None:
    def bump(value: object) -> int:
        assert value is None or isinstance(value, int)
        return (value or 0) + 1

    async def worker() -> None:
        for _ in range(each):
            await store.update("hot", bump)  # the defaults: nothing tuned

    await asyncio.gather(*(worker() for _ in range(tasks)))
    final = await store.get("hot")
    assert final is not None and final.data == tasks * each and final.version == tasks * each


@pytest.mark.asyncio
async def test_update_defaults_hold_with_50_tasks_on_one_sqlite_key(tmp_path: Path) -> None:
    async with await statekit.open(f"sqlite:///{tmp_path}/hot.db", settings=Settings()) as store:
        await _contend(store, tasks=50, each=4)


@pytest.mark.asyncio
async def test_update_defaults_hold_with_50_tasks_on_one_postgres_key() -> None:
    """Measured before: 0-8 % of such calls gave up with the old default (10 retries)."""
    url = f"{server_url('postgres')}?namespace=hot_{uuid.uuid4().hex[:12]}"
    store = await statekit.open(url, settings=Settings())
    try:
        await _contend(store, tasks=50, each=4)
    finally:
        with contextlib.suppress(CapabilityError):  # a backend that cannot drop
            await store.backend.drop_namespace(forget=True)
        await store.aclose()
