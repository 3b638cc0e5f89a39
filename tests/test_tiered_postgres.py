"""The fallback journal against a real PostgreSQL stopped and restarted mid-run."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import uuid
from pathlib import Path

import pytest

import statekit
from statekit.config import Settings
from statekit.errors import BackendUnavailable, CapabilityError
from statekit.testing import server_control, server_url
from statekit.tiered import TieredBackend
from statekit.tiered.unopened import UnopenedPrimary

WRITERS = 10
WRITES = 100  # per writer: 1,000 in all


@pytest.mark.asyncio
async def test_postgres_outage_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """1,000 writes in flight, PostgreSQL stopped part way and restarted: every write
    is in PostgreSQL afterwards, in order, once."""
    base = server_url("postgres")
    control = server_control("postgres")
    url = f"{base}?namespace=fb_{uuid.uuid4().hex[:12]}"
    store = await statekit.open(url, settings=Settings(), fallback=str(tmp_path / "fb.db"))
    backend = store.backend
    assert isinstance(backend, TieredBackend)
    progress = 0
    pending = 0

    async def writer(n: int) -> None:
        nonlocal progress, pending
        for i in range(1, WRITES + 1):
            record = await store.put(f"fb/{n}", {"i": i})
            pending += record.version == 0
            progress += 1
            await asyncio.sleep(0)

    async def outage() -> None:
        while progress < 200:
            await asyncio.sleep(0.005)
        await asyncio.to_thread(control.stop)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(control.start)

    try:
        await asyncio.gather(outage(), *(writer(n) for n in range(WRITERS)))
        assert pending > 0, "the outage should have sent some writes to the journal"
        await asyncio.wait_for(backend.settle(), 120)
        assert await backend.rejected() == []
        for n in range(WRITERS):
            history = await store.history(f"fb/{n}", limit=1000, newest_first=False)
            assert [r.data for r in history] == [{"i": i} for i in range(1, WRITES + 1)]
            assert [r.version for r in history] == list(range(1, WRITES + 1))
    finally:
        primary = backend.primary
        with contextlib.suppress(CapabilityError):  # a backend that cannot drop
            await primary.drop_namespace(forget=True)
        await store.aclose()


DEAD_WRITER = """
import asyncio, sys
import statekit
from statekit.config import Settings

async def main(url, journal):
    store = await statekit.open(url, settings=Settings(), fallback=journal)
    for i in range(1, 51):
        record = await store.put("dead/k", {"i": i})
        assert record.version == 0, record
    print("journaled", flush=True)
    await asyncio.sleep(3600)  # SIGKILLed here, its journal full

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.asyncio
async def test_a_store_opens_while_postgres_is_down_and_replays_when_it_returns(
    tmp_path: Path,
) -> None:
    base = server_url("postgres")
    control = server_control("postgres")
    url = f"{base}?namespace=fb_{uuid.uuid4().hex[:12]}"
    await asyncio.to_thread(control.stop)
    try:
        store = await statekit.open(url, settings=Settings(), fallback=str(tmp_path / "fb.db"))
    finally:
        await asyncio.to_thread(control.start)  # (after the open: it must not need it)
    backend = store.backend
    assert isinstance(backend, TieredBackend)
    try:
        await asyncio.to_thread(control.stop)
        health = await store.health()
        assert health.ok and "degraded" in health.detail
        assert (await store.put("k", 1)).version == 0
        assert (await store.get("k")).data == 1  # type: ignore[union-attr]
        with pytest.raises(BackendUnavailable):
            await store.update("k", lambda v: v + 1)
        await asyncio.to_thread(control.start)
        await asyncio.wait_for(backend.settle(), 60)
        assert not isinstance(backend.primary, UnopenedPrimary)
        assert [r.data for r in await store.history("k")] == [1]
        assert (await store.update("k", lambda v: v + 1)).version == 2
        assert "degraded" not in (await store.health()).detail
    finally:
        await asyncio.to_thread(control.start)
        with contextlib.suppress(CapabilityError):  # a backend that cannot drop
            await backend.primary.drop_namespace(forget=True)
        await store.aclose()


@pytest.mark.asyncio
async def test_the_journal_of_a_killed_process_is_replayed_by_the_next(tmp_path: Path) -> None:
    base = server_url("postgres")
    control = server_control("postgres")
    url = f"{base}?namespace=fb_{uuid.uuid4().hex[:12]}"
    journal = str(tmp_path / "fb.db")
    await asyncio.to_thread(control.stop)
    try:
        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", DEAD_WRITER, url, journal, stdout=asyncio.subprocess.PIPE
        )
        assert writer.stdout is not None
        line = await asyncio.wait_for(writer.stdout.readline(), 120)
        assert line.strip() == b"journaled"
        writer.send_signal(signal.SIGKILL)
        await writer.wait()
    finally:
        await asyncio.to_thread(control.start)
    store = await statekit.open(url, settings=Settings(), fallback=journal)
    try:
        backend = store.backend
        assert isinstance(backend, TieredBackend)
        await asyncio.wait_for(backend.settle(), 60)
        history = await store.history("dead/k", newest_first=False, limit=100)
        assert [r.data for r in history] == [{"i": i} for i in range(1, 51)]
        assert await backend.rejected() == []
    finally:
        with contextlib.suppress(CapabilityError):  # a backend that cannot drop
            await store.backend.origin.drop_namespace(forget=True)
        await store.aclose()
