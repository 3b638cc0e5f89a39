"""Opening a store deletes the old journals a killed checkpoint left behind, and only those.

A checkpoint copies the live journal into the per-key files, creates the next
journal, switches ``current.json`` to it and then unlinks the journal that left
the kept window (the live one's four predecessors stay, for watchers). A kill
between the switch and the unlink used to leave that journal for good.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from statekit_file import FileBackend, files
from statekit_file.folder import KEEP_GENERATIONS, Folder

import statekit
from statekit.backend import Write

JOURNAL = re.compile(r"^journal-(\d+)\.jsonl$")


class Killed(BaseException):
    """Stands for the SIGKILL: nothing after it runs, nothing catches it."""


def journals(folder: Path) -> list[int]:
    """The generations of the journal files in ``folder``, sorted."""
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := JOURNAL.match(p.name)))


def live_generation(folder: Path) -> int:
    return int(json.loads((folder / "current.json").read_text())["generation"])


def kept_window(folder: Path) -> list[int]:
    """What a tidy folder holds: the live journal and its kept predecessors."""
    live = live_generation(folder)
    return list(range(max(0, live - KEEP_GENERATIONS), live + 1))


def kill_in_checkpoint(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Make the next checkpoint die just before (``switch``) or after (``unlink``) its switch."""
    if where == "switch":

        def write_atomic(path: Path, data: bytes, **kwargs: Any) -> None:
            if path.name == "current.json":
                raise Killed
            files.write_atomic(path, data, **kwargs)

        monkeypatch.setattr("statekit_file.folder.write_atomic", write_atomic)
    else:
        real_unlink = os.unlink

        def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
            if JOURNAL.match(os.path.basename(path)):
                raise Killed
            real_unlink(path, *args, **kwargs)

        monkeypatch.setattr(os, "unlink", unlink)


@pytest.mark.asyncio
@pytest.mark.parametrize("where", ["switch", "unlink"])
async def test_open_sweeps_journals_a_killed_checkpoint_left(
    store_dir: Path,
    store_url: str,
    where: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    written: dict[str, int] = {}
    folder = Folder(store_dir, checkpoint=1, lock_timeout=5)  # every append checkpoints
    folder.open()
    try:
        for n in range(8):  # generations 0..8: journals 4..8 are kept, 0..3 unlinked
            folder.append([Write(f"k{n % 3}", n)])
            written[f"k{n % 3}"] = n
        assert journals(store_dir) == [4, 5, 6, 7, 8]
        kill_in_checkpoint(monkeypatch, where)
        with pytest.raises(Killed):
            folder.append([Write("k1", 8)])  # committed (synced line), then killed
        written["k1"] = 8
    finally:
        monkeypatch.undo()
        folder.close()  # what the kernel does for a killed process: fds closed, lock freed
    if where == "switch":  # current.json still on 8, whose line is not checkpointed
        assert (live_generation(store_dir), journals(store_dir)) == (8, [4, 5, 6, 7, 8, 9])
    else:  # current.json on 9; journal 4 should have gone and would stay for good
        assert (live_generation(store_dir), journals(store_dir)) == (9, [4, 5, 6, 7, 8, 9])
    # An orphan of an earlier kill too, far below the window (a real name, never referenced).
    (store_dir / "journal-00000001.jsonl").write_bytes(
        (store_dir / "journal-00000004.jsonl").read_bytes()
    )

    with caplog.at_level(logging.INFO, logger="statekit.file"):
        async with await statekit.open(store_url) as store:
            assert journals(store_dir) == kept_window(store_dir)
            for key, n in written.items():
                head = await store.get(key)
                assert head is not None and head.data == n, (key, head)
            history = await store.history("k1", limit=100, newest_first=False)
            assert [r.data for r in history] == [1, 4, 7, 8]
            await store.put("k0", "after")  # the store goes on: close checkpoints again
    swept = sorted(
        m.group(1) for r in caplog.records if (m := re.search(r"removed (journal-\S+),", r.message))
    )
    if where == "switch":  # the reopen's checkpoint made 9 live and unlinked 4 itself
        assert swept == ["journal-00000001.jsonl"], swept
    else:
        assert swept == ["journal-00000001.jsonl", "journal-00000004.jsonl"], swept
    assert journals(store_dir) == kept_window(store_dir) == [6, 7, 8, 9, 10]


# The child: puts one key per write and appends each acknowledged key to a file,
# flushed (the page cache outlives a SIGKILL). Journal unlinks are slowed down a
# little so that kills often land between current.json's switch and the unlink.
CHILD = """
import asyncio, os, sys, time
from datetime import UTC, datetime
from statekit.backend import Write
from statekit_file import FileBackend  # not statekit.open: no plugin discovery, fast start

real_unlink = os.unlink

def unlink(path, *args, **kwargs):
    if os.path.basename(path).startswith("journal-"):
        time.sleep(0.003)
    real_unlink(path, *args, **kwargs)

os.unlink = unlink

async def main(url, run, acks):
    backend = await FileBackend.open(url)
    with open(acks, "a") as out:
        print("ready", flush=True)
        n = 0
        while True:
            key = f"w/{run}/{n}"
            await backend.append([Write(key, {"run": int(run), "n": n})], datetime.now(UTC))
            out.write(key + "\\n")
            out.flush()
            n += 1

asyncio.run(main(*sys.argv[1:]))
"""
KILLS = 20
SEED = 20251121


@pytest.mark.slow
@pytest.mark.asyncio
async def test_sigkilled_writers_leave_no_old_journal_and_lose_no_acknowledged_write(
    tmp_path: Path,
) -> None:
    seed = SEED
    rng = random.Random(seed)
    folder = tmp_path / "store"
    url = f"file://{folder}?checkpoint=2"  # a checkpoint every other put
    acks = tmp_path / "acks"
    orphans = 0  # kills that landed in the window: journals below the kept ones
    for run in range(KILLS):
        where = f"seed {seed}, kill {run}"
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, url, str(run), str(acks)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert child.stdout is not None and child.stderr is not None
        ready = child.stdout.readline()
        assert ready == b"ready\n", (where, child.stderr.read())
        time.sleep(rng.uniform(0.005, 0.06))
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL, where
        child.stdout.close()
        child.stderr.close()
        live = live_generation(folder)
        orphans += any(g < live - KEEP_GENERATIONS for g in journals(folder))

        backend = await FileBackend.open(url)
        try:
            assert journals(folder) == kept_window(folder), where
            acked = acks.read_text().split()
            found = await backend.latest(acked)
            missing = sorted(set(acked) - set(found))
            assert not missing, f"{where}: acknowledged writes lost: {missing[:5]}"
            for key in acked:
                _, run_id, n = key.split("/")
                assert found[key].data == {"run": int(run_id), "n": int(n)}, (where, key)
        finally:
            await backend.aclose()
    assert orphans, f"seed {seed}: no kill landed between the switch and the unlink"
