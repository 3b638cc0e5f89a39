"""The reads look up each head's version by its whole primary key, whatever the
planner knows about the namespace (a plain join once matched on ``ns`` alone for
namespaces new to the statistics: quadratic in the namespace's size)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from statekit_postgres import queries

from statekit.backend import Write


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


async def _version_lookups(pg_url: str, query: str, *args: object) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(pg_url)
    try:
        text = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", *args)
    finally:
        await conn.close()
    nodes = _nodes(json.loads(text)[0]["Plan"])
    return [n for n in nodes if n.get("Relation Name") in ("statekit_versions", "statekit_heads")]


async def _analyse_before(pg_url: str, open_backend: Callable[..., Any]) -> None:
    """Statistics taken before the namespace under test has rows: it is new to the
    planner, and another namespace is all its statistics know (estimated at one row).
    Run on an empty database too, this is the "analysed while empty" case."""
    other = await open_backend("planother")
    await other.append([Write(f"o/{i}", i) for i in range(50)], at=datetime.now(UTC))
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("ANALYZE statekit_heads, statekit_versions")
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_scan_and_latest_look_up_versions_by_key(
    pg_url: str, open_backend: Callable[..., Any]
) -> None:
    backend = await open_backend("plan")
    await _analyse_before(pg_url, open_backend)
    keys = [f"intent/{i:05d}" for i in range(600)]
    writes = [Write(k, {"q": i}) for i, k in enumerate(keys)]
    await backend.append(writes[:300], at=datetime.now(UTC))
    await backend.append(writes[300:], at=datetime.now(UTC))
    for query, args in (
        (queries.scan_query(True, True, False), (backend.namespace, "intent/", "intent0")),
        (queries.LATEST, (backend.namespace, keys[:50])),
    ):
        lookups = await _version_lookups(pg_url, query, *args)
        assert lookups, f"no read of statekit_versions in the plan of {query!r}"
        for node in lookups:
            cond = node.get("Index Cond") or node.get("Recheck Cond", "")  # bitmap: the same
            assert "key" in cond, (query, node)
            if node["Relation Name"] == "statekit_versions":
                assert "version" in cond, (query, node)
            assert node.get("Rows Removed by Join Filter", 0) == 0, (query, node)
            if "= k.key" in cond or "version" in cond:  # a lookup per key
                assert node["Actual Rows"] <= 1, (query, node)


async def _nested_plans(pg_url: str, query: str, *args: object) -> list[str]:
    """The plans of every statement ``query`` runs, functions' statements included
    (auto_explain, sent back to this session as log messages)."""
    conn = await asyncpg.connect(pg_url)
    plans: list[str] = []
    conn.add_log_listener(lambda _conn, message: plans.append(message.message))
    try:
        await conn.execute("LOAD 'auto_explain'")
        await conn.execute(
            "SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on; "
            "SET auto_explain.log_nested_statements = on; SET client_min_messages = log"
        )
        await conn.fetch(query, *args)
        await conn.execute("SET client_min_messages = notice")
    finally:
        await conn.close()
    return plans


@pytest.mark.asyncio
async def test_as_of_reads_each_key_by_its_primary_key(
    pg_url: str, open_backend: Callable[..., Any]
) -> None:
    backend = await open_backend("planasof")
    await _analyse_before(pg_url, open_backend)
    keys = [f"k/{i:05d}" for i in range(300)]
    for round_ in range(4):
        await backend.append([Write(k, {"r": round_}) for k in keys], at=datetime.now(UTC))
        if round_ == 1:
            middle = datetime.now(UTC)
    found = await backend.as_of(keys[:20], middle)
    assert [found[k].version for k in keys[:20]] == [2] * 20
    plans = await _nested_plans(pg_url, queries.AS_OF, backend.namespace, keys[:20], middle)
    reads = [p for p in plans if "statekit_versions" in p and "Query Text: SELECT" in p]
    assert reads, f"no statement of the as_of read statekit_versions: {plans}"
    for plan in reads:
        # A read by (ns, key[, version]) on the primary key, never the namespace whole.
        assert "statekit_versions_pkey" in plan, plan
        assert "Rows Removed by Filter" not in plan, plan
        assert "Hash" not in plan, plan


@pytest.mark.asyncio
async def test_feed_reads_touch_only_the_rows_after_the_cursor(
    pg_url: str, open_backend: Callable[..., Any]
) -> None:
    """A watcher's page and changed() read the feed index from the cursor on, in custom
    and generic plans alike: the "rows waiting above the horizon" check once read the
    whole namespace (a sequential scan of every version) on each wake-up."""
    backend = await open_backend("planfeed")
    keys = [f"intent/{i:05d}" for i in range(1000)]
    for round_ in range(3):
        await backend.append([Write(k, {"r": round_}) for k in keys], at=datetime.now(UTC))
    since = await backend.position()
    await backend.append([Write(keys[7], {"r": 9})], at=datetime.now(UTC))
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("ANALYZE statekit_versions")
        snapshot = await conn.fetchval(queries.FEED_START)
        for mode in ("force_custom_plan", "force_generic_plan"):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            for query, args in (
                (queries.CHANGES, (backend.namespace, int(since), 0, 0, snapshot, "")),
                (queries.CHANGED_KEYS, (backend.namespace, int(since), "", None)),
            ):
                statement = await conn.prepare(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}")
                plan = json.loads(await statement.fetchval(*args))[0]["Plan"]
                for node in _nodes(plan):
                    if node.get("Relation Name") != "statekit_versions":
                        continue
                    read = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
                    assert node["Node Type"] != "Seq Scan" and read <= 10, (mode, query, node)
    finally:
        await conn.close()
