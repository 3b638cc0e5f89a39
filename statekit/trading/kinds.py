"""The kinds the trading layer stores, namespaced so a user's own ``position`` kind stays theirs.

The built-in ``trading`` plugin validates these kinds (statekit.trading.plugin);
a store's other kinds are untouched by it.
"""

from __future__ import annotations

__all__ = [
    "ACTUAL_ORDER",
    "AGGREGATE_SNAPSHOT",
    "BALANCE",
    "DISCREPANCY",
    "IDEMPOTENCY",
    "INDEX",
    "INTENT",
    "INTENT_STATUS",
    "LEASE",
    "LEGACY_KINDS",
    "LEGACY_PAIR_STATE",
    "LEGACY_PORTFOLIO",
    "LEGACY_POSITION",
    "ORDER",
    "PAIR_STATE",
    "PORTFOLIO",
    "POSITION",
    "RECONCILE_METRICS",
]

POSITION = "trading.position"
ORDER = "trading.order"
BALANCE = "trading.balance"
PAIR_STATE = "trading.pair_state"
PORTFOLIO = "trading.portfolio"
INDEX = "trading.index"
"""The keys of the state after each TradingState.save()."""

LEASE = "trading.lease"
"""A lease (statekit.trading.leases); its version is the fencing token."""
INTENT = "trading.intent"
"""A reconciliation intent: a desired order (statekit.trading.reconcile)."""
INTENT_STATUS = "trading.intent_status"
"""What the reconciliation engine knows and did about an intent."""
ACTUAL_ORDER = "trading.actual_order"
"""The exchange's last report of an order the reconciliation engine sent."""
DISCREPANCY = "trading.discrepancy"
"""A difference the reconciliation found between the exchange and the store."""
RECONCILE_METRICS = "trading.reconcile_metrics"
"""A reconciliation engine's metrics, per scope."""
IDEMPOTENCY = "trading.idempotency"
"""An idempotency ledger entry (statekit.trading.idempotency)."""
AGGREGATE_SNAPSHOT = "trading.aggregate_snapshot"
"""An event-sourced aggregate's snapshot (statekit.trading.events); the events'
own kinds are in statekit.trading.events.EVENT_KINDS."""

LEGACY_POSITION = "trading.legacy_position"
LEGACY_PAIR_STATE = "trading.legacy_pair_state"
LEGACY_PORTFOLIO = "trading.legacy_portfolio"
LEGACY_KINDS = (LEGACY_POSITION, LEGACY_PAIR_STATE, LEGACY_PORTFOLIO)
"""The legacy drop-in's free-form dicts (statekit.compat), stored as given."""
