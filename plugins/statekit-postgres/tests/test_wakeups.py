"""Which appends carry a NOTIFY, and the wake-ups sent after the last commit of a burst
(pure logic: the send is a list append, no server)."""

from __future__ import annotations

import asyncio

import pytest
from statekit_postgres.wakeups import Wakeups

from statekit.errors import BackendUnavailable


@pytest.mark.asyncio
async def test_one_notify_per_interval_and_a_trailing_one_after_a_burst() -> None:
    sent: list[int] = []
    wakeups = Wakeups(lambda: _record(sent), interval=0.05)
    first = wakeups.begin()
    assert first[1]  # idle: the first append carries one
    burst = [wakeups.begin() for _ in range(20)]
    assert not any(carry for _, carry in burst)  # within the interval: quiet
    wakeups.committed(*first)
    for ticket in burst:
        wakeups.committed(*ticket)
    await wakeups.flush()
    assert len(sent) == 1  # the quiet commits got one wake-up, after they returned
    assert (wakeups.carried, wakeups.alone) == (1, 1)


@pytest.mark.asyncio
async def test_a_carrying_append_started_after_a_quiet_commit_covers_it() -> None:
    sent: list[int] = []
    wakeups = Wakeups(lambda: _record(sent), interval=10)
    wakeups.committed(*wakeups.begin())  # carried
    quiet = wakeups.begin()
    assert not quiet[1]
    wakeups.committed(*quiet)  # quiet: a wake-up is owed
    wakeups.interval = 0  # so the next append carries one, started after `quiet` returned
    later = wakeups.begin()
    assert later[1]
    wakeups.committed(*later)
    await wakeups.flush()
    assert sent == []  # none needed on its own


@pytest.mark.asyncio
async def test_a_failed_wake_up_is_not_retried_and_flush_returns() -> None:
    async def fail() -> None:
        raise BackendUnavailable("down", backend="postgresql")

    wakeups = Wakeups(fail, interval=0.01)
    wakeups.committed(*wakeups.begin())
    wakeups.committed(*wakeups.begin())
    await asyncio.wait_for(wakeups.flush(), 5)
    assert wakeups.alone == 0


async def _record(sent: list[int]) -> None:
    sent.append(1)
