"""``python -m statekit.bench --backend file``: statekit next to the same work by hand.

Both sides run in one process, in interleaved rounds (:func:`statekit.bench.measure`),
in folders of their own under the scratch folder, on the same disk:

- ``positions`` (the issue's target, ratio >= 3): a book of ``keys`` (100)
  positions where one position changes per save. statekit: ``store.put("position/<i>",
  value)``, one key, atomic and durable. Raw: the legacy way, the whole book
  rewritten as one JSON file atomically per change (temp file, fsync, rename,
  folder fsync), which is equally durable.
- ``positions_writers`` (the same target, when the book is saved by several tasks):
  ``writers`` (10) tasks, say one per strategy, each saving positions of its own
  concurrently. statekit's file store commits the appends queued meanwhile
  together, one line each but one flush for all (group commit); the legacy file
  has to be rewritten whole for every change all the same.
- ``put``: ``store.put`` next to the file operations FileBackend does for one
  put, written by hand: exclusive flock, look at ``current.json``, append the
  same journal line, fdatasync, unlock. Checkpoints are statekit's extra work
  and are inside its time (every ``checkpoint`` versions; 10000 by default).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from pathlib import Path

import statekit
from statekit.backend import JSON
from statekit.bench import BenchConfig, Plan, Result, Workload, measure, sample_value
from statekit_file.backend import FileBackend
from statekit_file.files import datasync, fsync_dir

__all__ = ["LegacyBook", "RawJournal", "bench"]

WRITERS = 10
"""Concurrent tasks in ``positions_writers``."""


def _compact(value: JSON) -> str:
    # The JSON text statekit stores (statekit.codec.dumps), written out by hand.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class LegacyBook:
    """The legacy store: every position in one JSON file, rewritten atomically per change."""

    def __init__(self, folder: Path, size: int) -> None:
        folder.mkdir()
        self.folder = folder
        self.path = folder / "positions.json"
        self.book: dict[str, JSON] = {f"position/{i}": sample_value(i) for i in range(size)}
        self.save("position/0", sample_value(0))

    def save(self, key: str, value: JSON) -> None:
        """Change one position and rewrite the whole file: temp, fsync, rename, folder fsync."""
        self.book[key] = value
        temp = self.folder / "positions.json.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, json.dumps(self.book, ensure_ascii=False).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.path)
        fsync_dir(self.folder)


class RawJournal:
    """FileBackend's per-put file work by hand: lock, check current.json, append, sync."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.current = folder / "current.json"
        self.current.write_text('{"generation": 0, "seq": 0}\n')
        self.lock = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        self.journal = os.open(
            folder / "journal-00000000.jsonl", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644
        )
        self.seq = 0
        self.versions: dict[str, int] = {}

    def put(self, key: str, value: JSON) -> None:
        """Append one version of ``key`` durably."""
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        try:
            os.stat(self.current)
            os.fstat(self.journal)
            version = self.versions.get(key, 0) + 1
            self.seq += 1
            at = time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime())
            line = (
                f'{{"seq":{self.seq},"records":[{{"key":{json.dumps(key)},"version":{version},'
                f'"kind":"state","at":"{at}","meta":{{}},"data":{_compact(value)}}}]}}\n'
            )
            os.write(self.journal, line.encode())
            datasync(self.journal)
            self.versions[key] = version
        finally:
            fcntl.flock(self.lock, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self.journal)
        os.close(self.lock)


async def bench(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """``positions`` (vs the legacy whole-file rewrite) and ``put`` (vs the same file work)."""
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(
            await statekit.open(f"file://{scratch / 'statekit'}")
        )
        backend = store.backend
        assert isinstance(backend, FileBackend)
        book = LegacyBook(scratch / "legacy", config.keys)
        raw = RawJournal(scratch / "raw")
        stack.callback(raw.close)
        keys = [f"position/{i}" for i in range(config.keys)]
        detail: dict[str, JSON] = {
            "durability": "fdatasync per commit (statekit journal); "
            "fsync + rename + folder fsync per save (legacy)",
            "keys": config.keys,
            "checkpoint": backend.describe()["checkpoint"],
        }
        plan = Plan(keys)
        for key, value in plan.items(len(keys)):  # every position exists before timing
            await store.put(key, value)
            raw.put(key, value)

        async def legacy_save(key: str, value: JSON) -> None:
            book.save(key, value)

        async def raw_put(key: str, value: JSON) -> None:
            raw.put(key, value)

        statekit_put = plan.puts(config.n, store.put)
        positions = Workload(
            "positions",
            config.n,
            statekit_put,
            plan.puts(config.n, legacy_save),
            {},
            {**detail, "raw": "legacy: whole book rewritten atomically per change", "target": 3.0},
        )
        yield await measure("file", positions, config.rounds)
        writers = Workload(
            "positions_writers",
            config.n // WRITERS * WRITERS,
            plan.writers(config.n // WRITERS, [store.put] * WRITERS),
            plan.writers(config.n // WRITERS, [legacy_save] * WRITERS),
            {},
            {
                **detail,
                "raw": "legacy: whole book rewritten atomically per change",
                "writers": WRITERS,
                "target": 3.0,
            },
        )
        yield await measure("file", writers, config.rounds)
        put = Workload("put", config.n, statekit_put, plan.puts(config.n, raw_put), {}, detail)
        yield await measure("file", put, config.rounds)
