"""Sharded reconcilers across OS processes: kill an owner, a standby takes its shards.

The intents are split into hash shards (``ShardedEngines``, one engine and one
fenced lease per shard). Owner processes each run their shards; a standby process
waits on every shard's lease. All of them share a store (SQLite file or a fresh
PostgreSQL namespace) and one paper exchange served over TCP by this test's
process. While the strategy keeps amending intents and adding new ones, one owner
is killed with SIGKILL in the middle of its work. The lease records (sampled as
the test runs: renewals prune the lease key's history) are the judge of the
takeover: each of the dead owner's shards passes to a standby after the owner's
lease ran out and no later than the ttl (plus slack) after its last renewal, and
no lease changes hands before it ran out. The exchange's record is the judge of
the orders: no client order id twice, exactly one open order per intent matching
its latest spec. At the end every shard's lease has a live holder.

``make test`` runs a CI size (3 shards, 2 owners, 1 standby, a few dozen intents) on
PostgreSQL; ``make soak`` (``STATEKIT_SOAK=1``) runs 8 shards over 4 owners and 2
standbys with 600 intents, on PostgreSQL and SQLite, and then kills the standby that
took over too: the other standby takes its shards. ``STATEKIT_SHARDS_SEED`` replays
a seed; every assertion prints it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing
import os
import random
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

import statekit
from statekit.errors import ValidationError
from statekit.store import StateStore
from statekit.testing.paper_remote import PaperExchangeServer, RemoteExchange
from statekit.trading import OrderSide, PaperExchange
from statekit.trading.leases import Lease, LeaseState
from statekit.trading.reconcile import (
    Condition,
    IntentSpec,
    IntentStore,
    ShardedEngines,
    parse_shards,
    shard_holders,
    shard_scope,
    shard_scopes,
)

from .conftest import assert_one_open_order_per_intent

pytestmark = pytest.mark.asyncio

D = Decimal
SOAK = os.environ.get("STATEKIT_SOAK", "").strip() not in {"", "0"}


@dataclass(frozen=True)
class Size:
    shards: int
    owners: tuple[tuple[int, ...], ...]
    """The shards each owner process takes; the first one is killed."""
    standbys: int
    intents: int
    rounds: int
    """Strategy changes (amends, every tenth a new intent)."""


SIZE = (
    Size(8, ((0, 1), (2, 3), (4, 5), (6, 7)), 2, 600, 400)
    if SOAK
    else Size(3, ((0, 1), (2,)), 1, 24, 40)
)
LEASE_TTL = 2.0 if SOAK else 1.0
"""The soak runs 6 processes on a 2-core machine: a live owner's renewal may come late."""
SLACK = 5.0
"""Seconds past the ttl a standby may take to notice an expired lease (its poll is a
tenth of the ttl; the rest is a busy 2-core machine): a hang guard, not a speed check."""
PATIENCE = 180.0


