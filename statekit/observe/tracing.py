"""OpenTelemetry spans around store operations and exchange calls, when installed.

Tracing needs only ``opentelemetry-api`` (the ``otel`` extra): statekit makes spans,
the application configures where they go (an SDK, an exporter). Without the package,
:func:`tracer` is None and nothing is wrapped, so the hot path is unchanged. With the
package but no SDK configured, OpenTelemetry's own no-op tracer is used.

Span names are ``statekit.store.<operation>`` (attributes ``statekit.backend``,
``statekit.key`` when the call names one key) and ``statekit.exchange.<call>``
(attribute ``statekit.exchange``); a failed call records its exception and an
error status.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import statekit

__all__ = ["span", "tracer"]


@functools.cache
def tracer() -> Any | None:
    """statekit's tracer, or None when ``opentelemetry-api`` is not installed."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace.get_tracer("statekit", statekit.__version__)


@contextlib.contextmanager
def span(name: str, attributes: dict[str, str]) -> Iterator[None]:
    """A span named ``name`` around the block (nothing when tracing is not installed).

    OpenTelemetry records an exception leaving the block and marks the span an error.
    """
    found = tracer()
    if found is None:
        yield
        return
    with found.start_as_current_span(name, attributes=attributes):
        yield
