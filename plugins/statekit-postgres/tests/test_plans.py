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


@pytest.mark.asyncio
async def test_scan_and_latest_look_up_versions_by_key(
    pg_url: str, open_backend: Callable[..., Any]
) -> None:
    backend = await open_backend("plan")
    # The statistics are taken before the namespace exists: it is new to the planner.
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("ANALYZE statekit_heads, statekit_versions")
    finally:
        await conn.close()
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
            cond = node.get("Index Cond", "")
            assert "key" in cond, (query, node)
            if node["Relation Name"] == "statekit_versions":
                assert "version" in cond, (query, node)
            assert node.get("Rows Removed by Join Filter", 0) == 0, (query, node)
            if "= k.key" in cond or "version" in cond:  # a lookup per key
                assert node["Actual Rows"] <= 1, (query, node)
