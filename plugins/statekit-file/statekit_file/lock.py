"""The cross-process lock of a store folder: ``fcntl.flock`` on its ``lock`` file.

Writers (append, prune, checkpoint, replicate) hold it exclusively; readers hold
it shared, so they never see a journal line whose writer has not finished
syncing it. ``flock`` locks belong to an open file, so two backends in one
process exclude each other as two processes do.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["FolderLock", "LockTimeout"]


class LockTimeout(Exception):
    """The lock stayed busy for longer than the timeout (translated by the backend)."""

    def __init__(self, path: Path, seconds: float) -> None:
        super().__init__(f"{path}: still locked by another writer after {seconds:g} s")
        self.path = path


class FolderLock:
    """``flock`` on one file, with a timeout.

    :param path: the lock file (created if missing, never deleted).
    :param timeout: seconds to wait for a busy lock before :class:`LockTimeout`.
    """

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None

    def open(self) -> None:
        """Open the lock file (before the first lock)."""
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def close(self) -> None:
        """Close the lock file (releases a lock still held)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _acquire(self, mode: int) -> None:
        fd = self._fd
        assert fd is not None, "FolderLock.open() first"
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        deadline = time.monotonic() + self.timeout
        pause = 0.0001
        while True:
            # Polling rather than a blocking flock: a blocking one cannot time out.
            time.sleep(pause)
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(self.path, self.timeout) from None
                pause = min(pause * 2, 0.005)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock alone."""
        self._acquire(fcntl.LOCK_EX)
        try:
            yield
        finally:
            assert self._fd is not None
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the lock together with other readers."""
        self._acquire(fcntl.LOCK_SH)
        try:
            yield
        finally:
            assert self._fd is not None
            fcntl.flock(self._fd, fcntl.LOCK_UN)
