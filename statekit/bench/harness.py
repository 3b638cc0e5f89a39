"""The measuring harness every benchmark shares, built-in and plugin alike.

A benchmark is a :data:`BenchRunner`: an async generator that opens what it needs,
builds :class:`Workload` pairs (statekit beside the same work by hand) and yields
``await measure(...)`` for each. :class:`Plan` hands out the keys and values so
every backend is timed the same way; :func:`server_url` finds the server a server
backend measures against. This module imports nothing above the store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from statekit.backend import JSON, Backend
from statekit.errors import CapabilityError, StatekitError

__all__ = [
    "DEFAULT_N",
    "DEFAULT_ROUNDS",
    "DEFAULT_VERSIONS",
    "BatchFn",
    "BenchConfig",
    "BenchRunner",
    "Plan",
    "PutFn",
    "Result",
    "Timed",
    "Workload",
    "measure",
    "positive",
    "sample_value",
    "server_url",
]

DEFAULT_N = 1000
DEFAULT_ROUNDS = 7
DEFAULT_VERSIONS = 100_000

Timed = Callable[[], Awaitable[float]]
"""Runs one round of a workload and returns the seconds it took."""

Result = dict[str, JSON]
"""One output line."""


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to run.

    :param n: writes per round, per runner and per workload.
    :param rounds: timed rounds per runner; the median is reported.
    :param directory: where database files go (a fresh folder inside it, removed after).
    :param keys: how many distinct keys the writes rotate over, so versions grow.
    :param batch_size: writes per transaction in the ``batch`` workload.
    :param url: the server a server backend measures against (``--url``); its
        benchmark uses a namespace of its own there and removes it afterwards.
    :param writers: concurrent writers in a ``concurrent`` workload.
    :param versions: versions of the long history in the ``history`` benchmark.
    :param isolated: bots of the ``bots`` benchmark each in a namespace of its own.
    :param shared: bots of the ``bots`` benchmark sharing one namespace.
    :param seconds: how long the ``bots`` benchmark runs each phase.
    """

    n: int = DEFAULT_N
    rounds: int = DEFAULT_ROUNDS
    directory: Path | None = None
    keys: int = 100
    batch_size: int = 100
    url: str | None = None
    writers: int = 8
    versions: int = DEFAULT_VERSIONS
    isolated: int = 8
    shared: int = 8
    seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class Workload:
    """One measured pair: the same work through statekit and by hand.

    :param name: the workload's name in the output (``put``, ``batch``).
    :param ops: writes done by one round of any runner.
    :param statekit: one round through statekit.
    :param raw: one round written directly against the driver, on the calling thread.
    :param references: more runners to time in the same rounds, reported as
        ``<name>_ops_s`` and ``ratio_vs_<name>``.
    :param detail: extra facts for the output line (durability, batch size...).
    """

    name: str
    ops: int
    statekit: Timed
    raw: Timed
    references: Mapping[str, Timed] = field(default_factory=dict)
    detail: Mapping[str, JSON] = field(default_factory=dict)


BenchRunner = Callable[[BenchConfig, Path], AsyncGenerator[Result, None]]
"""A backend's benchmark: given the config and a scratch folder, yields one result
per workload (from :func:`measure`) and closes what it opened when it finishes."""


