r"""The one place redis-py's exceptions become statekit's, for the store and the shared cache.

Both run their Redis calls through a :class:`statekit.kit.DriverGuard` built by
:func:`guard`; what differs between them is only what their Redis user needs
(named when an ACL refuses a command) and whose keys they are (named when a key
holds another type). docs/backends/redis.md has the table.

"The server cannot be reached or cannot take the call now, the same call may work
later" is :class:`~statekit.errors.BackendUnavailable`: a lost or refused
connection (``ConnectionError``, which covers ``BusyLoadingError`` while the server
loads its data and ``MaxConnectionsError`` when the pool is exhausted), a timeout,
``OSError``, a failover or resharding (``ReadOnlyError``, ``TryAgainError``,
``ClusterDownError`` and the other ``ClusterError``\ s, ``SlotNotCoveredError``,
``MASTERDOWN``, ``UNBLOCKED`` to a blocked read when its master became a replica; no
node of a cluster reachable is a lost connection), a ``BUSY`` (long script) or
``LOADING`` reply. Refused credentials, an ACL refusal, a full server and a
key of the wrong type are :class:`~statekit.errors.BackendError` saying so; anything
else is a BackendError with redis-py's text.
"""

from __future__ import annotations

from functools import partial

from redis import exceptions as rex

from statekit.errors import StatekitError
from statekit.kit import DriverGuard

__all__ = ["DRIVER_ERRORS", "guard", "redis_error"]

DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    rex.RedisError,
    rex.RedisClusterException,  # not a RedisError: the cluster client's own
    OSError,
)
"""What a redis-py call may raise; each is translated by :func:`redis_error`."""


def redis_error(
    guard: DriverGuard, exc: BaseException, *, needs: str, keys: str
) -> StatekitError | None:
    """The statekit error for a redis-py exception (None: the guard's default rule).

    :param needs: what the Redis user must be allowed, named when an ACL refuses a call.
    :param keys: whose keys these are, named when a key holds another type.
    """
    if isinstance(exc, rex.AuthenticationError | rex.AuthorizationError):
        return guard.failed(
            "the server refused the credentials; check the URL's user and password", exc
        )
    if isinstance(exc, rex.TimeoutError):
        return guard.unavailable("no answer in time", exc)
    if isinstance(exc, rex.ConnectionError | rex.RedisClusterUnreachableError):
        return guard.unavailable("cannot reach the server or it cannot take the call now", exc)
    if isinstance(
        exc,
        rex.ReadOnlyError
        | rex.TryAgainError
        | rex.ClusterError
        | rex.SlotNotCoveredError
        | rex.MasterDownError,
    ):
        return guard.unavailable("a failover or resharding is under way", exc)
    message = str(exc)
    if isinstance(exc, rex.ResponseError) and message.startswith(("BUSY", "LOADING")):
        return guard.unavailable("the server is busy (a long script) or loading its data", exc)
    if isinstance(exc, rex.ResponseError) and message.startswith("UNBLOCKED"):
        # A blocked read (watch's XREAD BLOCK) on a master that just became a replica:
        # reading again goes to the new master (MOVED).
        return guard.unavailable("the server changed role (a failover) under a blocked read", exc)
    if isinstance(exc, rex.NoPermissionError):
        return guard.failed(f"the Redis user may not run this; {needs}", exc)
    if isinstance(exc, rex.OutOfMemoryError):
        return guard.failed("the server is full (maxmemory); nothing was written", exc)
    if "WRONGTYPE" in message:
        return guard.failed(f"something other than statekit wrote {keys}", exc)
    return None


def guard(url: str, *, needs: str, keys: str, label: str = "redis") -> DriverGuard:
    """The DriverGuard of a Redis store or cache (see :func:`redis_error` for ``needs``
    and ``keys``); ``url`` is the store URL, or a description of a caller's client."""
    return DriverGuard(
        "redis",
        url,
        errors=DRIVER_ERRORS,
        translate=partial(redis_error, needs=needs, keys=keys),
        label=label,
    )
