"""statekit-redis: statekit's versioned keys in Redis (``redis://`` and ``rediss://``).

Install ``statekit-redis`` and open a store with
``await statekit.open("redis://localhost:6379/0?namespace=myapp")``.
See docs/backends/redis.md.
"""

from statekit_redis.backend import RedisBackend
from statekit_redis.layout import Layout
from statekit_redis.persistence import Persistence

__all__ = ["Layout", "Persistence", "RedisBackend"]
