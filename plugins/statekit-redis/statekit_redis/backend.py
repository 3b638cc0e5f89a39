"""``redis://host:port/db?namespace=...``: statekit's versioned keys in Redis.

- One append is one Lua script (:data:`statekit_redis.scripts.APPEND`): it checks
  every write's ``expect`` first, then writes all versions, heads, the live-key
  index and one watch-log entry per write. A script runs atomically, so a batch
  lands whole or not at all, and concurrent writers (tasks or processes) never
  both win.
- History is a ZSET per key (score = version), so ranges and prune are single
  commands. See :mod:`statekit_redis.layout` for every key.
- ``watch`` reads the namespace's log stream with ``XREAD BLOCK`` on a connection of
  its own, resuming after a lost connection from the last entry it delivered.
- Durability is the server's: ``durable`` is declared only when AOF is on
  (:mod:`statekit_redis.persistence`; on a cluster, on every node). ``?wait=N`` makes
  each append wait until N replicas hold it (``WAIT``), for a failover.
- ``redis+cluster://`` opens a Redis Cluster client (:mod:`statekit_redis.cluster`):
  a namespace is one hash slot, so the same commands and scripts run on its master.
- redis-py errors become statekit errors in one place, :mod:`statekit_redis.translate`
  (shared with the cache), through the backend's :class:`~statekit.kit.DriverGuard`.
  redis-py's own retries are off: a write whose reply was lost must not be sent
  twice (it could append the same change as two versions). Callers retry on
  :class:`~statekit.errors.BackendUnavailable`; the next call reconnects.

URL: ``redis[s]://[[user]:password@]host[:port][/db][?namespace=default&log_max=100000]``,
``redis[s]+cluster://host1:port1[,host2:port2...][?namespace=...]``, ``&wait=N&wait_timeout=s``,
plus redis-py's connection options (:mod:`statekit_redis.options`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Self, TypeVar

from redis.asyncio.cluster import RedisCluster

from statekit.backend import (
    ANY,
    JSON,
    Backend,
    Capability,
    Guard,
    Health,
    Record,
    Write,
    check_expect,
)
from statekit.codec import from_micros, prefix_end, to_micros
from statekit.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    ConflictError,
    StatekitError,
)
from statekit.kit import CommitFollower, appended
from statekit_redis.cluster import Client, open_client, run_and_wait
from statekit_redis.layout import LAYOUT_VERSION, Layout, check_namespace, decode, tail
from statekit_redis.options import (
    DEFAULT_LOG_MAX,
    DEFAULT_NAMESPACE,
    DEFAULT_WAIT_TIMEOUT,
    parse_url,
)
from statekit_redis.persistence import UNKNOWN, Persistence, server_facts
from statekit_redis.scripts import APPEND, AS_OF, LATEST, PRUNE
from statekit_redis.translate import DRIVER_ERRORS, guard

__all__ = ["INLINE_MAX", "RedisBackend"]

T = TypeVar("T")

log = logging.getLogger("statekit.redis")

BASE_CAPABILITIES = frozenset(
    {
        Capability.ATOMIC_BATCH,
        Capability.COMPARE_AND_SET,
        Capability.WATCH,
        Capability.HISTORY,
        Capability.GUARDED_APPEND,
    }
)
PAGE = 500
"""Keys per scan page, keys per latest() script call, log entries per XREAD."""
INLINE_MAX = 4096
"""A version whose text is at most this many bytes travels inside its log entry;
a larger one is read from its history by the watcher."""
MIN_SERVER = (5, 0)
"""Streams and the commands the scripts use exist since Redis 5.0."""


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _command_retries(client: Client, kwargs: Mapping[str, Any]) -> int:
    """How often a client's connections re-send a command after a connection error
    (as redis-py's connections decide it from their pool's arguments; a cluster client
    retries the whole command itself, its nodes' connections never do)."""
    retry = client.retry if isinstance(client, RedisCluster) else kwargs.get("retry")
    if retry is not None:
        get = getattr(retry, "get_retries", None)
        return int(get() if get is not None else getattr(retry, "_retries", 0))
    return 1 if kwargs.get("retry_on_error") or kwargs.get("retry_on_timeout") else 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Follower(CommitFollower[int]):
    """A watch following the namespace's log stream (statekit.kit's follower: it resumes
    after a lost connection from the last entry it delivered)."""

    def __init__(self, watcher: Client | None, **follower: Any) -> None:
        super().__init__(**follower)
        self._watcher = watcher

    async def close(self, *, by_backend: bool = False) -> None:
        await super().close(by_backend=by_backend)
        if self._watcher is not None:
            with contextlib.suppress(*DRIVER_ERRORS):
                await self._watcher.aclose()  # gives its connection back to the pool


class RedisBackend(Backend):
    """Versioned keys in one namespace of a Redis database.

    Open it with :meth:`open` (from a URL) or :meth:`from_client` (an existing
    ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``, which
    :meth:`aclose` then leaves open).

    :param client: a ``redis.asyncio.Redis`` or ``RedisCluster`` speaking RESP2 with
        ``decode_responses=False``.
    :param namespace: the statekit namespace (key prefix) in the database.
    :param log_max: about how many entries the watch log keeps.
    :param owns_client: close ``client`` in :meth:`aclose`.
    :param url: the store URL, named in errors with its secrets masked (default: a
        description of the caller's client).
    :param wait: replicas each append waits for (``WAIT``); 0 = none.
    :param wait_timeout: seconds an append waits for them; fewer is BackendUnavailable.
    """

    name = "redis"
    capabilities = BASE_CAPABILITIES

    def __init__(
        self,
        client: Client,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        log_max: int = DEFAULT_LOG_MAX,
        owns_client: bool = False,
        url: str | None = None,
        wait: int = 0,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    ) -> None:
        self._cluster = isinstance(client, RedisCluster)
        kwargs = (
            client.get_connection_kwargs()
            if isinstance(client, RedisCluster)
            else client.connection_pool.connection_kwargs
        )
        if kwargs.get("decode_responses"):
            raise ConfigError("statekit-redis needs a client with decode_responses=False")
        if str(kwargs.get("protocol", 2)) not in {"2", "None"}:
            raise ConfigError("statekit-redis needs a client speaking RESP2 (protocol=2)")
        if _command_retries(client, kwargs):
            # A lost reply to an append that did run would be re-sent and append the
            # change twice; statekit's callers retry on BackendUnavailable instead.
            raise ConfigError(
                "statekit-redis needs a client that does not re-send commands: build it "
                "with retry=Retry(NoBackoff(), 0) (redis.asyncio.retry, redis.backoff)"
            )
        self._client = client
        self.namespace = check_namespace(namespace)
        self.layout = Layout(self.namespace)
        self.log_max = log_max
        self.wait = wait
        self.wait_timeout = wait_timeout
        self.guard = guard(
            url or "(existing client)",
            needs="statekit-redis needs EVALSHA, SCRIPT LOAD, XREAD and read/write access "
            "to the keys sk:{<namespace>}:*",
            keys=f"keys of namespace {self.namespace!r} ({self.layout.prefix}*)",
        )
        """The one place redis-py errors become statekit's, and the closed state."""
        self.shown = self.guard.shown
        self.persistence = Persistence(UNKNOWN, UNKNOWN, UNKNOWN, "none")
        """What the server kept on disk when this backend was opened."""
        self.server_version = UNKNOWN
        self._owns_client = owns_client
        self._append = client.register_script(APPEND)
        self._latest = client.register_script(LATEST)
        self._prune = client.register_script(PRUNE)
        self._as_of = client.register_script(AS_OF)
        # XREAD BLOCK must return well before redis-py's read timeout fires.
        timeout = kwargs.get("socket_timeout", 5.0)
        self._block_ms = 2000 if timeout is None else max(1, min(2000, int(timeout * 500)))

    @classmethod
    async def open(cls, url: str) -> Self:
        """Connect to the server of ``url`` and check it (version, persistence, layout)."""
        options = parse_url(url)
        kwargs: dict[str, Any] = {}
        if options.connect_timeout is not None:
            kwargs["socket_connect_timeout"] = options.connect_timeout
        client = open_client(options, source="url", **kwargs)
        try:
            backend = cls(
                client,
                namespace=options.namespace,
                log_max=options.log_max,
                owns_client=True,
                url=url,
                wait=options.wait,
                wait_timeout=options.wait_timeout,
            )
            await backend._setup()
        except BaseException:
            await client.aclose()
            raise
        return backend

    @classmethod
    async def from_client(
        cls,
        client: Client,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        log_max: int = DEFAULT_LOG_MAX,
    ) -> Self:
        """A backend on an existing client; :meth:`aclose` does not close the client.

        The client must use RESP2, ``decode_responses=False`` and no command
        retries (``retry=Retry(NoBackoff(), 0)``; ``Redis.from_url`` gives that, the
        ``Redis(host=...)`` constructor of redis-py 6+ retries by default): a retried
        append whose first reply was lost would be applied twice. Otherwise ConfigError.
        """
        backend = cls(client, namespace=namespace, log_max=log_max, owns_client=False)
        await backend._setup()
        return backend

    async def _run(self, call: Callable[[Client], Awaitable[T]]) -> T:
        with self.guard.calls():  # BackendError once closed; redis-py errors translated
            return await call(self._client)

    # -- setup and facts ---------------------------------------------------------------

    async def _server_facts(self, client: Client) -> tuple[Persistence, dict[str, Any]]:
        return await server_facts(client, self.layout.meta)

    async def _append_script(self, client: Client, keys: list[str], args: list[Any]) -> Any:
        """Run the append script; with ``wait``, then ``WAIT`` on the same connection."""
        if not self.wait:
            return await self._append(keys, args, client)
        timeout_ms = max(1, round(self.wait_timeout * 1000))
        reply, acked = await run_and_wait(
            client, self._append, keys, args, replicas=self.wait, timeout_ms=timeout_ms
        )
        if acked < self.wait and reply[0] == 1:
            raise BackendUnavailable(
                f"redis {self.shown}: the append is on the master but only {acked} of "
                f"wait={self.wait} replicas acknowledged it within {self.wait_timeout}s; a "
                "failover now could lose it (read the key before writing it again)",
                backend=self.name,
            )
        return reply

    async def _setup(self) -> None:
        persistence, server = await self._run(self._server_facts)
        self.persistence = persistence
        self.server_version = str(server.get("redis_version", UNKNOWN))
        if self.server_version != UNKNOWN and _version_tuple(self.server_version) < MIN_SERVER:
            raise BackendError(
                f"redis {self.shown}: server {self.server_version} is too old; statekit-redis "
                "needs Redis 5.0 or later (6.2 or 7.x recommended)",
                backend=self.name,
            )
        if persistence.durable:
            self.capabilities = BASE_CAPABILITIES | {Capability.DURABLE}
        for warning in persistence.warnings():
            log.warning("redis %s: %s", self.shown, warning)

        async def mark_layout(client: Client) -> Any:
            pipe = client.pipeline(transaction=False)
            pipe.hsetnx(self.layout.meta, "layout", LAYOUT_VERSION)
            pipe.hget(self.layout.meta, "layout")
            return await pipe.execute(raise_on_error=False)

        # A read-only user cannot mark the layout; reading it back is what matters.
        _, stored = await self._run(mark_layout)
        if isinstance(stored, Exception):
            raise self.guard.translate(stored) from stored
        if stored is not None and int(stored) > LAYOUT_VERSION:
            raise BackendError(
                f"redis {self.shown}: namespace {self.namespace!r} has layout version "
                f"{int(stored)}, written by a newer statekit-redis (this one knows "
                f"{LAYOUT_VERSION}); upgrade statekit-redis",
                backend=self.name,
            )
        if stored is not None and int(stored) < LAYOUT_VERSION:
            # Layout 1 data reads and writes on (the scripts fall back for it); marking
            # the namespace makes an older statekit-redis refuse it instead of misreading
            # the heads this one writes.
            upgrade = self.layout.meta, "layout", LAYOUT_VERSION
            with contextlib.suppress(StatekitError):  # read-only user: nothing to mark
                await self._run(lambda c: c.hset(*upgrade))

    # -- the contract --------------------------------------------------------------------

    async def append(
        self, writes: Sequence[Write], at: datetime, *, guards: Sequence[Guard] = ()
    ) -> list[Record]:
        layout = self.layout
        history = layout.history_prefix
        keys = [layout.heads, layout.live, layout.log, layout.seq]
        args: list[str | int] = [self.log_max, INLINE_MAX]
        for w in writes:
            data = w.data_json()
            keys.append(history + w.key)
            args += (
                w.key,
                "" if w.expect is ANY else w.expect,
                "0" if data is None else "1",
                tail(w.kind, w.meta_json(), data),
            )
        for g in guards:  # heads fields, checked by the script: no KEYS of their own
            args += (g.key, g.version)
        reply = await self._run(lambda client: self._append_script(client, keys, args))
        if reply[0] == 2:
            guard = guards[int(reply[1]) - 1]
            raise ConflictError(guard.key, guard.version, int(reply[2]), backend=self.name)
        if reply[0] != 1:
            _, index, head, live = reply
            write = writes[int(index) - 1]
            check_expect(write, int(head), not live, backend=self.name)  # raises ConflictError
            raise BackendError(
                f"redis {self.shown}: the append script refused {write.key!r} "
                f"(expect={write.expect!r}, head {head}) but check_expect accepts it",
                backend=self.name,
            )
        # The script stamps the server's clock, raised past each key's previous `at`.
        versions = [int(version) for version in reply[1].split()]
        return appended(writes, versions, from_micros(int(reply[2])))

    async def read(
        self,
        key: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Record]:
        history = self.layout.history(key)
        low = f"({after}"
        high = "+inf" if before is None else f"({before}"
        start, num = (0, limit) if limit else (None, None)
        rows: list[Any]
        if newest_first:
            rows = await self._run(
                lambda c: c.zrevrangebyscore(history, high, low, start=start, num=num)
            )
        else:
            rows = await self._run(
                lambda c: c.zrangebyscore(history, low, high, start=start, num=num)
            )
        return [decode(key, row) for row in rows]

    async def _heads(self, keys: Sequence[str]) -> list[bytes | None]:
        """The head record text of each key (None where there is none), in order."""
        if len(keys) == 1:
            top: list[Any] = await self._run(
                lambda c: c.zrange(self.layout.history(keys[0]), -1, -1)
            )
            return [top[0] if top else None]
        history = self.layout.history_prefix
        found: list[bytes | None] = []
        for start in range(0, len(keys), PAGE):  # keep each script short for the server
            names = [history + key for key in keys[start : start + PAGE]]
            found += await self._run(lambda c: self._latest(names, [], c))  # noqa: B023
        return found

    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        if not keys:
            return {}
        return {
            key: decode(key, text)
            for key, text in zip(keys, await self._heads(keys), strict=True)
            if text is not None
        }

    async def as_of(self, keys: Sequence[str], at: datetime) -> dict[str, Record]:
        history = self.layout.history_prefix
        found: dict[str, Record] = {}
        for start in range(0, len(keys), PAGE):  # keep each script short for the server
            page = keys[start : start + PAGE]
            names = [history + key for key in page]
            texts = await self._run(
                lambda c: self._as_of(names, [to_micros(at)], c)  # noqa: B023
            )
            found.update(
                (key, decode(key, text)) for key, text in zip(page, texts, strict=True) if text
            )
        return found

    async def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        live = self.layout.live
        # Lex order of a ZSET is byte order, which for UTF-8 is code point order.
        low = "[" + prefix if prefix else "-"
        end = prefix_end(prefix)
        high = "(" + end if end is not None else "+"
        while True:
            names: list[Any] = await self._run(
                lambda c: c.zrangebylex(live, low, high, start=0, num=PAGE)  # noqa: B023
            )
            if not names:
                return
            keys = [_text(name) for name in names]
            for key, text in zip(keys, await self._heads(keys), strict=True):
                if text is None:
                    continue  # gone since the page was listed
                record = decode(key, text)
                if record.deleted or (kind is not None and record.kind != kind):
                    continue  # deleted since the page was listed, or another kind
                yield record
            if len(names) < PAGE:
                return
            low = "(" + keys[-1]

    async def prune(self, key: str, before_version: int) -> int:
        keys = [self.layout.heads, self.layout.history(key)]
        dropped = await self._run(lambda c: self._prune(keys, [key, before_version], c))
        return int(dropped)

    async def watch(self, prefix: str = "") -> AsyncIterator[Record]:
        last = await self._run(lambda c: c.get(self.layout.seq))
        # A client of its own: XREAD BLOCK holds a connection while it waits. A cluster
        # client takes a connection of the slot's master per command (and drops one
        # whose reply was abandoned), so the watch shares it and follows the slot.
        client = self._client
        watcher = client if isinstance(client, RedisCluster) else client.client()

        async def read(seq: int) -> tuple[list[Record], int]:
            changes = await self._changes(watcher, seq, prefix)
            records = [record for _, record in changes if record is not None]
            return records, changes[-1][0] if changes else seq

        # No pause between reads: XREAD BLOCK already waits for the next entry.
        return _Follower(
            None if watcher is self._client else watcher,
            backend=self.name,
            where=self.shown,
            read=read,
            cursor=int(last) if last is not None else 0,
            interval=0,
        )

    async def _changes(
        self, watcher: Client, seq: int, prefix: str
    ) -> list[tuple[int, Record | None]]:
        """The log entries after ``seq``: (position, record or None when outside ``prefix``)."""
        log_key = self.layout.log
        reply: Any = await self._run(
            lambda _: watcher.xread({log_key: f"{seq}-0"}, count=PAGE, block=self._block_ms)
        )
        if not reply:
            return []
        changes: list[tuple[int, Record | None]] = []
        large: list[tuple[int, str, int]] = []  # (index in changes, key, version)
        expected = seq + 1
        for entry_id, fields in reply[0][1]:
            position = int(_text(entry_id).split("-", 1)[0])
            if position != expected:
                raise BackendError(
                    f"redis {self.shown}: watch fell behind: log entries {expected} to "
                    f"{position - 1} of namespace {self.namespace!r} were trimmed "
                    f"(log_max={self.log_max}) before it read them, so those commits cannot "
                    "be delivered; raise log_max, and re-read the state with scan()",
                    backend=self.name,
                )
            expected += 1
            key = _text(fields[b"k"])
            if not key.startswith(prefix):
                changes.append((position, None))
            elif b"r" in fields:
                changes.append((position, decode(key, fields[b"r"])))
            else:
                large.append((len(changes), key, int(fields[b"v"])))
                changes.append((position, None))
        if large:
            texts = await self._run(lambda c: self._versions(c, large))
            for (index, key, version), text in zip(large, texts, strict=True):
                if not text:
                    raise BackendError(
                        f"redis {self.shown}: watch cannot deliver version {version} of "
                        f"{key!r}: it was pruned before the watcher read it",
                        backend=self.name,
                    )
                changes[index] = (changes[index][0], decode(key, text[0]))
        return changes

    async def _versions(self, client: Client, wanted: Sequence[tuple[int, str, int]]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for _, key, version in wanted:
            pipe.zrangebyscore(self.layout.history(key), version, version)
        return await pipe.execute()

    async def _facts(self, client: Client) -> dict[str, JSON]:
        persistence, server = await self._server_facts(client)
        pipe = client.pipeline(transaction=False)
        pipe.hlen(self.layout.heads)
        pipe.zcard(self.layout.live)
        pipe.xlen(self.layout.log)
        keys, live, logged = await pipe.execute()
        warnings = persistence.warnings()
        if Capability.DURABLE in self.capabilities and not persistence.durable:
            warnings.append(
                "the server persisted when this store was opened, but does not now; "
                "statekit still declares 'durable' until the store is reopened"
            )
        return {
            "server": f"redis {server.get('redis_version', UNKNOWN)}",
            "mode": str(server.get("redis_mode", UNKNOWN)),
            "namespace": self.namespace,
            "keys": int(keys),
            "live_keys": int(live),
            "log_entries": int(logged),
            "log_max": self.log_max,
            "wait": self.wait,
            "persistence": persistence.detail(),
            "durable": Capability.DURABLE in self.capabilities,
            "warnings": list(warnings),
        }

    async def health(self) -> Health:
        started = time.perf_counter()
        await self._run(lambda c: c.ping())
        latency = (time.perf_counter() - started) * 1000
        return Health(True, latency, await self._run(self._facts))

    async def aclose(self) -> None:
        if self.guard.close() and self._owns_client:
            # Closing is best effort: every append is already on the server.
            try:
                await self._client.aclose()
            except DRIVER_ERRORS as exc:
                log.debug("redis %s: error while closing: %s", self.shown, exc)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "url": self.shown,
            "namespace": self.namespace,
            "log_max": self.log_max,
            "wait": self.wait,
            "persistence": self.persistence.describe(),
        }

    # -- tools ---------------------------------------------------------------------------

    async def drop_namespace(self, *, forget: bool = False) -> int:
        """Delete every Redis key of this namespace: all versions, heads and the log.

        For tests and tools; not atomic, so stop writers first. Returns how many
        Redis keys were deleted.
        """

        async def drop(client: Client) -> int:
            history = self.layout.history_prefix
            deleted, cursor = 0, 0
            while True:
                page: Any = await client.hscan(self.layout.heads, cursor, count=PAGE)
                cursor, heads = page
                if heads:
                    deleted += await client.unlink(*(history + _text(key) for key in heads))
                if cursor == 0:
                    break
            return deleted + int(await client.unlink(*self.layout.fixed()))

        return await self._run(drop)
