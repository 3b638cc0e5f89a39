"""The reconciliation engine: level-triggered passes, a work queue, one active engine per scope.

:class:`ReconcileEngine` runs :class:`~statekit.trading.reconcile.base.Reconciler`
strategies (``orders`` by default; ``positions``; a plugin's own) against one
exchange connector. Each **pass** asks every reconciler to observe the world and
queues every key it names, so whatever was missed (a lost event, a crash, a
change made by hand) is found on the next pass: the loop is level-triggered.
Store changes under a reconciler's watched prefixes queue their key at once, on
top (edge hints, for low lag).

Workers take keys from a :class:`~statekit.trading.reconcile.queue.WorkQueue`
(deduplicated, one worker per key); a failure re-queues the key after its
backoff, a terminal :class:`~statekit.errors.ReconcileError` does not; every
exchange call of every worker shares one token bucket (the global rate limit).

Only the holder of the lease ``reconcile-<scope>`` acts, and every write of the
state it acts on (statuses, actual orders, removals) is fenced by that lease: a
second engine waits, and takes over when the first stops renewing. (The
idempotency ledger's entries and the metrics snapshot are not fenced: the
ledger keeps its own compare-and-set protocol, the metrics are informational.)
docs/reconcile.md has the whole model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from statekit.backend import Capability
from statekit.errors import StatekitError
from statekit.observe.tracing import span
from statekit.store import StateStore
from statekit.trading import kinds
from statekit.trading.errors import FencedOff, ReconcileError
from statekit.trading.exchange import ExchangeConnector, ExchangeOrder, ExchangePosition, Fill
from statekit.trading.idempotency import IdempotencyLedger, Retry
from statekit.trading.leases import Lease
from statekit.trading.models import Balance, OrderSide, OrderType, TimeInForce
from statekit.trading.reconcile.base import Action, Context, Reconciler, Scope
from statekit.trading.reconcile.commits import Commits, Reads
from statekit.trading.reconcile.metrics import METRICS_PREFIX, ReconcileMetrics
from statekit.trading.reconcile.queue import Backoff, TokenBucket, WorkQueue

if TYPE_CHECKING:
    from rich.table import Table

    from statekit.host import PluginHost

__all__ = ["PassReport", "ReconcileEngine", "ThrottledConnector", "plan_table", "read_metrics"]

log = logging.getLogger("statekit.reconcile")
_T = TypeVar("_T")
_TICKING = frozenset({"passes", "last_pass_seconds", "updated_at"})
"""Snapshot fields that change every pass: alone, they do not make a new version."""


def _now() -> datetime:
    return datetime.now(UTC)


class ThrottledConnector(ExchangeConnector):
    """A connector whose every call first takes a token from a shared bucket, and
    (with ``at_once``) waits while that many calls are in flight."""

    def __init__(
        self, inner: ExchangeConnector, bucket: TokenBucket, *, at_once: int | None = None
    ) -> None:
        self.inner = inner
        self.bucket = bucket
        self.name = inner.name
        self.calls = 0
        self._slots = None if at_once is None else asyncio.Semaphore(at_once)

    async def _call(self, name: str, call: Callable[[], Awaitable[_T]]) -> _T:
        await self.bucket.acquire()
        self.calls += 1
        # A span when opentelemetry-api is installed (statekit.observe.tracing), else nothing.
        with span(f"statekit.exchange.{name}", {"statekit.exchange": self.name}):
            if self._slots is None:
                return await call()
            async with self._slots:
                return await call()

    async def create_order(
        self,
        symbol: str,
        type: OrderType,
        side: OrderSide,
        amount: Decimal,
        price: Decimal | None = None,
        *,
        client_order_id: str,
        time_in_force: TimeInForce = TimeInForce.GTC,
    ) -> ExchangeOrder:
        return await self._call(
            "create_order",
            lambda: self.inner.create_order(
                symbol,
                type,
                side,
                amount,
                price,
                client_order_id=client_order_id,
                time_in_force=time_in_force,
            ),
        )

    async def cancel_order(self, order_id: str, symbol: str) -> ExchangeOrder:
        return await self._call("cancel_order", lambda: self.inner.cancel_order(order_id, symbol))

    async def fetch_order(self, order_id: str, symbol: str) -> ExchangeOrder:
        return await self._call("fetch_order", lambda: self.inner.fetch_order(order_id, symbol))

    async def fetch_order_by_client_id(
        self, client_order_id: str, symbol: str
    ) -> ExchangeOrder | None:
        return await self._call(
            "fetch_order_by_client_id",
            lambda: self.inner.fetch_order_by_client_id(client_order_id, symbol),
        )

    async def fetch_open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        return await self._call("fetch_open_orders", lambda: self.inner.fetch_open_orders(symbol))

    async def fetch_positions(self, symbols: Sequence[str] | None = None) -> list[ExchangePosition]:
        return await self._call("fetch_positions", lambda: self.inner.fetch_positions(symbols))

    async def fetch_balance(self) -> dict[str, Balance]:
        return await self._call("fetch_balance", lambda: self.inner.fetch_balance())

    async def fetch_fills(self, symbol: str | None = None, since: int = 0) -> list[Fill]:
        return await self._call("fetch_fills", lambda: self.inner.fetch_fills(symbol, since))


@dataclass
class PassReport:
    """What one full pass did."""

    keys: int = 0
    actions: list[Action] = field(default_factory=list)
    errors: int = 0
    pending: list[str] = field(default_factory=list)
    """Keys not in sync when the pass ended (being retried, or waiting)."""
    failed: list[str] = field(default_factory=list)
    """Keys in a terminal failure: nothing is retried until their desired state changes."""
    seconds: float = 0.0

    @property
    def in_sync(self) -> bool:
        return not self.pending


class ReconcileEngine:
    """Runs reconcilers for one scope; see the module docstring.

    :param store: where intents, statuses, actual orders, the lease and the ledger live.
    :param connector: the exchange.
    :param reconcilers: instances, or names registered with
        ``statekit_register_reconcilers`` (default: ``["orders"]``).
    :param host: the plugin host to look names up in (default: a new one).
    :param scope: the scope (or its name) this engine owns.
    :param workers: keys reconciled at once.
    :param calls: exchange calls in flight at once, all workers together (default:
        no bound but ``workers``). More workers than calls lets the store writes of
        many keys share commits while the exchange sees no more than ``calls``.
    :param rate: exchange calls per second, all workers together; ``burst`` at most at once.
    :param lease_ttl: seconds the lease holds between renewals; a standby takes over
        this long after the active engine stops renewing.
    :param resync: seconds between full passes.
    :param backoff: per-key retry backoff (default 0.05 s doubling to 30 s, jittered).
    :param owner: a label stored with the lease (``reconciler-1``).
    :param clock: the current UTC time, for the lease, the ledger and lag (tests).
    :param ledger_retry: how the engine's ledger retries a rate-limited or unanswered
        call before the key goes back to the queue (default: twice, briefly).
    :param metrics_interval: seconds between stored metrics snapshots when nothing
        but the pass counters changed (a change of any other figure is stored at once).
    """

    def __init__(
        self,
        store: StateStore,
        connector: ExchangeConnector,
        *,
        reconcilers: Sequence[Reconciler | str] | None = None,
        host: PluginHost | None = None,
        scope: Scope | str = "default",
        workers: int = 4,
        calls: int | None = None,
        rate: float = 50.0,
        burst: int | None = None,
        lease_ttl: float = 10.0,
        resync: float = 1.0,
        backoff: Backoff | None = None,
        owner: str = "",
        clock: Callable[[], datetime] = _now,
        ledger_retry: Retry | None = None,
        metrics_interval: float = 10.0,
    ) -> None:
        if workers < 1 or (calls is not None and calls < 1):
            raise ReconcileError(
                f"workers and calls must be at least 1, not {workers} and {calls}",
                reason="config",
            )
        self.store = store
        self.scope = scope if isinstance(scope, Scope) else Scope(scope)
        self.reconcilers = self._resolve(reconcilers or ["orders"], host)
        self.workers = workers
        self.resync = resync
        self.clock = clock
        self.bucket = TokenBucket(rate, burst)
        self.connector = ThrottledConnector(connector, self.bucket, at_once=calls)
        self.lease = Lease(
            store, f"reconcile-{self.scope.name}", ttl=lease_ttl, owner=owner, clock=clock
        )
        # Only the lease holder places for these keys and one worker per key: a
        # reservation found is this engine's own (or a dead holder's), resolved at once.
        self.ledger = IdempotencyLedger(
            store,
            grace=0.0,
            retry=ledger_retry or Retry(attempts=2, backoff=0.02, max_backoff=0.2),
            clock=clock,
        )
        # Every worker's fenced batches, merged into one commit while one is in flight.
        self.commits = Commits(store, self.lease)
        self.reads = Reads(store)
        self.metrics = ReconcileMetrics(scope=self.scope.name)
        self.metrics_interval = metrics_interval
        self._saved: tuple[dict[str, Any], float] | None = None
        self.queue = WorkQueue(backoff or Backoff())
        self._in_sync: dict[str, bool] = {}
        self._failed: set[str] = set()
        self._lost = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []  # the workers, while running
        self._actions: list[Action] = []

    @staticmethod
    def _resolve(items: Sequence[Reconciler | str], host: PluginHost | None) -> list[Reconciler]:
        found: list[Reconciler] = []
        for item in items:
            if isinstance(item, Reconciler):
                found.append(item)
                continue
            if host is None:
                from statekit.host import PluginHost

                host = PluginHost()
            from statekit.trading.plugin import ReconcilerRegistry

            found.append(host.find(ReconcilerRegistry, item)())
        names = [r.name for r in found]
        if len(set(names)) != len(names) or any("/" in n for n in names):
            raise ReconcileError(
                f"reconciler names must be unique and free of '/': {names}", reason="config"
            )
        return found

    @property
    def context(self) -> Context:
        return Context(
            store=self.store,
            connector=self.connector,
            ledger=self.ledger,
            lease=self.lease,
            scope=self.scope,
            metrics=self.metrics,
            clock=self.clock,
            commits=self.commits,
            reads=self.reads,
        )

    # -- one pass (needs the lease) --------------------------------------------------------

    async def run_once(self) -> PassReport:
        """One full pass with the lease held: observe, queue every key, work until
        nothing is ready (keys waiting on a backoff stay queued for the next call).

        Takes the lease first if this engine does not hold it (waiting for it).
        """
        if not self.lease.held:
            await self._take_lease()
        report = PassReport()
        started = time.monotonic()
        self._actions = []
        errors_before = self.metrics.errors
        await self._ensure_lease()  # a pass with no keys still keeps the lease
        keys = await self._observe()
        report.keys = len(keys)
        own_workers = not self._tasks
        if own_workers:
            self._start_workers()
        waiting = asyncio.create_task(self.queue.wait_idle())
        lost = asyncio.create_task(self._lost.wait())
        try:
            await asyncio.wait({waiting, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiting, lost):
                task.cancel()
            await asyncio.gather(waiting, lost, return_exceptions=True)
            if own_workers:
                await self._stop_workers()
        if self._lost.is_set():
            raise FencedOff(
                f"the lease {self.lease.name!r} was lost during the pass",
                lease=self.lease.name,
                token=self.lease.token,
                current=0,
            )
        report.seconds = time.monotonic() - started
        report.actions = list(self._actions)
        report.errors = self.metrics.errors - errors_before
        report.pending = sorted(k for k, ok in self._in_sync.items() if not ok)
        report.failed = sorted(self._failed)
        self._finish_pass(report)
        await self.save_metrics()
        return report

    async def _observe(self) -> list[str]:
        ctx = self.context
        keys: list[str] = []
        for reconciler in self.reconcilers:
            for key in await reconciler.observe(ctx):
                keys.append(f"{reconciler.name}/{key}")
        seen = set(keys)
        for key in list(self._in_sync):
            if key not in seen:
                del self._in_sync[key]  # gone (an intent removed)
        self._failed &= seen
        for key in keys:
            self.queue.add(key)
        self.metrics.keys = len(keys)
        return keys

    def _finish_pass(self, report: PassReport) -> None:
        metrics = self.metrics
        metrics.passes += 1
        metrics.last_pass_seconds = report.seconds
        metrics.pending = len(report.pending)
        metrics.failed = len(report.failed)
        if report.actions and not metrics.pending and not metrics.failed:
            metrics.converge_seconds = report.seconds
        if not report.errors and not report.pending and not report.failed:
            metrics.last_error = None  # healed: the last error is history now
        metrics.holder = self.lease.holder
        metrics.updated_at = self.clock().isoformat()

    def _start_workers(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def _stop_workers(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            if key is None:
                return
            try:
                await self._process(key)
            finally:
                self.queue.done(key)

    async def _process(self, key: str) -> None:
        name, _, item = key.partition("/")
        reconciler = next((r for r in self.reconcilers if r.name == name), None)
        if reconciler is None:
            return
        try:
            await self._ensure_lease()
            result = await reconciler.reconcile(self.context, item)
        except FencedOff as exc:
            log.warning("reconcile %s: lost the lease: %s", key, exc)
            self._lost.set()
            return
        except ReconcileError as exc:
            self.metrics.errors += 1
            self.metrics.last_error = f"{key}: {exc}"
            self._in_sync[key] = exc.terminal
            if exc.terminal:
                self.metrics.terminal += 1
                self._failed.add(key)
            else:
                self.metrics.retries += 1
                self.queue.retry(key)
            return
        except Exception as exc:  # exchange, store, or a bug: retried with backoff
            if not isinstance(exc, StatekitError | OSError):
                log.exception("reconcile %s failed", key)  # a bug in a reconciler
            self.metrics.errors += 1
            self.metrics.retries += 1
            self.metrics.last_error = f"{key}: {type(exc).__name__}: {exc}"
            self._in_sync[key] = False
            self.queue.retry(key)
            return
        self.queue.forget(key)
        self._in_sync[key] = result.in_sync
        if result.failed:
            self._failed.add(key)
        else:
            self._failed.discard(key)
        self._actions += result.actions
        if result.requeue_after is not None:
            self.queue.add_after(key, result.requeue_after)
        for other in result.enqueue:
            self.queue.add(f"{name}/{other}")

    # -- the lease ---------------------------------------------------------------------------

    async def _take_lease(self) -> None:
        await self.lease.acquire()
        self._lost.clear()
        self.metrics.holder = self.lease.holder
        log.info("reconcile scope %s: active (%s)", self.scope.name, self.lease.holder)
        ctx = self.context
        for reconciler in self.reconcilers:
            await reconciler.start(ctx)

    async def _ensure_lease(self) -> None:
        """Renew once a third of the ttl has passed, so no exchange call is made on a
        lease about to run out."""
        expires = self.lease.expires_at
        if expires is None:
            raise FencedOff(
                f"the lease {self.lease.name!r} is not held",
                lease=self.lease.name,
                token=self.lease.token,
                current=0,
            )
        if (expires - self.clock()).total_seconds() < self.lease.ttl * 2 / 3:
            await self.lease.renew()

    # -- running ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set (or the task is cancelled): wait for the lease, then
        pass after pass every ``resync`` seconds; on losing the lease, wait for it again.
        Releases the lease on the way out."""
        stop = stop or asyncio.Event()
        try:
            while not stop.is_set():
                acquiring = asyncio.create_task(self._take_lease())
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not acquiring.done():
                    acquiring.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await acquiring
                    break
                acquiring.result()
                await self._lead(stop)
        finally:
            with contextlib.suppress(StatekitError, OSError):
                await self.lease.release()

    async def _lead(self, stop: asyncio.Event) -> None:
        watcher = asyncio.create_task(self._watch())
        self._start_workers()
        try:
            while not stop.is_set():
                try:
                    await self.run_once()
                except FencedOff:
                    return
                except (StatekitError, OSError) as exc:  # the pass's observe failed
                    self.metrics.errors += 1
                    self.metrics.last_error = f"pass: {type(exc).__name__}: {exc}"
                    self.metrics.updated_at = self.clock().isoformat()
                    log.warning("reconcile pass failed: %s", exc)
                    with contextlib.suppress(StatekitError, OSError):
                        await self.save_metrics()  # the failure shows in doctor and /metrics
                with contextlib.suppress(TimeoutError):  # not wait_for: see SqliteBackend
                    async with asyncio.timeout(self.resync):
                        await stop.wait()
        finally:
            await self._stop_workers()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, StatekitError, OSError):
                await watcher

    async def _watch(self) -> None:
        """Queue the keys of store changes under the reconcilers' watched prefixes."""
        if Capability.WATCH not in self.store.capabilities:
            return
        prefixes = {p: r for r in self.reconcilers for p in r.watch_prefixes()}
        if not prefixes:
            return
        common = prefixes.keys()
        start = min(common) if len(common) == 1 else ""
        async with self.store.watch(start) as changes:
            async for record in changes:
                for prefix, reconciler in prefixes.items():
                    if record.key.startswith(prefix):
                        key = reconciler.key_for_change(record.key)
                        if key is not None:
                            self.queue.add(f"{reconciler.name}/{key}")

    # -- dry run ---------------------------------------------------------------------------

    async def plan(self) -> list[Action]:
        """What a pass would do now, without doing any of it (no lease needed)."""
        ctx = self.context
        ctx.dry_run = True
        actions: list[Action] = []
        for reconciler in self.reconcilers:
            for key in await reconciler.observe(ctx):
                actions += await reconciler.plan(ctx, key)
        return actions

    # -- metrics ---------------------------------------------------------------------------

    async def save_metrics(self, *, force: bool = False) -> None:
        """Store the metrics snapshot at ``reconcile-metrics/<scope>``: when a figure
        changed, or ``metrics_interval`` seconds after the last one (an idle engine
        does not write a version every pass)."""
        snapshot = self.metrics.snapshot()
        steady = {k: v for k, v in snapshot.items() if k not in _TICKING}
        now = time.monotonic()
        if not force and self._saved is not None:
            before, at = self._saved
            if before == steady and now - at < self.metrics_interval:
                return
        await self.store.put(
            METRICS_PREFIX + self.scope.name, snapshot, kind=kinds.RECONCILE_METRICS
        )
        self._saved = (steady, now)

    async def aclose(self) -> None:
        self.queue.close()
        with contextlib.suppress(StatekitError, OSError):
            await self.lease.release()


async def read_metrics(store: StateStore) -> dict[str, dict[str, Any]]:
    """Every scope's stored metrics snapshot, by scope."""
    found: dict[str, dict[str, Any]] = {}
    async for record in store.scan(METRICS_PREFIX, kind=kinds.RECONCILE_METRICS):
        if isinstance(record.data, dict):
            found[record.key.removeprefix(METRICS_PREFIX)] = dict(record.data)
    return found


def plan_table(actions: Sequence[Action], *, title: str = "reconcile plan") -> Table:
    """A rich table of planned actions (what ``statekit reconcile plan`` prints)."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("reconciler", "key", "action", "symbol", "detail"):
        table.add_column(column)
    for action in actions:
        table.add_row(action.reconciler, action.key, action.verb, action.symbol, action.detail)
    if not actions:
        table.add_row("-", "-", "nothing to do", "-", "everything is in sync")
    return table
