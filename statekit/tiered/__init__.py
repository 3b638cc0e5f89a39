"""The tiered store: a primary backend with read caches, mirrors and a fallback journal.

``await statekit.open(primary_url, cache=True, mirrors=["influxdb://..."],
fallback="statekit-fallback.db")``; ``cache={"shared_url": "redis://..."}`` adds a
second cache level shared by processes. See docs/tiered.md.
"""

from statekit.tiered.backend import WRITE_ID, TieredBackend
from statekit.tiered.cache import CacheStats, ReadCache
from statekit.tiered.journal import FallbackJournal
from statekit.tiered.mirrors import Mirror, MirrorStats
from statekit.tiered.shared import SharedCache, SharedCacheStats, SharedLevel

__all__ = [
    "WRITE_ID",
    "CacheStats",
    "FallbackJournal",
    "Mirror",
    "MirrorStats",
    "ReadCache",
    "SharedCache",
    "SharedCacheStats",
    "SharedLevel",
    "TieredBackend",
]
