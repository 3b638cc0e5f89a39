"""Series read at scrape time from figures statekit keeps anyway: nothing is added to
the paths that keep them.

Each collector is handed a callable returning its source (or None when there is
none, e.g. a store without a cache): an app swaps its hub or locks, the collector
follows. Lock names are grouped by family (``position/BTC-USD`` counts under
``position/*``; a name without ``/`` is its own family) so that order ids do not make
one series each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from statekit.backend import Backend
from statekit.trading.locks import KeyedLocks

__all__ = ["HubCollector", "LockCollector", "TieredCollector"]


class HubCollector(Collector):
    """The WebSocket hub's clients, subscriptions, drops and messages.

    :param stats: returns :meth:`statekit.api.ws.ChangeHub.stats` (None: no hub).
    """

    def __init__(self, stats: Callable[[], dict[str, Any] | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:
            return
        yield GaugeMetricFamily(
            "statekit_ws_clients", "WebSocket clients connected now.", value=stats["clients"]
        )
        yield GaugeMetricFamily(
            "statekit_ws_subscriptions",
            "Subscriptions of the connected WebSocket clients.",
            value=stats["subscriptions"],
        )
        yield GaugeMetricFamily(
            "statekit_ws_queued_max",
            "Messages waiting for the slowest client (it is dropped past the queue size).",
            value=stats["queued_max"],
        )
        yield GaugeMetricFamily(
            "statekit_ws_watching",
            "1 while the hub follows the store's changes, 0 when the store cannot be watched.",
            value=1 if stats["watching"] else 0,
        )
        yield CounterMetricFamily(
            "statekit_ws_dropped_clients",
            "Clients disconnected because they fell behind (their queue overflowed).",
            value=stats["dropped_clients"],
        )
        yield CounterMetricFamily(
            "statekit_ws_changes", "Changes the hub received from the store.", stats["changes"]
        )
        yield CounterMetricFamily(
            "statekit_ws_messages_sent", "Messages sent to clients.", stats["messages_sent"]
        )


def _family(name: str) -> str:
    head, slash, _ = name.partition("/")
    return f"{head}/*" if slash else name


class LockCollector(Collector):
    """Keyed lock acquisitions, contention, waits and timeouts, by family.

    :param locks: returns the process's :class:`KeyedLocks` (None: none).
    """

    def __init__(self, locks: Callable[[], KeyedLocks | None]) -> None:
        self._locks = locks

    def collect(self) -> Iterator[Metric]:
        locks = self._locks()
        if locks is None:
            return
        names = {
            "acquisitions": "Lock acquisitions (a reentrant hold counts once).",
            "contended": "Acquisitions that had to wait for another task.",
            "wait_seconds": "Seconds acquisitions spent waiting, summed.",
            "timeouts": "Waits that ended in LockTimeout.",
        }
        totals: dict[str, dict[str, float]] = {name: {} for name in (*names, "waiting")}
        for name, stats in locks.statistics().items():
            family = _family(name)
            figures = {
                "acquisitions": stats.acquisitions,
                "contended": stats.contended,
                "wait_seconds": stats.mean_wait_ms * stats.acquisitions / 1000,
                "timeouts": stats.timeouts,
                "waiting": stats.waiting,
            }
            for field, value in figures.items():
                totals[field][family] = totals[field].get(family, 0) + value
        for field, text in names.items():
            counter = CounterMetricFamily(f"statekit_lock_{field}", text, labels=["lock"])
            for family, value in sorted(totals[field].items()):
                counter.add_metric([family], value)
            yield counter
        waiting = GaugeMetricFamily(
            "statekit_lock_waiting", "Tasks waiting for a lock now.", labels=["lock"]
        )
        for family, value in sorted(totals["waiting"].items()):
            waiting.add_metric([family], value)
        yield waiting


class TieredCollector(Collector):
    """A tiered store's read caches and mirrors (the fallback journal's figures are
    served by ``GET /metrics`` from :func:`statekit.tiered.metrics.fallback_prometheus`).

    :param backend: returns the store's backend; nothing is collected unless it is a
        :class:`~statekit.tiered.TieredBackend`.
    """

    def __init__(self, backend: Callable[[], Backend]) -> None:
        self._backend = backend

    def collect(self) -> Iterator[Metric]:
        from statekit.tiered import TieredBackend

        backend = self._backend()
        if not isinstance(backend, TieredBackend):
            return
        levels = []
        if backend.cache is not None:
            levels.append(("memory", backend.cache.stats.hits, backend.cache.stats.misses))
        if backend.shared is not None:
            shared = backend.shared.stats
            levels.append(("shared", shared.hits, shared.misses))
        if levels:
            hits = CounterMetricFamily(
                "statekit_cache_hits", "Keys a read cache answered.", labels=["level"]
            )
            misses = CounterMetricFamily(
                "statekit_cache_misses", "Keys a read cache did not have.", labels=["level"]
            )
            for level, hit, miss in levels:
                hits.add_metric([level], hit)
                misses.add_metric([level], miss)
            yield from (hits, misses)
            yield CounterMetricFamily(
                "statekit_cache_primary_reads",
                "Keys no cache level had, read from the primary.",
                value=backend.primary_reads,
            )
        if backend.mirrors:
            yield from _mirror_metrics(backend)


def _mirror_metrics(backend: Any) -> Iterator[Metric]:
    lag = GaugeMetricFamily(
        "statekit_mirror_lag_seconds",
        "Seconds the oldest record waiting for a mirror has waited (0: caught up).",
        labels=["mirror"],
    )
    queued = GaugeMetricFamily(
        "statekit_mirror_queued", "Records waiting to be copied to a mirror.", labels=["mirror"]
    )
    counters = {
        "copied": CounterMetricFamily(
            "statekit_mirror_copied", "Records copied to a mirror.", labels=["mirror"]
        ),
        "dropped": CounterMetricFamily(
            "statekit_mirror_dropped",
            "Records not copied: the mirror's queue was full.",
            labels=["mirror"],
        ),
        "retries": CounterMetricFamily(
            "statekit_mirror_retries", "Copies retried after a mirror failed.", labels=["mirror"]
        ),
    }
    seen: dict[str, int] = {}
    for mirror in backend.mirrors:
        base = mirror.backend.name
        seen[base] = seen.get(base, 0) + 1  # two mirrors of one kind: "influxdb", "influxdb#2"
        name = [base if seen[base] == 1 else f"{base}#{seen[base]}"]
        lag.add_metric(name, mirror.lag())
        queued.add_metric(name, mirror.describe()["queued"])
        for field, family in counters.items():
            family.add_metric(name, getattr(mirror.stats, field))
    yield from (lag, queued, *counters.values())
