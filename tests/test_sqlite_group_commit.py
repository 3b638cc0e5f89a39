"""SQLite group commit: concurrent appends share a transaction, never a fate.

Each append of a group runs in a savepoint of its own, so one that fails (a
compare-and-set conflict) is undone alone; every append is acknowledged only after
its group's COMMIT (fsync'd: synchronous=FULL), so a process killed mid-group loses
no acknowledged write.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import statekit
from statekit.backend import Write
from statekit.backends.sqlite import SqliteBackend
from statekit.errors import ConflictError
from statekit.worker import Gathered, Outcome, Worker


@pytest.mark.asyncio
async def test_items_submitted_in_one_turn_run_as_one_group() -> None:
    worker = Worker("test-gathered")
    groups: list[list[int]] = []

    def run(items: list[int]) -> list[Outcome]:
        groups.append(items)
        return [(None, ValueError(i)) if i == 2 else (i * 10, None) for i in items]

    gathered: Gathered[int] = Gathered(worker, run)
    try:
        results = await asyncio.gather(
            *(gathered.submit(i) for i in range(5)), return_exceptions=True
        )
        assert groups == [[0, 1, 2, 3, 4]]
        assert results[:2] == [0, 10] and results[3:] == [30, 40]
        assert isinstance(results[2], ValueError)
        # While a group runs, the next callers wait and then go together.
        first = gathered.submit(5)
        await asyncio.sleep(0)  # the group of [5] is handed to the worker
        later = [gathered.submit(i) for i in range(6, 9)]
        assert await asyncio.gather(first, *later) == [50, 60, 70, 80]
        assert groups[1:] == [[5], [6, 7, 8]]
        await gathered.close(lambda: RuntimeError("closed"))
        with pytest.raises(RuntimeError, match="closed"):
            await gathered.submit(9)
    finally:
        worker.stop()


@pytest.mark.asyncio
async def test_a_conflict_in_the_middle_of_a_group_fails_alone(tmp_path: Path) -> None:
    async with await statekit.open(f"sqlite:///{tmp_path}/g.db") as store:
        await store.put("a", 0)
        await store.put("b", 0)
        await store.put("x", 0)
        # One turn: the five appends reach the writer as one group.
        results = await asyncio.gather(
            store.put("a", 1, expect=1),
            store.put("b", 1, expect=7),  # stale: b is at version 1
            store.batch([Write("c", 1), Write("x", 1, expect=5)]),  # stale, all or nothing
            store.put("d", 1, expect=0),
            store.put("a", 2, expect=2),  # sees the first append of its own group
            return_exceptions=True,
        )
        a1, b, batch, d, a2 = results
        assert isinstance(b, ConflictError) and b.key == "b"
        assert isinstance(batch, ConflictError) and batch.key == "x"
        assert not isinstance(a1, BaseException) and a1.version == 2
        assert not isinstance(d, BaseException) and d.version == 1
        assert not isinstance(a2, BaseException) and a2.version == 3
        assert [r.data for r in await store.history("a", newest_first=False)] == [0, 1, 2]
        assert [r.data for r in await store.history("b")] == [0]
        assert await store.get("c") is None
        assert [r.data for r in await store.history("x")] == [0]
        assert (await store.get("d")) is not None


@pytest.mark.asyncio
async def test_concurrent_tasks_lose_no_update_and_keep_versions_in_order(
    tmp_path: Path,
) -> None:
    async with await statekit.open(f"sqlite:///{tmp_path}/c.db") as store:
        await store.put("counter", 0)

        async def writer(task: int) -> None:
            for i in range(40):
                await store.put(f"own/{task}", {"i": i})
                await store.update("counter", lambda n: int(n) + 1)

        await asyncio.gather(*(writer(t) for t in range(16)))
        counter = await store.get("counter")
        assert counter is not None and counter.data == 16 * 40
        for task in range(16):
            history = await store.history(f"own/{task}", newest_first=False, limit=1000)
            assert [r.version for r in history] == list(range(1, 41))
            assert [r.data for r in history] == [{"i": i} for i in range(40)]
            times = [r.at for r in history]
            assert times == sorted(times)


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    import statekit

    async def main(url):
        async with await statekit.open(url) as store:
            async def task(t):
                i = 0
                while True:
                    record = await store.put(f"k/{t}", {"i": i})
                    print(f"ack k/{t} {record.version} {i}", flush=True)
                    i += 1
            print("ready", flush=True)
            await asyncio.gather(*(task(t) for t in range(16)))

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.asyncio
async def test_sigkill_mid_group_loses_no_acknowledged_write(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/killed.db"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WRITER, url, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    acked: list[tuple[str, int, int]] = []
    try:
        async with asyncio.timeout(120):
            while len(acked) < 2000:
                line = (await process.stdout.readline()).decode()
                assert line, "the writer ended early"
                if line.startswith("ack "):
                    _, key, version, i = line.split()
                    acked.append((key, int(version), int(i)))
        process.send_signal(signal.SIGKILL)  # while its tasks are mid-group
        rest, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    for line in rest.decode().splitlines():  # acknowledged before the kill, read after
        if line.startswith("ack "):
            _, key, version, i = line.split()
            acked.append((key, int(version), int(i)))
    assert process.returncode == -signal.SIGKILL
    backend = await SqliteBackend.open(url)
    async with statekit.StateStore(backend) as store:
        for key, version, i in acked:
            (record,) = await store.history(key, after=version - 1, limit=1, newest_first=False)
            assert (record.version, record.data) == (version, {"i": i}), key
