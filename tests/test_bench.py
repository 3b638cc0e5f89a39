"""python -m statekit.bench: output shape only, never speed (machines are noisy)."""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

import statekit
from statekit import JSON, Write, bench
from statekit.bench.sqlite import RawSqlite

RATE_FIELDS = ("statekit_ops_s", "raw_ops_s", "ratio", "statekit_us_op", "raw_us_op")


def check_line(result: Mapping[str, object], workload: str) -> None:
    assert result["backend"] == "sqlite"
    assert result["workload"] == workload
    assert result["durability"] == "WAL synchronous=FULL"
    assert isinstance(result["n"], int)
    assert result["n"] > 0
    for name in (*RATE_FIELDS, "raw_thread_ops_s", "ratio_vs_raw_thread"):
        value = result[name]
        assert isinstance(value, float | int), name
        assert math.isfinite(value), name
        assert value > 0, name


def check_concurrent(result: dict[str, object]) -> None:
    """The ``concurrent16`` line: 16 tasks, one task, and hand-written sqlite3."""
    assert result["backend"] == "sqlite"
    assert result["workload"] == "concurrent16"
    assert result["tasks"] == 16
    assert result["durability"] == "WAL synchronous=FULL"
    for name in (*RATE_FIELDS, "single_task_ops_s", "ratio_vs_single_task"):
        value = result[name]
        assert isinstance(value, float | int), name
        assert math.isfinite(value) and value > 0, name


def test_main_prints_one_json_line_per_workload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = bench.main(["--n", "10", "--rounds", "2", "--dir", str(tmp_path)])

    out, err = capsys.readouterr()
    assert status == 0, err
    lines = out.splitlines()
    results = [json.loads(line) for line in lines]
    assert [r["workload"] for r in results] == ["put", "batch", "concurrent16"]
    check_line(results[0], "put")
    check_line(results[1], "batch")
    check_concurrent(results[2])
    assert results[0]["n"] == 10
    assert results[0]["rounds"] == 2
    assert results[1]["batch_size"] == 100
    assert list(tmp_path.iterdir()) == [], "the scratch folder is removed afterwards"


@pytest.mark.asyncio
async def test_run_yields_results_from_the_registry(tmp_path: Path) -> None:
    config = bench.BenchConfig(n=6, rounds=1, directory=tmp_path, keys=4, batch_size=3)

    results = [r async for r in bench.run("sqlite", config)]

    assert {"sqlite", "tiered", "legacy", "events", "locks"} <= set(bench.BACKENDS)
    assert [r["workload"] for r in results] == ["put", "batch", "concurrent16"]
    assert results[0]["n"] == 6
    assert results[0]["keys"] == 4
    assert results[1]["n"] == 6  # two transactions of three writes
    assert results[1]["batch_size"] == 3
    for result in results[:2]:
        check_line(result, str(result["workload"]))
    check_concurrent(results[2])
    assert results[2]["n"] == 16  # at least one put per task


@pytest.mark.asyncio
async def test_measure_reports_medians_and_references() -> None:
    # Runners report the seconds a round took; these report fixed ones.
    async def raw() -> float:
        return 0.5

    async def statekit() -> float:
        return 1.0

    async def other() -> float:
        return 2.0

    workload = bench.Workload("put", 10, statekit, raw, {"other": other}, {"durability": "x"})

    result = await bench.measure("fake", workload, rounds=3)

    assert result["raw_ops_s"] == 20.0
    assert result["statekit_ops_s"] == 10.0
    assert result["ratio"] == 0.5
    assert result["other_ops_s"] == 5.0
    assert result["ratio_vs_other"] == 2.0
    assert result["durability"] == "x"


