"""The built-in ``orders`` reconciler: make the exchange's orders match the intents.

One work key per intent (``intent:<id>``), or per OCO group (``oco:<group>``, its
legs reconciled together), plus ``orphan:<client order id>`` for an open order the
engine sent that no intent owns any more. For each, after refreshing what the
exchange says about the intent's orders (*legs*):

- **unknown outcome** (sent, no answer): asked by client order id. Found: recorded.
  Not found, and still wanted: sent again with the *same* client order id through
  the idempotency ledger (the exchange refuses a second order with one id, and the
  ledger resolves that refusal by the same query). Never assumed placed or lost.
- **not wanted** (deleting, filled, an OCO sibling triggered): live legs are cancelled;
  once none is live, a deleting intent is removed (its finalizer) and any other is
  marked done.
- **wanted**: a live leg matching the desired order (symbol, side, type, price,
  time in force, and the remaining amount: the intent's amount minus everything
  filled on every leg) is kept; any other live leg is cancelled first (an amend is
  cancel-and-replace: nothing new is placed while an old order may still fill);
  with no live leg, a new leg is placed, its client order id derived from
  (intent uid, generation, attempt), after its status is stored under the lease.
- a resting GTC leg that ended cancelled or expired without the engine asking is
  **drift**: placed again (a new attempt), up to ``max_attempts`` per generation.
  An IOC/FOK or market leg that ended is the end of that generation. A rejected leg
  is a terminal failure until the intent changes.

One module per part: :mod:`.legs` (leg bookkeeping: refreshing legs from the
exchange, saving statuses), :mod:`.decide` (what to do next for one intent),
:mod:`.oco` (groups reconciled together) and :mod:`.reconciler`
(:class:`IntentReconciler`: observing, acting, orphans).
"""

from statekit.trading.reconcile.orders.legs import STRATEGY_PREFIX
from statekit.trading.reconcile.orders.reconciler import IntentReconciler

__all__ = ["STRATEGY_PREFIX", "IntentReconciler"]
