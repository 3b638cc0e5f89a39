"""What a reconciliation strategy is, and what the engine hands it.

A :class:`Reconciler` owns one kind of work (orders from intents, positions from
the exchange, a plugin's own). The engine calls it level-triggered: each full
pass, :meth:`Reconciler.observe` reads the world once and names every key to
look at; then, key by key from the engine's work queue,
:meth:`Reconciler.reconcile` brings that key to its desired state (or
:meth:`Reconciler.plan` says what it would do, for a dry run). Plugins register
their own with the ``statekit_register_reconcilers`` hook.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from statekit.errors import ValidationError

if TYPE_CHECKING:
    from statekit.backend import Record, Write
    from statekit.store import StateStore
    from statekit.trading.exchange import ExchangeConnector
    from statekit.trading.idempotency import IdempotencyLedger
    from statekit.trading.leases import Lease
    from statekit.trading.reconcile.commits import Commits, Reads
    from statekit.trading.reconcile.metrics import ReconcileMetrics

__all__ = ["Action", "Context", "Reconciler", "Result", "Scope"]


@dataclass(frozen=True)
class Scope:
    """Which part of the account one engine owns: one active engine per scope.

    :param name: the scope's name; the engine's lease is ``reconcile-<name>``.
    :param symbols: only these symbols (None: every symbol).
    :param shard: ``(index, count)``: only symbols whose stable hash falls in this
        shard, so ``count`` workers split the symbols between them.
    """

    name: str = "default"
    symbols: frozenset[str] | None = None
    shard: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_.-" for c in self.name):
            raise ValidationError(
                f"scope name {self.name!r} must be letters, digits, '_', '.' or '-'",
                reason="scope",
            )
        if self.shard is not None:
            index, count = self.shard
            if not (count >= 1 and 0 <= index < count):
                raise ValidationError(
                    f"scope shard {self.shard!r} must be (index, count) with 0 <= index < count",
                    reason="scope",
                )

    def includes(self, symbol: str) -> bool:
        if self.symbols is not None and symbol not in self.symbols:
            return False
        if self.shard is not None:
            index, count = self.shard
            digest = hashlib.sha256(symbol.encode()).digest()
            return int.from_bytes(digest[:8], "big") % count == index
        return True


@dataclass(frozen=True)
class Action:
    """One thing a reconciler does (or, in a plan, would do) to one key."""

    reconciler: str
    key: str
    verb: str
    """``place``, ``cancel``, ``remove``, ``record``, ``resolve``, ``flag``..."""
    symbol: str = ""
    detail: str = ""


@dataclass
class Result:
    """How reconciling one key went.

    :param in_sync: nothing is left to do for the key now: it matches its desired
        state, or it failed terminally (then ``failed`` says so).
    :param failed: the key is in a terminal failure (no retry until its desired
        state changes).
    :param requeue_after: look at the key again after this many seconds (it waits
        on the exchange: a cancel to finish, a resting order to fill), on top of the
        next full pass.
    :param actions: what was done, in order.
    :param enqueue: other keys of the same reconciler to queue now (e.g. the group
        an item belongs to).
    """

    in_sync: bool = True
    failed: bool = False
    requeue_after: float | None = None
    actions: list[Action] = field(default_factory=list)
    enqueue: list[str] = field(default_factory=list)


@dataclass
class Context:
    """What the engine gives a reconciler: the store, the exchange, the ledger and
    the lease every store write of the engine is fenced with."""

    store: StateStore
    connector: ExchangeConnector
    """The exchange, behind the engine's global rate limit."""
    ledger: IdempotencyLedger
    lease: Lease
    scope: Scope
    metrics: ReconcileMetrics
    clock: Callable[[], datetime]
    dry_run: bool = False
    """True in a plan: read the world, never write or send."""
    commits: Commits | None = None
    """The engine's group commit of fenced batches (None: each batch on its own)."""
    reads: Reads | None = None
    """The engine's merged reads (None: each read on its own)."""

    async def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        """``store.get_many(keys)``, merged with other workers' where the engine has
        :attr:`reads`."""
        if self.reads is not None:
            return await self.reads.get_many(keys)
        return await self.store.get_many(keys)

    async def write(self, writes: Sequence[Write]) -> list[Record]:
        """Store ``writes`` atomically, fenced by :attr:`lease`, merged with other
        workers' batches where the engine has :attr:`commits`.

        :raises FencedOff: the lease has a newer holder; nothing was stored.
        """
        if self.commits is not None:
            return await self.commits.batch(writes)
        return await self.store.batch(writes, fence=self.lease)


class Reconciler(ABC):
    """One reconciliation strategy. Subclasses set ``name`` and implement the three
    methods; the engine does the queueing, retries, rate limit, lease and metrics.

    Raise :class:`~statekit.errors.ReconcileError` with ``terminal=True`` for a key
    that retrying cannot fix; any other error (ExchangeUnavailable, ConflictError,
    ...) is retried with backoff.
    """

    name: ClassVar[str]

    async def start(self, ctx: Context) -> None:
        """Called once each time the engine takes its scope's lease (e.g. to resolve
        what a crashed predecessor left unknown). The default does nothing."""
        return None

    @abstractmethod
    async def observe(self, ctx: Context) -> list[str]:
        """Read the world for one full pass; return every key to reconcile in it."""

    @abstractmethod
    async def plan(self, ctx: Context, key: str) -> list[Action]:
        """What :meth:`reconcile` would do to ``key`` now; reads only."""

    @abstractmethod
    async def reconcile(self, ctx: Context, key: str) -> Result:
        """Bring ``key`` to its desired state (or as far as it can go now)."""

    def watch_prefixes(self) -> tuple[str, ...]:
        """Store prefixes whose changes should wake the engine early (edge hints on top
        of the level-triggered passes). The default: none."""
        return ()

    def key_for_change(self, key: str) -> str | None:
        """The work key a changed store key maps to (for :meth:`watch_prefixes`)."""
        return None
