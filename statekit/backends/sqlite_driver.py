"""sqlite3 for the SQLite backend (:mod:`statekit.backends.sqlite`): its errors, rows and
key ranges as statekit's, and the small checks of the backend's options."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from typing import Any

from statekit.backend import Record
from statekit.codec import prefix_end
from statekit.errors import ConfigError, StatekitError
from statekit.kit.guard import DriverGuard
from statekit.kit.records import record as row_record

__all__ = ["is_busy", "key_range", "row_to_record", "seconds", "settle", "translate"]


def seconds(name: str, value: float, *, zero_ok: bool) -> float:
    """``value`` if it is a usable number of seconds, else ConfigError naming ``name``."""
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        least = ">= 0" if zero_ok else "> 0"
        raise ConfigError(
            f"sqlite {name}={value!r}: give a finite number of seconds {least}", source="url"
        )
    return value


def is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def translate(guard: DriverGuard, exc: BaseException) -> StatekitError | None:
    """sqlite3's errors as statekit's: a lock held too long or a full disk may pass."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
        return guard.unavailable(f"{text} (another writer held it too long)")
    if "unable to open" in text:
        return guard.failed(
            f"cannot open the file ({text}); does its folder exist and is it writable?"
        )
    if "disk I/O" in text or "full" in text:
        return guard.unavailable(text)
    return None


def row_to_record(row: tuple[Any, ...]) -> Record:
    key, version, kind, data, meta, at = row
    return row_record(key, version, kind, data, meta, at, backend="sqlite")


def key_range(prefix: str) -> tuple[str, str]:
    # Text comparison in SQLite is by UTF-8 bytes, the same order as code points.
    return prefix, prefix_end(prefix) or "\U0010ffff" * 2


def settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
