"""FileBackend beyond the contract: URLs, layout, replicate, errors, watch across processes."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from statekit_file import FileBackend
from statekit_file.backend import parse_url

import statekit
from statekit.backend import Record, Write
from statekit.errors import BackendError, BackendUnavailable, ConfigError
from statekit.testing import _workers


def test_url_forms(tmp_path: Path) -> None:
    assert parse_url("file:///var/lib/desk") == (Path("/var/lib/desk"), {})
    assert parse_url("file://localhost/var/lib/desk")[0] == Path("/var/lib/desk")
    assert parse_url("file:state/desk")[0] == Path("state/desk")
    assert parse_url("file:///a%20b?checkpoint=5") == (Path("/a b"), {"checkpoint": 5.0})
    for bad in (
        "file://example.com/x",
        "file:///x?nope=1",
        "file:///x?checkpoint=0",
        "file:///x?checkpoint=1.5",
        "file:///x?lock_timeout=abc",
        "file://",
    ):
        with pytest.raises(ConfigError):
            parse_url(bad)


@pytest.mark.asyncio
async def test_layout_is_readable_after_close(store_dir: Path, store_url: str) -> None:
    async with await statekit.open(store_url) as store:
        await store.put("position/EURUSD", {"qty": "1.5"}, kind="position")
        await store.put("position/EURUSD", {"qty": "2"}, kind="position")
        await store.batch([Write("../../escape", 1), Write("b", 2)])
    assert sorted(p.name for p in store_dir.iterdir()) == [
        "current.json",
        "heads",
        "history",
        "journal-00000000.jsonl",
        "journal-00000001.jsonl",
        "lock",
        "statekit-file.json",
    ]
    head = json.loads((store_dir / "heads" / "position%2fEURUSD.json").read_text())
    assert (head["key"], head["version"], head["data"]) == ("position/EURUSD", 2, {"qty": "2"})
    lines = (store_dir / "history" / "position%2fEURUSD.jsonl").read_text().splitlines()
    assert [json.loads(line)["version"] for line in lines] == [1, 2]
    assert (store_dir / "heads" / "..%2f..%2fescape.json").exists()
    assert not (store_dir.parent / "escape").exists()


@pytest.mark.asyncio
async def test_replicate_is_idempotent(store_url: str) -> None:
    at = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    records = [Record("k", v, "state", {"v": v}, {"by": "primary"}, at) for v in (1, 2, 3)]
    async with await statekit.open(store_url) as store:
        await store.backend.replicate(records[:2])
        await store.backend.replicate(records)  # a retried copy: 1 and 2 are left as they are
        assert await store.backend.read("k") == records
        assert (await store.put("k", 4)).version == 4


@pytest.mark.asyncio
async def test_os_errors_become_statekit_errors_with_the_path(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await FileBackend.open(store_url)
    try:
        await backend.append([Write("k", 1)], datetime.now(UTC))

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device", "journal-00000000.jsonl")

        monkeypatch.setattr("statekit_file.folder.datasync", full)
        with pytest.raises(BackendUnavailable, match="disk is full") as err:
            await backend.append([Write("k", 2)], datetime.now(UTC))
        assert err.value.retryable and "journal-00000000.jsonl" in str(err.value)
        monkeypatch.undo()
        # the failed line was cut off: the next version is 2, not 3
        assert [r.version for r in await backend.append([Write("k", 3)], datetime.now(UTC))] == [2]

        def denied(*args: object, **kwargs: object) -> None:
            raise PermissionError(errno.EACCES, "Permission denied", "heads/x.json")

        monkeypatch.setattr("statekit_file.folder.read_file", denied)
        with pytest.raises(BackendError, match="no permission"):
            await backend.latest(["x"])
    finally:
        monkeypatch.undo()
        await backend.aclose()


@pytest.mark.asyncio
async def test_open_refuses_a_folder_whose_parent_is_missing(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="parent"):
        await FileBackend.open(f"file://{tmp_path}/missing/store")


@pytest.mark.asyncio
async def test_watch_sees_other_processes_and_checkpoints(store_url: str) -> None:
    url = store_url + "?checkpoint=3&poll_interval=0.01"
    async with await statekit.open(url) as store, store.watch("p/") as changes:
        got: list[str] = []

        async def collect() -> None:
            async for record in changes:
                got.append(record.key)
                if len(got) == 10:
                    return

        # another process writes 10 keys; checkpoints switch journals under the watcher
        await asyncio.wait_for(
            asyncio.gather(collect(), _run_in_process(_workers.put_many, url, "p/", 10)), 60
        )
        assert got == [f"p/{i}" for i in range(10)]


async def _run_in_process(fn: object, *args: object) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        await asyncio.wrap_future(pool.submit(fn, *args))  # type: ignore[arg-type]


def test_no_temp_files_are_left(store_dir: Path) -> None:
    assert not store_dir.exists() or not any(".tmp-" in p.name for p in store_dir.rglob("*"))
    assert os.sep == "/"
