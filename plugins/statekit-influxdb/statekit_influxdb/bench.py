"""``python -m statekit.bench --backend influxdb``: statekit next to the same HTTP by hand.

Each workload runs statekit and a hand-written aiohttp program in one process, in
interleaved rounds (:func:`statekit.bench.measure`), on the same server, each side
in a namespace of its own (both dropped afterwards):

- ``put``: ``store.put(key, value)`` vs the raw client doing the same two round
  trips: ``POST /query`` for the key's newest point, then ``POST /write`` of one
  point with version + 1.
- ``replicate``: ``backend.replicate()`` of 1,000 records (what a tiered store's
  mirror does) vs the same 1,000 points as line protocol in one ``POST /write``.

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

import aiohttp

import statekit
from statekit.backend import JSON, Record
from statekit.bench import BenchConfig, Plan, Result, Workload, measure, sample_value, server_url
from statekit_influxdb.backend import InfluxBackend
from statekit_influxdb.options import parse_url, with_options

__all__ = ["REPLICATE_BATCH", "RawInflux", "bench"]

REPLICATE_BATCH = 1000
"""Records per ``replicate`` call (and per raw ``/write``)."""


def _compact(value: JSON) -> str:
    # The JSON text statekit stores (statekit.codec.dumps), written out by hand.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _field(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RawInflux:
    """InfluxBackend's requests written by hand with aiohttp: same statements, same points.

    The statement and the line protocol are spelt out here rather than imported, as a
    program written against the HTTP API would; ``tests/test_bench.py`` checks that
    both sides store the same thing.
    """

    def __init__(self, session: aiohttp.ClientSession, url: str, namespace: str) -> None:
        options = parse_url(url)
        self.session = session
        self.write_url = f"{options.base_url}/write"
        self.query_url = f"{options.base_url}/query"
        self.write_params = {"db": options.database, "precision": "n"}
        self.query_params = {"db": options.database, "epoch": "n"}
        self.namespace = namespace

    async def head_version(self, key: str) -> int:
        q = (
            'SELECT "version","kind","data","meta","deleted" FROM "statekit" '
            f"WHERE ns = '{self.namespace}' AND (\"key\" = '{key}') "
            'GROUP BY "key" ORDER BY time DESC LIMIT 1'
        )
        async with self.session.post(
            self.query_url, params=self.query_params, data={"q": q}
        ) as response:
            reply = json.loads(await response.text())
        series = reply["results"][0].get("series")
        return int(series[0]["values"][0][1]) if series else 0

    def line(self, key: str, version: int, value: JSON, micros: int) -> str:
        return (
            f'statekit,ns={self.namespace},key={key} version={version}i,kind="state",'
            f'meta="{{}}",data={_field(_compact(value))},deleted=false '
            f"{micros * 1000 + version % 1000}"
        )

    async def write(self, lines: Sequence[str]) -> None:
        async with self.session.post(
            self.write_url, params=self.write_params, data="\n".join(lines).encode()
        ) as response:
            if response.status != 204:
                raise RuntimeError(f"raw influxdb write: HTTP {response.status}")

    async def put(self, key: str, value: JSON) -> None:
        """Append one version of ``key``: read the head, write head + 1."""
        version = await self.head_version(key) + 1
        await self.write([self.line(key, version, value, time.time_ns() // 1000)])


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
        cleaner = await InfluxBackend.from_session(session, with_options(url, namespace=theirs))
        stack.push_async_callback(cleaner.drop_namespace)
        raw = RawInflux(session, url, theirs)

        detail: dict[str, JSON] = {
            "server": f"influxdb {backend.describe()['server']}",
            "keys": config.keys,
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
                lines = [raw.line(r.key, r.version, r.data, _micros(r.at)) for r in group]
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
