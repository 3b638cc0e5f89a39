"""A store's operations, counted and timed per operation and backend (and traced).

:func:`instrument` replaces the operations of one :class:`~statekit.store.StateStore`
*instance* with timed (and, when tracing is installed, traced) versions of the class's
own methods; a store never instrumented runs the plain methods, so instrumentation
costs nothing where it is not wanted. Instrumenting again replaces what was there.

What is measured: the operations listed in :data:`OPERATIONS`, once per call a user
(or the API) makes; an operation that calls another (``put`` appends) counts once.
``scan`` and ``watch`` are streams, not calls, and are not timed.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from statekit.observe.tracing import span, tracer
from statekit.store import StateStore

if TYPE_CHECKING:  # prometheus_client is needed only when metrics are
    from statekit.observe.metrics import StoreMetrics

__all__ = ["OPERATIONS", "instrument"]

OPERATIONS: Final = (
    "get",
    "get_many",
    "put",
    "delete",
    "batch",
    "update",
    "append",
    "history",
    "prune",
    "changed",
    "position",
)
"""The store methods :func:`instrument` measures."""

_Call = Callable[..., Awaitable[Any]]


def _traced(operation: str, backend: str, call: _Call) -> _Call:
    name = f"statekit.store.{operation}"

    @functools.wraps(call)
    async def traced_call(*args: Any, **kwargs: Any) -> Any:
        attributes = {"statekit.backend": backend}
        if args and isinstance(args[0], str):
            attributes["statekit.key"] = args[0]
        with span(name, attributes):
            return await call(*args, **kwargs)

    return traced_call


def instrument(store: StateStore, metrics: StoreMetrics | None = None) -> None:
    """Measure ``store``'s :data:`OPERATIONS` into ``metrics`` and trace them when
    ``opentelemetry-api`` is installed (:mod:`statekit.observe.tracing`).

    With neither, the store's plain methods are put back.
    """
    backend = store.backend.name
    traced = tracer() is not None
    for operation in OPERATIONS:
        call: _Call = getattr(type(store), operation).__get__(store)
        if traced:
            call = _traced(operation, backend, call)
        if metrics is not None:
            call = metrics.timed(operation, backend, call)
        if traced or metrics is not None:
            setattr(store, operation, call)
        else:
            store.__dict__.pop(operation, None)
    store.on_retried_conflict = (
        None if metrics is None else functools.partial(metrics.retried_conflict, backend=backend)
    )
