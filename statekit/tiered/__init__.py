"""The tiered store: a primary backend with a read cache, mirrors and a fallback journal.

``await statekit.open(primary_url, cache=True, mirrors=["influxdb://..."],
fallback="statekit-fallback.db")``; see docs/tiered.md.
"""

from statekit.tiered.backend import WRITE_ID, TieredBackend
from statekit.tiered.cache import CacheStats, ReadCache
from statekit.tiered.journal import FallbackJournal
from statekit.tiered.mirrors import Mirror, MirrorStats

__all__ = [
    "WRITE_ID",
    "CacheStats",
    "FallbackJournal",
    "Mirror",
    "MirrorStats",
    "ReadCache",
    "TieredBackend",
]
