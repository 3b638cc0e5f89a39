"""OpenTelemetry spans around store operations and exchange calls, when installed.

Tracing needs only ``opentelemetry-api`` (the ``otel`` extra): statekit makes spans,
the application configures where they go (an SDK's tracer provider, an exporter)
*before* it opens the store. Without the package, or without a provider, :func:`tracer`
is None and nothing is wrapped: the hot path is unchanged.

Span names are ``statekit.store.<operation>`` (attributes ``statekit.backend``,
``statekit.key`` when the call names one key) and ``statekit.exchange.<call>``
(attribute ``statekit.exchange``); a failed call records its exception and an
error status.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from importlib import metadata
from typing import Any

__all__ = ["span", "tracer"]


@functools.cache
def _trace_api() -> Any | None:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


_tracers: dict[int, Any] = {}


def tracer() -> Any | None:
    """statekit's tracer; None when ``opentelemetry-api`` is not installed or no tracer
    provider (an SDK) is configured yet: then nothing would be recorded, and nothing is
    wrapped. Configure the provider before opening the store."""
    trace = _trace_api()
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        return None
    found = _tracers.get(id(provider))
    if found is None:
        found = _tracers[id(provider)] = provider.get_tracer("statekit", _version())
    return found


def _version() -> str | None:
    try:
        return metadata.version("statekit")
    except metadata.PackageNotFoundError:  # run from a source tree
        return None


@contextlib.contextmanager
def span(name: str, attributes: dict[str, str]) -> Iterator[None]:
    """A span named ``name`` around the block (nothing when :func:`tracer` is None).

    OpenTelemetry records an exception leaving the block and marks the span an error.
    """
    found = tracer()
    if found is None:
        yield
        return
    with found.start_as_current_span(name, attributes=attributes):
        yield
