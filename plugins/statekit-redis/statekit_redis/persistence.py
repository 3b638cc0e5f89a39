"""What the Redis server keeps on disk, and whether that makes statekit's data durable.

Redis holds data in memory; durability is the server's persistence settings:

- ``appendonly yes`` (AOF): every write is appended to a log before the reply
  is sent, so a crash of the Redis process loses nothing. ``appendfsync``
  decides when the log reaches the disk: ``always`` (every write),
  ``everysec`` (a machine crash can lose about the last second), ``no`` (the OS
  decides; a machine crash can lose tens of seconds).
- ``save`` (RDB snapshots) alone: writes since the last snapshot are lost when
  the server stops uncleanly, so statekit does **not** declare ``durable``.
- Neither: everything is lost when the server stops.
- Eviction: with ``maxmemory`` set and an ``allkeys-*`` ``maxmemory-policy``, a
  full server deletes keys of its choosing, statekit's included. statekit keys
  have no TTL, so ``noeviction`` and the ``volatile-*`` policies never touch them.

``CONFIG`` is often disabled on managed Redis. Then ``INFO persistence`` tells
whether AOF is on; the snapshot schedule stays unknown.

On Redis Cluster each node keeps its own AOF and any replica may become its slot's
master, so :func:`server_facts` reads every node and reports the least durable one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster

from statekit.backend import JSON
from statekit_redis.translate import DRIVER_ERRORS

if TYPE_CHECKING:
    from statekit_redis.cluster import Client

__all__ = ["FACTS", "UNKNOWN", "Persistence", "node_facts", "server_facts"]

UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Persistence:
    """The persistence settings read from the server (``unknown`` when it would not say).

    :param appendonly: ``yes``, ``no`` or ``unknown``.
    :param appendfsync: ``always``, ``everysec``, ``no`` or ``unknown``.
    :param save: the RDB snapshot schedule (``""`` = none) or ``unknown``.
    :param source: where the facts came from: ``CONFIG GET``, ``INFO`` or ``none``.
    :param maxmemory: the memory limit in bytes (``0`` = none) or ``unknown``.
    :param maxmemory_policy: what a full server evicts, or ``unknown``.
    """

    appendonly: str
    appendfsync: str
    save: str
    source: str
    maxmemory: str = UNKNOWN
    maxmemory_policy: str = UNKNOWN

    @classmethod
    def from_server(
        cls, config: Mapping[str, str] | None, info: Mapping[str, object] | None
    ) -> Persistence:
        """Build from ``CONFIG GET`` results (None if refused) and ``INFO persistence``
        + ``INFO memory`` (None if refused)."""
        info = info or {}
        maxmemory = str(info.get("maxmemory", UNKNOWN))
        policy = str(info.get("maxmemory_policy", UNKNOWN))
        if config is not None and "appendonly" in config:
            return cls(
                appendonly=str(config["appendonly"]).lower(),
                appendfsync=str(config.get("appendfsync", UNKNOWN)).lower(),
                save=str(config.get("save", UNKNOWN)),
                source="CONFIG GET",
                maxmemory=str(config.get("maxmemory", maxmemory)),
                maxmemory_policy=str(config.get("maxmemory-policy", policy)).lower(),
            )
        if "aof_enabled" in info:
            return cls(
                appendonly="yes" if str(info["aof_enabled"]) == "1" else "no",
                appendfsync=UNKNOWN,
                save=UNKNOWN,
                source="INFO",
                maxmemory=maxmemory,
                maxmemory_policy=policy,
            )
        return cls(UNKNOWN, UNKNOWN, UNKNOWN, "none", maxmemory, policy)

    @property
    def evicts(self) -> bool:
        """True when a full server may delete statekit's keys (they have no TTL)."""
        return self.maxmemory not in {"0", UNKNOWN} and self.maxmemory_policy.startswith("allkeys")

    @property
    def durable(self) -> bool:
        """True when a write acknowledged by the server survives a crash of the server
        and is never evicted."""
        return self.appendonly == "yes" and not self.evicts

    def warnings(self) -> list[str]:
        """What an operator should know, in one sentence each."""
        found = []
        if self.evicts:
            found.append(
                f"maxmemory-policy {self.maxmemory_policy} with maxmemory {self.maxmemory}: a "
                "full server evicts keys, statekit's included, losing state; use noeviction"
            )
        if self.appendonly == "yes":
            if self.appendfsync == "no":
                found.append(
                    "appendfsync no: the OS decides when the AOF reaches the disk; a machine "
                    "crash can lose tens of seconds of writes (use everysec or always)"
                )
        elif self.appendonly == UNKNOWN:
            found.append(
                "cannot read the server's persistence settings (CONFIG and INFO refused): "
                "durability unknown, so the 'durable' capability is not declared"
            )
        elif self.save == "":
            found.append(
                "Redis keeps nothing on disk (appendonly no, save ''): every write is lost "
                "when the server stops; turn on appendonly for durable state"
            )
        else:
            schedule = "unknown schedule" if self.save == UNKNOWN else f"save {self.save!r}"
            found.append(
                f"Redis keeps only RDB snapshots ({schedule}): writes since the last snapshot "
                "are lost when the server stops uncleanly; turn on appendonly for durable state"
            )
        return found

    def detail(self) -> dict[str, JSON]:
        """Facts for ``health()`` / ``statekit doctor``."""
        return {
            "appendonly": self.appendonly,
            "appendfsync": self.appendfsync,
            "save": self.save,
            "maxmemory": self.maxmemory,
            "maxmemory_policy": self.maxmemory_policy,
            "source": self.source,
        }

    def describe(self) -> str:
        """One line, e.g. ``appendonly=yes appendfsync=everysec save=''``."""
        return f"appendonly={self.appendonly} appendfsync={self.appendfsync} save={self.save!r}"


