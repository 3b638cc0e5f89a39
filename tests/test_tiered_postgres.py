"""The fallback journal against a real PostgreSQL stopped and restarted mid-run."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

import statekit
from statekit.config import Settings
from statekit.testing import server_control, server_url
from statekit.tiered import TieredBackend

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
        drop = getattr(primary, "drop_namespace", None)
        if drop is not None:
            await drop(forget=True)
        await store.aclose()