async def measure(backend: str, workload: Workload, rounds: int) -> Result:
    """Time ``workload`` in ``rounds`` interleaved rounds; the result line, with medians."""
    runners = {"raw": workload.raw, **workload.references, "statekit": workload.statekit}
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, timed in runners.items():
            seconds[name].append(await timed())
    rate = {name: workload.ops / statistics.median(s) for name, s in seconds.items()}
    result: Result = {
        "backend": backend,
        "workload": workload.name,
        "n": workload.ops,
        "rounds": rounds,
        "statekit_ops_s": round(rate["statekit"], 1),
        "raw_ops_s": round(rate["raw"], 1),
        "ratio": round(rate["statekit"] / rate["raw"], 3),
        "statekit_us_op": round(1e6 / rate["statekit"], 1),
        "raw_us_op": round(1e6 / rate["raw"], 1),
    }
    for name in workload.references:
        result[f"{name}_ops_s"] = round(rate[name], 1)
        result[f"{name}_us_op"] = round(1e6 / rate[name], 1)
        result[f"ratio_vs_{name}"] = round(rate["statekit"] / rate[name], 3)
    result.update(workload.detail)
    result["python"] = platform.python_version()
    result["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return result


PutFn = Callable[[str, JSON], Awaitable[object]]
"""Writes one key (``store.put``, or a raw driver's equivalent)."""
BatchFn = Callable[[list[tuple[str, JSON]]], Awaitable[object]]
"""Writes several keys at once."""


class Plan:
    """The keys and values every runner of one benchmark draws from.

    Each call hands out fresh values over the same keys, so versions grow as
    they do in real use, and builds the timed rounds every backend measures
    the same way: sequential puts, batches, concurrent writers.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        self._next = 0

    def items(self, count: int, among: Sequence[str] | None = None) -> list[tuple[str, JSON]]:
        """The next ``count`` (key, value) pairs, keys cycling over ``among`` (or all keys)."""
        pool = among or self.keys
        start, self._next = self._next, self._next + count
        return [(pool[i % len(pool)], sample_value(i)) for i in range(start, start + count)]

    def puts(self, count: int, put: PutFn) -> Timed:
        """A round of ``count`` sequential ``put`` calls."""

        async def run() -> float:
            items = self.items(count)
            started = time.perf_counter()
            for key, value in items:
                await put(key, value)
            return time.perf_counter() - started

        return run

    def batches(self, groups: int, among: Sequence[str], batch: BatchFn) -> Timed:
        """A round of ``groups`` calls of ``batch``, each with one value per key of ``among``."""

        async def run() -> float:
            work = [self.items(len(among), among) for _ in range(groups)]
            started = time.perf_counter()
            for group in work:
                await batch(group)
            return time.perf_counter() - started

        return run

    def writers(self, per_writer: int, puts: Sequence[PutFn]) -> Timed:
        """A round of one task per ``puts`` entry, each writing ``per_writer`` values
        to keys of its own (the writers contend for the store, not for one key)."""
        count = len(puts)
        own = [
            [k for i, k in enumerate(self.keys) if i % count == w] or self.keys
            for w in range(count)
        ]

        async def run() -> float:
            work = [self.items(per_writer, own[w]) for w in range(count)]

            async def writer(put: PutFn, items: list[tuple[str, JSON]]) -> None:
                for key, value in items:
                    await put(key, value)

            started = time.perf_counter()
            await asyncio.gather(*(writer(p, w) for p, w in zip(puts, work, strict=True)))
            return time.perf_counter() - started

        return run


def sample_value(i: int) -> dict[str, JSON]:
    """A small state value, like a position, that changes with ``i``."""
    return {"symbol": "BTC-USD", "qty": i, "avg_price": 64250.5, "side": "long", "open": True}


def server_url(config: BenchConfig, name: str) -> str:
    """The server a server backend's benchmark uses: ``--url``, else the test server's
    ``STATEKIT_TEST_<NAME>_URL`` (``make bench`` starts it)."""
    url = config.url or os.environ.get(f"STATEKIT_TEST_{name.upper()}_URL")
    if not url:
        raise StatekitError(f"the {name} benchmark needs a server: pass --url, or run `make bench`")
    return url


async def drop_namespace(backend: Backend) -> None:
    """Remove what a run wrote, where the backend can (``Backend.drop_namespace``)."""
    with contextlib.suppress(CapabilityError):
        await backend.drop_namespace(forget=True)


def positive(text: str) -> int:
    """An ``argparse`` type for the benchmarks' counts: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def count(text: str) -> int:
    """An ``argparse`` type for a count that may be 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def duration(text: str) -> float:
    """An ``argparse`` type for seconds: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
    return value
