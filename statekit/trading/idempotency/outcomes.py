"""Unknown outcomes: settled by asking the exchange for the client order id, never guessed.

A timeout or a lost answer leaves an order that may or may not exist. The
exchange is asked for the key (the client order id): found means placed, not
found means not accepted, so sending again is safe. What a crash left
``reserved`` is settled the same way (:func:`recover`), and never by sending.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from statekit.trading.errors import ExchangeError, ExchangeUnavailable, RateLimited
from statekit.trading.exchange import ExchangeConnector, ExchangeOrder
from statekit.trading.idempotency.entries import EntryBook, EntryStatus, PlacedOrder

__all__ = ["Recovery", "Retry", "lookup", "recover", "resolve"]


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how patiently exchange calls are retried when they can be.

    A rate-limited request is sent again (nothing happened); an unanswered
    lookup is asked again. Waits grow ``backoff * 2**n`` up to ``max_backoff``,
    with jitter, and honour a rate limit's ``retry_after``.

    :param attempts: retries after the first try, per kind of failure.
    """

    attempts: int = 6
    backoff: float = 0.05
    max_backoff: float = 2.0

    async def pause(self, attempt: int, retry_after: float | None = None) -> None:
        delay = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, retry_after)
        await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class Recovery:
    """What :meth:`IdempotencyLedger.recover` did.

    :param placed: entries found at the exchange and now recorded as placed.
    :param released: keys the exchange does not have: their reservation was
        dropped, so the signal, fired again, places the order.
    :param unresolved: keys still ``reserved`` because the exchange did not answer.
    """

    placed: list[PlacedOrder] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)


async def lookup(
    connector: ExchangeConnector, key: str, symbol: str, retry: Retry
) -> ExchangeOrder | None:
    """Ask the exchange for the order of this key, retrying while it does not answer.

    :raises ExchangeUnavailable: no answer after the retries; the entry stays reserved.
    """
    last: ExchangeError | None = None
    for attempt in range(retry.attempts + 1):
        try:
            return await connector.fetch_order_by_client_id(key, symbol)
        except RateLimited as exc:
            last = exc
            await retry.pause(attempt, exc.retry_after)
        except ExchangeUnavailable as exc:
            last = exc
            await retry.pause(attempt)
    raise ExchangeUnavailable(
        f"order {key}: outcome unknown (the exchange did not answer the lookup by "
        "client order id); the entry stays reserved, recover() resolves it",
        exchange=connector.name,
    ) from last


async def resolve(
    book: EntryBook, connector: ExchangeConnector, key: str, symbol: str, retry: Retry
) -> PlacedOrder | None:
    """Settle one key's outcome by asking the exchange; see :meth:`IdempotencyLedger.resolve`."""
    entry = await book.get(key)
    if entry is None:
        found = await lookup(connector, key, symbol, retry)
        return None if found is None else PlacedOrder(key, found, replayed=True)
    if entry.status is EntryStatus.PLACED:
        assert entry.order is not None
        return PlacedOrder(key, entry.order, replayed=True)
    if entry.status is EntryStatus.REJECTED:
        return None
    held = await book.claim(entry, connector.name)
    if held is None:
        raise ExchangeUnavailable(
            f"order {key}: another caller took its reservation over meanwhile; "
            "its outcome is theirs to record",
            exchange=connector.name,
        )
    found = await lookup(connector, key, symbol, retry)
    if found is None:
        await book.release(held)
        return None
    return await book.record_placed(held, found, replayed=True)


async def recover(
    book: EntryBook,
    connector: ExchangeConnector,
    retry: Retry,
    *,
    older_than: float,
    clock: Callable[[], datetime],
) -> Recovery:
    """Resolve every entry left ``reserved``; see :meth:`IdempotencyLedger.recover`."""
    recovery = Recovery()
    stale = [
        entry
        async for entry in book.scan()
        if entry.status is EntryStatus.RESERVED
        and (clock() - entry.claimed_at).total_seconds() >= older_than
    ]
    for entry in stale:
        held = await book.claim(entry, connector.name)
        if held is None:
            continue  # someone else is resolving it
        symbol = held.params["symbol"]
        assert symbol is not None
        try:
            found = await lookup(connector, held.key, symbol, retry)
        except ExchangeUnavailable:
            recovery.unresolved.append(held.key)
            continue
        if found is not None:
            recovery.placed.append(await book.record_placed(held, found, replayed=True))
        else:
            await book.release(held)
            recovery.released.append(held.key)
    return recovery