@pytest.fixture(params=["postgres", "sqlite"] if SOAK else ["postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """``store_url`` (tests/conftest.py): a store that several processes share. The gate
    runs PostgreSQL only (its seconds are counted); the soak adds a SQLite file
    (tests/test_reconcile_failover.py holds one scope to the same on SQLite in the gate)."""
    return str(request.param)


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("STATEKIT_SHARDS_SEED") or random.randrange(2**31))
    print(f"STATEKIT_SHARDS_SEED={value}")
    return value


def _symbols(count: int, per_shard: int = 2) -> list[str]:
    """``per_shard`` symbols in each of ``count`` shards."""
    found: dict[int, list[str]] = {i: [] for i in range(count)}
    n = 0
    while any(len(s) < per_shard for s in found.values()):
        symbol = f"S{n:03d}/USDT"
        shard = next(i for i in range(count) if shard_scope(i, count).includes(symbol))
        if len(found[shard]) < per_shard:
            found[shard].append(symbol)
        n += 1
    return [s for i in range(count) for s in found[i]]


def _process_main(
    store_url: str, exchange_url: str, owner: str, own: tuple[int, ...], shards: int, ready: Any
) -> None:
    asyncio.run(_run_process(store_url, exchange_url, owner, own, shards, ready))


async def _run_process(
    store_url: str, exchange_url: str, owner: str, own: tuple[int, ...], shards: int, ready: Any
) -> None:
    """Run the shards until killed; ``ready`` is set once the engines contend."""
    async with await statekit.open(store_url) as store:
        engines = ShardedEngines(
            store,
            RemoteExchange(exchange_url),
            shards=shards,
            own=own,
            standby=not own,
            grace=0.0,  # the owners hold their shards before a standby starts
            owner=owner,
            lease_ttl=LEASE_TTL,
            resync=0.05,
            workers=4,
        )
        running = asyncio.create_task(engines.run())
        await asyncio.sleep(0.05)  # the engines' first acquire attempts
        ready.set()
        await running  # until killed


async def _until(check: object, what: str, seed: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    while not await check():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"seed {seed}: gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def _owners_of(store: StateStore, shards: int) -> dict[int, str | None]:
    """Each shard's live holder's label (None: free)."""
    holders = await shard_holders(store, shards)
    return {i: None if h is None else h.owner for i, h in holders.items()}


async def _owners(store: StateStore) -> dict[int, str | None]:
    return await _owners_of(store, SIZE.shards)


class _LeaseLog:
    """Every state of every shard's lease seen while the test runs (sampled every 20
    ms: the lease key's own history is pruned to its last versions by renewals)."""

    def __init__(self, store: StateStore, shards: int) -> None:
        self.leases = [Lease(store, f"reconcile-{s.name}", ttl=1.0) for s in shard_scopes(shards)]
        self.seen: dict[int, list[LeaseState]] = {i: [] for i in range(shards)}

        self._sampling = asyncio.Lock()

    async def sample(self) -> None:
        """Read every lease once (one sweep at a time: the states stay in order)."""
        async with self._sampling:
            for index, lease in enumerate(self.leases):
                state = await lease.current()
                seen = self.seen[index]
                if state is not None and (not seen or seen[-1] != state):
                    seen.append(state)

    async def run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(0.02)

    def check_takeovers(self, shards: Sequence[int], victim: str, seed: int) -> None:
        """Each of ``shards`` went from ``victim`` (killed) to another standby after the
        victim's lease ran out, within the ttl (plus slack) of its last renewal."""
        for shard in shards:
            seen = self.seen[shard]
            index = next(
                i
                for i in range(1, len(seen))
                if seen[i - 1].owner == victim and seen[i].owner != victim
            )
            last, taken = seen[index - 1], seen[index]
            since_renewal = taken.acquired_at - (last.expires_at - timedelta(seconds=last.ttl))
            print(f"shard {shard}: {taken.owner} took it {since_renewal} after the last renewal")
            assert taken.owner.startswith("standby"), (
                f"seed {seed}: shard {shard} went from {victim} to {taken.owner}"
            )
            assert taken.acquired_at >= last.expires_at, (
                f"seed {seed}: shard {shard} was taken before {victim}'s lease ran out"
            )
            assert since_renewal <= timedelta(seconds=LEASE_TTL + SLACK), (
                f"seed {seed}: shard {shard} taken {since_renewal} after the last renewal"
            )

    def check_no_early_takeover(self, seed: int) -> None:
        """No lease of any shard changed hands before it ran out."""
        for shard, seen in self.seen.items():
            for before, after in itertools.pairwise(seen):
                if after.holder != before.holder:
                    assert after.acquired_at >= before.expires_at, (
                        f"seed {seed}: shard {shard}: {after.owner} took the lease of "
                        f"{before.owner} before it ran out"
                    )
                    print(f"shard {shard}: {before.owner} -> {after.owner}")


async def _kill_a_standby(
    store: StateStore, standbys: Sequence[BaseProcess], shard: int, log: _LeaseLog, seed: int
) -> None:
    """SIGKILL the standby holding ``shard``; another standby takes all it held."""
    held = await _owners(store)
    victim = held[shard] or ""
    taken = [i for i, label in held.items() if label == victim]
    process = standbys[int(victim.removeprefix("standby"))]
    process.kill()
    process.join()

    async def moved() -> bool:
        now = await _owners(store)
        return all((now[i] or victim).startswith("standby") and now[i] != victim for i in taken)

    await _until(moved, f"another standby to take the shards of {victim}", seed)
    await log.sample()
    log.check_takeovers(taken, victim, seed)


async def _strategy(
    intents: IntentStore, symbols: Sequence[str], rng: random.Random, *, kill: BaseProcess
) -> None:
    """Amend intents (every tenth round: a new one); SIGKILL ``kill`` halfway."""
    count = SIZE.intents
    for round_ in range(SIZE.rounds):
        if round_ % 10 == 9:
            symbol = symbols[rng.randrange(len(symbols))]
            spec = IntentSpec(symbol=symbol, side=OrderSide.BUY, amount=D(1), price=D(45))
            await intents.create(f"i{count}", spec)
            count += 1
        else:
            intent_id = f"i{rng.randrange(count)}"
            await intents.update(intent_id, price=D(40 + rng.randrange(50)))
        if round_ == SIZE.rounds // 2:
            kill.kill()  # SIGKILL: no release, no cleanup, maybe mid-placement
        await asyncio.sleep(rng.uniform(0, 0.02))
    kill.join()


async def _converged(intents: IntentStore, paper: PaperExchange) -> bool:
    wanted = {i.id: i for i in await intents.all()}
    statuses = await intents.statuses()
    if sum(1 for o in paper.orders if not o.status.final) != len(wanted):
        return False
    return all(
        (s := statuses.get(i.id)) is not None and s.observed_generation == i.generation
        for i in wanted.values()
    )


async def _check_orders(intents: IntentStore, paper: PaperExchange, seed: int) -> None:
    await assert_one_open_order_per_intent(intents, paper.orders, f"seed {seed}: ")


async def test_killed_shard_owner_is_replaced_by_the_standby(store_url: str, seed: int) -> None:
    rng = random.Random(seed)
    symbols = _symbols(SIZE.shards)
    paper = PaperExchange(prices={s: [D(100)] for s in symbols}, balances={"USDT": D(10**9)})
    spawn = multiprocessing.get_context("spawn")
    killed_shards = SIZE.owners[0]
    async with PaperExchangeServer(paper) as server, await statekit.open(store_url) as store:
        intents = IntentStore(store)
        for n in range(SIZE.intents):
            spec = IntentSpec(
                symbol=symbols[n % len(symbols)], side=OrderSide.BUY, amount=D(1), price=D(50)
            )
            await intents.create(f"i{n}", spec)

        readies: list[Any] = []

        def process(owner: str, own: tuple[int, ...]) -> BaseProcess:
            readies.append(spawn.Event())
            args = (store_url, server.url, owner, own, SIZE.shards, readies[-1])
            return spawn.Process(target=_process_main, args=args)

        owners = [process(f"owner{n}", own) for n, own in enumerate(SIZE.owners)]
        standbys = [process(f"standby{n}", ()) for n in range(SIZE.standbys)]
        log = _LeaseLog(store, SIZE.shards)
        sampling = asyncio.create_task(log.run())
        try:
            for p in owners:
                p.start()

            async def owners_lead() -> bool:
                held = await _owners(store)
                return (
                    all(held[i] == f"owner{n}" for n, own in enumerate(SIZE.owners) for i in own)
                    and len(paper.orders) >= SIZE.intents // 2
                )

            await _until(owners_lead, "the owners to take their shards and place orders", seed)
            for p in standbys:
                p.start()
            for ready in readies:  # the standbys contend before owner0 dies
                await asyncio.get_running_loop().run_in_executor(None, ready.wait, PATIENCE)
            await _strategy(intents, symbols, rng, kill=owners[0])

            async def standby_took_over() -> bool:
                held = await _owners(store)
                return all((held[i] or "").startswith("standby") for i in killed_shards)

            await _until(standby_took_over, "a standby to take the dead owner's shards", seed)
            await log.sample()  # what standby_took_over saw is in the log too
            log.check_takeovers(killed_shards, "owner0", seed)
            if len(standbys) > 1:  # the soak: kill the standby that took over, too
                await _kill_a_standby(store, standbys, killed_shards[0], log, seed)

            await _until(lambda: _converged(intents, paper), "the shards to converge", seed)
            held = await shard_holders(store, SIZE.shards, now=datetime.now(UTC))
            await log.sample()
        finally:
            sampling.cancel()
            for p in owners + standbys:
                if p.is_alive():
                    p.kill()
                if p.pid is not None:
                    p.join()

        assert all(h is not None for h in held.values()), f"seed {seed}: unowned shard: {held}"
        log.check_no_early_takeover(seed)
        await _check_orders(intents, paper, seed)


async def test_every_symbol_is_in_exactly_one_shard() -> None:
    for count in (1, 2, 3, 8):
        scopes = shard_scopes(count)
        for n in range(500):
            symbol = f"X{n}/USDT"
            assert sum(s.includes(symbol) for s in scopes) == 1
    assert parse_shards("0, 2", 3) == [0, 2]
    for bad in ("3", "0,0", "a", ""):
        with pytest.raises(ValidationError):
            parse_shards(bad, 3)
    with pytest.raises(ValidationError):
        ShardedEngines(None, None, shards=2)  # type: ignore[arg-type]


async def test_each_shard_places_only_its_own_intents() -> None:
    symbols = _symbols(2, per_shard=3)
    paper = PaperExchange(prices={s: [D(100)] for s in symbols}, balances={"USDT": D(10**9)})
    async with await statekit.open("memory://") as store:
        intents = IntentStore(store)
        for n, symbol in enumerate(symbols):
            await intents.create(
                f"i{n}", IntentSpec(symbol=symbol, side=OrderSide.BUY, amount=D(1), price=D(50))
            )
        first = ShardedEngines(store, paper, shards=2, own=[0], lease_ttl=5.0)
        reports = await first.converge()
        placed = {o.symbol for o in paper.orders}
        assert placed == {s for s in symbols if shard_scope(0, 2).includes(s)}
        assert list(reports) == [0] and reports[0].in_sync
        second = ShardedEngines(store, paper, shards=2, own=[1], lease_ttl=5.0)
        await second.converge()
        assert sorted(o.symbol for o in paper.orders) == sorted(symbols)
        await first.aclose()
        await second.aclose()


def _statekit(*args: str) -> list[str]:
    return [sys.executable, "-c", "from statekit.cli import main; main()", *args]


async def test_cli_run_owns_its_shards_and_releases_them_on_sigterm(tmp_path: Path) -> None:
    """``statekit reconcile run --shards 2 --own 0,1``: both shards converge under the
    process's leases; SIGTERM stops it with exit 0 and the leases released."""
    symbols = _symbols(2, per_shard=1)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    async with await statekit.open(url) as store:
        intents = IntentStore(store)
        for n, symbol in enumerate(symbols):
            spec = IntentSpec(symbol=symbol, side=OrderSide.BUY, amount=D(1), price=D(50))
            await intents.create(f"i{n}", spec)
        prices = json.dumps({s: ["100"] for s in symbols})
        args = ["--url", url, "reconcile", "run", "--connector", "paper"]
        args += ["--option", f"prices={prices}", "--option", 'balances={"USDT": "100000"}']
        args += ["--shards", "2", "--own", "0,1", "--lease-ttl", "2", "--owner", "cli"]
        process = await asyncio.create_subprocess_exec(
            *_statekit(*args), stderr=asyncio.subprocess.PIPE
        )
        try:

            async def in_sync() -> bool:
                held = await _owners_of(store, 2)
                statuses = await intents.statuses()
                return held == {0: "cli", 1: "cli"} and all(
                    (s := statuses.get(f"i{n}")) is not None and s.condition is Condition.IN_SYNC
                    for n in range(len(symbols))
                )

            await _until(in_sync, "reconcile run to converge both shards", 0)
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), PATIENCE)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0, stderr.decode()
        assert "2 shard(s), this process owns [0, 1]" in stderr.decode()
        assert await _owners_of(store, 2) == {0: None, 1: None}  # released