@pytest.mark.asyncio
async def test_raw_side_keeps_the_same_data_as_statekit(tmp_path: Path) -> None:
    # The comparison is fair only if both sides keep the same durable data: each key's
    # value and version, and a history row per write, in the raw side's own tables.
    values: list[tuple[str, JSON]] = [
        ("a", bench.sample_value(1)),
        ("b", bench.sample_value(2)),
        ("a", {"x": "é"}),
    ]
    batch: list[tuple[str, JSON]] = [("b", {"n": 1}), ("c", [1, 2.5, None])]
    async with await statekit.open(f"sqlite:///{tmp_path / 'statekit.db'}") as store:
        for key, value in values:
            await store.put(key, value)
        await store.batch([Write(k, v) for k, v in batch])
        kept = {
            r.key: [(v.version, v.data) for v in await store.history(r.key, newest_first=False)]
            async for r in store.scan()
        }
    raw = RawSqlite(tmp_path / "raw.db", "FULL")
    try:
        for key, value in values:
            raw.put(key, value)
        raw.batch(batch)
        assert raw.durability() == "WAL synchronous=FULL"
        raw_kept: dict[str, list[tuple[int, JSON]]] = {}
        for key, version, data in raw.con.execute(
            "SELECT key, version, data FROM state_history ORDER BY key, version"
        ):
            raw_kept.setdefault(key, []).append((version, json.loads(data)))
        heads = raw.con.execute("SELECT key, version, data FROM state ORDER BY key").fetchall()
        tables = {r[0] for r in raw.con.execute("SELECT name FROM sqlite_master")}
    finally:
        raw.close()

    assert raw_kept == kept
    assert [(k, v, json.loads(d)) for k, v, d in heads] == [
        (k, h[-1][0], h[-1][1]) for k, h in sorted(kept.items())
    ]
    assert not any(t.startswith("sk_") for t in tables), tables  # none of statekit's schema


def test_missing_dir_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = bench.main(["--dir", str(tmp_path / "nope")])

    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "is not a folder" in err


def test_module_runs_as_a_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "statekit.bench",
            "--n",
            "5",
            "--rounds",
            "1",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["workload"] for r in results] == ["put", "batch", "concurrent16"]
    for result in results[:2]:
        check_line(result, result["workload"])
    check_concurrent(results[2])


@pytest.mark.asyncio
async def test_tiered_bench_on_postgres(tmp_path: Path) -> None:
    from statekit.testing import server_url

    url = server_url("postgres")
    config = bench.BenchConfig(n=5, rounds=1, directory=tmp_path, keys=3, url=url)
    results = [r async for r in bench.run("tiered", config)]
    assert [r["workload"] for r in results] == ["cached_get", "get", "put"]
    for result in results:
        assert result["backend"] == "tiered"
        for name in RATE_FIELDS:
            assert isinstance(result[name], float | int) and result[name] > 0, name
        assert "synchronous_commit=on" in str(result["durability"])
    assert _positive_number(results[2]["ratio_vs_uncached"])
    import asyncpg

    con = await asyncpg.connect(url)
    try:
        left = await con.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'bench_tiered_raw_%'"
        )
    finally:
        await con.close()
    assert left == 0, "the hand-written side's schema was not dropped"


def _positive_number(value: object) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


@pytest.mark.asyncio
async def test_reconcile_bench_reports_passes_lag_faults_and_the_baseline(tmp_path: Path) -> None:
    config = bench.BenchConfig(n=24, rounds=2, directory=tmp_path)

    results = [r async for r in bench.run("reconcile", config)]

    assert len(results) == 1
    result = results[0]
    assert (result["backend"], result["intents"], result["store"]) == ("reconcile", 24, "sqlite")
    assert result["durability"] == "WAL synchronous=FULL"
    passes = result["full_pass_seconds"]
    assert isinstance(passes, dict)
    assert _positive_number(passes["first"]) and _positive_number(passes["steady"])
    assert result["first_pass_actions"] == 48  # a place and an in-sync record per intent
    for name in ("actions_per_second", "raw_seconds", "ratio", "lag_p50_seconds"):
        assert _positive_number(result[name]), name
    # Two first passes, each beside two raw runs; the ratio is the median of theirs.
    ratios = result["ratio_runs"]
    assert isinstance(ratios, list) and len(ratios) == 2 and len(result["raw_runs"]) == 4
    assert result["ratio"] == pytest.approx(statistics.median(ratios), abs=0.011)
    assert "PaperExchange" in str(result["baseline"]) and result["raw"] == "sqlite3"
    # One intent changed per round: two pass rounds, and 6 rounds under engine.run(),
    # one lag sample each.
    assert (result["pass_lag_rounds"], result["changes_per_round"]) == (2, 1)
    assert result["pass_lag_samples"] == 2
    assert (result["lag_rounds"], result["lag_samples"]) == (6, 6)
    assert isinstance(result["faults_passes_to_converge"], int)
    assert 1 <= result["faults_passes_to_converge"] <= 20
    assert list(tmp_path.iterdir()) == [], "the scratch folder is removed afterwards"


