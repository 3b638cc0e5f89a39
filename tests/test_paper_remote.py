"""One paper exchange shared across processes (statekit.testing.paper_remote): every
connector method and control over the wire, errors with their fields, a server that
stops, stalls or is killed mid-call, and several OS processes on one exchange."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from statekit.errors import ConfigError
from statekit.testing.paper_remote import PaperExchangeServer, RemoteExchange
from statekit.trading.errors import (
    ExchangeError,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRejected,
    RateLimited,
)
from statekit.trading.exchange import ExchangeOrder, ExchangePosition
from statekit.trading.models import Balance, OrderSide, OrderStatus, OrderType, TimeInForce
from statekit.trading.paper import Faults, PaperExchange

BUY, SELL = OrderSide.BUY, OrderSide.SELL
MARKET, LIMIT = OrderType.MARKET, OrderType.LIMIT
D = Decimal
PROCESS_WAIT = 120  # seconds: only a hang gets near this
PRICES = {"BTC/USDT": ["100", "90", "80"], "ETH/USDT": ["10", "11"]}
BALANCES = {"USDT": "10000", "BTC": "1"}


def paper(cls: type[PaperExchange] = PaperExchange, **kwargs: Any) -> PaperExchange:
    """BTC/USDT walking 100, 90, 80; ETH/USDT 10, 11; 10,000 USDT and 1 BTC."""
    options: dict[str, Any] = {
        "prices": {s: [D(p) for p in path] for s, path in PRICES.items()},
        "balances": {a: D(b) for a, b in BALANCES.items()},
    }
    return cls(**{**options, **kwargs})


class Gated(PaperExchange):
    """create_order takes effect, says so (``arrived``), then answers only once ``gate`` opens."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrived = asyncio.Event()
        self.gate = asyncio.Event()

    async def create_order(self, *args: Any, **kwargs: Any) -> ExchangeOrder:
        order = await super().create_order(*args, **kwargs)
        self.arrived.set()
        await self.gate.wait()
        return order


class Refusing(PaperExchange):
    """Refuses the balance for its rate limit (saying how long to wait), and positions
    with a plain ExchangeError."""

    async def fetch_balance(self) -> dict[str, Balance]:
        raise RateLimited("slow down", exchange=self.name, retry_after=2.5)

    async def fetch_positions(self, symbols: Sequence[str] | None = None) -> list[ExchangePosition]:
        raise ExchangeError("positions are broken today", exchange=self.name)


class Counting(PaperExchange):
    """Counts the create_order requests that reach it."""

    creates = 0

    async def create_order(self, *args: Any, **kwargs: Any) -> ExchangeOrder:
        self.creates += 1
        return await super().create_order(*args, **kwargs)


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[PaperExchange, RemoteExchange]]:
    exchange = paper()
    async with PaperExchangeServer(exchange) as server, RemoteExchange(server.url) as remote:
        yield exchange, remote