async def test_cli_run_refuses_bad_shards_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from statekit.cli import app

    url = f"sqlite:///{tmp_path / 'state.db'}"
    async with await statekit.open(url):
        pass
    for bad, fragment in (
        (["--shards", "2", "--own", "2"], "not an index from 0 to 1"),
        (["--shards", "3"], "give --own I,J, --standby, or both"),
    ):
        args = ["--url", url, "reconcile", "run", "--connector", "paper", *bad]
        result = await asyncio.to_thread(CliRunner().invoke, app, args)
        assert result.exit_code == 1, result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]


async def test_bench_shards_is_one_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m statekit.bench shards ...`` reaches the bench's own options; the soak
    also runs it at a tiny size on SQLite (4 s of processes) and reads its JSON line."""
    from statekit.bench.cli import main

    with pytest.raises(SystemExit) as refused:
        await asyncio.to_thread(main, ["shards", "--processes", "1,1"])
    assert refused.value.code == 2
    assert "each once" in capsys.readouterr().err
    if not SOAK:
        return
    args = ["shards", "--intents", "8", "--symbols", "4", "--processes", "1,2"]
    assert await asyncio.to_thread(main, [*args, "--dir", str(tmp_path)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert set(line["seconds"]) == {"1", "2"} and "t1/t2" in line["scaling"]


async def test_owner_first_then_the_standby_on_a_clean_stop() -> None:
    """Started together, the owner takes its shards (the standby waits its grace);
    when the owner stops it releases them and the standby takes both at once."""
    symbols = _symbols(2, per_shard=1)
    paper = PaperExchange(prices={s: [D(100)] for s in symbols}, balances={"USDT": D(10**9)})
    async with await statekit.open("memory://") as store:
        for n, symbol in enumerate(symbols):
            spec = IntentSpec(symbol=symbol, side=OrderSide.BUY, amount=D(1), price=D(50))
            await IntentStore(store).create(f"i{n}", spec)
        options: dict[str, Any] = {"shards": 2, "lease_ttl": 30.0, "resync": 0.05}
        standby = ShardedEngines(store, paper, standby=True, owner="standby", grace=0.2, **options)
        owner = ShardedEngines(store, paper, own=[0, 1], owner="owner", **options)
        stop_owner, stop_standby = asyncio.Event(), asyncio.Event()
        tasks = [
            asyncio.create_task(standby.run(stop_standby)),
            asyncio.create_task(owner.run(stop_owner)),
        ]
        try:

            async def owned_by(label: str) -> bool:
                return set((await _owners_of(store, 2)).values()) == {label}

            await _until(lambda: owned_by("owner"), "the owner to take both shards", 0)
            await asyncio.sleep(0.4)  # past the standby's grace: it contends now
            assert await owned_by("owner") and standby.held() == []
            stop_owner.set()  # a clean stop releases: no ttl (30 s) to wait out
            await _until(lambda: owned_by("standby"), "the standby to take both shards", 0)
            assert sorted(standby.held()) == [0, 1]
        finally:
            stop_owner.set()
            stop_standby.set()
            await asyncio.gather(*tasks)
        assert len(paper.orders) == len(symbols)  # placed once, by the owner
