"""A watcher and a backend ride out a MariaDB restart (scripts/servers.sh's own server)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from statekit.errors import BackendUnavailable
from statekit.kit import CommitFollower
from statekit.store import StateStore
from statekit.testing import server_control

from .conftest import drop, open_or_skip


@pytest.mark.asyncio
async def test_a_watcher_waits_out_a_server_restart(namespaced: Callable[..., str]) -> None:
    server = server_control("mariadb")  # skips before anything is opened
    url = namespaced()
    backend = await open_or_skip(url)
    store = StateStore(backend, owns_backend=False)
    changes = await backend.watch("")
    try:
        assert isinstance(changes, CommitFollower)
        await store.put("before", 1)
        assert (await asyncio.wait_for(anext(changes), 10)).key == "before"
        waiting = asyncio.create_task(anext(changes))
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(0.3)  # the watcher polls a server that is away
        await asyncio.to_thread(server.start)
        for _ in range(300):
            try:
                await store.put("after", 2)
                break
            except BackendUnavailable:
                await asyncio.sleep(0.1)
        got = await asyncio.wait_for(waiting, 30)
        assert (got.key, got.version) == ("after", 1)
        assert changes.reconnects >= 1
        with pytest.raises(TimeoutError):  # nothing twice
            await asyncio.wait_for(anext(changes), 0.5)
    finally:
        await changes.aclose()  # type: ignore[attr-defined]
        await backend.aclose()
        await drop(url)
