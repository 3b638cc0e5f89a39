"""ccxt's unified structures (order, trade, position, balance) read into statekit's models.

ccxt parses numbers into floats (``exchange.number``, float unless set to
``str``); each is read with ``Decimal(str(x))``, the float's shortest repr,
which gives back the venue's decimal text for anything of up to 15
significant digits. No arithmetic is done on floats. Times are ccxt's
millisecond timestamps, read as aware UTC datetimes.

An answer that cannot be read (an order without an id, a number that is not
one) raises :class:`~statekit.errors.ExchangeError`: it is never guessed at.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from statekit.trading.errors import ExchangeError
from statekit.trading.exchange import ExchangeOrder, ExchangePosition, Fill
from statekit.trading.models import Balance, OrderSide, OrderStatus, OrderType, TimeInForce

__all__ = [
    "client_order_id_of",
    "decimal",
    "read_balances",
    "read_fill",
    "read_order",
    "read_position",
    "utc",
]

T = TypeVar("T")

ZERO = Decimal(0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATUSES = {
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "cancelled": OrderStatus.CANCELLED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}
_TIMES_IN_FORCE = {
    "GTC": TimeInForce.GTC,
    "PO": TimeInForce.GTC,  # post-only rests on the book like GTC (Binance LIMIT_MAKER, GTX)
    "IOC": TimeInForce.IOC,
    "FOK": TimeInForce.FOK,
}
_BALANCE_KEYS = frozenset({"info", "timestamp", "datetime", "free", "used", "total", "debt"})


class _Unreadable(ValueError):
    """A field of ccxt's answer that cannot be read as what it should be."""


