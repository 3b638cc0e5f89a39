"""The paper exchange's market: a scripted price path per symbol and a simulated clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from statekit.trading.errors import OrderRejected

__all__ = ["START", "ZERO", "Market", "assets", "decimal"]

ZERO = Decimal(0)
START = datetime(2024, 1, 1, tzinfo=UTC)
"""Where the simulated clock starts unless told otherwise."""


def assets(symbol: str) -> tuple[str, str]:
    """``BTC/USDT`` (or CCXT's ``BTC/USDT:USDT``) -> ("BTC", "USDT")."""
    base, _, rest = symbol.partition("/")
    quote = rest.partition(":")[0]
    if not base or not quote:
        raise ValueError(f"symbol {symbol!r} is not BASE/QUOTE (e.g. 'BTC/USDT')")
    return base, quote


def decimal(value: object, what: str) -> Decimal:
    """``value`` as a finite Decimal; a float is refused, not rounded."""
    # Money is Decimal; an int is exact too.
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"{what} must be a Decimal, not {type(value).__name__} {value!r}")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{what} must be finite, not {number}")
    return number


class Market:
    """Each symbol's price path and the clock: ``start + steps * step``.

    :param name: the exchange's name, in the rejection of an unknown symbol.
    :raises ValueError: no symbol, a naive ``start``, a step that is not positive, a
        symbol that is not BASE/QUOTE, or a price path that is empty or not positive.
    """

    def __init__(
        self,
        prices: Mapping[str, Sequence[Decimal]],
        *,
        name: str,
        start: datetime,
        step: timedelta,
    ) -> None:
        if not prices:
            raise ValueError("a paper exchange needs at least one symbol's price path")
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("start must be an aware datetime (UTC)")
        if step <= timedelta(0):
            raise ValueError(f"step must be positive, not {step}")
        self.name = name
        self._paths: dict[str, list[Decimal]] = {}
        for symbol, path in prices.items():
            assets(symbol)
            checked = [decimal(p, f"price of {symbol}") for p in path]
            if not checked or any(p <= 0 for p in checked):
                raise ValueError(f"the price path of {symbol!r} must be non-empty and positive")
            self._paths[symbol] = checked
        self.start = start.astimezone(UTC)
        self._step = step
        self.steps = 0

    @property
    def now(self) -> datetime:
        """The simulated clock: ``start + steps * step``."""
        return self.start + self.steps * self._step

    def price(self, symbol: str) -> Decimal:
        """The current price of ``symbol``.

        :raises OrderRejected: the exchange does not trade ``symbol``.
        """
        path = self._paths.get(symbol)
        if path is None:
            trades = ", ".join(sorted(self._paths))
            raise OrderRejected(
                f"{self.name}: unknown symbol {symbol!r} (trades: {trades})", exchange=self.name
            )
        return path[min(self.steps, len(path) - 1)]