def test_reconcile_bench_command_takes_every_knob(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from statekit.bench import reconcile as bench_reconcile

    argv = ["--intents", "9", "--symbols", "3", "--faults", "off", "--rounds", "1"]
    argv += ["--repeats", "1", "--run-rounds", "1"]
    status = bench_reconcile.main([*argv, "--changes", "2", "--dir", str(tmp_path)])

    out, err = capsys.readouterr()
    assert status == 0, err
    (result,) = [json.loads(line) for line in out.splitlines()]
    assert (result["intents"], result["symbols"], result["changes_per_round"]) == (9, 3, 2)
    assert result["lag_samples"] == result["pass_lag_samples"] == 2
    assert len(result["first_runs"]) == 1
    assert "faults_passes_to_converge" not in result


@pytest.mark.asyncio
async def test_reconcile_bench_on_postgres(tmp_path: Path) -> None:
    from statekit.testing import server_url

    config = bench.BenchConfig(n=8, rounds=1, directory=tmp_path, url=server_url("postgres"))
    (result,) = [r async for r in bench.run("reconcile", config)]
    assert result["store"] == "postgresql"
    assert str(result["durability"]).startswith("synchronous_commit=")
    assert result["first_pass_actions"] == 16
    assert _positive_number(result["ratio"])


@pytest.mark.asyncio
async def test_history_bench_compares_a_long_history_with_a_short_one(tmp_path: Path) -> None:
    config = bench.BenchConfig(rounds=1, directory=tmp_path, versions=300)

    results = [r async for r in bench.run("history", config)]

    assert [r["workload"] for r in results] == [
        "as_of",
        "oldest_page",
        "page_before",
        "trading_load_as_of",
    ]
    for result in results:
        assert (result["backend"], result["short_versions"], result["long_versions"]) == (
            "sqlite",
            100,
            300,
        )
        for name in ("short_us_op", "long_us_op", "growth"):
            assert _positive_number(result[name]), name
        assert result["growth"] == pytest.approx(
            result["long_us_op"] / result["short_us_op"], rel=0.01
        )
        assert result["target"] == 2.0 and isinstance(result["met"], bool)
    json.dumps(results)


def test_the_harness_imports_no_benchmark() -> None:
    # A plugin's benchmark imports statekit.bench for the harness: that must not load
    # the built-in benchmarks (nor, through them, the trading layer's benchmarks).
    code = (
        "import sys, statekit.bench as b; "
        "assert b.Plan and b.measure and b.server_url; "
        "loaded = [m for m in sys.modules if m.startswith('statekit.bench.')]; "
        "assert sorted(loaded) == ['statekit.bench.cli', 'statekit.bench.harness', "
        "'statekit.bench.registry'], loaded"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.asyncio
async def test_peers_bench_compares_with_eventsourcing_on_sqlite(tmp_path: Path) -> None:
    pytest.importorskip("eventsourcing", reason="the bench-peers extra is not installed")
    config = bench.BenchConfig(n=3, rounds=1, directory=tmp_path)
    results = [r async for r in bench.run("peers", config)]
    assert [r["workload"] for r in results] == ["append", "rebuild"]
    for result in results:
        assert result["backend"] == "peers" and result["durability"] == "WAL synchronous=FULL"
        for name in ("statekit_ops_s", "eventsourcing_ops_s", "ratio", "event_store_ratio"):
            assert _positive_number(result[name]), name
    assert results[1]["events_after_snapshot"] == 50


@pytest.mark.asyncio
async def test_peers_bench_on_postgres_drops_what_it_wrote(tmp_path: Path) -> None:
    pytest.importorskip("eventsourcing", reason="the bench-peers extra is not installed")
    import asyncpg

    from statekit.testing import server_url

    url = server_url("postgres")
    config = bench.BenchConfig(n=2, rounds=1, directory=tmp_path, url=url)
    results = [r async for r in bench.run("peers", config)]
    assert [r["workload"] for r in results] == ["append", "rebuild"]
    assert {r["durability"] for r in results} == {"synchronous_commit=on"}
    con = await asyncpg.connect(url)
    try:
        left = await con.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'peers_es_%'"
        )
    finally:
        await con.close()
    assert left == 0, "the eventsourcing schema was not dropped"


def test_peers_bench_without_eventsourcing_prints_one_skipped_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A None entry in sys.modules makes `import eventsourcing...` raise ImportError.
    for name in [n for n in sys.modules if n.startswith("eventsourcing")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "eventsourcing", None)
    monkeypatch.delitem(sys.modules, "statekit.bench.peers.eventsourcing_side", raising=False)
    config = bench.BenchConfig(n=2, rounds=1, directory=tmp_path)

    async def collect() -> list[dict[str, object]]:
        return [r async for r in bench.run("peers", config)]

    (line,) = asyncio.run(collect())
    assert line["backend"] == "peers"
    assert "pip install 'statekit[bench-peers]'" in str(line["skipped"])


@pytest.mark.asyncio
async def test_events_raw_side_keeps_what_the_event_store_keeps(tmp_path: Path) -> None:
    """The hand-written event store of the events bench ends where EventStore ends: the
    same number of events, the same projected position, the same snapshots; and it
    refuses an append after the wrong version, as the event store does."""
    from decimal import Decimal

    from statekit.bench.events import _change, _RawEvents
    from statekit.trading import Position
    from statekit.trading.events import (
        Aggregate,
        EventStore,
        PositionChange,
        PositionModified,
        PositionOpened,
        PositionOpening,
    )

    raw = _RawEvents(tmp_path / "raw.db", "FULL", "X-USD")
    aggregate = Aggregate.position("X-USD")
    try:
        async with await statekit.open(f"sqlite:///{tmp_path / 'sk.db'}") as store:
            events = EventStore(store)
            opening = PositionOpening(amount=Decimal(1), price=Decimal(100))
            await events.append(aggregate, [PositionOpened(payload=opening)])
            raw.append(0, "position_opened", Decimal(1), Decimal(100))
            for i in range(204):
                amount, price = _change(i)
                change = PositionModified(payload=PositionChange(amount=amount, price=price))
                await events.append(aggregate, [change], expect_version=1 + i)
                raw.append(1 + i, "position_modified", amount, price)
            ours = await store.get(events.projection_key(aggregate))
            snaps = await store.history(events.snapshot_key(aggregate))
        assert ours is not None
        position = Position.model_validate(ours.data)
        with pytest.raises(RuntimeError, match="not 204"):
            raw.append(204, "position_modified", Decimal(1), Decimal(100))
        assert raw.version() == 205
        (state,) = raw.con.execute("SELECT state FROM positions").fetchone()
        hand = json.loads(state)
        assert Decimal(hand["amount"]) == position.amount
        assert Decimal(hand["entry_price"]) == position.entry_price
        assert Decimal(hand["realized_pnl"]) == position.realized_pnl
        versions = [v for (v,) in raw.con.execute("SELECT version FROM snapshots ORDER BY 1")]
        assert versions == [100, 200] == sorted(r.data["version"] for r in snaps)  # type: ignore[call-overload,index]
    finally:
        raw.close()