# -- every method, over the wire -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_every_connector_method_round_trips(
    served: tuple[PaperExchange, RemoteExchange],
) -> None:
    ex, remote = served
    market = await remote.create_order("BTC/USDT", MARKET, BUY, D("0.25"), client_order_id="m")
    assert market.status is OrderStatus.FILLED and market.average_price == D(100)
    assert isinstance(market.amount, Decimal) and str(market.amount) == "0.25"  # exact
    resting = await remote.create_order("BTC/USDT", LIMIT, BUY, D(1), D(85), client_order_id="r")
    other = await remote.create_order("ETH/USDT", LIMIT, BUY, D(1), D(5), client_order_id="o")
    ioc = await remote.create_order(
        "ETH/USDT", LIMIT, BUY, D(1), D(5), client_order_id="i", time_in_force=TimeInForce.IOC
    )
    assert ioc.time_in_force is TimeInForce.IOC and ioc.status is OrderStatus.CANCELLED
    assert ex.orders == [market, resting, other, ioc]  # what the exchange holds, field by field

    assert await remote.fetch_order(resting.id, "BTC/USDT") == resting
    assert await remote.fetch_order_by_client_id("r", "BTC/USDT") == resting
    assert await remote.fetch_order_by_client_id("r", "ETH/USDT") is None
    assert await remote.fetch_open_orders() == [resting, other]
    assert await remote.fetch_open_orders("ETH/USDT") == [other]
    cancelled = await remote.cancel_order(other.id, "ETH/USDT")
    assert cancelled.status is OrderStatus.CANCELLED

    await remote.advance(2)  # 80 reaches 85
    assert ex.now == (await remote.fetch_order(resting.id, "BTC/USDT")).updated_at
    positions = await remote.fetch_positions()
    assert [(p.symbol, p.amount) for p in positions] == [("BTC/USDT", D("1.25"))]
    assert positions == await ex.fetch_positions()
    assert await remote.fetch_positions(["ETH/USDT"]) == []
    balance = await remote.fetch_balance()
    assert balance == await ex.fetch_balance()
    assert (balance["BTC"].free, balance["USDT"].locked) == (D("2.25"), D(0))
    fills = await remote.fetch_fills()
    assert fills == ex.fills and len(fills) == 2
    assert await remote.fetch_fills("BTC/USDT", since=1) == fills[1:]
    assert await remote.fetch_fills("ETH/USDT") == []
    assert await remote.orders() == ex.orders
    assert await remote.fills() == ex.fills


@pytest.mark.asyncio
async def test_the_controls_act_on_the_served_exchange(
    served: tuple[PaperExchange, RemoteExchange],
) -> None:
    ex, remote = served
    await remote.advance()
    assert ex.price("BTC/USDT") == D(90)
    await remote.restart()
    assert ex.restarts == 1
    await remote.set_faults(Faults(lost_ack=1.0))
    assert ex.faults == Faults(lost_ack=1.0)
    with pytest.raises(ExchangeUnavailable, match="answer to create_order was lost") as info:
        await remote.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="lost")
    assert info.value.exchange == "paper"
    assert [o.client_order_id for o in await remote.orders()] == ["lost"]  # it took effect
    await remote.set_faults(Faults())
    assert await remote.fetch_order_by_client_id("lost", "BTC/USDT") is not None


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_errors_come_back_with_their_type_and_fields() -> None:
    ex = paper(Refusing, name="sim")
    async with PaperExchangeServer(ex) as server, RemoteExchange(server.url) as remote:
        await remote.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="dup")
        with pytest.raises(OrderRejected, match="sim: duplicate clientOrderId 'dup'") as rejected:
            await remote.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="dup")
        assert type(rejected.value) is OrderRejected and rejected.value.exchange == "sim"
        assert not rejected.value.retryable
        with pytest.raises(OrderRejected, match="time in force 'gtd' is not supported"):
            await remote.create_order(
                "BTC/USDT",
                LIMIT,
                BUY,
                D(1),
                D(90),
                client_order_id="x",
                time_in_force="gtd",  # type: ignore[arg-type]
            )
        with pytest.raises(OrderNotFound, match="no order 'sim-99'") as missing:
            await remote.fetch_order("sim-99", "BTC/USDT")
        assert missing.value.exchange == "sim"
        with pytest.raises(RateLimited, match="slow down") as limited:
            await remote.fetch_balance()
        assert limited.value.retry_after == 2.5 and limited.value.exchange == "sim"
        with pytest.raises(ExchangeError, match="broken today") as failed:
            await remote.fetch_positions()
        assert type(failed.value) is ExchangeError and failed.value.exchange == "sim"
        # A caller's mistake raises what the exchange in this process would raise.
        with pytest.raises(ValueError, match="since must not be negative"):
            await remote.fetch_fills(since=-1)
        with pytest.raises(ValueError, match="steps must not be negative"):
            await remote.advance(-1)
        with pytest.raises(TypeError, match="amount must be a Decimal"):
            await remote.create_order("BTC/USDT", MARKET, BUY, 0.5, client_order_id="f")  # type: ignore[arg-type]
        # The connection survived every error.
        assert [o.client_order_id for o in await remote.orders()] == ["dup"]


