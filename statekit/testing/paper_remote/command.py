"""``python -m statekit.testing.paper_remote``: serve one paper exchange in its own process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from statekit.testing.paper_remote.protocol import number
from statekit.testing.paper_remote.server import PaperExchangeServer
from statekit.trading.paper import Faults, PaperExchange

__all__ = ["main"]


def _decimals(text: str, what: str) -> Any:
    try:
        return json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except ValueError as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from None


def _exchange(args: argparse.Namespace) -> PaperExchange:
    prices = _decimals(args.prices_json, "--prices-json")
    balances = _decimals(args.balances_json, "--balances-json")
    faults = json.loads(args.faults_json)
    if not isinstance(prices, dict) or not all(isinstance(p, list) for p in prices.values()):
        raise ValueError('--prices-json is {"SYMBOL": ["price", ...], ...}')
    if not isinstance(balances, dict):
        raise ValueError('--balances-json is {"ASSET": "amount", ...}')
    if not isinstance(faults, dict):
        raise ValueError('--faults-json is {"lost_ack": 0.1, ...}')
    return PaperExchange(
        prices={
            symbol: [number(p, f"a price of {symbol}") for p in path]
            for symbol, path in prices.items()
        },
        balances={asset: number(b, f"the balance of {asset}") for asset, b in balances.items()},
        seed=args.seed,
        faults=Faults(**faults),
        name=args.name,
        max_fill_per_step=None
        if args.max_fill_per_step is None
        else number(args.max_fill_per_step, "--max-fill-per-step"),
    )


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    # os.read, not sys.stdin: a daemon thread blocked in a buffered read can
    # hold its lock at interpreter shutdown.
    with contextlib.suppress(OSError):
        while os.read(0, 65536):
            pass
    with contextlib.suppress(RuntimeError):  # the loop is gone: we are exiting anyway
        loop.call_soon_threadsafe(stop.set)


async def _serve(exchange: PaperExchange, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with PaperExchangeServer(exchange, args.host, args.port) as server:
        print(server.url, flush=True)
        if not args.no_stdin:
            threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a paper exchange until SIGTERM, SIGINT or the end of stdin; print its URL first."""
    parser = argparse.ArgumentParser(
        prog="python -m statekit.testing.paper_remote",
        description="Serve one paper exchange to RemoteExchange clients in other processes. "
        "Prints the URL (paper+tcp://HOST:PORT) on the first line of stdout.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    parser.add_argument(
        "--prices-json", required=True, help='price paths: {"BTC/USDT": ["100", "101"]}'
    )
    parser.add_argument("--balances-json", default="{}", help='{"USDT": "1000"}')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--faults-json", default="{}", help='Faults: {"lost_ack": 0.1}')
    parser.add_argument("--max-fill-per-step", default=None)
    parser.add_argument("--name", default="paper", help="the exchange's name (order ids, errors)")
    parser.add_argument(
        "--no-stdin", action="store_true", help="serve until a signal only, not until stdin ends"
    )
    args = parser.parse_args(argv)
    try:
        exchange = _exchange(args)
    except (ValueError, TypeError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(exchange, args))
    except OSError as exc:  # the port is taken, the host unknown...
        print(
            f"{parser.prog}: error: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0
