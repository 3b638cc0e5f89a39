"""Keys to file names: reversible, safe on every file system, never a path.

A key is any Unicode text of up to 512 characters: it may hold ``/``, ``..``,
``%``, NUL-free control-free anything. Its file name is the key percent-encoded
byte by byte (UTF-8): only ``A-Z a-z 0-9 - _ .`` stay as they are, everything
else (``/`` included) becomes ``%XX``. So a name never contains a separator,
and since a suffix (``.json``, ``.jsonl``) is always appended, never is ``.``
or ``..``. On a case-insensitive file system upper-case letters are encoded too
(``A`` -> ``%41``), so ``EURUSD`` and ``eurusd`` cannot collide.

A name longer than :data:`MAX_NAME` (file systems allow 255 bytes) becomes
``~`` + the SHA-256 of the key; the key itself is stored inside the file.
"""

from __future__ import annotations

import hashlib
from urllib.parse import unquote

__all__ = ["HASH_MARK", "MAX_NAME", "KeyNames"]

MAX_NAME = 200
"""Longest encoded name kept readable; longer keys are named by their hash."""

HASH_MARK = "~"
"""First character of a hashed name (``~`` is always encoded, so no readable name has it)."""

_LOWER = "abcdefghijklmnopqrstuvwxyz0123456789-_."
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class KeyNames:
    """Turns keys into file names (without suffix) and back.

    :param case_sensitive: whether the folder's file system tells ``A`` from ``a``.
    """

    def __init__(self, *, case_sensitive: bool = True) -> None:
        self.case_sensitive = case_sensitive
        self._safe = frozenset(_LOWER + (_UPPER if case_sensitive else ""))
        self._names: dict[str, str] = {}

    def name(self, key: str) -> str:
        """The file name of ``key`` (no suffix)."""
        found = self._names.get(key)
        if found is not None:
            return found
        safe = self._safe
        parts: list[str] = []
        for ch in key:
            if ch in safe:
                parts.append(ch)
            else:
                parts.extend(f"%{b:02x}" for b in ch.encode("utf-8"))
        name = "".join(parts)
        if len(name) > MAX_NAME:
            name = HASH_MARK + hashlib.sha256(key.encode("utf-8")).hexdigest()
        if len(self._names) < 100_000:  # a cache, not a second copy of a huge key set
            self._names[key] = name
        return name

    @staticmethod
    def key(name: str) -> str | None:
        """The key of a readable name; None for a hashed one (read the key from the file)."""
        if name.startswith(HASH_MARK):
            return None
        return unquote(name, errors="strict")
