"""``python -m statekit.bench api``: output shape only, never speed (machines are noisy)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from statekit import bench

RATE_FIELDS = ("statekit_ops_s", "raw_ops_s", "ratio", "statekit_us_op", "raw_us_op")


@pytest.mark.asyncio
async def test_api_bench_yields_get_post_and_fanout_lines(tmp_path: Path) -> None:
    config = bench.BenchConfig(n=3, rounds=1, directory=tmp_path, keys=2)

    results = [r async for r in bench.run("api", config)]

    assert [r["workload"] for r in results] == ["get", "post", "ws_fanout"]
    for result in results[:2]:
        assert result["backend"] == "api"
        assert result["n"] == 3
        assert result["rounds"] == 1
        assert result["connections"] == 16
        assert result["durability"] == "WAL synchronous=FULL"
        for name in (*RATE_FIELDS, "statekit_p99_ms", "raw_p99_ms"):
            value = result[name]
            assert isinstance(value, float | int), name
            assert math.isfinite(value) and value > 0, name
    assert results[1]["ratio_vs_one_connection"] > 0
    fanout = results[2]
    assert fanout["backend"] == "api"
    assert fanout["subscribers"] == [50, 500]
    assert fanout["changes"] == 3
    assert fanout["messages_50"] == 150, "every subscriber got every change"
    assert fanout["messages_500"] == 1500, "every subscriber got every change"
    for count in (50, 500):
        p50, p99 = fanout[f"p50_ms_{count}"], fanout[f"p99_ms_{count}"]
        worst = fanout[f"max_ms_{count}"]
        assert isinstance(p50, float) and isinstance(p99, float) and isinstance(worst, float)
        assert 0 < p50 <= p99 <= worst
    ratio = fanout["ratio"]
    assert isinstance(ratio, float) and ratio > 0
    assert list(tmp_path.iterdir()) == [], "the scratch folder (and its servers) is gone"


def test_other_benchmarks_do_not_import_the_api() -> None:
    # `python -m statekit.bench sqlite` must work without the api extra.
    code = (
        "import sys, statekit.bench as b; "
        "assert 'api' in b.names(); "
        "assert not any(m == 'fastapi' or m.startswith('statekit.api') for m in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