def decimal(value: object, what: str) -> Decimal | None:
    """``value`` (a ccxt number: float, str, int, Decimal) as an exact Decimal; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, float | int | str | Decimal):
        raise _Unreadable(f"{what} is {type(value).__name__} {value!r}, not a number")
    try:
        number = Decimal(str(value))  # a float's str() is its shortest repr: 0.1 -> "0.1"
    except InvalidOperation:
        raise _Unreadable(f"{what} {value!r} is not a number") from None
    if not number.is_finite():
        raise _Unreadable(f"{what} {value!r} is not finite")
    return number


def utc(milliseconds: object) -> datetime | None:
    """A ccxt timestamp (milliseconds since the epoch) as an aware UTC datetime; None stays None."""
    if milliseconds is None:
        return None
    if isinstance(milliseconds, bool) or not isinstance(milliseconds, int | float | str):
        raise _Unreadable(f"timestamp {milliseconds!r} is not a number of milliseconds")
    try:
        count = int(milliseconds)
    except ValueError:
        raise _Unreadable(f"timestamp {milliseconds!r} is not a number of milliseconds") from None
    return _EPOCH + timedelta(milliseconds=count)  # exact, unlike fromtimestamp(ms / 1000)


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _status(raw: Mapping[str, Any], filled: Decimal) -> OrderStatus:
    status = raw.get("status")
    if status == "open":
        return OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.OPEN
    if status is None:
        return OrderStatus.NEW  # acknowledged, not yet reported on (an ACK-only answer)
    try:
        return _STATUSES[str(status)]
    except KeyError:
        raise _Unreadable(f"order status {status!r} is not one of ccxt's") from None


def _order_type(raw: Mapping[str, Any], price: Decimal | None) -> OrderType:
    kind = str(raw.get("type") or "").lower()
    triggered = raw.get("triggerPrice") is not None or kind.startswith(
        ("stop", "take_profit", "trailing")
    )
    if triggered:
        return OrderType.STOP_LIMIT if "limit" in kind else OrderType.STOP
    if "market" in kind:
        return OrderType.MARKET
    if "limit" in kind or (not kind and price is not None):
        return OrderType.LIMIT
    if not kind:
        return OrderType.MARKET
    raise _Unreadable(f"order type {raw.get('type')!r} is not market, limit or a stop")


def _fee(raw: Mapping[str, Any]) -> Decimal:
    fee = raw.get("fee")
    cost = decimal(fee.get("cost"), "fee") if isinstance(fee, Mapping) else None
    # Fill.fee cannot be negative: a maker rebate is reported as no fee.
    return cost if cost is not None and cost > 0 else ZERO


def client_order_id_of(raw: Mapping[str, Any]) -> str | None:
    info = raw.get("info")
    if isinstance(info, Mapping) and info.get("origClientOrderId"):
        # A Binance cancel answer's clientOrderId names the cancel request; the
        # order's own (ours) is origClientOrderId, which ccxt does not read.
        return str(info["origClientOrderId"])
    return _text(raw.get("clientOrderId"))


def _fill(raw: Mapping[str, Any], *, order_id: str | None, at: datetime | None) -> Fill:
    amount = decimal(raw.get("amount"), "trade amount")
    price = decimal(raw.get("price"), "trade price")
    fill_id, order = _text(raw.get("id")), _text(raw.get("order")) or order_id
    when = utc(raw.get("timestamp")) or at
    if fill_id is None or order is None or amount is None or price is None or when is None:
        raise _Unreadable(f"trade {raw!r} lacks an id, order id, amount, price or time")
    return Fill(id=fill_id, order_id=order, amount=amount, price=price, fee=_fee(raw), at=when)


def _read(what: str, exchange: str, build: Callable[[Mapping[str, Any]], T], raw: object) -> T:
    """Run ``build(raw)``; what cannot be read is an ExchangeError naming ``what``."""
    if not isinstance(raw, Mapping):
        raise ExchangeError(
            f"{exchange}: ccxt returned {type(raw).__name__} for {what}, not a dict",
            exchange=exchange,
        )
    try:
        return build(raw)
    except ValueError as exc:  # _Unreadable, a pydantic ValidationError, an unknown side
        raise ExchangeError(f"{exchange}: cannot read {what}: {exc}", exchange=exchange) from exc


def read_order(raw: object, *, exchange: str, now: datetime) -> ExchangeOrder:
    """A ccxt order structure as an :class:`ExchangeOrder`.

    ``closed`` is FILLED, ``open`` is PARTIALLY_FILLED once something filled,
    no status at all (an acknowledgement) is NEW. Times missing from the answer
    are ``now``.
    """

    def build(raw: Mapping[str, Any]) -> ExchangeOrder:
        order_id, symbol = _text(raw.get("id")), _text(raw.get("symbol"))
        if order_id is None or symbol is None:
            raise _Unreadable("the order has no id or no symbol")
        filled = decimal(raw.get("filled"), "filled") or ZERO
        price = decimal(raw.get("price"), "price")
        kind = _order_type(raw, price)
        created = utc(raw.get("timestamp")) or now
        updated = (
            utc(raw.get("lastUpdateTimestamp")) or utc(raw.get("lastTradeTimestamp")) or created
        )
        trades = raw.get("trades") or []
        return ExchangeOrder(
            id=order_id,
            client_order_id=client_order_id_of(raw),
            symbol=symbol,
            side=OrderSide(str(raw.get("side"))),
            type=kind,
            amount=decimal(raw.get("amount"), "amount") or filled,
            price=None if kind is OrderType.MARKET or not price else price,
            time_in_force=_TIMES_IN_FORCE.get(str(raw.get("timeInForce")), TimeInForce.GTC),
            status=_status(raw, filled),
            filled=filled,
            average_price=decimal(raw.get("average"), "average") or None,
            fills=[
                _fill(t, order_id=order_id, at=updated)
                for t in trades
                if isinstance(t, Mapping) and t.get("id") is not None
            ],
            created_at=created,
            updated_at=max(created, updated),
        )

    return _read("an order", exchange, build, raw)


def read_fill(raw: object, *, exchange: str) -> Fill:
    """A ccxt trade structure (``fetch_my_trades``) as a :class:`Fill`."""
    return _read("a trade", exchange, lambda t: _fill(t, order_id=None, at=None), raw)


def read_position(raw: object, *, exchange: str, now: datetime) -> ExchangePosition | None:
    """A ccxt position structure as a signed :class:`ExchangePosition` (in base units:
    contracts times contract size); None for a flat one."""

    def build(raw: Mapping[str, Any]) -> ExchangePosition | None:
        symbol = _text(raw.get("symbol"))
        contracts = decimal(raw.get("contracts"), "contracts")
        if symbol is None or contracts is None:
            raise _Unreadable("the position has no symbol or no contracts")
        size = decimal(raw.get("contractSize"), "contractSize") or Decimal(1)
        amount = abs(contracts) * size
        if amount == 0:
            return None
        if raw.get("side") == "short":
            amount = -amount
        elif raw.get("side") != "long":
            raise _Unreadable(f"position side {raw.get('side')!r} is not long or short")
        return ExchangePosition(
            symbol=symbol,
            amount=amount,
            entry_price=decimal(raw.get("entryPrice"), "entryPrice"),
            at=utc(raw.get("timestamp")) or now,
        )

    return _read("a position", exchange, build, raw)


def read_balances(raw: object, *, exchange: str, now: datetime) -> dict[str, Balance]:
    """A ccxt balance structure as :class:`Balance` by asset (``used`` is ``locked``).

    Assets the venue lists with nothing free and nothing used are left out
    (Binance lists every asset it has).
    """

    def build(raw: Mapping[str, Any]) -> dict[str, Balance]:
        at = utc(raw.get("timestamp")) or now
        balances: dict[str, Balance] = {}
        for asset in sorted(set(raw) - _BALANCE_KEYS):
            entry = raw[asset]
            if not isinstance(entry, Mapping):
                continue
            free = decimal(entry.get("free"), f"{asset} free") or ZERO
            used = decimal(entry.get("used"), f"{asset} used") or ZERO
            if free == 0 and used == 0:
                continue
            balances[asset] = Balance(asset=asset, free=free, locked=used, updated_at=at)
        return balances

    return _read("the balance", exchange, build, raw)
