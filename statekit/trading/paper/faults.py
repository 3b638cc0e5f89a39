"""The paper exchange's faults: which ones a call draws, and what they do to its answer.

Every call draws the same number of numbers from the exchange's seeded RNG
whatever the probabilities, so a run is reproducible from its seed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TypeVar

from statekit.trading.errors import ExchangeError, ExchangeUnavailable, RateLimited

__all__ = ["Faults", "answer", "draw"]

T = TypeVar("T")


@dataclass(frozen=True)
class Faults:
    """How often each fault is injected: a probability in [0, 1] per call (or per fill report).

    Every call draws from the exchange's seeded RNG, the same number of draws
    whatever the probabilities, so a run is reproducible from its seed.
    """

    timeout_before_accept: float = 0.0
    """``create_order`` raises ExchangeUnavailable; the order was NOT placed."""
    timeout_after_accept: float = 0.0
    """``create_order`` places the order, then raises ExchangeUnavailable."""
    lost_ack: float = 0.0
    """Any call: the request takes effect, the answer is lost (ExchangeUnavailable)."""
    rate_limit: float = 0.0
    """Any call: RateLimited, before anything happens."""
    duplicate_fill: float = 0.0
    """A fill report is delivered again (same ``Fill.id``), at the next ``advance()``."""
    out_of_order_fills: float = 0.0
    """``fetch_fills`` returns its reports shuffled."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if not (isinstance(value, int | float) and 0 <= value <= 1):
                raise ValueError(
                    f"Faults.{spec.name} must be a probability in [0, 1], not {value!r}"
                )


def draw(rng: random.Random, faults: Faults, kinds: tuple[str, ...]) -> frozenset[str]:
    """The faults one call gets: ``rate_limit``, ``lost_ack`` and the call's own ``kinds``."""
    # Always the same draws per call, whatever the probabilities: reproducible runs.
    names = ("rate_limit", "lost_ack", *kinds)
    return frozenset(n for n in names if rng.random() < getattr(faults, n))


async def answer(
    exchange: str,
    request: str,
    hit: frozenset[str],
    effect: Callable[[], T],
    epoch: Callable[[], int],
) -> T:
    """Apply the faults drawn for one call around its effect.

    :param exchange: the exchange's name, in the errors.
    :param epoch: the exchange's restart count: when it changes while the answer
        travels back, the answer is lost.
    """
    if "rate_limit" in hit:
        raise RateLimited(
            f"{exchange}: {request} refused: rate limit exceeded (injected)", exchange=exchange
        )
    if "timeout_before_accept" in hit:
        raise ExchangeUnavailable(
            f"{exchange}: {request} timed out before the exchange got it (injected)",
            exchange=exchange,
        )
    started = epoch()
    refused: ExchangeError | None = None
    try:
        result = effect()
    except ExchangeError as exc:
        refused = exc
    await asyncio.sleep(0)  # the answer travels back; a restart meanwhile loses it
    if epoch() != started:
        raise ExchangeUnavailable(
            f"{exchange}: restarted while {request} was in flight; the answer was lost",
            exchange=exchange,
        )
    if "timeout_after_accept" in hit:
        raise ExchangeUnavailable(
            f"{exchange}: {request} timed out after the exchange accepted it (injected)",
            exchange=exchange,
        )
    if "lost_ack" in hit:
        raise ExchangeUnavailable(
            f"{exchange}: the answer to {request} was lost (injected)", exchange=exchange
        )
    if refused is not None:
        raise refused
    return result