@pytest.mark.asyncio
async def test_a_line_that_is_not_a_request_is_answered_with_an_error_and_the_rest_served() -> None:
    async with PaperExchangeServer(paper()) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            for line in (
                b"not json\n",
                b'{"id": 1, "method": "launch_rockets"}\n',
                b'{"id": 2, "method": "fetch_fills", "args": {"colour": "red"}}\n',
                b'{"id": 3, "method": "fetch_fills", "args": {"since": 0}}\n',
            ):
                writer.write(line)
            answers = [json.loads(await reader.readline()) for _ in range(4)]
        finally:
            writer.close()
            await writer.wait_closed()
    assert answers[0] == {"id": None, "error": answers[0]["error"]}
    assert answers[0]["error"]["type"] == "ValueError"
    assert answers[1]["id"] == 1 and "unknown method 'launch_rockets'" in str(answers[1])
    assert answers[2]["id"] == 2 and answers[2]["error"]["type"] == "TypeError"
    assert answers[3] == {"id": 3, "result": []}


@pytest.mark.asyncio
async def test_bad_urls_are_refused_and_no_server_is_unavailable() -> None:
    for url in ("paper://127.0.0.1:1", "paper+tcp://127.0.0.1", "paper+tcp://:80", "x"):
        with pytest.raises(ConfigError, match="paper\\+tcp://HOST:PORT"):
            RemoteExchange(url)
    with pytest.raises(ConfigError, match="timeout"):
        RemoteExchange("paper+tcp://127.0.0.1:1", timeout=0)
    server = PaperExchangeServer(paper())
    await server.start()
    url = server.url
    await server.aclose()  # the port is free again: nothing listens there
    async with RemoteExchange(url) as remote:
        with pytest.raises(ExchangeUnavailable, match="no connection") as info:
            await remote.fetch_balance()
        assert info.value.exchange == "paper" and info.value.retryable


# -- many clients ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_many_clients_on_one_exchange_place_one_order_per_client_order_id() -> None:
    ex = paper()
    async with PaperExchangeServer(ex) as server:
        remotes = [RemoteExchange(server.url) for _ in range(3)]
        try:

            async def place(remote: RemoteExchange) -> ExchangeOrder | OrderRejected:
                try:
                    return await remote.create_order(
                        "BTC/USDT", MARKET, BUY, D(1), client_order_id="same"
                    )
                except OrderRejected as exc:
                    return exc

            results = await asyncio.gather(*(place(r) for r in remotes for _ in range(20)))
            placed = [r for r in results if isinstance(r, ExchangeOrder)]
            assert len(placed) == 1 and [o.id for o in ex.orders] == [placed[0].id]
            refused = [r for r in results if not isinstance(r, ExchangeOrder)]
            assert len(refused) == 59
            assert all("duplicate clientOrderId" in str(r) for r in refused)
            # Concurrent calls on one connection each get their own answer.
            for n in range(10):
                await remotes[0].create_order(
                    "ETH/USDT", MARKET, BUY, D(n + 1), client_order_id=f"e{n}"
                )
            found = await asyncio.gather(
                *(remotes[1].fetch_order_by_client_id(f"e{n}", "ETH/USDT") for n in range(10))
            )
            assert [o.amount if o else None for o in found] == [D(n + 1) for n in range(10)]
        finally:
            for remote in remotes:
                await remote.aclose()


# -- a server that stops, stalls or dies -----------------------------------------------------------


@pytest.mark.asyncio
async def test_a_server_closed_mid_call_is_unavailable_and_one_on_the_same_port_serves_again() -> (
    None
):
    ex = paper(Gated)
    assert isinstance(ex, Gated)
    server = PaperExchangeServer(ex)
    await server.start()
    async with RemoteExchange(server.url) as remote:
        call = asyncio.create_task(
            remote.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="mid")
        )
        await ex.arrived.wait()  # placed; the answer is held
        await server.aclose()
        with pytest.raises(ExchangeUnavailable, match=r"connection lost.*may have taken effect"):
            await call
        assert [o.client_order_id for o in ex.orders] == ["mid"]  # it did take effect
        ex.gate.set()
        async with PaperExchangeServer(ex, port=server.port) as again:
            assert again.url == server.url
            found = await remote.fetch_order_by_client_id("mid", "BTC/USDT")  # reconnects
            assert found is not None and found.status is OrderStatus.FILLED


