"""What an intended order is, and its idempotency key (which is its client order id).

The key is a hash of the order's identity and parameters, with no timestamp: the
same signal fired twice has the same key. Amounts and prices are hashed as
canonical numbers, so ``Decimal("1.50")`` and ``Decimal("1.5")`` are one key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from statekit.errors import ValidationError
from statekit.trading.models import OrderSide, OrderType, TimeInForce

__all__ = ["KEY_LENGTH", "OrderIntent", "check_client_key", "differences", "idempotency_key"]

KEY_LENGTH = 32
"""Characters in a key: ``sk`` and 30 hex digits (120 bits of sha256).

32 alphanumerics fit the strictest common client-id rules (OKX ``clOrdId``:
up to 32 alphanumerics; Binance ``newClientOrderId`` and Bybit ``orderLinkId``:
up to 36 of ``[A-Za-z0-9_-]``...)."""
_CANONICAL_VERSION = "statekit.idempotency/1"
_CLIENT_KEY = re.compile(r"[A-Za-z0-9_-]{1,36}")
_PARAMS = ("strategy_id", "signal_id", "symbol", "side", "type", "amount", "price")
# Parameters added later: in the params (and the key) only when not at their default,
# so the keys of the intents that existed before them stay what they were.
_OPTIONAL_PARAMS = {"time_in_force": TimeInForce.GTC.value}


def _decimal(name: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str | float):
        raise ValidationError(
            f"{name} must be a Decimal, not {type(value).__name__}", reason=f"{name} type"
        )
    try:
        # A float goes through its shortest repr: 0.1 means Decimal("0.1") (as in the models).
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValidationError(f"{name} {value!r} is not a number", reason=name) from None
    if not number.is_finite() or number <= 0:
        raise ValidationError(f"{name} must be a finite number above 0, not {value!r}", reason=name)
    return number


def _canonical_number(value: Decimal) -> str:
    # normalize() makes 1.50 and 1.5 (and 1E+2 and 100) one text; "f" keeps it positional.
    return format(value.normalize(), "f")


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """One order a strategy means to place once: what identifies it and what it is.

    Amounts and prices are compared as numbers: ``Decimal("1.50")`` and
    ``Decimal("1.5")`` are the same intent (and key).

    :param strategy_id: the strategy firing it.
    :param signal_id: the signal (or leg of it) within the strategy; a new signal
        that wants a new order needs a new id.
    :param price: required for limit and stop-limit orders.
    :param time_in_force: sent with the order; part of the key only when it is
        not GTC, so a GTC intent has the key it had before time in force existed.
    """

    strategy_id: str
    signal_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    amount: Decimal
    price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC

    def __post_init__(self) -> None:
        for name in ("strategy_id", "signal_id", "symbol"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValidationError(f"{name} must be a non-empty str", reason=name)
        try:
            object.__setattr__(self, "side", OrderSide(self.side))
            object.__setattr__(self, "type", OrderType(self.type))
        except ValueError as exc:
            raise ValidationError(str(exc), reason="side or type") from None
        try:
            object.__setattr__(self, "time_in_force", TimeInForce(self.time_in_force))
        except ValueError as exc:
            raise ValidationError(str(exc), reason="time_in_force") from None
        object.__setattr__(self, "amount", _decimal("amount", self.amount))
        if self.price is not None:
            object.__setattr__(self, "price", _decimal("price", self.price))
        elif self.type in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            raise ValidationError(f"a {self.type.value} order needs a price", reason="price")

    def params(self) -> dict[str, str | None]:
        """The parameters as canonical text (numbers normalized), as stored in the entry.

        ``time_in_force`` is there only when it is not GTC (see :meth:`canonical`).
        """
        params: dict[str, str | None] = {
            "strategy_id": self.strategy_id,
            "signal_id": self.signal_id,
            "symbol": self.symbol,
            "side": self.side.value,
            "type": self.type.value,
            "amount": _canonical_number(self.amount),
            "price": None if self.price is None else _canonical_number(self.price),
        }
        if self.time_in_force is not TimeInForce.GTC:
            params["time_in_force"] = self.time_in_force.value
        return params

    def canonical(self) -> str:
        """The text hashed into the key: a versioned JSON array of the parameters.

        The parameters added after version 1 (``time_in_force``) are appended
        only when not at their default, so a key computed before they existed
        is still the key of the same intent.
        """
        params = self.params()
        fields = [_CANONICAL_VERSION, *(params[name] for name in _PARAMS)]
        fields += [params[name] for name in _OPTIONAL_PARAMS if name in params]
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))

    @property
    def key(self) -> str:
        """The idempotency key, also the client order id: ``sk`` + 30 hex digits."""
        digest = hashlib.sha256(self.canonical().encode()).hexdigest()
        return "sk" + digest[: KEY_LENGTH - 2]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> OrderIntent:
        """The intent back from :meth:`params` (as stored in a ledger entry)."""
        price = params.get("price")
        return cls(
            strategy_id=params["strategy_id"],
            signal_id=params["signal_id"],
            symbol=params["symbol"],
            side=OrderSide(params["side"]),
            type=OrderType(params["type"]),
            amount=Decimal(params["amount"]),
            price=None if price is None else Decimal(price),
            # an entry stored before time in force existed was a GTC order
            time_in_force=TimeInForce(params.get("time_in_force") or TimeInForce.GTC),
        )


def differences(
    params: Mapping[str, str | None], intent: OrderIntent
) -> dict[str, tuple[str, str]]:
    """The parameters where ``intent`` differs from stored ``params``: ``{name: (stored, given)}``.

    A parameter left out of either (an entry stored before it existed, or one at
    its default) reads as its default.
    """
    stored = {**_OPTIONAL_PARAMS, **params}
    given = {**_OPTIONAL_PARAMS, **intent.params()}
    return {
        name: (str(stored.get(name)), str(given[name]))
        for name in (*_PARAMS, *_OPTIONAL_PARAMS)
        if stored.get(name) != given[name]
    }


def check_client_key(key: object) -> str:
    """Return ``key`` if exchanges accept it as a client order id, else raise ValidationError.

    Up to 36 characters of ``[A-Za-z0-9_-]``, which Binance, Bybit and most
    CCXT exchanges take (OKX: 32 alphanumerics; derived keys fit that too).
    """
    if not isinstance(key, str) or not _CLIENT_KEY.fullmatch(key):
        raise ValidationError(
            f"idempotency key {key!r} must be 1 to 36 characters of [A-Za-z0-9_-] "
            "(exchanges limit client order ids)",
            key=str(key),
            reason="client order id",
        )
    return key


def idempotency_key(
    *,
    strategy_id: str,
    signal_id: str,
    symbol: str,
    side: OrderSide | str,
    type: OrderType | str,
    amount: Decimal,
    price: Decimal | None = None,
    time_in_force: TimeInForce | str = TimeInForce.GTC,
) -> str:
    """The idempotency key (and client order id) of an order; see :class:`OrderIntent`."""
    return OrderIntent(
        strategy_id,
        signal_id,
        symbol,
        OrderSide(side),
        OrderType(type),
        amount,
        price,
        TimeInForce(time_in_force),
    ).key
