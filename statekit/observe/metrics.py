"""The store's Prometheus series: :class:`StoreMetrics`, which
:func:`statekit.observe.store.instrument` times a store's operations into."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram

from statekit.errors import BackendError, ConflictError, StatekitError

__all__ = ["LATENCY_BUCKETS", "StoreMetrics"]

LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Seconds: from an in-memory read (~10 µs) to a write waiting out a slow server."""

_Call = Callable[..., Awaitable[Any]]


class StoreMetrics:
    """The store's series in ``registry`` (docs/operations.md, "Metrics").

    :param registry: where the series are registered (one per app or process: two
        StoreMetrics on one registry would register the same names twice).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("operation", "backend")
        self.operations = Counter(
            "statekit_store_operations",
            "Store operations finished, by outcome: ok, conflict (an expect or guard did "
            "not hold), rejected (refused by a check: nothing reached the backend or it "
            "refused the input), error (the backend failed), cancelled.",
            (*labels, "outcome"),
            registry=registry,
        )
        self.seconds = Histogram(
            "statekit_store_operation_seconds",
            "Seconds a store operation took, whatever its outcome.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.conflicts = Counter(
            "statekit_store_conflicts",
            "Optimistic-locking conflicts met: raised to the caller, or retried by update().",
            labels,
            registry=registry,
        )
        self.backend_errors = Counter(
            "statekit_store_backend_errors",
            "Operations that failed in the backend (BackendError but conflicts), by error type.",
            (*labels, "error"),
            registry=registry,
        )

    def timed(self, operation: str, backend: str, call: _Call) -> _Call:
        """``call`` counted and timed; the label children are looked up once, here."""
        ok = self.operations.labels(operation, backend, "ok")
        seconds = self.seconds.labels(operation, backend)

        @functools.wraps(call)
        async def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = perf_counter()
            try:
                result = await call(*args, **kwargs)
            except BaseException as exc:
                seconds.observe(perf_counter() - start)
                self._failed(operation, backend, exc)
                raise
            seconds.observe(perf_counter() - start)
            ok.inc()
            return result

        return timed_call

    def _failed(self, operation: str, backend: str, exc: BaseException) -> None:
        if isinstance(exc, ConflictError):
            outcome = "conflict"
            self.conflicts.labels(operation, backend).inc()
        elif isinstance(exc, BackendError):
            outcome = "error"
            self.backend_errors.labels(operation, backend, type(exc).__name__).inc()
        elif isinstance(exc, StatekitError):
            outcome = "rejected"
        elif isinstance(exc, asyncio.CancelledError):
            outcome = "cancelled"
        else:
            outcome = "error"
        self.operations.labels(operation, backend, outcome).inc()

    def retried_conflict(self, operation: str, backend: str) -> None:
        """A conflict ``update()`` met and retried (it never reaches the caller)."""
        self.conflicts.labels(operation, backend).inc()
