"""Group commit: appends queued while one flush runs share the next flush, each still whole."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from statekit_file import FileBackend

import statekit
from statekit.errors import ConflictError, StatekitError


def _journal_lines(store_dir: Path) -> list[str]:
    (journal,) = store_dir.glob("journal-*.jsonl")
    return journal.read_text().splitlines()


async def _queued(backend: FileBackend, count: int) -> None:
    """Wait until ``count`` appends are queued behind the group with the worker."""
    while len(backend._queued) < count:
        await asyncio.sleep(0)


async def _hold_worker(backend: FileBackend) -> threading.Event:
    """Keep the backend's worker busy until the returned event is set."""
    release, busy = threading.Event(), threading.Event()

    def wait() -> None:
        busy.set()
        release.wait()

    backend._worker.submit(wait)
    await asyncio.to_thread(busy.wait)
    return release


@pytest.mark.asyncio
async def test_queued_appends_share_one_flush_and_keep_their_own_lines(
    store_dir: Path, store_url: str
) -> None:
    async with await statekit.open(store_url) as store:
        backend = store.backend
        assert isinstance(backend, FileBackend)
        await store.put("position/0", {"qty": 0})
        release = await _hold_worker(backend)
        puts = [asyncio.ensure_future(store.put(f"position/{i}", {"qty": i})) for i in range(20)]
        await _queued(backend, 19)  # the first is with the worker; 19 wait for one flush
        release.set()
        records = await asyncio.gather(*puts)
        assert [r.version for r in records] == [2] + [1] * 19
        lines = _journal_lines(store_dir)
        assert len(lines) == 21  # one line per append, seq in order
        assert [int(line.split(",")[0].removeprefix('{"seq":')) for line in lines] == list(
            range(1, 22)
        )
    async with await statekit.open(store_url) as store:  # read back from the files
        for i in range(20):
            assert (await store.get(f"position/{i}")).data == {"qty": i}


@pytest.mark.asyncio
async def test_a_conflict_in_a_group_fails_only_its_own_append(store_url: str) -> None:
    async with await statekit.open(store_url) as store:
        backend = store.backend
        assert isinstance(backend, FileBackend)
        release = await _hold_worker(backend)
        # Ten tasks create the same order at once; one wins, nine conflict, in one group.
        creates = [
            asyncio.ensure_future(store.put("order/1", {"by": n}, expect=0)) for n in range(10)
        ]
        other = asyncio.ensure_future(store.put("order/2", {"by": "other"}))
        await _queued(backend, 10)
        release.set()
        outcomes = await asyncio.gather(*creates, other, return_exceptions=True)
        won = [o for o in outcomes[:10] if not isinstance(o, BaseException)]
        lost = [o for o in outcomes[:10] if isinstance(o, BaseException)]
        assert len(won) == 1 and len(lost) == 9
        assert all(isinstance(e, ConflictError) for e in lost)
        assert (await store.get("order/1")).data == {"by": 0}  # the first in the group wins
        assert (await store.get("order/2")).data == {"by": "other"}
        assert [r.version for r in await store.history("order/1")] == [1]


@pytest.mark.asyncio
async def test_an_append_cancelled_before_its_group_starts_commits_nothing(
    store_url: str,
) -> None:
    async with await statekit.open(store_url) as store:
        backend = store.backend
        assert isinstance(backend, FileBackend)
        release = await _hold_worker(backend)
        kept = asyncio.ensure_future(store.put("position/kept", {"qty": 1}))
        dropped = asyncio.ensure_future(store.put("position/dropped", {"qty": 1}))
        await _queued(backend, 1)
        dropped.cancel()
        release.set()
        await kept
        with pytest.raises(asyncio.CancelledError):
            await dropped
        assert await store.get("position/dropped") is None
        assert (await store.get("position/kept")).data == {"qty": 1}


@pytest.mark.asyncio
async def test_appends_queued_at_close_still_commit_and_later_ones_fail(store_url: str) -> None:
    store = await statekit.open(store_url)
    backend = store.backend
    assert isinstance(backend, FileBackend)
    await store.put("position/1", {"qty": 1})
    release = await _hold_worker(backend)
    first = asyncio.ensure_future(store.put("position/1", {"qty": 2}))
    second = asyncio.ensure_future(store.put("position/1", {"qty": 3}))
    await _queued(backend, 1)  # ``first`` is with the worker, ``second`` waits
    closing = asyncio.ensure_future(backend.aclose())
    await asyncio.sleep(0)
    release.set()
    await closing
    assert (await first).version == 2
    # Queued before the close began: its group goes to the worker before the close.
    assert (await second).version == 3
    with pytest.raises(StatekitError, match="closed"):
        await backend.append([], datetime.now(UTC))
    async with await statekit.open(store_url) as again:
        assert (await again.get("position/1")).data == {"qty": 3}
    await store.aclose()
