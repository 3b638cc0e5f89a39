"""The built-in ``positions`` reconciler: the exchange's report is the truth for positions.

One work key per symbol (``position:<symbol>``). Each pass reads the store's
positions first and then asks the exchange once for the whole account
(``fetch_positions()``); the keys are every symbol in either, within the
engine's scope. For each symbol it compares three sources: the **exchange**,
the **store** (the primary's ``position/<symbol>``) and, when the store is a
tiered store with a read cache, the **cache** (what a read would be served
without asking the primary). Then:

- **listed by the exchange**: a store position that differs in amount (beyond
  ``tolerance``; exact by default) or in entry price is written from the
  exchange: amount, entry price and ``last_updated`` change, every other field
  (the bot's own ones included) is kept. A cache entry that differs while the
  store is right is evicted.
- **not listed** while the store holds a non-zero amount: *not* removed. A
  single bulk answer that leaves a symbol out is no proof the position is flat
  (seed 000 deleted on it). The symbol is **flagged**, then asked about alone
  (``fetch_positions([symbol])``). Listed there: the store is updated from that
  answer (or the flag cleared). Confirmed absent (``confirmations`` times in a
  row, one per pass): the store position is removed, a tombstone version whose
  meta says why; its history keeps every earlier version. No answer: nothing
  changes and the key is retried with backoff.

Every difference is recorded as a new version of ``discrepancy/position/<symbol>``
(kind ``trading.discrepancy``): its history is the event log, read back typed with
:func:`discrepancies`. Every write is fenced by the engine's lease, and a record
and the fix it describes land in one atomic batch.

One module per part: :mod:`.log` (the discrepancy events and reading them back),
:mod:`.sources` (observing the exchange, the store and its cache), :mod:`.decide`
(what to do about one symbol), :mod:`.writes` (the events and fixes, fenced) and
:mod:`.reconciler` (:class:`PositionReconciler`: keys, passes, one symbol's flow).
"""

from statekit.trading.reconcile.positions.log import (
    DISCREPANCY_FOLDER,
    Discrepancy,
    DiscrepancyAction,
    Observation,
    ReportSource,
    discrepancies,
)
from statekit.trading.reconcile.positions.reconciler import PositionReconciler

__all__ = [
    "DISCREPANCY_FOLDER",
    "Discrepancy",
    "DiscrepancyAction",
    "Observation",
    "PositionReconciler",
    "ReportSource",
    "discrepancies",
]
