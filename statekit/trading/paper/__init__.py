"""The paper exchange: a deterministic exchange in memory, with fault injection.

:class:`PaperExchange` implements :class:`~statekit.trading.exchange.ExchangeConnector`
against a scripted price path per symbol. It has no wall clock and no I/O:
time is its own simulated clock, moved by :meth:`PaperExchange.advance`, and
every injected fault is drawn from a ``random.Random(seed)``, so the same seed
and the same calls give the same outcomes, run after run. It is what tests,
examples and the reconciler run against.

Matching, in short (docs/paper-exchange.md has the whole story):

- a market order fills at once, completely, at the current price;
- a limit order fills when the price reaches it (a buy when the price is at or
  below its limit, a sell at or above), at most ``max_fill_per_step`` per step,
  so orders can be partially filled. A limit order that crosses when placed
  fills at the current price (taker); a resting one at its limit (maker);
- a limit order's time in force: GTC rests; IOC fills what it can when placed
  and the rest is cancelled; FOK fills completely when placed or not at all.
  Either way an IOC or FOK order that did not fill completely ends
  ``cancelled`` (``filled`` says how much did, as CCXT reports it);
- balances move with fills: the quote for an open buy and the base for an open
  sell are locked until filled or cancelled; an order the account cannot pay
  for is refused with :class:`~statekit.errors.OrderRejected`;
- client order ids are unique per exchange: a second order with a client order
  id already accepted is refused (``duplicate clientOrderId``), as Binance does.

One module per part: :mod:`.market` (price paths and the simulated clock),
:mod:`.book` (orders, matching, fills and balances), :mod:`.faults` (what a call
draws and what that does to its answer) and :mod:`.exchange` (:class:`PaperExchange`,
the connector over them).
"""

from statekit.trading.paper.exchange import PaperExchange
from statekit.trading.paper.faults import Faults
from statekit.trading.paper.market import START

__all__ = ["START", "Faults", "PaperExchange"]
