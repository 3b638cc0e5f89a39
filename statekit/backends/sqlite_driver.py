"""sqlite3 for the SQLite backend (:mod:`statekit.backends.sqlite`): its errors, rows and
key ranges as statekit's, and the small checks of the backend's URL and options."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from typing import Any
from urllib.parse import urlsplit

from statekit.backend import Record
from statekit.codec import prefix_end
from statekit.errors import ConfigError, StatekitError
from statekit.kit.guard import DriverGuard
from statekit.kit.records import record as row_record
from statekit.kit.url import StoreUrl

__all__ = [
    "URL_OPTIONS",
    "is_busy",
    "key_range",
    "parse_url",
    "row_to_record",
    "seconds",
    "settle",
    "translate",
]

URL_OPTIONS = frozenset({"synchronous", "busy_timeout", "poll_interval"})


def parse_url(url: str) -> tuple[StoreUrl, str]:
    """The parsed ``sqlite:///`` URL and the file it names, as given (relative to the
    working directory unless absolute); ConfigError for a URL that names no file."""
    u = StoreUrl.parse(url, backend="sqlite", schemes=("sqlite",), options=URL_OPTIONS)
    parts = urlsplit(url)  # the path as given: a file name keeps its %-escapes
    if parts.netloc:
        raise ConfigError(
            f"sqlite URL {u.shown!r} has a host part; write sqlite:///relative.db "
            "or sqlite:////absolute/path.db",
            source="url",
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path or path == ":memory:":
        raise ConfigError(
            f"sqlite URL {u.shown!r} names no file; use memory:// for a store in memory",
            source="url",
        )
    return u, path


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