@pytest.mark.asyncio
async def test_no_answer_within_the_timeout_is_unavailable_and_the_next_call_reconnects() -> None:
    ex = paper(Gated)
    assert isinstance(ex, Gated)
    async with (
        PaperExchangeServer(ex) as server,
        RemoteExchange(server.url, timeout=0.2) as remote,
    ):
        with pytest.raises(ExchangeUnavailable, match=r"no answer to create_order within 0\.2 s"):
            await remote.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="slow")
        assert ex.arrived.is_set()
        ex.gate.set()
        remote.timeout = 60.0  # the calls below must not depend on the machine's speed
        found = await remote.fetch_order_by_client_id("slow", "BTC/USDT")
        assert found is not None and found.client_order_id == "slow"


@contextlib.asynccontextmanager
async def server_process(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``python -m statekit.testing.paper_remote`` with the test prices, and its URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "statekit.testing.paper_remote",
        "--prices-json",
        json.dumps(PRICES),
        "--balances-json",
        json.dumps(BALANCES),
        *args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readline(), PROCESS_WAIT)
        assert first, "the server printed no URL"
        yield process, first.decode().strip()
    finally:
        if process.returncode is None:
            process.kill()
        await process.communicate()


@pytest.mark.asyncio
async def test_a_killed_server_process_gives_unavailable_not_a_hang() -> None:
    async with (
        server_process() as (process, url),
        RemoteExchange(url, timeout=PROCESS_WAIT) as remote,
    ):
        assert "USDT" in await remote.fetch_balance()
        process.send_signal(signal.SIGSTOP)  # it takes the next request, never answers
        call = asyncio.create_task(
            remote.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="k")
        )
        process.kill()
        await process.wait()
        # Not the timeout: the connection's end is noticed at once.
        with pytest.raises(ExchangeUnavailable, match=r"connection lost|no connection"):
            await call
        with pytest.raises(ExchangeUnavailable, match="no connection"):
            await remote.fetch_balance()


# -- the entry point -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_entry_point_serves_its_exchange_until_stdin_ends() -> None:
    options = ["--seed", "3", "--name", "sim", "--max-fill-per-step", "0.5"]
    options += ["--faults-json", json.dumps({"duplicate_fill": 1})]
    async with server_process(*options) as (process, url):
        assert re.fullmatch(r"paper\+tcp://127\.0\.0\.1:\d+", url)
        async with RemoteExchange(url, name="sim") as remote:
            balance = await remote.fetch_balance()
            assert (balance["USDT"].free, balance["BTC"].free) == (D(10_000), D(1))
            order = await remote.create_order(
                "BTC/USDT", LIMIT, BUY, D(1), D(100), client_order_id="a"
            )
            assert order.id == "sim-1" and order.filled == D("0.5")  # max_fill_per_step
            await remote.advance()
            reports = await remote.fetch_fills()  # duplicate_fill=1: the first fill comes twice
            assert [f.amount for f in reports] == [D("0.5"), D("0.5"), D("0.5")]
            assert len({f.id for f in reports}) == 2 and len(await remote.fills()) == 2
        assert process.stdin is not None
        process.stdin.close()
        assert await asyncio.wait_for(process.wait(), PROCESS_WAIT) == 0


@pytest.mark.asyncio
async def test_the_entry_point_stops_on_sigterm() -> None:
    async with server_process("--no-stdin") as (process, url):
        async with RemoteExchange(url) as remote:
            assert await remote.fetch_open_orders() == []
        process.terminate()
        assert await asyncio.wait_for(process.wait(), PROCESS_WAIT) == 0


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--prices-json", "{"], "--prices-json is not JSON"),
        (["--prices-json", '{"BTC/USDT": []}'], "must be non-empty and positive"),
        (["--prices-json", '{"BTC/USDT": ["1"]}', "--faults-json", '{"lost": 1}'], "lost"),
        (["--prices-json", '{"BTC/USDT": ["x"]}'], "is not a number"),
    ],
)
def test_the_entry_point_refuses_bad_arguments_in_one_line(args: list[str], error: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "statekit.testing.paper_remote", *args],
        capture_output=True,
        text=True,
        timeout=PROCESS_WAIT,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and error in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# -- several OS processes on one exchange --------------------------------------------------------

