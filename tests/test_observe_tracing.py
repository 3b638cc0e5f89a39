"""OpenTelemetry spans around store operations and exchange calls (statekit.observe.tracing):
recorded by the SDK's in-memory exporter when a provider is configured, nothing otherwise."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import statekit
from statekit.errors import ConflictError
from statekit.trading import PaperExchange
from statekit.trading.reconcile.engine import ThrottledConnector
from statekit.trading.reconcile.queue import TokenBucket


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """A configured tracer provider for this test only (OpenTelemetry allows setting the
    global one once per process: the test puts it in place and takes it back)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    yield exporter
    provider.shutdown()


@pytest.mark.asyncio
async def test_store_operations_are_spans(spans: InMemorySpanExporter) -> None:
    async with await statekit.open("memory://") as store:
        await store.put("position/A", {"qty": 1})
        with pytest.raises(ConflictError):
            await store.put("position/A", {"qty": 2}, expect=7)
        assert await store.get("position/A") is not None
    put, conflict, get = spans.get_finished_spans()
    assert (put.name, conflict.name, get.name) == ("statekit.store.put",) * 2 + (
        "statekit.store.get",
    )
    assert put.attributes == {"statekit.backend": "memory", "statekit.key": "position/A"}
    assert put.status.status_code is StatusCode.UNSET
    assert conflict.status.status_code is StatusCode.ERROR
    assert [event.name for event in conflict.events] == ["exception"]


@pytest.mark.asyncio
async def test_exchange_calls_are_spans(spans: InMemorySpanExporter) -> None:
    exchange = PaperExchange(prices={"BTC/USDT": [Decimal("100")]}, balances={"USDT": Decimal(5)})
    connector = ThrottledConnector(exchange, TokenBucket(1000))
    balances = await connector.fetch_balance()
    assert balances
    (call,) = spans.get_finished_spans()
    assert call.name == "statekit.exchange.fetch_balance"
    assert call.attributes == {"statekit.exchange": exchange.name}


@pytest.mark.asyncio
async def test_nothing_is_wrapped_without_a_provider() -> None:
    async with await statekit.open("memory://") as store:
        assert "put" not in vars(store)  # the class's own method: no cost added


def test_nothing_is_wrapped_without_opentelemetry() -> None:
    """``opentelemetry`` not importable (the ``otel`` extra not installed)."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        sys.modules["opentelemetry"] = None  # what an environment without it sees
        import statekit
        from statekit.observe.tracing import span, tracer

        async def main():
            assert tracer() is None
            with span("statekit.exchange.x", {}):
                pass
            async with await statekit.open("memory://") as store:
                await store.put("k", {"v": 1})
                assert "put" not in vars(store)

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
