"""One paper exchange shared by several processes: a small JSON-lines server and its connector.

A failover test needs several OS processes (an active engine, a standby that
takes over) to trade on *one* exchange, so that "no order placed twice" can be
checked at that exchange. :class:`PaperExchangeServer` serves a
:class:`~statekit.trading.paper.PaperExchange` over TCP; :class:`RemoteExchange`
is the :class:`~statekit.trading.exchange.ExchangeConnector` that talks to it.

The protocol is one JSON object per line, each way::

    -> {"id": 7, "method": "create_order", "args": {"symbol": "BTC/USDT", ...}}
    <- {"id": 7, "result": {...}}                   (the pydantic model's JSON)
    <- {"id": 7, "error": {"type": "OrderRejected", "message": "...",
                           "fields": {"exchange": "paper"}}}

Decimals travel as strings, enums as their values. A connection's requests
are handled one after the other, in the order they arrive; connections are
served concurrently, on the event loop the exchange lives on (it is not
thread-safe and need not be). Besides the connector methods the server
answers the test controls ``advance``, ``restart``, ``orders``, ``fills`` and
``set_faults``.

The client keeps the connector rules: an error the exchange raised is raised
again with its type and fields; a connection that drops, cannot be made, or
does not answer within ``timeout`` raises
:class:`~statekit.errors.ExchangeUnavailable` (the request may have taken
effect), and the next call connects again.

Run a server in its own process (the URL is the first line it prints; it
serves until SIGTERM, SIGINT or the end of its stdin)::

    python -m statekit.testing.paper_remote --port 0 \\
        --prices-json '{"BTC/USDT": ["100", "101"]}' --balances-json '{"USDT": "1000"}'

One module per part: :mod:`.protocol` (the wire format), :mod:`.server`,
:mod:`.client` (the connector) and :mod:`.command` (the process above).
"""

from statekit.testing.paper_remote.client import RemoteExchange
from statekit.testing.paper_remote.command import main
from statekit.testing.paper_remote.protocol import DEFAULT_TIMEOUT, SCHEME
from statekit.testing.paper_remote.server import PaperExchangeServer

__all__ = ["DEFAULT_TIMEOUT", "SCHEME", "PaperExchangeServer", "RemoteExchange", "main"]
