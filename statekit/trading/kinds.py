"""The kinds the trading layer stores, namespaced so a user's own ``position`` kind stays theirs.

The built-in ``trading`` plugin validates these kinds (statekit.trading.plugin);
a store's other kinds are untouched by it.
"""

from __future__ import annotations

__all__ = [
    "AGGREGATE_SNAPSHOT",
    "BALANCE",
    "IDEMPOTENCY",
    "INDEX",
    "LEASE",
    "LEGACY_KINDS",
    "LEGACY_PAIR_STATE",
    "LEGACY_PORTFOLIO",
    "LEGACY_POSITION",
    "ORDER",
    "PAIR_STATE",
    "PORTFOLIO",
    "POSITION",
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
