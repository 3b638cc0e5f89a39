"""A writer process killed with SIGKILL at random moments never leaves a torn or
half-applied store: after every kill the store opens, every head is one of the
values written, versions are gap-free, batches are whole and every file line is
complete JSON. The gate kills 12 writers at moments from a fresh seed each run (printed
with a failure; ``STATEKIT_SEED`` replays one); ``make soak`` (``STATEKIT_SOAK=1``) 50."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import statekit
from statekit.backend import Record

WRITER = Path(__file__).with_name("crash_writer.py")
KEYS = ["pos/a", "pos/b", "pos/c/../x", "pos/日本"]
PAIR = ("pair/1", "pair/2")
SOAK = os.environ.get("STATEKIT_SOAK", "").strip() not in {"", "0"}
KILLS = 50 if SOAK else 12


def check_value(record: Record) -> int:
    data = record.data
    assert isinstance(data, dict), record
    key, n, pad = data["key"], data["n"], data["pad"]
    assert key == record.key
    assert isinstance(n, int) and isinstance(pad, str) and set(pad) <= {"x"}
    expected = hashlib.sha256(f"{key}|{n}|{len(pad)}".encode()).hexdigest()[:16]
    assert data["check"] == expected, f"{record.key} v{record.version} holds a torn value"
    return n


def check_files(folder: Path) -> None:
    """Every head file is JSON; every line of every JSONL file is complete JSON."""
    for head in (folder / "heads").iterdir():
        assert not head.name.count(".tmp-"), f"temp file left: {head}"
        record = json.loads(head.read_text("utf-8"))
        assert {"key", "version", "kind", "at", "meta", "data"} <= set(record)
    jsonl = [*(folder / "history").iterdir(), *folder.glob("journal-*.jsonl")]
    for path in jsonl:
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), f"torn last line in {path}"
        for line in data.splitlines():
            json.loads(line)


async def check_store(url: str, folder: Path) -> int:
    async with await statekit.open(url) as store:
        check_files(folder)  # opening repaired what the kill left
        heads = await store.backend.latest([*KEYS, *PAIR])  # tombstones included
        for key, head in heads.items():
            history = await store.history(key, limit=10_000, newest_first=False)
            versions = [r.version for r in history]
            assert versions == list(range(versions[0], head.version + 1)), (key, versions)
            assert history[-1] == head
            for record in history:
                if not record.deleted:
                    check_value(record)
        pair = [await store.get(k) for k in PAIR]
        if pair[0] is None or pair[1] is None:
            assert pair == [None, None], "a batch landed half"
        else:
            assert pair[0].version == pair[1].version, "a batch landed half"
            assert check_value(pair[0]) == check_value(pair[1]), "a batch landed half"
        total = sum(h.version for h in heads.values())
    return total


@pytest.mark.slow
@pytest.mark.asyncio
async def test_sigkill_at_random_moments_never_tears_the_store(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    url = f"file://{folder}?checkpoint=5"  # checkpoints often, so kills land in them too
    seed = int(os.environ.get("STATEKIT_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    progress = []
    for i in range(KILLS):
        writer = subprocess.Popen(
            [sys.executable, str(WRITER), url, str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        assert writer.stdout is not None
        ready = writer.stdout.readline()
        assert ready == b"ready\n", writer.stderr.read() if writer.stderr else ready
        time.sleep(rng.uniform(0.01, 0.25))
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
        writer.stdout.close()
        if writer.stderr is not None:
            writer.stderr.close()
        try:
            progress.append(await check_store(url, folder))
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}, kill {i}: {exc}") from exc
    assert progress == sorted(progress) and progress[-1] > KILLS, f"seed {seed}: the writers wrote"
