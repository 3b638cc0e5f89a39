"""Time travel against history length: ``python -m statekit.bench history [--url URL]``.

``get(key, as_of=t)`` must be a lookup, not a walk (docs/concepts.md): its cost may
grow with the logarithm of a key's history, never with its length. This benchmark
fills one key with ``--versions`` versions (default 100,000) and another with 100,
then times, on both, in interleaved rounds:

- ``as_of``: ``store.get(key, as_of=t)`` at times spread over the key's history;
- ``oldest_page``: ``store.history(key, newest_first=False, limit=100)``, the first
  page of the history, and ``page_before``: the same page read newest first
  (``before=101``), as a user paging back through history reaches it;
- ``trading_load_as_of``: ``TradingState.load(as_of=t)`` of 3 positions whose keys
  (and the state's index key) have that many versions each.

Each line reports both costs and ``growth`` = cost at ``--versions`` / cost at 100;
the target is ``growth <= 2``. The other side of the ratio is statekit itself on a
short history, measured in the same run on the same store: what a growing history
adds is the question, and a flat line is the answer a lookup gives.

The URL defaults to a SQLite file in a scratch folder; a server URL (``postgresql://``,
``redis://``, ``mongodb://``) gets a namespace of its own, dropped afterwards.
Histories are filled through the contract (``replicate`` where the backend can be a
mirror, else ``batch``/``put``): filling is not what is measured.
"""

from __future__ import annotations

import functools
import random
import statistics
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import statekit
from statekit.backend import JSON, Record, Write
from statekit.bench.harness import BenchConfig, Result, drop_namespace
from statekit.errors import CapabilityError
from statekit.store import StateStore
from statekit.trading import kinds
from statekit.trading.models import Position
from statekit.trading.state import INDEX_KEY, TradingState

__all__ = ["SHORT", "TARGET", "bench_history"]

SHORT = 100
"""Versions of the short history every cost is compared with."""
TARGET = 2.0
"""The most a history of ``--versions`` may cost over one of :data:`SHORT` versions."""
CALLS = 50
"""Calls per timed round of each workload."""
SYMBOLS = ("EURUSD", "BTCUSDT", "ETHUSDT")
_SCHEMES_WITH_NAMESPACES = ("postgresql", "postgres", "redis", "rediss", "mongodb")


def _with_namespace(url: str, namespace: str) -> str:
    base, _, query = url.partition("?")
    pairs = [(n, v) for n, v in parse_qsl(query, keep_blank_values=True) if n != "namespace"]
    return f"{base}?{urlencode([*pairs, ('namespace', namespace)])}"


async def _fill(store: StateStore, writes: Callable[[int], list[Write]], count: int) -> None:
    """Give the keys of ``writes(i)`` ``count`` versions: one atomic batch per ``i``.

    Through ``replicate`` when the backend can take whole records (fast, and the
    versions' times rise by a millisecond each), else through ``batch``/``put``.
    """
    backend = store.backend
    start = datetime.now(UTC) - timedelta(milliseconds=count + 1)
    chunk: list[Record] = []
    try:
        for i in range(count):
            at = start + timedelta(milliseconds=i)
            chunk += [Record(w.key, i + 1, w.kind, w.data, {}, at) for w in writes(i)]
            if len(chunk) >= 5_000 or i == count - 1:
                await backend.replicate(chunk)
                chunk = []
        return
    except CapabilityError:
        pass  # not a mirror: write the versions one batch at a time
    for i in range(count):
        batch = writes(i)
        if len(batch) == 1:
            await store.put(batch[0].key, batch[0].data, kind=batch[0].kind)
        else:
            await store.batch(batch)


def _one_key(key: str, i: int) -> list[Write]:
    return [Write(key, {"i": i, "px": 64250.5})]


def _positions(state: TradingState) -> Callable[[int], list[Write]]:
    """The versions ``state.save(positions=...)`` writes: each position and the index."""
    keys: list[JSON] = [*sorted(state.positions.key(symbol) for symbol in SYMBOLS)]
    index: JSON = {"keys": keys}

    def writes(i: int) -> list[Write]:
        items = [state.positions.item(Position(symbol=s, amount=Decimal(i))) for s in SYMBOLS]
        return [
            *(Write(key, item.data, item.kind) for key, item in items),
            Write(state.prefix + INDEX_KEY, index, kinds.INDEX),
        ]

    return writes


