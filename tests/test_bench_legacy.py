"""python -m statekit.bench legacy: output shape and fairness, never speed (machines are noisy)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from contextlib import aclosing
from pathlib import Path

import pytest

from statekit import bench
from statekit.bench.legacy import LEGACY_SAVES, _legacy_json_save, _LegacyBook

RATE_FIELDS = (
    "statekit_ops_s",
    "raw_ops_s",
    "ratio",
    "statekit_us_op",
    "raw_us_op",
    "async_api_ops_s",
    "ratio_vs_async_api",
)


WORKLOADS = ["save_one", "save_all", "load", "trading_save_one", "restore_10_changed"]


def check_line(result: dict[str, object], workload: str, keys: int) -> None:
    assert result["backend"] == "legacy"
    assert result["workload"] == workload
    if workload in ("trading_save_one", "restore_10_changed"):
        check_growth(result)
        return
    if workload == "load":
        assert result["positions"] == result["pair_states"] == keys
        assert result["raw"] == "json.load of the legacy file"
        for name in RATE_FIELDS:
            value = result[name]
            assert isinstance(value, float | int) and math.isfinite(value) and value > 0, name
        return
    assert result["positions"] == result["pair_states"] == keys
    assert result["changed_per_save"] == (1 if workload == "save_one" else 2 * keys)
    assert result["durability"] == "WAL synchronous=FULL"
    assert isinstance(result["file_bytes"], int) and result["file_bytes"] > 0
    for name in RATE_FIELDS:
        value = result[name]
        assert isinstance(value, float | int), name
        assert math.isfinite(value), name
        assert value > 0, name


def check_growth(result: dict[str, object]) -> None:
    small, large, growth = result["small"], result["large"], result["growth"]
    assert isinstance(small, int) and isinstance(large, int) and small < large
    assert isinstance(growth, float) and math.isfinite(growth) and growth > 0
    ratio = result["ratio"]
    assert isinstance(ratio, float) and abs(growth * ratio - 1) < 0.01
    assert result["small_us_op"] == result["raw_us_op"]
    assert result["large_us_op"] == result["statekit_us_op"]


@pytest.mark.asyncio
async def test_legacy_bench_yields_one_and_all_changed(tmp_path: Path) -> None:
    config = bench.BenchConfig(n=3, rounds=1, directory=tmp_path, keys=4)

    results = [r async for r in bench.run("legacy", config)]

    assert [r["workload"] for r in results] == WORKLOADS
    for result in results:
        check_line(result, str(result["workload"]), keys=4)
    assert [r["n"] for r in results] == [3, 3, 3, 3, 1]  # one restore per round
    json.dumps(results)
    assert list(tmp_path.iterdir()) == [], "the scratch folder is removed afterwards"


def test_saves_per_round_are_capped(tmp_path: Path) -> None:
    config = bench.BenchConfig(n=10_000, rounds=1, directory=tmp_path, keys=2)

    async def first() -> dict[str, object]:
        async with aclosing(bench.run("legacy", config)) as results:
            async for result in results:
                return result
        raise AssertionError("no result")

    assert asyncio.run(first())["n"] == LEGACY_SAVES


def test_the_legacy_side_writes_the_whole_state_durably(tmp_path: Path) -> None:
    book = _LegacyBook(3)
    positions, pair_states = book.next_state(every=False)
    path = tmp_path / "state.json"

    _legacy_json_save(path, positions, pair_states)

    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["active_positions"] == positions
    assert saved["pair_states"] == pair_states
    assert sorted(os.listdir(tmp_path)) == ["state.json"]  # the temp file was renamed


def test_one_change_changes_one_position_and_all_changes_every_item() -> None:
    book = _LegacyBook(5)
    before = book.next_state(every=False)
    one = book.next_state(every=False)
    every = book.next_state(every=True)

    changed = [k for k in before[0] if before[0][k] != one[0][k]]
    assert len(changed) == 1
    assert before[1] == one[1]
    assert all(one[0][k] != every[0][k] for k in one[0])
    assert all(one[1][k] != every[1][k] for k in one[1])


@pytest.mark.parametrize("form", [["legacy"], ["--backend", "legacy"]])
def test_command_line_names_the_benchmark_either_way(tmp_path: Path, form: list[str]) -> None:
    options = ["--n", "2", "--rounds", "1", "--positions", "7", "--dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "statekit.bench", *form, *options],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["workload"] for r in results] == WORKLOADS
    for result in results:
        check_line(result, result["workload"], keys=7)


def test_two_different_benchmarks_named_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench.main(["legacy", "--backend", "sqlite"])
    assert exit_.value.code == 2
    assert "two benchmarks named" in capsys.readouterr().err