PLACE_ONE = textwrap.dedent(
    """
    import asyncio, sys
    from decimal import Decimal
    from statekit.trading.errors import OrderRejected
    from statekit.trading.models import OrderSide, OrderType
    from statekit.testing.paper_remote import RemoteExchange

    async def main(url):
        async with RemoteExchange(url) as exchange:
            await exchange.fetch_open_orders()  # connected
            print("ready", flush=True)
            sys.stdin.readline()  # every process is ready: go
            try:
                order = await exchange.create_order(
                    "BTC/USDT", OrderType.MARKET, OrderSide.BUY, Decimal(1),
                    client_order_id="same",
                )
                print("accepted", order.id)
            except OrderRejected as exc:
                print("rejected", exc)

    asyncio.run(main(sys.argv[1]))
    """
)


async def run_processes(code: str, args: list[list[str]], *, barrier: bool) -> list[str]:
    """Run ``python -c code`` once per args; with ``barrier``, each prints ``ready`` and waits
    for a line on stdin, sent once all are ready. Returns each one's stdout."""
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            *a,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for a in args
    ]
    try:
        if barrier:
            for process in processes:
                assert process.stdout is not None
                ready = await asyncio.wait_for(process.stdout.readline(), PROCESS_WAIT)
                assert ready == b"ready\n", ready
        outputs = await asyncio.wait_for(
            asyncio.gather(*(p.communicate(b"go\n" if barrier else None) for p in processes)),
            PROCESS_WAIT,
        )
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.communicate()
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err.decode()
    return [out.decode() for out, _ in outputs]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_two_processes_with_one_client_order_id_place_one_order() -> None:
    ex = paper()
    async with PaperExchangeServer(ex) as server:
        outputs = await run_processes(PLACE_ONE, [[server.url]] * 2, barrier=True)
    verdicts = sorted(out.split()[0] for out in outputs)
    assert verdicts == ["accepted", "rejected"], outputs
    assert "duplicate clientOrderId 'same'" in "".join(outputs)
    assert [o.client_order_id for o in ex.orders] == ["same"]


PLACE_THROUGH_LEDGER = textwrap.dedent(
    """
    import asyncio, sys
    from decimal import Decimal
    import statekit
    from statekit.trading.idempotency import IdempotencyLedger, Retry
    from statekit.testing.paper_remote import RemoteExchange

    async def main(ledger_url, exchange_url):
        async with await statekit.open(ledger_url) as store, RemoteExchange(exchange_url) as ex:
            ledger = IdempotencyLedger(
                store, retry=Retry(attempts=4, backoff=0.0, max_backoff=0.0), poll=0.002,
                max_poll=0.02,
            )
            print("ready", flush=True)
            sys.stdin.readline()
            placed = await asyncio.gather(*(
                ledger.place(
                    ex, strategy_id="failover", signal_id="sig-1", symbol="BTC/USDT",
                    side="buy", type="limit", amount=Decimal("0.5"), price=Decimal(95),
                    time_in_force="ioc",
                )
                for _ in range(4)
            ))
            print(" ".join(sorted({p.order.id for p in placed})))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_processes_placing_one_signal_through_the_ledger_send_one_order(
    tmp_path: Path,
) -> None:
    ex = paper(Counting)
    assert isinstance(ex, Counting)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    async with PaperExchangeServer(ex) as server:
        outputs = await run_processes(
            PLACE_THROUGH_LEDGER, [[ledger_url, server.url]] * 2, barrier=True
        )
    [order] = ex.orders
    assert ex.creates == 1
    assert [out.split() for out in outputs] == [[order.id]] * 2
    # The time in force crossed the ledger and the wire: nothing at 95 when the price is 100.
    assert order.time_in_force is TimeInForce.IOC and order.status is OrderStatus.CANCELLED
