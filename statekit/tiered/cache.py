"""An in-process read cache of heads: TTL, max size, hit/miss counts.

The tiered store's first level; the optional shared second level is
:mod:`statekit.tiered.shared`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from statekit.backend import Record

__all__ = ["CacheStats", "ReadCache"]


@dataclass
class CacheStats:
    """Counters shown by ``health()`` / ``statekit doctor``."""

    hits: int = 0
    misses: int = 0
    invalidations: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "invalidations": self.invalidations}


class ReadCache:
    """Head records by key, each served for at most ``ttl`` seconds, at most ``max_size`` keys.

    ``None`` is cached too (the key has no head), so a miss on an absent key is
    not sent to the primary again within the TTL. Least recently used keys go first.
    """

    def __init__(self, *, ttl: float, max_size: int) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self.stats = CacheStats()
        self._entries: OrderedDict[str, tuple[float, Record | None]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, Record | None]:
        """``(True, head)`` when cached and fresh, else ``(False, None)``."""
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            if entry is not None:
                del self._entries[key]
            self.stats.misses += 1
            return False, None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return True, entry[1]

    def put(self, key: str, head: Record | None) -> None:
        """Remember ``head`` (None: no head) for ``key``."""
        current = self._entries.get(key)
        if (
            current is not None
            and current[1] is not None
            and head is not None
            and (current[1].version > head.version)
        ):
            return  # never replace a newer head with an older one read concurrently
        self._entries[key] = (time.monotonic() + self.ttl, head)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def invalidate(self, keys: Iterable[str]) -> None:
        """Forget ``keys``: the next read goes to the primary."""
        for key in keys:
            if self._entries.pop(key, None) is not None:
                self.stats.invalidations += 1

    def holds(self, key: str, version: int) -> bool:
        """True when the cached head of ``key`` is ``version`` or newer (fresh or not)."""
        entry = self._entries.get(key)
        return entry is not None and entry[1] is not None and entry[1].version >= version

    def invalidate_older(self, key: str, version: int) -> None:
        """Forget ``key`` unless the cached head is already ``version`` or newer
        (a commit seen through watch that this store itself made and cached)."""
        entry = self._entries.get(key)
        if entry is not None and (entry[1] is None or entry[1].version < version):
            del self._entries[key]
            self.stats.invalidations += 1

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
