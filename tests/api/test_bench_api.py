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
        assert result["durability"] == "WAL synchronous=FULL"
        for name in RATE_FIELDS:
            value = result[name]
            assert isinstance(value, float | int), name
            assert math.isfinite(value) and value > 0, name
    fanout = results[2]
    assert fanout["backend"] == "api"
    assert fanout["subscribers"] == 100
    assert fanout["changes"] == 3
    assert fanout["messages"] == 300, "every subscriber got every change"
    p50, p99, worst = fanout["p50_ms"], fanout["p99_ms"], fanout["max_ms"]
    assert isinstance(p50, float) and isinstance(p99, float) and isinstance(worst, float)
    assert 0 < p50 <= p99 <= worst
    assert list(tmp_path.iterdir()) == [], "the scratch folder (and its server) is gone"


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