async def _times(store: StateStore, key: str) -> list[datetime]:
    """Times spread over ``key``'s history (between its second and its last version)."""
    oldest = await store.history(key, limit=2, newest_first=False)
    newest = await store.history(key, limit=1)
    low, high = oldest[-1].at, newest[0].at
    rng = random.Random(7)
    return [low + (high - low) * rng.random() for _ in range(CALLS)]


async def _timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    for _ in range(CALLS):
        await call()
    return (time.perf_counter() - started) / CALLS


async def _compare(
    name: str,
    rounds: int,
    short: Callable[[], Awaitable[object]],
    long: Callable[[], Awaitable[object]],
) -> dict[str, JSON]:
    costs: dict[str, list[float]] = {"short": [], "long": []}
    for _ in range(rounds):  # interleaved: machine noise lands on both
        costs["short"].append(await _timed(short))
        costs["long"].append(await _timed(long))
    short_s, long_s = statistics.median(costs["short"]), statistics.median(costs["long"])
    growth = long_s / short_s
    return {
        "workload": name,
        "short_us_op": round(short_s * 1e6, 1),
        "long_us_op": round(long_s * 1e6, 1),
        "growth": round(growth, 3),
        "target": TARGET,
        "met": growth <= TARGET,
    }


def _cycle(calls: Sequence[Callable[[], Awaitable[object]]]) -> Callable[[], Awaitable[object]]:
    """One call after another from ``calls``, round and round."""
    state = {"next": 0}

    def call() -> Awaitable[object]:
        chosen = calls[state["next"] % len(calls)]
        state["next"] += 1
        return chosen()

    return call


async def bench_history(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """The growth of ``as_of``, history pages and ``load(as_of=)`` with history length.

    ``config.versions`` is the long history's length, ``config.url`` the store
    (default: SQLite in ``scratch``).
    """
    versions = config.versions
    url = config.url or f"sqlite:///{scratch / 'history.db'}"
    scheme = urlsplit(url).scheme
    if scheme in _SCHEMES_WITH_NAMESPACES:
        url = _with_namespace(url, f"bench_history_{uuid.uuid4().hex[:12]}")
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(await statekit.open(url))
        stack.push_async_callback(drop_namespace, store.backend)
        started = time.perf_counter()
        for key, count in (("hist/short", SHORT), ("hist/long", versions)):
            await _fill(store, functools.partial(_one_key, key), count)
        short_state = TradingState(store, prefix="short/")
        long_state = TradingState(store, prefix="long/")
        for state, count in ((short_state, SHORT), (long_state, versions)):
            await _fill(store, _positions(state), count)
        filled_s = time.perf_counter() - started
        detail: dict[str, JSON] = {
            "backend": store.backend.name,
            "short_versions": SHORT,
            "long_versions": versions,
            "calls": CALLS,
            "rounds": config.rounds,
            "fill_s": round(filled_s, 1),
        }

        def as_of(key: str, times: list[datetime]) -> Callable[[], Awaitable[object]]:
            return _cycle([functools.partial(store.get, key, as_of=t) for t in times])

        short_times = await _times(store, "hist/short")
        long_times = await _times(store, "hist/long")
        yield {
            **detail,
            **await _compare(
                "as_of",
                config.rounds,
                as_of("hist/short", short_times),
                as_of("hist/long", long_times),
            ),
        }
        yield {
            **detail,
            **await _compare(
                "oldest_page",
                config.rounds,
                lambda: store.history("hist/short", newest_first=False, limit=100),
                lambda: store.history("hist/long", newest_first=False, limit=100),
            ),
        }
        yield {
            **detail,
            **await _compare(
                "page_before",
                config.rounds,
                lambda: store.history("hist/short", before=SHORT + 1, limit=SHORT),
                lambda: store.history("hist/long", before=SHORT + 1, limit=SHORT),
            ),
        }
        short_load = await _times(store, "short/" + INDEX_KEY)
        long_load = await _times(store, "long/" + INDEX_KEY)
        yield {
            **detail,
            **await _compare(
                "trading_load_as_of",
                config.rounds,
                _cycle([functools.partial(short_state.load, as_of=t) for t in short_load]),
                _cycle([functools.partial(long_state.load, as_of=t) for t in long_load]),
            ),
        }
