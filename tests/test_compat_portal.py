"""The sync portal under the legacy drop-in: results, errors, threads, loops, closing."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
from pathlib import Path

import pytest

from statekit.compat import Portal, TradingStateManager, UnifiedStateManager
from statekit.config import load_settings
from statekit.errors import StatekitError

pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py


@pytest.fixture
def portal() -> object:
    with Portal() as p:
        yield p


async def add(a: int, b: int, *, times: int = 1) -> int:
    await asyncio.sleep(0)
    return (a + b) * times


class Boom(Exception):
    pass


async def boom() -> None:
    raise Boom("inside")


def test_call_returns_the_result(portal: Portal) -> None:
    assert portal.call(add, 2, 3) == 5
    assert portal.call(add, 2, 3, times=2) == 10


def test_call_runs_on_the_portal_thread_not_the_callers(portal: Portal) -> None:
    async def where() -> str:
        return threading.current_thread().name

    assert portal.call(where) == "statekit-portal"
    assert threading.current_thread().name != "statekit-portal"


def test_an_exception_comes_back_unchanged(portal: Portal) -> None:
    with pytest.raises(Boom, match="inside"):
        portal.call(boom)
    assert portal.call(add, 1, 1) == 2  # the portal still works afterwards


def test_the_loop_keeps_state_between_calls(portal: Portal) -> None:
    async def loop_id() -> int:
        return id(asyncio.get_running_loop())

    assert portal.call(loop_id) == portal.call(loop_id)


def test_call_from_inside_a_running_event_loop() -> None:
    async def main(p: Portal) -> int:
        # sync code called from async code: blocks this loop, runs on the portal's
        return p.call(add, 20, 22)

    with Portal() as p:
        assert asyncio.run(main(p)) == 42


def test_many_threads_share_one_portal(portal: Portal) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(20):
            value = portal.call(add, n, i)
            with lock:
                results.append(value)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(n + i for n in range(8) for i in range(20))


def test_a_call_from_the_portal_thread_is_refused_not_deadlocked(portal: Portal) -> None:
    async def reenter() -> int:
        return portal.call(add, 1, 2)

    with pytest.raises(StatekitError, match="wait for itself forever"):
        portal.call(reenter)


def test_close_is_idempotent_and_ends_the_thread() -> None:
    p = Portal(name="statekit-test-portal")
    assert any(t.name == "statekit-test-portal" for t in threading.enumerate())
    p.close()
    p.close()
    assert p.closed
    assert not any(t.name == "statekit-test-portal" for t in threading.enumerate())
    with pytest.raises(StatekitError, match="closed"):
        p.call(add, 1, 2)


def test_closing_cancels_a_call_in_flight() -> None:
    p = Portal()
    started = threading.Event()
    outcome: list[BaseException] = []

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    def caller() -> None:
        try:
            p.call(forever)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    assert started.wait(10)
    p.close()
    thread.join(10)
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], StatekitError)
    assert "closed while it ran" in str(outcome[0])


def test_an_interrupted_caller_cancels_its_call(portal: Portal) -> None:
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def interrupt() -> None:  # Ctrl-C while the main thread waits for the call
        assert started.wait(10)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        portal.call(forever)
    assert cancelled.wait(10)
    assert portal.call(add, 1, 2) == 3  # the portal still serves


def test_a_function_giving_no_awaitable_fails_its_call_only(portal: Portal) -> None:
    with pytest.raises(TypeError):
        portal.call(lambda: 1)  # type: ignore[arg-type, return-value]
    assert portal.call(add, 2, 2) == 4


# -- the managers' portals ---------------------------------------------------------------------


def test_each_manager_has_its_own_portal_and_shutdown_closes_it(tmp_path: Path) -> None:
    one = UnifiedStateManager(legacy_state_path=tmp_path / "a.json")
    two = UnifiedStateManager(legacy_state_path=tmp_path / "b.json")
    one.initialize()
    two.initialize()
    first, second = one._connection()[0], two._connection()[0]
    assert first is not second
    one.shutdown()
    two.shutdown()
    assert first.closed and second.closed


def test_a_manager_opens_again_after_shutdown(tmp_path: Path) -> None:
    manager = UnifiedStateManager(legacy_state_path=tmp_path / "state.json")
    assert manager.save_trading_state({"EURUSD": {"q": 1}}, {})
    manager.shutdown()
    loaded = manager.load_trading_state()
    assert loaded is not None
    assert loaded["active_positions"] == {"EURUSD": {"q": 1}}
    manager.shutdown()


def test_a_manager_never_shut_down_is_closed_when_collected(tmp_path: Path) -> None:
    manager = TradingStateManager(tmp_path / "state.json")
    assert manager.save_trading_state({"EURUSD": {"q": 1}}, {})
    portal = manager._connection()[0]
    del manager
    gc.collect()
    assert portal.closed


def test_a_manager_works_from_async_code(tmp_path: Path) -> None:
    manager = TradingStateManager(tmp_path / "state.json")

    async def bot() -> dict[str, object] | None:
        assert manager.save_trading_state({"EURUSD": {"q": 2}}, {"EURUSD": {"cooldown": 0}})
        return manager.load_trading_state()

    try:
        loaded = asyncio.run(bot())
    finally:
        manager.close()
    assert loaded is not None
    assert loaded["pair_states"] == {"EURUSD": {"cooldown": 0}}


def test_threads_saving_through_one_manager_never_half_save(tmp_path: Path) -> None:
    manager = TradingStateManager(tmp_path / "state.json")
    outcomes: list[bool] = []

    def save(n: int) -> None:
        state = {f"S{n}-{i}": {"n": n} for i in range(5)}
        outcomes.append(manager.save_trading_state(state, state))

    threads = [threading.Thread(target=save, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    loaded = manager.load_trading_state()
    manager.shutdown()
    assert all(outcomes)
    assert loaded is not None
    # whole states replace each other: the survivor is one save's, never a mix
    owners = {data["n"] for data in loaded["active_positions"].values()}
    assert len(owners) == 1
    assert len(loaded["active_positions"]) == 5
    assert loaded["active_positions"] == loaded["pair_states"]


def test_settings_are_the_managers_own_copy(tmp_path: Path) -> None:
    settings = load_settings(config_file="", env_file="")
    manager = UnifiedStateManager(legacy_state_path=tmp_path / "s.json", settings=settings)
    manager.config.cache.ttl_seconds = 600
    assert settings.cache.ttl_seconds == 300
    assert manager.config.database.sqlite_path == str(tmp_path / "s.statekit.db")
