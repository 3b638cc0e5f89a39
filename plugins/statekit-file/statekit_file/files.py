"""Durable file primitives: atomic replace, directory sync, complete JSONL lines."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["complete_lines", "datasync", "fsync_dir", "last_line", "read_file", "write_atomic"]

datasync = getattr(os, "fdatasync", os.fsync)
"""fdatasync where the OS has it (Linux), else fsync (macOS)."""


def fsync_dir(path: Path) -> None:
    """Make the entries of a folder (new, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Replace ``path`` by ``data``: a temp file beside it, fsync, rename, folder fsync.

    A crash leaves the old file or the new one, never a mix. The temp file is named
    ``<name>.tmp-<pid>``; a store's ``open`` removes those a dead process left.
    """
    temp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    os.close(fd)
    os.replace(temp, path)
    if sync_dir:
        fsync_dir(path.parent)


def read_file(path: Path) -> bytes | None:
    """The bytes of ``path``, or None if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def complete_lines(data: bytes) -> tuple[list[bytes], int]:
    """The complete (newline-ended) lines of ``data`` and how many bytes they span.

    Bytes after the last newline are a line still being written or torn by a
    crash: never returned.
    """
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), end


def last_line(fd: int, *, repair: bool) -> bytes | None:
    """The last complete line of an open JSONL file, or None if it has none.

    With ``repair``, a torn tail (bytes after the last newline, left by a killed
    writer) is truncated away; the caller must hold the store's exclusive lock.
    """
    size = os.fstat(fd).st_size
    chunk = 65536
    while True:
        start = max(0, size - chunk)
        data = os.pread(fd, size - start, start)
        end = data.rfind(b"\n") + 1
        if end == 0 and start > 0:  # no newline in this chunk: look further back
            chunk *= 4
            continue
        if repair and start + end < size:
            os.ftruncate(fd, start + end)
        if end == 0:
            return None
        before = data.rfind(b"\n", 0, end - 1) + 1
        if before == 0 and start > 0:  # the last line starts before this chunk
            chunk *= 4
            continue
        return data[before : end - 1]
