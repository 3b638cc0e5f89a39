"""The conformance suite's tests across processes, reopening, closing and restarts
(mixed into :class:`~statekit.testing.BackendContract`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

import pytest

from statekit.backend import ANY, JSON, Capability, Write
from statekit.errors import BackendError, BackendUnavailable, StatekitError
from statekit.store import StateStore
from statekit.testing import _workers
from statekit.testing._capabilities import needs
from statekit.testing._guard import GuardedBackend
from statekit.testing._pool import lined_up

__all__ = ["DurabilityContract", "ServerControl"]


class ServerControl(Protocol):
    """What the restart test needs from a server fixture."""

    def stop(self) -> None: ...

    def start(self) -> None: ...


PROCESSES = 4
INCREMENTS_PER_PROCESS = 500


def _bump(value: JSON) -> JSON:
    assert value is None or isinstance(value, int)
    return (value or 0) + 1


class DurabilityContract:
    """Several processes on one store, reopening it, a closed backend, a server restart."""

    increments_per_process: int = INCREMENTS_PER_PROCESS
    """``update()`` increments each of the :data:`PROCESSES` processes makes in
    ``test_concurrent_processes_never_lose_an_update``; lower it for a test server that
    is slow by nature (one that is not what users run), and say why."""

    @pytest.mark.asyncio
    async def test_concurrent_processes_never_lose_an_update(
        self, store: StateStore, backend_url: str | None
    ) -> None:
        """4 processes x 500 update() increments of one key end at exactly 2000
        (``increments_per_process`` sets the 500).

        A backend that only lives inside one process (``backend_url`` is None)
        runs the same load as 4 tasks.
        """
        needs(store, Capability.COMPARE_AND_SET)
        if backend_url is None:

            async def worker() -> None:
                for _ in range(self.increments_per_process):
                    await store.update("shared", _bump)

            await asyncio.gather(*(worker() for _ in range(PROCESSES)))
        else:
            pool, start_at = await lined_up(PROCESSES)
            futures = [
                asyncio.wrap_future(
                    pool.submit(
                        _workers.increment,
                        backend_url,
                        "shared",
                        self.increments_per_process,
                        start_at,
                    )
                )
                for _ in range(PROCESSES)
            ]
            done = await asyncio.gather(*futures)
            assert sum(done) == PROCESSES * self.increments_per_process
        final = await store.get("shared")
        total = PROCESSES * self.increments_per_process
        assert final is not None and final.data == total and final.version == total
        if Capability.HISTORY in store.capabilities:
            versions = [
                r.version
                for r in await store.history("shared", limit=total + 10, newest_first=False)
            ]
            assert versions == list(range(1, total + 1))

    @pytest.mark.asyncio
    async def test_durable_data_survives_reopening(
        self, store: StateStore, backend_url: str | None
    ) -> None:
        if Capability.DURABLE not in store.capabilities or backend_url is None:
            pytest.skip(f"{store.backend.name} is not durable or has no URL to reopen")
        import statekit

        await store.put("durable", {"kept": True})
        async with await statekit.open(backend_url) as again:
            got = await again.get("durable")
            assert got is not None and got.data == {"kept": True}

    # -- errors ----------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_a_closed_backend_raises_statekit_errors_only(
        self, store: StateStore, guarded: GuardedBackend
    ) -> None:
        await store.put("k", 1)
        await guarded.aclose()
        await guarded.aclose()  # twice is harmless
        calls: list[Awaitable[object]] = [
            guarded.append([Write("k", 2)], datetime.now(UTC)),
            guarded.latest(["k"]),
            guarded.read("k"),
            guarded.prune("k", 1),
            guarded.health(),
        ]
        for call in calls:
            with pytest.raises(BackendError):
                await call
        with pytest.raises(StatekitError):
            async for _ in guarded.scan():
                pass

    @pytest.mark.asyncio
    async def test_server_restart_mid_run(
        self, store: StateStore, server: ServerControl | None
    ) -> None:
        """While the server is down calls fail with BackendUnavailable (retryable);
        once it is back they work again by themselves, and no partial write shows."""
        if server is None:
            pytest.skip(f"{store.backend.name} has no server to restart here")
        await store.put("restart/a", 1)
        await asyncio.to_thread(server.stop)
        try:
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: store.put("restart/a", 2),
                lambda: store.get("restart/a"),
            ]
            if Capability.ATOMIC_BATCH in store.capabilities:
                calls.append(lambda: store.batch([Write("restart/a", 3), Write("restart/b", 3)]))
            else:
                calls.append(lambda: store.put("restart/b", 3))
            for call in calls:
                with pytest.raises(BackendUnavailable) as err:
                    await call()
                assert err.value.retryable
        finally:
            await asyncio.to_thread(server.start)
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                head = await store.get("restart/a")
                break
            except BackendUnavailable:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.1)
        assert head is not None and (head.version, head.data) == (1, 1)
        assert await store.get("restart/b") is None
        cas = Capability.COMPARE_AND_SET in store.capabilities
        again = await store.put("restart/a", 4, expect=1 if cas else ANY)
        assert again.version == 2
