"""``file:///dir``: statekit's versioned keys in a folder of plain files.

- Every commit is one line of a JSONL journal, written and fdatasync'ed under an
  exclusive ``flock``: one flush per commit, a multi-key batch in one line, so a
  batch lands whole or not at all even if the process or machine dies.
- Each key's head is a human-readable JSON file and its history a JSONL file,
  brought up to date from the journal by checkpoints (every ``checkpoint``
  versions and on close), each file replaced atomically.
- Several processes may share a folder: writers take the lock exclusively,
  readers shared. ``watch`` polls the journal, so it sees every process's commits.
- All file I/O runs on one private thread per backend, never on the event loop.

URL forms: ``file:///absolute/dir`` and ``file://localhost/absolute/dir``;
``file:relative/dir`` (no slashes after the colon) is relative to the working
directory. Options: ``?checkpoint=10000&lock_timeout=30&poll_interval=0.05``.
POSIX only (``fcntl``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Self, TypeVar

from statekit.backend import Backend, Capability, Guard, Health, Record, Write
from statekit.codec import from_micros, to_micros
from statekit.errors import BackendError, BackendUnavailable, ConfigError, StatekitError
from statekit.kit import CommitFollower, DriverGuard, StoreUrl, appended
from statekit.worker import Worker
from statekit_file.folder import Cursor, Folder, Stamped
from statekit_file.lock import LockTimeout

__all__ = ["FileBackend", "parse_url"]

T = TypeVar("T")
_Queued = tuple[Sequence[Write], Sequence[Guard], "asyncio.Future[Stamped]"]
_Outcome = Stamped | StatekitError

DEFAULT_CHECKPOINT = 10_000
"""Journal versions kept before a checkpoint copies them into the per-key files."""

OPTIONS = ("checkpoint", "lock_timeout", "poll_interval")

# Errors a later retry may get past: the disk fills up and is freed, a quota, a busy file.
_RETRYABLE = {errno.ENOSPC, errno.EDQUOT, errno.EAGAIN, errno.EBUSY, errno.EMFILE, errno.ENFILE}


def parse_url(url: str) -> tuple[Path, dict[str, float]]:
    """The folder and the options the URL gives of a ``file:`` URL; ConfigError if it is
    not one."""
    u = StoreUrl.parse(
        url,
        backend="file",
        schemes=("file",),
        options=OPTIONS,
        example="file:///absolute/dir or file:relative/dir",
    )
    if u.host not in (None, "localhost") or u.port is not None or u.user is not None:
        raise ConfigError(
            f"file URL {u.shown!r} names host {u.host!r}; write file:///absolute/dir "
            "or file:relative/dir",
            source="url",
        )
    if not u.path or u.path == "/":
        raise ConfigError(f"file URL {u.shown!r} names no folder", source="url")
    if u.host == "localhost" and not u.path.startswith("/"):
        raise ConfigError(
            f"file URL {u.shown!r}: the path after the host must be absolute", source="url"
        )
    options: dict[str, float] = {}
    if "checkpoint" in u.options:
        options["checkpoint"] = u.integer("checkpoint", DEFAULT_CHECKPOINT, minimum=1)
    for name in ("lock_timeout", "poll_interval"):
        if name in u.options:
            options[name] = u.seconds(name, 1.0, zero=False)
    return Path(u.path), options


def _translate(
    guard: DriverGuard, exc: BaseException, *, opened: Callable[[], bool]
) -> StatekitError | None:
    """The statekit error for an OS error or a lock held too long (the one place they
    become statekit's, through the backend's DriverGuard)."""
    if isinstance(exc, LockTimeout):
        return BackendUnavailable(f"{guard.label} {exc}", backend=guard.backend)
    if not isinstance(exc, OSError):
        return None
    text = f"{guard.where}: {exc.strerror or exc} ({exc.filename or guard.shown})"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BackendUnavailable(f"{text}: the disk is full; free space", backend=guard.backend)
    if exc.errno in _RETRYABLE:
        return BackendUnavailable(text, backend=guard.backend)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return BackendError(
            f"{text}: no permission; is the folder writable by this user?", backend=guard.backend
        )
    if exc.errno == errno.ENOENT and not opened():
        return BackendError(f"{text}: does the folder's parent exist?", backend=guard.backend)
    return BackendError(f"{text} [{type(exc).__name__}]", backend=guard.backend)


class FileBackend(Backend):
    """A store in a folder of plain files. See the module docstring and docs/backends/file.md.

    :param path: the store folder; created if missing (its parent must exist).
    :param checkpoint: journal versions kept before they are copied to per-key files.
    :param lock_timeout: seconds to wait for another process holding the lock.
    :param poll_interval: seconds between a watcher's looks at the journal.
    """

    name = "file"
    capabilities = frozenset(
        {
            Capability.ATOMIC_BATCH,
            Capability.COMPARE_AND_SET,
            Capability.WATCH,
            Capability.HISTORY,
            Capability.DURABLE,
            Capability.GUARDED_APPEND,
        }
    )

    def __init__(
        self,
        path: str | Path,
        *,
        checkpoint: int = DEFAULT_CHECKPOINT,
        lock_timeout: float = 30.0,
        poll_interval: float = 0.05,
    ) -> None:
        self.path = Path(path).absolute()
        self.poll_interval = poll_interval
        self._folder = Folder(self.path, checkpoint=checkpoint, lock_timeout=lock_timeout)
        self._worker = Worker("statekit-file")
        self._opened = False
        self._guard = DriverGuard(
            self.name,
            str(self.path),
            errors=(OSError, LockTimeout),
            translate=partial(_translate, opened=lambda: self._opened),
            label="file store",
        )
        """The one place OS errors become statekit errors, and the closed state."""
        self._queued: list[_Queued] = []  # appends waiting for the next group commit
        self._committing = False  # a group is with the worker

    @classmethod
    async def open(cls, url: str) -> Self:
        path, options = parse_url(url)
        backend = cls(
            path,
            checkpoint=int(options.get("checkpoint", DEFAULT_CHECKPOINT)),
            lock_timeout=options.get("lock_timeout", 30.0),
            poll_interval=options.get("poll_interval", 0.05),
        )
        try:
            await backend.start()
        except BaseException:
            await backend.aclose()
            raise
        return backend

    async def start(self) -> None:
        """Create or check the folder and repair what a crash left (``open`` calls it)."""
        await self._run(self._folder.open)
        self._opened = True

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._guard.calls():
            return await self._worker.submit(fn, *args)

    # -- the contract ------------------------------------------------------------------

    async def append(
        self, writes: Sequence[Write], at: datetime, *, guards: Sequence[Guard] = ()
    ) -> list[Record]:
        self._guard.check_open()
        future: asyncio.Future[Stamped] = asyncio.get_running_loop().create_future()
        self._queued.append((writes, guards, future))
        if not self._committing:
            self._commit_queued()
        versions, stamped = await future
        # ``stamped`` is the clock read under the lock, past each key's last ``at``.
        return appended(writes, versions, from_micros(stamped))

    def _commit_queued(self) -> None:
        """Hand every queued append to the worker as one group: one flush for all.

        Appends made while a group is being flushed wait and form the next group,
        so concurrent writers share flushes (group commit) and a lone writer pays
        nothing extra. A caller cancelled before its group starts commits nothing.
        """
        group = [queued for queued in self._queued if not queued[2].done()]
        self._queued.clear()
        self._committing = bool(group)
        if not group:
            return
        if self._guard.closed:
            for _, _, future in group:
                future.set_exception(self._guard.closed_error())
            self._committing = False
            return
        job = self._worker.submit(self._folder.append_group, [(w, g) for w, g, _ in group])
        job.add_done_callback(functools.partial(self._settle_group, group))

    def _settle_group(self, group: list[_Queued], job: asyncio.Future[list[_Outcome]]) -> None:
        error = job.exception()
        outcomes = job.result() if error is None else []
        for n, (_, _, future) in enumerate(group):
            if future.done():  # cancelled while its group was flushed: committed all the same
                continue
            outcome = outcomes[n] if error is None else self._guard.failure(error)
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        self._commit_queued()

    async def read(
        self,
        key: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Record]:
        return await self._run(self._folder.read, key, after, before, limit, newest_first)

    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        if not keys:
            return {}
        return await self._run(self._folder.latest, keys)

    async def as_of(self, keys: Sequence[str], at: datetime) -> dict[str, Record]:
        if not keys:
            return {}
        return await self._run(self._folder.as_of, keys, to_micros(at))

    async def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        keys = await self._run(self._folder.keys, prefix)
        for start in range(0, len(keys), 500):  # the lock is not held while the caller works
            for record in await self._run(self._folder.live_heads, keys[start : start + 500], kind):
                yield record

    async def prune(self, key: str, before_version: int) -> int:
        return await self._run(self._folder.prune, key, before_version)

    async def replicate(self, records: Sequence[Record]) -> None:
        """Store ``records`` as given; versions at or below a key's head are skipped."""
        if records:
            await self._run(self._folder.replicate, records)

    async def checkpoint(self) -> None:
        """Bring every head and history file up to date with the journal now."""
        await self._run(self._folder.checkpoint)

    async def watch(self, prefix: str = "") -> AsyncIterator[Record]:
        async def read(cursor: Cursor) -> tuple[list[Record], Cursor]:
            return await self._run(self._folder.changes, cursor, prefix)

        # retry=False: a lock held too long (BackendUnavailable) goes to the caller.
        return await CommitFollower.start(
            lambda: self._run(self._folder.cursor),
            read,
            backend=self.name,
            where=str(self.path),
            interval=self.poll_interval,
            retry=False,
        )

    async def health(self) -> Health:
        started = time.perf_counter()
        detail = await self._run(self._folder.describe)
        return Health(True, (time.perf_counter() - started) * 1000, detail)

    async def aclose(self) -> None:
        if self._guard.closed:
            return
        if self._opened and self._folder.wrote:
            # Tidy, not needed: every commit is already in the synced journal.
            with contextlib.suppress(BackendError):
                await self._run(self._folder.checkpoint)
        self._guard.close()
        await self._worker.submit(self._folder.close)
        self._worker.stop()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "path": str(self.path),
            "checkpoint": self._folder.checkpoint_every,
        }
