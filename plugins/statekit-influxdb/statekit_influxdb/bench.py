"""``python -m statekit.bench --backend influxdb``: statekit next to the same HTTP by hand.

Each workload runs statekit and a hand-written aiohttp program in one process, in
interleaved rounds (:func:`statekit.bench.measure`), on the same server, each side
in a namespace of its own (both dropped afterwards):

- ``put``: ``store.put(key, value)`` vs :class:`RawInflux`, a versioned history a user
  writes by hand (a measurement of its own: the key a tag, version and JSON value
  fields): ``POST /query`` of the key's last version, then ``POST /write`` of one point
  with version + 1.
- ``replicate``: ``backend.replicate()`` of 1,000 records (what a tiered store's
  mirror does) vs the same 1,000 versions as the raw side's points in one ``POST /write``.

Both lines print ``durability``: what a crash keeps once a write is answered.

The server is the one of ``--url`` or ``STATEKIT_TEST_INFLUXDB_URL`` (``make bench``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

import statekit
from statekit.backend import JSON, Record
from statekit.bench import BenchConfig, Plan, Result, Workload, measure, sample_value, server_url
from statekit_influxdb.backend import InfluxBackend
from statekit_influxdb.options import parse_url, with_options

__all__ = ["REPLICATE_BATCH", "RawInflux", "bench"]

REPLICATE_BATCH = 1000
"""Records per ``replicate`` call (and per raw ``/write``)."""


def _field(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RawInflux:
    """A versioned key-value history written by hand with aiohttp, as a user would.

    A measurement of its own (``bench_raw_<run>``), the key as a tag, the version and
    the JSON value as fields, the write's time in ns as the point's time. A put reads
    the key's last version (``SELECT LAST("version")``, the key as a bound parameter)
    and writes one point with version + 1: the same value, version and history point
    per write as statekit keeps, none of statekit's fields (kind, meta, deleted), tags
    or timestamp layout. ``drop()`` removes the measurement.
    """

    def __init__(self, session: aiohttp.ClientSession, url: str, measurement: str) -> None:
        options = parse_url(url)
        self.session = session
        self.write_url = f"{options.base_url}/write"
        self.query_url = f"{options.base_url}/query"
        self.write_params = {"db": options.database, "precision": "ns"}
        self.query_params = {"db": options.database, "epoch": "ns"}
        self.measurement = measurement
        self.database = options.database

    async def create_database(self) -> None:
        """``CREATE DATABASE`` (a no-op when it exists), as a user's program does first:
        on a fresh server nothing has made it yet."""
        async with self.session.post(
            self.query_url, data={"q": f'CREATE DATABASE "{self.database}"'}
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"raw influxdb CREATE DATABASE: HTTP {response.status}")

    async def query(self, q: str, **params: JSON) -> list[list[Any]]:
        """The rows of the first series of ``q`` (empty when there is none)."""
        data = {"q": q, "params": json.dumps(params)}
        async with self.session.post(self.query_url, params=self.query_params, data=data) as r:
            reply = json.loads(await r.text())
        if r.status != 200 or "error" in reply["results"][0]:
            raise RuntimeError(f"raw influxdb query: HTTP {r.status}: {reply}")
        series = reply["results"][0].get("series")
        return list(series[0]["values"]) if series else []

    async def head_version(self, key: str) -> int:
        rows = await self.query(
            f'SELECT LAST("version") FROM "{self.measurement}" WHERE "key" = $key', key=key
        )
        return int(rows[0][1]) if rows else 0

    def line(self, key: str, version: int, value: JSON, ns: int) -> str:
        text = json.dumps(value, separators=(",", ":"))
        return f"{self.measurement},key={key} version={version}i,value={_field(text)} {ns}"

    async def write(self, lines: Sequence[str]) -> None:
        async with self.session.post(
            self.write_url, params=self.write_params, data="\n".join(lines).encode()
        ) as response:
            if response.status != 204:
                raise RuntimeError(f"raw influxdb write: HTTP {response.status}")

    async def put(self, key: str, value: JSON) -> None:
        """Append one version of ``key``: read the last version, write the next."""
        version = await self.head_version(key) + 1
        await self.write([self.line(key, version, value, time.time_ns())])

    async def history(self, key: str) -> list[tuple[int, JSON]]:
        """Every (version, value) of ``key``, oldest first."""
        rows = await self.query(
            f'SELECT "version","value" FROM "{self.measurement}" WHERE "key" = $key', key=key
        )
        return [(int(row[1]), json.loads(row[2])) for row in rows]

    async def server(self) -> str:
        """The server's version (``/ping``'s ``X-Influxdb-Version``)."""
        async with self.session.get(self.query_url.replace("/query", "/ping")) as response:
            return response.headers.get("X-Influxdb-Version", "unknown")

    async def drop(self) -> None:
        await self.query(f'DROP MEASUREMENT "{self.measurement}"')


async def bench(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """``put`` and ``replicate`` through statekit next to raw aiohttp."""
    del scratch  # a server backend writes no local files
    url = server_url(config, "influxdb")
    run = uuid.uuid4().hex[:12]
    ours, theirs = f"bench_sk_{run}", f"bench_raw_{run}"
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(
            await statekit.open(with_options(url, namespace=ours))
        )
        backend = store.backend
        assert isinstance(backend, InfluxBackend)
        stack.push_async_callback(backend.drop_namespace)  # runs before the store closes
        options = parse_url(url)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=options.timeout, sock_connect=options.connect_timeout
                )
            )
        )
        raw = RawInflux(session, url, theirs)
        await raw.create_database()
        stack.push_async_callback(raw.drop)
        server = await raw.server()
        if f"influxdb {server}" != f"influxdb {backend.describe()['server']}":
            raise RuntimeError(f"raw side on {server}, statekit on {backend.describe()}")
        detail: dict[str, JSON] = {
            "server": f"influxdb {server}",
            "keys": config.keys,
            "durability": f"both sides: POST /write precision=ns, answered 204 once the "
            f"point is in influxd {server}'s WAL (fsynced before the answer unless the "
            "server sets wal-fsync-delay; its default is 0s); no client-side buffer",
        }
        plan = Plan([f"bench/{i}" for i in range(config.keys)])
        keys = plan.keys
        # Every runner writes each key once first, so the rounds update existing heads.
        for key, value in plan.items(len(keys)):
            await raw.put(key, value)
            await store.put(key, value)

        put = Workload(
            "put",
            config.n,
            plan.puts(config.n, store.put),
            plan.puts(config.n, raw.put),
            {},
            detail,
        )
        yield await measure("influxdb", put, config.rounds)

        batches = max(1, config.n // REPLICATE_BATCH)
        next_records = _Versions(keys, batches).next

        async def raw_replicate() -> float:
            groups = next_records()
            started = time.perf_counter()
            for group in groups:
                lines = [raw.line(r.key, r.version, r.data, _micros(r.at) * 1000) for r in group]
                await raw.write(lines)
            return time.perf_counter() - started

        async def statekit_replicate() -> float:
            groups = next_records()
            started = time.perf_counter()
            for group in groups:
                await backend.replicate(group)
            return time.perf_counter() - started

        yield await measure(
            "influxdb",
            Workload(
                "replicate",
                batches * REPLICATE_BATCH,
                statekit_replicate,
                raw_replicate,
                {},
                {**detail, "batch_size": REPLICATE_BATCH},
            ),
            config.rounds,
        )


class _Versions:
    """Fresh versions for each replicate round, as a mirror receives them from its primary."""

    def __init__(self, keys: list[str], batches: int) -> None:
        self.keys, self.batches = keys, batches
        self.versions = 0
        self.epoch = datetime.now(UTC)

    def next(self) -> list[list[Record]]:
        groups = []
        for _ in range(self.batches):
            group = []
            for i in range(REPLICATE_BATCH):
                self.versions += 1
                group.append(
                    Record(
                        key=self.keys[i % len(self.keys)],
                        version=self.versions,
                        kind="state",
                        data=sample_value(self.versions),
                        meta={},
                        at=self.epoch + timedelta(microseconds=self.versions),
                    )
                )
            groups.append(group)
        return groups


def _micros(at: datetime) -> int:
    delta = at - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
