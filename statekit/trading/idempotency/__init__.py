"""Idempotent order placement: each intended order reaches the exchange once.

An intended order is an :class:`OrderIntent`: which strategy, which signal, and
the order's parameters. Its **idempotency key** is a hash of those, with no
timestamp, so the same signal fired twice (a retry, a restarted process, a
duplicated message) has the same key; the exchange receives that key as the
order's client order id.

:class:`IdempotencyLedger` keeps one entry per key, ``idempotency/<key>``, and
follows one protocol (docs/idempotency.md):

1. **Reserve first.** The entry is written with ``expect=0`` *before* anything
   is sent, so of any number of concurrent callers (tasks or processes) exactly
   one wins; the others wait for its result. (Seed 000 checked a cache, placed,
   then cached: two concurrent duplicates both placed, and a crash after placing
   lost the key.)
2. **Send** ``create_order`` with ``client_order_id=key``; record the answer
   (``placed`` or ``rejected``) with compare-and-set on the version reserved.
3. **Never guess an unknown outcome.** A timeout or lost answer is resolved by
   asking the exchange for the client order id: found means placed; not found
   means not accepted, so sending again is safe (the exchange also refuses a
   second order with the same client id, and that refusal is resolved the
   same way).
4. **Recover** what a crash left ``reserved``: :meth:`IdempotencyLedger.recover`
   asks the exchange by client id and records the order it finds; it never
   places one.

Entries expire after a retention (24 hours by default, as Stripe keeps its
idempotency keys): an expired entry reads as absent, so replaying a signal
after the retention places it again.

One module per part: :mod:`.keys` (:class:`OrderIntent` and its key),
:mod:`.entries` (what an entry holds, and its compare-and-set writes),
:mod:`.ledger` (:class:`IdempotencyLedger`: reserve, send, record) and
:mod:`.outcomes` (unknown outcomes and recovery: asking the exchange by
client order id, :class:`Retry`).
"""

from statekit.trading.idempotency.entries import (
    KEY_PREFIX,
    KIND,
    EntryStatus,
    LedgerEntry,
    PlacedOrder,
)
from statekit.trading.idempotency.keys import (
    KEY_LENGTH,
    OrderIntent,
    check_client_key,
    idempotency_key,
)
from statekit.trading.idempotency.ledger import DEFAULT_GRACE, DEFAULT_RETENTION, IdempotencyLedger
from statekit.trading.idempotency.outcomes import Recovery, Retry

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_RETENTION",
    "KEY_LENGTH",
    "KEY_PREFIX",
    "KIND",
    "EntryStatus",
    "IdempotencyLedger",
    "LedgerEntry",
    "OrderIntent",
    "PlacedOrder",
    "Recovery",
    "Retry",
    "check_client_key",
    "idempotency_key",
]
