"""Sharded reconcilers: ``count`` hash shards of the intents over several processes, with standbys.

Shard ``i`` of ``count`` is the scope ``Scope(f"shard-{i}-of-{count}", shard=(i, count))``:
the intents whose symbol's stable hash (:meth:`Scope.includes`) falls in it. Every
symbol is in exactly one shard, so every intent is, and every intent of one symbol
(an OCO pair included: both legs trade one symbol) is in the same shard. Each shard
has its own lease ``reconcile-shard-<i>-of-<count>``, so each has one active engine
across every process, and every write of that engine is fenced by it
(docs/reconcile.md, "One active engine per scope").

How processes pick shards: **static assignment plus standbys**.

- An **owner** process names the shards it owns (``own=[0, 1]``) and runs one
  :class:`~statekit.trading.reconcile.engine.ReconcileEngine` per shard at once.
- A **standby** process (``standby=True``) runs an engine for every shard it does
  not own, each waiting on its shard's lease; whichever lease stops being renewed
  (its holder was killed, hung, or lost the store) is taken by the first standby
  that sees it expired: ``lease_ttl`` seconds after the last renewal, plus the
  waiter's poll (a tenth of the ttl at most). A standby first waits ``grace``
  seconds (``lease_ttl`` by default), so owners started at the same time take their
  own shards first.
- A shard is a preference, not a lock: a restarted owner whose shard a standby
  took waits for it like a standby until that holder stops. Nothing rebalances a
  live holder. One process may be both (``own=[2], standby=True``).

Several standbys split whatever expires between them (each shard goes to the first
that polls after the expiry). Size a standby to carry every shard it may take.
The engine's options (``workers``, ``calls``, ``rate``...) apply to each shard's
engine: ``rate`` is per shard, so give each ``venue limit / count``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from statekit.errors import StatekitError, ValidationError
from statekit.store import StateStore
from statekit.trading.exchange import ExchangeConnector
from statekit.trading.leases import Lease, LeaseState
from statekit.trading.reconcile.base import Scope
from statekit.trading.reconcile.engine import PassReport, ReconcileEngine

__all__ = ["ShardedEngines", "parse_shards", "shard_holders", "shard_scope", "shard_scopes"]


def shard_scope(index: int, count: int) -> Scope:
    """Shard ``index`` of ``count``: the scope ``shard-<index>-of-<count>``."""
    return Scope(f"shard-{index}-of-{count}", shard=(index, count))


def shard_scopes(count: int) -> list[Scope]:
    """Every shard of ``count``, in order."""
    if count < 1:
        raise ValidationError(f"shards must be at least 1, not {count}", reason="shards")
    return [shard_scope(i, count) for i in range(count)]


def parse_shards(text: str, count: int) -> list[int]:
    """``"0,2"`` -> ``[0, 2]``: shard indexes below ``count``, each once.

    :raises ValidationError: not a comma-separated list of such indexes.
    """
    found: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) >= count:
            raise ValidationError(
                f"shard {part!r} in {text!r} is not an index from 0 to {count - 1}",
                reason="shards",
            )
        if int(part) in found:
            raise ValidationError(f"shard {part} is named twice in {text!r}", reason="shards")
        found.append(int(part))
    return found


async def shard_holders(
    store: StateStore, count: int, *, now: datetime | None = None
) -> dict[int, LeaseState | None]:
    """Who holds each shard's lease now, live holders only (None: free or expired by
    ``now``, this machine's clock by default)."""
    now = now or datetime.now(UTC)
    holders: dict[int, LeaseState | None] = {}
    for scope in shard_scopes(count):
        state = await Lease(store, f"reconcile-{scope.name}", ttl=1.0).current()
        holders[scope.shard[0] if scope.shard else 0] = (
            state if state is not None and state.expires_at > now else None
        )
    return holders


@dataclass(frozen=True)
class _Shard:
    index: int
    engine: ReconcileEngine
    standby: bool


