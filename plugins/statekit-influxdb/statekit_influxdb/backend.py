"""``influxdb://host:8086/db?namespace=...``: statekit's versioned keys as InfluxDB points.

Every version of every key is one point (:mod:`statekit_influxdb.points`), so the
whole history sits in InfluxDB for dashboards and analytics, and the newest point of
a key is its current state.

InfluxDB has no compare-and-set and no multi-point transactions, so this backend
declares neither ``compare_and_set`` nor ``atomic_batch`` (the core then refuses
``expect=``, ``update()`` and multi-key batches with a CapabilityError). A new
version number is the head's plus one, read and written under one asyncio lock per
backend: correct for **one writing process** (one backend object per namespace),
not for several. Use it as a primary only in single-writer setups, or as a mirror
(:meth:`InfluxBackend.replicate`) of a primary that has compare-and-set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Self

import aiohttp

from statekit.backend import Backend, Capability, Health, Record, Write, check_expect, next_at
from statekit.codec import to_micros
from statekit.errors import BackendError, BackendUnavailable, CapabilityError
from statekit.kit import appended
from statekit_influxdb.client import InfluxClient, StatementResult
from statekit_influxdb.influxql import ident, literal, prefix_regex
from statekit_influxdb.options import parse_url
from statekit_influxdb.points import (
    FIELDS,
    decode_key,
    encode_key,
    line,
    point_time,
    record_from_row,
    record_line,
)

__all__ = ["KEYS_PER_QUERY", "POINTS_PER_WRITE", "InfluxBackend"]

log = logging.getLogger("statekit.influxdb")

KEYS_PER_QUERY = 200
"""Keys per head-lookup statement (several statements travel in one request)."""
POINTS_PER_WRITE = 5000
"""Points per ``/write`` request of :meth:`InfluxBackend.replicate`."""
SCAN_PAGE = 1000
"""Keys whose heads one scan step reads (one request)."""

_SELECT = "SELECT " + ",".join(ident(f) for f in FIELDS)


class InfluxBackend(Backend):
    """Versioned keys of one namespace, as points of one measurement of one database.

    Open it with :meth:`open` (a URL) or :meth:`from_session` (an existing
    ``aiohttp.ClientSession``, which :meth:`aclose` then leaves open).
    """

    name = "influxdb"
    capabilities = frozenset({Capability.HISTORY, Capability.DURABLE})

    def __init__(self, client: InfluxClient) -> None:
        options = client.options
        self._client = client
        self.options = options
        self.namespace = options.namespace
        self.measurement = options.measurement
        self.database = options.database
        self._head = f"{options.measurement},ns={options.namespace}"
        self._from = f"FROM {ident(options.measurement)}"
        self._in_ns = f"ns = {literal(options.namespace)}"
        # One writer per namespace in this process: head + 1 is read and written under it.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, url: str) -> Self:
        """Connect to the server of ``url``, check it answers, create the database if allowed."""
        client = InfluxClient(parse_url(url))
        try:
            backend = cls(client)
            await backend._setup()
        except BaseException:
            await client.aclose()
            raise
        return backend

    @classmethod
    async def from_session(cls, session: aiohttp.ClientSession, url: str) -> Self:
        """A backend on an existing session (``url`` gives server, database and options).

        :meth:`aclose` does not close ``session``.
        """
        backend = cls(InfluxClient(parse_url(url), session=session))
        await backend._setup()
        return backend

    async def _setup(self) -> None:
        await self._client.ping()
        if not self.options.create_database:
            return
        # 1.x creates it (a no-op when it exists). 2.x and 3.x refuse InfluxQL's CREATE
        # DATABASE: there the bucket must exist (2.x: with a DBRP mapping; 3.x creates
        # it on the first write), and a missing one shows as the first write's error.
        try:
            await self._client.query(f"CREATE DATABASE {ident(self.database)}", database=False)
        except BackendUnavailable:
            raise
        except BackendError as exc:
            log.info(
                "influxdb %s: not creating database %r: %s", self.options.shown, self.database, exc
            )

    # -- the contract --------------------------------------------------------------------

    async def append(self, writes: Sequence[Write], at: datetime) -> list[Record]:
        async with self._lock:
            heads = await self.latest([w.key for w in writes])
            # The clock read under the lock, past each key's previous version: versions
            # stay in time order, which is also the order of their points.
            stamped = next_at(datetime.now(UTC), [h.at for h in heads.values()])
            micros = to_micros(stamped)
            lines: list[str] = []
            versions: list[int] = []
            for w in writes:
                head = heads.get(w.key)
                check_expect(
                    w,
                    head.version if head else 0,
                    head.deleted if head else False,
                    backend=self.name,
                )
                version = head.version + 1 if head else 1
                data = w.data_json()
                lines.append(line(self._head, w.key, version, w.kind, data, w.meta_json(), micros))
                versions.append(version)
            await self._client.write(lines)
        return appended(writes, versions, stamped)

    async def replicate(self, records: Sequence[Record]) -> None:
        """Write ``records`` as points exactly as given; idempotent.

        A version already present has the same series and timestamp, so writing it
        again overwrites it with identical fields.
        """
        lines = [record_line(self._head, r) for r in records]
        for start in range(0, len(lines), POINTS_PER_WRITE):
            await self._client.write(lines[start : start + POINTS_PER_WRITE])

    async def read(
        self,
        key: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Record]:
        if (before is not None and before <= after + 1) or (limit is not None and limit < 1):
            return []
        where = [self._in_ns, f'"key" = {literal(encode_key(key))}']
        if after > 0:
            where.append(f'"version" > {int(after)}')
        if before is not None:
            where.append(f'"version" < {int(before)}')
        statement = (
            f"{_SELECT} {self._from} WHERE {' AND '.join(where)} "
            f"ORDER BY time {'DESC' if newest_first else 'ASC'}"
        )
        if limit is not None:
            statement += f" LIMIT {int(limit)}"
        (result,) = await self._client.query(statement)
        records = [
            record_from_row(key, row, backend=self.name)
            for series in result.get("series", ())
            for row in series["values"]
        ]
        records.sort(key=lambda r: r.version, reverse=newest_first)
        return records

    def _heads_statement(self, keys: Iterable[str], before: int | None) -> str:
        matches = " OR ".join(f'"key" = {literal(encode_key(k))}' for k in keys)
        until = "" if before is None else f" AND time < {int(before)}"
        return (
            f"{_SELECT} {self._from} WHERE {self._in_ns} AND ({matches}){until} "
            'GROUP BY "key" ORDER BY time DESC LIMIT 1'
        )

    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        return await self._newest(keys, None)

    async def as_of(self, keys: Sequence[str], at: datetime) -> dict[str, Record]:
        # A version's point time is its `at` in ns plus a part below one µs.
        return await self._newest(keys, point_time(to_micros(at) + 1, 0))

    async def _newest(self, keys: Sequence[str], before: int | None) -> dict[str, Record]:
        """Each key's newest point, or newest point before ``before`` (ns)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        statements = [
            self._heads_statement(wanted[i : i + KEYS_PER_QUERY], before)
            for i in range(0, len(wanted), KEYS_PER_QUERY)
        ]
        results = await self._client.query(";".join(statements))
        found = self._heads(results)
        return {key: found[key] for key in wanted if key in found}

    def _heads(self, results: Sequence[StatementResult]) -> dict[str, Record]:
        found: dict[str, Record] = {}
        for result in results:
            for series in result.get("series", ()):
                key = decode_key(series["tags"]["key"])
                found[key] = record_from_row(key, series["values"][0], backend=self.name)
        return found

    async def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        statement = f'SHOW TAG VALUES {self._from} WITH KEY = "key" WHERE {self._in_ns}'
        if prefix:
            statement += f' AND "key" =~ {prefix_regex(encode_key(prefix))}'
        (result,) = await self._client.query(statement)
        keys = sorted(
            key
            for series in result.get("series", ())
            for _, tag in series["values"]
            if (key := decode_key(tag)).startswith(prefix)
        )
        for start in range(0, len(keys), SCAN_PAGE):
            page = keys[start : start + SCAN_PAGE]
            heads = await self.latest(page)
            for key in page:
                record = heads.get(key)
                if record is None or record.deleted or (kind is not None and record.kind != kind):
                    continue
                yield record

    async def prune(self, key: str, before_version: int) -> int:
        where = f'{self._in_ns} AND "key" = {literal(encode_key(key))}'
        async with self._lock:
            head = (await self.latest([key])).get(key)
            if head is None:
                return 0
            cut = min(before_version, head.version)
            if cut <= 1:
                return 0
            counted, first_kept = await self._client.query(
                f'SELECT count("version") {self._from} WHERE {where} AND "version" < {cut};'
                f'SELECT "version" {self._from} WHERE {where} AND "version" >= {cut} '
                "ORDER BY time ASC LIMIT 1"
            )
            dropped = _single(counted, 1)
            if not dropped:
                return 0
            keep_from = _single(first_kept, 0)
            await self._client.query(f"DELETE {self._from} WHERE {where} AND time < {keep_from}")
            return dropped

    async def watch(self, prefix: str = "") -> AsyncIterator[Record]:
        raise CapabilityError(
            "the influxdb backend cannot follow commits (watch); use a primary that can",
            backend=self.name,
            capability="watch",
        )

    async def health(self) -> Health:
        started = time.perf_counter()
        version = await self._client.ping()
        latency = (time.perf_counter() - started) * 1000
        return Health(
            ok=True,
            latency_ms=round(latency, 3),
            detail={
                "server": f"influxdb {version}",
                "url": self.options.shown,
                "database": self.database,
                "namespace": self.namespace,
                "measurement": self.measurement,
                "writers": "single (no compare-and-set)",
            },
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "url": self.options.shown,
            "database": self.database,
            "namespace": self.namespace,
            "measurement": self.measurement,
            "server": self._client.server_version,
        }

    # -- beyond the contract ---------------------------------------------------------------

    async def drop_namespace(self, *, forget: bool = False) -> int | None:
        """Delete every point of this namespace (``DROP SERIES ... WHERE ns = ...``);
        InfluxDB does not say how many, so None."""
        await self._client.query(f"DROP SERIES {self._from} WHERE {self._in_ns}")
        return None


def _single(result: StatementResult, column: int) -> int:
    """One integer of a one-row result (0 when there is no row)."""
    series = result.get("series")
    if not series:
        return 0
    return int(series[0]["values"][0][column])
