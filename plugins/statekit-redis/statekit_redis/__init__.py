"""statekit-redis: statekit's versioned keys in Redis (``redis://`` and ``rediss://``).

Install ``statekit-redis`` and open a store with
``await statekit.open("redis://localhost:6379/0?namespace=myapp")``.
``cache={"shared_url": "redis://..."}`` shares a tiered store's read cache through
Redis (:class:`RedisCache`). See docs/backends/redis.md.
"""

from statekit_redis.backend import RedisBackend
from statekit_redis.cache import RedisCache
from statekit_redis.layout import Layout
from statekit_redis.persistence import Persistence

__all__ = ["Layout", "Persistence", "RedisBackend", "RedisCache"]

__version__ = "0.1.0"