class ShardedEngines:
    """One :class:`ReconcileEngine` per shard this process owns or stands by for; see
    the module docstring.

    :param store: the store every process shares.
    :param connector: the exchange; every shard's engine calls it (each behind its own
        rate limit).
    :param shards: how many shards the intents are split into (the same in every process).
    :param own: the shards this process takes at once.
    :param standby: also wait on every other shard's lease and take any whose holder
        stops renewing.
    :param grace: seconds a standby waits before contending (default: ``lease_ttl``).
    :param owner: the label stored with each lease this process takes.
    :param engine_options: passed to each :class:`ReconcileEngine` (``workers``,
        ``calls``, ``rate``, ``lease_ttl``, ``resync``, ``reconcilers``, ``host``...).
    """

    def __init__(
        self,
        store: StateStore,
        connector: ExchangeConnector,
        *,
        shards: int,
        own: Iterable[int] = (),
        standby: bool = False,
        grace: float | None = None,
        owner: str = "",
        **engine_options: Any,
    ) -> None:
        scopes = shard_scopes(shards)
        owned = sorted(set(own))
        if any(not 0 <= i < shards for i in owned):
            raise ValidationError(
                f"own {owned} names a shard outside 0..{shards - 1}", reason="shards"
            )
        if not owned and not standby:
            raise ValidationError("own no shard and not a standby: nothing to run", reason="shards")
        if "scope" in engine_options:
            raise ValidationError("the shards set each engine's scope", reason="shards")
        self.store = store
        self.count = shards
        self.own = owned
        self.standby = standby
        ttl = float(engine_options.get("lease_ttl", 10.0))
        self.grace = ttl if grace is None else grace
        self._shards = [
            _Shard(
                i,
                ReconcileEngine(store, connector, scope=scopes[i], owner=owner, **engine_options),
                i not in owned,
            )
            for i in range(shards)
            if i in owned or standby
        ]

    @property
    def engines(self) -> dict[int, ReconcileEngine]:
        """Shard index -> its engine in this process (owned and standby)."""
        return {s.index: s.engine for s in self._shards}

    def held(self) -> list[int]:
        """The shards whose lease this process holds now."""
        return [s.index for s in self._shards if s.engine.lease.held]

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run every shard's engine until ``stop`` is set (or the task is cancelled):
        owned shards at once, standby shards after ``grace``. Each engine releases its
        lease on the way out."""
        stop = stop or asyncio.Event()
        tasks = [asyncio.create_task(self._run_one(s, stop)) for s in self._shards]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_one(self, shard: _Shard, stop: asyncio.Event) -> None:
        if shard.standby and self.grace > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.grace):
                    await stop.wait()
        if not stop.is_set():
            await shard.engine.run(stop)

    async def converge(self, *, max_passes: int = 20) -> dict[int, PassReport]:
        """For the shards this process owns: take each lease (waiting for it), then run
        passes until one ends in sync; every shard at once. Returns each shard's last
        pass (a bench or a one-shot job; :meth:`run` is the service).

        :raises ValidationError: a shard still out of sync after ``max_passes`` passes.
        """
        owned = [s for s in self._shards if not s.standby]
        reports = await asyncio.gather(*(self._converge_one(s, max_passes) for s in owned))
        return {s.index: r for s, r in zip(owned, reports, strict=True)}

    @staticmethod
    async def _converge_one(shard: _Shard, max_passes: int) -> PassReport:
        for _ in range(max_passes):
            try:
                report = await shard.engine.run_once()
            except (StatekitError, OSError):  # the pass's observe failed: another pass
                continue
            if report.in_sync:
                return report
        raise ValidationError(
            f"shard {shard.index}: not in sync after {max_passes} passes", reason="converge"
        )

    async def aclose(self) -> None:
        """Release every lease this process holds."""
        for shard in self._shards:
            await shard.engine.aclose()
