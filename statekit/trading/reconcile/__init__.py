"""Reconciliation: desired state (intents) vs what the exchange reports ("Kubernetes for orders").

- :mod:`~statekit.trading.reconcile.intents`: intents, their statuses and actual
  orders, in the store.
- :mod:`~statekit.trading.reconcile.engine`: :class:`ReconcileEngine`, the
  level-triggered loop with its work queue, rate limit, lease and metrics.
- :mod:`~statekit.trading.reconcile.orders`: the built-in ``orders`` reconciler.
- :mod:`~statekit.trading.reconcile.positions`: the built-in ``positions``
  reconciler (the exchange is the truth).
- :mod:`~statekit.trading.reconcile.shards`: :class:`ShardedEngines`, hash shards
  of the intents over several processes with standbys.

docs/reconcile.md explains the model.
"""

from statekit.trading.reconcile.base import Action, Context, Reconciler, Result, Scope
from statekit.trading.reconcile.engine import (
    PassReport,
    ReconcileEngine,
    ThrottledConnector,
    plan_table,
    read_metrics,
)
from statekit.trading.reconcile.intents import (
    ActualOrder,
    ActualOrders,
    Condition,
    Intent,
    IntentSpec,
    IntentStatus,
    IntentStore,
    Leg,
)
from statekit.trading.reconcile.metrics import ReconcileMetrics, prometheus_text
from statekit.trading.reconcile.orders import IntentReconciler
from statekit.trading.reconcile.positions import (
    Discrepancy,
    DiscrepancyAction,
    PositionReconciler,
    discrepancies,
)
from statekit.trading.reconcile.queue import Backoff, TokenBucket, WorkQueue
from statekit.trading.reconcile.shards import (
    ShardedEngines,
    parse_shards,
    shard_holders,
    shard_scope,
    shard_scopes,
)

__all__ = [
    "Action",
    "ActualOrder",
    "ActualOrders",
    "Backoff",
    "Condition",
    "Context",
    "Discrepancy",
    "DiscrepancyAction",
    "Intent",
    "IntentReconciler",
    "IntentSpec",
    "IntentStatus",
    "IntentStore",
    "Leg",
    "PassReport",
    "PositionReconciler",
    "ReconcileEngine",
    "ReconcileMetrics",
    "Reconciler",
    "Result",
    "Scope",
    "ShardedEngines",
    "ThrottledConnector",
    "TokenBucket",
    "WorkQueue",
    "discrepancies",
    "parse_shards",
    "plan_table",
    "prometheus_text",
    "read_metrics",
    "shard_holders",
    "shard_scope",
    "shard_scopes",
]