FACTS: list[tuple[str, ...]] = [
    ("INFO", "server"),
    ("INFO", "persistence"),
    ("INFO", "memory"),
    *(
        ("CONFIG GET", name)
        for name in ("appendonly", "appendfsync", "save", "maxmemory", "maxmemory-policy")
    ),
]
"""The commands that tell a server's version and persistence (CONFIG may be refused)."""


def node_facts(replies: Sequence[Any]) -> tuple[Persistence, dict[str, Any]]:
    """The persistence and ``INFO server`` of one server from the replies to ``FACTS``."""
    server, on_disk, memory, *configs = replies
    config: dict[str, str] | None = {}
    for reply in configs:
        if isinstance(reply, Exception) or config is None:
            config = None  # CONFIG is disabled or forbidden: managed Redis
        else:
            config.update(reply)
    info = {
        **({} if isinstance(on_disk, Exception) else on_disk),
        **({} if isinstance(memory, Exception) else memory),
    }
    persistence = Persistence.from_server(config, info or None)
    return persistence, {} if isinstance(server, Exception) else server


async def server_facts(client: Client, key: str) -> tuple[Persistence, dict[str, Any]]:
    """The persistence and ``INFO server`` of the server; on a cluster, ``INFO server``
    of the master serving ``key`` and the persistence of the least durable node (each
    node keeps its own AOF, and any replica may become the master)."""
    if not isinstance(client, RedisCluster):
        pipe = client.pipeline(transaction=False)
        for command in FACTS:
            pipe.execute_command(*command)
        return node_facts(await pipe.execute(raise_on_error=False))
    await client.initialize()  # at once unless a refresh was asked for and is due
    owner = client.get_node_from_key(key)
    facts: list[tuple[Persistence, dict[str, Any]]] = []
    for node in client.get_nodes():
        replies: list[Any] = []
        for command in FACTS:
            try:
                replies.append(await client.execute_command(*command, target_nodes=node))
            except DRIVER_ERRORS as exc:
                replies.append(exc)
        facts.insert(0 if node is owner else len(facts), node_facts(replies))
    weakest = next((f for f in facts if not f[0].durable), facts[0])
    return weakest[0], facts[0][1]
