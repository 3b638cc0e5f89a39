"""The file benchmark: output shape and fairness, never speed (machines are noisy)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from statekit_file.bench import LegacyBook, bench

from statekit.bench import BenchConfig

RATE_FIELDS = ("statekit_ops_s", "raw_ops_s", "ratio", "statekit_us_op", "raw_us_op")


@pytest.mark.asyncio
async def test_bench_yields_positions_writers_and_put(tmp_path: Path) -> None:
    results = [r async for r in bench(BenchConfig(n=20, rounds=1, keys=10), tmp_path)]
    assert [r["workload"] for r in results] == ["positions", "positions_writers", "put"]
    for result in results:
        assert result["backend"] == "file" and result["n"] == 20
        for name in RATE_FIELDS:
            value = result[name]
            assert isinstance(value, float | int) and math.isfinite(value) and value > 0, name
    assert results[0]["target"] == results[1]["target"] == 3.0
    json.dumps(results)


def test_legacy_book_holds_every_position(tmp_path: Path) -> None:
    book = LegacyBook(tmp_path / "legacy", 100)
    book.save("position/7", {"qty": 70})
    saved = json.loads(book.path.read_text())
    assert len(saved) == 100 and saved["position/7"] == {"qty": 70}
