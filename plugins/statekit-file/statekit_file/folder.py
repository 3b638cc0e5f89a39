"""The blocking engine of a store folder. Runs only on the backend's worker thread.

Layout of a store folder (docs/backends/file.md)::

    statekit-file.json        format marker (format, layout version, name scheme)
    lock                      flock target (exclusive: writers; shared: readers)
    current.json              {"generation": g, "seq": s}: which journal is live
    journal-<g>.jsonl         the commit log: one line per append, fdatasync'ed
    heads/<name>.json         each key's head record, pretty JSON   (checkpointed)
    history/<name>.jsonl      each key's versions, one per line      (checkpointed)

**Commit point.** An append is one line ``{"seq":…,"records":[…]}`` added to the
live journal and fdatasync'ed, under the exclusive lock: one flush per commit,
a whole batch in one line. A line without its final newline was torn by a crash
and is cut off by the next writer; it was never acknowledged.

**Checkpoint.** When the live journal holds ``checkpoint`` versions or 64 MiB
(and when a backend that wrote closes), its versions are copied into the
per-key files: history lines appended and synced, head files replaced
atomically (temp, fsync, rename), folders synced. Then a new, empty journal
generation becomes live (``current.json`` replaced atomically). A crash
half-way leaves ``current.json`` on the old journal, and the copy is redone
idempotently (a history file only gets versions above its last). The last
four old journals are kept, for watchers that lag; ``open`` deletes older ones
that a process killed between the switch and the unlink left behind.

**Reading.** A key's head is its newest version in the live journal, else its
head file; its history is its history file plus the live journal.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from statekit.backend import Guard, Record, Write, check_expect, check_guard
from statekit.codec import to_micros
from statekit.errors import BackendError, SerializationError, StatekitError
from statekit_file.files import (
    complete_lines,
    datasync,
    fsync_dir,
    last_line,
    read_file,
    write_atomic,
)
from statekit_file.journal import Cursor, changes, commit_line, journal_name, parse_line
from statekit_file.lock import FolderLock
from statekit_file.names import KeyNames
from statekit_file.records import Entry, decode, encode_record, encode_write, entry_of, pretty

__all__ = ["FORMAT_VERSION", "Cursor", "Folder", "Stamped"]

FORMAT_VERSION = 1
MARKER = "statekit-file.json"
CURRENT = "current.json"
KEEP_GENERATIONS = 4
"""Old journals kept after a checkpoint, so a watcher that lags can still catch up."""
CHECKPOINT_BYTES = 64 * 1024 * 1024
"""A journal this large is checkpointed whatever its count of versions."""
_TEMP = re.compile(r"\.tmp-\d+$")
_JOURNAL = re.compile(r"^journal-(\d+)\.jsonl$")

log = logging.getLogger("statekit.file")

Stamped = tuple[list[int], int]
"""What an append committed: its versions (in the order of its writes) and ``at`` (µs)."""


class Folder:
    """A store folder, opened by one backend. Not thread-safe: one worker thread uses it.

    :param root: the folder.
    :param checkpoint: versions the live journal may hold before they are copied
        into the per-key files.
    :param lock_timeout: seconds to wait for another process's lock.
    """

    def __init__(self, root: Path, *, checkpoint: int, lock_timeout: float) -> None:
        self.root = root
        self.heads = root / "heads"
        self.history = root / "history"
        self.checkpoint_every = checkpoint
        self.lock = FolderLock(root / "lock", lock_timeout)
        self.names = KeyNames()
        self.generation = -1
        self.seq = 0
        self._current_stamp: tuple[int, int, int] | None = None
        self._journal: int | None = None
        self._offset = 0
        self._tail: dict[str, list[Entry]] = {}  # key -> versions in the live journal
        self._pending = 0  # versions in the live journal
        self._heads: dict[str, Entry | None] = {}  # head files read during this generation
        self._hashed: dict[str, str] = {}  # hashed file name -> key
        self.wrote = False

    # -- opening -----------------------------------------------------------------------

    def open(self) -> None:
        """Create or check the folder, repair what a crash left, make the files current."""
        self.root.mkdir(exist_ok=True)  # its parent must exist: a typo should not build a tree
        self.lock.open()
        with self.lock.exclusive():
            marker = read_file(self.root / MARKER)
            if marker is None:
                self._create()
            else:
                self._check_marker(marker)
            for folder in (self.root, self.heads, self.history):
                for name in os.listdir(folder):
                    if _TEMP.search(name):  # a dead writer's temp file (we hold the lock)
                        os.unlink(folder / name)
            self._refresh(repair=True)
            if self._pending:
                self._checkpoint()
            self._sweep_journals()

    def _sweep_journals(self) -> None:
        """Delete the old journals a checkpoint retired but did not get to unlink.

        A checkpoint copies the live journal into the per-key files, switches
        ``current.json`` to a new journal, and only then unlinks the journal that
        left the kept window. A process killed between the switch and the unlink
        leaves that journal behind, and later checkpoints never remove it. Every
        journal older than the live generation's :data:`KEEP_GENERATIONS`
        predecessors is such a leftover: its versions were copied to the per-key
        files before a newer journal became live, and no watcher may read it any
        more. The live journal, the kept ones and a newer, still-empty one (a
        checkpoint killed before its switch; the next checkpoint reuses it) stay.
        Call with the exclusive lock held, after ``_refresh``.
        """
        for name in os.listdir(self.root):
            match = _JOURNAL.match(name)
            if match and int(match.group(1)) < self.generation - KEEP_GENERATIONS:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.root / name)
                    log.warning(
                        "file store %s: removed %s, an old journal a killed checkpoint left "
                        "(live: %s)",
                        self.root,
                        name,
                        journal_name(self.generation),
                    )

    def _create(self) -> None:
        self.heads.mkdir(exist_ok=True)
        self.history.mkdir(exist_ok=True)
        probe = self.root / "Case-Probe.tmp-0"
        probe.touch()
        case_sensitive = not (self.root / "case-probe.tmp-0").exists()
        probe.unlink()
        self.names = KeyNames(case_sensitive=case_sensitive)
        if not (self.root / CURRENT).exists():
            fd = os.open(self.root / journal_name(0), os.O_WRONLY | os.O_CREAT, 0o644)
            os.close(fd)
            write_atomic(self.root / CURRENT, b'{"generation": 0, "seq": 0}\n')
        marker = {
            "format": "statekit-file",
            "version": FORMAT_VERSION,
            "case_sensitive_names": case_sensitive,
        }
        # Written last: a folder with a marker is complete.
        write_atomic(self.root / MARKER, json.dumps(marker, indent=2).encode() + b"\n")

    def _check_marker(self, raw: bytes) -> None:
        try:
            marker = json.loads(raw)
            version = int(marker["version"])
            ok = marker.get("format") == "statekit-file"
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(
                f"{self.root / MARKER} is not a statekit-file marker", backend="file"
            ) from exc
        if not ok:
            raise BackendError(
                f"{self.root / MARKER} is not a statekit-file marker", backend="file"
            )
        if version > FORMAT_VERSION:
            raise BackendError(
                f"{self.root}: layout version {version} was written by a newer statekit-file "
                f"(this one knows {FORMAT_VERSION}); upgrade statekit-file",
                backend="file",
            )
        self.names = KeyNames(case_sensitive=bool(marker.get("case_sensitive_names", True)))

    def close(self) -> None:
        """Checkpoint what this process wrote (best effort by the caller), release files."""
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None
        self.lock.close()

    # -- the live journal --------------------------------------------------------------

    def _switch(self, generation: int, seq: int) -> None:
        fd = os.open(self.root / journal_name(generation), os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        if self._journal is not None:
            os.close(self._journal)
        self._journal = fd
        self.generation, self.seq = generation, seq
        self._offset = 0
        self._tail = {}
        self._pending = 0
        self._heads = {}

    def _read_current(self) -> tuple[int, int]:
        raw = read_file(self.root / CURRENT)
        if raw is None:
            raise BackendError(
                f"{self.root}: {CURRENT} is missing; is this a statekit folder?", backend="file"
            )
        try:
            current = json.loads(raw)
            return int(current["generation"]), int(current["seq"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SerializationError(f"{self.root / CURRENT} is corrupt", backend="file") from exc

    def _refresh(self, *, repair: bool) -> None:
        """Catch up with the journal: other processes' commits, a new generation.

        Call with the lock held; ``repair`` (exclusive lock) cuts a torn last line.
        """
        st = os.stat(self.root / CURRENT)
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._current_stamp:
            generation, seq = self._read_current()
            if generation != self.generation:
                self._switch(generation, seq)
            self._current_stamp = stamp
        fd = self._journal
        assert fd is not None
        size = os.fstat(fd).st_size
        if size == self._offset:
            return
        data = os.pread(fd, size - self._offset, self._offset)
        lines, end = complete_lines(data)
        if repair and end < len(data):
            os.ftruncate(fd, self._offset + end)  # torn by a killed writer: never committed
        where = str(self.root / journal_name(self.generation))
        for line in lines:
            seq, records = parse_line(line, where)
            for obj in records:
                key, entry = entry_of(obj, where)
                self._tail.setdefault(key, []).append(entry)
                self._pending += 1
            self.seq = seq
        self._offset += end

    def _commit(self, commits: Sequence[Sequence[tuple[str, Entry]]]) -> None:
        """Append one journal line per commit, all in one write, synced once: the commit point."""
        fd = self._journal
        assert fd is not None
        lines = [
            commit_line(self.seq + n, [e.text for _, e in items])
            for n, items in enumerate(commits, 1)
        ]
        data = "".join(lines).encode()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            datasync(fd)
        except BaseException:
            # Leave no half line behind (the next writer would cut it anyway).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._offset)
            raise
        self._offset += len(data)
        self.seq += len(commits)
        for items in commits:
            for key, entry in items:
                self._tail.setdefault(key, []).append(entry)
            self._pending += len(items)
        self.wrote = True

    # -- heads -------------------------------------------------------------------------

    def _head_file(self, key: str) -> Path:
        return self.heads / f"{self.names.name(key)}.json"

    def _history_file(self, key: str) -> Path:
        return self.history / f"{self.names.name(key)}.jsonl"

    def _head(self, key: str) -> Entry | None:
        tail = self._tail.get(key)
        if tail:
            return tail[-1]
        if key in self._heads:
            return self._heads[key]
        path = self._head_file(key)
        raw = read_file(path)
        entry = None
        if raw is not None:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SerializationError(f"{path}: not UTF-8", backend="file") from exc
            record = decode(text, str(path))
            if record.key != key:  # a hashed name shared by two keys: astronomically unlikely
                raise BackendError(f"{path} holds key {record.key!r}, not {key!r}", backend="file")
            entry = Entry(
                record.version,
                not record.deleted,
                record.kind,
                _compact(text),
                to_micros(record.at),
            )
        self._heads[key] = entry
        return entry

    # -- the contract, synchronously ---------------------------------------------------

    def append(self, writes: Sequence[Write]) -> Stamped:
        """Check every ``expect`` and commit all writes as one journal line."""
        (outcome,) = self.append_group([(writes, ())])
        if isinstance(outcome, StatekitError):
            raise outcome
        return outcome

    def append_group(
        self, appends: Sequence[tuple[Sequence[Write], Sequence[Guard]]]
    ) -> list[Stamped | StatekitError]:
        """Commit several appends with one flush (group commit); each is still its own line.

        Each append is checked against the heads left by the ones before it and
        commits whole or not at all: one that fails its ``expect`` gets its error in
        its slot and the others go on. A failed write or flush fails them all (raised).
        Each gets the versions and the ``at`` (µs) it committed with: the clock read
        under the lock, past the previous ``at`` of each of its keys.
        """
        with self.lock.exclusive():
            self._refresh(repair=True)
            clock = time.time_ns() // 1000
            staged: dict[str, Entry] = {}  # heads written by earlier appends of this group
            commits: list[list[tuple[str, Entry]]] = []
            outcomes: list[Stamped | StatekitError] = []
            for writes, guards in appends:
                try:
                    items = self._stage(writes, guards, clock, staged)
                except StatekitError as exc:
                    outcomes.append(exc)
                    continue
                staged.update(items)
                commits.append(items)
                outcomes.append(([e.version for _, e in items], items[0][1].at))
            if commits:
                self._commit(commits)
                if self._pending >= self.checkpoint_every or self._offset >= CHECKPOINT_BYTES:
                    self._checkpoint()
        return outcomes

    def _stage(
        self,
        writes: Sequence[Write],
        guards: Sequence[Guard],
        clock: int,
        staged: dict[str, Entry],
    ) -> list[tuple[str, Entry]]:
        for g in guards:  # against the heads as this append would see them
            guarded = staged[g.key] if g.key in staged else self._head(g.key)
            version = guarded.version if guarded is not None else 0
            check_guard(g, version, guarded is None or not guarded.live, backend="file")
        heads: list[tuple[Write, Entry | None]] = []
        latest = clock - 1
        for w in writes:  # the core refuses a key twice in one batch
            head = staged[w.key] if w.key in staged else self._head(w.key)
            version = head.version if head is not None else 0
            check_expect(w, version, head is None or not head.live, backend="file")
            heads.append((w, head))
            latest = max(latest, head.at if head is not None else latest)
        at = latest + 1 if latest >= clock else clock
        return [
            (w.key, encode_write(w, (head.version if head else 0) + 1, at)) for w, head in heads
        ]

    def replicate(self, records: Sequence[Record]) -> int:
        """Commit the records newer than each key's head, as one line; returns how many."""
        with self.lock.exclusive():
            self._refresh(repair=True)
            newest: dict[str, int] = {}
            items: list[tuple[str, Entry]] = []
            for record in records:
                if record.key not in newest:
                    head = self._head(record.key)
                    newest[record.key] = head.version if head is not None else 0
                if record.version <= newest[record.key]:
                    continue  # already here (or pruned here): a retried copy is harmless
                newest[record.key] = record.version
                items.append((record.key, encode_record(record)))
            if items:
                self._commit([items])
                if self._pending >= self.checkpoint_every or self._offset >= CHECKPOINT_BYTES:
                    self._checkpoint()
        return len(items)

    def latest(self, keys: Iterable[str]) -> dict[str, Record]:
        """Head records of the keys that have one (tombstones included)."""
        with self.lock.shared():
            self._refresh(repair=False)
            heads = {key: self._head(key) for key in keys}
        return {k: decode(e.text, k) for k, e in heads.items() if e is not None}

    def _history_lines(self, key: str) -> list[bytes]:
        raw = read_file(self._history_file(key))
        if raw is None:
            return []
        lines, _ = complete_lines(raw)  # a torn tail (killed checkpoint) is never returned
        return lines

    def read(
        self, key: str, after: int, before: int | None, limit: int | None, newest_first: bool
    ) -> list[Record]:
        """Versions ``after < v < before`` of ``key``, in order."""
        with self.lock.shared():
            self._refresh(repair=False)
            texts: dict[int, str] = {}
            where = str(self._history_file(key))
            for line in self._history_lines(key):
                text = line.decode("utf-8", errors="replace")
                texts[decode(text, where).version] = text
            for entry in self._tail.get(key, ()):
                texts[entry.version] = entry.text
        high = before if before is not None else 2**63
        versions = sorted((v for v in texts if after < v < high), reverse=newest_first)
        if limit is not None:
            versions = versions[:limit]
        return [decode(texts[v], where) for v in versions]

    def as_of(self, keys: Iterable[str], at: int) -> dict[str, Record]:
        """Each key's newest version with ``at`` (µs) at or before ``at``.

        ``at`` rises with the version, so both parts of a key's history (the live
        journal's tail, then the history file's lines) are bisected: a history file
        is split into lines, but only about log2(lines) of them are decoded.
        """
        found: dict[str, Record] = {}
        with self.lock.shared():
            self._refresh(repair=False)
            for key in keys:
                tail = self._tail.get(key, [])
                index = bisect.bisect_right(tail, at, key=lambda e: e.at)
                if index:
                    found[key] = decode(tail[index - 1].text, key)
                    continue
                where = str(self._history_file(key))
                lines = [line.decode("utf-8") for line in self._history_lines(key)]
                index = bisect.bisect_right(
                    lines, at, key=lambda line: to_micros(decode(line, where).at)
                )
                if index:
                    found[key] = decode(lines[index - 1], where)
        return found

    def keys(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix`` that has a head (live or not), sorted."""
        with self.lock.shared():
            self._refresh(repair=False)
            found = {k for k in self._tail if k.startswith(prefix)}
            for name in os.listdir(self.heads):
                if not name.endswith(".json"):
                    continue
                stem = name[:-5]
                key = KeyNames.key(stem)
                if key is None:
                    key = self._hashed.get(stem)
                    if key is None:
                        raw = read_file(self.heads / name)
                        if raw is None:
                            continue
                        key = decode(raw.decode("utf-8"), name).key
                        self._hashed[stem] = key
                if key.startswith(prefix):
                    found.add(key)
        return sorted(found)

    def live_heads(self, keys: Sequence[str], kind: str | None) -> list[Record]:
        """The live heads of ``keys`` (of ``kind``), in the given order."""
        with self.lock.shared():
            self._refresh(repair=False)
            heads = [(k, self._head(k)) for k in keys]
        return [
            decode(e.text, k)
            for k, e in heads
            if e is not None and e.live and (kind is None or e.kind == kind)
        ]

    def prune(self, key: str, before_version: int) -> int:
        """Drop versions older than ``before_version`` from the history file; never the head."""
        with self.lock.exclusive():
            self._refresh(repair=True)
            if key in self._tail:
                self._checkpoint()  # the history file then holds every version
            head = self._head(key)
            if head is None:
                return 0
            path = self._history_file(key)
            lines = self._history_lines(key)
            kept = [
                line
                for line in lines
                if (v := decode(line.decode("utf-8"), str(path)).version) >= before_version
                or v == head.version
            ]
            if len(kept) < len(lines):
                write_atomic(path, b"".join(line + b"\n" for line in kept))
        return len(lines) - len(kept)

    def checkpoint(self) -> None:
        """Copy the live journal into the per-key files now (what close does)."""
        with self.lock.exclusive():
            self._refresh(repair=True)
            if self._pending:
                self._checkpoint()

    def _checkpoint(self) -> None:
        for key, entries in self._tail.items():
            path = self._history_file(key)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            try:
                last = last_line(fd, repair=True)
                have = decode(last.decode("utf-8"), str(path)).version if last else 0
                new = [e.text for e in entries if e.version > have]
                if new:
                    os.write(fd, ("\n".join(new) + "\n").encode())
                    datasync(fd)
            finally:
                os.close(fd)
            write_atomic(self._head_file(key), pretty(entries[-1].text).encode(), sync_dir=False)
        fsync_dir(self.history)
        fsync_dir(self.heads)
        generation = self.generation + 1
        fd = os.open(
            self.root / journal_name(generation),
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
            0o644,
        )
        os.close(fd)
        current = json.dumps({"generation": generation, "seq": self.seq}).encode() + b"\n"
        write_atomic(self.root / CURRENT, current)  # the switch: syncs the root folder too
        with contextlib.suppress(FileNotFoundError):  # the newest few stay, for watchers
            os.unlink(self.root / journal_name(generation - 1 - KEEP_GENERATIONS))
        self._switch(generation, self.seq)
        self._current_stamp = None

    # -- watch -------------------------------------------------------------------------

    def cursor(self) -> Cursor:
        """Where a watcher starting now stands."""
        with self.lock.shared():
            self._refresh(repair=False)
            return Cursor(self.generation, self._offset, self.seq)

    def changes(self, cursor: Cursor, prefix: str, most: int = 1000) -> tuple[list[Record], Cursor]:
        """Commits after ``cursor`` to keys under ``prefix`` (up to ``most`` lines read)."""
        with self.lock.shared():
            generation, _ = self._read_current()
            return changes(self.root, generation, cursor, prefix, most)

    def describe(self) -> dict[str, Any]:
        """Facts for health() and doctor."""
        with self.lock.shared():
            self._refresh(repair=False)
            return {
                "path": str(self.root),
                "generation": self.generation,
                "seq": self.seq,
                "journal_versions": self._pending,
                "journal_bytes": self._offset,
                "checkpoint": self.checkpoint_every,
                "case_sensitive_names": self.names.case_sensitive,
            }


def _compact(text: str) -> str:
    return json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
