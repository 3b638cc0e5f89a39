"""What each venue answers when asked for an order by client order id, through ccxt.

Placing needs no table: ccxt's ``create_order`` takes the unified
``clientOrderId`` param and each exchange class sends it under the venue's own
name (Binance ``newClientOrderId``, Bybit ``orderLinkId``, OKX ``clOrdId``,
KuCoin ``clientOid``, Gate ``text``, Bitget ``clientOid``, Kraken
``cl_ord_id``...; read in ccxt 4.5's source).

Looking an order up by it is where venues differ, and where a wrong answer is
expensive: ``fetch_order_by_client_id`` returning None tells the idempotency
ledger the order was never accepted, so it is sent again. This table lists
what was checked in ccxt's source; a venue not in it is asked nothing by
client id, and its recent orders are scanned instead (see
:class:`statekit_ccxt.CcxtConnector`), where "not seen" is never taken for "not there".
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClientIdLookup", "lookup_for"]


@dataclass(frozen=True, slots=True)
class ClientIdLookup:
    """How one venue is asked for the order of a client order id."""

    by_fetch_order: bool = False
    """ccxt's ``fetch_order(None, symbol, {"clientOrderId": ...})`` asks the venue by
    client id (rather than ignoring the param and asking for order id None)."""
    absence_is_an_answer: bool = False
    """The venue's "no such order" to that query (ccxt's ``OrderNotFound``) means it
    never accepted one, so the connector may answer None."""


_BINANCE = ClientIdLookup(by_fetch_order=True, absence_is_an_answer=True)
# binance.fetch_order sends origClientOrderId (clientAlgoId for conditional orders); the
# venue answers {"code": -2013, "msg": "Order does not exist."}, which ccxt raises as
# OrderNotFound. Binance's derivatives docs say which orders drop out of that query: a
# CANCELED or EXPIRED order without fills after 3 days, any order after 90 days, so the
# ledger's retention must stay below 3 days (its default is 24 hours).
_LOOKUPS: dict[str, ClientIdLookup] = {
    "binance": _BINANCE,
    "binanceusdm": _BINANCE,
    "binancecoinm": _BINANCE,
    # okx.fetch_order sends clOrdId; its "does not exist" (51603) is not trusted as an
    # answer: OKX drops some finished orders from that query after a while, and this
    # was not checked against OKX's documentation.
    "okx": ClientIdLookup(by_fetch_order=True),
}


def lookup_for(exchange_id: str) -> ClientIdLookup:
    """How the venue ``exchange_id`` (a ccxt id) is asked by client order id."""
    return _LOOKUPS.get(exchange_id, ClientIdLookup())
